//! Directory scans (real files, real permissions) and the last-good tracker.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{cfg, has_error, require_root};
use upkeep_spec::config::{self, Config, Overrides};
use upkeep_spec::manifest::{scan, DirScan, FileOutcome, ManifestTracker};
use upkeep_spec::Severity;

fn pod_yaml(name: &str, cmd: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: img\n    command: [\"{cmd}\"]\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

fn cfg_for(dir: &Path) -> Config {
    Config {
        manifests: dir.to_path_buf(),
        ..cfg()
    }
}

fn names(d: &upkeep_spec::manifest::Desired) -> Vec<String> {
    d.services.iter().map(|s| s.name.clone()).collect()
}

#[test]
fn scan_reads_regular_non_dot_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a.yaml", &pod_yaml("a", "/bin/a"));
    write(d, "b", &pod_yaml("b", "/bin/b")); // no extension: still a manifest
    write(d, ".hidden.yaml", &pod_yaml("h", "/bin/h"));
    write(d, "a.yaml.swp", "junk");
    write(d, "a.yaml~", &pod_yaml("tilde", "/bin/t"));
    write(d, "#a.yaml#", "junk");
    write(d, "a.yaml.dpkg-old", "junk");
    std::fs::create_dir(d.join("sub")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = write(outside.path(), "target.yaml", &pod_yaml("linked", "/bin/l"));
    std::os::unix::fs::symlink(&target, d.join("link.yaml")).unwrap();
    std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling.yaml")).unwrap();

    let s = scan(&cfg_for(d));
    assert!(!s.unreadable, "{:#?}", s.diagnostics);
    let kinds: Vec<(String, &str)> = s
        .files
        .iter()
        .map(|(p, o)| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let k = match o {
                FileOutcome::Pod(_) => "pod",
                FileOutcome::Invalid(_) => "invalid",
                FileOutcome::Ignored(_) => "ignored",
                FileOutcome::Settling => "settling",
            };
            (name, k)
        })
        .collect();
    let expect = [
        ("#a.yaml#", "ignored"),
        ("a.yaml", "pod"),
        ("a.yaml.dpkg-old", "ignored"),
        ("a.yaml.swp", "ignored"),
        ("a.yaml~", "ignored"),
        ("b", "pod"),
        ("dangling.yaml", "invalid"),
        ("link.yaml", "pod"),
        ("sub", "ignored"),
    ];
    let expect: Vec<(String, &str)> = expect.iter().map(|(a, b)| (a.to_string(), *b)).collect();
    assert_eq!(kinds, expect);
    match &s.files[&d.join("a.yaml.swp")] {
        FileOutcome::Ignored(n) => assert_eq!(n.severity, Severity::Note),
        other => panic!("{other:?}"),
    }
}

#[test]
fn single_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "only.yaml", &pod_yaml("only", "/bin/o"));
    let s = scan(&cfg_for(&f));
    assert_eq!(s.files.len(), 1);
    assert!(matches!(&s.files[&f], FileOutcome::Pod(p) if p.pod_name == "only"));
}

#[test]
fn missing_directory_is_unreadable_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let s = scan(&cfg_for(&dir.path().join("nope")));
    assert!(s.unreadable);
    assert!(s.files.is_empty());
    assert_eq!(s.diagnostics[0].severity, Severity::Warning);
}

#[test]
fn group_writable_file_and_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = write(d, "gw.yaml", &pod_yaml("gw", "/bin/x"));
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
    let s = scan(&cfg_for(d));
    match &s.files[&f] {
        FileOutcome::Invalid(diags) => assert!(
            has_error(diags, &["writable by group or others", "0664"]),
            "{diags:#?}"
        ),
        other => panic!("{other:?}"),
    }
    // Allowed by the config.
    let mut c = cfg_for(d);
    c.allow_writable_manifests = true;
    assert!(matches!(&scan(&c).files[&f], FileOutcome::Pod(_)));

    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    let s = scan(&cfg_for(d));
    assert!(s.unreadable && s.files.is_empty());
    assert!(
        has_error(&s.diagnostics, &["manifests directory", "writable"]),
        "{:#?}",
        s.diagnostics
    );
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(!scan(&cfg_for(d)).unreadable);
}

