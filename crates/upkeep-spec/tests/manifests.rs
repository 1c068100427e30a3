//! Static Pod manifests: the real fixtures, resolution rules and validation.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{cfg, fixtures, has_error, invalid, pod};
use upkeep_spec::manifest::{image_name, is_editor_artifact, load_file, parse};
use upkeep_spec::{HostPathType, Origin, ProbeHandler, RestartPolicy, Scheme, Severity};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn load_fixture(name: &str) -> upkeep_spec::manifest::FileOutcome {
    load_file(&fixtures().join(name), &cfg())
}

fn parse_str(text: &str) -> upkeep_spec::manifest::FileOutcome {
    parse(text.as_bytes(), Path::new("/m/test.yaml"), &cfg())
}

#[test]
fn kubeadm_fixtures_load_without_errors() {
    for name in [
        "kubeadm-v1.29-etcd.yaml",
        "kubeadm-v1.29-kube-apiserver.yaml",
        "kubeadm-v1.29-kube-controller-manager.yaml",
        "kubeadm-v1.29-kube-scheduler.yaml",
    ] {
        let p = pod(load_fixture(name));
        assert_eq!(p.services.len(), 1, "{name}");
        let unknown: Vec<_> = p
            .warnings
            .iter()
            .filter(|w| w.severity == Severity::Warning)
            .collect();
        assert!(
            unknown.is_empty(),
            "{name}: unexpected warnings {unknown:#?}"
        );
        assert_eq!(p.hash.len(), 32);
    }
}

#[test]
fn kubeadm_etcd_resolves_exactly() {
    let p = pod(load_fixture("kubeadm-v1.29-etcd.yaml"));
    assert_eq!(p.pod_name, "etcd");
    let s = &p.services[0];
    assert_eq!(s.name, "etcd");
    assert_eq!(
        s.origin,
        Origin::StaticPod {
            pod: "etcd".into(),
            namespace: "kube-system".into(),
            container: "etcd".into()
        }
    );
    assert_eq!(s.argv.len(), 20);
    assert_eq!(s.argv[0], "etcd");
    assert_eq!(s.argv[1], "--advertise-client-urls=https://172.30.1.2:2379");
    assert_eq!(
        s.argv[19],
        "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt"
    );
    assert_eq!(s.env.len(), 1);
    assert_eq!(s.env["PATH"], PATH);
    assert_eq!(s.working_dir, Path::new("/"));
    assert_eq!((s.uid, s.gid), (None, None));
    assert_eq!(s.restart, RestartPolicy::Always);
    assert_eq!(s.stop_signal, "SIGTERM");
    assert_eq!(s.stop_grace, Duration::from_secs(30));
    let live = s.probes.liveness.as_ref().expect("liveness");
    assert_eq!(
        live.handler,
        ProbeHandler::Http {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port: 2381,
            path: "/health?exclude=NOSPACE&serializable=true".into(),
            headers: vec![],
        }
    );
    assert_eq!(live.period, Duration::from_secs(10));
    assert_eq!(live.timeout, Duration::from_secs(15));
    assert_eq!(live.failure_threshold, 8);
    assert_eq!(live.success_threshold, 1);
    assert_eq!(live.initial_delay, Duration::from_secs(10));
    let startup = s.probes.startup.as_ref().expect("startup");
    assert_eq!(startup.failure_threshold, 24);
    assert!(
        matches!(&startup.handler, ProbeHandler::Http { path, .. } if path == "/health?serializable=false")
    );
    assert!(s.probes.readiness.is_none());
    assert_eq!(s.volumes.len(), 2);
    assert_eq!(s.volumes[0].path, Path::new("/var/lib/etcd"));
    assert_eq!(s.volumes[0].kind, HostPathType::DirectoryOrCreate);
    // requests are not limits.
    assert_eq!(s.resources, Default::default());
}

