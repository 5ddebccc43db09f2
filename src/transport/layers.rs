//! What an accepted connection is wrapped in before it is served or relayed: the PROXY
//! protocol header (`--proxy-protocol`), the TLS handshake (`tls://`) and the hex tap
//! (`--hex`), in that order.
//!
//! `serve` and `relay` share this, so both get the same timeouts, the same error wording
//! and the same dump. It runs in the connection's own task: a client that stalls its
//! header or handshake holds up nobody.
//!
//! The PROXY header is a separate step ([`Layers::client_address`]) rather than part of
//! [`Layers::wrap_accepted`], because the address it reveals is what access rules judge,
//! and a denied client should be closed before any TLS work is spent on it.

use std::sync::Arc;
use std::time::Duration;

use super::Stream;
use super::hexdump::{Capture, HexDump, Tap};
use super::pcap::Pcap;
use super::proxy::{self, ProxyProtocol};
use super::tls::{HANDSHAKE_TIMEOUT, ServerTls};
use crate::endpoint::PeerAddr;
use crate::error::Result;

/// The layers every accepted connection goes through, decided once at start.
#[derive(Debug, Clone)]
pub struct Layers {
    /// `--proxy-protocol`: a PROXY v1/v2 header precedes everything else.
    pub proxy: ProxyProtocol,
    /// The server side of TLS, for `tls://` listeners.
    pub tls: Option<Arc<ServerTls>>,
    /// `--hex`: dump what passes, in both directions.
    pub hex: Option<HexDump>,
    /// `serve --capture DIR`: each connection's bytes in files (`relay` and `listen`
    /// capture with options of their own, after their own wrapping).
    pub capture: Option<Capture>,
    /// `--pcap FILE`: what passes, as synthetic TCP packets.
    pub pcap: Option<Pcap>,
    /// Longest a client may take over its TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for Layers {
    fn default() -> Layers {
        Layers {
            proxy: ProxyProtocol::Off,
            tls: None,
            hex: None,
            capture: None,
            pcap: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

impl Layers {
    /// Whether no layer is configured (no PROXY header, TLS, dump or capture), so an
    /// accepted stream is served as it is.
    pub fn is_passthrough(&self) -> bool {
        self.tls.is_none()
            && self.hex.is_none()
            && self.capture.is_none()
            && self.pcap.is_none()
            && !self.proxy.is_on()
    }

    /// Who the client really is: with `--proxy-protocol`, the address the load balancer's
    /// header names (the header is consumed); otherwise `socket_peer` itself.
    ///
    /// `Ok(None)`: the connection closed before sending anything (a balancer's TCP health
    /// check), so there is nothing to serve.
    ///
    /// # Errors
    /// [`crate::Error::ProxyHeader`] for a missing or malformed header,
    /// [`crate::Error::ProxyHeaderLate`] when it is late; the caller logs it and closes.
    pub async fn client_address(
        &self,
        stream: &mut Stream,
        socket_peer: &PeerAddr,
    ) -> Result<Option<PeerAddr>> {
        match self.proxy {
            ProxyProtocol::Off => Ok(Some(socket_peer.clone())),
            ProxyProtocol::Required { timeout } => {
                proxy::read_header(stream, socket_peer, timeout).await
            }
        }
    }

    /// [`Layers::client_address`], with the destination the PROXY header names (where the
    /// client connected to at the balancer), for a relay's `--send-proxy` to pass on.
    /// Without `--proxy-protocol`, or for a header naming no addresses, no destination.
    ///
    /// # Errors
    /// As [`Layers::client_address`].
    pub async fn client_addresses(
        &self,
        stream: &mut Stream,
        socket_peer: &PeerAddr,
    ) -> Result<Option<proxy::HeaderAddresses>> {
        match self.proxy {
            ProxyProtocol::Off => Ok(Some(proxy::HeaderAddresses {
                peer: socket_peer.clone(),
                destination: None,
            })),
            ProxyProtocol::Required { timeout } => {
                proxy::read_header_addresses(stream, socket_peer, timeout).await
            }
        }
    }

    /// Runs the TLS handshake if configured, then wraps the stream in the hex tap (a
    /// pass-through without `--hex` or `--capture`).
    ///
    /// # Errors
    /// [`crate::Error::Tls`] or [`crate::Error::Timeout`] when the handshake fails, and
    /// [`crate::Error::Io`] when the capture files cannot be created; the caller logs it
    /// and drops the connection.
    pub async fn wrap_accepted(
        &self,
        stream: Stream,
        peer: &PeerAddr,
        conn: u64,
    ) -> Result<Tap<Stream>> {
        let flow = self.pcap.as_ref().and_then(|_| stream.pcap_flow());
        let stream = match &self.tls {
            Some(tls) => tls.accept(stream, peer, self.handshake_timeout).await?,
            None => stream,
        };
        if self.hex.is_none() && self.pcap.is_none() && self.capture.is_none() {
            // Nothing watches the bytes, so there is no label to put in words.
            return Ok(Tap::maybe(stream, None, String::new()));
        }
        let label = format!("{peer} (conn {conn})");
        Tap::maybe(stream, self.hex.as_ref(), label.clone())
            .with_pcap(self.pcap.as_ref(), flow, &label)
            .with_capture(self.capture.as_ref(), conn, &peer.to_string())
            .map_err(|source| crate::Error::Io {
                doing: format!("creating the capture files of {peer}"),
                source,
            })
    }
}
