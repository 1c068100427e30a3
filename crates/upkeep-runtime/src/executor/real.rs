//! The executor that acts on the kernel.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{debug, warn};
use upkeep_core::machine::{Gen, Target};
use upkeep_core::probe::ProbeResult;
use upkeep_spec::{LogMode, ServiceSpec};

use super::{Done, ExecError, Executor, ProbeStart, Started, TaggedReport};
use crate::cgroup::{Cgroup, CgroupRoot};
use crate::logs::{Logs, ServiceLog};
use crate::probe::{self, ExecContext, ProbeWorker};
use crate::reaper::{self, Reaper};
use crate::signal::{in_pgroup, pgroup_members, signal_members};
use crate::spawn;
use crate::state::ServiceRecord;

/// One process generation as the executor holds it.
struct GenProc {
    pid: u32,
    pidfd: Arc<OwnedFd>,
    /// Its cgroup leaf (or, for a process adopted from an upkeep before
    /// leaves existed, the service cgroup itself).
    cgroup: Option<Cgroup>,
    /// Processes that already got the stop signal: never twice.
    signalled: Vec<(u32, u64)>,
}

/// Shared by every service's executor.
#[derive(Clone)]
pub struct Env {
    /// The reaper every process is spawned through.
    pub reaper: Arc<Reaper>,
    /// Where service cgroups live; `None` without cgroups.
    pub cgroup_root: Option<CgroupRoot>,
    /// Service logs (the rotation thread and journald streams).
    pub logs: Logs,
}

/// The executor of one service.
pub struct RealExecutor {
    env: Env,
    name: String,
    /// The service cgroup (limits; parent of the leaves).
    service_cg: Option<Cgroup>,
    gens: HashMap<Gen, GenProc>,
    /// Leaves of released generations that still had processes
    /// (`kill_mode = "process"` leftovers): removed once empty.
    lingering: Vec<Cgroup>,
    /// The service's log, in the log mode of the last spawn or adoption.
    log: Option<(LogMode, ServiceLog)>,
    worker: Option<ProbeWorker>,
    next_leaf: u64,
}

impl RealExecutor {
    /// An executor for the service `name`.
    pub fn new(env: Env, name: &str) -> Self {
        RealExecutor {
            env,
            name: name.to_string(),
            service_cg: None,
            gens: HashMap::new(),
            lingering: Vec::new(),
            log: None,
            worker: None,
            next_leaf: 0,
        }
    }

    /// The service's log in `mode` (watched by the rotation thread from
    /// now on, also for an adopted process).
    fn log(&mut self, mode: LogMode) -> &mut ServiceLog {
        if self.log.as_ref().is_none_or(|(m, _)| *m != mode) {
            self.log = Some((mode, self.env.logs.service(&self.name, mode)));
        }
        &mut self.log.as_mut().expect("just set").1
    }

    /// The service cgroup, created on first use.
    fn service_cgroup(&mut self, spec: &ServiceSpec) -> Option<Cgroup> {
        if self.service_cg.is_none() {
            let root = self.env.cgroup_root.as_ref()?;
            match Cgroup::create(root, &self.name) {
                Ok(cg) => {
                    if let Err(e) = cg.set_limits(&spec.resources) {
                        warn!(service = %self.name, "resource limits not applied: {e}");
                    }
                    self.service_cg = Some(cg);
                }
                Err(e) => debug!(service = %self.name, "no cgroup: {e}"),
            }
        }
        self.service_cg.clone()
    }

