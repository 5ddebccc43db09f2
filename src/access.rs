//! Access control: which client addresses a server (or relay) lets in.
//!
//! Pure policy, no I/O: built from `--allow CIDR` / `--deny CIDR`, `--proxy-from CIDR`
//! and `--max-conns-per-source N`, asked about one address at a time. [`gate`] applies it (and `--max-conns`) for `serve` and `relay`
//! alike: an accept loop closes a denied connection at once, a datagram loop drops a
//! denied sender's datagrams, and both count and log the refusal (rate-limited).
//! [`admission`] is what every accept loop (the fast lane's, the task engine's, the
//! relay's, the proxy's) applies around `accept`: slot, gate, count, back-off;
//! [`acceptor`] is the async loop around it that `serve`'s task engine, `relay` and
//! `proxy` share.
//!
//! Precedence, in order:
//! 1. an address inside any `--deny` range is denied (deny always wins);
//! 2. otherwise, if at least one `--allow` range was given, the address must be inside one
//!    of them;
//! 3. otherwise (no `--allow` at all) it is allowed.
//!
//! IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`, what a dual-stack `[::]` listener reports
//! for IPv4 clients) are judged as the IPv4 address they carry, so `--deny 10.0.0.0/8`
//! holds on every listener. Unix-socket peers have no IP address and are never filtered:
//! protect a Unix socket with file permissions instead.

pub(crate) mod acceptor;
pub(crate) mod admission;
pub(crate) mod gate;
mod over_limit;

pub use over_limit::OverLimit;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::endpoint::PeerAddr;

/// The `--allow` / `--deny` rules of one server, the sources trusted to send PROXY
/// headers, and how many connections one source may hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Ranges let in; when non-empty, every other address is refused.
    allow: Vec<IpNet>,
    /// Ranges refused whatever `allow` says.
    deny: Vec<IpNet>,
    /// `--proxy-from`: the load balancers whose PROXY headers are believed. Empty: any
    /// source's header is (said once at start, as a warning).
    proxy_from: Vec<IpNet>,
    /// `--max-conns-per-source`: connections (or datagram relay sessions) one source may
    /// hold at once.
    per_source: PerSourceLimit,
}

/// How many connections (datagram relay: sessions) one source may hold at once, so no
/// single client address can take every slot. A source is an IPv4 address or an IPv6 /64
/// (what one host or one customer line usually gets); Unix-socket clients are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerSourceLimit {
    /// The default: [`PerSourceLimit::DEFAULT`] per source, loopback clients exempt (they
    /// are this host's own users, and benchmarks open thousands of connections from it).
    NonLoopback(usize),
    /// `--max-conns-per-source N`: N per source, loopback included.
    Everyone(usize),
    /// `--max-conns-per-source 0`: no limit per source.
    Off,
}

impl PerSourceLimit {
    /// Connections (or sessions) one non-loopback source may hold by default.
    pub const DEFAULT: usize = 256;

    /// The limit that applies to `ip`, if any.
    pub fn for_ip(&self, ip: IpAddr) -> Option<usize> {
        match *self {
            PerSourceLimit::NonLoopback(_) if ip.to_canonical().is_loopback() => None,
            PerSourceLimit::NonLoopback(n) | PerSourceLimit::Everyone(n) => Some(n),
            PerSourceLimit::Off => None,
        }
    }

    /// From `--max-conns-per-source`: absent is the default, 0 is no limit.
    pub fn from_flag(value: Option<usize>) -> PerSourceLimit {
        match value {
            None => PerSourceLimit::default(),
            Some(0) => PerSourceLimit::Off,
            Some(n) => PerSourceLimit::Everyone(n),
        }
    }
}

impl Default for PerSourceLimit {
    fn default() -> PerSourceLimit {
        PerSourceLimit::NonLoopback(PerSourceLimit::DEFAULT)
    }
}

/// The source a client address counts against: the IPv4 address itself, or the /64 an
/// IPv6 address lies in (IPv4-mapped addresses count as their IPv4 address).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// The answer for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the client in.
    Allowed,
    /// The address is inside this `--deny` range.
    Denied(IpNet),
    /// `--allow` ranges exist and the address is in none of them.
    NotAllowed,
}

