//! The throughput test's wire format: what `sockit bench` and `sockit serve --perf` say
//! to each other. Pure data, no I/O, so both sides and the tests share one definition.
//!
//! **Why a control exchange, not a second server mode per direction.** One server must
//! serve every test client at once, each asking for its own direction, so the choice has
//! to travel with each connection. A server mode per direction (`--source`, `--sink`)
//! would need one server per direction and could not serve `--bidir`. So a stream
//! connection to `serve --perf` opens with one line saying what it is for, and the server
//! answers one line:
//!
//! ```text
//! client: SOCKIT-PERF/1 up\n        (the client sends; the server counts and discards)
//! client: SOCKIT-PERF/1 down\n      (the server sends filler until the client's EOF)
//! client: SOCKIT-PERF/1 ping\n      (the server echoes: the latency probe)
//! server: SOCKIT-PERF/1 ok\n
//!         (down over TCP or TLS: SOCKIT-PERF/1 ok <token>\n, 16 hex digits naming the
//!         connection for a watch, below)
//! ...data...
//! up only, after the client's EOF:
//! server: SOCKIT-PERF/1 received <bytes>\n
//! down only: each byte the client sends (one per interval) asks the server to read
//! the sending socket's TCP_INFO then; after the client's EOF the filler stops and
//! server: \nSOCKIT-PERF/1 sent <JSON array of those readings>\n
//! ```
//!
//! The filler is letters only, so the newline that opens the `sent` line marks where
//! the filler ends. That line carries the sender's view of a `down` connection
//! (retransmits, congestion window, RTT), which only the server's socket has.
//!
//! **Watching the sender live.** The `sent` line comes at the end; for the interval
//! lines of a run, the client opens one more connection (per [`MAX_WATCHED`] down
//! connections) that names the down connections by their tokens. Each byte the client
//! sends on it (one per interval) makes the server read `TCP_INFO` of each named socket
//! at once and answer one line, the readings in the order named (`null` for a
//! connection that has ended):
//!
//! ```text
//! client: SOCKIT-PERF/1 watch <token> <token> ...\n
//! server: SOCKIT-PERF/1 ok\n
//! client: ?                          (one byte per interval)
//! server: SOCKIT-PERF/1 info <asks so far> <JSON array of readings>\n
//! ```
//!
//! The data connections carry nothing extra, so the data path's speed is untouched,
//! and a watch that is slow or gone costs the live lines their sender figures only.
//!
//! A connection that does not open with the greeting is treated as `--discard` treats it
//! (counted and dropped), so `bench --pattern stream` without throughput flags works
//! against `serve --perf` as it does against `serve --discard`.
//!
//! **Datagrams** (`--bitrate`) have no connection to carry a greeting, so every datagram
//! carries a [`DatagramHeader`]: the sender's flow id, a sequence number and the send
//! time, from which the server measures loss, duplicates, reordering and jitter. The
//! sender ends its flow with an [`DatagramKind::End`] datagram (repeated until answered)
//! and the server answers with a [`DatagramKind::Report`]: the header followed by the
//! receiver's figures as JSON.

/// The start of every control line.
pub const GREETING: &[u8] = b"SOCKIT-PERF/1 ";

/// The longest control line either side accepts (a guard against a peer that never
/// sends a newline); a watch line naming [`MAX_WATCHED`] tokens fits.
pub const MAX_CONTROL_LINE: usize = 2048;

/// The most down connections one watch names: what the server keeps per watch is
/// bounded, and a test with more down connections opens more watches.
pub const MAX_WATCHED: usize = 64;

/// What a stream connection to `serve --perf` is for, from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamRole {
    /// The client sends, the server counts (iperf3's default direction).
    Up,
    /// The server sends, the client counts (iperf3 `-R`).
    Down,
    /// The server echoes small messages back: the latency probe.
    Ping,
}

impl StreamRole {
    /// The word on the wire.
    pub fn word(self) -> &'static str {
        match self {
            StreamRole::Up => "up",
            StreamRole::Down => "down",
            StreamRole::Ping => "ping",
        }
    }

    /// The greeting line a client sends for this role.
    pub fn greeting(self) -> Vec<u8> {
        let mut line = GREETING.to_vec();
        line.extend_from_slice(self.word().as_bytes());
        line.push(b'\n');
        line
    }
}

/// The server's answer to a greeting.
pub const ACCEPTED: &[u8] = b"SOCKIT-PERF/1 ok\n";