    /// A fresh leaf for a new generation, never one that saw `cgroup.kill`.
    fn new_leaf(&mut self, spec: &ServiceSpec) -> Option<Cgroup> {
        let svc = self.service_cgroup(spec)?;
        self.reap_lingering();
        if self.next_leaf == 0 {
            // Continue after the leaves an earlier upkeep left.
            self.next_leaf = svc
                .leaves()
                .iter()
                .filter_map(|l| leaf_identity(&l.dir_name()).map(|(n, _)| n))
                .max()
                .unwrap_or(0);
        }
        // The leaf's name carries the generation's identity (what it
        // executes), so that a process found through its cgroup alone (the
        // state file lost) is adopted as current without a restart.
        let exec = upkeep_spec::hash::exec_hash(spec);
        for _ in 0..8 {
            self.next_leaf += 1;
            let name = format!("gen-{}-{exec}", self.next_leaf);
            match svc.new_leaf(&name) {
                Ok(leaf) => return Some(leaf),
                Err(e) => debug!(service = %self.name, "cgroup leaf {name}: {e}"),
            }
        }
        warn!(service = %self.name, "cannot create a cgroup for the new process: running it in its process group only");
        None
    }

    fn reap_lingering(&mut self) {
        self.lingering
            .retain(|cg| cg.populated() || cg.remove().is_err());
    }

    /// How exec probes and hooks of this service run: its env, cwd and
    /// user, inside the cgroup of generation `gen`.
    fn exec_context(&self, spec: &ServiceSpec, gen: Gen) -> ExecContext {
        let g = self.gens.get(&gen);
        ExecContext {
            mount_ns: g
                .filter(|_| upkeep_spec::needs_mount_namespace(&spec.volumes))
                .map(|g| probe::MountNsOf {
                    pid: g.pid,
                    pidfd: g.pidfd.clone(),
                }),
            reaper: self.env.reaper.clone(),
            env: spec.env.clone(),
            working_dir: spec.working_dir.clone(),
            uid: spec.uid,
            gid: spec.gid,
            cgroup: self.gens.get(&gen).and_then(|g| g.cgroup.clone()),
        }
    }
}

/// SIGKILLs every member of process group `pgid` but its (reaped) leader,
/// each through a verified pidfd (services run without cgroups); returns how
/// many were killed.
fn kill_pgroup(pgid: u32) -> usize {
    let mut done = Vec::new();
    signal_members(
        || pgroup_members(pgid),
        |p| in_pgroup(p, pgid),
        libc::SIGKILL,
        &mut done,
    )
}

/// SIGKILLs everything in `cg`. A generation leaf is killed with
/// `cgroup.kill`; the service cgroup itself (a process adopted from an upkeep
/// before leaves) never is, because the leaves created below it afterwards
/// could inherit its kill sequence and SIGKILL every process started in them:
/// its members are killed one by one through pidfds instead.
fn kill_cgroup(cg: &Cgroup) {
    if cg.is_leaf() {
        let _ = cg.kill();
    } else {
        let mut done = Vec::new();
        signal_members(|| cg.procs(), |p| cg.contains(p), libc::SIGKILL, &mut done);
    }
}

/// The generation number and exec hash in a leaf name `gen-<N>-<exec hash>`
/// (`gen-<N>` from before the hash was recorded has none).
pub fn leaf_identity(name: &str) -> Option<(u64, Option<&str>)> {
    let rest = name.strip_prefix("gen-")?;
    match rest.split_once('-') {
        Some((n, hash)) => Some((n.parse().ok()?, Some(hash).filter(|h| !h.is_empty()))),
        None => Some((rest.parse().ok()?, None)),
    }
}

impl Executor for RealExecutor {
    fn spawn(&mut self, spec: &ServiceSpec, gen: Gen) -> Result<Started, ExecError> {
        let mounts = crate::volumes::prepare_volumes(&spec.volumes)?;
        let leaf = self.new_leaf(spec);
        let out = self.log(spec.log).output();
        if let Some(w) = &out.warning {
            warn!(service = %self.name, "{w}");
        }
        let output = out.as_output();
        let mut req = spawn::SpawnRequest::new(&spec.argv, &spec.env);
        req.working_dir = Some(&spec.working_dir);
        req.uid = spec.uid;
        req.gid = spec.gid;
        req.stdout = output;
        req.stderr = output;
        req.cgroup = leaf.as_ref();
        req.mounts = mounts.as_ref();
        let child = match req.spawn(&self.env.reaper) {
            Ok(c) => c,
            Err(e) => {
                if let Some(l) = &leaf {
                    let _ = l.remove();
                }
                return Err(ExecError::Spawn(e));
            }
        };
        let started_wall = SystemTime::now();
        let start_time = reaper::process_start_time(child.pid).unwrap_or(0);
        let exit_rx = child.exit;
        let cgroup = leaf.as_ref().map(|c| c.relative_path());
        self.gens.insert(
            gen,
            GenProc {
                pid: child.pid,
                pidfd: Arc::new(child.pidfd),
                cgroup: leaf,
                signalled: Vec::new(),
            },
        );
        Ok(Started {
            pid: child.pid,
            exit: Box::pin(
                async move { exit_rx.await.unwrap_or(upkeep_core::ExitStatus::Unknown) },
            ),
            started_wall,
            start_time,
            cgroup,
        })
    }