#[test]
fn kubeadm_apiserver_resolves_exactly() {
    let p = pod(load_fixture("kubeadm-v1.29-kube-apiserver.yaml"));
    let s = &p.services[0];
    assert_eq!(s.name, "kube-apiserver");
    assert_eq!(s.argv.len(), 28);
    assert_eq!(s.argv[0], "kube-apiserver");
    assert_eq!(s.argv[3], "--authorization-mode=Node,RBAC");
    assert_eq!(
        s.argv.last().unwrap(),
        "--tls-private-key-file=/etc/kubernetes/pki/apiserver.key"
    );
    let https = |path: &str| ProbeHandler::Http {
        scheme: Scheme::Https,
        host: "172.30.1.2".into(),
        port: 6443,
        path: path.into(),
        headers: vec![],
    };
    let live = s.probes.liveness.as_ref().unwrap();
    assert_eq!(live.handler, https("/livez"));
    assert_eq!(
        (live.failure_threshold, live.timeout),
        (8, Duration::from_secs(15))
    );
    let ready = s.probes.readiness.as_ref().unwrap();
    assert_eq!(ready.handler, https("/readyz"));
    assert_eq!(ready.period, Duration::from_secs(1));
    assert_eq!(ready.initial_delay, Duration::ZERO);
    assert_eq!((ready.failure_threshold, ready.success_threshold), (3, 1));
    let startup = s.probes.startup.as_ref().unwrap();
    assert_eq!(startup.handler, https("/livez"));
    assert_eq!(startup.failure_threshold, 24);
    assert_eq!(s.volumes.len(), 6);
}

#[test]
fn olddocs_scheduler_fails_on_the_missing_volume() {
    let path = fixtures().join("olddocs-ha-kube-scheduler.yaml");
    let diags = invalid(load_file(&path, &cfg()));
    let err = diags
        .iter()
        .find(|d| d.severity == Severity::Error && d.message.contains("no such volume"))
        .unwrap_or_else(|| panic!("no 'no such volume' error: {diags:#?}"));
    assert_eq!(err.file, path);
    assert!(err.message.contains("default-token-s8ejd"), "{err}");
    assert_eq!(
        err.field.as_deref(),
        Some("spec.containers[0].volumeMounts[1].name")
    );
    assert!(err.line.is_some());
}

#[test]
fn olddocs_etcd_mounts_its_data_where_the_pod_says() {
    // /var/etcd is mounted from /var/etcd/data; the eight ssl directories
    // at their own paths, read-only.
    let p = pod(load_fixture("olddocs-ha-etcd.yaml"));
    let s = &p.services[0];
    assert_eq!(s.name, "etcd-server");
    assert_eq!(s.volumes.len(), 9);
    let etcd = &s.volumes[0];
    assert_eq!(etcd.path, Path::new("/var/etcd/data"));
    assert_eq!(etcd.mount_path.as_deref(), Some(Path::new("/var/etcd")));
    assert_eq!(etcd.target(), Path::new("/var/etcd"));
    assert!(!etcd.read_only);
    for v in &s.volumes[1..] {
        assert_eq!(v.mount_path, None, "{v:?}");
        assert!(v.read_only, "{v:?}");
        assert_eq!(v.kind, HostPathType::Unchecked);
    }
    assert!(upkeep_spec::needs_mount_namespace(&s.volumes));
    let warnings: Vec<_> = p
        .warnings
        .iter()
        .filter(|w| w.severity >= Severity::Warning)
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn own_path_writable_mounts_need_no_namespace_and_keep_their_hash() {
    // kubeadm's etcd: both mounts at their own path, writable.
    let p = pod(load_fixture("kubeadm-v1.29-etcd.yaml"));
    let s = &p.services[0];
    assert!(!s.volumes.is_empty());
    assert!(!upkeep_spec::needs_mount_namespace(&s.volumes));
    // The serialized volume (part of both hashes) is what it was before
    // mounts could move: an upgrade of upkeep replaces no process.
    let v = serde_json::to_value(&s.volumes[0]).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["kind", "path"]);
}

#[test]
fn olddocs_etcd_keeps_shell_style_placeholders_literal() {
    // tests/data copy of olddocs-ha-etcd.yaml with only the mountPath fixed.
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/olddocs-ha-etcd-fixed-mount.yaml");
    let p = pod(load_file(&path, &cfg()));
    let s = &p.services[0];
    assert_eq!(s.name, "etcd-server");
    assert_eq!(s.argv[0], "/usr/local/bin/etcd");
    assert_eq!(s.argv[2], "${NODE_NAME}");
    assert_eq!(s.argv[4], "http://${NODE_IP}:2380");
    assert_eq!(s.argv[14], "${DISCOVERY_TOKEN}");
    assert!(matches!(&s.origin, Origin::StaticPod { namespace, .. } if namespace == "default"));
    assert_eq!(s.volumes[0].path, Path::new("/var/etcd/data"));
    assert_eq!(s.volumes[0].kind, HostPathType::Unchecked);
}

