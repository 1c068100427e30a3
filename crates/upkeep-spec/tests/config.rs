//! The TOML config: defaults, every key, validation and error reporting.

mod common;

use std::path::Path;
use std::time::Duration;

use common::has_error;
use upkeep_spec::config::{
    load, normalize_signal, parse, parse_http_url, parse_size, Overrides, DEFAULT_PATH,
};
use upkeep_spec::{BackoffSpec, LogMode, OnExit, ProbeHandler, RestartPolicy, Scheme, Severity};

fn p(
    text: &str,
) -> (
    Option<upkeep_spec::config::Config>,
    Vec<upkeep_spec::Diagnostic>,
) {
    parse(
        text,
        Path::new("/etc/upkeep/test.toml"),
        &Overrides::default(),
    )
}

fn ok(text: &str) -> upkeep_spec::config::Config {
    let (cfg, diags) = p(text);
    cfg.unwrap_or_else(|| panic!("config rejected: {diags:#?}"))
}

fn errors(text: &str) -> Vec<upkeep_spec::Diagnostic> {
    let (cfg, diags) = p(text);
    assert!(cfg.is_none(), "config accepted, diags: {diags:#?}");
    diags
}

#[test]
fn empty_file_gives_every_default() {
    let c = ok("");
    assert_eq!(c.manifests, Path::new("/etc/kubernetes/manifests"));
    assert_eq!(c.listen, "127.0.0.1:9900");
    assert_eq!(c.state_dir, Path::new("/var/lib/upkeep"));
    assert_eq!(c.log_dir, Path::new("/var/log/upkeep"));
    assert_eq!(c.kubelet_config, Path::new("/var/lib/kubelet/config.yaml"));
    assert_eq!(c.node_ip, "127.0.0.1");
    assert!(!c.node_name.is_empty());
    assert_eq!(c.node_name, c.node_name.to_lowercase());
    assert_eq!(c.on_exit, OnExit::Keep);
    assert!(!c.allow_writable_manifests);
    assert_eq!(c.debounce, Duration::from_millis(100));
    assert_eq!(c.relist_period, Duration::from_secs(20));
    assert_eq!(c.log_max_size, 10 * 1024 * 1024);
    assert_eq!(c.log_max_files, 3);
    assert_eq!(c.default_stop_timeout, Duration::from_secs(30));
    assert_eq!(c.default_backoff, BackoffSpec::default());
    assert_eq!(c.default_backoff.initial, Duration::from_secs(1));
    assert_eq!(c.default_backoff.max, Duration::from_secs(60));
    assert_eq!(c.default_log, LogMode::File, "a static default: file");
    assert!(c.images.is_empty() && c.services.is_empty());
    assert_eq!(c.path.as_deref(), Some(Path::new("/etc/upkeep/test.toml")));
}

const FULL: &str = r#"
manifests = "/srv/manifests"
listen = "127.0.0.1:9901"
state_dir = "/run/upkeep"
log_dir = "/srv/logs"
kubelet_config = "/srv/kubelet/config.yaml"
node_name = "master-1"
node_ip = "10.0.0.11"
on_exit = "stop"
allow_writable_manifests = true
debounce = "250ms"
relist_period = "30s"

[logs]
max_size = "5MiB"
max_files = 7

[defaults]
stop_timeout = "20s"

[defaults.backoff]
initial = "0s"
max = "30s"
factor = 1.5
reset_after = "5m"
jitter = 0.0

[images]
"registry.k8s.io/etcd" = ["/usr/local/bin/etcd"]

[services.containerd]
command = ["/usr/bin/containerd"]
env = { PATH = "/usr/sbin:/usr/bin:/sbin:/bin", FOO = "bar" }
stop_signal = "TERM"
stop_timeout = "45s"
log = "inherit"
liveness = { exec = ["ctr", "version"], period = "10s", timeout = "5s", failure_threshold = 3 }

[services.kubelet]
command = ["/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml"]
args = ["--v=2"]
after = ["containerd"]
restart = "on-failure"
user = 0
group = "root"
working_dir = "/var/lib/kubelet"
backoff = { max = "10s" }
liveness = { http = "http://127.0.0.1:10248/healthz?verbose", period = "10s", failure_threshold = 3 }
readiness = { tcp = "127.0.0.1:10250", success_threshold = 2, initial_delay = "2s" }
startup = { http_unix = { socket = "/run/containerd/containerd.sock", path = "/v1/version" } }
"#;

