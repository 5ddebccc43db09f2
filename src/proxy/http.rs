//! The HTTP CONNECT request head, server side: a pure function over the bytes received
//! so far (fuzzed: `fuzz/fuzz_targets/http_connect.rs`), and the responses.
//!
//! A head is the request line `CONNECT host:port HTTP/1.x` and header lines up to the
//! empty line. Only `Proxy-Authorization: Basic …` is read; other headers are skipped.
//! The head is bounded ([`MAX_HEAD`] bytes by default, as nginx's
//! `large_client_header_buffers` and Apache's `LimitRequestFieldSize` bound theirs): a
//! client that sends more before the empty line gets 431 and is closed, so a header
//! flood costs a bounded buffer.

use base64::Engine;

use super::socks::{Credentials, Destination, Parsed, check_host_name};

/// Default bound on a request head, request line and headers together.
pub const MAX_HEAD: usize = 8 * 1024;

/// A complete CONNECT request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectHead {
    /// Where the tunnel goes.
    pub destination: Destination,
    /// From `Proxy-Authorization: Basic`, if sent and well-formed.
    pub credentials: Option<Credentials>,
}

/// What [`parse_head`] made of the bytes received so far: a head and its length (bytes
/// after it are tunnel data), "need more", or an error whose status the client gets.
pub type Head = Parsed<ConnectHead, HttpError>;

/// Why a request head is refused, each with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// More than the bound before the empty line.
    #[error("a request head over {0} bytes")]
    TooLarge(usize),
    /// A method other than CONNECT: this is a tunnelling proxy, not a web proxy.
    #[error("method {0:?}: only CONNECT is served")]
    NotConnect(String),
    /// The request line is not `CONNECT host:port HTTP/1.x`.
    #[error("a malformed request line {0:?}")]
    BadRequestLine(String),
    /// A header line without a colon, or bytes that are not text.
    #[error("a malformed header line")]
    BadHeader,
}

impl HttpError {
    /// The status line the client gets.
    pub fn status(&self) -> Status {
        match self {
            HttpError::TooLarge(_) => Status::HeaderTooLarge,
            HttpError::NotConnect(_) => Status::MethodNotAllowed,
            HttpError::BadRequestLine(_) | HttpError::BadHeader => Status::BadRequest,
        }
    }
}

/// The responses a CONNECT proxy gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200: the tunnel is open.
    Established,
    /// 400: the head is malformed.
    BadRequest,
    /// 403: the destination is not allowed (`--allow-to` / `--deny-to`).
    Forbidden,
    /// 405: not CONNECT.
    MethodNotAllowed,
    /// 407: credentials missing or wrong.
    AuthRequired,
    /// 408: the head did not arrive within the handshake time limit.
    RequestTimeout,
    /// 431: the head is over the bound.
    HeaderTooLarge,
    /// 502: the destination could not be reached (refused, no such host).
    BadGateway,
    /// 504: connecting to the destination timed out.
    GatewayTimeout,
}

impl Status {
    /// The status code.
    pub fn code(self) -> u16 {
        match self {
            Status::Established => 200,
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::MethodNotAllowed => 405,
            Status::AuthRequired => 407,
            Status::RequestTimeout => 408,
            Status::HeaderTooLarge => 431,
            Status::BadGateway => 502,
            Status::GatewayTimeout => 504,
        }
    }