impl AccessPolicy {
    /// A policy from the ranges given on the command line.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> AccessPolicy {
        AccessPolicy {
            allow,
            deny,
            ..AccessPolicy::default()
        }
    }

    /// The same rules, believing PROXY headers only from `ranges` (`--proxy-from`).
    pub fn with_proxy_from(self, ranges: Vec<IpNet>) -> AccessPolicy {
        AccessPolicy {
            proxy_from: ranges,
            ..self
        }
    }

    /// The same rules with this per-source limit (`--max-conns-per-source`).
    pub fn with_per_source(self, per_source: PerSourceLimit) -> AccessPolicy {
        AccessPolicy { per_source, ..self }
    }

    /// The per-source limit.
    pub fn per_source(&self) -> PerSourceLimit {
        self.per_source
    }

    /// The `--proxy-from` ranges (empty: every source's header is believed).
    pub fn proxy_from(&self) -> &[IpNet] {
        &self.proxy_from
    }

    /// Whether a PROXY header from `socket_peer` is believed: it is inside a
    /// `--proxy-from` range, or no range was given. Unix-socket peers are always
    /// believed (file permissions decide who may connect).
    pub fn trusts_proxy(&self, socket_peer: &PeerAddr) -> bool {
        match socket_peer.ip() {
            Some(ip) if !self.proxy_from.is_empty() => {
                let ip = ip.to_canonical();
                self.proxy_from.iter().any(|range| range.contains(&ip))
            }
            _ => true,
        }
    }

    /// Whether there are no rules at all (every client passes, nothing to check).
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Judges one IP address with the precedence in the module docs.
    pub fn check_ip(&self, ip: IpAddr) -> Verdict {
        let ip = ip.to_canonical();
        if let Some(range) = self.deny.iter().find(|range| range.contains(&ip)) {
            return Verdict::Denied(*range);
        }
        if self.allow.is_empty() || self.allow.iter().any(|range| range.contains(&ip)) {
            Verdict::Allowed
        } else {
            Verdict::NotAllowed
        }
    }

    /// Judges a peer; Unix peers have no IP address and are always allowed.
    pub fn check(&self, peer: &PeerAddr) -> Verdict {
        match peer.ip() {
            Some(ip) => self.check_ip(ip),
            None => Verdict::Allowed,
        }
    }
}

impl Verdict {
    /// Whether the client may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allowed => f.write_str("allowed"),
            Verdict::Denied(range) => write!(f, "matches --deny {range}"),
            Verdict::NotAllowed => f.write_str("not inside any --allow range"),
        }
    }
}

