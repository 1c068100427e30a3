//! The rollout coordinator (issue #16): one task per upkeep, started only
//! when the config has a `[cluster]` table.
//!
//! Actors whose machine records a planned change as pending
//! ([`Action::RequestStep`](upkeep_core::machine::Action::RequestStep)) send
//! a [`Msg::Request`] here. The coordinator publishes this node's record in
//! etcd, and when something is pending it asks the gate, takes the cluster
//! lock, asks the gate again, moves etcd leadership away from this node's
//! member if it leads, then grants the pending changes one by one in
//! dependency order: each must be ready within `ready_timeout` (a new
//! process: its pid changed); all must then stay ready for `soak`. A change
//! that fails is rolled back ([`StepCmd::RollBack`]), halted in etcd, and
//! the step ends; the lock is released either way. Meanwhile every waiting
//! actor is told why it waits ([`StepCmd::Waiting`]).
//!
//! A halt of a service (by any master) blocks every pending change of that
//! service on every master; the master that halted it clears it when it gets
//! a new change of the service (another spec hash), and `upkeep rollout
//! resume NAME` clears it by hand. Spec hashes differ between masters (their
//! manifests differ: addresses, names, the file's path), so "the same
//! change" is the service, not the hash.
//!
//! A step is journaled in the state directory ([`upkeep_core::step`]):
//! before a change is granted, with the spec that ran before; before a
//! rollback is ordered; removed once the step succeeded or the halt is in
//! etcd. An upkeep killed mid-step (SIGKILL, OOM, power) leaves the journal;
//! the next one hands each entry to the service's actor, which decides
//! ([`upkeep_core::step::resume`]) whether the step goes on here
//! ([`Msg::Resume`]): the change must still be ready by its deadline and
//! soak, or it is rolled back and halted as if nothing had happened.
//!
//! The coordinator decides nothing about a process: it only sends the
//! actor events that its machine turns into actions.

use std::collections::BTreeSet;

use upkeep_cluster::gate::{choose_transferee, local_member};
use upkeep_cluster::records::DEFAULT_RECORD_TTL;
use upkeep_cluster::{
    decide, read_view, ClientOptions, ClusterLock, EtcdClient, GateInput, Halt, Keys,
    NodePublisher, NodeRecord, Rollout,
};
use upkeep_core::machine::Planned;
use upkeep_core::step::{self, StepEntry, StepJournal, StepPhase};
use upkeep_spec::cluster::ClusterConfig;
use upkeep_spec::RolloutMode;

use super::*;

/// How often the coordinator publishes this node's record and retries
/// pending changes.
const TICK: Duration = Duration::from_millis(500);
/// How often a waiting change asks the gate again (and a halted node checks
/// whether its halt was cleared): each try is a few reads from etcd.
const RETRY: Duration = Duration::from_secs(1);
/// How often readiness is sampled during a step.
const POLL: Duration = Duration::from_millis(100);
/// Lease TTL of the rollout lock.
const LOCK_TTL: Duration = Duration::from_secs(10);
/// An inherited step gives the change at least this long (or
/// `ready_timeout` if shorter) to be ready after upkeep's restart.
const RESUME_FLOOR: Duration = Duration::from_secs(30);

/// What the coordinator tells an actor.
#[derive(Debug)]
pub(super) enum StepCmd {
    /// Apply the pending change now ([`Event::StepGranted`]).
    Grant,
    /// Still waiting, and why ([`Event::StepWaiting`]).
    Waiting(String),
    /// The change failed: start the last good spec again ([`Event::RollBack`]).
    RollBack(String),
}

/// What an actor tells the coordinator.
pub(super) enum Msg {
    /// A planned change of `name` waits for a step.
    Request {
        name: String,
        planned: Planned,
        /// Spec hash of the change.
        hash: String,
        /// The spec that runs now: what a rollback starts again (journaled
        /// when the change is granted).
        from: Box<ServiceSpec>,
        /// The service's dependencies (for the order within a step).
        after: Vec<String>,
        reply: mpsc::UnboundedSender<StepCmd>,
    },
    /// A step an earlier upkeep was killed in goes on here
    /// ([`upkeep_core::step::Resume::Continue`]): `name` runs the change, and the journal
    /// `entry` says since when and from what. (An inherited rollback,
    /// [`upkeep_core::step::Resume::RollBack`], the actor does at once by itself; its halt is
    /// recorded from the journal.)
    Resume {
        name: String,
        entry: Box<StepEntry>,
        after: Vec<String>,
        reply: mpsc::UnboundedSender<StepCmd>,
    },
    /// `name` no longer waits (cancelled, applied otherwise, or gone).
    Withdraw { name: String },
}

