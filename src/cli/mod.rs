//! The command-line front end: arguments ([`args`]) → typed configuration ([`config`]) →
//! the library call for the chosen command ([`run`]). Below `args` and the commands'
//! own argument files (`proxy`, `bench`…) sit what they share: the flag value parsers
//! ([`values`]) and the access-control group ([`access_args`]).

pub mod access_args;
pub mod args;
pub mod bench;
pub mod config;
pub mod docs;
pub mod proxy;
pub mod proxy_client;
pub mod throughput;
pub mod values;

pub use args::Cli;

use std::sync::Arc;

use crate::client;
use crate::error::{Error, Result};
use crate::metrics_http;
use crate::obs::{Event, EventLog, LogFormat, logging, metrics};
use crate::probe::{self, PortReport, ProbeSummary};
use crate::relay::Relay;
use crate::server::Server;
use crate::shutdown::{Shutdown, install_signal_handlers};
use crate::transport::activation;
use crate::transport::tls::{CertSource, ServerTls};

use args::{Command, GlobalArgs};

/// Runs one parsed command line to completion.
///
/// # Errors
/// Whatever made the command fail; `main` prints it and exits with its code.
pub async fn run(cli: Cli, events: &EventLog) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args.into_config()?, &cli.global, events).await,
        Command::Send(args) => {
            let config = args.into_config()?;
            client::send(&config.endpoint, &config.options, events).await?;
            Ok(())
        }
        Command::Connect(args) => connect(args.into_config()?).await,
        Command::Listen(args) => listen(args.into_config()?).await,
        Command::Relay(args) => relay(args.into_config()?, &cli.global, events).await,
        Command::Proxy(args) => proxy::run(args.into_config()?, cli.global.log, events).await,
        Command::Probe(args) => probe(args.into_config()?, &cli.global).await,
        Command::Bench(args) => bench::run(args, &cli.global).await,
        Command::Version => print_version(),
        Command::Completions(args) => docs::print_completions(args.shell),
        Command::Man(args) => docs::print_man_page(args.command.as_deref()),
    }
}

/// `sockit version`: the long version on stdout.
fn print_version() -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "sockit {}", crate::build_info::LONG_VERSION) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Io {
            doing: "writing the version".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// `sockit serve`: bind, serve until a signal, drain, print the summary on stderr.
async fn serve(config: config::ServeConfig, global: &GlobalArgs, events: &EventLog) -> Result<()> {
    if matches!(config.options.mode, crate::server::ServeMode::Exec(_)) {
        // This process has no children but its programs: it may adopt what they leave.
        crate::behaviour::exec::adopt_escaped_descendants();
    }
    let server = Server::bind(&config.endpoint, config.options.clone()).await?;
    if let Some(tls) = &config.options.layers.tls {
        announce_certificate(tls, events);
    }
    let _metrics = match &config.metrics {
        Some(at) => {
            let (stats, transport) = (server.stats(), server.local_endpoint().scheme());
            let render = move || metrics::server_metrics(&stats.summary(), transport);
            Some(metrics_http::expose(at, Arc::new(render)).await?)
        }
        None => None,
    };
    let shutdown = signal_shutdown()?;
    let threads = global.threads.map_or_else(default_threads, usize::from);
    // Each thread's copy of a socket bound to a multicast group would get its own copy of
    // every datagram, and `--perf` measures arrival order, which only one reader of a
    // datagram socket sees: those are served by one thread.
    let perf_datagrams = matches!(config.options.mode, crate::server::ServeMode::Perf)
        && config.endpoint.delivery() == crate::endpoint::Delivery::Datagram;
    let threads = if is_multicast_group(&config.endpoint) || perf_datagrams {
        1
    } else {
        threads
    };
    activation::notify_ready();
    let summary = server
        .run_threads(threads, events.clone(), shutdown)
        .await?;
    events.flush();
    print_summary(&summary, global.log);
    Ok(())
}

/// The one-line summary on stderr at shutdown: the readable sentence, or with
/// `--log json` one JSON object (`{"event":"summary",…}`) like every other line.
fn print_summary<T: std::fmt::Display + serde::Serialize>(summary: &T, format: LogFormat) {
    match format {
        LogFormat::Json => {
            let mut value = serde_json::to_value(summary).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("event".into(), "summary".into());
            }
            logging::to_stderr(format_args!("{value}\n"));
        }
        LogFormat::Seed | LogFormat::Text => logging::to_stderr(format_args!("{summary}\n")),
    }
}

/// One thread per CPU this process may run on (so `taskset -c 1 sockit serve` uses one).
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `sockit connect`: stdin ⇄ socket until the conversation ends.
async fn connect(config: config::ConnectConfig) -> Result<()> {
    let input = match config.options.stdin {
        client::connect::StdinUse::Send => client::connect::stdin_input()?,
        client::connect::StdinUse::Ignore => client::connect::no_input(),
    };
    let report = client::connect(
        &config.endpoint,
        &config.options,
        input,
        tokio::io::stdout(),
    )
    .await?;
    tracing::debug!(
        "ended ({}): {} bytes sent, {} bytes received",
        why_it_ended(report.ended),
        report.sent,
        report.received
    );
    Ok(())
}

/// Why `connect` stopped, in words for its debug line.
fn why_it_ended(ended: client::connect::Ended) -> &'static str {
    use client::connect::Ended;
    match ended {
        Ended::Finished => "the server closed and the input ended",
        Ended::ServerQuiet => "the input ended and the server was quiet for --quit-after",
        Ended::Idle => "nothing moved for the idle timeout",
        Ended::OutputClosed => "stdout was closed",
    }
}

