//! Which destinations the proxy may connect to: `--allow-to CIDR[:PORTS]` and
//! `--deny-to CIDR[:PORTS]`. Pure: built from the flags, asked about one address and
//! port at a time (after a name is resolved, so a name cannot smuggle in an address the
//! rules refuse).
//!
//! Precedence, in order (the same shape as `--allow` / `--deny` for clients):
//! 1. a destination inside any `--deny-to` rule is denied;
//! 2. otherwise, if at least one `--allow-to` rule was given, it must be inside one;
//! 3. otherwise (no `--allow-to`): every address but this host's and private networks'
//!    ([`INTERNAL`]: loopback, RFC 1918, link-local, CGNAT, unique local IPv6, …), so a
//!    proxy opened by mistake is not a way into the network it sits in.
//!
//! IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The ranges denied by default (when no `--allow-to` is given): loopback, "this
/// network", RFC 1918 private, CGNAT shared space, link-local, multicast, reserved and
/// broadcast (224.0.0.0/3),
/// and their IPv6 counterparts (unique local, link-local, multicast).
pub const INTERNAL: [&str; 13] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/3",
    "::/127",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
    "64:ff9b:1::/48",
];

/// Ports a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// Every port (no `:PORTS` given).
    Any,
    /// These inclusive ranges (`80`, `8000-8010`, `80,443`).
    Ranges(Vec<(u16, u16)>),
}

impl Ports {
    /// Whether `port` is covered.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::Ranges(ranges) => ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&port)),
        }
    }
}

/// One `--allow-to` / `--deny-to` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationRule {
    /// The addresses.
    pub range: IpNet,
    /// The ports.
    pub ports: Ports,
}

impl DestinationRule {
    /// Whether the rule covers `ip` (canonical) and `port`.
    fn covers(&self, ip: IpAddr, port: u16) -> bool {
        self.range.contains(&ip) && self.ports.contains(port)
    }
}

impl fmt::Display for DestinationRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = match self.range {
            IpNet::V6(v6) if !matches!(self.ports, Ports::Any) => format!("[{v6}]"),
            other => other.to_string(),
        };
        match &self.ports {
            Ports::Any => f.write_str(&range),
            Ports::Ranges(ranges) => {
                let list: Vec<String> = ranges
                    .iter()
                    .map(|&(lo, hi)| {
                        if lo == hi {
                            lo.to_string()
                        } else {
                            format!("{lo}-{hi}")
                        }
                    })
                    .collect();
                write!(f, "{range}:{}", list.join(","))
            }
        }
    }
}

/// The verdict on one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationVerdict {
    /// Connect.
    Allowed,
    /// Inside this `--deny-to` rule.
    Denied(DestinationRule),
    /// `--allow-to` rules exist and it is in none of them.
    NotAllowed,
    /// No `--allow-to` rules, and it is a loopback or private address.
    Internal(IpNet),
}

impl DestinationVerdict {
    /// Whether the proxy may connect.
    pub fn is_allowed(&self) -> bool {
        matches!(self, DestinationVerdict::Allowed)
    }
}

impl fmt::Display for DestinationVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestinationVerdict::Allowed => f.write_str("allowed"),
            DestinationVerdict::Denied(rule) => write!(f, "matches --deny-to {rule}"),
            DestinationVerdict::NotAllowed => f.write_str("not inside any --allow-to rule"),
            DestinationVerdict::Internal(range) => write!(
                f,
                "inside {range}, a loopback or private range denied by default (allow it with --allow-to)"
            ),
        }
    }
}

/// The destination rules of one proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DestinationPolicy {
    /// `--allow-to`: when non-empty, only these.
    allow: Vec<DestinationRule>,
    /// `--deny-to`: never these.
    deny: Vec<DestinationRule>,
}

impl DestinationPolicy {
    /// A policy from the flags.
    pub fn new(allow: Vec<DestinationRule>, deny: Vec<DestinationRule>) -> DestinationPolicy {
        DestinationPolicy { allow, deny }
    }

    /// Judges `ip:port` with the precedence in the module docs.
    pub fn check(&self, ip: IpAddr, port: u16) -> DestinationVerdict {
        let ip = ip.to_canonical();
        if let Some(rule) = self.deny.iter().find(|rule| rule.covers(ip, port)) {
            return DestinationVerdict::Denied(rule.clone());
        }
        if !self.allow.is_empty() {
            return if self.allow.iter().any(|rule| rule.covers(ip, port)) {
                DestinationVerdict::Allowed
            } else {
                DestinationVerdict::NotAllowed
            };
        }
        match internal_range(ip) {
            Some(range) => DestinationVerdict::Internal(range),
            None => DestinationVerdict::Allowed,
        }
    }

