//! SOCKS4 and SOCKS4a as a client: one CONNECT request and its 8-byte reply.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Hop, Target};
use crate::error::{Error, Result};

/// The request's version byte.
const VERSION: u8 = 4;
/// Command: open a TCP connection.
const CONNECT: u8 = 1;
/// Reply: request granted.
const GRANTED: u8 = 90;

/// Asks for a TCP connection to `target` (a name only with SOCKS4a: 0.0.0.1 then the name).
pub(super) async fn connect(hop: &Hop<'_>, stream: &mut TcpStream, target: &Target) -> Result<()> {
    let message = encode_request(hop, target)?;
    stream
        .write_all(&message)
        .await
        .map_err(|e| hop.io_error(e, "while sending the request"))?;
    let mut reply = [0u8; 8];
    stream
        .read_exact(&mut reply)
        .await
        .map_err(|e| hop.io_error(e, "before replying to the request"))?;
    if reply[0] != 0 {
        return Err(hop.protocol_error(format!(
            "its reply starts with {:#04x}, not SOCKS4's 0x00; is it a SOCKS4 proxy?",
            reply[0]
        )));
    }
    match reply[1] {
        GRANTED => Ok(()),
        code => Err(hop.refused(target, reply_words(code))),
    }
}

/// The request: version, command, port, IPv4 address, user id, and for 4a the name.
fn encode_request(hop: &Hop<'_>, target: &Target) -> Result<Vec<u8>> {
    let user = hop
        .hop
        .credentials
        .as_ref()
        .map_or(&[][..], |c| c.user.as_bytes());
    let mut message = vec![VERSION, CONNECT];
    match target {
        Target::Addr(SocketAddr::V4(addr)) => {
            message.extend_from_slice(&addr.port().to_be_bytes());
            message.extend_from_slice(&addr.ip().octets());
            message.extend_from_slice(user);
            message.push(0);
        }
        Target::Addr(addr @ SocketAddr::V6(_)) => {
            return Err(Error::Usage(format!(
                "SOCKS4 carries only IPv4 addresses, not {}; use socks5://",
                addr.ip()
            )));
        }
        Target::Name(name, port) => {
            message.extend_from_slice(&port.to_be_bytes());
            message.extend_from_slice(&[0, 0, 0, 1]);
            message.extend_from_slice(user);
            message.push(0);
            message.extend_from_slice(name.as_bytes());
            message.push(0);
        }
    }
    Ok(message)
}

/// SOCKS4's reply codes in words.
fn reply_words(code: u8) -> String {
    let words = match code {
        91 => "request rejected or failed",
        92 => "it could not reach the identd on this machine",
        93 => "identd reported a different user id",
        _ => return format!("unknown reply code {code}"),
    };
    format!("{words} (SOCKS4 reply {code})")
}