#[test]
fn full_example_resolves() {
    let c = ok(FULL);
    assert_eq!(c.manifests, Path::new("/srv/manifests"));
    assert_eq!(c.kubelet_config, Path::new("/srv/kubelet/config.yaml"));
    assert_eq!(c.listen, "127.0.0.1:9901");
    assert_eq!(c.node_name, "master-1");
    assert_eq!(c.on_exit, OnExit::Stop);
    assert!(c.allow_writable_manifests);
    assert_eq!(c.debounce, Duration::from_millis(250));
    assert_eq!(c.log_max_size, 5 * 1024 * 1024);
    assert_eq!(c.log_max_files, 7);
    assert_eq!(c.default_backoff.initial, Duration::ZERO);
    assert_eq!(c.default_backoff.factor, 1.5);
    assert_eq!(c.images["registry.k8s.io/etcd"], ["/usr/local/bin/etcd"]);
    assert_eq!(c.services.len(), 2);

    let ctd = &c.services[0];
    assert_eq!(ctd.name, "containerd");
    assert_eq!(ctd.argv, ["/usr/bin/containerd"]);
    assert_eq!(ctd.env["PATH"], "/usr/sbin:/usr/bin:/sbin:/bin");
    assert_eq!(ctd.env["FOO"], "bar");
    assert_eq!(ctd.stop_signal, "SIGTERM");
    assert_eq!(ctd.stop_grace, Duration::from_secs(45));
    assert_eq!(ctd.log, LogMode::Inherit);
    assert_eq!(ctd.working_dir, Path::new("/"));
    assert_eq!(ctd.backoff, c.default_backoff);
    let live = ctd.probes.liveness.as_ref().unwrap();
    assert_eq!(
        live.handler,
        ProbeHandler::Exec {
            argv: vec!["ctr".into(), "version".into()]
        }
    );
    assert_eq!(live.timeout, Duration::from_secs(5));

    let k = &c.services[1];
    assert_eq!(
        k.argv,
        [
            "/usr/bin/kubelet",
            "--config=/var/lib/kubelet/config.yaml",
            "--v=2"
        ]
    );
    assert_eq!(k.env.len(), 1);
    assert_eq!(k.env["PATH"], DEFAULT_PATH);
    assert_eq!(k.after, ["containerd"]);
    assert_eq!(k.restart, RestartPolicy::OnFailure);
    assert_eq!((k.uid, k.gid), (Some(0), Some(0)));
    assert_eq!(k.stop_grace, Duration::from_secs(20));
    assert_eq!(k.backoff.max, Duration::from_secs(10));
    assert_eq!(
        k.backoff.initial,
        Duration::ZERO,
        "partial override keeps the defaults"
    );
    assert_eq!(
        k.probes.liveness.as_ref().unwrap().handler,
        ProbeHandler::Http {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port: 10248,
            path: "/healthz?verbose".into(),
            headers: vec![]
        }
    );
    let ready = k.probes.readiness.as_ref().unwrap();
    assert_eq!(
        ready.handler,
        ProbeHandler::Tcp {
            host: "127.0.0.1".into(),
            port: 10250
        }
    );
    assert_eq!((ready.success_threshold, ready.failure_threshold), (2, 3));
    assert_eq!(ready.period, Duration::from_secs(10));
    assert_eq!(ready.timeout, Duration::from_secs(1));
    assert_eq!(ready.initial_delay, Duration::from_secs(2));
    assert!(matches!(
        &k.probes.startup.as_ref().unwrap().handler,
        ProbeHandler::HttpUnix { socket, path } if socket == Path::new("/run/containerd/containerd.sock") && path == "/v1/version"
    ));
    assert_eq!(k.hash.len(), 32);
    assert_ne!(k.hash, ctd.hash);
    // The hash is stable across parses.
    assert_eq!(ok(FULL).services[1].hash, k.hash);
}