    fn adopt(
        &mut self,
        spec: &ServiceSpec,
        rec: &ServiceRecord,
        gen: Gen,
    ) -> Result<Started, ExecError> {
        let adopt_err = |why: String| ExecError::Adopt { pid: rec.pid, why };
        // The pidfd first, then the identity: a pid reused in between fails
        // the check instead of being adopted.
        let (pidfd, fut) = self
            .env
            .reaper
            .watch_pid(rec.pid)
            .map_err(|e| adopt_err(e.to_string()))?;
        let st = reaper::process_stat(rec.pid).map_err(|e| adopt_err(e.to_string()))?;
        if st.start_time != rec.start_time || st.state == 'Z' {
            return Err(adopt_err(
                "the pid now belongs to another process (start time differs)".into(),
            ));
        }
        self.service_cgroup(spec);
        // Keep the adopted process's log within its bound from now on.
        self.log(spec.log);
        let cgroup = match (&self.env.cgroup_root, &rec.cgroup) {
            (Some(root), Some(rel)) => Cgroup::find_relative(root, &self.name, rel),
            _ => None,
        };
        let rel = cgroup.as_ref().map(|c| c.relative_path());
        self.gens.insert(
            gen,
            GenProc {
                pid: rec.pid,
                pidfd: Arc::new(pidfd),
                cgroup,
                signalled: Vec::new(),
            },
        );
        Ok(Started {
            pid: rec.pid,
            exit: Box::pin(fut),
            started_wall: SystemTime::UNIX_EPOCH + Duration::from_millis(rec.started_at_unix_ms),
            start_time: rec.start_time,
            cgroup: rel,
        })
    }

    fn signal(&mut self, gen: Gen, target: Target, sig: i32) {
        let Some(g) = self.gens.get_mut(&gen) else {
            return;
        };
        let main_key = (g.pid, reaper::process_start_time(g.pid).unwrap_or(0));
        match (target, &g.cgroup) {
            (Target::Main, _) => {
                if !g.signalled.contains(&main_key) {
                    g.signalled.push(main_key);
                    let _ = reaper::pidfd_signal(&g.pidfd, sig);
                }
            }
            (Target::Group, Some(cg)) => {
                // The members of its cgroup (a generation leaf, or the
                // service cgroup itself for a process adopted from an
                // upkeep before leaves).
                signal_members(|| cg.procs(), |p| cg.contains(p), sig, &mut g.signalled);
            }
            (Target::Group, None) => {
                // No cgroup: the main process, then the rest of its process
                // group, each through a pidfd.
                if !g.signalled.contains(&main_key) {
                    g.signalled.push(main_key);
                    let _ = reaper::pidfd_signal(&g.pidfd, sig);
                }
                let pgid = g.pid;
                signal_members(
                    || pgroup_members(pgid),
                    |p| in_pgroup(p, pgid),
                    sig,
                    &mut g.signalled,
                );
            }
        }
    }

