//! The supervisors under test: config generation (pure) and running them.
//!
//! Each peer is configured as fast as it allows:
//! - upkeep: zero backoff (`initial = max = "0s"`, no jitter), 100 ms debounce.
//! - supervisord: `autorestart=true startsecs=0 startretries=1000000` (with
//!   `startsecs=0` a process is RUNNING at once, so its linear BACKOFF never
//!   applies; its main loop still wakes only once a second).
//! - runit: `run` does `exec` of the workload; runsv waits 1 s before
//!   restarting a `run` that exited within 1 s (hard-coded).
//! - monit: `set daemon 1`, `check process ... matching`, `start program`;
//!   its poll cycle is the limit.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procfs;
use crate::stamp::now_ns;

/// A supervisor under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// This project.
    Upkeep,
    /// monit.
    Monit,
    /// supervisord.
    Supervisord,
    /// runit (runsvdir + runsv).
    Runit,
}

impl Peer {
    /// The other supervisors, in table order.
    pub const PEERS: [Peer; 3] = [Peer::Monit, Peer::Supervisord, Peer::Runit];

    /// Name used in tables, JSON and `--peers`.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Upkeep => "upkeep",
            Peer::Monit => "monit",
            Peer::Supervisord => "supervisord",
            Peer::Runit => "runit",
        }
    }

    /// Parses a `--peers` entry.
    pub fn parse(s: &str) -> Option<Peer> {
        [Peer::Upkeep, Peer::Monit, Peer::Supervisord, Peer::Runit]
            .into_iter()
            .find(|p| p.name() == s.trim())
    }

    /// The executables this peer needs (looked up in PATH).
    pub fn binaries(self) -> &'static [&'static str] {
        match self {
            Peer::Upkeep => &[],
            Peer::Monit => &["monit"],
            Peer::Supervisord => &["supervisord"],
            Peer::Runit => &["runsvdir", "runsv"],
        }
    }

    /// True when every binary of this peer is in PATH.
    pub fn installed(self) -> bool {
        self.binaries().iter().all(|b| which(b).is_some())
    }

    /// Has HTTP liveness probes (runit and supervisord have none).
    pub fn has_http_probes(self) -> bool {
        matches!(self, Peer::Upkeep | Peer::Monit)
    }
}

/// Finds `name` in PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// An HTTP liveness probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Port on 127.0.0.1; the probe GETs `/`.
    pub port: u16,
    /// Probe period, seconds.
    pub period_s: u64,
    /// Probe timeout, seconds.
    pub timeout_s: u64,
    /// Consecutive failures before a restart.
    pub threshold: u32,
}

/// One supervised program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Name (a DNS label: lower-case letters, digits, '-').
    pub name: String,
    /// argv; argv[0] is an absolute path.
    pub argv: Vec<String>,
    /// HTTP liveness probe, if any.
    pub liveness: Option<Liveness>,
    /// For upkeep: run it from a static Pod manifest instead of `[services]`.
    pub as_pod: bool,
    /// For upkeep pods: a hostPath (first) mounted at another path (second),
    /// which gives the process a private mount namespace.
    pub bind: Option<(PathBuf, PathBuf)>,
}

impl Service {
    /// A plain service.
    pub fn new(name: impl Into<String>, argv: Vec<String>) -> Self {
        Service {
            name: name.into(),
            argv,
            liveness: None,
            as_pod: false,
            bind: None,
        }
    }
}

/// Everything a scenario asks a supervisor to run, rooted at `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The scenario's private directory (configs, state, logs, stamps).
    pub dir: PathBuf,
    /// The services.
    pub services: Vec<Service>,
    /// upkeep's HTTP listen port.
    pub listen_port: u16,
    /// upkeep's manifest debounce, ms.
    pub debounce_ms: u64,
}

impl Setup {
    /// upkeep's static Pod manifest directory.
    pub fn manifests_dir(&self) -> PathBuf {
        self.dir.join("manifests")
    }
}

/// A TOML/JSON/YAML double-quoted string literal (JSON escaping is valid in all three
/// for the characters that occur here).
pub fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A POSIX shell single-quoted word.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,@+".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A POSIX extended regex matching `s` literally.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.^$|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn array(argv: &[String]) -> String {
    format!(
        "[{}]",
        argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(", ")
    )
}

