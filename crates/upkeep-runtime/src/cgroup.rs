//! Per-service cgroups: cgroup2 for tracking (`cgroup.procs`, `cgroup.events`)
//! and killing (`cgroup.kill`), resource limits in v2 where the controller is
//! available there and in the v1 `memory`/`cpu` hierarchies otherwise
//! (design.md section 6, deps.md section 4).
//!
//! Layouts are found through `/proc/self/mountinfo`, never hard-coded: pure v2
//! (`/sys/fs/cgroup`), hybrid (v2 at `/sys/fs/cgroup/unified` with v1
//! controllers beside it) and anything else that mounts a `cgroup2`.
//!
//! Nothing here is fatal to supervision: every failure is a [`CgroupError`]
//! for the caller to log at warning level before carrying on without a
//! cgroup or without limits. A service's cgroup lives at
//! `<v2 mount>/<prefix>/<sanitized name>` and outlives upkeep, which makes it a
//! free record for adopting the service after an upkeep restart.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use upkeep_spec::Resources;

/// Default parent directory of service cgroups, below each hierarchy's root.
pub const DEFAULT_PREFIX: &str = "upkeep.slice";

/// CPU period used for `cpu.max` / `cpu.cfs_period_us` (100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// A cgroup operation that failed. Log it at warning level and carry on.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 hierarchy is mounted.
    #[error("no cgroup2 hierarchy is mounted (per /proc/self/mountinfo); running without cgroups")]
    NoCgroup2,
    /// A file operation failed.
    #[error("cgroup: cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`"create"`, `"write memory.max in"`...).
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A limit cannot be applied on this machine.
    #[error("cgroup: {0}")]
    Unsupported(String),
}

fn io_err(action: impl Into<String>, path: &Path, source: io::Error) -> CgroupError {
    CgroupError::Io {
        action: action.into(),
        path: path.to_path_buf(),
        source,
    }
}

/// The cgroup mounts of this machine, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    /// Mount point of the cgroup2 hierarchy, if any.
    pub v2: Option<PathBuf>,
    /// v1 controller name -> mount point (co-mounted controllers share one).
    pub v1: BTreeMap<String, PathBuf>,
}

impl CgroupLayout {
    /// Reads `/proc/self/mountinfo`, keeping only the mount points that
    /// are still cgroup filesystems: one listed there may be hidden under
    /// another mount (a tmpfs over it, in a container or a test), where a
    /// directory created would be an ordinary one that tracks nothing.
    pub fn detect() -> io::Result<CgroupLayout> {
        let mut layout = Self::parse(&fs::read_to_string("/proc/self/mountinfo")?);
        layout.keep_live_mounts(fs_magic);
        Ok(layout)
    }

    /// Drops the mount points whose filesystem (per `magic`) is not the
    /// cgroup filesystem they are listed as.
    pub fn keep_live_mounts(&mut self, magic: impl Fn(&Path) -> Option<u64>) {
        if let Some(v2) = &self.v2 {
            if magic(v2) != Some(CGROUP2_SUPER_MAGIC) {
                self.v2 = None;
            }
        }
        self.v1.retain(|_, m| magic(m) == Some(CGROUP_SUPER_MAGIC));
    }

    /// Parses mountinfo text. Where several cgroup2 mounts exist,
    /// `/sys/fs/cgroup` or `/sys/fs/cgroup/unified` wins, else the first.
    pub fn parse(mountinfo: &str) -> CgroupLayout {
        let mut layout = CgroupLayout::default();
        let mut v2_all = Vec::new();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let (Some(mount_point), Some(fstype)) = (pre.get(4), post.first()) else {
                continue;
            };
            let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
            match *fstype {
                "cgroup2" => v2_all.push(mount_point),
                "cgroup" => {
                    let opts = post.get(2).copied().unwrap_or("");
                    // Super options mix controllers with flags (xattr,
                    // noprefix, release_agent=...): keep known controllers.
                    for opt in opts.split(',') {
                        if !V1_CONTROLLERS.contains(&opt) {
                            continue;
                        }
                        layout
                            .v1
                            .entry(opt.to_string())
                            .or_insert_with(|| mount_point.clone());
                    }
                }
                _ => {}
            }
        }
        layout.v2 = v2_all
            .iter()
            .find(|p| {
                *p == Path::new("/sys/fs/cgroup") || *p == Path::new("/sys/fs/cgroup/unified")
            })
            .or(v2_all.first())
            .cloned();
        layout
    }
}