#[test]
fn file_owned_by_another_user_is_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "other.yaml", &pod_yaml("o", "/bin/x"));
    nix::unistd::chown(&f, Some(nix::unistd::Uid::from_raw(12345)), None).unwrap();
    match &scan(&cfg_for(dir.path())).files[&f] {
        FileOutcome::Invalid(diags) => {
            assert!(has_error(diags, &["owned by uid 12345"]), "{diags:#?}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tracker_keeps_the_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = cfg_for(d);
    let mut t = ManifestTracker::new();
    write(d, "a.yaml", &pod_yaml("a", "/bin/a1"));
    let first = t.update(scan(&c), &[]);
    assert_eq!(names(&first), ["a"]);
    assert!(first.errors.is_empty());

    // Broken edit: the old version keeps running, the error is reported.
    write(d, "a.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n  - name: c\n    comand: [x]\n");
    let broken = t.update(scan(&c), &[]);
    assert_eq!(names(&broken), ["a"]);
    assert_eq!(broken.services[0].argv, ["/bin/a1"]);
    assert!(
        has_error(&broken.errors, &["a.yaml", "image"]),
        "{:#?}",
        broken.errors
    );
    assert!(broken
        .warnings
        .iter()
        .any(|w| w.message.contains("last good version")));

    // A new file that never parsed starts nothing.
    write(d, "new.yaml", "kind: Deployment\n");
    let with_new = t.update(scan(&c), &[]);
    assert_eq!(names(&with_new), ["a"]);

    // Fixed: the new version replaces the old.
    write(d, "a.yaml", &pod_yaml("a", "/bin/a2"));
    let fixed = t.update(scan(&c), &[]);
    assert_eq!(fixed.services[0].argv, ["/bin/a2"]);

    // The directory vanishes: everything keeps running.
    let gone = t.update(
        DirScan {
            unreadable: true,
            ..Default::default()
        },
        &[],
    );
    assert_eq!(gone.services[0].argv, ["/bin/a2"]);

    // A removed file drops out.
    std::fs::remove_file(d.join("a.yaml")).unwrap();
    let removed = t.update(scan(&c), &[]);
    assert!(removed.services.is_empty());
    assert_eq!(t.pods().count(), 0);
}

#[test]
fn tracker_duplicate_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = cfg_for(d);
    let mut t = ManifestTracker::new();
    // Both new: the first in path order wins, the error names both files.
    write(d, "1.yaml", &pod_yaml("dup", "/bin/one"));
    write(d, "2.yaml", &pod_yaml("dup", "/bin/two"));
    let out = t.update(scan(&c), &[]);
    assert_eq!(out.services.len(), 1);
    assert_eq!(out.services[0].argv, ["/bin/one"]);
    assert!(
        has_error(&out.errors, &["2.yaml", "1.yaml", "duplicate", "dup"]),
        "{:#?}",
        out.errors
    );

    // A new file sorting first does not displace the running one.
    write(d, "0.yaml", &pod_yaml("dup", "/bin/zero"));
    let out = t.update(scan(&c), &[]);
    assert_eq!(out.services.len(), 1);
    assert_eq!(out.services[0].argv, ["/bin/one"]);
    assert!(
        has_error(&out.errors, &["0.yaml", "1.yaml", "duplicate"]),
        "{:#?}",
        out.errors
    );

    // A pod may not take a host service's name.
    let (cfg, diags) = config::parse(
        "[services.dup]\ncommand = [\"/bin/host\"]\n",
        Path::new("/etc/upkeep/upkeep.toml"),
        &Overrides::default(),
    );
    let host = cfg.unwrap_or_else(|| panic!("{diags:#?}")).services;
    let mut t = ManifestTracker::new();
    let out = t.update(scan(&c), &host);
    assert!(out.services.is_empty());
    assert!(
        has_error(
            &out.errors,
            &["duplicate", "upkeep.toml", "services.dup", "metadata.name"]
        ),
        "{:#?}",
        out.errors
    );
}

#[test]
fn duplicate_service_names_name_both_files_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = cfg_for(d);
    // Two single-container pods named alike: the error sits on the later
    // file's field and names the earlier file and its field.
    write(d, "1.yaml", &pod_yaml("web", "/bin/one"));
    write(d, "2.yaml", &pod_yaml("web", "/bin/two"));
    let mut t = ManifestTracker::new();
    let out = t.update(scan(&c), &[]);
    assert!(
        has_error(
            &out.errors,
            &[
                "2.yaml: metadata.name",
                "1.yaml (metadata.name)",
                "duplicate"
            ]
        ),
        "{:#?}",
        out.errors
    );
}

#[test]
fn host_service_x_y_and_pod_x_container_y_are_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let c = cfg_for(d);
    write(
        d,
        "x.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  hostNetwork: true\n  containers:\n  - name: y\n    image: img\n    command: [\"/bin/y\"]\n  - name: z\n    image: img\n    command: [\"/bin/z\"]\n",
    );
    let (cfg, diags) = config::parse(
        "[services.x_y]\ncommand = [\"/bin/host\"]\n",
        Path::new("/etc/upkeep/upkeep.toml"),
        &Overrides::default(),
    );
    let host = cfg.unwrap_or_else(|| panic!("{diags:#?}")).services;
    let mut t = ManifestTracker::new();
    let out = t.update(scan(&c), &host);
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    let names: Vec<&str> = out.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["x/y", "x/z"]);
    // Different service names, so different log files and cgroups.
    assert_ne!(
        upkeep_spec::names::path_component("x_y"),
        upkeep_spec::names::path_component(names[0])
    );
}
