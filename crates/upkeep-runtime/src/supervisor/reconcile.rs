//! The reconcile loop's work: scanning the manifests (with `settle` and the
//! last good versions), diffing the desired set against the actors,
//! adoption and discovery, stopping what is no longer configured, reloads.

use super::*;

impl Supervisor {
    /// Loads the manifests (in a blocking task) and returns the desired set;
    /// `None` when the scan failed unexpectedly (then nothing may change).
    pub(super) async fn rescan(&mut self) -> Option<Vec<ServiceSpec>> {
        let cfg = self.cfg.clone();
        let scan_fn = self.scan_fn;
        let scan = match tokio::task::spawn_blocking(move || {
            let mut scan = scan_fn(&cfg);
            let wait = hold_unsettled(&mut scan, cfg.settle, SystemTime::now());
            (scan, wait)
        })
        .await
        {
            Ok((scan, wait)) => {
                // Look again once the newest change has settled.
                self.settle_rescan = wait.map(|w| tokio::time::Instant::now() + w);
                scan
            }
            Err(e) => {
                // A bug, not an empty directory: keep every service as it is.
                error!(
                    "the manifest scan failed unexpectedly ({e}): keeping every service as it is"
                );
                self.ctx.internal_error("scan_panic");
                return None;
            }
        };
        let desired = self.tracker.update(scan, &self.cfg.services);
        self.save_last_good();
        for w in &desired.warnings {
            debug!("{w}");
        }
        let errors: Vec<ManifestError> = desired
            .errors
            .iter()
            .map(|d| ManifestError {
                file: d.file.display().to_string(),
                error: match &d.field {
                    Some(f) => format!("{f}: {}", d.message),
                    None => d.message.clone(),
                },
            })
            .collect();
        let mut manifest_events = Vec::new();
        {
            let mut snap = self
                .ctx
                .shared
                .snapshot
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if snap.manifest_errors != errors {
                for e in &errors {
                    if !snap.manifest_errors.contains(e) {
                        error!(
                            "manifest {}: {} (the last good version, if any, keeps running)",
                            e.file, e.error
                        );
                    }
                }
                manifest_events = events::manifest_changes(&snap.manifest_errors, &errors);
                snap.manifest_errors = errors;
            }
        }
        if let Some(log) = self.ctx.shared.events.get() {
            for (file, reason, message) in manifest_events {
                log.record(&file, reason, &message, false);
            }
        }
        let mut all = self.cfg.services.clone();
        all.extend(desired.services);
        Some(all)
    }

    /// Lets the new actors run until each has published its first status
    /// (bounded), then clears the snapshot's `starting` flag.
    pub(super) async fn wait_initial_publish(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let all = {
                let snap = self
                    .ctx
                    .shared
                    .snapshot
                    .read()
                    .unwrap_or_else(|p| p.into_inner());
                self.actors.keys().all(|n| snap.services.contains_key(n))
            };
            if all || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.ctx
            .shared
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .starting = false;
    }

    /// Seeds the manifest tracker with the last good manifests an earlier
    /// upkeep saved, parsed again with the current config: a file that is
    /// broken, unreadable or gone with its directory now keeps running the
    /// version that ran before upkeep restarted.
    pub(super) fn seed_last_good(&mut self) {
        let (texts, problem) = state::load_last_good(&self.cfg.state_dir);
        if let Some(p) = problem {
            warn!("{p}");
        }
        let root = self.cfg.manifests.clone();
        let mut pods = Vec::new();
        for (path, text) in &texts {
            let ours = path == &root || path.parent() == Some(root.as_path());
            if !ours {
                continue;
            }
            match manifest::parse(text.as_bytes(), path, &self.cfg) {
                manifest::FileOutcome::Pod(pod) => {
                    for s in &pod.services {
                        self.seeded.insert(s.name.clone(), s.clone());
                    }
                    pods.push(pod)
                }
                _ => warn!(
                    "the saved last good version of {} no longer loads: not kept",
                    path.display()
                ),
            }
        }
        self.saved_last_good = texts;
        self.tracker.seed(pods);
    }