/// cgroup v1 controller names (other super options are flags).
const V1_CONTROLLERS: [&str; 14] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `statfs(2)` magic of cgroup2.
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
/// `statfs(2)` magic of cgroup v1.
const CGROUP_SUPER_MAGIC: u64 = 0x0027_e0eb;

/// The filesystem magic of `path`, if it can be read.
fn fs_magic(path: &Path) -> Option<u64> {
    rustix::fs::statfs(path).ok().map(|s| s.f_type as u64)
}

/// Where service cgroups are created: the detected layout plus a prefix
/// directory (`upkeep.slice` by default; tests use a unique one). Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    inner: Arc<RootInner>,
}

#[derive(Debug)]
struct RootInner {
    layout: CgroupLayout,
    v2: PathBuf,
    prefix: String,
}

impl CgroupRoot {
    /// Detects the layout and prepares `<v2>/<prefix>` (created if missing,
    /// with every controller available there enabled for its children).
    pub fn detect(prefix: &str) -> Result<CgroupRoot, CgroupError> {
        let layout = CgroupLayout::detect()
            .map_err(|e| io_err("read", Path::new("/proc/self/mountinfo"), e))?;
        Self::with_layout(layout, prefix)
    }

    /// Like [`CgroupRoot::detect`] with a given layout.
    pub fn with_layout(layout: CgroupLayout, prefix: &str) -> Result<CgroupRoot, CgroupError> {
        let v2_mount = layout.v2.clone().ok_or(CgroupError::NoCgroup2)?;
        let prefix = sanitize_component(prefix);
        let v2 = v2_mount.join(&prefix);
        if !v2.is_dir() {
            // Let children of the prefix use the root's controllers (pure v2).
            enable_controllers(&v2_mount);
            fs::create_dir(&v2)
                .or_else(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| io_err("create", &v2, e))?;
        }
        enable_controllers(&v2);
        Ok(CgroupRoot {
            inner: Arc::new(RootInner { layout, v2, prefix }),
        })
    }

    /// The detected layout.
    pub fn layout(&self) -> &CgroupLayout {
        &self.inner.layout
    }

    /// `<v2 mount>/<prefix>`.
    pub fn v2_dir(&self) -> &Path {
        &self.inner.v2
    }

    /// Controllers usable by service cgroups in v2 (`cgroup.subtree_control`
    /// of the prefix directory).
    pub fn v2_controllers(&self) -> Vec<String> {
        read_words(&self.inner.v2.join("cgroup.subtree_control"))
    }

    /// Directory names of the service cgroups that exist now (for adoption).
    pub fn existing(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.inner.v2) else {
            return Vec::new();
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// Removes the prefix directories (v2 and v1), if empty. For tests and
    /// uninstall; fails while any service cgroup remains.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut dirs = vec![self.inner.v2.clone()];
        for mount in self.v1_mounts(&["memory", "cpu"]) {
            dirs.push(mount.join(&self.inner.prefix));
        }
        for dir in dirs {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &dir, e)),
            }
        }
        Ok(())
    }

    fn v1_mounts(&self, controllers: &[&str]) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        for c in controllers {
            if let Some(m) = self.inner.layout.v1.get(*c) {
                if !out.contains(m) {
                    out.push(m.clone());
                }
            }
        }
        out
    }
}