/// The server's answer to a `down` greeting over TCP: [`ACCEPTED`] with the token that
/// names the connection in a watch line.
pub fn accepted_with_token(token: u64) -> String {
    format!("SOCKIT-PERF/1 ok {token:016x}\n")
}

/// What a server's answer to a greeting says: `None` if it is not an acceptance, else
/// the connection's token if it came with one.
pub fn parse_accepted(line: &[u8]) -> Option<Option<u64>> {
    let rest = line.strip_prefix(GREETING)?.strip_prefix(b"ok")?;
    let rest = rest.strip_suffix(b"\n").unwrap_or(rest);
    if rest.is_empty() {
        return Some(None);
    }
    let token = std::str::from_utf8(rest.strip_prefix(b" ")?).ok()?;
    u64::from_str_radix(token, 16).ok().map(Some)
}

/// The line that opens a watch of the down connections named by `tokens` (at most
/// [`MAX_WATCHED`]).
pub fn watch_line(tokens: &[u64]) -> Vec<u8> {
    let mut line = GREETING.to_vec();
    line.extend_from_slice(b"watch");
    for token in tokens.iter().take(MAX_WATCHED) {
        line.extend_from_slice(format!(" {token:016x}").as_bytes());
    }
    line.push(b'\n');
    line
}

/// The server's answer to the `asks`-th byte on a watch: the readings of the watched
/// sockets, in the order the watch line named them.
pub fn info_line(asks: u64, readings: &[Option<TcpInfo>]) -> Vec<u8> {
    let mut line = GREETING.to_vec();
    line.extend_from_slice(format!("info {asks} ").as_bytes());
    line.extend_from_slice(&serde_json::to_vec(readings).unwrap_or_else(|_| b"[]".to_vec()));
    line.push(b'\n');
    line
}

/// The ask count and readings of an `info` line, if it is one.
pub fn parse_info(line: &[u8]) -> Option<(u64, Vec<Option<TcpInfo>>)> {
    let rest = line.strip_prefix(GREETING)?.strip_prefix(b"info ")?;
    let space = memchr::memchr(b' ', rest)?;
    let asks = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
    let readings = serde_json::from_slice(rest[space + 1..].trim_ascii_end()).ok()?;
    Some((asks, readings))
}

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// Not a greeting: a plain sender, to be discarded.
    Plain,
    /// So far a prefix of the greeting: read more.
    Incomplete,
    /// A full greeting line of `len` bytes (with its newline) asking for `role`.
    Greeting { role: StreamRole, len: usize },
    /// A full watch line of `len` bytes naming down connections by their tokens.
    Watch { tokens: Vec<u64>, len: usize },
    /// A greeting with a role this server does not know.
    Unknown,
}

/// Classifies the first bytes a server read on a connection.
pub fn parse_opening(bytes: &[u8]) -> Opening {
    let common = bytes.len().min(GREETING.len());
    if bytes[..common] != GREETING[..common] {
        return Opening::Plain;
    }
    let Some(end) = memchr::memchr(b'\n', bytes) else {
        if bytes.len() >= MAX_CONTROL_LINE {
            return Opening::Unknown;
        }
        return Opening::Incomplete;
    };
    let word = &bytes[GREETING.len().min(end)..end];
    let word = word.strip_suffix(b"\r").unwrap_or(word);
    if let Some(names) = word.strip_prefix(b"watch") {
        return match parse_tokens(names) {
            Some(tokens) => Opening::Watch {
                tokens,
                len: end + 1,
            },
            None => Opening::Unknown,
        };
    }
    let role = match word {
        b"up" => StreamRole::Up,
        b"down" => StreamRole::Down,
        b"ping" => StreamRole::Ping,
        _ => return Opening::Unknown,
    };
    Opening::Greeting { role, len: end + 1 }
}

/// The tokens of a watch line (after the word `watch`): one to [`MAX_WATCHED`] of them,
/// each after a space.
fn parse_tokens(names: &[u8]) -> Option<Vec<u64>> {
    let text = std::str::from_utf8(names).ok()?;
    if !text.starts_with(' ') {
        return None;
    }
    let tokens: Vec<u64> = text
        .split_ascii_whitespace()
        .map(|t| u64::from_str_radix(t, 16).ok())
        .collect::<Option<_>>()?;
    (!tokens.is_empty() && tokens.len() <= MAX_WATCHED).then_some(tokens)
}