    /// Saves the last good text of every manifest when it changed.
    pub(super) fn save_last_good(&mut self) {
        let mut now: BTreeMap<PathBuf, String> = self
            .tracker
            .pods()
            .map(|p| (p.file.clone(), p.text.to_string()))
            .collect();
        // A removed file's text is kept while its services still run or
        // stop: if upkeep dies meanwhile, the next one knows from it that
        // they were removed (their file is gone) and stops them, even while
        // another manifest is broken (then unknown processes are left
        // running). Dropped at the first save after they are gone.
        self.draining.retain(|_, h| !h.is_finished());
        let current: std::collections::HashSet<String> = self
            .tracker
            .pods()
            .flat_map(|p| p.services.iter().map(|s| s.name.clone()))
            .collect();
        for (path, text) in &self.saved_last_good {
            if now.contains_key(path) {
                continue;
            }
            if let manifest::FileOutcome::Pod(pod) =
                manifest::parse(text.as_bytes(), path, &self.cfg)
            {
                let alive = pod.services.iter().any(|s| {
                    !current.contains(&s.name)
                        && (self.actors.contains_key(&s.name)
                            || self.draining.contains_key(&s.name))
                });
                if alive {
                    now.insert(path.clone(), text.clone());
                }
            }
        }
        if now == self.saved_last_good {
            return;
        }
        if let Err(e) = state::save_last_good(&self.cfg.state_dir, &now) {
            warn!("cannot save the last good manifests: {e}");
            return;
        }
        self.saved_last_good = now;
    }

