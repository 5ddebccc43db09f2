//! `--capture DIR` on datagram endpoints (`udp://`, `unixgram:`): each peer's datagrams
//! in files that keep where one datagram ends and the next begins.
//!
//! A peer gets three files, named like a stream connection's:
//!
//! * `conn<N>_<peer>.sent` and `conn<N>_<peer>.received`: the datagrams' bytes, one after
//!   the other, exactly as a stream capture holds a connection's bytes (so `cat` and
//!   `cmp` work the same on both);
//! * `conn<N>_<peer>.datagrams`: the index, one line per datagram in the order they
//!   passed: its time (UTC, to the microsecond), its direction, where it starts in its
//!   direction's file and its length:
//!
//! ```text
//! 2026-12-06T18:42:45.123456Z received 0 16
//! 2026-12-06T18:42:45.123510Z sent 0 4
//! 2026-12-06T18:42:45.200001Z received 16 0
//! ```
//!
//! An empty datagram is a line with length 0, so it is not lost. `N` counts peers in the
//! order they were first seen. Every datagram is written through to the files before the
//! next one (no buffering to lose when the process is stopped).
//!
//! A server can hear from any number of senders, so the files of at most
//! [`OPEN_PEERS`] peers are open at a time: the peer heard from longest ago is closed to
//! make room, and when it comes back it is a new peer with a new `N` and new files. A
//! failure to write (a full disk) stops the datagram capture with one warning; the
//! traffic goes on.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::direction::Direction;

/// How many peers' files are open at once, at most (three descriptors each).
pub const OPEN_PEERS: usize = 64;

/// The open files of the datagram peers seen lately, and the next connection number.
#[derive(Debug)]
pub(crate) struct DatagramFiles {
    /// The next peer's `N`.
    next_conn: u64,
    /// A counter that orders uses, to find the peer heard from longest ago.
    clock: u64,
    /// By peer name.
    peers: HashMap<String, PeerFiles>,
    /// Set after a write failed: nothing more is captured.
    stopped: bool,
}

impl Default for DatagramFiles {
    fn default() -> DatagramFiles {
        DatagramFiles {
            next_conn: 1,
            clock: 0,
            peers: HashMap::new(),
            stopped: false,
        }
    }
}

/// One peer's three files and how far each data file has grown.
#[derive(Debug)]
struct PeerFiles {
    sent: File,
    received: File,
    index: File,
    sent_len: u64,
    received_len: u64,
    last_used: u64,
}

impl DatagramFiles {
    /// Appends one datagram that went `direction` with `peer` to that peer's files
    /// (opening them, and closing the stalest peer's, as needed).
    pub(crate) fn record(
        &mut self,
        dir: &Path,
        direction: Direction,
        peer: &str,
        data: &[u8],
        stem: impl Fn(u64) -> String,
    ) {
        if self.stopped {
            return;
        }
        self.clock += 1;
        let clock = self.clock;
        if let Err(e) = self.write(dir, direction, peer, data, clock, stem) {
            tracing::warn!(
                "datagram capture in {} stopped: {e}; the traffic goes on",
                dir.display()
            );
            self.stopped = true;
            self.peers.clear();
        }
    }

    fn write(
        &mut self,
        dir: &Path,
        direction: Direction,
        peer: &str,
        data: &[u8],
        clock: u64,
        stem: impl Fn(u64) -> String,
    ) -> io::Result<()> {
        if !self.peers.contains_key(peer) {
            self.make_room();
            let files = PeerFiles::create(dir, &stem(self.next_conn))?;
            self.next_conn += 1;
            self.peers.insert(peer.to_string(), files);
        }
        let Some(files) = self.peers.get_mut(peer) else {
            return Ok(());
        };
        files.last_used = clock;
        files.append(direction, data)
    }

    /// Closes the files of the peer heard from longest ago when [`OPEN_PEERS`] are open.
    fn make_room(&mut self) {
        if self.peers.len() < OPEN_PEERS {
            return;
        }
        let stalest = self
            .peers
            .iter()
            .min_by_key(|(_, files)| files.last_used)
            .map(|(peer, _)| peer.clone());
        if let Some(peer) = stalest {
            self.peers.remove(&peer);
        }
    }
}