#[test]
fn unknown_keys_are_errors_with_key_and_line() {
    let d = errors("listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n\n[services.a]\ncommand = [\"/bin/a\"]\ncomand = 1\n[defaults.backoff]\ninital = \"1s\"\n");
    let find = |field: &str| {
        d.iter()
            .find(|x| x.field.as_deref() == Some(field))
            .unwrap_or_else(|| panic!("{field}: {d:#?}"))
    };
    assert_eq!(find("listen_addr").line, Some(2));
    assert_eq!(find("services.a.comand").line, Some(6));
    assert_eq!(find("defaults.backoff.inital").line, Some(8));
    assert!(d
        .iter()
        .all(|x| x.file == Path::new("/etc/upkeep/test.toml")));
    assert!(
        d[0].to_string()
            .starts_with("error: /etc/upkeep/test.toml:"),
        "{}",
        d[0]
    );
}

#[test]
fn all_problems_are_collected() {
    let text = r#"
node_ip = "not-an-ip"
on_exit = "maybe"
debounce = "10"
[logs]
max_size = "10 parsecs"
max_files = 0
[defaults.backoff]
factor = 0.5
jitter = 2.0
initial = "10s"
max = "5s"
[services.a]
args = ["x"]
restart = "sometimes"
stop_signal = "SIGFOO"
user = "no-such-user-upkeep"
group = "no-such-group-upkeep"
working_dir = "relative"
log = "syslog"
after = ["ghost"]
liveness = { http = "ftp://x/", tcp = "h:1" }
readiness = { exec = [] }
startup = { tcp = "nohostport", success_threshold = 3 }
"#;
    let d = errors(text);
    for (field, words) in [
        ("node_ip", "not an IP"),
        ("on_exit", "keep"),
        ("debounce", "missing unit"),
        ("logs.max_size", "unknown unit"),
        ("logs.max_files", "between 1"),
        ("defaults.backoff.factor", ">= 1.0"),
        ("defaults.backoff.jitter", "between 0.0 and 1.0"),
        ("defaults.backoff", "must not be less than initial"),
        ("services.a.command", "missing"),
        ("services.a.restart", "on-failure"),
        ("services.a.stop_signal", "unknown signal"),
        ("services.a.user", "unknown user"),
        ("services.a.group", "unknown group"),
        ("services.a.working_dir", "absolute"),
        ("services.a.log", "inherit"),
        ("services.a.liveness.http", "http or https"),
        ("services.a.readiness.exec", "non-empty"),
        ("services.a.startup.tcp", "HOST:PORT"),
        ("services.a.startup.success_threshold", "must be 1"),
    ] {
        assert!(
            d.iter().any(|x| x.severity == Severity::Error
                && x.field.as_deref() == Some(field)
                && x.message.contains(words)),
            "{field} / {words}: {d:#?}"
        );
    }
}

#[test]
fn dependency_problems() {
    let d = errors("[services.a]\ncommand = [\"/a\"]\nafter = [\"ghost\"]\n");
    assert!(
        has_error(&d, &["services.a.after", "unknown service", "ghost"]),
        "{d:#?}"
    );
    let d = errors(
        "[services.a]\ncommand = [\"/a\"]\nafter = [\"b\"]\n[services.b]\ncommand = [\"/b\"]\nafter = [\"c\"]\n[services.c]\ncommand = [\"/c\"]\nafter = [\"a\"]\n[services.d]\ncommand = [\"/d\"]\nafter = [\"d\"]\n",
    );
    assert!(
        has_error(&d, &["dependency cycle: a -> b -> c -> a"]),
        "{d:#?}"
    );
    assert!(has_error(&d, &["dependency cycle: d -> d"]), "{d:#?}");
    // Duplicate names are a TOML error, located.
    let d = errors("[services.a]\ncommand = [\"/a\"]\n[services.a]\ncommand = [\"/b\"]\n");
    assert!(
        d.iter()
            .any(|x| x.line == Some(3) && x.message.contains("invalid TOML")),
        "{d:#?}"
    );
    // A diamond is fine.
    let c = ok("[services.a]\ncommand=[\"/a\"]\n[services.b]\ncommand=[\"/b\"]\nafter=[\"a\"]\n[services.c]\ncommand=[\"/c\"]\nafter=[\"a\"]\n[services.d]\ncommand=[\"/d\"]\nafter=[\"b\",\"c\"]\n");
    assert_eq!(c.services.len(), 4);
}