/// Parses a `--allow` / `--deny` value: a CIDR range (`10.0.0.0/8`, `fd00::/8`) or a single
/// address (`192.0.2.7`, `::1`), which means just that address.
///
/// # Errors
/// A message saying what forms are accepted (clap prints it after the flag name).
pub fn parse_range(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(range) = text.parse::<IpNet>() {
        return Ok(range.trunc());
    }
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    Err(format!(
        "{text:?} is not an IP address or CIDR range; write e.g. 10.0.0.0/8, 192.0.2.7 or ::1/128"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> AccessPolicy {
        let ranges = |list: &[&str]| -> Vec<IpNet> {
            list.iter()
                .map(|r| parse_range(r).unwrap_or_else(|e| panic!("{e}")))
                .collect()
        };
        AccessPolicy::new(ranges(allow), ranges(deny))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn no_rules_allow_everyone() {
        let open = AccessPolicy::default();
        assert!(open.is_open());
        assert_eq!(open.check_ip(ip("203.0.113.9")), Verdict::Allowed);
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = policy(&["127.0.0.0/8"], &["127.0.0.1"]);
        assert_eq!(
            p.check_ip(ip("127.0.0.1")),
            Verdict::Denied(parse_range("127.0.0.1/32").unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(p.check_ip(ip("127.0.0.2")), Verdict::Allowed);
    }

    #[test]
    fn any_allow_rule_closes_everything_else() {
        let p = policy(&["10.0.0.0/8", "::1"], &[]);
        assert_eq!(p.check_ip(ip("10.200.0.1")), Verdict::Allowed);
        assert_eq!(p.check_ip(ip("::1")), Verdict::Allowed);
        assert_eq!(p.check_ip(ip("127.0.0.1")), Verdict::NotAllowed);
        assert_eq!(p.check_ip(ip("::2")), Verdict::NotAllowed);
    }

    #[test]
    fn deny_only_lets_the_rest_in() {
        let p = policy(&[], &["192.0.2.0/24"]);
        assert!(!p.check_ip(ip("192.0.2.200")).is_allowed());
        assert!(p.check_ip(ip("198.51.100.1")).is_allowed());
    }

    #[test]
    fn ipv4_mapped_peers_are_judged_as_ipv4() {
        let p = policy(&[], &["127.0.0.0/8"]);
        assert!(!p.check_ip(ip("::ffff:127.0.0.1")).is_allowed());
        let p = policy(&["127.0.0.1"], &[]);
        assert!(p.check_ip(ip("::ffff:127.0.0.1")).is_allowed());
    }

    #[test]
    fn ipv4_and_ipv6_loopback_are_different_clients() {
        let p = policy(&["127.0.0.1/32"], &[]);
        assert!(p.check_ip(ip("127.0.0.1")).is_allowed());
        assert!(!p.check_ip(ip("::1")).is_allowed());
    }

    #[test]
    fn unix_peers_are_never_filtered() {
        let p = policy(&["10.0.0.0/8"], &["0.0.0.0/0", "::/0"]);
        let unix = PeerAddr::Unix(Box::new(
            socket2::SockAddr::unix("/tmp/x.sock").unwrap_or_else(|e| panic!("{e}")),
        ));
        assert_eq!(p.check(&unix), Verdict::Allowed);
    }

    #[test]
    fn ranges_parse_in_every_accepted_form() {
        assert_eq!(
            parse_range("10.1.2.3/8").map(|r| r.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            parse_range("192.0.2.7").map(|r| r.to_string()),
            Ok("192.0.2.7/32".into())
        );
        assert_eq!(
            parse_range("[::1]").map(|r| r.to_string()),
            Ok("::1/128".into())
        );
        assert!(parse_range("localhost").is_err_and(|e| e.contains("CIDR")));
        assert!(parse_range("10.0.0.0/33").is_err());
    }

    #[test]
    fn proxy_headers_are_believed_only_from_listed_sources() {
        let open = AccessPolicy::default();
        let peer = |text: &str| PeerAddr::Ip(text.parse().unwrap_or_else(|e| panic!("{e}")));
        assert!(open.trusts_proxy(&peer("203.0.113.9:1")));
        let p = AccessPolicy::default().with_proxy_from(vec![
            parse_range("10.0.0.0/8").unwrap_or_else(|e| panic!("{e}")),
        ]);
        assert!(p.trusts_proxy(&peer("10.1.2.3:1")));
        assert!(p.trusts_proxy(&peer("[::ffff:10.1.2.3]:1")));
        assert!(!p.trusts_proxy(&peer("127.0.0.1:1")));
    }

    #[test]
    fn sources_are_addresses_and_ipv6_slash_64s() {
        assert_eq!(source_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_of(ip("2001:db8:1:2:ffff::9")),
            source_of(ip("2001:db8:1:2::1"))
        );
    }

    #[test]
    fn the_default_per_source_limit_spares_loopback() {
        let default = PerSourceLimit::default();
        assert_eq!(default.for_ip(ip("127.0.0.1")), None);
        assert_eq!(default.for_ip(ip("::1")), None);
        assert_eq!(
            default.for_ip(ip("192.0.2.7")),
            Some(PerSourceLimit::DEFAULT)
        );
        assert_eq!(
            PerSourceLimit::from_flag(Some(5)).for_ip(ip("127.0.0.1")),
            Some(5)
        );
        assert_eq!(
            PerSourceLimit::from_flag(Some(0)).for_ip(ip("192.0.2.7")),
            None
        );
    }

    #[test]
    fn verdicts_explain_themselves() {
        let p = policy(&["10.0.0.0/8"], &["127.0.0.0/8"]);
        assert_eq!(
            p.check_ip(ip("127.0.0.1")).to_string(),
            "matches --deny 127.0.0.0/8"
        );
        assert_eq!(
            p.check_ip(ip("192.0.2.1")).to_string(),
            "not inside any --allow range"
        );
    }
}
