//! `sockit probe HOST PORTS`: which TCP ports of one host accept connections (`nc -z`),
//! or with `-u` which UDP ports answer (`nc -zu`).
//!
//! Each TCP port gets a full TCP connect, closed at once: **open** (accepted), **closed**
//! (refused: the host answered with a reset), **filtered** (no answer within the timeout:
//! a firewall dropped it, or the host is down), **unreachable** (the network said so).
//!
//! Each UDP port gets one datagram, [`UDP_PROBE_PAYLOAD`], from a connected socket, and
//! the words nmap uses: **open** (a datagram came back), **closed** (ICMP port
//! unreachable, which a connected socket reports as connection refused) or
//! **open|filtered** (silence for the timeout: a server that ignored the probe, or a
//! firewall that dropped it; UDP cannot tell them apart).
//! Attempts run concurrently with a fixed number in flight, and results come out in port
//! order as soon as each prefix is known. Only the one host the user names is contacted.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::endpoint::{Host, HostPort};
use crate::error::{Error, Result};

/// What one port answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    /// A connection was accepted.
    Open,
    /// The host refused (RST): nothing listens there.
    Closed,
    /// No answer within the timeout.
    Filtered,
    /// UDP: no answer within the timeout, and no ICMP error either.
    #[serde(rename = "open|filtered")]
    OpenFiltered,
    /// The network reported the host or network unreachable, or another error.
    Unreachable,
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::Filtered => "filtered",
            PortState::OpenFiltered => "open|filtered",
            PortState::Unreachable => "unreachable",
        })
    }
}

/// The result for one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortReport {
    /// The port.
    pub port: u16,
    /// What it answered.
    pub state: PortState,
    /// The address that answered open, or the last one tried.
    pub addr: Option<SocketAddr>,
}

/// The datagram a UDP probe sends: short, printable and recognisable in a server's log.
/// Many UDP services ignore what they do not understand, so silence means
/// open|filtered, never closed.
pub const UDP_PROBE_PAYLOAD: &[u8] = b"sockit-probe\n";

/// Which transport the ports are probed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProbeProtocol {
    /// A TCP connect per port.
    #[default]
    Tcp,
    /// A datagram per port (`-u`).
    Udp,
}

/// How a probe runs.
#[derive(Debug, Clone, Copy)]
pub struct ProbeOptions {
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// How long one attempt may take before the port counts as filtered (UDP:
    /// open|filtered).
    pub timeout: Duration,
    /// TCP or UDP.
    pub protocol: ProbeProtocol,
}

impl Default for ProbeOptions {
    fn default() -> ProbeOptions {
        ProbeOptions {
            concurrency: 64,
            timeout: Duration::from_secs(1),
            protocol: ProbeProtocol::Tcp,
        }
    }
}

/// Parses `22,80,8000-8010` into ports, in the order given, without duplicates.
///
/// # Errors
/// [`Error::Usage`] naming the bad item: not a number, out of range, a range backwards.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>> {
    let fail = |item: &str, why: &str| {
        Error::Usage(format!(
            "invalid port list {spec:?}: {item:?} {why}; write ports and ranges like 22,80,8000-8010"
        ))
    };
    let port = |text: &str, item: &str| -> Result<u16> {
        match text.trim().parse::<u16>() {
            Ok(0) => Err(fail(item, "includes port 0, which cannot be connected to")),
            Ok(port) => Ok(port),
            Err(_) => Err(fail(item, "is not a port (1-65535)")),
        }
    };
    let mut seen = vec![false; usize::from(u16::MAX) + 1];
    let mut ports = Vec::new();
    for item in spec.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(fail(item, "is empty"));
        }
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (port(a, item)?, port(b, item)?),
            None => {
                let p = port(item, item)?;
                (p, p)
            }
        };
        if first > last {
            return Err(fail(item, "is a range that runs backwards"));
        }
        for p in first..=last {
            if !std::mem::replace(&mut seen[usize::from(p)], true) {
                ports.push(p);
            }
        }
    }
    Ok(ports)
}