/// upkeep's config file for `setup`.
pub fn upkeep_toml(setup: &Setup) -> String {
    let d = &setup.dir;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "manifests = {}",
        quote(&setup.manifests_dir().to_string_lossy())
    );
    let _ = writeln!(s, "listen = \"127.0.0.1:{}\"", setup.listen_port);
    let _ = writeln!(
        s,
        "state_dir = {}",
        quote(&d.join("state").to_string_lossy())
    );
    let _ = writeln!(s, "log_dir = {}", quote(&d.join("log").to_string_lossy()));
    s.push_str("on_exit = \"stop\"\n");
    let _ = writeln!(s, "debounce = \"{}ms\"", setup.debounce_ms);
    // The manifest-edit figure measures reaction time: the default 1 s
    // `settle` (a guard against half-written files) would add a constant.
    s.push_str("settle = \"0s\"\n");
    s.push_str("relist_period = \"20s\"\n\n");
    s.push_str("[defaults.backoff]\ninitial = \"0s\"\nmax = \"0s\"\nfactor = 1.0\nreset_after = \"10m\"\njitter = 0.0\n");
    for svc in setup.services.iter().filter(|s| !s.as_pod) {
        let _ = write!(
            s,
            "\n[services.{}]\ncommand = {}\nrestart = \"always\"\n",
            quote(&svc.name),
            array(&svc.argv)
        );
        if let Some(l) = svc.liveness {
            let _ = writeln!(
                s,
                "liveness = {{ http = \"http://127.0.0.1:{}/\", period = \"{}s\", timeout = \"{}s\", failure_threshold = {} }}",
                l.port, l.period_s, l.timeout_s, l.threshold
            );
        }
    }
    s
}

/// A kubeadm-style static Pod manifest running `svc` (one container).
pub fn pod_manifest(svc: &Service) -> String {
    let mut s = String::new();
    s.push_str("apiVersion: v1\nkind: Pod\nmetadata:\n");
    let _ = writeln!(s, "  name: {}\n  namespace: kube-system", svc.name);
    s.push_str("spec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 2\n  containers:\n");
    let _ = writeln!(
        s,
        "  - name: {}\n    image: bench.invalid/{}:1",
        svc.name, svc.name
    );
    let _ = writeln!(s, "    command: {}", array(&svc.argv));
    if let Some(l) = svc.liveness {
        let _ = writeln!(
            s,
            "    livenessProbe:\n      httpGet:\n        host: 127.0.0.1\n        path: /\n        port: {}\n      periodSeconds: {}\n      timeoutSeconds: {}\n      failureThreshold: {}",
            l.port, l.period_s, l.timeout_s, l.threshold
        );
    }
    if let Some((host, at)) = &svc.bind {
        let _ = writeln!(
            s,
            "    volumeMounts:\n    - name: bind\n      mountPath: {}\n  volumes:\n  - name: bind\n    hostPath:\n      path: {}\n      type: DirectoryOrCreate",
            quote(&at.to_string_lossy()),
            quote(&host.to_string_lossy())
        );
    }
    s
}

/// supervisord's config file for `setup`.
pub fn supervisord_conf(setup: &Setup) -> String {
    let d = &setup.dir;
    let mut s = String::new();
    let _ = write!(
        s,
        "[supervisord]\nnodaemon=true\nlogfile={}\npidfile={}\nchildlogdir={}\nloglevel=warn\nminfds=16384\nminprocs=4096\n",
        d.join("supervisord.log").display(),
        d.join("supervisord.pid").display(),
        d.join("log").display()
    );
    for svc in &setup.services {
        let cmd = svc
            .argv
            .iter()
            .map(|a| sh_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            s,
            "\n[program:{}]\ncommand={}\nautostart=true\nautorestart=true\nstartsecs=0\nstartretries=1000000\nredirect_stderr=true\nstopwaitsecs=2\n",
            svc.name,
            cmd.replace('%', "%%")
        );
    }
    s
}

