//! HTTP CONNECT as a client: the request, Basic auth, and a reply read up to its blank
//! line and not a byte further, so the target's first bytes stay in the socket.

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Hop, Target};
use crate::error::Result;

/// The most reply header bytes read before the proxy is taken to be misbehaving.
const MAX_HEADER: usize = 16 * 1024;

/// Asks for a tunnel to `target` with `CONNECT host:port HTTP/1.1`.
pub(super) async fn connect(hop: &Hop<'_>, stream: &mut TcpStream, target: &Target) -> Result<()> {
    let authority = authority(target);
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(credentials) = &hop.hop.credentials {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.user, credentials.password));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| hop.io_error(e, "while sending CONNECT"))?;
    let head = read_head(hop, stream).await?;
    let (code, reason) = status(&head).ok_or_else(|| {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let shown: Vec<u8> = line.iter().copied().take(80).collect();
        hop.protocol_error(format!(
            "its reply {:?} is not an HTTP status line; is it an HTTP proxy?",
            crate::escape::escaped(&shown)
        ))
    })?;
    match code {
        200..=299 => Ok(()),
        // 407 is the standard answer; some proxies (tinyproxy) answer bad credentials with 401.
        401 | 407 => Err(match &hop.hop.credentials {
            Some(credentials) => hop.auth_error(format!(
                "user {:?} and the password given were not accepted (HTTP {code} {reason})",
                credentials.user
            )),
            None => hop.auth_error(format!(
                "it requires a user name and password (HTTP {code} {reason}); {}",
                super::CREDENTIALS_HINT
            )),
        }),
        _ => Err(hop.refused(target, format!("HTTP {code} {reason}"))),
    }
}

/// `host:port` as CONNECT names it (IPv6 in brackets).
fn authority(target: &Target) -> String {
    match target {
        Target::Addr(addr) => addr.to_string(),
        Target::Name(name, port) => format!("{name}:{port}"),
    }
}

/// Reads the reply's status line and headers, through the blank line and no further:
/// it peeks, then takes exactly the bytes that belong to the header.
async fn read_head(hop: &Hop<'_>, stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut peeked = vec![0u8; 4096];
    loop {
        let n = stream
            .peek(&mut peeked)
            .await
            .map_err(|e| hop.io_error(e, "before replying to CONNECT"))?;
        if n == 0 {
            return Err(hop.io_error(
                std::io::ErrorKind::UnexpectedEof.into(),
                "before replying to CONNECT",
            ));
        }
        let searched_from = head.len().saturating_sub(3);
        head.extend_from_slice(&peeked[..n]);
        let end = memchr::memmem::find(&head[searched_from..], b"\r\n\r\n")
            .map(|at| searched_from + at + 4);
        let take = match end {
            Some(end) => {
                let before = head.len() - n;
                head.truncate(end);
                end - before
            }
            None => n,
        };
        stream
            .read_exact(&mut peeked[..take])
            .await
            .map_err(|e| hop.io_error(e, "in the middle of its reply"))?;
        if end.is_some() {
            return Ok(head);
        }
        if head.len() > MAX_HEADER {
            return Err(hop.protocol_error(format!(
                "its reply to CONNECT has no end of header within {MAX_HEADER} bytes"
            )));
        }
    }
}

/// The status code and reason phrase (escaped, at most 80 bytes) of
/// `HTTP/1.x CODE REASON`; `None` when the first line is not a status line.
fn status(head: &[u8]) -> Option<(u16, String)> {
    let line_end = memchr::memmem::find(head, b"\r\n").unwrap_or(head.len());
    let line = &head[..line_end];
    let mut parts = line.splitn(3, |&b| b == b' ');
    let version = parts.next().unwrap_or_default();
    let code = parts
        .next()
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u16>().ok());
    let (true, Some(code)) = (version.starts_with(b"HTTP/"), code) else {
        return None;
    };
    let reason: Vec<u8> = parts
        .next()
        .unwrap_or_default()
        .iter()
        .copied()
        .take(80)
        .collect();
    Some((code, crate::escape::escaped(&reason)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_targets_are_bracketed() {
        let target = Target::Addr("[::1]:22".parse().unwrap());
        assert_eq!(authority(&target), "[::1]:22");
        assert_eq!(authority(&Target::Name("h".into(), 1)), "h:1");
    }

    #[test]
    fn status_lines_give_code_and_escaped_reason() {
        let head = b"HTTP/1.0 407 Proxy Authentication Required\r\nX: y\r\n\r\n";
        assert_eq!(
            status(head),
            Some((407, "Proxy Authentication Required".to_string()))
        );
        assert_eq!(status(b"HTTP/1.1 200\r\n\r\n"), Some((200, String::new())));
        let (_, reason) = status(b"HTTP/1.1 502 bad\x1b[31m\r\n\r\n").unwrap();
        assert!(!reason.contains('\x1b'), "{reason}");
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 abc ok\r\n"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_reply_parses_or_is_refused_without_panicking(head in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Some((_, reason)) = status(&head) {
                proptest::prop_assert!(!reason.contains('\n'));
            }
        }
    }
}