#[test]
fn olddocs_apiserver_and_controller_manager_load() {
    let p = pod(load_fixture("olddocs-ha-kube-apiserver.yaml"));
    assert_eq!(
        p.services[0].argv[..2],
        ["/bin/sh".to_string(), "-c".to_string()]
    );
    assert!(p.services[0].argv[2].ends_with("1>>/var/log/kube-apiserver.log 2>&1"));
    let p = pod(load_fixture("olddocs-ha-kube-controller-manager.yaml"));
    let live = p.services[0].probes.liveness.as_ref().unwrap();
    // No host: the node IP; no scheme: http; timing defaults where unset.
    assert_eq!(
        live.handler,
        ProbeHandler::Http {
            scheme: Scheme::Http,
            host: "10.0.0.11".into(),
            port: 10252,
            path: "/healthz".into(),
            headers: vec![]
        }
    );
    assert_eq!(live.initial_delay, Duration::from_secs(15));
    assert_eq!(live.period, Duration::from_secs(10));
    assert_eq!(live.failure_threshold, 3);
}

#[test]
fn non_manifest_fixtures_are_invalid_not_panics() {
    for name in [
        "monit-docker",
        "monit-kubelet",
        "olddocs-ha-default-kubelet",
    ] {
        invalid(load_fixture(name));
    }
}

const FULL: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: ns1
  labels: {app: web}
  annotations: {note: hello}
spec:
  hostNetwork: true
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 5
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  volumes:
  - name: data
    hostPath: {path: /var/lib/web/, type: Directory}
  containers:
  - name: main
    image: example.org/web:1.0
    command: ["/bin/web", "--pod=$(POD)", "--x=$(LATER)", "$$(ESCAPED)", "--ns=$(NS)"]
    args: ["--ip=$(IP)", "--all=$(COMBINED)"]
    workingDir: /srv
    securityContext: {runAsUser: 1001}
    ports:
    - {name: http, containerPort: 8080}
    env:
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: COMBINED, value: "$(NODE)-$(LATER)-$(IP)"}
    - {name: LATER, value: "late"}
    - {name: EMPTY}
    - {name: PATH, value: /opt/bin}
    livenessProbe:
      httpGet: {port: http, path: healthz, httpHeaders: [{name: X-A, value: "1"}]}
      terminationGracePeriodSeconds: 3
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 0
      successThreshold: 2
    startupProbe:
      exec: {command: ["/bin/check", "$(LATER)", "$(POD)", "$(COMBINED)"]}
    lifecycle:
      preStop: {exec: {command: ["/bin/drain", "$(LATER)"]}}
    resources:
      limits: {memory: 100Mi, cpu: 250m}
      requests: {memory: 1Gi}
    volumeMounts:
    - {name: data, mountPath: /var/lib/web}
  - name: side
    image: example.org/side
    command: [/bin/side]
"#;

#[test]
fn full_pod_resolution() {
    let p = pod(parse_str(FULL));
    assert_eq!(p.services.len(), 2);
    let s = &p.services[0];
    assert_eq!(s.name, "web/main");
    assert_eq!(p.services[1].name, "web/side");
    assert_eq!(
        s.argv,
        [
            "/bin/web",
            "--pod=web-master-1",
            "--x=late",
            "$(ESCAPED)",
            "--ns=ns1",
            "--ip=10.0.0.11",
            // COMBINED saw NODE and IP (earlier) but not LATER (declared after it).
            "--all=Master-1-$(LATER)-10.0.0.11",
        ]
    );
    assert_eq!(s.env["POD"], "web-master-1");
    assert_eq!(s.env["APP"], "web");
    assert_eq!(s.env["EMPTY"], "");
    assert_eq!(s.env["PATH"], "/opt/bin");
    assert_eq!(s.working_dir, Path::new("/srv"));
    assert_eq!((s.uid, s.gid), (Some(1001), Some(1000)));
    assert_eq!(s.restart, RestartPolicy::OnFailure);
    assert_eq!(s.stop_grace, Duration::from_secs(5));
    // preStop and exec probes use the literal env values (valueFrom maps to "").
    assert_eq!(
        s.pre_stop.as_deref(),
        Some(&["/bin/drain".to_string(), "late".to_string()][..])
    );
    let startup = s.probes.startup.as_ref().unwrap();
    assert_eq!(
        startup.handler,
        ProbeHandler::Exec {
            argv: vec![
                "/bin/check".into(),
                "late".into(),
                "".into(),
                "$(NODE)-$(LATER)-$(IP)".into()
            ]
        }
    );
    let live = s.probes.liveness.as_ref().unwrap();
    assert_eq!(
        live.handler,
        ProbeHandler::Http {
            scheme: Scheme::Http,
            host: "10.0.0.11".into(),
            port: 8080,
            path: "/healthz".into(),
            headers: vec![("X-A".into(), "1".into())],
        }
    );
    assert_eq!(live.termination_grace, Some(Duration::from_secs(3)));
    let ready = s.probes.readiness.as_ref().unwrap();
    assert_eq!(
        ready.handler,
        ProbeHandler::Tcp {
            host: "10.0.0.11".into(),
            port: 8080
        }
    );
    assert_eq!(ready.period, Duration::from_secs(10), "0 means the default");
    assert_eq!(ready.success_threshold, 2);
    assert_eq!(s.resources.memory_max, Some(100 * 1024 * 1024));
    assert_eq!(s.resources.cpu_max_millis, Some(250));
    assert_eq!(s.volumes[0].path, Path::new("/var/lib/web/"));
    assert_eq!(s.volumes[0].kind, HostPathType::Directory);
    assert_ne!(s.hash, p.services[1].hash);
}

