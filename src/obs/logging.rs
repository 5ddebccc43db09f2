//! Diagnostics on stderr through `tracing`, so stdout carries only data and events.

use tracing_subscriber::EnvFilter;

use super::LogFormat;

/// Installs the stderr subscriber.
///
/// `level` is a filter such as `info` or `sockit=debug`; `RUST_LOG`, when set, wins.
/// With `--log json` diagnostics are JSON objects too, so one parser reads both streams.
pub fn init(level: &str, format: LogFormat, color: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests that call this twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Seed | LogFormat::Text => builder.with_ansi(color).try_init(),
    };
}
