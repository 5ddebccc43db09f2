//! Unix socket files: replacing stale ones, refusing live ones, never deleting anything
//! that is not ours, and removing ours on shutdown.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

/// Removes the socket file we created when dropped, if it is still the same file.
///
/// It remembers the file's device and inode, so a file that someone else put at the same
/// path after us (another server started with the same path) is left alone.
#[derive(Debug)]
pub struct UnixPathGuard {
    /// The socket file's path.
    path: PathBuf,
    /// `(st_dev, st_ino)` of the file we bound, to recognise it at removal time.
    identity: Option<(u64, u64)>,
}

impl UnixPathGuard {
    /// Records the socket file just bound at `path`.
    pub(crate) fn new(path: &Path) -> UnixPathGuard {
        let identity = std::fs::symlink_metadata(path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        UnixPathGuard {
            path: path.to_path_buf(),
            identity,
        }
    }
}

impl Drop for UnixPathGuard {
    fn drop(&mut self) {
        let current = std::fs::symlink_metadata(&self.path)
            .ok()
            .filter(|meta| meta.file_type().is_socket())
            .map(|meta| (meta.dev(), meta.ino()));
        if current.is_some()
            && current == self.identity
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), "could not remove socket file: {e}");
        }
    }
}

/// Gets `path` ready to bind: nothing there is fine, a stale socket is removed, a live
/// socket or any other kind of file is an error.
///
/// A socket is live when connecting to it succeeds (or would block on a full backlog);
/// it is stale when the kernel refuses the connection because no process owns it.
pub(crate) fn prepare(path: &Path, endpoint: &Endpoint, kind: Type) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(listen_error(e, endpoint)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::NotASocket {
            path: path.display().to_string(),
        });
    }
    match probe(path, kind) {
        Ok(()) => Err(Error::AddrInUse {
            endpoint: endpoint.clone(),
            hint: "a live server owns that socket; stop it or choose another path".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::debug!(path = %path.display(), "removing stale socket file");
            std::fs::remove_file(path).map_err(|e| listen_error(e, endpoint))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(Error::AddrInUse {
            endpoint: endpoint.clone(),
            hint: "a live (busy) server owns that socket; stop it or choose another path".into(),
        }),
        Err(e) => Err(listen_error(e, endpoint)),
    }
}

/// Tries a non-blocking connect to the socket at `path`.
fn probe(path: &Path, kind: Type) -> io::Result<()> {
    let socket = Socket::new(Domain::UNIX, kind, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&SockAddr::unix(path)?)
}

/// Why a socket file could not be created where the directory is missing or special.
fn missing_dir_hint(endpoint: &Endpoint) -> String {
    let parent = match endpoint {
        Endpoint::Unix(crate::endpoint::UnixAddr::Path(path))
        | Endpoint::UnixDgram(crate::endpoint::UnixAddr::Path(path)) => path.parent(),
        _ => None,
    };
    match parent {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            format!(
                "directory {} does not exist; create it first",
                dir.display()
            )
        }
        _ => "this file system does not allow socket files there; choose a path under /tmp".into(),
    }
}

/// Maps an error while binding or preparing a Unix path to the user-facing error.
pub(crate) fn listen_error(source: io::Error, endpoint: &Endpoint) -> Error {
    match source.kind() {
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            endpoint: endpoint.clone(),
            hint:
                "you cannot create files in that directory; choose a path you own, e.g. under /tmp"
                    .into(),
        },
        io::ErrorKind::AddrInUse => Error::AddrInUse {
            endpoint: endpoint.clone(),
            hint: "another socket has that name; stop its owner or choose another name".into(),
        },
        io::ErrorKind::NotFound => Error::Listen {
            endpoint: endpoint.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, missing_dir_hint(endpoint)),
        },
        _ => Error::Listen {
            endpoint: endpoint.clone(),
            source,
        },
    }
}