/// `sockit listen`: bind, say where on stderr, then stdin ⇄ the client(s) until done.
///
/// Stdout carries only the client's bytes, so the certificate notice and the readiness
/// line go to stderr. A `--keep-open` listener stops on SIGINT/SIGTERM/SIGHUP; one
/// client's listener keeps the default signal actions (Ctrl-C ends it at once).
async fn listen(config: config::ListenConfig) -> Result<()> {
    let keep_open = config.options.clients == client::Clients::KeepOpen;
    let listener = client::Listener::bind(&config.endpoint, config.options.clone()).await?;
    if let Some(tls) = &config.options.layers.tls {
        logging::to_stderr(format_args!("{}\n", tls.notice()));
    }
    logging::to_stderr(format_args!("listening on {}\n", listener.local_endpoint()));
    let shutdown = if keep_open {
        signal_shutdown()?
    } else {
        Shutdown::new()
    };
    let input = client::connect::stdin_input()?;
    let report = listener.run(input, tokio::io::stdout(), shutdown).await?;
    tracing::debug!(
        "done: {} client(s), {} bytes received, {} bytes sent",
        report.clients,
        report.received,
        report.sent
    );
    Ok(())
}

/// `sockit relay`: bind, relay until a signal, drain, print the summary on stderr.
async fn relay(config: config::RelayConfig, global: &GlobalArgs, events: &EventLog) -> Result<()> {
    let relay = Relay::bind(&config.listen, config.options.clone()).await?;
    if let Some(tls) = &config.options.layers.tls {
        announce_certificate(tls, events);
    }
    tracing::info!(
        "relaying {} to {}",
        relay.local_endpoint(),
        config.options.target
    );
    let _metrics = match &config.metrics {
        Some(at) => {
            let (stats, transport) = (relay.stats(), relay.local_endpoint().scheme());
            let render = move || stats.write_metrics(transport);
            Some(metrics_http::expose(at, Arc::new(render)).await?)
        }
        None => None,
    };
    let shutdown = signal_shutdown()?;
    activation::notify_ready();
    // On a worker of the runtime, not on the thread `main` blocks on: the accept (or
    // receive) loop then shares a thread with the connections it hands out, so a new
    // client or a datagram costs no wake-up of a second thread.
    let relaying = tokio::spawn(relay.run(events.clone(), shutdown));
    let summary = relaying.await.map_err(|e| Error::Io {
        doing: "relaying".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    events.flush();
    print_summary(&summary, global.log);
    Ok(())
}

/// `sockit probe`: one line per port on stdout, a summary on stderr; exit 1 if none open.
async fn probe(config: config::ProbeConfig, global: &GlobalArgs) -> Result<()> {
    use std::io::Write;
    let host_text = config.host.to_string();
    let format = global.log;
    let print = |report: &PortReport| {
        if config.only_open && report.state != probe::PortState::Open {
            return;
        }
        let line = port_line(report, &host_text, format);
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (`| head`) only means nobody reads the rest.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    };
    let reports = probe::probe(&config.host, &config.ports, config.options, print).await?;
    let summary = ProbeSummary::of(&reports);
    logging::to_stderr(format_args!(
        "probed {} port(s) on {host_text}: {summary}\n",
        reports.len()
    ));
    if !summary.any_open() {
        return Err(Error::NoneOpen {
            host: host_text,
            probed: reports.len(),
        });
    }
    Ok(())
}

/// One probe result: `127.0.0.1:22 open`, or a JSON object with `--log json`.
fn port_line(report: &PortReport, host: &str, format: LogFormat) -> String {
    let addr = report.addr.map_or_else(
        || format!("{host}:{}", report.port),
        |addr| addr.to_string(),
    );
    match format {
        LogFormat::Json => serde_json::json!({
            "event": "port", "host": host, "port": report.port,
            "addr": addr, "state": report.state,
        })
        .to_string(),
        LogFormat::Seed | LogFormat::Text => format!("{addr} {}", report.state),
    }
}

/// Prints which certificate a TLS listener presents, with its fingerprint: on stderr
/// always (the note's stdout stays the note's), and as an event for text/JSON logs.
fn announce_certificate(tls: &ServerTls, events: &EventLog) {
    logging::to_stderr(format_args!("{}\n", tls.notice()));
    let fingerprint = tls.fingerprint().to_string();
    events.emit(Event::Certificate {
        fingerprint: &fingerprint,
        self_signed: matches!(tls.source(), CertSource::SelfSigned { .. }),
    });
}

/// A shutdown fired by SIGINT / SIGTERM / SIGHUP.
fn signal_shutdown() -> Result<Shutdown> {
    let shutdown = Shutdown::new();
    let stopping = crate::transport::activation::notify_stopping;
    install_signal_handlers(shutdown.clone(), stopping).map_err(|source| Error::Io {
        doing: "installing the signal handlers".into(),
        source,
    })?;
    Ok(shutdown)
}

/// Whether `endpoint` is a UDP multicast group (`udp://239.1.2.3:5000`).
fn is_multicast_group(endpoint: &crate::endpoint::Endpoint) -> bool {
    use crate::endpoint::{Endpoint, Host};
    matches!(endpoint, Endpoint::Udp(hp) if matches!(hp.host, Host::Ip(ip) if ip.is_multicast()))
}
