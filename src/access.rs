//! Access control: which client addresses a server (or relay) lets in.
//!
//! Pure policy, no I/O: built from `--allow CIDR` / `--deny CIDR`, asked about one
//! address at a time. [`gate`] applies it (and `--max-conns`) for `serve` and `relay`
//! alike: an accept loop closes a denied connection at once, a datagram loop drops a
//! denied sender's datagrams, and both count and log the refusal (rate-limited).
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

pub(crate) mod gate;
mod over_limit;

pub use over_limit::OverLimit;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::transport::PeerAddr;

/// The `--allow` / `--deny` rules of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Ranges let in; when non-empty, every other address is refused.
    allow: Vec<IpNet>,
    /// Ranges refused whatever `allow` says.
    deny: Vec<IpNet>,
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
        AccessPolicy { allow, deny }
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
