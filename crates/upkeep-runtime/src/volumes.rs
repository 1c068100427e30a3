//! hostPath volumes: prepared or checked before each start, as the kubelet
//! does (`DirectoryOrCreate` and `FileOrCreate` are created; typed paths must
//! exist with their type).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use upkeep_spec::{HostPathType, HostPathVolume};

/// One hostPath that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("hostPath {}: {problem}", path.display())]
pub struct VolumeError {
    /// The host path.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: VolumeProblem,
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
}

/// Every problem of a set of volumes (each on its own line when shown).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct VolumesError(pub Vec<VolumeError>);

/// Prepares hostPath volumes like the kubelet: creates `DirectoryOrCreate`
/// (0755) and `FileOrCreate` (parents 0755, empty file 0644) paths and checks
/// that typed paths exist with that type. All problems are reported.
pub fn prepare_volumes(volumes: &[HostPathVolume]) -> Result<(), VolumesError> {
    let problems: Vec<VolumeError> = volumes
        .iter()
        .filter_map(|v| {
            prepare_volume(v).err().map(|problem| VolumeError {
                path: v.path.clone(),
                problem,
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(VolumesError(problems))
    }
}

fn prepare_volume(v: &HostPathVolume) -> Result<(), VolumeProblem> {
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
