//! Dialling TCP directly: each resolved address of a host in turn, from the configured
//! source. Both a plain connect ([`super::connect`]) and the first hop to a proxy
//! ([`super::proxy_client`]) start here.

use tokio::net::TcpStream;

use super::errors::connect_error;
use super::sockopt::{SocketOptions, tcp_client};
use crate::endpoint::{Endpoint, HostPort};
use crate::error::{Error, Result};

/// Tries every address of `hp`; returns the first connection or the most telling error.
pub(super) async fn connect_tcp(
    endpoint: &Endpoint,
    hp: &HostPort,
    options: &SocketOptions,
) -> Result<TcpStream> {
    let mut last_error = None;
    let addrs = hp.resolve().await?;
    if !addrs.iter().any(|addr| options.reaches(*addr)) {
        return Err(options.no_address_of_source_family(endpoint));
    }
    for addr in addrs.into_iter().filter(|addr| options.reaches(*addr)) {
        match tcp_client(addr, options)?.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                tracing::debug!(%addr, "connect failed: {e}");
                last_error = Some(connect_error(e, endpoint));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Error::HostNotFound {
        host: hp.host_text(),
        reason: "no addresses".into(),
    }))
}
