//! The event stream: what `serve` and `send` print on stdout for each connection and message.
//!
//! Three formats: the note's own lines ([`LogFormat::Seed`], the default, byte for byte what
//! its Python programs print), timestamped text lines carrying the connection id and peer,
//! and one JSON object per event for machines.
//!
//! A message line shows a message, not a copy of the traffic: at most the first
//! [`SHOWN_BYTES`] of each payload, followed by `… (N bytes)` when there was more (text
//! lines then add a `received_bytes=N` field; JSON always carries the full length in a
//! `…_bytes` field). That is the note's `recv(1024)`,
//! so the note's own exchanges are never cut; bulk data costs one short line per message,
//! not its own size again on stdout.
//!
//! In JSON a payload is a JSON string with JSON's own escaping when the bytes shown are
//! UTF-8 (`"received":"hi\n"` is the three characters `h`, `i`, newline); otherwise it
//! travels as base64 in a `…_b64` field instead (`"received_b64":"Y2Fm6Q=="`).
//!
//! Formatting happens on the task that has the event; writing happens on one dedicated
//! thread that owns a buffered stdout and flushes only when it has nothing more queued. So
//! no worker takes a lock per line, bursts cost one `write` per batch, and an interactive
//! user still sees each line at once. The lines of one event are formatted together, so
//! events from concurrent connections never interleave mid-event.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use serde_json::{Value, json};

use super::escape::escape_into;
use crate::endpoint::{Endpoint, PeerAddr};

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// The note's lines: `connected by …`, `receive: …`, `send: …`.
    #[default]
    Seed,
    /// One timestamped line per event with the connection id and peer address.
    Text,
    /// One JSON object per line, for machines: message text as JSON strings (base64 in
    /// `…_b64` fields when not UTF-8), full sizes in `…_bytes` fields.
    Json,
}

/// What happened; each variant is one event line (or the note's group of lines).
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A server is ready; printed even with `--quiet`, so scripts can wait for it.
    Listening {
        /// The endpoint actually bound (port 0 resolved).
        endpoint: &'a Endpoint,
    },
    /// A TLS listener's certificate, so a client can check what it is shown; printed even
    /// with `--quiet` (text and JSON formats; the note's format leaves it to stderr).
    Certificate {
        /// SHA-256 of the certificate, `AB:CD:…` as openssl prints it.
        fingerprint: &'a str,
        /// Whether it was made at start (clients need `--insecure` or this fingerprint).
        self_signed: bool,
    },
    /// With `--proxy-protocol`: a load balancer's header named the client of connection
    /// `conn`. Both addresses, since the header is a claim and `via` is who made it; the
    /// connection's other events name the client.
    Proxied {
        /// Connection id.
        conn: u64,
        /// The client the header names.
        peer: &'a PeerAddr,
        /// The socket's peer: the load balancer that sent the header.
        via: &'a PeerAddr,
    },
    /// With `--client-ca`: the client of connection `conn` presented this verified
    /// certificate (mutual TLS). The texts are escaped already.
    ClientCertificate {
        /// Connection id.
        conn: u64,
        /// The client's address.
        peer: &'a PeerAddr,
        /// The certificate's subject, `CN=alice, O=Example`.
        subject: &'a str,
        /// Its subject alternative names, `DNS:alice.example`, `IP:…`, `email:…`.
        sans: &'a [String],
        /// SHA-256 of the certificate, `AB:CD:…`.
        fingerprint: &'a str,
    },
    /// A stream client connected.
    Connected {
        /// Connection id, unique for this server run.
        conn: u64,
        /// The client's address.
        peer: &'a PeerAddr,
    },
    /// A server received a message on a connection and answered it (or not: `sent` is
    /// `None` when the behaviour sends nothing back).
    Message {
        /// Connection id.
        conn: u64,
        /// The client's address.
        peer: &'a PeerAddr,
        /// The message, without its line terminator.
        received: &'a [u8],
        /// The reply, without its line terminator.
        sent: Option<&'a [u8]>,
    },
    /// A server received a datagram and answered it.
    Datagram {
        /// The sender.
        peer: &'a PeerAddr,
        /// The datagram.
        received: &'a [u8],
        /// The reply, if any.
        sent: Option<&'a [u8]>,
    },
    /// A stream connection ended.
    Closed {
        /// Connection id.
        conn: u64,
        /// The client's address.
        peer: &'a PeerAddr,
        /// Messages handled on it.
        messages: u64,
        /// Bytes read from the client.
        bytes_in: u64,
        /// Bytes written to the client.
        bytes_out: u64,
        /// Why it ended, in a few words ("closed by peer", "idle timeout").
        reason: &'a str,
    },
    /// A proxy client ended (`sockit proxy`): a `closed` event that also names the
    /// protocol it spoke and the destination it asked for, so one line tells where each
    /// tunnel went and how much it carried.
    TunnelClosed {
        /// Connection id.
        conn: u64,
        /// The client's address.
        peer: &'a PeerAddr,
        /// `socks5`, `socks4`, `http`, or `none` when the first byte named no protocol.
        protocol: &'a str,
        /// The destination asked for (empty when the handshake never named one).
        destination: &'a str,
        /// Bytes from the client delivered to the destination.
        bytes_in: u64,
        /// Bytes from the destination delivered to the client.
        bytes_out: u64,
        /// Why it ended, in a few words, refusals included.
        reason: &'a str,
    },
    /// A client sent a request (`datagram` selects the note's `sendto` wording).
    Sent {
        /// The server.
        peer: &'a PeerAddr,
        /// The request, or its first bytes: at most [`SHOWN_BYTES`] are printed.
        data: &'a [u8],
        /// The request's full length; beyond what is shown it is summarised.
        len: usize,
        /// Whether this went as a datagram.
        datagram: bool,
    },
    /// A client received a reply.
    Received {
        /// The server.
        peer: &'a PeerAddr,
        /// The reply, or its first bytes: at most [`SHOWN_BYTES`] are printed.
        data: &'a [u8],
        /// The reply's full length; beyond what is shown it is summarised.
        len: usize,
        /// Whether this came as a datagram.
        datagram: bool,
    },
}

