//! Multicast on `udp://` endpoints whose address is a group (`udp://239.1.2.3:5000`,
//! `udp://[ff02::1234]:5000`): a server bound to a group joins it, a sender to a group
//! picks the interface, TTL and loopback it goes out with (`--multicast-if`,
//! `--multicast-ttl`, `--multicast-loop`).
//!
//! Several receivers may bind one group and port (`SO_REUSEADDR` on group addresses
//! only, where sharing is the point), and each gets its own copy of every datagram. On
//! a single machine, `--multicast-if 127.0.0.1` (or `lo`) keeps the traffic on loopback
//! with no change to the host's routes.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use socket2::{InterfaceIndexOrAddress, SockRef};

/// Which interface multicast goes out of and is received on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MulticastIf {
    /// A local IPv4 address (of the interface).
    Address(Ipv4Addr),
    /// An interface by its index (from its name).
    Index(u32),
}

/// Whether a sender's own multicast comes back to the sockets of its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MulticastLoop {
    /// Local receivers get it too (the kernel's default).
    #[default]
    On,
    /// Only other hosts get it.
    Off,
}

/// `--multicast-if`, `--multicast-ttl` and `--multicast-loop`, applied only to sockets
/// whose peer or bound address is a multicast group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Multicast {
    /// The interface (`None`: the kernel's choice by its routes).
    pub interface: Option<MulticastIf>,
    /// Hops a datagram may take (`None`: the kernel's 1, this network only).
    pub ttl: Option<u8>,
    /// Whether local receivers get it.
    pub looped: MulticastLoop,
}

impl MulticastIf {
    /// Parses `--multicast-if`: an IPv4 address this host has, or an interface name.
    ///
    /// # Errors
    /// A sentence naming the value when no interface has that address or name.
    pub fn parse(text: &str) -> Result<MulticastIf, String> {
        if let Ok(address) = text.parse::<Ipv4Addr>() {
            // A scratch socket binds the address only if an interface has it.
            let bound = std::net::UdpSocket::bind((address, 0));
            return match bound {
                Ok(_) => Ok(MulticastIf::Address(address)),
                Err(_) => Err(format!(
                    "--multicast-if {text}: no interface of this host has that address (see `ip addr`)"
                )),
            };
        }
        let index = std::ffi::CString::new(text)
            .ok()
            // SAFETY: if_nametoindex reads the NUL-terminated name and nothing else.
            .map_or(0, |name| unsafe { libc::if_nametoindex(name.as_ptr()) });
        if index == 0 {
            return Err(format!(
                "--multicast-if {text:?}: no such interface (give an interface name from \
                 `ip link` or one of its IPv4 addresses)"
            ));
        }
        Ok(MulticastIf::Index(index))
    }

    /// The interface's index for IPv6 (an address means "the kernel's choice").
    fn index(self) -> u32 {
        match self {
            MulticastIf::Index(index) => index,
            MulticastIf::Address(_) => 0,
        }
    }
}

impl Multicast {
    /// Sets the sending side on a socket that sends to `group`.
    ///
    /// # Errors
    /// The kernel's refusal.
    pub(crate) fn apply_sender(&self, socket: &SockRef<'_>, group: IpAddr) -> io::Result<()> {
        let looped = self.looped == MulticastLoop::On;
        match group {
            IpAddr::V4(_) => {
                match self.interface {
                    Some(MulticastIf::Address(address)) => socket.set_multicast_if_v4(&address)?,
                    Some(MulticastIf::Index(index)) => set_multicast_index_v4(socket, index)?,
                    None => {}
                }
                if let Some(ttl) = self.ttl {
                    socket.set_multicast_ttl_v4(u32::from(ttl))?;
                }
                socket.set_multicast_loop_v4(looped)
            }
            IpAddr::V6(_) => {
                if let Some(interface) = self.interface {
                    socket.set_multicast_if_v6(interface.index())?;
                }
                if let Some(hops) = self.ttl {
                    socket.set_multicast_hops_v6(u32::from(hops))?;
                }
                socket.set_multicast_loop_v6(looped)
            }
        }
    }

    /// Joins `group` on a socket bound to it.
    ///
    /// # Errors
    /// The kernel's refusal (no multicast route and no interface given, for one).
    pub(crate) fn join(&self, socket: &SockRef<'_>, group: IpAddr) -> io::Result<()> {
        match group {
            IpAddr::V4(group) => match self.interface {
                Some(MulticastIf::Address(address)) => socket.join_multicast_v4(&group, &address),
                Some(MulticastIf::Index(index)) => {
                    socket.join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(index))
                }
                None => socket.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED),
            },
            IpAddr::V6(group) => {
                socket.join_multicast_v6(&group, self.interface.map_or(0, MulticastIf::index))
            }
        }
    }
}

/// `IP_MULTICAST_IF` by interface index (`struct ip_mreqn`), which socket2 sets only by
/// address.
fn set_multicast_index_v4(socket: &SockRef<'_>, index: u32) -> io::Result<()> {
    let any = Ipv4Addr::UNSPECIFIED;
    rustix::net::sockopt::set_ip_multicast_if_with_ifindex(&**socket, &any, &any, index)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_named_or_addressed_and_unknown_ones_refused() {
        assert_eq!(
            MulticastIf::parse("127.0.0.1"),
            Ok(MulticastIf::Address(Ipv4Addr::LOCALHOST))
        );
        assert!(matches!(MulticastIf::parse("lo"), Ok(MulticastIf::Index(i)) if i > 0));
        for bad in ["nosuchif0", "192.0.2.77", ""] {
            let error = MulticastIf::parse(bad).err().unwrap_or_default();
            assert!(error.starts_with("--multicast-if"), "{bad}: {error}");
            assert!(!error.contains('\n'));
        }
    }
}
