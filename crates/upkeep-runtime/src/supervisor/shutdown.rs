//! upkeep's own exit: leave the services running (`on_exit = "keep"`) or
//! stop them in reverse dependency order, and the system-shutdown check.

use super::*;

impl Supervisor {
    /// True when systemd says the machine is going down
    /// (`systemctl is-system-running` prints `stopping`). Bounded to 2 s; any
    /// doubt (no systemd, no answer) means no.
    pub(super) async fn system_is_shutting_down(&self) -> bool {
        if !Path::new("/run/systemd/system").is_dir() {
            return false;
        }
        let ctx = crate::probe::ExecContext {
            cgroup: None,
            reaper: self.env.reaper.clone(),
            env: BTreeMap::from([(
                "PATH".to_string(),
                upkeep_spec::config::DEFAULT_PATH.to_string(),
            )]),
            working_dir: PathBuf::from("/"),
            uid: None,
            gid: None,
            mount_ns: None,
        };
        let argv = vec!["systemctl".to_string(), "is-system-running".to_string()];
        let r = crate::probe::run_once(
            &upkeep_spec::ProbeHandler::Exec { argv },
            Duration::from_secs(2),
            &ctx,
        )
        .await;
        system_state_is_stopping(&r)
    }

    pub(super) async fn shutdown(&mut self, why: &str) -> Ended {
        let mut on_exit = self.cfg.on_exit;
        if on_exit == OnExit::Keep && self.system_is_shutting_down().await {
            // Everything left running now would die in systemd's final kill,
            // unordered: stop it in order, each with its grace, instead.
            info!("{why} during system shutdown: stopping services in order despite on_exit = \"keep\"");
            on_exit = OnExit::Stop;
        }
        match on_exit {
            OnExit::Keep => {
                info!(
                    "{why}: exiting and leaving {} service(s) running (on_exit = \"keep\")",
                    self.actors.len()
                );
                let mut waits = Vec::new();
                for h in self.actors.values() {
                    let (tx, rx) = oneshot::channel();
                    if h.tx.send(Cmd::Detach(tx)).is_ok() {
                        waits.push(rx);
                    }
                }
                for w in waits {
                    let _ = w.await;
                }
                Ended::LeftRunning
            }
            OnExit::Stop => {
                info!(
                    "{why}: stopping {} service(s) in reverse dependency order",
                    self.actors.len()
                );
                let mut remaining: Vec<String> = self.actors.keys().cloned().collect();
                while !remaining.is_empty() {
                    let mut batch: Vec<String> = remaining
                        .iter()
                        .filter(|n| {
                            !remaining
                                .iter()
                                .any(|o| self.actors.get(o).is_some_and(|h| h.after.contains(n)))
                        })
                        .cloned()
                        .collect();
                    if batch.is_empty() {
                        batch = remaining.clone();
                    }
                    let mut waits = Vec::new();
                    for n in &batch {
                        if let Some(h) = self.actors.get(n) {
                            let (tx, rx) = oneshot::channel();
                            if h.tx.send(Cmd::Shutdown(tx)).is_ok() {
                                waits.push(rx);
                            }
                        }
                    }
                    for w in waits {
                        let _ = w.await;
                    }
                    remaining.retain(|n| !batch.contains(n));
                }
                for (_, j) in self.draining.drain() {
                    let _ = j.await;
                }
                Ended::Stopped
            }
        }
    }
}

/// Reads the outcome of `systemctl is-system-running`: it exits non-zero for
/// every state but `running` and prints the state, which the exec probe puts
/// after the exit code (`exit code 1: stopping`).
pub(super) fn system_state_is_stopping(r: &ProbeResult) -> bool {
    match r {
        ProbeResult::Failure(msg) => msg
            .rsplit(": ")
            .next()
            .is_some_and(|state| state.trim() == "stopping"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_a_stopping_system() {
        assert!(system_state_is_stopping(&ProbeResult::Failure(
            "exit code 1: stopping".into()
        )));
        assert!(!system_state_is_stopping(&ProbeResult::Failure(
            "exit code 1: degraded".into()
        )));
        assert!(!system_state_is_stopping(&ProbeResult::Failure(
            "timeout after 2s".into()
        )));
        assert!(!system_state_is_stopping(&ProbeResult::Success));
        assert!(!system_state_is_stopping(&ProbeResult::Error(
            "cannot start".into()
        )));
    }
}