    fn kill(&mut self, gen: Gen, target: Target) {
        let Some(g) = self.gens.get_mut(&gen) else {
            return;
        };
        warn!(service = %self.name, pid = g.pid, "did not stop within its grace: sending SIGKILL");
        match (target, &g.cgroup) {
            (Target::Main, _) => {
                let _ = reaper::pidfd_signal(&g.pidfd, libc::SIGKILL);
            }
            (Target::Group, Some(cg)) => {
                let _ = reaper::pidfd_signal(&g.pidfd, libc::SIGKILL);
                kill_cgroup(cg);
            }
            (Target::Group, None) => {
                let _ = reaper::pidfd_signal(&g.pidfd, libc::SIGKILL);
                kill_pgroup(g.pid);
            }
        }
    }

    fn kill_group(&mut self, gen: Gen) -> Done {
        let Some(g) = self.gens.get(&gen) else {
            return Box::pin(async {});
        };
        let cgroup = g.cgroup.clone();
        let pgid = g.pid;
        Box::pin(async move {
            let mut wait = Duration::from_micros(200);
            loop {
                let left = match &cgroup {
                    Some(cg) => {
                        let populated = cg.populated();
                        if populated {
                            kill_cgroup(cg);
                        }
                        populated
                    }
                    None => kill_pgroup(pgid) > 0 || !pgroup_members(pgid).is_empty(),
                };
                if !left {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(50));
            }
        })
    }

    fn release(&mut self, gen: Gen) {
        let Some(g) = self.gens.remove(&gen) else {
            return;
        };
        if let Some(cg) = g.cgroup {
            if cg.is_leaf() && (cg.populated() || cg.remove().is_err()) {
                self.lingering.push(cg);
            }
        }
        self.reap_lingering();
    }

    fn pre_stop(&mut self, spec: &ServiceSpec, gen: Gen, timeout: Duration) -> Done {
        let Some(argv) = spec.pre_stop.clone() else {
            return Box::pin(async {});
        };
        let ctx = self.exec_context(spec, gen);
        let name = self.name.clone();
        Box::pin(async move {
            let handler = upkeep_spec::ProbeHandler::Exec { argv };
            let r = probe::run_once(&handler, timeout, &ctx).await;
            if let ProbeResult::Failure(w) | ProbeResult::Error(w) = r {
                warn!(service = %name, "preStop hook failed: {w}");
            }
        })
    }

    fn start_probes(
        &mut self,
        spec: &ServiceSpec,
        gen: Gen,
        started_wall: SystemTime,
        initial: ProbeStart,
        tx: mpsc::UnboundedSender<TaggedReport>,
    ) {
        let age = SystemTime::now()
            .duration_since(started_wall)
            .unwrap_or_default();
        let now = tokio::time::Instant::now();
        let started_at = now.checked_sub(age).unwrap_or(now);
        let ctx = self.exec_context(spec, gen);
        let mut probes = spec.probes.clone();
        if initial.started {
            probes.startup = None;
        }
        let (ptx, mut prx) = mpsc::unbounded_channel();
        // Tag every report with its generation; the forwarder ends with the
        // worker (its sender is dropped).
        tokio::spawn(async move {
            while let Some(r) = prx.recv().await {
                if tx.send((gen, r)).is_err() {
                    break;
                }
            }
        });
        if let Some(w) = self.worker.take() {
            w.stop();
        }
        self.worker = Some(probe::spawn_worker(
            probes,
            started_at,
            ctx,
            probe::Initial {
                ready: initial.ready,
            },
            ptx,
        ));
    }

    fn stop_probes(&mut self) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
    }

    fn set_limits(&mut self, spec: &ServiceSpec) {
        if let Some(cg) = &self.service_cg {
            if let Err(e) = cg.set_limits(&spec.resources) {
                warn!(service = %self.name, "resource limits not applied: {e}");
            }
        }
    }

    fn finish(&mut self) {
        self.stop_probes();
        for (_, g) in self.gens.drain() {
            if let Some(cg) = g.cgroup {
                if cg.is_leaf() {
                    let _ = cg.remove();
                }
            }
        }
        self.reap_lingering();
        if let Some(cg) = self.service_cg.take() {
            // Fails (and is left) while kill_mode = "process" leftovers live.
            let _ = cg.remove();
        }
    }
}