    /// The reason phrase.
    fn reason(self) -> &'static str {
        match self {
            Status::Established => "Connection established",
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::AuthRequired => "Proxy Authentication Required",
            Status::RequestTimeout => "Request Timeout",
            Status::HeaderTooLarge => "Request Header Fields Too Large",
            Status::BadGateway => "Bad Gateway",
            Status::GatewayTimeout => "Gateway Timeout",
        }
    }

    /// The whole response: for 200 only the status line (the tunnel starts right after
    /// it); errors close the connection and 407 asks for Basic credentials.
    pub fn response(self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.code(), self.reason());
        match self {
            Status::Established => {}
            Status::AuthRequired => out.push_str(
                "Proxy-Authenticate: Basic realm=\"sockit\"\r\nContent-Length: 0\r\nConnection: close\r\n",
            ),
            // RFC 9110: a 405 lists the methods the resource takes.
            Status::MethodNotAllowed => {
                out.push_str("Allow: CONNECT\r\nContent-Length: 0\r\nConnection: close\r\n");
            }
            _ => out.push_str("Content-Length: 0\r\nConnection: close\r\n"),
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// Parses a CONNECT request head from the bytes received so far; at most `max_head`
/// bytes are looked at.
pub fn parse_head(buf: &[u8], max_head: usize) -> Head {
    let window = &buf[..buf.len().min(max_head)];
    let Some(end) = head_end(window) else {
        if buf.len() >= max_head {
            return Parsed::Invalid(HttpError::TooLarge(max_head));
        }
        // A request line that is already wrong is refused now, not after the flood.
        return match first_line(window) {
            Some(line) => match parse_request_line(line) {
                Ok(_) => Parsed::NeedMore,
                Err(e) => Parsed::Invalid(e),
            },
            None => Parsed::NeedMore,
        };
    };
    let Ok(text) = std::str::from_utf8(&window[..end]) else {
        return Parsed::Invalid(HttpError::BadHeader);
    };
    let mut lines = text.split('\n').map(|line| line.trim_end_matches('\r'));
    let destination = match parse_request_line(lines.next().unwrap_or_default()) {
        Ok(destination) => destination,
        Err(e) => return Parsed::Invalid(e),
    };
    let mut credentials = None;
    for line in lines.filter(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Invalid(HttpError::BadHeader);
        };
        if name.trim().eq_ignore_ascii_case("proxy-authorization") {
            credentials = basic_credentials(value.trim());
        }
    }
    Parsed::Complete {
        len: end,
        value: ConnectHead {
            destination,
            credentials,
        },
    }
}

/// Where the head ends (just past the empty line), CRLF or bare LF line ends.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(offset) = memchr::memchr(b'\n', &buf[at..]) {
        let newline = at + offset;
        let next = newline + 1;
        if buf[next..].starts_with(b"\r\n") {
            return Some(next + 2);
        }
        if buf[next..].starts_with(b"\n") {
            return Some(next + 1);
        }
        at = next;
    }
    None
}

/// The request line, once its line end has arrived.
fn first_line(buf: &[u8]) -> Option<&str> {
    let end = memchr::memchr(b'\n', buf)?;
    let line = std::str::from_utf8(&buf[..end]).unwrap_or("\u{fffd}");
    Some(line.trim_end_matches('\r'))
}

/// `CONNECT host:port HTTP/1.0|1.1` → the destination.
fn parse_request_line(line: &str) -> Result<Destination, HttpError> {
    let bad = || HttpError::BadRequestLine(shorten(line));
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !method.eq_ignore_ascii_case("CONNECT") {
        if method.bytes().all(|b| b.is_ascii_alphabetic()) && !method.is_empty() {
            return Err(HttpError::NotConnect(shorten(method)));
        }
        return Err(bad());
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad());
    }
    authority(target).ok_or_else(bad)
}

/// `host:port` or `[v6]:port` → a destination; the port is required (RFC 9110).
fn authority(target: &str) -> Option<Destination> {
    let (host, port) = match target.strip_prefix('[') {
        Some(rest) => {
            let (v6, port) = rest.split_once("]:")?;
            let ip: std::net::Ipv6Addr = v6.parse().ok()?;
            return Some(Destination::Addr((ip, port.parse().ok()?).into()));
        }
        None => target.rsplit_once(':')?,
    };
    let port: u16 = port.parse().ok()?;
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Some(Destination::Addr((ip, port).into()));
    }
    let name = check_host_name(host.as_bytes()).ok()?;
    Some(Destination::Name(name, port))
}