/// runit's `run` script for `svc`.
pub fn runit_run(svc: &Service) -> String {
    let cmd = svc
        .argv
        .iter()
        .map(|a| sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    format!("#!/bin/sh\nexec 2>&1\nexec {cmd}\n")
}

/// monit's control file for `setup`. Errors when an argv word cannot be
/// expressed in monit's `program = "..."` (which splits on spaces).
///
/// monit expects a `start program` to daemonize and exit 0; it waits for the
/// program to finish (up to the timeout) before it looks at the process, and
/// closes the program's output pipe afterwards (SIGPIPE for a chatty child).
/// So each workload is started through `launcher` (`upkeep-bench detach`),
/// which forks the workload into its own session with output to /dev/null
/// and returns at once. The start
/// timeout is 1 s (default 30 s): a workload that dies before monit sees it
/// otherwise stalls monit for the whole timeout.
pub fn monitrc(setup: &Setup, launcher: &str) -> Result<String, String> {
    let d = &setup.dir;
    let mut s = String::new();
    let _ = write!(
        s,
        "set daemon 1\nset logfile {}\nset pidfile {}\nset idfile {}\nset statefile {}\n",
        d.join("monit.log").display(),
        d.join("monit.pid").display(),
        d.join("monit.id").display(),
        d.join("monit.state").display()
    );
    for svc in &setup.services {
        if let Some(bad) = svc
            .argv
            .iter()
            .find(|a| a.is_empty() || a.contains([' ', '"', '\'']))
        {
            return Err(format!(
                "monit: argument {bad:?} of {} has a space or quote",
                svc.name
            ));
        }
        let pattern = regex_escape(&svc.argv.join(" "));
        let _ = write!(
            s,
            "\ncheck process {} matching \"{}\"\n  start program = \"{launcher} {}\" with timeout 1 seconds\n  stop program = \"{}\"\n",
            svc.name,
            pattern,
            svc.argv.join(" "),
            d.join("monit-stop.sh").display(),
        );
        if let Some(l) = svc.liveness {
            let _ = writeln!(
                s,
                "  if failed host 127.0.0.1 port {} protocol http request \"/\" with timeout {} seconds for {} cycles then restart",
                l.port, l.timeout_s, l.threshold
            );
        }
    }
    Ok(s)
}

/// The script monit's `stop program` runs: SIGTERM to the process monit
/// checks (`$MONIT_PROCESS_PID`).
pub const MONIT_STOP_SCRIPT: &str = "#!/bin/sh\n[ -n \"$MONIT_PROCESS_PID\" ] && [ \"$MONIT_PROCESS_PID\" -gt 1 ] && kill -TERM \"$MONIT_PROCESS_PID\"\nexit 0\n";

/// Writes `setup`'s files for `peer` and returns the argv that starts it.
pub fn prepare(peer: Peer, setup: &Setup, upkeep: Option<&Path>) -> Result<Vec<String>, String> {
    let d = &setup.dir;
    let w = |p: PathBuf, text: &str, mode: u32| -> Result<(), String> {
        fs::write(&p, text).map_err(|e| format!("writing {}: {e}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", p.display()))
    };
    let mkdir =
        |p: PathBuf| fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()));
    mkdir(d.join("log"))?;
    let ds = |p: PathBuf| p.to_string_lossy().into_owned();
    match peer {
        Peer::Upkeep => {
            let bin = upkeep.ok_or("no upkeep binary")?;
            mkdir(setup.manifests_dir())?;
            mkdir(d.join("state"))?;
            fs::set_permissions(setup.manifests_dir(), fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("chmod manifests: {e}"))?;
            for svc in setup.services.iter().filter(|s| s.as_pod) {
                w(
                    setup.manifests_dir().join(format!("{}.yaml", svc.name)),
                    &pod_manifest(svc),
                    0o644,
                )?;
            }
            w(d.join("upkeep.toml"), &upkeep_toml(setup), 0o644)?;
            Ok(vec![
                ds(bin.to_path_buf()),
                "run".into(),
                "--config".into(),
                ds(d.join("upkeep.toml")),
            ])
        }
        Peer::Supervisord => {
            w(d.join("supervisord.conf"), &supervisord_conf(setup), 0o644)?;
            Ok(vec![
                "supervisord".into(),
                "-n".into(),
                "-c".into(),
                ds(d.join("supervisord.conf")),
            ])
        }
        Peer::Runit => {
            let sv = d.join("sv");
            for svc in &setup.services {
                mkdir(sv.join(&svc.name))?;
                w(sv.join(&svc.name).join("run"), &runit_run(svc), 0o755)?;
            }
            Ok(vec!["runsvdir".into(), "-P".into(), ds(sv)])
        }
        Peer::Monit => {
            w(d.join("monit-stop.sh"), MONIT_STOP_SCRIPT, 0o755)?;
            let me =
                std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
            w(
                d.join("monitrc"),
                &monitrc(setup, &format!("{} detach", me.display()))?,
                0o600,
            )?;
            Ok(vec![
                "monit".into(),
                "-I".into(),
                "-c".into(),
                ds(d.join("monitrc")),
            ])
        }
    }
}