    /// Diffs the desired set against the actors.
    pub(super) fn apply(
        &mut self,
        desired: Option<Vec<ServiceSpec>>,
        records: &mut BTreeMap<String, ServiceRecord>,
    ) {
        let Some(desired) = desired else { return };
        self.replace_dead_actors(records);
        let mut wanted: HashMap<String, ServiceSpec> = HashMap::new();
        for s in desired {
            wanted.insert(s.name.clone(), s);
        }
        let gone: Vec<String> = self
            .actors
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(h) = self.actors.remove(&name) {
                info!(service = %name, "removed: stopping");
                let _ = h.tx.send(Cmd::Remove);
                self.draining.insert(name, h.join);
            }
        }
        let mut names: Vec<&String> = wanted.keys().collect();
        names.sort();
        for name in names {
            let spec = &wanted[name];
            match self.actors.get_mut(name) {
                Some(h) if h.hash == spec.hash => {}
                Some(h) => {
                    h.hash = spec.hash.clone();
                    h.after = spec.after.clone();
                    let _ = h.tx.send(Cmd::Update(Box::new(spec.clone())));
                }
                None => {
                    let initial = match records.remove(name) {
                        Some(rec) if rec.still_alive() => Initial::Adopt(rec),
                        _ => match self.discover(name) {
                            Some(rec) => Initial::Adopt(rec),
                            None => Initial::Start,
                        },
                    };
                    let (tx, rx) = mpsc::unbounded_channel();
                    let exec = Box::new(RealExecutor::new(self.env.clone(), name));
                    let actor = Actor::new(spec.clone(), self.ctx.clone(), exec);
                    let wait_for = self.draining.remove(name);
                    let join = tokio::spawn(actor.run(initial, rx, wait_for));
                    self.actors.insert(
                        name.clone(),
                        ActorHandle {
                            tx,
                            hash: spec.hash.clone(),
                            after: spec.after.clone(),
                            join,
                        },
                    );
                }
            }
        }
    }

    /// [`Supervisor::apply`] after the start-up: a process left unclaimed
    /// at start-up is adopted if its service is wanted again.
    pub(super) fn apply_claiming(&mut self, desired: Option<Vec<ServiceSpec>>) {
        let mut records = std::mem::take(&mut self.unclaimed);
        self.apply(desired, &mut records);
        self.unclaimed = records;
        self.settle_unclaimed(false);
    }

    /// Decides the unclaimed processes: while some manifest is broken or
    /// settling they are left running (the broken file may be theirs: never
    /// stop a process for that); once every manifest loads, no service
    /// wants them, so they are stopped.
    pub(super) fn settle_unclaimed(&mut self, first: bool) {
        self.unclaimed.retain(|_, rec| rec.still_alive());
        if self.unclaimed.is_empty() {
            return;
        }
        let manifests_broken = !self
            .ctx
            .shared
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .manifest_errors
            .is_empty()
            || self.settle_rescan.is_some();
        // A pod whose last good file is gone from a listable directory was
        // removed, whatever else is broken: stopped as the kubelet would.
        let removed: Vec<String> = self
            .unclaimed
            .keys()
            .filter(|n| {
                self.seeded
                    .get(*n)
                    .is_some_and(|s| source_removed(&s.source))
            })
            .cloned()
            .collect();
        for name in removed {
            if let Some(rec) = self.unclaimed.remove(&name) {
                self.stop_unconfigured(&name, &rec);
            }
        }
        if manifests_broken {
            if first {
                for (name, rec) in &self.unclaimed {
                    warn!(service = %name, pid = rec.pid, "process from a previous upkeep is not in the current set, but the manifests have errors or are changing: left running, unsupervised, until they load");
                }
            }
            return;
        }
        for (name, rec) in std::mem::take(&mut self.unclaimed) {
            self.stop_unconfigured(&name, &rec);
        }
    }

    /// Stops the process of a record whose service is no longer configured:
    /// adopted through a pidfd (identity checked), the stop signal once to
    /// its group, SIGKILL after the grace, then whatever is left.
    pub(super) fn stop_unconfigured(&self, name: &str, rec: &ServiceRecord) {
        if !rec.still_alive() {
            return;
        }
        warn!(service = %name, pid = rec.pid, "process from a previous upkeep is no longer configured: stopping it");
        // A pod removed while upkeep was down stops as it would have while
        // upkeep ran: its own stop signal and grace (design.md section 5).
        let (signal, grace) = match self.seeded.get(name) {
            Some(spec) => (
                spawn::signal_number(&spec.stop_signal).unwrap_or(libc::SIGTERM),
                spec.stop_grace,
            ),
            None => (libc::SIGTERM, self.cfg.default_stop_timeout),
        };
        let mut exec = RealExecutor::new(self.env.clone(), name);
        let rec = rec.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            use crate::executor::Executor;
            // A placeholder spec: only the name and the cgroup matter here.
            let spec = ServiceSpec {
                name: name.clone(),
                ..placeholder_spec()
            };
            let started = match exec.adopt(&spec, &rec, 1) {
                Ok(s) => s,
                Err(e) => {
                    debug!(service = %name, "{e}");
                    return;
                }
            };
            exec.signal(1, machine::Target::Group, signal);
            if tokio::time::timeout(grace, started.exit).await.is_err() {
                exec.kill(1, machine::Target::Group);
            }
            exec.kill_group(1).await;
            exec.release(1);
            exec.finish();
        });
    }

    /// An actor that ended while still wanted panicked (a bug): say so loudly
    /// and let `apply` create a new one, which adopts the process from the
    /// actor's last record instead of starting a second one.
    pub(super) fn replace_dead_actors(&mut self, records: &mut BTreeMap<String, ServiceRecord>) {
        let dead: Vec<String> = self
            .actors
            .iter()
            .filter(|(_, h)| h.join.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in dead {
            self.actors.remove(&name);
            error!(service = %name, "the service's actor ended unexpectedly (a bug): replacing it; its process is adopted, not restarted");
            self.ctx.internal_error("reaper_stopped");
            let rec = self
                .ctx
                .records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
            if let Some(rec) = rec {
                records.insert(name, rec);
            }
        }
    }

    /// Adds to the unclaimed processes those found only through their
    /// cgroup: a service that no longer exists (its manifest was deleted
    /// while upkeep was down) and that has no record (the state file was
    /// lost, or upkeep was killed before writing it). Without this its
    /// process would run on unsupervised: the state file is a cache.
    pub(super) fn discover_unclaimed(&mut self) {
        let Some(root) = self.env.cgroup_root.clone() else {
            return;
        };
        for dir in root.existing() {
            let name = upkeep_spec::names::decode_component(&dir).or_else(|| {
                // A cut (long) name: one of the last good specs may be it.
                self.seeded
                    .keys()
                    .find(|n| crate::cgroup::cgroup_dir_name(n) == dir)
                    .cloned()
            });
            let Some(name) = name else {
                warn!(cgroup = %dir, "a service cgroup whose service name is unknown: left alone");
                continue;
            };
            if self.actors.contains_key(&name) || self.unclaimed.contains_key(&name) {
                continue;
            }
            if let Some(rec) = self.discover(&name) {
                self.unclaimed.insert(name, rec);
            }
        }
    }

    /// Finds a live process of `name` in its cgroup when there is no usable
    /// record (upkeep was killed before it wrote one, or the state file was
    /// lost): the cgroup is the record that costs no write. Its spec is unknown,
    /// so the adopted process is restarted with the current spec, never duplicated.
    pub(super) fn discover(&self, name: &str) -> Option<ServiceRecord> {
        let root = self.env.cgroup_root.as_ref()?;
        let svc = Cgroup::find_existing(root, name)?;
        // Only the newest generation leaf (by number, not name: gen-10 is
        // newer than gen-9) can hold the current main process; older leaves
        // hold only what a `kill_mode = "process"` main process left behind
        // (containerd's shims, session leaders themselves), which must never
        // be taken for the service. Or, from an upkeep before leaves, the
        // service cgroup itself.
        let newest = svc
            .leaves()
            .into_iter()
            .filter_map(|l| {
                let n = crate::executor::real::leaf_identity(&l.dir_name())?.0;
                Some((n, l))
            })
            .max_by_key(|(n, _)| *n)
            .map(|(_, l)| l);
        let mut candidates: Vec<Cgroup> = newest.into_iter().collect();
        candidates.push(svc);
        let (cg, leader) = candidates.into_iter().find_map(|cg| {
            let leader = cg.procs().into_iter().find(|&pid| {
                reaper::process_stat(pid).is_ok_and(|st| st.session == pid && st.state != 'Z')
            })?;
            Some((cg, leader))
        })?;
        let st = reaper::process_stat(leader).ok()?;
        // The leaf's name says what the generation executes.
        let exec_hash = crate::executor::real::leaf_identity(&cg.dir_name())
            .and_then(|(_, h)| h.map(str::to_string))
            .unwrap_or_default();
        if exec_hash.is_empty() {
            warn!(service = %name, pid = leader, "found a running process in the service's cgroup with no state record and no recorded identity: adopting it, then restarting it with the current spec");
        } else {
            info!(service = %name, pid = leader, "found a running process in the service's cgroup with no state record: adopting it by the identity of its cgroup");
        }
        Some(ServiceRecord {
            name: name.to_string(),
            pid: leader,
            start_time: st.start_time,
            // Unknown: the exec hash (from the cgroup) decides.
            spec_hash: "unknown".into(),
            exec_hash,
            pgid: leader,
            started_at_unix_ms: reaper::started_unix_ms(st.start_time).unwrap_or_else(unix_ms),
            restarts: 0,
            ready: false,
            started: false,
            last_exit: None,
            cgroup: Some(cg.relative_path()),
        })
    }

    pub(super) async fn reload(&mut self) {
        info!("SIGHUP: reloading the configuration");
        let (cfg, diags) = config::load(self.config_path.as_deref(), &self.overrides);
        for d in &diags {
            warn!("{d}");
        }
        match cfg {
            Some(mut cfg) => {
                // Keys bound to resources opened at start-up need a restart
                // of upkeep; say which, and keep the running values.
                let mut fixed = Vec::new();
                if cfg.listen != self.cfg.listen {
                    fixed.push("listen");
                    cfg.listen = self.cfg.listen.clone();
                }
                if cfg.state_dir != self.cfg.state_dir {
                    fixed.push("state_dir");
                    cfg.state_dir = self.cfg.state_dir.clone();
                }
                if cfg.log_dir != self.cfg.log_dir {
                    fixed.push("log_dir");
                    cfg.log_dir = self.cfg.log_dir.clone();
                }
                if cfg.log_max_size != self.cfg.log_max_size {
                    fixed.push("logs.max_size");
                    cfg.log_max_size = self.cfg.log_max_size;
                }
                if cfg.log_max_files != self.cfg.log_max_files {
                    fixed.push("logs.max_files");
                    cfg.log_max_files = self.cfg.log_max_files;
                }
                if !fixed.is_empty() {
                    warn!(
                        "SIGHUP: {} changed; these take effect only when upkeep restarts (the running values are kept)",
                        fixed.join(", ")
                    );
                }
                self.cfg = cfg;
                let desired = self.rescan().await;
                self.apply_claiming(desired);
            }
            None => error!("the new configuration is invalid: keeping the running one"),
        }
    }
}