/// Where events go. Cheap to clone; every clone feeds the same writer thread.
#[derive(Clone)]
pub struct EventLog {
    /// `None` when nothing is to be printed at all (tests, or a sink-less run).
    inner: Option<Arc<Inner>>,
}

struct Inner {
    format: LogFormat,
    /// `--quiet`: only the listening line is printed.
    quiet: bool,
    tx: SyncSender<Command>,
}

enum Command {
    Write(String),
    /// Flush and answer, so `main` can exit knowing every line is out.
    Flush(SyncSender<()>),
}

/// The most of one payload a message line shows: the note's `recv(1024)`, so a message
/// of the note's own server and client is always shown whole.
pub const SHOWN_BYTES: usize = 1024;

/// The part of `bytes` a line shows: at most [`SHOWN_BYTES`], cut before a UTF-8
/// character that would not fit whole.
fn shown(bytes: &[u8]) -> &[u8] {
    if bytes.len() <= SHOWN_BYTES {
        return bytes;
    }
    let mut end = SHOWN_BYTES;
    // A continuation byte (0b10xx_xxxx) right after the cut means a character straddles
    // it; a character is at most 4 bytes, so at most 3 steps back.
    while end > SHOWN_BYTES - 3 && bytes[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    &bytes[..end]
}

/// Appends the escaped payload, and `… (N bytes)` when only its start is shown.
fn push_payload(out: &mut String, bytes: &[u8]) {
    push_payload_of(out, bytes, bytes.len());
}

/// [`push_payload`] for a payload of `len` bytes of which `bytes` may be only the start
/// (a client keeps no more of a long reply than a line shows).
fn push_payload_of(out: &mut String, bytes: &[u8], len: usize) {
    let part = shown(bytes);
    escape_into(out, part);
    if part.len() < len {
        let _ = write!(out, "… ({len} bytes)");
    }
}

/// Queued lines before workers wait for the writer: enough to absorb bursts, small enough
/// that a stuck stdout slows the server instead of growing its memory.
const QUEUE_DEPTH: usize = 8192;

impl EventLog {
    /// Prints events to this process's stdout.
    pub fn stdout(format: LogFormat, quiet: bool) -> EventLog {
        EventLog::to_writer(Box::new(std::io::stdout()), format, quiet)
    }

    /// Prints events to any writer (tests use a pipe or a shared buffer).
    pub fn to_writer(writer: Box<dyn Write + Send>, format: LogFormat, quiet: bool) -> EventLog {
        let (tx, rx) = sync_channel(QUEUE_DEPTH);
        let spawned = std::thread::Builder::new()
            .name("sockit-events".into())
            .spawn(move || write_loop(rx, writer));
        if let Err(e) = spawned {
            tracing::error!(
                "cannot start the event writer thread, events will not be printed: {e}"
            );
            return EventLog::disabled();
        }
        EventLog {
            inner: Some(Arc::new(Inner { format, quiet, tx })),
        }
    }

    /// Prints nothing.
    pub fn disabled() -> EventLog {
        EventLog { inner: None }
    }

    /// Whether per-message events are printed; lets hot paths skip building them.
    #[inline]
    pub fn wants_messages(&self) -> bool {
        self.inner.as_ref().is_some_and(|inner| !inner.quiet)
    }

    /// Formats and queues one event.
    pub fn emit(&self, event: Event<'_>) {
        let Some(inner) = &self.inner else { return };
        if inner.quiet && !matches!(event, Event::Listening { .. } | Event::Certificate { .. }) {
            return;
        }
        let text = match inner.format {
            LogFormat::Seed => format_seed(&event),
            LogFormat::Text => format_text(&event),
            LogFormat::Json => format_json(&event),
        };
        if !text.is_empty() {
            // The writer only goes away when stdout is closed; then there is no one to tell.
            let _ = inner.tx.send(Command::Write(text));
        }
    }

    /// Blocks until every queued event has been written and flushed.
    ///
    /// Call it from `main` (not from async code) before exiting.
    pub fn flush(&self) {
        let Some(inner) = &self.inner else { return };
        let (ack_tx, ack_rx) = sync_channel(1);
        if inner.tx.send(Command::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
    }
}

/// The writer thread: write everything queued, flush when the queue runs dry.
///
/// While events keep coming, the thread polls the queue every [`POLL_WHILE_BUSY`]
/// instead of sleeping on it: a sleeping receiver must be woken by every sender (a
/// system call per event), a polling one by none. Once a poll finds nothing, it goes
/// back to sleeping on the queue, so an idle server costs nothing and a lone event is
/// printed at once.
fn write_loop(rx: Receiver<Command>, writer: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    let mut broken = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        loop {
            while let Some(command) = next {
                match command {
                    Command::Write(text) if !broken => {
                        // A closed stdout (e.g. `| head`) is a normal way to stop reading.
                        broken = out.write_all(text.as_bytes()).is_err();
                    }
                    Command::Write(_) => {}
                    Command::Flush(ack) => {
                        broken = broken || out.flush().is_err();
                        let _ = ack.send(());
                    }
                }
                next = rx.try_recv().ok();
            }
            if !broken {
                broken = out.flush().is_err();
            }
            std::thread::sleep(POLL_WHILE_BUSY);
            next = rx.try_recv().ok();
            if next.is_none() {
                break;
            }
        }
    }
    let _ = out.flush();
}

/// How long the writer waits between polls while events keep coming: the most a line
/// is delayed under load.
const POLL_WHILE_BUSY: std::time::Duration = std::time::Duration::from_millis(2);

/// Where a server listens, the way the note prints it (`127.0.0.1:8000`).
fn listen_address(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Tcp(hp) | Endpoint::Udp(hp) | Endpoint::Tls(hp) => hp.to_string(),
        Endpoint::Unix(addr) | Endpoint::UnixDgram(addr) => addr.to_string(),
    }
}