/// The link between the actors and the coordinator, kept in [`Ctx`].
pub(super) struct Link {
    tx: mpsc::UnboundedSender<Msg>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Msg>>>,
    cluster: ClusterConfig,
    node: String,
    /// Services that opted out (`rollout = "immediate"`).
    immediate: Mutex<BTreeSet<String>>,
    /// The step journal an earlier upkeep left (read once at start); each
    /// actor takes its entry.
    inherited: Mutex<StepJournal>,
    /// Its rollbacks, whose halts the coordinator records (again).
    inherited_halts: BTreeMap<String, StepEntry>,
    state_dir: PathBuf,
}

impl Link {
    /// The link for `cfg`; `None` without a `[cluster]` table (then nothing
    /// ever waits).
    pub(super) fn new(cfg: &Config) -> Option<Link> {
        let cluster = cfg.cluster.clone()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (inherited, problem) = state::load_step_journal(&cfg.state_dir);
        if let Some(p) = problem {
            warn!("rollout step journal: {p}");
        }
        if !inherited.services.is_empty() {
            let names: Vec<&str> = inherited.services.keys().map(String::as_str).collect();
            warn!(services = %names.join(", "), "the previous upkeep stopped in the middle of a rollout step: finishing it");
        }
        Some(Link {
            tx,
            rx: Mutex::new(Some(rx)),
            cluster,
            node: cfg.node_name.clone(),
            immediate: Mutex::new(BTreeSet::new()),
            inherited_halts: inherited
                .services
                .iter()
                .filter(|(_, e)| matches!(e.phase, StepPhase::RolledBack { .. }))
                .map(|(n, e)| (n.clone(), e.clone()))
                .collect(),
            inherited: Mutex::new(inherited),
            state_dir: cfg.state_dir.clone(),
        })
    }

    /// The journal entry an earlier upkeep left for `name`, once.
    pub(super) fn take_inherited(&self, name: &str) -> Option<StepEntry> {
        self.inherited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .services
            .remove(name)
    }

    /// This master's name (`node_name`).
    pub(super) fn node(&self) -> &str {
        &self.node
    }

    /// Whether planned changes of `spec` wait for the cluster, remembering
    /// the answer for the node record.
    pub(super) fn gated(&self, spec: &ServiceSpec) -> bool {
        let serial = spec.rollout == RolloutMode::Serial;
        let mut imm = self.immediate.lock().unwrap_or_else(|p| p.into_inner());
        if serial {
            imm.remove(&spec.name);
        } else {
            imm.insert(spec.name.clone());
        }
        serial
    }

    /// Sends `msg` to the coordinator (dropped if it is gone).
    pub(super) fn send(&self, msg: Msg) {
        let _ = self.tx.send(msg);
    }

    fn is_immediate(&self, name: &str) -> bool {
        self.immediate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }
}

/// The supervision policy of `spec` under this upkeep: [`actor::policy_of`]
/// plus whether planned changes wait for the cluster.
pub(super) fn policy(ctx: &Ctx, spec: &ServiceSpec) -> machine::Policy {
    let mut p = actor::policy_of(spec);
    p.gated = ctx.rollout.as_ref().is_some_and(|l| l.gated(spec));
    p
}

/// Starts the coordinator if there is a `[cluster]` table.
pub(super) fn start(ctx: &Arc<Ctx>) -> Option<JoinHandle<()>> {
    let link = ctx.rollout.as_ref()?;
    let rx = link.rx.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    Some(tokio::spawn(connect_then_run(ctx.clone(), rx)))
}

/// How often an etcd client that cannot be set up (an unreadable or
/// invalid TLS file) is tried again.
const CLIENT_RETRY: Duration = Duration::from_secs(5);

