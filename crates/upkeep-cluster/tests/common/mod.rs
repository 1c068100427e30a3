//! Real etcd members for the tests: Debian's `etcd` binary, started on
//! loopback with free ports and a temporary data directory, killed by pid.
//! No etcd on the machine is a loud failure, never a skip.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;
use upkeep_cluster::{ClientOptions, EtcdClient};

/// TLS files for a member and its clients.
#[derive(Debug, Clone)]
pub struct Tls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// One etcd member we started.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// The pid of the running process, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// A cluster of etcd members we started; every member is SIGKILLed (by its
/// pid) when this is dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    initial_cluster: String,
    tls: Option<Tls>,
    extra: Vec<String>,
}

#[path = "../../../../tests/support/ports.rs"]
mod ports;

/// `n` distinct loopback ports, outside the ephemeral range (see ports.rs).
fn free_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| ports::free_port()).collect()
}

fn etcd_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("etcd");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "etcd not found in PATH: these tests need a real etcd (Debian: apt-get install etcd-server etcd-client; scripts/test.sh installs them)"
    );
}

impl Cluster {
    /// Starts `n` members (plain http).
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, None)
    }

    /// Starts `n` members; with `tls`, clients must use https and present a
    /// certificate signed by `tls.ca`.
    pub fn start_with(n: usize, tls: Option<Tls>) -> Cluster {
        Self::start_full(n, tls, &[])
    }

    /// Starts `n` members with extra etcd flags.
    pub fn start_full(n: usize, tls: Option<Tls>, extra: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("upkeep-etcd-")
            .tempdir()
            .unwrap();
        let ports = free_ports(2 * n);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut members = Vec::new();
        for i in 0..n {
            let name = format!("m{}", i + 1);
            members.push(Member {
                client_url: format!("{scheme}://127.0.0.1:{}", ports[2 * i]),
                peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                data_dir: dir.path().join(&name),
                log: dir.path().join(format!("{name}.log")),
                name,
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir,
            members,
            initial_cluster,
            tls,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let mut cmd = Command::new(etcd_binary());
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(&m.client_url)
            .arg("--advertise-client-urls")
            .arg(&m.client_url)
            .arg("--listen-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(self.dir.path().file_name().unwrap())
            // Fast elections, so failures show within a test's patience.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .args(&self.extra)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if let Some(t) = &self.tls {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key);
        }
        let child = cmd.spawn().expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// A plain client of every member.
    pub fn client(&self) -> EtcdClient {
        EtcdClient::new(&ClientOptions {
            endpoints: self.endpoints(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            request_timeout: Duration::from_millis(500),
        })
        .unwrap()
    }

    /// SIGKILLs member `i` (by pid) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} still running");
        self.spawn(i);
    }

    /// The tail of member `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits until every running member serves linearizable reads; panics
    /// with the members' logs if that takes more than 20 s.
    pub async fn wait_healthy(&mut self, client: &EtcdClient) {
        let running: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.name.clone())
            .collect();
        let ok = poll(Duration::from_secs(20), || {
            let running = running.clone();
            async move {
                let members = client.member_list().await.ok()?;
                let mut seen = 0;
                for m in members.iter().filter(|m| running.contains(&m.name)) {
                    if !client.member_health(m).await.healthy {
                        return None;
                    }
                    seen += 1;
                }
                (seen == running.len()).then_some(())
            }
        })
        .await;
        if ok.is_none() {
            let mut logs = String::new();
            for i in 0..self.members.len() {
                let exited = self.members[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                logs += &format!(
                    "--- {} (exited: {exited:?})\n{}\n",
                    self.members[i].name,
                    self.log_tail(i)
                );
            }
            panic!("etcd members {running:?} not all healthy within 20s\n{logs}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// Polls `f` every 50 ms until it yields `Some`; `None` after `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `f` every 50 ms until it yields `Some`, or panics naming `what`
/// after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(limit, f)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Runs `openssl` with `args` in `dir`; a missing openssl is a loud failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl is needed to make test certificates (apt-get install openssl): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
