//! `sockit send`: the note's client. Connect, send a message, print the reply, close.
//!
//! With `--count N` the same message goes N times over one connection (or N datagrams),
//! each reply awaited before the next message, within the timeout.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::endpoint::{Delivery, Endpoint};
use crate::error::{Error, Result};
use crate::framing::{Framer, Framing};
use crate::obs::hexdump::{Direction, HexDump, Tap};
use crate::obs::{Event, EventLog};
use crate::transport::tls::ClientTls;
use crate::transport::{
    ConnectOptions, DatagramSocket, MAX_DATAGRAM, PeerAddr, connect_stream, unix_sockaddr,
};

/// What to send and how to wait for the answer.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The message (the note's `hello tcp server` by default).
    pub message: Bytes,
    /// How many times to send it and wait for a reply.
    pub count: u64,
    /// Limit for connecting and for each reply.
    pub timeout: Duration,
    /// Raw: one read is the reply. Line: the message is sent as a line and the reply is
    /// read up to its newline.
    pub framing: Framing,
    /// Most bytes read for one raw reply (the note's `recv(1024)`).
    pub buffer_size: usize,
    /// How a `tls://` server is checked (`None`: the system's trusted roots).
    pub tls: Option<ClientTls>,
    /// `--hex`: dump both directions on stderr.
    pub hex: Option<HexDump>,
}

impl SendOptions {
    /// The note's client for an endpoint: `hello tcp server` (or `udp`), once, 5 s timeout.
    pub fn seed(endpoint: &Endpoint) -> SendOptions {
        SendOptions {
            message: Bytes::from(format!("hello {} server", endpoint.seed_word())),
            count: 1,
            timeout: Duration::from_secs(5),
            framing: Framing::Raw,
            buffer_size: 1024,
            tls: None,
            hex: None,
        }
    }
}

/// What a successful `send` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Replies received (equals the count on success).
    pub replies: u64,
    /// The last reply, for callers that want it.
    pub last_reply: Bytes,
}

/// Runs the exchange(s) and prints each `send`/`receive` event.
///
/// # Errors
/// Connection errors ([`Error::Refused`], [`Error::HostNotFound`], [`Error::Timeout`]…),
/// or [`Error::ClosedEarly`]/[`Error::Reset`] if the server goes away mid-exchange.
pub async fn send(
    endpoint: &Endpoint,
    options: &SendOptions,
    events: &EventLog,
) -> Result<SendReport> {
    match endpoint.delivery() {
        Delivery::Stream => send_stream(endpoint, options, events).await,
        Delivery::Datagram => send_datagrams(endpoint, options, events).await,
    }
}

/// The message as it goes on the wire: in line framing, ended with a newline.
fn wire_message(options: &SendOptions) -> Bytes {
    match options.framing {
        Framing::Line { .. } if !options.message.ends_with(b"\n") => {
            let mut line = options.message.to_vec();
            line.push(b'\n');
            Bytes::from(line)
        }
        _ => options.message.clone(),
    }
}

async fn send_stream(
    endpoint: &Endpoint,
    options: &SendOptions,
    events: &EventLog,
) -> Result<SendReport> {
    let connect = ConnectOptions {
        timeout: options.timeout,
        tls: options.tls.clone(),
    };
    let stream = connect_stream(endpoint, connect).await?;
    let peer = stream
        .peer_addr()
        .map(|p| p.to_string())
        .unwrap_or_else(|_| endpoint.to_string());
    let peer_addr = stream.peer_addr().ok();
    let mut stream = Tap::maybe(stream, options.hex.as_ref(), peer.clone());
    let wire = wire_message(options);
    let mut report = SendReport::default();
    for index in 1..=options.count {
        let during = exchange_phrase(index, options.count);
        stream
            .write_all(&wire)
            .await
            .map_err(|e| Error::exchange(e, peer.clone(), format!("while sending {during}")))?;
        if let Some(p) = &peer_addr {
            events.emit(Event::Sent {
                peer: p,
                data: &options.message,
                datagram: false,
            });
        }
        let reply = tokio::time::timeout(
            options.timeout,
            read_reply(&mut stream, options, &peer, &during),
        )
        .await
        .map_err(|_| Error::Timeout {
            doing: format!("waiting for the reply to {during} from {peer}"),
            after: options.timeout,
        })??;
        if let Some(p) = &peer_addr {
            events.emit(Event::Received {
                peer: p,
                data: &reply,
                datagram: false,
            });
        }
        report.replies += 1;
        report.last_reply = reply;
    }
    // Half-close, as a polite client does; the server sees EOF and closes its side.
    let _ = stream.shutdown().await;
    Ok(report)
}