#[test]
fn hash_ignores_formatting_but_not_content() {
    let a = pod(parse_str(FULL));
    let reformatted = format!(
        "# a comment\n{}\n\n",
        FULL.replace("  restartPolicy: OnFailure\n", "")
    )
    .replace("spec:\n", "spec:\n  restartPolicy: OnFailure   # moved\n");
    let b = pod(parse_str(&reformatted));
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.services, b.services);
    let c = pod(parse_str(&FULL.replace("/bin/side", "/bin/side2")));
    assert_ne!(a.hash, c.hash);
    assert_eq!(a.services[0].hash, c.services[0].hash);
    assert_ne!(a.services[1].hash, c.services[1].hash);
}

#[test]
fn json_manifests_work_too() {
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},
      "spec":{"hostNetwork":true,"containers":[{"name":"c","image":"i","command":["/bin/true"],
      "livenessProbe":{"tcpSocket":{"port":80,"host":"127.0.0.1"}}}]}}"#;
    let p = pod(parse_str(json));
    assert_eq!(p.services[0].name, "j");
    assert_eq!(p.services[0].argv, ["/bin/true"]);
}

fn minimal(container_extra: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  hostNetwork: true\n{spec_extra}  containers:\n  - name: c\n    image: reg.example/img:1\n{container_extra}"
    )
}

#[test]
fn unknown_fields_are_warnings_with_paths() {
    let text = minimal(
        "    comand: [/bin/x]\n    command: [/bin/y]\n",
        "  frobnicate: 1\n",
    );
    let p = pod(parse_str(&text));
    let fields: Vec<_> = p
        .warnings
        .iter()
        .filter(|w| w.severity == Severity::Warning)
        .filter_map(|w| w.field.clone())
        .collect();
    assert!(
        fields.contains(&"spec.containers[0].comand".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"spec.frobnicate".to_string()),
        "{fields:?}"
    );
    let w = p
        .warnings
        .iter()
        .find(|w| w.field.as_deref() == Some("spec.containers[0].comand"))
        .unwrap();
    assert_eq!(w.line, Some(11));
}

#[test]
fn no_command_uses_images_or_fails_clearly() {
    let text = minimal("", "");
    let diags = invalid(parse_str(&text));
    assert!(
        has_error(&diags, &["no command", "reg.example/img", "[images]"]),
        "{diags:#?}"
    );
    let mut c = cfg();
    c.images.insert(
        "reg.example/img".into(),
        vec!["/usr/bin/img".into(), "--flag".into()],
    );
    let with_args = minimal(
        "    args: [\"--a=$(X)\"]\n    env: [{name: X, value: x}]\n",
        "",
    );
    let p = pod(parse(with_args.as_bytes(), Path::new("/m/p.yaml"), &c));
    assert_eq!(p.services[0].argv, ["/usr/bin/img", "--flag", "--a=x"]);
}

