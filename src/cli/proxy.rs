//! `sockit proxy` on the command line: arguments → [`ProxyOptions`], then the run, the
//! metrics and the summary, as `relay` does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::access_args::AccessArgs;
use super::values::parse_duration;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::metrics_http;
use crate::obs::{EventLog, LogFormat};
use crate::proxy::rules::{DestinationRule, parse_rule};
use crate::proxy::{CredentialStore, DestinationPolicy, Proxy, ProxyOptions};
use crate::relay::{CopyMode, RelayOptions};
use crate::transport::{ListenOptions, ProxyProtocol, activation};

/// Examples shown after `sockit proxy --help`.
pub const PROXY_EXAMPLES: &str = "\
Examples:
  sockit proxy tcp://127.0.0.1:1080                      SOCKS5/4 and HTTP CONNECT, public destinations
  sockit proxy tcp://0.0.0.0:1080 --credentials users.txt --allow 10.0.0.0/8
  sockit proxy tcp://127.0.0.1:1080 --allow-to 127.0.0.0/8 --allow-to 10.0.0.0/8:22,443
  curl --socks5-hostname 127.0.0.1:1080 https://example.org/
  curl -x http://user:pass@127.0.0.1:1080 https://example.org/

Loopback and private destinations (127.0.0.0/8, 10/8, 172.16/12, 192.168/16, fc00::/7,
link-local, …) are denied unless --allow-to names them; with any --allow-to, only those
destinations are allowed. --deny-to wins over both.";

/// `sockit proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Where to accept clients (tcp://HOST:PORT); SOCKS5, SOCKS4/4a and HTTP CONNECT
    /// share the port, told apart by their first byte.
    #[arg(default_value = "tcp://127.0.0.1:1080", value_name = "LISTEN_ENDPOINT")]
    pub listen: String,

    /// Allow tunnels to this destination range, optionally only to these ports
    /// (`CIDR[:PORTS]`, e.g. 127.0.0.0/8, 10.0.0.5:22, `[::1]:8000-8010`; repeatable). With
    /// any --allow-to, only those destinations are allowed.
    #[arg(long, value_name = "CIDR[:PORTS]", value_parser = parse_rule)]
    pub allow_to: Vec<DestinationRule>,

    /// Never allow tunnels to this destination range (`CIDR[:PORTS]`; repeatable); wins
    /// over --allow-to.
    #[arg(long, value_name = "CIDR[:PORTS]", value_parser = parse_rule)]
    pub deny_to: Vec<DestinationRule>,

    /// Require a user name and password from every client: a file of user:password
    /// lines. SOCKS5 clients must then use username/password auth, HTTP clients
    /// Proxy-Authorization: Basic; SOCKS4 (no password) is refused.
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,

    /// Who may connect and how many at once.
    #[command(flatten)]
    pub access: AccessArgs,

    /// Give up connecting to a destination (resolving included) after this long.
    #[arg(short = 't', long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Close a client that has not finished its handshake (greeting, auth, request or
    /// CONNECT head) within this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Most bytes of an HTTP CONNECT request head (request line and headers); a longer
    /// head gets 431 and is closed.
    #[arg(long, value_name = "BYTES", default_value_t = crate::proxy::http::MAX_HEAD as u64,
          value_parser = clap::value_parser!(u64).range(64..=1024 * 1024))]
    pub max_header_bytes: u64,

    /// Close a tunnel after this long with no traffic either way ("0": never).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Bytes held per direction per tunnel, as `relay --buffer`.
    #[arg(long, value_name = "BYTES", default_value_t = RelayOptions::DEFAULT_BUFFER as u64,
          value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    pub buffer: u64,

    /// How tunnel bytes are copied, as `relay --copy`.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = CopyMode::Buffered)]
    pub copy: CopyMode,

    /// How long Ctrl-C / SIGTERM lets open tunnels finish.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,

    /// listen(2) backlog.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub backlog: u32,

    /// Serve Prometheus metrics over HTTP at ADDR, path /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Every connection starts with a HAProxy PROXY protocol header: logs, events and
    /// --allow/--deny then use the real client address.
    #[arg(long)]
    pub proxy_protocol: bool,
}

/// A validated `proxy` command.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where to accept clients.
    pub listen: Endpoint,
    /// How to proxy.
    pub options: ProxyOptions,
    /// `--metrics`: where to serve Prometheus metrics.
    pub metrics: Option<Endpoint>,
}