/// The line the server sends after an `up` connection's EOF.
pub fn received_line(bytes: u64) -> String {
    format!("SOCKIT-PERF/1 received {bytes}\n")
}

/// The byte count in a `received` line, if it is one.
pub fn parse_received(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(GREETING)?.strip_prefix(b"received ")?;
    let text = std::str::from_utf8(rest).ok()?;
    text.trim_end().parse().ok()
}

/// The most `TCP_INFO` readings a server keeps for one `down` connection (one per
/// interval; further asks are ignored).
pub const MAX_SENDER_READINGS: usize = 4096;

/// The line a server sends after a `down` connection's EOF: a newline (the end of the
/// filler), then its `TCP_INFO` readings.
pub fn sent_line(readings: &[TcpInfo]) -> Vec<u8> {
    let mut line = b"\n".to_vec();
    line.extend_from_slice(GREETING);
    line.extend_from_slice(b"sent ");
    line.extend_from_slice(&serde_json::to_vec(readings).unwrap_or_else(|_| b"[]".to_vec()));
    line.push(b'\n');
    line
}

/// The readings in what followed the filler of a `down` connection (from its newline
/// on), if it is a `sent` line.
pub fn parse_sent(tail: &[u8]) -> Option<Vec<TcpInfo>> {
    let line = tail.strip_prefix(b"\n")?;
    let rest = line.strip_prefix(GREETING)?.strip_prefix(b"sent ")?;
    let end = memchr::memchr(b'\n', rest)?;
    serde_json::from_slice(&rest[..end]).ok()
}

/// Marks a throughput datagram.
pub const DATAGRAM_MAGIC: [u8; 4] = *b"SKPU";

/// Bytes of [`DatagramHeader`] at the start of every throughput datagram: the smallest
/// `--size` a UDP stream accepts.
pub const DATAGRAM_HEADER: usize = 40;

/// What a throughput datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// Payload, counted by the receiver.
    Data,
    /// The sender is done; `seq` holds how many data datagrams it sent.
    End,
    /// The receiver's figures for the flow (JSON after the header).
    Report,
}

impl DatagramKind {
    fn byte(self) -> u8 {
        match self {
            DatagramKind::Data => 0,
            DatagramKind::End => 1,
            DatagramKind::Report => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<DatagramKind> {
        match byte {
            0 => Some(DatagramKind::Data),
            1 => Some(DatagramKind::End),
            2 => Some(DatagramKind::Report),
            _ => None,
        }
    }
}

/// The header of every throughput datagram (big-endian on the wire).
///
/// ```text
/// 0..4   "SKPU"            4      kind (0 data, 1 end, 2 report)   5..8 zero
/// 8..16  flow id           16..24 sequence number (end: datagrams sent)
/// 24..32 send time, ns since the flow's start (sender's clock)
/// 32..36 the sender's report interval in ms (0: none)             36..40 zero
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramHeader {
    /// What the datagram is.
    pub kind: DatagramKind,
    /// Chosen at random by the sender, so two senders behind one address (NAT) or a
    /// restarted sender on the same port are told apart.
    pub flow: u64,
    /// Data: 0, 1, 2, … in send order. End: the count of data datagrams sent.
    pub seq: u64,
    /// When the sender sent it, in ns since its flow started: jitter needs only
    /// differences, so the two clocks need not agree.
    pub sent_ns: u64,
    /// The sender's interval, so the receiver's per-interval figures line up with the
    /// sender's lines (intervals by send time).
    pub interval_ms: u32,
}

impl DatagramHeader {
    /// Writes the header into the first [`DATAGRAM_HEADER`] bytes of `out`.
    ///
    /// # Panics
    /// Never for a buffer of at least [`DATAGRAM_HEADER`] bytes; callers size their
    /// buffers from `--size`, which is checked to be at least that.
    pub fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&DATAGRAM_MAGIC);
        out[4] = self.kind.byte();
        out[5..8].fill(0);
        out[8..16].copy_from_slice(&self.flow.to_be_bytes());
        out[16..24].copy_from_slice(&self.seq.to_be_bytes());
        out[24..32].copy_from_slice(&self.sent_ns.to_be_bytes());
        out[32..36].copy_from_slice(&self.interval_ms.to_be_bytes());
        out[36..40].fill(0);
    }

