//! hostPath volumes: prepared or checked before each start, as the kubelet
//! does (`DirectoryOrCreate` and `FileOrCreate` are created; typed paths must
//! exist with their type), and, for a pod that needs a private mount
//! namespace, the [`MountPlan`] the child carries out after the clone.
//!
//! Everything that can fail on the filesystem happens here, in the parent,
//! before the spawn: sources are created or checked and resolved (symlinks
//! followed once), mount points are created, paths become C strings. The
//! child (`spawn::child_setup`) only makes the `mount` syscalls.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::StatVfsMountFlags;
use upkeep_spec::{HostPathType, HostPathVolume, Propagation};

/// One hostPath that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("hostPath {}{}: {problem}", path.display(), mounted_at(mount_path.as_deref()))]
pub struct VolumeError {
    /// The host path.
    pub path: PathBuf,
    /// Where the pod mounts it, if elsewhere.
    pub mount_path: Option<PathBuf>,
    /// What is wrong with it.
    pub problem: VolumeProblem,
}

fn mounted_at(p: Option<&Path>) -> String {
    p.map(|p| format!(" (mounted at {})", p.display()))
        .unwrap_or_default()
}

/// What is wrong with a hostPath.
#[derive(Debug, thiserror::Error)]
pub enum VolumeProblem {
    /// It exists with another type than the volume's `type` requires.
    #[error("exists but is not a {0}")]
    WrongType(&'static str),
    /// It must exist (typed volume) and does not, or cannot be examined.
    #[error("must be an existing {what}: {source}")]
    Missing {
        /// The type it must have.
        what: &'static str,
        /// Why it cannot be used.
        #[source]
        source: io::Error,
    },
    /// `DirectoryOrCreate`/`FileOrCreate` could not create it.
    #[error("cannot create {what}: {source}")]
    Create {
        /// Directory or file.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It cannot be examined.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// The source to bind cannot be resolved (it vanished, or a symlink
    /// points nowhere).
    #[error("cannot resolve the source to bind: {0}")]
    Resolve(#[source] io::Error),
    /// The mount point does not exist and cannot be created.
    #[error("cannot create the mount point {}: {source}", at.display())]
    MountPoint {
        /// Where the mount point is created on the host.
        at: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The mount point exists with a type the source cannot be bound on
    /// (a directory on a file or the other way round).
    #[error("the mount point {} is {}", at.display(), if *.source_is_dir {
        "not a directory but the source is one"
    } else {
        "a directory but the source is not"
    })]
    MountPointType {
        /// Where the mount point is on the host.
        at: PathBuf,
        /// The source is a directory.
        source_is_dir: bool,
    },
    /// A path holds a NUL byte.
    #[error("the path contains a NUL byte")]
    Nul,
}

/// Every problem of a set of volumes (each on its own line when shown).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct VolumesError(pub Vec<VolumeError>);

/// Prepares hostPath volumes like the kubelet: creates `DirectoryOrCreate`
/// (0755) and `FileOrCreate` (parents 0755, empty file 0644) paths and checks
/// that typed paths exist with that type. All problems are reported.
///
/// For a pod that needs a private mount namespace
/// ([`upkeep_spec::needs_mount_namespace`]) it also resolves every source,
/// creates a missing `""`-typed source as an empty directory and every
/// missing mount point, and returns the binds for the child; otherwise
/// `Ok(None)`: the process runs in the host's mount namespace.
pub fn prepare_volumes(volumes: &[HostPathVolume]) -> Result<Option<MountPlan>, VolumesError> {
    let private = upkeep_spec::needs_mount_namespace(volumes);
    let err = |v: &HostPathVolume, problem| VolumeError {
        path: v.path.clone(),
        mount_path: v.mount_path.clone(),
        problem,
    };
    let problems: Vec<VolumeError> = volumes
        .iter()
        .filter_map(|v| prepare_volume(v, private).err().map(|p| err(v, p)))
        .collect();
    if !problems.is_empty() {
        return Err(VolumesError(problems));
    }
    if !private {
        return Ok(None);
    }
    // Shallow mount points first, so that a mount inside another one is
    // made over the first bind (what the kubelet's runtimes do).
    let mut order: Vec<&HostPathVolume> = volumes.iter().collect();
    order.sort_by_key(|v| v.target().components().count());
    let mut binds: Vec<Bind> = Vec::with_capacity(order.len());
    let mut problems = Vec::new();
    for v in order {
        match plan_bind(v, &binds) {
            Ok(b) => binds.push(b),
            Err(p) => problems.push(err(v, p)),
        }
    }
    if problems.is_empty() {
        Ok(Some(MountPlan { binds }))
    } else {
        Err(VolumesError(problems))
    }
}

/// The binds the child makes in its new mount namespace, in order; every
/// path is a C string made before the clone.
#[derive(Debug, Clone)]
pub struct MountPlan {
    pub(crate) binds: Vec<Bind>,
}

impl MountPlan {
    /// The number of binds.
    pub fn len(&self) -> usize {
        self.binds.len()
    }

    /// True if there is no bind (never produced by [`prepare_volumes`]).
    pub fn is_empty(&self) -> bool {
        self.binds.is_empty()
    }

