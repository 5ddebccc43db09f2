//! `--pcap FILE`: what sockit sent and received, as a pcap file that tcpdump, tshark and
//! Wireshark open.
//!
//! sockit sees bytes, not packets, so the packets are made up: each chunk read or
//! written becomes one IPv4 or IPv6 packet (link type `LINKTYPE_RAW`) between the real
//! local and peer addresses, with a TCP header (flags PSH|ACK; sequence and
//! acknowledgement numbers that count the bytes of each direction from 1, so a stream
//! reassembles in order) or a UDP header. Chunks over 65,000 bytes are cut into several
//! packets. Checksums are left at 0 (Wireshark shows them as unverified). The timestamps
//! are when sockit read or wrote the bytes, to the microsecond. For TLS the payload is
//! the plaintext, inside the TLS session.
//!
//! The file format is the classic pcap (a 24-byte header, then a 16-byte header per
//! packet), written here by hand: the `pcap-file` crate would write the same two headers
//! and leave the packet synthesis, the part that matters, to us anyway.
//!
//! Every packet is written through before the next (no buffering lost if sockit is
//! stopped). A write failure stops the capture with one warning; the traffic goes on.

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::direction::Direction;

/// `LINKTYPE_RAW`: each packet starts with its IPv4 or IPv6 header.
const LINKTYPE_RAW: u32 = 101;
/// The most payload put in one synthetic packet (an IP packet holds at most 65,535 bytes).
const MAX_PAYLOAD: usize = 65_000;
/// The snapshot length announced: whole packets.
const SNAPLEN: u32 = 262_144;

/// Which transport header the packets get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP header with sequence numbers.
    Tcp,
    /// A UDP header.
    Udp,
}

/// One conversation's two ends, as the packets name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// sockit's own address.
    pub local: SocketAddr,
    /// The other side.
    pub peer: SocketAddr,
    /// TCP or UDP.
    pub transport: Transport,
}

/// An open pcap file, shared by every connection of the process (packets of concurrent
/// connections interleave whole). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pcap {
    file: Arc<Mutex<Option<File>>>,
}

impl Pcap {
    /// Creates (truncates) `path` and writes the file header, so a bad path fails the
    /// command before it connects or listens.
    ///
    /// # Errors
    /// A one-line reason naming the file.
    pub fn create(path: &Path) -> Result<Pcap, String> {
        let fail = |e: io::Error| format!("cannot write the pcap file {}: {e}", path.display());
        let mut file = File::create(path).map_err(fail)?;
        file.write_all(&file_header()).map_err(fail)?;
        Ok(Pcap {
            file: Arc::new(Mutex::new(Some(file))),
        })
    }

    /// Records `data`, which went `direction` on `flow`. `seq` is how many bytes had gone
    /// that way before it and `ack` how many the other way (TCP; ignored for UDP).
    pub fn record(&self, flow: &Flow, direction: Direction, seq: u64, ack: u64, data: &[u8]) {
        let (from, to) = match direction {
            Direction::Sent => (flow.local, flow.peer),
            Direction::Received => (flow.peer, flow.local),
        };
        let at = SystemTime::now();
        let mut packets = Vec::new();
        let mut offset = 0u64;
        // An empty datagram is still a packet; an empty stream chunk is none.
        let pieces: Vec<&[u8]> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(MAX_PAYLOAD).collect()
        };
        for piece in pieces {
            let segment = Segment {
                from,
                to,
                transport: flow.transport,
                seq: seq + offset,
                ack,
                payload: piece,
            };
            packets.extend_from_slice(&record_header(at, segment.len()));
            segment.write(&mut packets);
            offset += piece.len() as u64;
        }
        self.append(&packets);
    }

    /// Records one datagram that went `direction` between sockit at `local` and `peer`.
    pub fn datagram(&self, local: SocketAddr, peer: SocketAddr, direction: Direction, data: &[u8]) {
        let flow = Flow {
            local,
            peer,
            transport: Transport::Udp,
        };
        self.record(&flow, direction, 0, 0, data);
    }

    /// Writes whole records under the lock; a failure closes the capture.
    fn append(&self, bytes: &[u8]) {
        // A poisoned lock only means another writer panicked mid-write; keep capturing.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = file.as_mut()
            && let Err(e) = open.write_all(bytes)
        {
            tracing::warn!("the pcap capture stopped: {e}; the traffic goes on");
            *file = None;
        }
    }
}