/// Sets up the etcd client (again every [`CLIENT_RETRY`] while it cannot
/// be: the TLS files may become readable), then runs the coordinator.
/// Meanwhile every planned change waits, told why; none is lost.
async fn connect_then_run(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let Some(cfg) = ctx.rollout.as_ref().map(|l| l.cluster.clone()) else {
        return;
    };
    let mut held: BTreeMap<String, Msg> = BTreeMap::new();
    let mut logged = String::new();
    loop {
        match EtcdClient::new(&ClientOptions::from_config(&cfg)) {
            Ok(client) => {
                if !logged.is_empty() {
                    info!("[cluster]: the etcd client is set up");
                }
                let Some(mut c) = Coordinator::new(ctx, rx, client) else {
                    return;
                };
                for (_, m) in held {
                    c.on_msg(m);
                }
                return c.run().await;
            }
            Err(e) => {
                let why = format!("[cluster]: cannot set up the etcd client: {e}");
                if why != logged {
                    error!("{why}; planned changes wait, retrying every {CLIENT_RETRY:?}");
                    logged = why.clone();
                }
                let until = tokio::time::Instant::now() + CLIENT_RETRY;
                let node = ctx
                    .rollout
                    .as_ref()
                    .map(|l| l.node.clone())
                    .unwrap_or_default();
                loop {
                    // /health and the metrics show what waits, and why.
                    ctx.shared
                        .snapshot
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .rollout = Some(upkeep_core::snapshot::RolloutStatus {
                        node: node.clone(),
                        pending: held.keys().map(|n| (n.clone(), why.clone())).collect(),
                        ..Default::default()
                    });
                    tokio::select! {
                        m = rx.recv() => match m {
                            Some(Msg::Request { name, planned, hash, from, after, reply }) => {
                                let _ = reply.send(StepCmd::Waiting(why.clone()));
                                held.insert(name.clone(), Msg::Request { name, planned, hash, from, after, reply });
                            }
                            Some(m @ Msg::Resume { .. }) => {
                                // Goes on once the client is set up.
                                let Msg::Resume { name, .. } = &m else { unreachable!() };
                                held.insert(name.clone(), m);
                            }
                            Some(Msg::Withdraw { name }) => {
                                held.remove(&name);
                            }
                            None => return,
                        },
                        _ = tokio::time::sleep_until(until) => break,
                    }
                }
            }
        }
    }
}

/// One pending change.
struct Entry {
    planned: Planned,
    hash: String,
    /// The spec that ran before the change (journaled at the grant).
    from: Box<ServiceSpec>,
    after: Vec<String>,
    reply: mpsc::UnboundedSender<StepCmd>,
    /// The last reason sent (sent again only when it changes).
    told: String,
    /// When the service first asked (kept when a newer change replaces it).
    since: tokio::time::Instant,
}

struct Coordinator {
    ctx: Arc<Ctx>,
    rx: mpsc::UnboundedReceiver<Msg>,
    client: EtcdClient,
    keys: Keys,
    node: String,
    ready_timeout: Duration,
    soak: Duration,
    publisher: NodePublisher,
    pending: BTreeMap<String, Entry>,
    /// Services of this node whose change was halted (for the record).
    halted: BTreeMap<String, String>,
    /// The last publish error, logged once.
    publish_error: Option<String>,
    /// The record as last written: written again only when it changes (or
    /// its lease was lost), so an idle cluster costs etcd no writes.
    published: Option<NodeRecord>,
    /// When to ask the gate (and sync halts) next.
    retry_at: tokio::time::Instant,
    /// Changes applied in the step under way, until their soak ends.
    soaking: BTreeMap<String, Entry>,
    /// The step journal (`rollout-step.json`): this node's step under way
    /// and the rollbacks whose halt is not in etcd yet.
    journal: StepJournal,
    /// Steps an earlier upkeep was killed in, to finish: the entry and the
    /// journal's grant time.
    resumed: BTreeMap<String, (Entry, u64)>,
}