    /// A description of bind `i` for messages: `"<source> at <target>"`.
    pub fn describe(&self, i: usize) -> String {
        match self.binds.get(i) {
            Some(b) => format!(
                "bind of {} at {}{}",
                b.source_path.display(),
                b.target_path.display(),
                if b.read_only.is_some() {
                    " (read-only)"
                } else {
                    ""
                }
            ),
            None => "mount namespace".to_string(),
        }
    }
}

/// One bind of a [`MountPlan`].
#[derive(Debug, Clone)]
pub(crate) struct Bind {
    /// The resolved host path (symlinks followed once, at start).
    pub source: CString,
    /// The `mountPath`.
    pub target: CString,
    /// `MS_PRIVATE` or `MS_SLAVE`, applied recursively after the bind.
    pub propagation: libc::c_ulong,
    /// For `readOnly`: the flags of the read-only remount (the source's
    /// `nosuid`/`nodev`/`noexec`/atime flags kept).
    pub read_only: Option<libc::c_ulong>,
    source_path: PathBuf,
    target_path: PathBuf,
}

fn plan_bind(v: &HostPathVolume, earlier: &[Bind]) -> Result<Bind, VolumeProblem> {
    let source = fs::canonicalize(&v.path).map_err(VolumeProblem::Resolve)?;
    let is_dir = fs::metadata(&source)
        .map_err(VolumeProblem::Resolve)?
        .is_dir();
    let target = v.target().to_path_buf();
    // The host's root is the pod's root: a mount point under an earlier
    // bind lives in that bind's source.
    let at = earlier
        .iter()
        .rev()
        .find_map(|b| {
            let rest = target.strip_prefix(&b.target_path).ok()?;
            Some(b.source_path.join(rest))
        })
        .unwrap_or_else(|| target.clone());
    match fs::metadata(&at) {
        Ok(m) if m.is_dir() != is_dir => {
            return Err(VolumeProblem::MountPointType {
                at,
                source_is_dir: is_dir,
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let made = if is_dir {
                create_dir(&at)
            } else {
                create_file(&at)
            };
            made.map_err(|source| VolumeProblem::MountPoint {
                at: at.clone(),
                source,
            })?;
        }
        Err(source) => return Err(VolumeProblem::MountPoint { at, source }),
    }
    let read_only = if v.read_only {
        let kept = rustix::fs::statvfs(&source)
            .map_err(|e| VolumeProblem::Io(e.into()))?
            .f_flag;
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        for (st, ms) in [
            (StatVfsMountFlags::NOSUID, libc::MS_NOSUID),
            (StatVfsMountFlags::NODEV, libc::MS_NODEV),
            (StatVfsMountFlags::NOEXEC, libc::MS_NOEXEC),
            (StatVfsMountFlags::NOATIME, libc::MS_NOATIME),
            (StatVfsMountFlags::NODIRATIME, libc::MS_NODIRATIME),
            (StatVfsMountFlags::RELATIME, libc::MS_RELATIME),
        ] {
            if kept.contains(st) {
                flags |= ms;
            }
        }
        Some(flags)
    } else {
        None
    };
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| VolumeProblem::Nul);
    Ok(Bind {
        source: c(&source)?,
        target: c(&target)?,
        propagation: match v.propagation {
            Propagation::None => libc::MS_PRIVATE,
            Propagation::HostToContainer => libc::MS_SLAVE,
        },
        read_only,
        source_path: source,
        target_path: target,
    })
}

fn prepare_volume(v: &HostPathVolume, private: bool) -> Result<(), VolumeProblem> {
    let path = &v.path;
    let meta = fs::metadata(path);
    let must_be = |what: &'static str, ok: fn(&fs::FileType) -> bool| match &meta {
        Ok(m) if ok(&m.file_type()) => Ok(()),
        Ok(_) => Err(VolumeProblem::WrongType(what)),
        Err(e) => Err(VolumeProblem::Missing {
            what,
            source: io::Error::new(e.kind(), e.to_string()),
        }),
    };
    match v.kind {
        // Bound in a private namespace: a missing source becomes an empty
        // directory, as the container runtimes of the old HA guide did.
        HostPathType::Unchecked if private => match &meta {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_dir(path).map_err(|source| VolumeProblem::Create {
                    what: "directory",
                    source,
                })
            }
            _ => Ok(()),
        },
        HostPathType::Unchecked => Ok(()),
        HostPathType::DirectoryOrCreate => match &meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(VolumeProblem::WrongType("directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_dir(path).map_err(|source| VolumeProblem::Create {
                    what: "directory",
                    source,
                })
            }
            Err(e) => Err(VolumeProblem::Io(io::Error::new(e.kind(), e.to_string()))),
        },
        HostPathType::FileOrCreate => match &meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(VolumeProblem::WrongType("regular file")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_file(path).map_err(|source| VolumeProblem::Create {
                    what: "file",
                    source,
                })
            }
            Err(e) => Err(VolumeProblem::Io(io::Error::new(e.kind(), e.to_string()))),
        },
        HostPathType::Directory => must_be("directory", |t| t.is_dir()),
        HostPathType::File => must_be("regular file", |t| t.is_file()),
        HostPathType::Socket => must_be("unix socket", |t| t.is_socket()),
        HostPathType::CharDevice => must_be("character device", |t| t.is_char_device()),
        HostPathType::BlockDevice => must_be("block device", |t| t.is_block_device()),
    }
}

fn create_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)?;
    // The umask may have narrowed the mode of the last component.
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

fn create_file(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            create_dir(parent)?;
        }
    }
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
    {
        Ok(f) => f.set_permissions(fs::Permissions::from_mode(0o644)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