/// The note's own lines.
fn format_seed(event: &Event<'_>) -> String {
    let mut s = String::new();
    match *event {
        Event::Listening { endpoint } => {
            let _ = write!(
                s,
                "server start at: {}\nwait for connection...\n\n",
                listen_address(endpoint)
            );
        }
        Event::Certificate { .. } | Event::Proxied { .. } | Event::ClientCertificate { .. } => {}
        Event::Connected { peer, .. } => {
            s.push_str("connected by ");
            peer.push_to(&mut s);
            s.push('\n');
        }
        Event::Message { received, sent, .. } => {
            s.reserve(24 + 2 * shown(received).len() + sent.map_or(0, |b| shown(b).len()));
            s.push_str("receive: ");
            push_payload(&mut s, received);
            s.push('\n');
            if let Some(sent) = sent {
                s.push_str("send: ");
                push_payload(&mut s, sent);
                s.push_str("\n\n");
            }
        }
        Event::Datagram {
            peer,
            received,
            sent,
        } => {
            s.reserve(40 + 2 * shown(received).len() + sent.map_or(0, |b| shown(b).len()));
            s.push_str("recvfrom ");
            let peer_at = s.len();
            peer.push_to(&mut s);
            let peer_end = s.len();
            s.push_str(": ");
            push_payload(&mut s, received);
            s.push('\n');
            if let Some(sent) = sent {
                s.push_str("sendto ");
                s.extend_from_within(peer_at..peer_end);
                s.push_str(": ");
                push_payload(&mut s, sent);
                s.push_str("\n\n");
            }
        }
        // The note prints nothing when a client leaves; the text and JSON formats do.
        Event::Closed { .. } | Event::TunnelClosed { .. } => {}
        Event::Sent {
            peer,
            data,
            len,
            datagram,
        } => {
            if datagram {
                let _ = write!(s, "sendto {peer}: ");
            } else {
                s.push_str("send: ");
            }
            push_payload_of(&mut s, data, len);
            s.push('\n');
        }
        Event::Received {
            peer,
            data,
            len,
            datagram,
        } => {
            if datagram {
                let _ = write!(s, "recvfrom {peer}: ");
            } else {
                s.push_str("receive: ");
            }
            push_payload_of(&mut s, data, len);
            s.push_str("\n\n");
        }
    }
    s
}