impl Coordinator {
    fn new(
        ctx: Arc<Ctx>,
        rx: mpsc::UnboundedReceiver<Msg>,
        client: EtcdClient,
    ) -> Option<Coordinator> {
        let link = ctx.rollout.as_ref()?;
        let cfg = &link.cluster;
        let keys = Keys::new(&cfg.prefix);
        let node = link.node.clone();
        let inherited_halts = link.inherited_halts.clone();
        Some(Coordinator {
            publisher: NodePublisher::new(client.clone(), keys.clone(), &node, DEFAULT_RECORD_TTL),
            client,
            keys,
            node,
            ready_timeout: cfg.ready_timeout,
            soak: cfg.soak,
            ctx,
            rx,
            pending: BTreeMap::new(),
            halted: BTreeMap::new(),
            publish_error: None,
            published: None,
            retry_at: tokio::time::Instant::now(),
            soaking: BTreeMap::new(),
            journal: StepJournal {
                services: inherited_halts,
                ..StepJournal::default()
            },
            resumed: BTreeMap::new(),
        })
    }

    /// Writes the journal (an empty one removes the file). A failure is
    /// logged: the step goes on, but a crash would lose its rollback.
    fn save_journal(&self) {
        let Some(link) = self.ctx.rollout.as_ref() else {
            return;
        };
        if let Err(e) = state::save_step_journal(&link.state_dir, &self.journal) {
            error!("cannot write the rollout step journal: {e}; if upkeep dies during this step, the next one cannot roll it back");
        }
    }

    /// Journals where `name`'s change (`entry`) is: about to be applied,
    /// or rolled back.
    fn journal(&mut self, name: &str, entry: &Entry, phase: StepPhase) {
        self.journal.services.insert(
            name.to_string(),
            StepEntry {
                to_hash: entry.hash.clone(),
                from: (*entry.from).clone(),
                granted_unix_ms: unix_ms(),
                phase,
            },
        );
        self.save_journal();
    }

    /// Forgets the journal entries of changes that went well.
    fn journal_done(&mut self, names: impl IntoIterator<Item = String>) {
        let before = self.journal.services.len();
        for n in names {
            if self
                .journal
                .services
                .get(&n)
                .is_some_and(|e| e.phase == StepPhase::Applying)
            {
                self.journal.services.remove(&n);
            }
        }
        if self.journal.services.len() != before {
            self.save_journal();
        }
    }

    /// Records in etcd the halts of rollbacks that are journaled but not
    /// recorded yet (etcd was unreachable, or upkeep died in between).
    async fn record_journaled_halts(&mut self) {
        let todo: Vec<(String, String, String)> = self
            .journal
            .services
            .iter()
            .filter_map(|(n, e)| match &e.phase {
                StepPhase::RolledBack { why } => Some((n.clone(), e.to_hash.clone(), why.clone())),
                StepPhase::Applying => None,
            })
            .collect();
        for (name, hash, why) in todo {
            let halt = Halt {
                service: name.clone(),
                hash,
                node: self.node.clone(),
                reason: why.clone(),
            };
            match upkeep_cluster::record_halt(&self.client, &self.keys, &halt).await {
                Ok(()) => {
                    self.halted
                        .insert(name.clone(), format!("{why}; rolled back on {}", self.node));
                    self.journal.services.remove(&name);
                    self.save_journal();
                }
                Err(e) => {
                    debug!(service = %name, "cannot record the halt in etcd yet: {e}");
                    return;
                }
            }
        }
    }

