//! The access-control and connection-limit flags every listening command takes
//! (`serve`, `relay`, `proxy`), in one group below the commands that flatten it.

use clap::Args;
use ipnet::IpNet;

use crate::access::parse_range;
use crate::server::OverLimit;

/// Help heading for access control, limits and timeouts.
pub const LIMITS: &str = "Access and limits";

/// Access control and the connection limit, the same for every listening command
/// (`serve`, `relay`) so the flags, their help and their meaning never drift apart.
#[derive(Debug, Args)]
pub struct AccessArgs {
    /// Let in only clients inside this range (CIDR or single address; repeatable). Unix
    /// socket clients are not filtered.
    #[arg(long, help_heading = LIMITS, value_name = "CIDR", value_parser = parse_range)]
    pub allow: Vec<IpNet>,

    /// Turn away clients inside this range (repeatable); deny wins over --allow. A denied
    /// connection is closed at once, a denied datagram dropped; both are logged.
    #[arg(long, help_heading = LIMITS, value_name = "CIDR", value_parser = parse_range)]
    pub deny: Vec<IpNet>,

    /// Most connections served (or relayed) at once [default: no limit for serve, 4096 for a
    /// stream relay]. `serve --exec`: programs running at once (default 100 on streams, as
    /// ncat; 64 on datagrams); datagram relays cap clients with --max-sessions.
    #[arg(long, help_heading = LIMITS, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_conns: Option<u64>,

    /// What a client arriving over --max-conns gets: wait in the kernel backlog until a
    /// slot frees, or be accepted and closed at once (counted as refused) [default: wait].
    /// Needs a limit: --max-conns, or the default one of a stream relay or serve --exec.
    #[arg(long, help_heading = LIMITS, value_enum, value_name = "MODE")]
    pub max_conns_mode: Option<OverLimit>,

    /// Most connections one source (an IPv4 address, an IPv6 /64) holds at once; further
    /// ones are closed at once and counted as refused. Datagram relays: sessions per
    /// source. "0": no limit [default: 256, loopback clients exempt; a value given here
    /// applies to loopback too].
    #[arg(long, help_heading = LIMITS, value_name = "N")]
    pub max_conns_per_source: Option<u64>,

    /// Believe --proxy-protocol headers only from this range (repeatable): your load
    /// balancers. A connection from anywhere else is closed unread and logged.
    #[arg(long, help_heading = LIMITS, value_name = "CIDR", value_parser = parse_range,
          requires = "proxy_protocol")]
    pub proxy_from: Vec<IpNet>,
}