#[test]
fn probes_need_exactly_one_kind() {
    let d = errors("[services.a]\ncommand=[\"/a\"]\nliveness = { period = \"5s\" }\n");
    assert!(
        has_error(&d, &["services.a.liveness", "exactly one"]),
        "{d:#?}"
    );
    let d =
        errors("[services.a]\ncommand=[\"/a\"]\nliveness = { exec = [\"x\"], tcp = \"h:1\" }\n");
    assert!(has_error(&d, &["exactly one", "found 2"]), "{d:#?}");
}

#[test]
fn user_names_resolve() {
    let c = ok("[services.a]\ncommand=[\"/a\"]\nuser = \"root\"\n[services.b]\ncommand=[\"/b\"]\nuser = \"65534\"\ngroup = 5\n");
    assert_eq!((c.services[0].uid, c.services[0].gid), (Some(0), Some(0)));
    assert_eq!(
        (c.services[1].uid, c.services[1].gid),
        (Some(65534), Some(5))
    );
}

#[test]
fn syntax_errors_have_lines() {
    let d = errors("a = 1\n\n[services\n");
    assert_eq!(d[0].line, Some(3), "{d:#?}");
    assert!(d[0].message.contains("invalid TOML"));
}

#[test]
fn overrides_apply_after_the_file() {
    let o = Overrides {
        manifests: Some("/x".into()),
        listen: Some("127.0.0.1:1234".into()),
        state_dir: Some("/y".into()),
    };
    let (c, _) = parse(
        "manifests = \"/a\"\nlisten = \"127.0.0.1:1\"\n",
        Path::new("/c.toml"),
        &o,
    );
    let c = c.unwrap();
    assert_eq!(c.manifests, Path::new("/x"));
    assert_eq!(c.listen, "127.0.0.1:1234");
    assert_eq!(c.state_dir, Path::new("/y"));
    let bad = Overrides {
        listen: Some("nope".into()),
        ..Default::default()
    };
    let (c, d) = parse("", Path::new("/c.toml"), &bad);
    assert!(c.is_none() && has_error(&d, &["listen", "nope"]), "{d:#?}");
}

#[test]
fn load_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let (c, d) = load(Some(&missing), &Overrides::default());
    assert!(c.is_none());
    assert!(has_error(&d, &["nope.toml", "cannot read"]), "{d:#?}");
    let file = dir.path().join("u.toml");
    std::fs::write(&file, "node_name = \"n\"\n").unwrap();
    let (c, d) = load(Some(&file), &Overrides::default());
    assert!(d.is_empty());
    let c = c.unwrap();
    assert_eq!(c.node_name, "n");
    assert_eq!(c.path.as_deref(), Some(file.as_path()));
    std::fs::write(&file, b"\xff\xfe").unwrap();
    let (c, d) = load(Some(&file), &Overrides::default());
    assert!(c.is_none() && has_error(&d, &["UTF-8"]), "{d:#?}");
}

