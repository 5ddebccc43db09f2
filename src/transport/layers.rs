//! What an accepted connection is wrapped in before it is served or relayed: the TLS
//! handshake (`tls://`) and the hex tap (`--hex`).
//!
//! `serve` and `relay` share this, so both get the same handshake timeout, the same
//! error wording and the same dump. It runs in the connection's own task: a client that
//! stalls its handshake holds up nobody.

use std::sync::Arc;
use std::time::Duration;

use super::tls::{HANDSHAKE_TIMEOUT, ServerTls};
use super::{PeerAddr, Stream};
use crate::error::Result;
use crate::obs::hexdump::{HexDump, Tap};

/// The layers every accepted connection goes through, decided once at start.
#[derive(Debug, Clone)]
pub struct Layers {
    /// The server side of TLS, for `tls://` listeners.
    pub tls: Option<Arc<ServerTls>>,
    /// `--hex`: dump what passes, in both directions.
    pub hex: Option<HexDump>,
    /// Longest a client may take over its TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for Layers {
    fn default() -> Layers {
        Layers {
            tls: None,
            hex: None,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

impl Layers {
    /// Whether no layer is configured, so an accepted stream is served as it is.
    pub fn is_passthrough(&self) -> bool {
        self.tls.is_none() && self.hex.is_none()
    }

    /// Runs the TLS handshake if configured, then wraps the stream in the hex tap (a
    /// pass-through without `--hex`).
    ///
    /// # Errors
    /// [`crate::Error::Tls`] or [`crate::Error::Timeout`] when the handshake fails; the
    /// caller logs it and drops the connection.
    pub async fn wrap_accepted(
        &self,
        stream: Stream,
        peer: &PeerAddr,
        conn: u64,
    ) -> Result<Tap<Stream>> {
        let stream = match &self.tls {
            Some(tls) => tls.accept(stream, peer, self.handshake_timeout).await?,
            None => stream,
        };
        Ok(Tap::maybe(
            stream,
            self.hex.as_ref(),
            format!("{peer} (conn {conn})"),
        ))
    }
}