/// A timestamp for text and JSON events.
fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// Timestamped `key=value` lines.
fn format_text(event: &Event<'_>) -> String {
    let mut s = now();
    match *event {
        Event::Listening { endpoint } => {
            let _ = write!(s, " listening endpoint={endpoint}");
        }
        Event::Certificate {
            fingerprint,
            self_signed,
        } => {
            let _ = write!(
                s,
                " certificate sha256={fingerprint} self_signed={self_signed}"
            );
        }
        Event::Proxied { conn, peer, via } => {
            let _ = write!(s, " proxied conn={conn} peer={peer} via={via}");
        }
        Event::ClientCertificate {
            conn,
            peer,
            subject,
            sans,
            fingerprint,
        } => {
            let _ = write!(s, " client_certificate conn={conn} peer={peer}");
            push_text_field(&mut s, "subject", subject.as_bytes());
            push_text_field(&mut s, "sans", sans.join(",").as_bytes());
            let _ = write!(s, " sha256={fingerprint}");
        }
        Event::Connected { conn, peer } => {
            let _ = write!(s, " connected conn={conn} peer={peer}");
        }
        Event::Message {
            conn,
            peer,
            received,
            sent,
        } => {
            let _ = write!(s, " message conn={conn} peer={peer}");
            push_text_field(&mut s, "received", received);
            if let Some(sent) = sent {
                push_text_field(&mut s, "sent", sent);
            }
        }
        Event::Datagram {
            peer,
            received,
            sent,
        } => {
            let _ = write!(s, " datagram peer={peer}");
            push_text_field(&mut s, "received", received);
            if let Some(sent) = sent {
                push_text_field(&mut s, "sent", sent);
            }
        }
        Event::Closed {
            conn,
            peer,
            messages,
            bytes_in,
            bytes_out,
            reason,
        } => {
            let _ = write!(
                s,
                " closed conn={conn} peer={peer} messages={messages} bytes_in={bytes_in} bytes_out={bytes_out} reason=\"{reason}\""
            );
        }
        Event::TunnelClosed {
            conn,
            peer,
            protocol,
            destination,
            bytes_in,
            bytes_out,
            reason,
        } => {
            let _ = write!(
                s,
                " closed conn={conn} peer={peer} protocol={protocol} destination=\"{}\" bytes_in={bytes_in} bytes_out={bytes_out} reason=\"{}\"",
                destination.escape_debug(),
                reason.escape_debug()
            );
        }
        Event::Sent {
            peer, data, len, ..
        } => {
            let _ = write!(s, " sent peer={peer}");
            push_text_field_of(&mut s, "data", data, len);
        }
        Event::Received {
            peer, data, len, ..
        } => {
            let _ = write!(s, " received peer={peer}");
            push_text_field_of(&mut s, "data", data, len);
        }
    }
    s.push('\n');
    s
}

/// ` name="escaped"` with its shown part, and ` name_bytes=N` when only that part is
/// shown.
fn push_text_field(out: &mut String, name: &str, bytes: &[u8]) {
    push_text_field_of(out, name, bytes, bytes.len());
}