#[test]
fn wrong_kinds_are_clear_errors() {
    let d = invalid(parse_str(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n",
    ));
    assert!(has_error(&d, &["kind", "Deployment", "Pod"]), "{d:#?}");
    assert_eq!(
        d.iter().filter(|d| d.severity == Severity::Error).count(),
        1,
        "{d:#?}"
    );
    let d = invalid(parse_str("apiVersion: v1\nkind: PodList\nitems: []\n"));
    assert!(has_error(&d, &["PodList", "one Pod per file"]), "{d:#?}");
    let d = invalid(parse_str("apiVersion: v2\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c, image: i, command: [a]}]}\n"));
    assert!(has_error(&d, &["apiVersion", "v1"]), "{d:#?}");
    let d = invalid(parse_str("- a\n- b\n"));
    assert!(has_error(&d, &["expected a mapping"]), "{d:#?}");
}

#[test]
fn missing_name_and_many_problems_are_all_reported() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\nspec:\n  containers:\n  - image: i\n    command: [a]\n  - name: Bad_Name\n    command: [b]\n    livenessProbe: {periodSeconds: 5}\n";
    let d = invalid(parse_str(text));
    assert!(has_error(&d, &["metadata.name", "missing"]), "{d:#?}");
    assert!(
        has_error(&d, &["spec.containers[0].name", "missing"]),
        "{d:#?}"
    );
    assert!(
        has_error(&d, &["spec.containers[1].name", "Bad_Name"]),
        "{d:#?}"
    );
    assert!(
        has_error(&d, &["spec.containers[1].image", "missing"]),
        "{d:#?}"
    );
    assert!(
        has_error(&d, &["livenessProbe", "exactly one handler"]),
        "{d:#?}"
    );
}

#[test]
fn api_object_references_are_rejected() {
    let text = minimal(
        "    command: [a]\n    env:\n    - name: S\n      valueFrom: {secretKeyRef: {name: s, key: k}}\n    - name: C\n      valueFrom: {configMapKeyRef: {name: c, key: k}}\n    envFrom: [{configMapRef: {name: c}}]\n    volumeMounts: [{name: sec, mountPath: /s}]\n",
        "  serviceAccountName: default\n  volumes:\n  - name: sec\n    secret: {secretName: s}\n  - name: cm\n    configMap: {name: c}\n  - name: pvc\n    persistentVolumeClaim: {claimName: x}\n",
    );
    let d = invalid(parse_str(&text));
    for field in [
        "spec.serviceAccountName",
        "spec.volumes[0].secret",
        "spec.volumes[1].configMap",
        "spec.volumes[2].persistentVolumeClaim",
        "spec.containers[0].env[0].valueFrom.secretKeyRef",
        "spec.containers[0].env[1].valueFrom.configMapKeyRef",
        "spec.containers[0].envFrom[0]",
    ] {
        assert!(has_error(&d, &[field, "API objects"]), "{field}: {d:#?}");
    }
}

#[test]
fn host_path_mounted_elsewhere_read_only_and_propagation() {
    let text = minimal(
        "    command: [a]\n    volumeMounts:\n    - {name: v, mountPath: /in/container/, readOnly: true}\n    - {name: v, mountPath: /also/./here, mountPropagation: HostToContainer}\n    - {name: w, mountPath: /w, mountPropagation: None}\n",
        "  volumes: [{name: v, hostPath: {path: /on/host}}, {name: w, hostPath: {path: /w/}}]\n",
    );
    let p = pod(parse_str(&text));
    let v = &p.services[0].volumes;
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].mount_path.as_deref(), Some(Path::new("/in/container")));
    assert!(v[0].read_only);
    assert_eq!(v[1].mount_path.as_deref(), Some(Path::new("/also/here")));
    assert_eq!(v[1].propagation, upkeep_spec::Propagation::HostToContainer);
    assert!(!v[1].read_only);
    assert_eq!(v[2].mount_path, None, "trailing / of the hostPath ignored");
    assert!(!v[2].needs_bind());
}

#[test]
fn read_only_own_path_mounts_match_the_hash_an_older_upkeep_recorded() {
    use upkeep_spec::hash::{exec_hash, exec_hash_matches};
    // kubeadm's apiserver: read-only mounts at their own path.
    let p = pod(load_fixture("kubeadm-v1.29-kube-apiserver.yaml"));
    let spec = &p.services[0];
    assert!(spec.volumes.iter().any(|v| v.read_only));
    // What an older upkeep recorded: readOnly was not part of the spec.
    let mut older_spec = spec.clone();
    for v in &mut older_spec.volumes {
        v.read_only = false;
    }
    let older = exec_hash(&older_spec);
    assert_ne!(exec_hash(spec), older);
    assert!(
        exec_hash_matches(&older, spec),
        "an upgrade restarts nothing"
    );
    assert!(exec_hash_matches(&exec_hash(spec), spec));
    // A real change still differs.
    let mut changed = spec.clone();
    changed.argv.push("--new-flag".into());
    assert!(!exec_hash_matches(&older, &changed));
    // A mount elsewhere never had an older hash.
    let mut moved = spec.clone();
    moved.volumes[0].mount_path = Some("/elsewhere".into());
    assert!(!exec_hash_matches(&older, &moved));
}

