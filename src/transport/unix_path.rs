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

/// Who may open a Unix socket file: its mode and owners (`--mode`, `--owner`, `--group`).
/// `None` everywhere leaves the file as `bind(2)` makes it (mode from the umask).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnixFilePerms {
    /// Permission bits (e.g. `0o600`).
    pub mode: Option<u32>,
    /// Owner uid (changing it needs privilege).
    pub owner: Option<u32>,
    /// Group gid (our own groups, or any with privilege).
    pub group: Option<u32>,
}

impl UnixFilePerms {
    /// Whether anything is asked of the file.
    fn is_default(self) -> bool {
        self == UnixFilePerms::default()
    }
}

/// Serialises sockit's own binds that change the process-wide umask.
static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `bind` (which creates the socket file at `path`) so that nobody but us can ever
/// open the file before `perms` are in place: the file is created under a umask of 0177
/// (owner read/write only), then given its owner and group, then its mode.
///
/// The umask is process-wide, so other threads creating files at that instant get files
/// that are at most as open as 0600: stricter, never looser. Binding in a private
/// directory and renaming would avoid that, but the socket's own address would then name
/// the private path (what `getsockname` and datagram peers see).
pub(crate) fn bind_with_perms<T>(
    path: &Path,
    perms: UnixFilePerms,
    bind: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    if perms.is_default() {
        return bind();
    }
    let bound = {
        let _serialised = UMASK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let previous = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
        let bound = bind();
        rustix::process::umask(previous);
        bound?
    };
    apply(path, perms).inspect_err(|_| {
        let _ = std::fs::remove_file(path);
    })?;
    Ok(bound)
}

/// Gives the socket file its owner, group and mode, in that order.
fn apply(path: &Path, perms: UnixFilePerms) -> io::Result<()> {
    if perms.owner.is_some() || perms.group.is_some() {
        std::os::unix::fs::lchown(path, perms.owner, perms.group).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot give {} to {} ({e}); only root may give a file away, and a group must be one of yours",
                    path.display(),
                    owner_text(perms)
                ),
            )
        })?;
    }
    if let Some(mode) = perms.mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// "uid 0, gid 100" for messages.
fn owner_text(perms: UnixFilePerms) -> String {
    [
        perms.owner.map(|u| format!("uid {u}")),
        perms.group.map(|g| format!("gid {g}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}

/// Which local users may connect to a Unix stream socket (`--allow-uid`, `--allow-gid`),
/// checked with `SO_PEERCRED` on each accepted connection: the only access control an
/// abstract socket (which has no file) can have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCredAllow {
    /// Users let in.
    pub uids: Vec<u32>,
    /// Groups let in (the peer's primary group).
    pub gids: Vec<u32>,
}

/// The rule for the Unix listeners of this process; set once from the command line.
static PEER_CRED_ALLOW: std::sync::OnceLock<PeerCredAllow> = std::sync::OnceLock::new();

impl PeerCredAllow {
    /// The rule in force, if one was installed.
    pub(crate) fn installed() -> Option<&'static PeerCredAllow> {
        PEER_CRED_ALLOW.get()
    }

    /// Makes this the rule for every Unix socket this process accepts on or receives
    /// datagrams on (see [`super::datagram_cred`]). An empty rule (no uid, no gid) lets
    /// everyone in.
    pub fn install(self) {
        if !(self.uids.is_empty() && self.gids.is_empty()) {
            let _ = PEER_CRED_ALLOW.set(self);
        }
    }
}

/// Whether the peer of an accepted Unix connection may stay; logs a refusal once per
/// connection.
pub(crate) fn peer_allowed(fd: &impl std::os::fd::AsFd) -> bool {
    let Some(rule) = PEER_CRED_ALLOW.get() else {
        return true;
    };
    match rustix::net::sockopt::socket_peercred(fd) {
        Ok(cred) => {
            let (uid, gid) = (cred.uid.as_raw(), cred.gid.as_raw());
            let allowed = rule.uids.contains(&uid) || rule.gids.contains(&gid);
            if !allowed {
                tracing::warn!(
                    "refused a unix client: uid {uid} gid {gid} (pid {}) is not in --allow-uid/--allow-gid",
                    cred.pid.as_raw_nonzero()
                );
            }
            allowed
        }
        Err(e) => {
            tracing::warn!("refused a unix client: its credentials are unreadable ({e})");
            false
        }
    }
}
