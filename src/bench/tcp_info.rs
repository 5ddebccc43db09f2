//! The kernel's view of a TCP connection (`getsockopt(TCP_INFO)`, Linux): congestion
//! window, smoothed RTT and its variance, retransmits, delivery rate, and the time spent
//! limited by the receiver's window or the sender's buffer, the figures `ss -ti` shows.
//!
//! The struct is laid out as `linux/tcp.h` has it. Kernels fill as much of it as they
//! know and say how much; fields past that length are reported as absent, never as 0.
//! libc's own `tcp_info` stops before the newer fields, hence the copy here.

use std::os::fd::{AsRawFd, BorrowedFd};

use serde::{Deserialize, Serialize};

/// `struct tcp_info` of `linux/tcp.h` up to `tcpi_snd_wnd` (Linux 5.4+).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RawTcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    app_limited: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
    busy_time: u64,
    rwnd_limited: u64,
    sndbuf_limited: u64,
    delivered: u32,
    delivered_ce: u32,
    bytes_sent: u64,
    bytes_retrans: u64,
    dsack_dups: u32,
    reord_seen: u32,
    rcv_ooopack: u32,
    snd_wnd: u32,
}

/// One reading of `TCP_INFO`, in plain units. Cumulative counters stay cumulative
/// here; the interval figures are differences of two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpInfo {
    /// Segments retransmitted over the connection's life.
    pub total_retrans: u64,
    /// Congestion window, in bytes (segments × MSS).
    pub cwnd_bytes: u64,
    /// Sender's maximum segment size, bytes.
    pub snd_mss: u64,
    /// Smoothed RTT, µs.
    pub srtt_us: u64,
    /// RTT variance, µs.
    pub rttvar_us: u64,
    /// Bytes the peer acknowledged (Linux 4.1+).
    pub bytes_acked: Option<u64>,
    /// Bytes received (Linux 4.1+).
    pub bytes_received: Option<u64>,
    /// The kernel's estimate of the delivery rate, bytes/s (Linux 4.9+).
    pub delivery_rate: Option<u64>,
    /// Time the sender was limited by the receiver's window, µs (Linux 4.10+).
    pub rwnd_limited_us: Option<u64>,
    /// Time the sender was limited by its own buffer, µs (Linux 4.10+).
    pub sndbuf_limited_us: Option<u64>,
}

/// Reads `TCP_INFO` of a TCP socket; `None` for a socket that is not TCP (Unix) or a
/// system that does not have it.
pub fn read(fd: BorrowedFd<'_>) -> Option<TcpInfo> {
    let mut raw = RawTcpInfo::default();
    let mut len = std::mem::size_of::<RawTcpInfo>() as libc::socklen_t;
    // SAFETY: `raw` is a plain-data struct of `len` bytes that the kernel fills up to
    // the length it writes back in `len`; the fd is borrowed, so it is open.
    let status = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut raw).cast(),
            &mut len,
        )
    };
    if status != 0 {
        return None;
    }
    let filled = len as usize;
    let has = |end_of_field: usize| filled >= end_of_field;
    let end_of = |offset: usize, size: usize| offset + size;
    use std::mem::offset_of;
    let reaches = |offset: usize| has(end_of(offset, 8));
    Some(TcpInfo {
        total_retrans: u64::from(raw.total_retrans),
        cwnd_bytes: u64::from(raw.snd_cwnd) * u64::from(raw.snd_mss),
        snd_mss: u64::from(raw.snd_mss),
        srtt_us: u64::from(raw.rtt),
        rttvar_us: u64::from(raw.rttvar),
        bytes_acked: reaches(offset_of!(RawTcpInfo, bytes_acked)).then_some(raw.bytes_acked),
        bytes_received: reaches(offset_of!(RawTcpInfo, bytes_received))
            .then_some(raw.bytes_received),
        delivery_rate: reaches(offset_of!(RawTcpInfo, delivery_rate)).then_some(raw.delivery_rate),
        rwnd_limited_us: reaches(offset_of!(RawTcpInfo, rwnd_limited)).then_some(raw.rwnd_limited),
        sndbuf_limited_us: reaches(offset_of!(RawTcpInfo, sndbuf_limited))
            .then_some(raw.sndbuf_limited),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn the_layout_matches_linux() {
        use std::mem::offset_of;
        assert_eq!(offset_of!(RawTcpInfo, rto), 8);
        assert_eq!(offset_of!(RawTcpInfo, pacing_rate), 104);
        assert_eq!(offset_of!(RawTcpInfo, delivery_rate), 160);
        assert_eq!(offset_of!(RawTcpInfo, sndbuf_limited), 184);
        assert_eq!(std::mem::size_of::<RawTcpInfo>(), 232);
    }

    #[test]
    fn a_loopback_connection_reports_what_it_carried() -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (mut server, _) = listener.accept()?;
        client.write_all(&[7u8; 10_000])?;
        let mut got = vec![0; 10_000];
        server.read_exact(&mut got)?;
        let info = read(server.as_fd());
        assert!(info.is_some_and(|i| i.bytes_received.is_none_or(|b| b == 10_000)));
        let info = read(client.as_fd());
        assert!(info.is_some_and(|i| i.snd_mss > 0 && i.cwnd_bytes > 0));
        let unix = std::os::unix::net::UnixStream::pair()?;
        assert!(read(unix.0.as_fd()).is_none());
        Ok(())
    }
}
