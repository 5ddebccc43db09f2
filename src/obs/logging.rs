//! Diagnostics on stderr through `tracing`, so stdout carries only data and events.

use tracing_subscriber::EnvFilter;

use super::LogFormat;

/// rustls warns once per handshake about a client that sends an IP address as SNI
/// (`ncat --ssl` does, where RFC 6066 allows only host names), then treats it as no SNI,
/// which is what sockit wants. A warning per such client is noise for the operator (a
/// malformed hello that fails is logged by sockit itself), so rustls's hello parser only
/// reports errors, unless the filter names rustls (`RUST_LOG=rustls=debug`).
const QUIET_CLIENT_HELLO: &str = "rustls::msgs::handshake=error";

/// Installs the stderr subscriber.
///
/// `level` is a filter such as `info` or `sockit=debug`; `RUST_LOG`, when set, wins.
/// With `--log json` diagnostics are JSON objects too, so one parser reads both streams.
pub fn init(level: &str, format: LogFormat, color: bool) {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let asked_for_rustls = from_env.as_deref().unwrap_or(level).contains("rustls");
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    if !asked_for_rustls && let Ok(directive) = QUIET_CLIENT_HELLO.parse() {
        filter = filter.add_directive(directive);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // By default a failed write is reported with `eprintln!`, which panics when stderr
        // is a closed pipe (`sockit serve 2>&1 | head`): the panic would take down whatever
        // task logged, the signal handler's included. A diagnostic that cannot be shown
        // is dropped instead.
        .log_internal_errors(false)
        .with_target(false);
    // A second init (tests that call this twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Seed | LogFormat::Text => builder.with_ansi(color).try_init(),
    };
}

/// Writes to stderr and ignores failure, where `eprint!` would panic: once the reader of
/// a piped stderr has gone (`sockit serve 2>&1 | head`), the summary, a notice or an
/// error message cannot be shown, and that must not turn a clean exit into a panic.
pub fn to_stderr(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_fmt(text);
}