    /// Finishes the steps an earlier upkeep was killed in: each change must
    /// be ready by what is left of its deadline, then soak, or it is rolled
    /// back and halted. Takes the rollout lock if it can (the dead upkeep's
    /// lease expires within its TTL), and goes on without it otherwise: the
    /// change is applied already, and every other master's gate waits
    /// while this node is not ready.
    async fn finish_inherited(&mut self) {
        let resumed = std::mem::take(&mut self.resumed);
        let lock = ClusterLock::new(self.client.clone(), &self.keys, &self.node, LOCK_TTL);
        let give_up = tokio::time::Instant::now() + LOCK_TTL + TICK * 4;
        let guard = loop {
            match lock.try_acquire().await {
                Ok(upkeep_cluster::Acquire::Acquired(g)) => break Some(g),
                Ok(upkeep_cluster::Acquire::Busy { .. }) | Err(_)
                    if tokio::time::Instant::now() < give_up =>
                {
                    tokio::time::sleep(TICK).await;
                }
                _ => break None,
            }
        };
        if guard.is_some() {
            self.set_metrics(true, None);
        }
        for (name, (entry, granted)) in resumed {
            let left = step::remaining(granted, unix_ms(), self.ready_timeout, RESUME_FLOOR);
            info!(service = %name, "finishing the rollout step of the previous upkeep: ready within {}", upkeep_spec::duration::format(left));
            let mut result = self.wait_ready(&name, None, left).await;
            if result.is_ok() && !self.soak.is_zero() {
                self.soaking.insert(name.clone(), entry);
                result = self
                    .soak_all(&[(name.clone(), String::new())])
                    .await
                    .map_err(|(_, why)| why);
                let Some(e) = self.soaking.remove(&name) else {
                    continue;
                };
                if let Err(why) = result {
                    self.roll_back(&name, e, &why).await;
                    continue;
                }
            } else if let Err(why) = result {
                self.roll_back(&name, entry, &why).await;
                continue;
            }
            info!(service = %name, "the inherited rollout step is complete");
            self.journal_done([name]);
        }
        self.publish().await;
        if let Some(g) = guard {
            if let Err(e) = g.release().await {
                warn!("cannot release the rollout lock ({e}): it expires with its lease");
            }
        }
        self.set_metrics(false, None);
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(m) => self.on_msg(m),
                    None => return,
                },
                _ = tick.tick() => {
                    self.drain_msgs();
                    self.publish().await;
                    if !self.resumed.is_empty() {
                        self.finish_inherited().await;
                    }
                    if tokio::time::Instant::now() >= self.retry_at {
                        if self.journal.services.values().any(|e| e.phase != StepPhase::Applying) {
                            self.record_journaled_halts().await;
                        }
                        if !self.halted.is_empty() {
                            self.sync_halts().await;
                        }
                        if !self.pending.is_empty() {
                            self.try_step().await;
                        }
                        self.retry_at = tokio::time::Instant::now() + RETRY;
                    }
                    self.set_metrics(false, None);
                }
            }
        }
    }

    fn drain_msgs(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.on_msg(m);
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Resume {
                name,
                entry,
                after,
                reply,
            } => {
                let granted = entry.granted_unix_ms;
                let e = Entry {
                    planned: Planned::SpecChanged,
                    hash: entry.to_hash.clone(),
                    from: Box::new(entry.from.clone()),
                    after,
                    reply,
                    told: String::new(),
                    since: tokio::time::Instant::now(),
                };
                self.journal.services.insert(name.clone(), *entry);
                self.save_journal();
                self.resumed.insert(name, (e, granted));
                self.retry_at = tokio::time::Instant::now();
            }
            Msg::Request {
                name,
                planned,
                hash,
                from,
                after,
                reply,
            } => {
                info!(service = %name, change = planned.as_str(), "planned change pending: waiting for the rollout lock");
                self.retry_at = tokio::time::Instant::now();
                let since = self
                    .pending
                    .get(&name)
                    .map_or_else(tokio::time::Instant::now, |e| e.since);
                self.pending.insert(
                    name,
                    Entry {
                        planned,
                        hash,
                        from,
                        after,
                        reply,
                        told: String::new(),
                        since,
                    },
                );
            }
            Msg::Withdraw { name } => {
                self.pending.remove(&name);
            }
        }
    }

    /// Tells every waiting actor why it waits (when that changed).
    fn tell_all(&mut self, why: &str) {
        for e in self.pending.values_mut() {
            if e.told != why {
                e.told = why.to_string();
                let _ = e.reply.send(StepCmd::Waiting(why.to_string()));
            }
        }
    }

    fn tell(&mut self, name: &str, why: &str) {
        if let Some(e) = self.pending.get_mut(name) {
            if e.told != why {
                e.told = why.to_string();
                let _ = e.reply.send(StepCmd::Waiting(why.to_string()));
            }
        }
    }

    /// This node's record: every service with its readiness, running spec
    /// hash, pending change and halt. Names and hashes only: no argv, no env.
    fn record(&self) -> NodeRecord {
        let snap = self
            .ctx
            .shared
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let recs = self.ctx.records.lock().unwrap_or_else(|p| p.into_inner());
        let link = self.ctx.rollout.as_ref();
        let services = snap
            .services
            .values()
            .map(|s| upkeep_cluster::ServiceRecord {
                name: s.name.clone(),
                rollout: if link.is_some_and(|l| l.is_immediate(&s.name)) {
                    Rollout::Immediate
                } else {
                    Rollout::Serial
                },
                ready: s.ready,
                spec_hash: recs
                    .get(&s.name)
                    .map(|r| r.spec_hash.clone())
                    .unwrap_or_default(),
                pending_hash: self.pending.get(&s.name).map(|e| e.hash.clone()),
                halted: self.halted.contains_key(&s.name),
                message: self
                    .pending
                    .get(&s.name)
                    .map(|e| e.told.clone())
                    .filter(|t| !t.is_empty())
                    .or_else(|| self.halted.get(&s.name).cloned()),
            })
            .collect();
        NodeRecord {
            node: self.node.clone(),
            services,
        }
    }

    async fn publish(&mut self) {
        let rec = self.record();
        let alive = *self.publisher.alive().borrow();
        if alive && self.published.as_ref() == Some(&rec) {
            return;
        }
        match self.publisher.publish(&rec).await {
            Ok(()) => {
                self.published = Some(rec);
                if self.publish_error.take().is_some() {
                    info!("[cluster]: this node's record is published in etcd again");
                }
            }
            Err(e) => {
                let text = e.to_string();
                if self.publish_error.as_deref() != Some(&text) {
                    warn!("[cluster]: cannot publish this node's record in etcd: {text}");
                }
                self.publish_error = Some(text);
            }
        }
    }

    /// Reads the view and asks the gate; `Err(why)` when the step must wait.
    async fn gate(&mut self) -> Result<BTreeSet<String>, String> {
        let view = read_view(&self.client, &self.keys)
            .await
            .map_err(|e| format!("etcd unreachable: {e}"))?;
        // The halting node clears its own halt when a new change arrives.
        for (name, e) in &self.pending {
            let stale = view
                .halts
                .iter()
                .any(|h| &h.service == name && h.node == self.node && h.hash != e.hash);
            if stale {
                match upkeep_cluster::clear_halts(&self.client, &self.keys, name).await {
                    Ok(_) => {
                        info!(service = %name, "a new change: the halt of the previous one is cleared");
                        self.halted.remove(name);
                    }
                    Err(e) => return Err(format!("etcd unreachable: {e}")),
                }
            }
        }
        let view = read_view(&self.client, &self.keys)
            .await
            .map_err(|e| format!("etcd unreachable: {e}"))?;
        // A halt of a service blocks its pending change on every master.
        let halts: Vec<(String, String)> = self
            .pending
            .keys()
            .filter_map(|name| {
                view.halts.iter().find(|h| &h.service == name).map(|h| {
                    (
                        name.clone(),
                        format!("rollout halted: {} on {}: {}", h.service, h.node, h.reason),
                    )
                })
            })
            .collect();
        for (name, why) in &halts {
            self.tell(name, why);
        }
        let members = self
            .client
            .member_list()
            .await
            .map_err(|e| format!("etcd unreachable: {e}"))?;
        let mut health = Vec::new();
        for m in &members {
            health.push(self.client.member_health(m).await);
        }
        let alarms = self
            .client
            .alarms()
            .await
            .map_err(|e| format!("etcd unreachable: {e}"))?;
        let pending: Vec<(String, String)> = self
            .pending
            .iter()
            .map(|(n, e)| (n.clone(), e.hash.clone()))
            .collect();
        let decision = decide(&GateInput {
            view: &view,
            node: &self.node,
            pending: &pending,
            local_member: local_member(&members, &self.node),
            members: &members,
            health: &health,
            alarms: &alarms,
        });
        if !halts.is_empty() && halts.len() == self.pending.len() {
            return Err(halts[0].1.clone());
        }
        if let upkeep_cluster::Decision::Wait(_) = decision {
            return Err(decision.to_string());
        }
        // Some pending changes may be halted while the others go: the
        // halted ones stay pending (told why above) and are skipped.
        Ok(halts.into_iter().map(|(name, _)| name).collect())
    }

    async fn try_step(&mut self) {
        if let Err(why) = self.gate().await {
            self.tell_all(&why);
            return;
        }
        let lock = ClusterLock::new(self.client.clone(), &self.keys, &self.node, LOCK_TTL);
        let guard = match lock.try_acquire().await {
            Ok(upkeep_cluster::Acquire::Acquired(g)) => g,
            Ok(upkeep_cluster::Acquire::Busy { holder }) => {
                self.tell_all(&format!("master {holder} holds the rollout lock"));
                return;
            }
            Err(e) => {
                self.tell_all(&format!("etcd unreachable: {e}"));
                return;
            }
        };
        // Again, holding the lock: nothing may have moved in between.
        let started = tokio::time::Instant::now();
        let skip = match self.gate().await {
            Ok(skip) => skip,
            Err(why) => {
                self.tell_all(&why);
                let _ = guard.release().await;
                return;
            }
        };
        self.set_metrics(true, None);
        self.move_leader_away().await;
        let order = self.order();
        info!(services = %order.join(", "), "rollout lock held: applying the pending changes");
        let mut granted: Vec<(String, String)> = Vec::new();
        let mut failed = None;
        for name in order.into_iter().filter(|n| !skip.contains(n)) {
            if !guard.is_held() {
                warn!("the rollout lock was lost: no further change is applied now");
                break;
            }
            let Some(entry) = self.pending.remove(&name) else {
                continue;
            };
            let old_pid = self.status(&name).and_then(|s| s.pid);
            self.set_metrics(true, Some(started.elapsed()));
            self.journal(&name, &entry, StepPhase::Applying);
            let _ = entry.reply.send(StepCmd::Grant);
            info!(service = %name, change = entry.planned.as_str(), "applying the planned change");
            if let Err(why) = self.wait_ready(&name, old_pid, self.ready_timeout).await {
                failed = Some((name, entry, why));
                break;
            }
            granted.push((name.clone(), entry.hash.clone()));
            // Keep the reply channel for a rollback during the soak.
            self.soaking.insert(name, entry);
        }
        if failed.is_none() && !self.soak.is_zero() {
            if let Err((name, why)) = self.soak_all(&granted).await {
                if let Some(entry) = self.soaking.remove(&name) {
                    failed = Some((name, entry, why));
                }
            }
        }
        self.soaking.clear();
        if let Some((name, entry, why)) = failed {
            self.roll_back(&name, entry, &why).await;
        }
        self.journal_done(granted.into_iter().map(|(n, _)| n));
        self.publish().await;
        if let Err(e) = guard.release().await {
            warn!("cannot release the rollout lock ({e}): it expires with its lease");
        }
        self.set_metrics(false, None);
    }

    /// Forgets this node's halts that are gone from etcd (`upkeep rollout
    /// resume`, or cleared by a new change on this node).
    async fn sync_halts(&mut self) {
        if let Ok(view) = read_view(&self.client, &self.keys).await {
            let before = self.halted.len();
            self.halted
                .retain(|name, _| view.halts.iter().any(|h| &h.service == name));
            if self.halted.len() != before {
                info!("a halt of this node was cleared in etcd");
            }
        }
    }

    fn status(&self, name: &str) -> Option<ServiceStatus> {
        self.ctx
            .shared
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .services
            .get(name)
            .cloned()
    }

    /// Waits until `name` runs a new process (not `old_pid`) that is ready,
    /// publishing this node's record meanwhile.
    async fn wait_ready(
        &mut self,
        name: &str,
        old_pid: Option<u32>,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_publish = tokio::time::Instant::now() + TICK;
        loop {
            let s = self.status(name);
            let Some(s) = s else {
                return Ok(()); // removed meanwhile: nothing to wait for
            };
            if s.ready && s.pid.is_some() && s.pid != old_pid {
                info!(service = %name, "the changed service is ready");
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                let why = if s.message.is_empty() {
                    s.state.clone()
                } else {
                    s.message.clone()
                };
                return Err(format!(
                    "not ready within {} ({why})",
                    upkeep_spec::duration::format(timeout)
                ));
            }
            if now >= next_publish {
                self.drain_msgs();
                self.publish().await;
                next_publish = tokio::time::Instant::now() + TICK;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every service changed in this step stays ready for `soak`; the first
    /// that does not is returned with why.
    async fn soak_all(&mut self, granted: &[(String, String)]) -> Result<(), (String, String)> {
        let end = tokio::time::Instant::now() + self.soak;
        let mut next_publish = tokio::time::Instant::now() + TICK;
        while tokio::time::Instant::now() < end {
            for (name, _) in granted {
                if let Some(s) = self.status(name) {
                    if !s.ready {
                        return Err((
                            name.clone(),
                            format!(
                                "not ready during the {} soak ({})",
                                upkeep_spec::duration::format(self.soak),
                                s.message
                            ),
                        ));
                    }
                }
            }
            if tokio::time::Instant::now() >= next_publish {
                self.drain_msgs();
                self.publish().await;
                next_publish = tokio::time::Instant::now() + TICK;
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Rolls `name` back to its last good spec, records the halt, and waits
    /// (within `ready_timeout`) for the old spec to be ready again.
    async fn roll_back(&mut self, name: &str, entry: Entry, why: &str) {
        let reason = format!("{why}; rolled back on {}", self.node);
        error!(service = %name, "planned change failed: {why}: rolling back to the last good spec and halting the rollout");
        let old_pid = self.status(name).and_then(|s| s.pid);
        // Journaled first: if upkeep dies now, the next one rolls back too.
        let phase = StepPhase::RolledBack {
            why: why.to_string(),
        };
        self.journal(name, &entry, phase);
        let _ = entry
            .reply
            .send(StepCmd::RollBack(format!("{name} on {}: {why}", self.node)));
        self.halted.insert(name.to_string(), reason);
        // Recorded in etcd the one way every journaled halt is (retried
        // every second while etcd is unreachable).
        self.record_journaled_halts().await;
        if self.journal.services.contains_key(name) {
            error!(service = %name, "cannot record the halt in etcd yet: retrying");
        }
        if let Err(e) = self.wait_ready(name, old_pid, self.ready_timeout).await {
            error!(service = %name, "the last good spec is not ready either: {e}");
        }
    }

    /// If this node's etcd member leads, moves leadership to a healthy member.
    async fn move_leader_away(&self) {
        let Ok(members) = self.client.member_list().await else {
            return;
        };
        let Some(me) = local_member(&members, &self.node) else {
            return;
        };
        let mut health = Vec::new();
        for m in &members {
            health.push(self.client.member_health(m).await);
        }
        let leads = health
            .iter()
            .any(|h| h.id == me && h.status.as_ref().is_some_and(|s| s.leader == me));
        if !leads {
            return;
        }
        match choose_transferee(&members, &health, me) {
            Some(to) => match self.client.move_leader(to).await {
                Ok(()) => info!("etcd leadership moved from this node's member to {to:x}"),
                Err(e) => warn!("cannot move etcd leadership away from this node's member: {e}"),
            },
            None => warn!("this node's etcd member leads and no healthy member can take over"),
        }
    }

    /// The pending services in dependency order: one whose `after` names
    /// another pending service goes after it; ties by name.
    fn order(&self) -> Vec<String> {
        let mut left: Vec<&String> = self.pending.keys().collect();
        let mut out = Vec::new();
        while !left.is_empty() {
            let i = left
                .iter()
                .position(|n| self.pending[*n].after.iter().all(|a| !left.contains(&a)))
                .unwrap_or(0); // a cycle: `after` is checked elsewhere
            out.push(left.remove(i).clone());
        }
        out
    }

    /// Publishes the rollout gauges in the snapshot (`/metrics`, `/health`).
    fn set_metrics(&self, lock_held: bool, _step: Option<Duration>) {
        let now = tokio::time::Instant::now();
        let wait = self
            .pending
            .values()
            .map(|e| now.saturating_duration_since(e.since))
            .max()
            .unwrap_or_default();
        let mut snap = self
            .ctx
            .shared
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner());
        snap.rollout = Some(upkeep_core::snapshot::RolloutStatus {
            node: self.node.clone(),
            lock_held,
            wait_seconds: wait.as_secs_f64(),
            pending: self
                .pending
                .iter()
                .map(|(n, e)| (n.clone(), e.told.clone()))
                .collect(),
            halted: self.halted.clone(),
        });
    }
}