/// Marks every manifest changed less than `settle` ago as settling (not
/// applied yet: it may be half written) and returns how long until the
/// newest of them has settled.
pub(super) fn hold_unsettled(
    scan: &mut manifest::DirScan,
    settle: Duration,
    now: SystemTime,
) -> Option<Duration> {
    if settle.is_zero() {
        return None;
    }
    let mut wait: Option<Duration> = None;
    for (path, outcome) in scan.files.iter_mut() {
        if !matches!(
            outcome,
            manifest::FileOutcome::Pod(_) | manifest::FileOutcome::Invalid(_)
        ) {
            continue;
        }
        let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
            continue;
        };
        // A time in the future (clock step) counts as just changed.
        let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
        if age < settle {
            *outcome = manifest::FileOutcome::Settling;
            let left = settle - age + Duration::from_millis(10);
            wait = Some(wait.map_or(left, |w| w.max(left)));
        }
    }
    wait
}

/// True when a manifest file no longer exists in a directory that can be
/// listed: its pod was removed (not hidden by an unreadable directory).
fn source_removed(file: &Path) -> bool {
    let listable = file
        .parent()
        .is_some_and(|dir| std::fs::read_dir(dir).is_ok());
    listable
        && std::fs::symlink_metadata(file).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor(scan_fn: fn(&Config) -> manifest::DirScan) -> Supervisor {
        let dir = std::env::temp_dir().join(format!("upkeep-reconcile-{}", std::process::id()));
        let mut cfg = Config::defaults();
        cfg.manifests = dir.join("manifests");
        cfg.state_dir = dir.join("state");
        cfg.log_dir = dir.join("log");
        let (_tx, control) = mpsc::channel(1);
        let mut s = Supervisor::new(Options {
            config: cfg,
            config_path: None,
            overrides: Overrides::default(),
            shared: Arc::new(Shared::default()),
            reaper: Reaper::start().expect("reaper"),
            control,
            on_started: None,
            cgroup_prefix: format!("upkeep-test-reconcile-{}", std::process::id()),
            heartbeat: None,
        });
        s.scan_fn = scan_fn;
        s
    }

    fn panicking_scan(_: &Config) -> manifest::DirScan {
        panic!("a bug in the scan");
    }

    /// Defect 4: a panic in the manifest scan used to become an empty scan,
    /// and every static pod was stopped. Now nothing may change, loudly.
    #[tokio::test]
    async fn a_panicking_scan_changes_nothing_and_is_counted() {
        let mut s = supervisor(panicking_scan);
        assert_eq!(
            s.rescan().await,
            None,
            "a failed scan must not be a desired set"
        );
        let n = s
            .ctx
            .shared
            .snapshot
            .read()
            .unwrap()
            .internal_errors
            .get("scan_panic")
            .copied();
        assert_eq!(n, Some(1));
        // `apply(None, ..)` leaves every actor alone.
        s.apply(None, &mut BTreeMap::new());
        assert!(s.actors.is_empty());
        if let Some(root) = &s.env.cgroup_root {
            let _ = root.remove();
        }
    }
}