#[test]
fn helpers() {
    assert_eq!(normalize_signal("TERM").unwrap(), "SIGTERM");
    assert_eq!(normalize_signal("sigint").unwrap(), "SIGINT");
    assert_eq!(normalize_signal("SIGQUIT").unwrap(), "SIGQUIT");
    assert!(normalize_signal("SIGNOPE").is_err());
    assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
    assert_eq!(parse_size("1000").unwrap(), 1000);
    assert_eq!(parse_size("2k").unwrap(), 2000);
    assert!(parse_size("x").is_err());
    assert_eq!(
        parse_http_url("https://[::1]:8443/p?q=1#frag").unwrap(),
        (Scheme::Https, "::1".into(), 8443, "/p?q=1".into())
    );
    assert_eq!(
        parse_http_url("http://h").unwrap(),
        (Scheme::Http, "h".into(), 80, "/".into())
    );
    assert_eq!(
        parse_http_url("HTTPS://h?x").unwrap(),
        (Scheme::Https, "h".into(), 443, "/?x".into())
    );
    for bad in [
        "h:80/x",
        "http://",
        "http://u@h/",
        "http://h:0/",
        "http://h:99999/",
        "gopher://h/",
    ] {
        assert!(parse_http_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn log_modes_and_the_default_for_every_service() {
    let c = ok(r#"
[defaults]
log = "journal"

[services.a]
command = ["/bin/true"]

[services.b]
command = ["/bin/true"]
log = "file"
"#);
    assert_eq!(c.default_log, LogMode::Journal);
    assert_eq!(c.service("a").unwrap().log, LogMode::Journal);
    assert_eq!(c.service("b").unwrap().log, LogMode::File);
    let e = errors("[defaults]\nlog = \"syslog\"\n");
    assert!(
        e.iter().any(
            |d| d.to_string().contains("defaults.log") && d.to_string().contains("\"journal\"")
        ),
        "{e:#?}"
    );
}

#[test]
fn documented_full_example_is_valid() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .unwrap();
    let start = doc.rfind("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let c = ok(&doc[start..end]);
    assert_eq!(c.services.len(), 2);
    assert_eq!(c.services[1].after, ["containerd"]);
    assert_eq!(c.services[0].kill_mode, upkeep_spec::KillMode::Process);
}

#[test]
fn shipped_configs_keep_containerd_and_docker_children_alive() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = root.join("examples/kubeadm/upkeep.toml");
    let (c, d) = parse(
        &std::fs::read_to_string(&example).unwrap(),
        &example,
        &Overrides::default(),
    );
    let c = c.unwrap_or_else(|| panic!("{d:#?}"));
    let containerd = c.service("containerd").expect("containerd in the example");
    assert_eq!(containerd.kill_mode, upkeep_spec::KillMode::Process);
    // The packaged config ships every service commented out: uncomment the
    // two runtimes and check them.
    let text = std::fs::read_to_string(root.join("packaging/upkeep.toml")).unwrap();
    for name in ["containerd", "docker"] {
        let head = format!("#[services.{name}]\n");
        let start = text.find(&head).unwrap_or_else(|| panic!("{head}"));
        let table: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#') && !l.starts_with("# "))
            .filter(|l| !l.starts_with("##"))
            .map(|l| format!("{}\n", &l[1..]))
            .collect();
        let c = ok(&table);
        assert_eq!(
            c.services[0].kill_mode,
            upkeep_spec::KillMode::Process,
            "{table}"
        );
    }
}

#[test]
fn uid_and_gid_minus_one_are_rejected() {
    for (text, field, why) in [
        ("user = 4294967295", "services.a.user", "(uid_t)-1"),
        ("user = \"4294967295\"", "services.a.user", "(uid_t)-1"),
        ("group = 4294967295", "services.a.group", "(gid_t)-1"),
        ("group = \"4294967295\"", "services.a.group", "(gid_t)-1"),
    ] {
        let d = errors(&format!("[services.a]\ncommand = [\"/a\"]\n{text}\n"));
        assert!(
            has_error(&d, &["test.toml", field, "4294967295", why]),
            "{text}: {d:#?}"
        );
    }
    let c = ok("[services.a]\ncommand = [\"/a\"]\nuser = 4294967294\ngroup = 4294967294\n");
    assert_eq!(c.services[0].uid, Some(4_294_967_294));
    assert_eq!(c.services[0].gid, Some(4_294_967_294));
}

#[test]
fn nul_bytes_in_argv_and_env_are_rejected() {
    let d = errors(
        "[services.a]\ncommand = [\"/a\", \"x\\u0000y\"]\nargs = [\"\\u0000\"]\nenv = { \"K\\u0000\" = \"v\", K2 = \"v\\u0000\" }\nliveness = { exec = [\"/p\", \"\\u0000\"] }\n",
    );
    for field in [
        "services.a.command[1]",
        "services.a.args[0]",
        "services.a.env",
        "services.a.env.K2",
        "services.a.liveness.exec[1]",
    ] {
        assert!(has_error(&d, &[field, "NUL"]), "{field}: {d:#?}");
    }
}

#[test]
fn stop_timeout_above_the_cap_is_an_error() {
    let d = errors("[services.a]\ncommand = [\"/a\"]\nstop_timeout = \"2h\"\n");
    assert!(
        has_error(&d, &["services.a.stop_timeout", "at most 1h"]),
        "{d:#?}"
    );
    let d = errors("[defaults]\nstop_timeout = \"3601s\"\n");
    assert!(
        has_error(&d, &["defaults.stop_timeout", "at most 1h"]),
        "{d:#?}"
    );
    let c = ok("[services.a]\ncommand = [\"/a\"]\nstop_timeout = \"1h\"\n");
    assert_eq!(c.services[0].stop_grace, upkeep_spec::MAX_STOP_GRACE);
}

#[test]
fn every_problem_of_a_service_is_reported_together() {
    // A bad command used to hide the unknown `after` target.
    let d = errors("[services.a]\ncommand = []\nafter = [\"nope\"]\n");
    assert!(has_error(&d, &["services.a.command"]), "{d:#?}");
    assert!(
        has_error(&d, &["services.a.after", "unknown service", "nope"]),
        "{d:#?}"
    );
    let d = errors("[services.a]\nafter = [\"nope\"]\nstop_signal = \"SIGNOPE\"\n");
    assert!(has_error(&d, &["services.a.command", "missing"]), "{d:#?}");
    assert!(has_error(&d, &["services.a.after", "nope"]), "{d:#?}");
    assert!(has_error(&d, &["services.a.stop_signal"]), "{d:#?}");
}

#[test]
fn kill_mode_per_service_and_in_defaults() {
    use upkeep_spec::KillMode;
    let c = ok("[services.a]\ncommand = [\"/a\"]\n");
    assert_eq!(c.services[0].kill_mode, KillMode::ControlGroup);
    let c = ok(
        "[defaults]\nkill_mode = \"mixed\"\n[services.a]\ncommand = [\"/a\"]\n[services.b]\ncommand = [\"/b\"]\nkill_mode = \"process\"\n[services.c]\ncommand = [\"/c\"]\nkill_mode = \"control-group\"\n",
    );
    let modes: Vec<KillMode> = c.services.iter().map(|s| s.kill_mode).collect();
    assert_eq!(
        modes,
        [KillMode::Mixed, KillMode::Process, KillMode::ControlGroup]
    );
    assert_eq!(KillMode::ControlGroup.as_str(), "control-group");
    assert_eq!(KillMode::Process.to_string(), "process");
    assert_eq!(
        serde_json::to_value(KillMode::Mixed).unwrap(),
        serde_json::json!("mixed")
    );
    // Unknown values name the file, the field and the choices.
    for (text, field) in [
        (
            "[services.a]\ncommand = [\"/a\"]\nkill_mode = \"none\"\n",
            "services.a.kill_mode",
        ),
        (
            "[defaults]\nkill_mode = \"controlgroup\"\n",
            "defaults.kill_mode",
        ),
    ] {
        let d = errors(text);
        assert!(
            has_error(
                &d,
                &[
                    "test.toml",
                    field,
                    "\"control-group\", \"process\" or \"mixed\""
                ]
            ),
            "{text}: {d:#?}"
        );
    }
    let d = errors("[services.a]\ncommand = [\"/a\"]\nkill_mode = 1\n");
    assert!(has_error(&d, &["services.a.kill_mode"]), "{d:#?}");
}

#[test]
fn a_kill_mode_change_changes_the_spec_hash() {
    let a = ok("[services.a]\ncommand = [\"/a\"]\n");
    let b = ok("[services.a]\ncommand = [\"/a\"]\nkill_mode = \"process\"\n");
    let c = ok("[services.a]\ncommand = [\"/a\"]\nkill_mode = \"control-group\"\n");
    assert_ne!(a.services[0].hash, b.services[0].hash);
    assert_eq!(a.services[0].hash, c.services[0].hash);
}

#[test]
fn rollout_per_host_service() {
    use upkeep_spec::RolloutMode;
    let c = ok("[services.a]\ncommand = [\"/a\"]\n");
    assert_eq!(c.services[0].rollout, RolloutMode::Serial);
    let serial_hash = c.services[0].hash.clone();
    let c = ok("[services.a]\ncommand = [\"/a\"]\nrollout = \"serial\"\n");
    // The default is left out of the hash: adding the key restarts nothing.
    assert_eq!(c.services[0].hash, serial_hash);
    let c = ok("[services.a]\ncommand = [\"/a\"]\nrollout = \"immediate\"\n");
    assert_eq!(c.services[0].rollout, RolloutMode::Immediate);
    assert_eq!(
        upkeep_spec::hash::exec_hash(&c.services[0]),
        upkeep_spec::hash::exec_hash(&ok("[services.a]\ncommand = [\"/a\"]\n").services[0]),
        "policy, not what is executed"
    );
    let d = errors("[services.a]\ncommand = [\"/a\"]\nrollout = \"soon\"\n");
    assert!(
        has_error(
            &d,
            &["test.toml", "services.a.rollout", "\"soon\"", "immediate"]
        ),
        "{d:#?}"
    );
}