/// The 24-byte pcap file header (little-endian, microsecond timestamps, version 2.4).
fn file_header() -> [u8; 24] {
    let mut header = [0u8; 24];
    header[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    header[4..6].copy_from_slice(&2u16.to_le_bytes());
    header[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay 0.
    header[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    header[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
    header
}

/// The 16-byte header of one packet of `len` bytes captured `at`.
fn record_header(at: SystemTime, len: usize) -> [u8; 16] {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let mut header = [0u8; 16];
    let seconds = u32::try_from(since.as_secs()).unwrap_or(u32::MAX);
    header[0..4].copy_from_slice(&seconds.to_le_bytes());
    header[4..8].copy_from_slice(&since.subsec_micros().to_le_bytes());
    header[8..12].copy_from_slice(&len.to_le_bytes());
    header[12..16].copy_from_slice(&len.to_le_bytes());
    header
}

/// One synthetic packet: IP header, TCP or UDP header, payload.
struct Segment<'a> {
    from: SocketAddr,
    to: SocketAddr,
    transport: Transport,
    seq: u64,
    ack: u64,
    payload: &'a [u8],
}

impl Segment<'_> {
    fn transport_len(&self) -> usize {
        match self.transport {
            Transport::Tcp => 20,
            Transport::Udp => 8,
        }
    }

    fn ip_len(&self) -> usize {
        match self.from.ip() {
            IpAddr::V4(_) => 20,
            IpAddr::V6(_) => 40,
        }
    }

    /// The whole packet's length.
    fn len(&self) -> usize {
        self.ip_len() + self.transport_len() + self.payload.len()
    }

    fn write(&self, out: &mut Vec<u8>) {
        let protocol: u8 = match self.transport {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        };
        let after_ip = u16::try_from(self.transport_len() + self.payload.len()).unwrap_or(u16::MAX);
        match (self.from.ip(), self.to.ip()) {
            (IpAddr::V4(from), IpAddr::V4(to)) => {
                let total = after_ip.saturating_add(20);
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[6] = 0x40; // don't fragment
                ip[8] = 64; // TTL
                ip[9] = protocol;
                ip[12..16].copy_from_slice(&from.octets());
                ip[16..20].copy_from_slice(&to.octets());
                let checksum = ipv4_checksum(&ip);
                ip[10..12].copy_from_slice(&checksum.to_be_bytes());
                out.extend_from_slice(&ip);
            }
            (from, to) => {
                let mut ip = [0u8; 40];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&after_ip.to_be_bytes());
                ip[6] = protocol;
                ip[7] = 64; // hop limit
                ip[8..24].copy_from_slice(&as_v6(from).octets());
                ip[24..40].copy_from_slice(&as_v6(to).octets());
                out.extend_from_slice(&ip);
            }
        }
        match self.transport {
            Transport::Tcp => {
                let mut tcp = [0u8; 20];
                tcp[0..2].copy_from_slice(&self.from.port().to_be_bytes());
                tcp[2..4].copy_from_slice(&self.to.port().to_be_bytes());
                // Sequence numbers count from 1, as after a SYN; they wrap as TCP's do.
                tcp[4..8].copy_from_slice(&((self.seq + 1) as u32).to_be_bytes());
                tcp[8..12].copy_from_slice(&((self.ack + 1) as u32).to_be_bytes());
                tcp[12] = 5 << 4; // header length: 5 words
                tcp[13] = 0x18; // PSH | ACK
                tcp[14..16].copy_from_slice(&u16::MAX.to_be_bytes()); // window
                out.extend_from_slice(&tcp);
            }
            Transport::Udp => {
                let mut udp = [0u8; 8];
                udp[0..2].copy_from_slice(&self.from.port().to_be_bytes());
                udp[2..4].copy_from_slice(&self.to.port().to_be_bytes());
                udp[4..6].copy_from_slice(&after_ip.to_be_bytes());
                out.extend_from_slice(&udp);
            }
        }
        out.extend_from_slice(self.payload);
    }
}

/// An address as IPv6 (a v4 address in a v6 packet only if the two ends differ in family,
/// which a real socket never does).
fn as_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The IPv4 header checksum (RFC 791), over a header whose checksum field is 0.
fn ipv4_checksum(header: &[u8; 20]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(transport: Transport) -> Flow {
        Flow {
            local: "127.0.0.1:5000".parse().unwrap_or_else(|e| panic!("{e}")),
            peer: "127.0.0.2:80".parse().unwrap_or_else(|e| panic!("{e}")),
            transport,
        }
    }

    #[test]
    fn an_ipv4_header_checksums_to_zero() {
        let mut packet = Vec::new();
        Segment {
            from: flow(Transport::Udp).local,
            to: flow(Transport::Udp).peer,
            transport: Transport::Udp,
            seq: 0,
            ack: 0,
            payload: b"hi",
        }
        .write(&mut packet);
        let mut header = [0u8; 20];
        header.copy_from_slice(&packet[..20]);
        assert_eq!(ipv4_checksum(&header), 0, "a valid header sums to 0xffff");
        assert_eq!(packet.len(), 20 + 8 + 2);
        assert_eq!(&packet[28..], b"hi");
        assert_eq!(
            u16::from_be_bytes([packet[24], packet[25]]),
            10,
            "UDP length"
        );
    }

    #[test]
    fn a_big_chunk_is_cut_into_packets_with_running_sequence_numbers() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t.pcap");
        let pcap = Pcap::create(&path).map_err(io::Error::other)?;
        let data = vec![7u8; MAX_PAYLOAD + 10];
        pcap.record(&flow(Transport::Tcp), Direction::Sent, 100, 3, &data);
        let bytes = std::fs::read(&path)?;
        assert_eq!(&bytes[..4], &0xa1b2_c3d4u32.to_le_bytes());
        let first_len = u32::from_le_bytes([bytes[32], bytes[33], bytes[34], bytes[35]]) as usize;
        assert_eq!(first_len, 40 + MAX_PAYLOAD);
        let second = 24 + 16 + first_len;
        let seq_at = |packet: usize| {
            let tcp = packet + 16 + 20;
            u32::from_be_bytes([
                bytes[tcp + 4],
                bytes[tcp + 5],
                bytes[tcp + 6],
                bytes[tcp + 7],
            ])
        };
        assert_eq!(seq_at(24), 101);
        assert_eq!(seq_at(second), 101 + MAX_PAYLOAD as u32);
        Ok(())
    }
}