    /// Reads a header; `None` for anything that is not a throughput datagram.
    pub fn read(datagram: &[u8]) -> Option<DatagramHeader> {
        let header = datagram.get(..DATAGRAM_HEADER)?;
        if header[..4] != DATAGRAM_MAGIC {
            return None;
        }
        let u64_at = |at: usize| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&header[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        let mut interval = [0; 4];
        interval.copy_from_slice(&header[32..36]);
        Some(DatagramHeader {
            kind: DatagramKind::from_byte(header[4])?,
            flow: u64_at(8),
            seq: u64_at(16),
            sent_ns: u64_at(24),
            interval_ms: u32::from_be_bytes(interval),
        })
    }
}

use super::tcp_info::TcpInfo;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_lines_round_trip_and_follow_the_filler() {
        let readings = [TcpInfo {
            total_retrans: 4,
            cwnd_bytes: 65_000,
            srtt_us: 30,
            ..TcpInfo::default()
        }];
        let line = sent_line(&readings);
        assert_eq!(parse_sent(&line), Some(readings.to_vec()));
        assert!(!crate::bench::filler(1000).contains(&b'\n'));
        assert_eq!(parse_sent(b"\nSOCKIT-PERF/1 received 5\n"), None);
    }

    #[test]
    fn openings_are_told_apart() {
        assert_eq!(parse_opening(b"abcdef"), Opening::Plain);
        assert_eq!(parse_opening(b"SOCKIT-P"), Opening::Incomplete);
        assert_eq!(
            parse_opening(b"SOCKIT-PERF/1 down\nxyz"),
            Opening::Greeting {
                role: StreamRole::Down,
                len: 19
            }
        );
        assert!(parse_opening(&StreamRole::Up.greeting()).is_greeting());
        assert_eq!(parse_opening(b"SOCKIT-PERF/1 sideways\n"), Opening::Unknown);
        assert_eq!(parse_opening(&[b'S'; 1]), Opening::Incomplete);
        let mut long = GREETING.to_vec();
        long.resize(MAX_CONTROL_LINE, b'x');
        assert_eq!(parse_opening(&long), Opening::Unknown);
    }

    #[test]
    fn watches_name_their_connections_and_info_lines_round_trip() {
        assert_eq!(
            parse_accepted(accepted_with_token(0xab).as_bytes()),
            Some(Some(0xab))
        );
        assert_eq!(parse_accepted(ACCEPTED), Some(None));
        assert_eq!(parse_accepted(b"SOCKIT-PERF/1 received 3\n"), None);
        let line = watch_line(&[1, u64::MAX]);
        assert_eq!(
            parse_opening(&line),
            Opening::Watch {
                tokens: vec![1, u64::MAX],
                len: line.len()
            }
        );
        assert_eq!(parse_opening(b"SOCKIT-PERF/1 watch\n"), Opening::Unknown);
        assert_eq!(parse_opening(b"SOCKIT-PERF/1 watch zz\n"), Opening::Unknown);
        let too_many = watch_line(&[7; MAX_WATCHED]);
        assert!(too_many.len() < MAX_CONTROL_LINE);
        let mut over = too_many[..too_many.len() - 1].to_vec();
        over.extend_from_slice(b" 8\n");
        assert_eq!(parse_opening(&over), Opening::Unknown);
        let readings = [
            Some(TcpInfo {
                cwnd_bytes: 10,
                ..TcpInfo::default()
            }),
            None,
        ];
        let info = info_line(3, &readings);
        assert_eq!(parse_info(&info), Some((3, readings.to_vec())));
        assert_eq!(parse_info(b"SOCKIT-PERF/1 info x []\n"), None);
    }

    impl Opening {
        fn is_greeting(&self) -> bool {
            matches!(self, Opening::Greeting { .. })
        }
    }

    #[test]
    fn received_lines_round_trip() {
        assert_eq!(parse_received(received_line(12345).as_bytes()), Some(12345));
        assert_eq!(parse_received(b"SOCKIT-PERF/1 ok\n"), None);
    }

    #[test]
    fn headers_round_trip_and_strangers_are_refused() {
        let header = DatagramHeader {
            kind: DatagramKind::End,
            flow: 0xdead_beef_0000_0001,
            seq: 77,
            sent_ns: 123_456_789,
            interval_ms: 1000,
        };
        let mut bytes = [0xffu8; DATAGRAM_HEADER + 3];
        header.write(&mut bytes);
        assert_eq!(DatagramHeader::read(&bytes), Some(header));
        assert_eq!(DatagramHeader::read(&bytes[..DATAGRAM_HEADER - 1]), None);
        assert_eq!(DatagramHeader::read(b"hello udp server"), None);
    }
}