    /// What the rules let through, in one sentence for the start of a run.
    pub fn describe(&self) -> String {
        let list = |rules: &[DestinationRule]| {
            rules
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = if self.allow.is_empty() {
            "destinations: any public address; loopback and private ranges are DENIED by default \
             (127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 169.254.0.0/16, fc00::/7, …); \
             allow some with --allow-to CIDR[:PORTS]"
                .to_string()
        } else {
            format!("destinations: only --allow-to {}", list(&self.allow))
        };
        if !self.deny.is_empty() {
            text.push_str(&format!("; never --deny-to {}", list(&self.deny)));
        }
        text
    }
}

/// The default-denied range `ip` is in, if any.
fn internal_range(ip: IpAddr) -> Option<IpNet> {
    INTERNAL
        .iter()
        .filter_map(|text| text.parse::<IpNet>().ok())
        .find(|range| range.contains(&ip))
}

/// Parses a `--allow-to` / `--deny-to` value: `CIDR[:PORTS]` or `ADDRESS[:PORTS]`, an IPv6
/// range with ports in brackets (`[fd00::/8]:443`); PORTS is a list of ports and ranges
/// (`22`, `80,443`, `8000-8010`).
///
/// # Errors
/// A message saying what forms are accepted (clap prints it after the flag name).
pub fn parse_rule(text: &str) -> Result<DestinationRule, String> {
    let text = text.trim();
    let wrong = || {
        format!(
            "{text:?} is not a destination rule; write CIDR[:PORTS], e.g. 127.0.0.0/8, \
             10.0.0.5:22, 192.168.0.0/16:80,443, [::1]:8000-8010"
        )
    };
    let (range, ports) = split_rule(text).ok_or_else(wrong)?;
    let range = crate::access::parse_range(range).map_err(|_| wrong())?;
    let ports = match ports {
        None => Ports::Any,
        Some(list) => parse_ports(list).ok_or_else(wrong)?,
    };
    Ok(DestinationRule { range, ports })
}

/// Splits `text` into its range and its ports, if any.
fn split_rule(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (range, after) = rest.split_once(']')?;
        return match after {
            "" => Some((range, None)),
            _ => Some((range, Some(after.strip_prefix(':')?))),
        };
    }
    let colons = text.matches(':').count();
    if colons == 1 {
        let (range, ports) = text.split_once(':')?;
        return Some((range, Some(ports)));
    }
    Some((text, None))
}

/// `80,443,8000-8010` → port ranges.
fn parse_ports(list: &str) -> Option<Ports> {
    let mut ranges = Vec::new();
    for item in list.split(',') {
        let (lo, hi) = match item.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
            None => {
                let port = item.trim().parse().ok()?;
                (port, port)
            }
        };
        if lo > hi {
            return None;
        }
        ranges.push((lo, hi));
    }
    Some(Ports::Ranges(ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> DestinationRule {
        parse_rule(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn rules_parse_in_every_form() {
        assert_eq!(rule("127.0.0.0/8").to_string(), "127.0.0.0/8");
        assert_eq!(rule("10.0.0.5:22").to_string(), "10.0.0.5/32:22");
        assert_eq!(
            rule("192.168.0.0/16:80,443").to_string(),
            "192.168.0.0/16:80,443"
        );
        assert_eq!(rule("[::1]:8000-8010").to_string(), "[::1/128]:8000-8010");
        assert_eq!(rule("fd00::/8").to_string(), "fd00::/8");
        assert_eq!(rule("::1").to_string(), "::1/128");
        for bad in [
            "localhost",
            "10.0.0.0/8:",
            "10.0.0.1:99999",
            "1.2.3.4:9-1",
            "[::1",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn internal_destinations_are_denied_by_default() {
        let policy = DestinationPolicy::default();
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            assert!(
                !policy.check(ip(internal), 80).is_allowed(),
                "{internal} allowed by default"
            );
        }
        assert!(policy.check(ip("93.184.216.34"), 443).is_allowed());
        assert!(policy.check(ip("2001:db8::1"), 443).is_allowed());
        assert!(
            policy
                .check(ip("127.0.0.1"), 1)
                .to_string()
                .contains("--allow-to"),
            "the refusal says how to allow it"
        );
    }

    #[test]
    fn allow_to_is_exclusive_and_deny_to_wins() {
        let policy = DestinationPolicy::new(
            vec![rule("127.0.0.0/8"), rule("10.0.0.0/8:22")],
            vec![rule("127.0.0.1:25")],
        );
        assert!(policy.check(ip("127.0.0.1"), 80).is_allowed());
        assert!(policy.check(ip("10.0.0.5"), 22).is_allowed());
        assert_eq!(
            policy.check(ip("10.0.0.5"), 80),
            DestinationVerdict::NotAllowed
        );
        assert_eq!(
            policy.check(ip("93.184.216.34"), 80),
            DestinationVerdict::NotAllowed
        );
        assert!(matches!(
            policy.check(ip("127.0.0.1"), 25),
            DestinationVerdict::Denied(_)
        ));
        assert!(policy.describe().contains("only --allow-to 127.0.0.0/8"));
    }
}