/// [`push_text_field`] for a payload of `len` bytes of which `bytes` may be only the start.
fn push_text_field_of(out: &mut String, name: &str, bytes: &[u8], len: usize) {
    let part = shown(bytes);
    let _ = write!(out, " {name}=\"");
    escape_into(out, part);
    out.push('"');
    if part.len() < len {
        let _ = write!(out, " {name}_bytes={len}");
    }
}

/// Adds a payload to a JSON event: `name` as a JSON string when the shown part is UTF-8,
/// else `name_b64` in base64; and `name_bytes`, the full length.
fn insert_payload(object: &mut serde_json::Map<String, Value>, name: &str, bytes: &[u8]) {
    insert_payload_of(object, name, bytes, bytes.len());
}

/// [`insert_payload`] for a payload of `len` bytes of which `bytes` may be only the start.
fn insert_payload_of(
    object: &mut serde_json::Map<String, Value>,
    name: &str,
    bytes: &[u8],
    len: usize,
) {
    use base64::Engine as _;
    let part = shown(bytes);
    match std::str::from_utf8(part) {
        Ok(text) => object.insert(name.to_string(), text.into()),
        Err(_) => object.insert(
            format!("{name}_b64"),
            base64::engine::general_purpose::STANDARD
                .encode(part)
                .into(),
        ),
    };
    object.insert(format!("{name}_bytes"), len.into());
}

/// A JSON event with its payloads added (see [`insert_payload`]).
fn with_payloads(mut value: Value, payloads: &[(&str, Option<&[u8]>)]) -> Value {
    if let Some(object) = value.as_object_mut() {
        for (name, bytes) in payloads {
            match bytes {
                Some(bytes) => insert_payload(object, name, bytes),
                None => {
                    object.insert((*name).to_string(), Value::Null);
                }
            }
        }
    }
    value
}