/// `Basic base64(user:password)` → credentials; anything else → none.
fn basic_credentials(value: &str) -> Option<Credentials> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(Credentials {
        user: decoded[..colon].to_vec(),
        password: decoded[colon + 1..].to_vec(),
    })
}

/// A request line cut for a log line (a hostile one can be kilobytes).
fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn connect(head: &[u8]) -> (usize, Destination, Option<Credentials>) {
        match parse_head(head, MAX_HEAD) {
            Parsed::Complete { len, value } => (len, value.destination, value.credentials),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_connect_head_names_its_destination() {
        let head = b"CONNECT 127.0.0.1:8080 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\ntunnel";
        let (len, destination, credentials) = connect(head);
        assert_eq!(len, head.len() - 6);
        assert_eq!(
            destination,
            Destination::Addr("127.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(credentials, None);
        let (_, destination, _) = connect(b"CONNECT localhost:443 HTTP/1.0\n\n");
        assert_eq!(destination, Destination::Name("localhost".into(), 443));
        let (_, destination, _) = connect(b"CONNECT [::1]:22 HTTP/1.1\r\n\r\n");
        assert_eq!(destination.port(), 22);
    }

    #[test]
    fn basic_credentials_are_read() {
        // "user:pa:ss" — the password may hold colons.
        let head = b"CONNECT a:1 HTTP/1.1\r\nproxy-authorization: Basic dXNlcjpwYTpzcw==\r\n\r\n";
        let (_, _, credentials) = connect(head);
        assert_eq!(
            credentials,
            Some(Credentials {
                user: b"user".to_vec(),
                password: b"pa:ss".to_vec()
            })
        );
    }

    #[test]
    fn bad_heads_get_their_status() {
        let status = |head: &[u8]| match parse_head(head, MAX_HEAD) {
            Parsed::Invalid(e) => e.status().code(),
            other => panic!("{other:?}"),
        };
        assert_eq!(status(b"GET http://x/ HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status(b"CONNECT nowhere HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"CONNECT a:1 HTTP/9\r\n\r\n"), 400);
        assert_eq!(status(b"CONNECT a:1 HTTP/1.1\r\nno colon\r\n\r\n"), 400);
        assert_eq!(
            status(b"\x16\x03\x01 hello\r\n"),
            400,
            "refused before the head ends"
        );
        let mut flood = b"CONNECT a:1 HTTP/1.1\r\n".to_vec();
        while flood.len() < MAX_HEAD {
            flood.extend_from_slice(b"X-Flood: 1\r\n");
        }
        assert_eq!(status(&flood), 431);
        assert_eq!(parse_head(&flood[..100], MAX_HEAD), Parsed::NeedMore);
    }

    #[test]
    fn responses_are_http() {
        assert_eq!(
            Status::Established.response(),
            b"HTTP/1.1 200 Connection established\r\n\r\n"
        );
        let refused = String::from_utf8(Status::AuthRequired.response()).unwrap_or_default();
        assert!(refused.starts_with("HTTP/1.1 407 "), "{refused}");
        assert!(refused.contains("Proxy-Authenticate: Basic"), "{refused}");
    }

    proptest! {
        #[test]
        fn no_input_panics_and_a_head_lies_within_the_input(
            bytes in proptest::collection::vec(any::<u8>(), 0..400), max in 1usize..512
        ) {
            if let Parsed::Complete { len, .. } = parse_head(&bytes, max) {
                prop_assert!(len <= bytes.len() && len <= max);
            }
        }

        #[test]
        fn a_head_in_pieces_is_never_refused(cut in 0usize..60) {
            let head = b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org\r\n\r\n";
            let cut = cut.min(head.len() - 1);
            prop_assert_eq!(parse_head(&head[..cut], MAX_HEAD), Parsed::NeedMore);
        }
    }
}