impl PeerFiles {
    /// Creates `DIR/<stem>.sent`, `.received` and `.datagrams`.
    fn create(dir: &Path, stem: &str) -> io::Result<PeerFiles> {
        let path = |suffix: &str| -> PathBuf { dir.join(format!("{stem}.{suffix}")) };
        Ok(PeerFiles {
            sent: File::create(path("sent"))?,
            received: File::create(path("received"))?,
            index: File::create(path("datagrams"))?,
            sent_len: 0,
            received_len: 0,
            last_used: 0,
        })
    }

    /// Writes the bytes to their direction's file, then the index line.
    fn append(&mut self, direction: Direction, data: &[u8]) -> io::Result<()> {
        let (file, len, word) = match direction {
            Direction::Sent => (&mut self.sent, &mut self.sent_len, "sent"),
            Direction::Received => (&mut self.received, &mut self.received_len, "received"),
        };
        file.write_all(data)?;
        let line = index_line(SystemTime::now(), word, *len, data.len());
        *len += data.len() as u64;
        self.index.write_all(line.as_bytes())
    }
}

/// One line of the index: `<time> <sent|received> <offset> <length>`.
fn index_line(at: SystemTime, direction: &str, offset: u64, len: usize) -> String {
    format!(
        "{} {direction} {offset} {len}\n",
        humantime::format_rfc3339_micros(at)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stem(conn: u64) -> String {
        format!("conn{conn}_peer")
    }

    #[test]
    fn the_index_line_is_time_direction_offset_length() {
        let at = humantime::parse_rfc3339("2026-12-06T18:42:45.123456Z")
            .unwrap_or(SystemTime::UNIX_EPOCH);
        assert_eq!(
            index_line(at, "received", 16, 4),
            "2026-12-06T18:42:45.123456Z received 16 4\n"
        );
    }

    #[test]
    fn datagrams_keep_their_boundaries_and_empty_ones_count() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut files = DatagramFiles::default();
        for (direction, data) in [
            (Direction::Received, &b"ping"[..]),
            (Direction::Sent, b"pong!"),
            (Direction::Received, b""),
            (Direction::Received, b"again"),
        ] {
            files.record(dir.path(), direction, "a", data, stem);
        }
        assert_eq!(
            std::fs::read(dir.path().join("conn1_peer.received"))?,
            b"pingagain"
        );
        assert_eq!(std::fs::read(dir.path().join("conn1_peer.sent"))?, b"pong!");
        let index = std::fs::read_to_string(dir.path().join("conn1_peer.datagrams"))?;
        let fields: Vec<String> = index
            .lines()
            .map(|l| l.split_once(' ').map_or("", |(_, rest)| rest).to_string())
            .collect();
        assert_eq!(
            fields,
            ["received 0 4", "sent 0 5", "received 4 0", "received 4 5"]
        );
        Ok(())
    }

    #[test]
    fn at_most_open_peers_are_open_and_the_stalest_goes() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut files = DatagramFiles::default();
        let stem = |conn: u64| format!("conn{conn}");
        for peer in 0..OPEN_PEERS {
            files.record(
                dir.path(),
                Direction::Received,
                &peer.to_string(),
                b"x",
                stem,
            );
        }
        // Peer 0 is heard again, so peer 1 is now the stalest.
        files.record(dir.path(), Direction::Received, "0", b"y", stem);
        files.record(dir.path(), Direction::Received, "new", b"z", stem);
        assert_eq!(files.peers.len(), OPEN_PEERS);
        assert!(files.peers.contains_key("0") && !files.peers.contains_key("1"));
        // Peer 1 coming back is a new peer, with its own files.
        files.record(dir.path(), Direction::Received, "1", b"w", stem);
        let next = OPEN_PEERS as u64 + 2;
        assert_eq!(
            std::fs::read(dir.path().join(format!("conn{next}.received")))?,
            b"w"
        );
        assert_eq!(std::fs::read(dir.path().join("conn2.received"))?, b"x");
        Ok(())
    }
}