/// Probes every port of `host`, calling `on_result` for each in port-list order.
///
/// The host is resolved once; each port is tried on each address in turn until one is
/// open (so `localhost` finds a server on either 127.0.0.1 or ::1).
///
/// # Errors
/// [`Error::HostNotFound`] when the host does not resolve.
pub async fn probe(
    host: &Host,
    ports: &[u16],
    options: ProbeOptions,
    mut on_result: impl FnMut(&PortReport),
) -> Result<Vec<PortReport>> {
    let addrs = HostPort {
        host: host.clone(),
        port: 0,
    }
    .resolve()
    .await?;
    let attempts = futures_util::stream::iter(ports.iter().copied())
        .map(|port| probe_port(&addrs, port, options))
        .buffered(options.concurrency.max(1));
    tokio::pin!(attempts);
    let mut reports = Vec::with_capacity(ports.len());
    while let Some(report) = attempts.next().await {
        on_result(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// One port: the first address that accepts makes it open; otherwise the most telling
/// failure (closed beats filtered beats unreachable).
async fn probe_port(addrs: &[SocketAddr], port: u16, options: ProbeOptions) -> PortReport {
    let mut best = PortReport {
        port,
        state: PortState::Unreachable,
        addr: None,
    };
    for ip in addrs {
        let addr = SocketAddr::new(ip.ip(), port);
        let state = match options.protocol {
            ProbeProtocol::Tcp => tcp_state(addr, options.timeout).await,
            ProbeProtocol::Udp => udp_state(addr, options.timeout).await,
        };
        if rank(state) > rank(best.state) || best.addr.is_none() {
            best = PortReport {
                port,
                state,
                addr: Some(addr),
            };
        }
        if state == PortState::Open {
            break;
        }
    }
    best
}

/// One TCP connect, closed at once.
async fn tcp_state(addr: SocketAddr, timeout: Duration) -> PortState {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => PortState::Open,
        Ok(Err(e)) => failed_state(&e),
        Err(_) => PortState::Filtered,
    }
}

/// One probe datagram from a connected UDP socket, then a wait for any reply. The
/// kernel hands an ICMP port unreachable to a connected socket as `ECONNREFUSED`, on
/// the `recv` (or a later `send`).
async fn udp_state(addr: SocketAddr, timeout: Duration) -> PortState {
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let exchange = async {
        let socket = UdpSocket::bind(local).await?;
        socket.connect(addr).await?;
        socket.send(UDP_PROBE_PAYLOAD).await?;
        // Only whether a reply came matters; a longer one is cut, which is fine.
        let mut reply = [0u8; 1];
        socket.recv(&mut reply).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(_)) => PortState::Open,
        Ok(Err(e)) => failed_state(&e),
        Err(_) => PortState::OpenFiltered,
    }
}

/// How informative a state is, to pick one across several addresses.
fn rank(state: PortState) -> u8 {
    match state {
        PortState::Open => 3,
        PortState::Closed => 2,
        PortState::Filtered | PortState::OpenFiltered => 1,
        PortState::Unreachable => 0,
    }
}

/// A failed connect as a port state.
fn failed_state(e: &io::Error) -> PortState {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => PortState::Closed,
        io::ErrorKind::TimedOut => PortState::Filtered,
        _ => PortState::Unreachable,
    }
}

/// Counts per state, for the closing line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSummary {
    /// Ports that accepted.
    pub open: usize,
    /// Ports that refused.
    pub closed: usize,
    /// Ports that did not answer.
    pub filtered: usize,
    /// UDP ports that neither answered nor were refused.
    pub open_filtered: usize,
    /// Ports the network could not reach.
    pub unreachable: usize,
}

impl ProbeSummary {
    /// Whether the probe found something that may answer: an open port, or for UDP an
    /// open|filtered one (no refusal came back), as `nc -zu` counts it.
    pub fn any_open(&self) -> bool {
        self.open > 0 || self.open_filtered > 0
    }

    /// Tallies a list of reports.
    pub fn of(reports: &[PortReport]) -> ProbeSummary {
        let mut summary = ProbeSummary::default();
        for report in reports {
            match report.state {
                PortState::Open => summary.open += 1,
                PortState::Closed => summary.closed += 1,
                PortState::Filtered => summary.filtered += 1,
                PortState::OpenFiltered => summary.open_filtered += 1,
                PortState::Unreachable => summary.unreachable += 1,
            }
        }
        summary
    }
}

impl fmt::Display for ProbeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.open_filtered > 0 {
            write!(
                f,
                "{} open, {} closed, {} open|filtered",
                self.open, self.closed, self.open_filtered
            )?;
        } else {
            write!(
                f,
                "{} open, {} closed, {} filtered",
                self.open, self.closed, self.filtered
            )?;
        }
        if self.unreachable > 0 {
            write!(f, ", {} unreachable", self.unreachable)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_lists_and_ranges_in_order_without_duplicates() -> Result<()> {
        assert_eq!(
            parse_ports("22,80,8000-8003")?,
            [22, 80, 8000, 8001, 8002, 8003]
        );
        assert_eq!(parse_ports(" 80 , 79-81 ")?, [80, 79, 81]);
        assert_eq!(parse_ports("1-65535")?.len(), 65535);
        Ok(())
    }

    #[test]
    fn bad_port_lists_say_which_item() {
        for (spec, needle) in [
            ("80,", "is empty"),
            ("http", "is not a port"),
            ("90-80", "backwards"),
            ("0", "port 0"),
            ("1-70000", "is not a port"),
        ] {
            match parse_ports(spec) {
                Ok(ports) => panic!("{spec:?} parsed as {ports:?}"),
                Err(e) => assert!(e.to_string().contains(needle), "{spec}: {e}"),
            }
        }
    }

    #[test]
    fn summary_counts_states() {
        let report = |state| PortReport {
            port: 1,
            state,
            addr: None,
        };
        let summary = ProbeSummary::of(&[
            report(PortState::Open),
            report(PortState::Closed),
            report(PortState::Closed),
        ]);
        assert_eq!(summary.to_string(), "1 open, 2 closed, 0 filtered");
    }
}
