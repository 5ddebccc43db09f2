//! `--proxy` and where its credentials come from, one definition for every command
//! that connects (`send`, `connect`, `relay`'s target, `bench`).

use std::path::PathBuf;

use clap::Args;

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::transport::proxy_client::{AUTH_ENV, Credentials, ProxyChain, ProxyHop};

/// Help heading for the proxy flags.
const PROXY: &str = "Proxy (SOCKS, HTTP CONNECT)";

/// The proxy flags as typed.
#[derive(Debug, Args)]
pub struct ProxyClientArgs {
    /// Connect through this proxy: socks5://, socks5h:// (the proxy resolves the name),
    /// socks4://, socks4a:// or http:// (CONNECT), as `SCHEME://[USER:PASSWORD@]HOST[:PORT]`
    /// [default port: 1080 SOCKS, 3128 HTTP]. Repeat to chain proxies, first to last.
    /// tls:// runs end to end through it; udp:// needs one socks5 proxy (UDP ASSOCIATE).
    #[arg(long, help_heading = PROXY, value_name = "URL")]
    pub proxy: Vec<String>,

    /// Read USER:PASSWORD for every --proxy URL without credentials from the first line
    /// of FILE, so the password stays out of `ps` [default: the SOCKIT_PROXY_AUTH
    /// environment variable, if set].
    #[arg(long, help_heading = PROXY, value_name = "FILE", requires = "proxy")]
    pub proxy_auth_file: Option<PathBuf>,
}

impl ProxyClientArgs {
    /// The chain to connect through for `target`, with credentials filled in from the
    /// auth file or the environment.
    ///
    /// # Errors
    /// [`Error::Usage`] for a malformed URL, an unreadable auth file, or a target a
    /// proxy cannot reach (a Unix socket).
    pub fn chain(&self, target: &Endpoint) -> Result<ProxyChain> {
        if self.proxy.is_empty() {
            return Ok(ProxyChain::default());
        }
        if target.host_port().is_none() {
            return Err(Error::Usage(format!(
                "{target} is a local socket; --proxy applies to tcp://, tls:// and udp:// targets only"
            )));
        }
        let shared = self.shared_credentials()?;
        let hops = self
            .proxy
            .iter()
            .map(|url| {
                let mut hop = ProxyHop::parse(url)?;
                if hop.credentials.is_none() {
                    hop.credentials.clone_from(&shared);
                }
                Ok(hop)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ProxyChain::new(hops))
    }

    /// As [`ProxyClientArgs::chain`], for commands that take stream targets only through a
    /// proxy (`relay`, `bench`).
    ///
    /// # Errors
    /// As [`ProxyClientArgs::chain`], and [`Error::Usage`] for a datagram target.
    pub fn stream_chain(&self, target: &Endpoint) -> Result<ProxyChain> {
        if !self.proxy.is_empty() && target.delivery() == crate::endpoint::Delivery::Datagram {
            return Err(Error::Usage(format!(
                "{target} is a datagram endpoint; here --proxy applies to tcp:// and tls:// targets (send and connect take udp:// through one socks5 proxy)"
            )));
        }
        self.chain(target)
    }

    /// `USER:PASSWORD` from `--proxy-auth-file`, else from the environment.
    fn shared_credentials(&self) -> Result<Option<Credentials>> {
        if let Some(path) = &self.proxy_auth_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::Usage(format!(
                    "cannot read --proxy-auth-file {}: {e}",
                    path.display()
                ))
            })?;
            let source = format!("--proxy-auth-file {}", path.display());
            return Credentials::parse(&text, &source).map(Some);
        }
        match std::env::var(AUTH_ENV) {
            Ok(text) if !text.is_empty() => Credentials::parse(&text, AUTH_ENV).map(Some),
            _ => Ok(None),
        }
    }
}