#[test]
fn bad_mount_paths_are_errors_naming_the_field() {
    let vols =
        "  volumes: [{name: v, hostPath: {path: /on/host}}, {name: w, hostPath: {path: /w}}]\n";
    for (mounts, field, words) in [
        (
            "{name: v, mountPath: rel/dir}",
            "volumeMounts[0].mountPath",
            &["\"rel/dir\"", "absolute"][..],
        ),
        (
            "{name: v, mountPath: /a/../etc}",
            "volumeMounts[0].mountPath",
            &["..", "component"][..],
        ),
        (
            "{name: v, mountPath: /}",
            "volumeMounts[0].mountPath",
            &["root"][..],
        ),
        (
            "{name: v, mountPath: //./}",
            "volumeMounts[0].mountPath",
            &["root"][..],
        ),
        (
            "{name: v, mountPath: /x}, {name: w, mountPath: /x/}",
            "volumeMounts[1].mountPath",
            &["/x", "already the mountPath", "/on/host"][..],
        ),
        (
            "{name: v, mountPath: /x, mountPropagation: Bidirectional}",
            "volumeMounts[0].mountPropagation",
            &["Bidirectional", "not supported", "host"][..],
        ),
        (
            "{name: v, mountPath: /x, mountPropagation: Both}",
            "volumeMounts[0].mountPropagation",
            &["\"Both\"", "HostToContainer"][..],
        ),
        (
            "{name: v, mountPath: /x, readOnly: yes-please}",
            "volumeMounts[0].readOnly",
            &[][..],
        ),
    ] {
        let text = minimal(
            &format!("    command: [a]\n    volumeMounts: [{mounts}]\n"),
            vols,
        );
        let d = invalid(parse_str(&text));
        let full = format!("spec.containers[0].{field}");
        let mut want = vec![full.as_str()];
        want.extend_from_slice(words);
        assert!(has_error(&d, &want), "{mounts}: {d:#?}");
        assert!(
            d.iter().all(|e| e.file == Path::new("/m/test.yaml")),
            "{d:#?}"
        );
    }
}

#[test]
fn probe_rules() {
    let bad = minimal(
        "    command: [a]\n    livenessProbe: {exec: {command: [x]}, tcpSocket: {port: 1}, successThreshold: 2}\n    startupProbe: {exec: {command: [x]}, failureThreshold: -1}\n    readinessProbe: {httpGet: {port: 0}, terminationGracePeriodSeconds: 5}\n",
        "",
    );
    let d = invalid(parse_str(&bad));
    assert!(
        has_error(&d, &["livenessProbe", "exactly one handler", "found 2"]),
        "{d:#?}"
    );
    assert!(
        has_error(&d, &["livenessProbe.successThreshold", "must be 1"]),
        "{d:#?}"
    );
    assert!(has_error(&d, &["startupProbe.failureThreshold"]), "{d:#?}");
    assert!(
        has_error(&d, &["readinessProbe.httpGet.port", "between 1 and 65535"]),
        "{d:#?}"
    );
    assert!(
        has_error(
            &d,
            &["readinessProbe.terminationGracePeriodSeconds", "readiness"]
        ),
        "{d:#?}"
    );

    // Unknown named port: a warning and an Unresolved probe; grpc: a warning, probe dropped.
    let text = minimal(
        "    command: [a]\n    livenessProbe: {httpGet: {port: metrics}}\n    readinessProbe: {grpc: {port: 9000}}\n",
        "",
    );
    let p = pod(parse_str(&text));
    let s = &p.services[0];
    assert!(
        matches!(&s.probes.liveness.as_ref().unwrap().handler, ProbeHandler::Unresolved { reason } if reason.contains("metrics"))
    );
    assert!(s.probes.readiness.is_none());
    assert!(p.warnings.iter().any(|w| w.message.contains("gRPC")));
    assert!(p.warnings.iter().any(|w| w.message.contains("named port")));
}

