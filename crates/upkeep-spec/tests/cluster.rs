//! The `[cluster]` table: defaults, every key, validation naming file, field and why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use upkeep_spec::config::{parse, Config, Overrides};
use upkeep_spec::{Diagnostic, Severity};

fn p(text: &str, path: &Path) -> (Option<Config>, Vec<Diagnostic>) {
    parse(text, path, &Overrides::default())
}

fn errors_on(text: &str, field: &str) -> Vec<Diagnostic> {
    let (cfg, diags) = p(text, Path::new("/etc/upkeep/test.toml"));
    assert!(cfg.is_none(), "config accepted, diags: {diags:#?}");
    let hits: Vec<_> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error && d.field.as_deref() == Some(field))
        .cloned()
        .collect();
    assert!(!hits.is_empty(), "no error on {field}: {diags:#?}");
    for d in &hits {
        assert_eq!(d.file, Path::new("/etc/upkeep/test.toml"));
    }
    hits
}

#[test]
fn without_the_table_nothing_changes() {
    let (cfg, diags) = p("", Path::new("/etc/upkeep/test.toml"));
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(cfg.unwrap().cluster, None);
}

#[test]
fn only_etcd_is_required_and_the_rest_defaults() {
    let (cfg, diags) = p(
        "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n",
        Path::new("/etc/upkeep/test.toml"),
    );
    assert!(diags.is_empty(), "{diags:#?}");
    let c = cfg.unwrap().cluster.unwrap();
    assert_eq!(c.etcd, vec!["http://127.0.0.1:2379".to_string()]);
    assert_eq!(c.prefix, "/upkeep");
    assert_eq!(c.ready_timeout, Duration::from_secs(300));
    assert_eq!(c.soak, Duration::from_secs(30));
    assert_eq!((c.ca_file, c.cert_file, c.key_file), (None, None, None));
}

#[test]
fn every_key_resolves_and_relative_files_follow_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["ca.crt", "client.crt", "client.key"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    let path = dir.path().join("upkeep.toml");
    let text = r#"
[cluster]
etcd = ["https://10.0.0.11:2379", "https://10.0.0.12:2379", "https://10.0.0.13:2379"]
ca_file = "ca.crt"
cert_file = "client.crt"
key_file = "client.key"
prefix = "/prod/upkeep/"
ready_timeout = "2m"
soak = "0s"
"#;
    let (cfg, diags) = p(text, &path);
    assert!(diags.is_empty(), "{diags:#?}");
    let c = cfg.unwrap().cluster.unwrap();
    assert_eq!(c.etcd.len(), 3);
    assert_eq!(c.ca_file, Some(dir.path().join("ca.crt")));
    assert_eq!(c.cert_file, Some(dir.path().join("client.crt")));
    assert_eq!(c.key_file, Some(dir.path().join("client.key")));
    assert_eq!(c.prefix, "/prod/upkeep", "trailing slash trimmed");
    assert_eq!(c.ready_timeout, Duration::from_secs(120));
    assert_eq!(c.soak, Duration::ZERO);
}

#[test]
fn missing_or_empty_etcd_is_an_error() {
    let d = errors_on("[cluster]\nprefix = \"/x\"\n", "cluster.etcd");
    assert!(d[0].message.contains("required"), "{d:#?}");
    let d = errors_on("[cluster]\netcd = []\n", "cluster.etcd");
    assert!(d[0].message.contains("at least one"), "{d:#?}");
    errors_on("[cluster]\netcd = \"http://a:1\"\n", "cluster.etcd");
}

#[test]
fn urls_must_be_http_or_https_with_a_port() {
    let d = errors_on(
        "[cluster]\netcd = [\"http://127.0.0.1:2379\", \"10.0.0.12:2379\"]\n",
        "cluster.etcd[1]",
    );
    assert!(d[0].message.contains("http:// or https://"), "{d:#?}");
    assert_eq!(d[0].line, Some(2));
    let d = errors_on(
        "[cluster]\netcd = [\"https://h\"]\nca_file = \"/dev/null\"\n",
        "cluster.etcd[0]",
    );
    assert!(d[0].message.contains("port"), "{d:#?}");
}

#[test]
fn https_needs_a_ca_file() {
    let d = errors_on(
        "[cluster]\netcd = [\"https://10.0.0.11:2379\"]\n",
        "cluster.ca_file",
    );
    assert!(d[0].message.contains("https://"), "{d:#?}");
}

#[test]
fn cert_and_key_go_together() {
    let d = errors_on(
        "[cluster]\netcd = [\"http://a:2379\"]\ncert_file = \"/dev/null\"\n",
        "cluster.key_file",
    );
    assert!(d[0].message.contains("cert_file"), "{d:#?}");
    errors_on(
        "[cluster]\netcd = [\"http://a:2379\"]\nkey_file = \"/dev/null\"\n",
        "cluster.cert_file",
    );
}

#[test]
fn bad_values_and_unknown_keys_are_errors() {
    errors_on(
        "[cluster]\netcd = [\"http://a:2379\"]\nprefix = \"upkeep\"\n",
        "cluster.prefix",
    );
    errors_on(
        "[cluster]\netcd = [\"http://a:2379\"]\nprefix = \"/\"\n",
        "cluster.prefix",
    );
    errors_on(
        "[cluster]\netcd = [\"http://a:2379\"]\nready_timeout = \"0s\"\n",
        "cluster.ready_timeout",
    );
    errors_on(
        "[cluster]\netcd = [\"http://a:2379\"]\nsoak = \"soon\"\n",
        "cluster.soak",
    );
    let d = errors_on(
        "[cluster]\netcd = [\"http://a:2379\"]\nendpoints = []\n",
        "cluster.endpoints",
    );
    assert!(d[0].message.contains("unknown key"), "{d:#?}");
}

#[test]
fn unreadable_tls_files_are_warnings_naming_the_file() {
    let missing = PathBuf::from("/nonexistent/upkeep-test/ca.crt");
    let text = format!(
        "[cluster]\netcd = [\"https://10.0.0.11:2379\"]\nca_file = {:?}\n",
        missing.display().to_string()
    );
    let (cfg, diags) = p(&text, Path::new("/etc/upkeep/test.toml"));
    assert!(cfg.unwrap().cluster.is_some(), "a warning keeps the config");
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].severity, Severity::Warning);
    assert_eq!(diags[0].field.as_deref(), Some("cluster.ca_file"));
    assert!(diags[0].message.contains("/nonexistent/upkeep-test/ca.crt"));
}

#[test]
fn documented_example_is_valid() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .unwrap();
    let sec = doc.find("## `[cluster]`").expect("a [cluster] section");
    let start = sec + doc[sec..].find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let (cfg, diags) = p(&doc[start..end], Path::new("/etc/upkeep/upkeep.toml"));
    // Only warnings (this machine has no kubeadm PKI).
    assert!(
        diags.iter().all(|d| d.severity == Severity::Warning),
        "{diags:#?}"
    );
    let c = cfg.unwrap().cluster.unwrap();
    assert_eq!(c.etcd.len(), 3);
    assert_eq!(c.ready_timeout, Duration::from_secs(300));
}