impl ProxyArgs {
    /// Parses the endpoint, reads the credentials file and settles every default.
    ///
    /// # Errors
    /// [`Error::Endpoint`] or [`Error::Usage`] (bad values, an unreadable credentials file).
    pub fn into_config(self) -> Result<ProxyConfig> {
        let listen: Endpoint = self.listen.parse()?;
        if self.timeout.is_zero() || self.handshake_timeout.is_zero() {
            return Err(Error::Usage(
                "--timeout and --handshake-timeout must be more than 0".into(),
            ));
        }
        let credentials = self
            .credentials
            .as_deref()
            .map(CredentialStore::load)
            .transpose()?;
        let too_large = |flag: &str| Error::Usage(format!("{flag} is too large"));
        let max_conns = self
            .access
            .max_conns()?
            .unwrap_or(RelayOptions::DEFAULT_MAX_CONNS);
        let options = ProxyOptions {
            destinations: DestinationPolicy::new(self.allow_to, self.deny_to),
            credentials,
            connect_timeout: self.timeout,
            handshake_timeout: self.handshake_timeout,
            max_head: usize::try_from(self.max_header_bytes)
                .map_err(|_| too_large("--max-header-bytes"))?,
            buffer_size: usize::try_from(self.buffer).map_err(|_| too_large("--buffer"))?,
            copy: self.copy,
            access: self.access.policy()?,
            max_conns: Some(max_conns),
            over_limit: self.access.over_limit(Some(max_conns))?,
            proxy_protocol: if self.proxy_protocol {
                ProxyProtocol::required()
            } else {
                ProxyProtocol::Off
            },
            idle_timeout: (!self.idle_timeout.is_zero()).then_some(self.idle_timeout),
            grace: self.grace,
            listen: ListenOptions {
                backlog: self.backlog,
                ..ListenOptions::default()
            },
        };
        let metrics = self
            .metrics
            .as_deref()
            .map(|text| text.parse::<Endpoint>().map_err(Error::from))
            .transpose()?;
        Ok(ProxyConfig {
            listen,
            options,
            metrics,
        })
    }
}

/// `sockit proxy`: bind, serve until a signal, drain, print the summary on stderr.
///
/// # Errors
/// Bind and metrics errors; a running proxy's per-client failures are logged, not returned.
pub async fn run(config: ProxyConfig, log: LogFormat, events: &EventLog) -> Result<()> {
    let proxy = Proxy::bind(&config.listen, config.options.clone()).await?;
    tracing::info!("proxying on {}", proxy.local_endpoint());
    let _metrics = match &config.metrics {
        Some(at) => {
            let stats = proxy.stats();
            let render = move || stats.write_metrics();
            Some(metrics_http::expose(at, Arc::new(render)).await?)
        }
        None => None,
    };
    let shutdown = super::signal_shutdown()?;
    activation::notify_ready();
    // On a worker of the runtime, as the relay's loop: the accept loop then shares a
    // thread with the tunnels it hands out, so a new client costs no wake-up of a second
    // thread.
    let summary = tokio::spawn(proxy.run(events.clone(), shutdown))
        .await
        .map_err(|e| Error::Io {
            doing: "proxying".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    events.flush();
    super::print_summary(&summary, log);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::cli::args::Command;
    use clap::Parser;

    fn config(args: &[&str]) -> Result<ProxyConfig> {
        let mut argv = vec!["sockit", "proxy"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Command::Proxy(args)) => args.into_config(),
            other => panic!("not a proxy command: {other:?}"),
        }
    }

    #[test]
    fn defaults_deny_internal_destinations_and_cap_clients() -> Result<()> {
        let config = config(&[])?;
        assert_eq!(config.listen.to_string(), "tcp://127.0.0.1:1080");
        let options = config.options;
        assert_eq!(options.destinations, DestinationPolicy::default());
        assert!(options.credentials.is_none());
        assert_eq!(options.max_conns, Some(RelayOptions::DEFAULT_MAX_CONNS));
        assert_eq!(options.max_head, crate::proxy::http::MAX_HEAD);
        assert_eq!(options.handshake_timeout, Duration::from_secs(10));
        Ok(())
    }

    #[test]
    fn bad_values_are_refused_in_words() {
        assert!(
            Cli::try_parse_from(["sockit", "proxy", "--allow-to", "localhost"])
                .is_err_and(|e| e.to_string().contains("CIDR[:PORTS]"))
        );
        let missing = config(&["--credentials", "/nonexistent/users.txt"]);
        assert!(
            missing.is_err_and(|e| e.to_string().starts_with("cannot read --credentials")),
            "a missing credentials file is a usage error"
        );
    }
}
