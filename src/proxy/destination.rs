//! A destination's addresses, and which of them the `--allow-to` / `--deny-to` rules let
//! a client reach; the same for CONNECT ([`super::tunnel`]) and UDP ASSOCIATE
//! ([`super::udp`]).

use std::net::SocketAddr;

use super::outcome::{Refusal, Unreachable};
use super::socks::Destination;

/// The addresses a destination stands for.
pub(crate) async fn resolve(destination: &Destination) -> Result<Vec<SocketAddr>, Unreachable> {
    match destination {
        Destination::Addr(addr) => Ok(vec![*addr]),
        Destination::Name(name, port) => {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), *port))
                .await
                .map_err(|e| Unreachable::NoSuchHost(e.to_string()))?
                .collect();
            if found.is_empty() {
                return Err(Unreachable::NoSuchHost("no addresses".into()));
            }
            Ok(found)
        }
    }
}

/// The candidates the rules allow; when none, the refusal for the first (naming the
/// address a name resolved to).
pub(crate) fn allowed_addresses(
    candidates: &[SocketAddr],
    options: &super::ProxyOptions,
    destination: &Destination,
) -> Result<Vec<SocketAddr>, Refusal> {
    let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
        candidates.iter().partition(|addr| {
            options
                .destinations
                .check(addr.ip(), addr.port())
                .is_allowed()
        });
    match refused.first() {
        Some(first) if allowed.is_empty() => {
            let verdict = options.destinations.check(first.ip(), first.port());
            let named = match destination {
                Destination::Addr(_) => destination.to_string(),
                Destination::Name(..) => format!("{destination} ({})", first.ip()),
            };
            Err(Refusal::Denied(named, verdict))
        }
        _ => Ok(allowed),
    }
}