/// Best effort: enable in `dir/cgroup.subtree_control` every controller in
/// `dir/cgroup.controllers` that upkeep limits with.
fn enable_controllers(dir: &Path) {
    let available = read_words(&dir.join("cgroup.controllers"));
    let enabled = read_words(&dir.join("cgroup.subtree_control"));
    for c in ["memory", "cpu", "pids"] {
        if available.iter().any(|a| a == c) && !enabled.iter().any(|e| e == c) {
            // Fails where the controller is bound to v1 or the cgroup has
            // processes of its own; limits then fall back to v1.
            let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
}

fn read_words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Maps a service name (`pod/container`) to a cgroup directory name with
/// [`upkeep_spec::names::path_component`]: injective (two services never share
/// a cgroup), no leading `.`, and no clash with interface files such as
/// `memory.max` or `cgroup.procs`.
pub fn cgroup_dir_name(service: &str) -> String {
    upkeep_spec::names::path_component(service)
}

/// A service name as one safe path component: characters other than
/// `[A-Za-z0-9._:@-]` become `_`, a leading `.` (or an empty name) is escaped
/// and the length is capped, so the name never leaves its directory. Used for
/// the configured cgroup prefix; service names go through the injective
/// [`cgroup_dir_name`].
pub fn sanitize_component(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out.truncate(200);
    out
}

/// One service's cgroup: a v2 directory, plus v1 `memory`/`cpu` directories
/// when limits need them.
#[derive(Debug, Clone)]
pub struct Cgroup {
    root: CgroupRoot,
    name: String,
    v2: PathBuf,
    /// The service's directory name (the v1 limit groups are named after it).
    dir_name: String,
    /// A generation leaf below the service cgroup (see [`Cgroup::new_leaf`]).
    leaf: bool,
}

impl Cgroup {
    /// Creates (or reuses) the cgroup for `service`.
    pub fn create(root: &CgroupRoot, service: &str) -> Result<Cgroup, CgroupError> {
        let cg = Self::at(root, service);
        match fs::create_dir(&cg.v2) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &cg.v2, e)),
        }
        Ok(cg)
    }

    /// Re-attaches to the cgroup of `service` left by an earlier upkeep, if
    /// it exists.
    pub fn find_existing(root: &CgroupRoot, service: &str) -> Option<Cgroup> {
        let cg = Self::at(root, service);
        cg.v2.is_dir().then_some(cg)
    }

    fn at(root: &CgroupRoot, service: &str) -> Cgroup {
        let dir = cgroup_dir_name(service);
        Cgroup {
            root: root.clone(),
            name: service.to_string(),
            v2: root.inner.v2.join(&dir),
            dir_name: dir,
            leaf: false,
        }
    }

    /// Creates a fresh generation leaf `<service>/<name>` for one process
    /// generation. Processes are only ever started into a leaf that has never
    /// seen `cgroup.kill`: on current kernels every `clone3(CLONE_INTO_CGROUP)`
    /// into a cgroup that was once killed is SIGKILLed right after the fork.
    /// A leftover directory of that name is removed first (it must be empty).
    /// Limits stay on the service cgroup (they apply to every leaf); the v1
    /// limit groups stay per service.
    pub fn new_leaf(&self, name: &str) -> Result<Cgroup, CgroupError> {
        let v2 = self.v2.join(name);
        match fs::create_dir(&v2) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_dir(&v2).map_err(|e| io_err("remove stale", &v2, e))?;
                fs::create_dir(&v2).map_err(|e| io_err("create", &v2, e))?;
            }
            Err(e) => return Err(io_err("create", &v2, e)),
        }
        Ok(Cgroup {
            root: self.root.clone(),
            name: self.name.clone(),
            v2,
            dir_name: self.dir_name.clone(),
            leaf: true,
        })
    }

    /// The generation leaves that exist below this service cgroup, by name.
    pub fn leaves(&self) -> Vec<Cgroup> {
        let Ok(rd) = fs::read_dir(&self.v2) else {
            return Vec::new();
        };
        let mut out: Vec<Cgroup> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| Cgroup {
                root: self.root.clone(),
                name: self.name.clone(),
                v2: e.path(),
                dir_name: self.dir_name.clone(),
                leaf: true,
            })
            .collect();
        out.sort_by(|a, b| a.v2.cmp(&b.v2));
        out
    }

    /// True for a generation leaf.
    pub fn is_leaf(&self) -> bool {
        self.leaf
    }

    /// The leaf's (or cgroup's) own directory name.
    pub fn dir_name(&self) -> String {
        self.v2
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Re-attaches to a cgroup by its path relative to the v2 hierarchy (as
    /// recorded in the state file), if it is this service's cgroup or one of
    /// its leaves and still exists.
    pub fn find_relative(root: &CgroupRoot, service: &str, rel: &str) -> Option<Cgroup> {
        let svc = Self::find_existing(root, service)?;
        if svc.relative_path() == rel {
            return Some(svc);
        }
        svc.leaves().into_iter().find(|l| l.relative_path() == rel)
    }

    /// The v1 directories this cgroup uses for limits, as (controller, path).
    /// Looked up on disk each time (two `stat`s), so limits set by an earlier
    /// upkeep are found too.
    pub fn v1_dirs(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for c in ["memory", "cpu"] {
            if let Some(dir) = self.v1_dir(c) {
                if dir.is_dir() {
                    out.push((c.to_string(), dir));
                }
            }
        }
        out
    }

    fn v1_dir(&self, controller: &str) -> Option<PathBuf> {
        let mount = self.root.inner.layout.v1.get(controller)?;
        Some(mount.join(&self.root.inner.prefix).join(&self.dir_name))
    }

    /// The service name it was created for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The v2 directory.
    pub fn path(&self) -> &Path {
        &self.v2
    }

    /// The v2 path relative to the hierarchy root, as in `/proc/PID/cgroup`
    /// (`/upkeep.slice/etcd`). This string is what the state file records.
    pub fn relative_path(&self) -> String {
        let mount = self
            .root
            .inner
            .layout
            .v2
            .as_deref()
            .unwrap_or(Path::new("/"));
        match self.v2.strip_prefix(mount) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => self.v2.display().to_string(),
        }
    }

    /// The `cgroup.events` file (`populated 0|1`), for inotify watchers.
    pub fn events_path(&self) -> PathBuf {
        self.v2.join("cgroup.events")
    }

    /// Applies limits: v2 `memory.max`/`cpu.max` where those controllers are
    /// enabled for upkeep's cgroups, else v1 `memory.limit_in_bytes` and
    /// `cpu.cfs_quota_us`. `None` removes a limit. Processes already in the
    /// cgroup are moved into newly created v1 groups. Errors are warnings:
    /// the service still runs, without that limit.
    pub fn set_limits(&self, res: &Resources) -> Result<(), CgroupError> {
        let v2c = self.root.v2_controllers();
        let mut problems = Vec::new();
        let mut record = |r: Result<(), CgroupError>| {
            if let Err(e) = r {
                problems.push(e.to_string());
            }
        };
        let mem = res.memory_max.map(|b| b.to_string());
        if v2c.iter().any(|c| c == "memory") {
            record(write_file(
                &self.v2.join("memory.max"),
                mem.as_deref().unwrap_or("max"),
            ));
        } else {
            let r = self.v1_limit("memory", res.memory_max.is_some(), |dir| {
                write_file(
                    &dir.join("memory.limit_in_bytes"),
                    mem.as_deref().unwrap_or("-1"),
                )
            });
            record(r);
        }
        let quota = res
            .cpu_max_millis
            .map(|m| (m.saturating_mul(CPU_PERIOD_US) / 1000).max(1000));
        if v2c.iter().any(|c| c == "cpu") {
            let v = match quota {
                Some(q) => format!("{q} {CPU_PERIOD_US}"),
                None => format!("max {CPU_PERIOD_US}"),
            };
            record(write_file(&self.v2.join("cpu.max"), &v));
        } else {
            let r = self.v1_limit("cpu", quota.is_some(), |dir| {
                write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write_file(
                    &dir.join("cpu.cfs_quota_us"),
                    &quota.map(|q| q.to_string()).unwrap_or_else(|| "-1".into()),
                )
            });
            record(r);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CgroupError::Unsupported(format!(
                "limits for {} not fully applied: {}",
                self.name,
                problems.join("; ")
            )))
        }
    }

    /// Sets a v1 limit: creates the v1 group when `wanted` (and moves the
    /// current processes in), or resets it if it already exists.
    fn v1_limit(
        &self,
        controller: &str,
        wanted: bool,
        apply: impl Fn(&Path) -> Result<(), CgroupError>,
    ) -> Result<(), CgroupError> {
        let Some(dir) = self.v1_dir(controller) else {
            return if wanted {
                Err(CgroupError::Unsupported(format!(
                    "no {controller} controller in cgroup2 or cgroup v1"
                )))
            } else {
                Ok(())
            };
        };
        let existed = dir.is_dir();
        if !existed {
            if !wanted {
                return Ok(());
            }
            fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
        }
        apply(&dir)?;
        if !existed {
            for pid in self.all_procs() {
                // A process that exits meanwhile is fine.
                let _ = write_file(&dir.join("cgroup.procs"), &pid.to_string());
            }
        }
        Ok(())
    }

    /// Opens the `cgroup.procs` files (v2 and v1) for a child to write `0`
    /// into between fork and exec. Files that cannot be opened are skipped
    /// with a warning.
    pub fn join_fds(&self) -> Vec<OwnedFd> {
        self.procs_files()
            .into_iter()
            .filter_map(|p| match fs::OpenOptions::new().write(true).open(&p) {
                Ok(f) => Some(OwnedFd::from(f)),
                Err(e) => {
                    tracing::warn!("{}", io_err("open", &p, e));
                    None
                }
            })
            .collect()
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        std::iter::once(self.v2.clone())
            .chain(self.v1_dirs().into_iter().map(|(_, d)| d))
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Moves `pid` into this cgroup (v2 and any v1 limit groups).
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        for p in self.procs_files() {
            write_file(&p, &pid.to_string())?;
        }
        Ok(())
    }

    /// True if `/proc/PID/cgroup` puts `pid` in this (v2) cgroup.
    pub fn contains(&self, pid: u32) -> bool {
        let rel = self.relative_path();
        fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|s| {
                s.lines()
                    .any(|l| l.strip_prefix("0::") == Some(rel.as_str()))
            })
            .unwrap_or(false)
    }

    /// Pids in the cgroup (`cgroup.procs`); empty if it cannot be read.
    pub fn procs(&self) -> Vec<u32> {
        fs::read_to_string(self.v2.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Pids in the cgroup and in all its leaves.
    pub fn all_procs(&self) -> Vec<u32> {
        let mut pids = self.procs();
        for leaf in self.leaves() {
            pids.extend(leaf.procs());
        }
        pids
    }

    /// True while any process is in the cgroup (or a descendant).
    pub fn populated(&self) -> bool {
        match fs::read_to_string(self.events_path()) {
            Ok(s) => s.lines().any(|l| l.trim() == "populated 1"),
            Err(_) => !self.procs().is_empty(),
        }
    }

    /// SIGKILLs everything in the cgroup: `cgroup.kill` where the kernel has
    /// it (5.14+), else SIGKILL through a pidfd to each process of
    /// `cgroup.procs` that is still in this cgroup once its pidfd is open
    /// (never a bare pid: pids are reused), repeated while new ones appear.
    /// The caller waits for [`Cgroup::populated`] to turn false.
    pub fn kill(&self) -> Result<(), CgroupError> {
        let kill_file = self.v2.join("cgroup.kill");
        if kill_file.exists() {
            return write_file(&kill_file, "1");
        }
        let mut done = Vec::new();
        crate::signal::signal_members(
            || self.procs(),
            |pid| self.contains(pid),
            libc::SIGKILL,
            &mut done,
        );
        Ok(())
    }

    /// Removes the cgroup directories. Fails (EBUSY) while processes remain.
    pub fn remove(&self) -> Result<(), CgroupError> {
        if self.leaf {
            return match fs::remove_dir(&self.v2) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("remove", &self.v2, e)),
            };
        }
        for leaf in self.leaves() {
            leaf.remove()?;
        }
        for (_, dir) in self.v1_dirs() {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &dir, e)),
            }
        }
        match fs::remove_dir(&self.v2) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &self.v2, e)),
        }
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| io_err(format!("write {value:?} to"), path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn parses_hybrid_layout() {
        let l = CgroupLayout::parse(HYBRID);
        assert_eq!(l.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(l.v1["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(l.v1["cpuacct"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(l.v1["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert!(!l.v1.contains_key("name=systemd"));
        assert!(!l.v1.contains_key("xattr"));
        assert!(!l.v1.contains_key("rw"));
    }

    #[test]
    fn hidden_cgroup_mounts_are_dropped() {
        let mut l = CgroupLayout::parse(HYBRID);
        // A tmpfs over the v2 and memory mounts (TMPFS_MAGIC).
        l.keep_live_mounts(|p| {
            if p == Path::new("/sys/fs/cgroup/unified") || p == Path::new("/sys/fs/cgroup/memory") {
                Some(0x0102_1994)
            } else {
                Some(CGROUP_SUPER_MAGIC)
            }
        });
        assert_eq!(l.v2, None);
        assert!(!l.v1.contains_key("memory"));
        assert!(l.v1.contains_key("cpu"));
        let mut all_gone = CgroupLayout::parse(HYBRID);
        all_gone.keep_live_mounts(|_| None);
        assert!(all_gone.v2.is_none() && all_gone.v1.is_empty());
    }

    #[test]
    fn parses_pure_v2_and_none() {
        let l = CgroupLayout::parse(
            "25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n\
             99 25 0:50 / /mnt/other\\040dir rw - cgroup2 none rw\n",
        );
        assert_eq!(l.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert!(l.v1.is_empty());
        let l = CgroupLayout::parse("99 25 0:50 / /mnt/other\\040dir rw - cgroup2 none rw\n");
        assert_eq!(l.v2.as_deref(), Some(Path::new("/mnt/other dir")));
        let none = CgroupLayout::parse("junk\n\n1 2 3\n");
        assert_eq!(none, CgroupLayout::default());
        assert!(matches!(
            CgroupRoot::with_layout(none, "x"),
            Err(CgroupError::NoCgroup2)
        ));
    }

    #[test]
    fn dir_names_are_safe() {
        assert_eq!(cgroup_dir_name("etcd-node1/etcd"), "etcd-node1_etcd");
        assert_eq!(cgroup_dir_name("kube-apiserver"), "kube-apiserver");
        assert_eq!(cgroup_dir_name(".."), "@2e.");
        assert_eq!(cgroup_dir_name(""), "@");
        assert_eq!(cgroup_dir_name("memory.max"), "@6demory.max");
        assert_eq!(cgroup_dir_name("cgroup.procs"), "@63group.procs");
        assert_eq!(cgroup_dir_name("a b\n"), "a@20b@0a");
        assert_eq!(cgroup_dir_name(&"x".repeat(500)).len(), 200);
        // A host service `x_y` and container `y` of pod `x` never share a cgroup.
        assert_ne!(cgroup_dir_name("x_y"), cgroup_dir_name("x/y"));
    }
}
