//! Socket errors as the user reads them: each bind, listen or connect failure mapped to
//! an [`Error`] that names the address and, where there is one, the remedy.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::endpoint::{Endpoint, HostPort, UnixAddr};
use crate::error::Error;

/// Maps a bind/listen error on an IP address to the user-facing error with a remedy.
pub(crate) fn ip_listen_error(source: io::Error, endpoint: &Endpoint, addr: SocketAddr) -> Error {
    match source.kind() {
        io::ErrorKind::AddrInUse => {
            let next = endpoint.with_port(addr.port().checked_add(1).unwrap_or(1024));
            Error::AddrInUse {
                endpoint: endpoint.clone(),
                hint: format!("stop the program using it or pick another port, e.g. {next}"),
            }
        }
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            endpoint: endpoint.clone(),
            hint: "ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port of 1024 or more"
                .into(),
        },
        io::ErrorKind::AddrNotAvailable => Error::Listen {
            endpoint: endpoint.clone(),
            source: io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{} is not an address of this machine", addr.ip()),
            ),
        },
        _ => Error::Listen {
            endpoint: endpoint.clone(),
            source,
        },
    }
}

/// A Unix path that exists but is no socket (a regular file, a directory) refuses
/// connections like a stale socket does; it is said as what it is, with the same exit
/// status as a missing socket file, since no server can listen there.
fn unix_path_not_a_socket(source: &io::Error, endpoint: &Endpoint) -> Option<Error> {
    use std::os::unix::fs::FileTypeExt;
    let (Endpoint::Unix(UnixAddr::Path(path)) | Endpoint::UnixDgram(UnixAddr::Path(path))) =
        endpoint
    else {
        return None;
    };
    if source.kind() != io::ErrorKind::ConnectionRefused {
        return None;
    }
    let kind = std::fs::metadata(path).ok()?.file_type();
    if kind.is_socket() {
        return None;
    }
    let what = if kind.is_dir() {
        "a directory"
    } else {
        "a file, not a socket"
    };
    Some(Error::Connect {
        endpoint: endpoint.clone(),
        source: io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} is {what}; give the path of the socket a server listens on",
                path.display()
            ),
        ),
    })
}

/// Maps a connect error to the user-facing error: refused, permission, missing file…
pub(crate) fn connect_error(source: io::Error, endpoint: &Endpoint) -> Error {
    if let Some(not_a_socket) = unix_path_not_a_socket(&source, endpoint) {
        return not_a_socket;
    }
    match source.kind() {
        io::ErrorKind::ConnectionRefused => Error::Refused {
            endpoint: endpoint.clone(),
        },
        io::ErrorKind::TimedOut => Error::Timeout {
            doing: format!("connecting to {endpoint}"),
            after: Duration::ZERO,
        },
        io::ErrorKind::NotFound => Error::Connect {
            endpoint: endpoint.clone(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "no socket file at that path; is the server running?",
            ),
        },
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            endpoint: endpoint.clone(),
            hint: "you may not open that socket; check its permissions".into(),
        },
        _ => Error::Connect {
            endpoint: endpoint.clone(),
            source,
        },
    }
}

impl HostPort {
    /// The host as the user wrote it, for messages.
    pub(crate) fn host_text(&self) -> String {
        self.host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::net::SocketAddr;

    use super::{connect_error, ip_listen_error};
    use crate::endpoint::{Endpoint, UnixAddr};
    use crate::error::Error;

    fn endpoint(text: &str) -> Endpoint {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn a_port_in_use_names_the_endpoint_and_suggests_the_next_port() {
        let error = ip_listen_error(
            io::ErrorKind::AddrInUse.into(),
            &endpoint("tcp://127.0.0.1:8000"),
            addr("127.0.0.1:8000"),
        );
        let Error::AddrInUse { endpoint, hint } = error else {
            panic!("not AddrInUse: {error}");
        };
        assert_eq!(endpoint.to_string(), "tcp://127.0.0.1:8000");
        assert!(hint.contains("tcp://127.0.0.1:8001"), "{hint}");
    }

    #[test]
    fn a_privileged_port_says_what_it_needs() {
        let error = ip_listen_error(
            io::ErrorKind::PermissionDenied.into(),
            &endpoint("tcp://127.0.0.1:80"),
            addr("127.0.0.1:80"),
        );
        assert!(matches!(&error, Error::PermissionDenied { hint, .. } if hint.contains("1024")));
    }

    #[test]
    fn an_address_of_another_machine_is_said_as_such() {
        let error = ip_listen_error(
            io::ErrorKind::AddrNotAvailable.into(),
            &endpoint("tcp://192.0.2.1:8000"),
            addr("192.0.2.1:8000"),
        );
        assert!(
            error
                .to_string()
                .contains("192.0.2.1 is not an address of this machine"),
            "{error}"
        );
    }

    #[test]
    fn a_refused_connection_is_refused_and_a_missing_socket_file_says_so() {
        let tcp = endpoint("tcp://127.0.0.1:8000");
        let refused = connect_error(io::ErrorKind::ConnectionRefused.into(), &tcp);
        assert!(matches!(refused, Error::Refused { .. }), "{refused}");
        let unix = Endpoint::Unix(UnixAddr::Path("/nonexistent/sockit.sock".into()));
        let missing = connect_error(io::ErrorKind::NotFound.into(), &unix);
        assert!(
            missing.to_string().contains("no socket file at that path"),
            "{missing}"
        );
    }

    #[test]
    fn a_unix_path_that_is_a_plain_file_is_said_to_be_no_socket() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, b"").unwrap_or_else(|e| panic!("{e}"));
        let unix = Endpoint::Unix(UnixAddr::Path(path));
        let error = connect_error(io::ErrorKind::ConnectionRefused.into(), &unix);
        assert!(
            error.to_string().contains("a file, not a socket"),
            "{error}"
        );
    }
}