#[test]
fn multi_document_files_use_the_first_with_a_warning() {
    let text = format!(
        "{}---\napiVersion: v1\nkind: Pod\n",
        minimal("    command: [a]\n", "")
    );
    let p = pod(parse_str(&text));
    assert!(p
        .warnings
        .iter()
        .any(|w| w.message.contains("more than one YAML document")));
}

#[test]
fn host_network_false_warns() {
    let text = minimal("    command: [a]\n", "").replace("  hostNetwork: true\n", "");
    let p = pod(parse_str(&text));
    assert!(p
        .warnings
        .iter()
        .any(|w| w.field.as_deref() == Some("spec.hostNetwork")));
}

#[test]
fn helpers() {
    assert_eq!(
        image_name("registry.k8s.io/etcd:3.5.10-0"),
        "registry.k8s.io/etcd"
    );
    assert_eq!(image_name("localhost:5000/etcd"), "localhost:5000/etcd");
    assert_eq!(
        image_name("localhost:5000/etcd:1@sha256:abc"),
        "localhost:5000/etcd"
    );
    assert_eq!(image_name("etcd"), "etcd");
    for n in [
        "a.yaml~",
        "a.swp",
        "a.swx",
        "a.yaml.bak",
        "a.orig",
        "a.rej",
        "a.yaml.dpkg-old",
        "#a.yaml#",
    ] {
        assert!(is_editor_artifact(n), "{n}");
    }
    for n in ["a.yaml", "etcd", "a.json", "#", "bak"] {
        assert!(!is_editor_artifact(n), "{n}");
    }
}

/// A one-container pod with `extra_spec` lines under `spec:` and
/// `extra_container` lines under the container (both already indented).
fn pod_with(extra_spec: &str, extra_container: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: gap\nspec:\n  hostNetwork: true\n{extra_spec}  containers:\n  - name: c\n    image: img\n    command: [\"/bin/true\"]\n{extra_container}"
    )
}

#[test]
fn uid_and_gid_minus_one_are_rejected() {
    for (spec, ctr, field) in [
        (
            "  securityContext:\n    runAsUser: 4294967295\n",
            "",
            "spec.securityContext.runAsUser",
        ),
        (
            "  securityContext:\n    runAsGroup: 4294967295\n",
            "",
            "spec.securityContext.runAsGroup",
        ),
        (
            "",
            "    securityContext:\n      runAsUser: 4294967295\n",
            "spec.containers[0].securityContext.runAsUser",
        ),
        (
            "",
            "    securityContext:\n      runAsGroup: 4294967295\n",
            "spec.containers[0].securityContext.runAsGroup",
        ),
    ] {
        let d = invalid(parse_str(&pod_with(spec, ctr)));
        assert!(
            has_error(&d, &["/m/test.yaml", field, "4294967295", "(uid_t)-1"])
                || has_error(&d, &["/m/test.yaml", field, "4294967295", "(gid_t)-1"]),
            "{field}: {d:#?}"
        );
    }
    // The largest valid id still loads.
    let p = pod(parse_str(&pod_with(
        "  securityContext:\n    runAsUser: 4294967294\n    runAsGroup: 4294967294\n",
        "",
    )));
    assert_eq!(p.services[0].uid, Some(4_294_967_294));
    assert_eq!(p.services[0].gid, Some(4_294_967_294));
}

#[test]
fn nul_bytes_in_argv_are_rejected() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: gap\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: img\n    command: [\"/bin/true\", \"a\\0b\"]\n    args: [\"x\\0\"]\n    lifecycle:\n      preStop:\n        exec:\n          command: [\"/bin/stop\\0\"]\n    livenessProbe:\n      exec:\n        command: [\"/bin/probe\", \"\\0\"]\n";
    let d = invalid(parse_str(text));
    for field in [
        "spec.containers[0].command[1]",
        "spec.containers[0].args[0]",
        "spec.containers[0].lifecycle.preStop.exec.command[0]",
        "spec.containers[0].livenessProbe.exec.command[1]",
    ] {
        assert!(has_error(&d, &[field, "NUL byte"]), "{field}: {d:#?}");
    }
}

