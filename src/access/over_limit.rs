//! What happens to a client over `--max-conns`: the choice the gate applies for `serve`
//! and `relay` alike.

/// What a server does with a client that arrives while `--max-conns` are being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OverLimit {
    /// Stop accepting: the client waits in the kernel backlog until a slot frees (its
    /// connect succeeds, it is served later). Datagrams wait in the socket buffer.
    #[default]
    Wait,
    /// Accept and close at once, log it and count it as refused, so the client learns
    /// immediately instead of hanging. Datagrams over the limit are dropped.
    Refuse,
}