/// One JSON object per line.
fn format_json(event: &Event<'_>) -> String {
    let time = now();
    let value = match *event {
        Event::Listening { endpoint } => {
            json!({"time": time, "event": "listening", "endpoint": endpoint.to_string()})
        }
        Event::Certificate {
            fingerprint,
            self_signed,
        } => json!({
            "time": time, "event": "certificate", "sha256": fingerprint, "self_signed": self_signed,
        }),
        Event::Proxied { conn, peer, via } => json!({
            "time": time, "event": "proxied", "conn": conn, "peer": peer.to_string(),
            "via": via.to_string(),
        }),
        Event::ClientCertificate {
            conn,
            peer,
            subject,
            sans,
            fingerprint,
        } => json!({
            "time": time, "event": "client_certificate", "conn": conn,
            "peer": peer.to_string(), "subject": subject, "sans": sans, "sha256": fingerprint,
        }),
        Event::Connected { conn, peer } => {
            json!({"time": time, "event": "connected", "conn": conn, "peer": peer.to_string()})
        }
        Event::Message {
            conn,
            peer,
            received,
            sent,
        } => with_payloads(
            json!({"time": time, "event": "message", "conn": conn, "peer": peer.to_string()}),
            &[("received", Some(received)), ("sent", sent)],
        ),
        Event::Datagram {
            peer,
            received,
            sent,
        } => with_payloads(
            json!({"time": time, "event": "datagram", "peer": peer.to_string()}),
            &[("received", Some(received)), ("sent", sent)],
        ),
        Event::Closed {
            conn,
            peer,
            messages,
            bytes_in,
            bytes_out,
            reason,
        } => json!({
            "time": time, "event": "closed", "conn": conn, "peer": peer.to_string(),
            "messages": messages, "bytes_in": bytes_in, "bytes_out": bytes_out, "reason": reason,
        }),
        Event::TunnelClosed {
            conn,
            peer,
            protocol,
            destination,
            bytes_in,
            bytes_out,
            reason,
        } => json!({
            "time": time, "event": "closed", "conn": conn, "peer": peer.to_string(),
            "protocol": protocol, "destination": destination,
            "bytes_in": bytes_in, "bytes_out": bytes_out, "reason": reason,
        }),
        Event::Sent {
            peer, data, len, ..
        } => {
            let mut value = json!({"time": time, "event": "sent", "peer": peer.to_string()});
            if let Some(object) = value.as_object_mut() {
                insert_payload_of(object, "data", data, len);
            }
            value
        }
        Event::Received {
            peer, data, len, ..
        } => {
            let mut value = json!({"time": time, "event": "received", "peer": peer.to_string()});
            if let Some(object) = value.as_object_mut() {
                insert_payload_of(object, "data", data, len);
            }
            value
        }
    };
    let mut line = value.to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerAddr {
        PeerAddr::Ip(std::net::SocketAddr::from(([127, 0, 0, 1], 50738)))
    }

    #[test]
    fn seed_format_is_the_notes_tcp_server_output() {
        let endpoint = Endpoint::seed_tcp();
        let peer = peer();
        let mut out = format_seed(&Event::Listening {
            endpoint: &endpoint,
        });
        out += &format_seed(&Event::Connected {
            conn: 1,
            peer: &peer,
        });
        out += &format_seed(&Event::Message {
            conn: 1,
            peer: &peer,
            received: b"hello tcp server",
            sent: Some(b"hello tcp client"),
        });
        assert_eq!(
            out,
            "server start at: 127.0.0.1:8000\nwait for connection...\n\n\
             connected by 127.0.0.1:50738\nreceive: hello tcp server\nsend: hello tcp client\n\n"
        );
    }

    #[test]
    fn seed_format_is_the_notes_udp_output() {
        let peer = peer();
        let out = format_seed(&Event::Datagram {
            peer: &peer,
            received: b"hello udp server",
            sent: Some(b"hello udp client"),
        });
        assert_eq!(
            out,
            "recvfrom 127.0.0.1:50738: hello udp server\nsendto 127.0.0.1:50738: hello udp client\n\n"
        );
    }

    #[test]
    fn json_payloads_are_json_strings_or_base64() -> Result<(), serde_json::Error> {
        let peer = peer();
        let line = format_json(&Event::Message {
            conn: 7,
            peer: &peer,
            received: b"hi\n",
            sent: Some("caf\u{e9} \"q\"\\".as_bytes()),
        });
        let value: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(value["event"], "message");
        assert_eq!(value["conn"], 7);
        assert_eq!(value["received"], "hi\n", "{line}");
        assert_eq!(value["received_bytes"], 3);
        assert_eq!(value["sent"], "caf\u{e9} \"q\"\\", "{line}");
        let line = format_json(&Event::Datagram {
            peer: &peer,
            received: b"caf\xe9",
            sent: None,
        });
        let value: serde_json::Value = serde_json::from_str(&line)?;
        assert_eq!(value["received_b64"], "Y2Fm6Q==", "{line}");
        assert!(value.get("received").is_none(), "{line}");
        assert!(value["sent"].is_null());
        Ok(())
    }

    #[test]
    fn long_payloads_show_their_start_and_their_size() -> Result<(), serde_json::Error> {
        let peer = peer();
        let mut big = "é".repeat(SHOWN_BYTES).into_bytes();
        big.push(b'!');
        let message = Event::Message {
            conn: 1,
            peer: &peer,
            received: &big,
            sent: None,
        };
        let seed = format_seed(&message);
        let note = format!("… ({} bytes)\n", big.len());
        assert!(seed.ends_with(&note), "{seed}");
        assert_eq!(seed.chars().filter(|&c| c == 'é').count(), SHOWN_BYTES / 2);
        let text = format_text(&message);
        assert!(
            text.contains(&format!(" received_bytes={}", big.len())),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&format_json(&message))?;
        let shown = value["received"].as_str().unwrap_or_default();
        assert_eq!(shown.len(), SHOWN_BYTES, "cut on a character boundary");
        assert_eq!(value["received_bytes"], big.len());
        let whole = format_seed(&Event::Message {
            conn: 1,
            peer: &peer,
            received: &big[..SHOWN_BYTES],
            sent: None,
        });
        assert!(
            !whole.contains('…'),
            "a message of the note's size is shown whole"
        );
        Ok(())
    }

    #[test]
    fn quiet_keeps_only_the_listening_line() {
        #[derive(Clone, Default)]
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if let Ok(mut v) = self.0.lock() {
                    v.extend_from_slice(buf);
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let shared = Shared::default();
        let log = EventLog::to_writer(Box::new(shared.clone()), LogFormat::Seed, true);
        let endpoint = Endpoint::seed_tcp();
        let peer = peer();
        log.emit(Event::Connected {
            conn: 1,
            peer: &peer,
        });
        log.emit(Event::Listening {
            endpoint: &endpoint,
        });
        log.flush();
        let written = shared.0.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&written),
            "server start at: 127.0.0.1:8000\nwait for connection...\n\n"
        );
        assert!(!log.wants_messages());
    }
}