#[test]
fn host_path_with_dot_dot_is_rejected() {
    for p in ["/etc/../root", "/var/lib/..", "/../etc"] {
        let spec = format!("  volumes:\n  - name: v\n    hostPath:\n      path: {p}\n");
        let d = invalid(parse_str(&pod_with(&spec, "")));
        assert!(
            has_error(&d, &["spec.volumes[0].hostPath.path", "..", "component"]),
            "{p}: {d:#?}"
        );
    }
    // `..` inside a name is a name, not a component.
    let spec = "  volumes:\n  - name: v\n    hostPath:\n      path: /var/lib/a..b\n";
    pod(parse_str(&pod_with(spec, "")));
}

#[test]
fn grace_periods_above_the_cap_are_clamped_with_a_warning() {
    let p = pod(parse_str(&pod_with(
        "  terminationGracePeriodSeconds: 9223372036854775807\n",
        "    livenessProbe:\n      terminationGracePeriodSeconds: 9223372036854775807\n      exec:\n        command: [\"/bin/true\"]\n",
    )));
    let s = &p.services[0];
    assert_eq!(s.stop_grace, upkeep_spec::MAX_STOP_GRACE);
    assert_eq!(
        s.probes.liveness.as_ref().unwrap().termination_grace,
        Some(upkeep_spec::MAX_STOP_GRACE)
    );
    for field in [
        "spec.terminationGracePeriodSeconds",
        "spec.containers[0].livenessProbe.terminationGracePeriodSeconds",
    ] {
        assert!(
            p.warnings.iter().any(|w| w.severity == Severity::Warning
                && w.field.as_deref() == Some(field)
                && w.message.contains("3600")),
            "{field}: {:#?}",
            p.warnings
        );
    }
    // At the cap: no warning.
    let p = pod(parse_str(&pod_with(
        "  terminationGracePeriodSeconds: 3600\n",
        "",
    )));
    assert_eq!(p.services[0].stop_grace, Duration::from_secs(3600));
    assert!(p.warnings.is_empty(), "{:#?}", p.warnings);
}

#[test]
fn static_pods_always_kill_the_control_group() {
    let p = pod(parse_str(&pod_with("", "")));
    assert_eq!(p.services[0].kill_mode, upkeep_spec::KillMode::ControlGroup);
    // There is no such key in a manifest.
    let p = pod(parse_str(&pod_with("  killMode: process\n", "")));
    assert_eq!(p.services[0].kill_mode, upkeep_spec::KillMode::ControlGroup);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.field.as_deref() == Some("spec.killMode")),
        "{:#?}",
        p.warnings
    );
}

#[test]
fn rollout_annotation_opts_a_pod_out_and_bad_values_name_the_field() {
    use upkeep_spec::RolloutMode;
    let with = |v: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    upkeep.io/rollout: {v}\nspec:\n  containers:\n  - name: c\n    image: reg.example/img:1\n    command: [/bin/true]\n"
        )
    };
    let p = pod(parse_str(&minimal("    command: [/bin/true]\n", "")));
    assert_eq!(p.services[0].rollout, RolloutMode::Serial);
    let p = pod(parse_str(&with("immediate")));
    assert_eq!(p.services[0].rollout, RolloutMode::Immediate);
    let p = pod(parse_str(&with("serial")));
    assert_eq!(p.services[0].rollout, RolloutMode::Serial);
    let d = invalid(parse_str(&with("later")));
    assert!(
        has_error(
            &d,
            &[
                "/m/test.yaml",
                "metadata.annotations.upkeep.io/rollout",
                "\"later\"",
                "immediate"
            ]
        ),
        "{d:#?}"
    );
}

/// A resolved spec survives a JSON round trip unchanged (the rollout
/// journal keeps the last good spec of a step in the state directory, so
/// that the next upkeep can roll back a change whose step it inherits).
#[test]
fn resolved_specs_round_trip_through_json() {
    for name in [
        "kubeadm-v1.29-etcd.yaml",
        "kubeadm-v1.29-kube-apiserver.yaml",
        "olddocs-ha-etcd.yaml",
    ] {
        let text = std::fs::read_to_string(fixtures().join(name))
            .unwrap()
            .replace("${NODE_NAME}", "master-0")
            .replace("${NODE_IP}", "10.0.0.11")
            .replace("${DISCOVERY_TOKEN}", "t");
        for spec in pod(parse(text.as_bytes(), Path::new("/m/x.yaml"), &cfg())).services {
            let json = serde_json::to_string(&spec).unwrap();
            let back: upkeep_spec::ServiceSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(back, spec, "{name}");
            assert_eq!(upkeep_spec::hash::spec_hash(&back), spec.hash, "{name}");
        }
    }
}
