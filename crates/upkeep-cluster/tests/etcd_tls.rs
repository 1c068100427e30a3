//! https:// with a client certificate against a real etcd that requires one
//! (`--client-cert-auth`). Certificates are made with `openssl` here; no
//! openssl is a loud failure.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{openssl, Cluster, Tls};
use upkeep_cluster::{Acquire, ClientOptions, ClusterLock, EtcdClient, EtcdError, Keys};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all
/// P-256, in `dir`.
fn make_pki(dir: &Path, ca: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (key, crt, subj) = (
        format!("{ca}.key"),
        format!("{ca}.crt"),
        format!("/CN={ca}"),
    );
    args.extend([
        "-keyout",
        &key,
        "-out",
        &crt,
        "-days",
        "2",
        "-subj",
        &subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
    for (name, ext) in [
        (
            "server",
            // etcd's gateway dials etcd's own gRPC port with the server
            // certificate, so it must be good for client auth too (kubeadm's
            // etcd server certificates are).
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let ext_file = format!("{name}.ext");
        std::fs::write(dir.join(&ext_file), ext).unwrap();
        let (k, csr, c, s) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("/CN=upkeep-test-{name}"),
        );
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &k, "-out", &csr, "-subj", &s]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &crt,
                "-CAkey",
                &key,
                "-CAcreateserial",
                "-out",
                &c,
                "-days",
                "2",
                "-extfile",
                &ext_file,
            ],
        );
    }
}

fn opts(endpoints: Vec<String>, ca: &Path, client: Option<(&Path, &Path)>) -> ClientOptions {
    ClientOptions {
        endpoints,
        ca_file: Some(ca.to_path_buf()),
        cert_file: client.map(|c| c.0.to_path_buf()),
        key_file: client.map(|c| c.1.to_path_buf()),
        request_timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn https_with_a_client_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let d = pki.path();
    make_pki(d, "ca");
    let p = |f: &str| -> PathBuf { d.join(f) };
    let mut etcd = Cluster::start_with(
        1,
        Some(Tls {
            ca: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
        }),
    );
    let endpoints = etcd.endpoints();
    assert!(endpoints[0].starts_with("https://"));

    // The config file's [cluster] table, as the daemon will read it.
    let toml = format!(
        "[cluster]\netcd = {endpoints:?}\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
        p("ca.crt").display().to_string(),
        p("client.crt").display().to_string(),
        p("client.key").display().to_string(),
    );
    let (cfg, diags) = upkeep_spec::config::parse(
        &toml,
        &d.join("upkeep.toml"),
        &upkeep_spec::config::Overrides::default(),
    );
    assert!(diags.is_empty(), "{diags:#?}");
    let cluster = cfg.unwrap().cluster.unwrap();
    let client = EtcdClient::new(&ClientOptions::from_config(&cluster)).unwrap();
    etcd.wait_healthy(&client).await;
    client.put(b"/tls", b"ok", 0).await.unwrap();
    assert_eq!(client.get(b"/tls").await.unwrap().unwrap().value, b"ok");
    let lock = ClusterLock::new(
        client.clone(),
        &Keys::new("/upkeep"),
        "m1",
        Duration::from_secs(3),
    );
    match lock.try_acquire().await.unwrap() {
        Acquire::Acquired(g) => g.release().await.unwrap(),
        Acquire::Busy { holder } => panic!("held by {holder}"),
    }
    let shown = format!("{client:?}");
    assert!(
        !shown.contains("PRIVATE") && !shown.contains("client.key"),
        "{shown}"
    );

    // No client certificate: etcd refuses.
    let anon = EtcdClient::new(&opts(endpoints.clone(), &p("ca.crt"), None)).unwrap();
    let err = anon.get(b"/tls").await.unwrap_err();
    assert!(
        matches!(err, EtcdError::Connect { .. } | EtcdError::Http { .. })
            && err.to_string().contains("BadCertificate"),
        "{err:?}"
    );

    // A server signed by another CA is not trusted.
    let other = d.join("other");
    std::fs::create_dir(&other).unwrap();
    make_pki(&other, "other-ca");
    let wrong = EtcdClient::new(&opts(
        endpoints.clone(),
        &other.join("other-ca.crt"),
        Some((&p("client.crt"), &p("client.key"))),
    ))
    .unwrap();
    let err = wrong.get(b"/tls").await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // Unusable files are named, their content never shown.
    std::fs::write(p("garbage.pem"), "not a certificate\n").unwrap();
    let err = EtcdClient::new(&opts(endpoints.clone(), &p("garbage.pem"), None)).unwrap_err();
    assert!(
        matches!(&err, EtcdError::TlsFile { path, .. } if path == &p("garbage.pem")),
        "{err:?}"
    );
    let err = EtcdClient::new(&opts(
        endpoints.clone(),
        &p("ca.crt"),
        Some((&p("client.crt"), &p("ca.crt"))),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("ca.crt"), "{err}");
    assert!(!err.to_string().contains("BEGIN"), "{err}");
    let err = EtcdClient::new(&opts(endpoints.clone(), &p("missing.crt"), None)).unwrap_err();
    assert!(err.to_string().contains("missing.crt"), "{err}");

    // https without a CA cannot be built.
    let err = EtcdClient::new(&ClientOptions {
        ca_file: None,
        ..opts(endpoints, &p("ca.crt"), None)
    })
    .unwrap_err();
    assert!(matches!(err, EtcdError::NoCa(_)), "{err:?}");
}