/// A running supervisor. Dropping it stops it and kills everything under its
/// directory.
pub struct Running {
    /// Which one.
    pub peer: Peer,
    /// Its pid (also its process group id).
    pub pid: u32,
    /// CLOCK_REALTIME ns just before it was spawned.
    pub launch_ns: u64,
    /// The scenario directory.
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Running {
    /// Writes the files and starts `peer` for `setup`, in its own process group,
    /// with output to `DIR/<peer>.out`.
    pub fn start(peer: Peer, setup: &Setup, upkeep: Option<&Path>) -> Result<Running, String> {
        let argv = prepare(peer, setup, upkeep)?;
        if peer == Peer::Runit {
            // runsvdir ignores a directory modified within the last second (it
            // may still be being populated) and looks again a second later;
            // real service directories exist long before boot, so let the
            // fresh ones age first rather than bill runit for it.
            std::thread::sleep(Duration::from_millis(1100));
        }
        let out_path = setup.dir.join(format!("{}.out", peer.name()));
        let out = fs::File::create(&out_path)
            .map_err(|e| format!("creating {}: {e}", out_path.display()))?;
        let err = out.try_clone().map_err(|e| format!("dup: {e}"))?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&setup.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let launch_ns = now_ns();
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", argv.join(" ")))?;
        Ok(Running {
            peer,
            pid: child.id(),
            launch_ns,
            dir: setup.dir.clone(),
            child: Some(child),
        })
    }

    /// `Err` with the tail of its output when the supervisor has exited.
    pub fn alive(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Err("already stopped".into());
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); output tail:\n{}",
                self.peer.name(),
                self.output_tail(20)
            )),
            Err(e) => Err(format!("waiting for {}: {e}", self.peer.name())),
        }
    }

    /// The last `n` lines of the supervisor's own output (and log file, for
    /// supervisord and monit).
    pub fn output_tail(&self, n: usize) -> String {
        let mut text = fs::read_to_string(self.dir.join(format!("{}.out", self.peer.name())))
            .unwrap_or_default();
        for extra in ["supervisord.log", "monit.log"] {
            if let Ok(t) = fs::read_to_string(self.dir.join(extra)) {
                text.push_str(&t);
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The supervisor's own processes: runsvdir and every runsv for runit, the
    /// one process otherwise.
    pub fn own_pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid];
        if self.peer == Peer::Runit {
            pids.extend(procfs::children(self.pid).into_iter().filter(|&p| {
                procfs::cmdline(p).is_some_and(|c| c.starts_with("runsv ") || c == "runsv")
            }));
        }
        pids
    }

    /// Stops the supervisor: its graceful signal (SIGHUP for runsvdir, which
    /// passes TERM to every runsv; SIGTERM otherwise), up to `grace`, then
    /// SIGKILL to its process group and to every process under its directory.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sig = if self.peer == Peer::Runit {
            libc::SIGHUP
        } else {
            libc::SIGTERM
        };
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: kill(2) on the pid of our own unreaped child.
            unsafe { libc::kill(pid, sig) };
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            // SAFETY: the process group we created for it (pgid = its pid).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = child.kill();
        let _ = child.wait();
        procfs::sweep(&self.dir);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        let mut web = Service::new(
            "web",
            vec![
                "/b/upkeep-bench".into(),
                "http-server".into(),
                "8080".into(),
            ],
        );
        web.liveness = Some(Liveness {
            port: 8080,
            period_s: 1,
            timeout_s: 1,
            threshold: 1,
        });
        let mut etcd = Service::new(
            "etcd",
            vec!["/usr/bin/etcd".into(), "--data-dir=/t/d".into()],
        );
        etcd.as_pod = true;
        Setup {
            dir: PathBuf::from("/t/x"),
            services: vec![
                Service::new(
                    "s1",
                    vec!["/b/upkeep-bench".into(), "stamp".into(), "/t/x/a b".into()],
                ),
                web,
                etcd,
            ],
            listen_port: 9999,
            debounce_ms: 100,
        }
    }

    #[test]
    fn peer_names_round_trip() {
        for p in [Peer::Upkeep, Peer::Monit, Peer::Supervisord, Peer::Runit] {
            assert_eq!(Peer::parse(p.name()), Some(p));
        }
        assert_eq!(Peer::parse("s6"), None);
        assert!(Peer::Monit.has_http_probes() && !Peer::Runit.has_http_probes());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(sh_quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(regex_escape("/t/a.b+(c)"), r"/t/a\.b\+\(c\)");
    }

    #[test]
    fn upkeep_config_has_zero_backoff_and_services() {
        let t = upkeep_toml(&setup());
        assert!(t.contains("listen = \"127.0.0.1:9999\""));
        assert!(t.contains("manifests = \"/t/x/manifests\""));
        assert!(t.contains("initial = \"0s\"\nmax = \"0s\""));
        assert!(t.contains("debounce = \"100ms\""));
        assert!(t.contains("on_exit = \"stop\""));
        assert!(t.contains(
            "[services.\"s1\"]\ncommand = [\"/b/upkeep-bench\", \"stamp\", \"/t/x/a b\"]"
        ));
        assert!(t.contains(
            "liveness = { http = \"http://127.0.0.1:8080/\", period = \"1s\", timeout = \"1s\", failure_threshold = 1 }"
        ));
        // Pods go to manifests, not [services].
        assert!(!t.contains("etcd"));
    }

    #[test]
    fn pod_manifest_is_kubeadm_style() {
        let s = setup();
        let m = pod_manifest(&s.services[2]);
        assert!(m.starts_with("apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n"));
        assert!(m.contains("    command: [\"/usr/bin/etcd\", \"--data-dir=/t/d\"]\n"));
        let web = pod_manifest(&s.services[1]);
        assert!(web.contains("livenessProbe:\n      httpGet:\n        host: 127.0.0.1\n        path: /\n        port: 8080"));
        assert!(web.contains("failureThreshold: 1"));
    }

    #[test]
    fn supervisord_config_is_as_fast_as_it_goes() {
        let c = supervisord_conf(&setup());
        assert!(c.contains("[program:s1]\ncommand=/b/upkeep-bench stamp '/t/x/a b'\n"));
        assert!(c.contains("autorestart=true\nstartsecs=0\nstartretries=1000000\n"));
        assert!(c.contains("[program:etcd]"));
        assert!(c.contains("nodaemon=true"));
    }

    #[test]
    fn runit_run_execs() {
        let s = setup();
        assert_eq!(
            runit_run(&s.services[0]),
            "#!/bin/sh\nexec 2>&1\nexec /b/upkeep-bench stamp '/t/x/a b'\n"
        );
    }

    #[test]
    fn monitrc_polls_every_second() {
        let mut s = setup();
        assert!(monitrc(&s, "/x/b detach").unwrap_err().contains("space"));
        s.services.remove(0);
        let m = monitrc(&s, "/x/b detach").unwrap();
        assert!(m.starts_with("set daemon 1\n"));
        assert!(m.contains("check process web matching \"/b/upkeep-bench http-server 8080\"\n"));
        assert!(m.contains("  start program = \"/x/b detach /b/upkeep-bench http-server 8080\" with timeout 1 seconds\n"));
        assert!(m.contains("if failed host 127.0.0.1 port 8080 protocol http request \"/\" with timeout 1 seconds for 1 cycles then restart"));
        assert!(m.contains("check process etcd matching \"/usr/bin/etcd --data-dir=/t/d\""));
    }
}