/// "message 2 of 3", or "the message" when there is one.
fn exchange_phrase(index: u64, count: u64) -> String {
    if count == 1 {
        "the message".into()
    } else {
        format!("message {index} of {count}")
    }
}

/// Reads one reply: one read in raw framing, one line in line framing.
async fn read_reply<S: AsyncRead + Unpin>(
    stream: &mut S,
    options: &SendOptions,
    peer: &str,
    during: &str,
) -> Result<Bytes> {
    let closed = || Error::ClosedEarly {
        peer: peer.to_string(),
        during: format!("before replying to {during}"),
    };
    let io_error = |e| {
        Error::exchange(
            e,
            peer.to_string(),
            format!("while waiting for the reply to {during}"),
        )
    };
    match options.framing {
        Framing::Raw => {
            let mut buf = vec![0u8; options.buffer_size.max(1)];
            let n = stream.read(&mut buf).await.map_err(io_error)?;
            if n == 0 {
                return Err(closed());
            }
            buf.truncate(n);
            Ok(Bytes::from(buf))
        }
        Framing::Line { max_len } => {
            let mut framer = Framer::new(options.framing);
            let mut buf = Vec::with_capacity(options.buffer_size);
            let mut chunk = vec![0u8; options.buffer_size.max(1)];
            loop {
                let span = framer.next_frame(&buf).map_err(|_| Error::LineTooLong {
                    peer: peer.to_string(),
                    max: max_len,
                })?;
                if let Some(span) = span {
                    return Ok(Bytes::copy_from_slice(&buf[span.payload]));
                }
                let n = stream.read(&mut chunk).await.map_err(io_error)?;
                if n == 0 {
                    return framer
                        .finish(&buf)
                        .map(|span| Bytes::copy_from_slice(&buf[span.payload]))
                        .ok_or_else(closed);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

async fn send_datagrams(
    endpoint: &Endpoint,
    options: &SendOptions,
    events: &EventLog,
) -> Result<SendReport> {
    if options.message.len() > MAX_DATAGRAM {
        return Err(Error::DatagramTooLarge {
            size: options.message.len(),
            max: MAX_DATAGRAM,
        });
    }
    let socket = DatagramSocket::connect(endpoint).await?;
    let peer = datagram_peer(&socket, endpoint);
    let peer_text = peer
        .as_ref()
        .map_or_else(|| endpoint.to_string(), |p| p.to_string());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut report = SendReport::default();
    for index in 1..=options.count {
        let during = exchange_phrase(index, options.count);
        if let Some(hex) = &options.hex {
            hex.datagram(Direction::Sent, &peer_text, &options.message);
        }
        socket
            .send(&options.message)
            .await
            .map_err(|e| datagram_error(e, endpoint, options.message.len(), &peer_text, &during))?;
        if let Some(p) = &peer {
            events.emit(Event::Sent {
                peer: p,
                data: &options.message,
                datagram: true,
            });
        }
        let received = tokio::time::timeout(options.timeout, socket.recv(&mut buf))
            .await
            .map_err(|_| Error::Timeout {
                doing: format!(
                    "waiting for the reply to {during} from {peer_text} (UDP gives no error when nothing listens or a datagram is lost)"
                ),
                after: options.timeout,
            })?
            .map_err(|e| datagram_error(e, endpoint, options.message.len(), &peer_text, &during))?;
        let reply = Bytes::copy_from_slice(&buf[..received]);
        if let Some(hex) = &options.hex {
            hex.datagram(Direction::Received, &peer_text, &reply);
        }
        if let Some(p) = &peer {
            events.emit(Event::Received {
                peer: p,
                data: &reply,
                datagram: true,
            });
        }
        report.replies += 1;
        report.last_reply = reply;
    }
    Ok(report)
}

/// The server's address as the note prints it (`127.0.0.1:8000`, or the socket path).
fn datagram_peer(socket: &DatagramSocket, endpoint: &Endpoint) -> Option<PeerAddr> {
    match socket {
        DatagramSocket::Udp(s) => s.peer_addr().ok().map(PeerAddr::Ip),
        DatagramSocket::Unix(..) => match endpoint {
            Endpoint::UnixDgram(addr) => unix_sockaddr(addr)
                .ok()
                .map(|a| PeerAddr::Unix(Box::new(a))),
            _ => None,
        },
    }
}

/// Names the datagram errors users meet: nothing listening, datagram too large.
fn datagram_error(
    e: std::io::Error,
    endpoint: &Endpoint,
    size: usize,
    peer: &str,
    during: &str,
) -> Error {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Error::Refused {
            endpoint: endpoint.clone(),
        },
        Some(libc::EMSGSIZE) => Error::DatagramTooLarge {
            size,
            max: MAX_DATAGRAM,
        },
        _ => Error::exchange(e, peer.to_string(), format!("during {during}")),
    }
}
