//! sockit: a socket toolkit built from a note on socket programming.
//!
//! The note shows a TCP and a UDP "hello" exchange on 127.0.0.1:8000 and names its own
//! problem: the server blocks, one client at a time. sockit is that system, in Rust, with
//! the problem solved, over every transport.
//!
//! Modules, in the order data flows through them:
//!
//! * [`cli`]: command line → typed configuration;
//! * [`endpoint`]: the endpoint syntax (`tcp://`, `udp://`, `unix:`, …), pure parsing;
//! * [`transport`]: endpoints → listening and connected sockets (bound, or passed by
//!   systemd); the PROXY protocol header, TLS and `--hex` layers of accepted connections;
//! * [`framing`]: a byte stream → messages;
//! * [`behaviour`]: a message → its answer (reply, echo, discard), or a whole connection
//!   → a program (`--exec`) or the chat room (`--chat`);
//! * [`server`]: thread-per-core shards, each running one of five engines (its module
//!   doc names them and their entry points): the fast lane (`server/lane/`, a thread per
//!   shard waiting in its own epoll set, each message answered on the spot), a task per
//!   connection for everything else on streams, the batched datagram answer loop, a
//!   program per datagram, and the `--perf` flow receiver on datagrams; limits;
//! * [`access`]: `--allow` / `--deny` rules (pure), the gate that applies them and
//!   `--max-conns`, the admission step every accept loop takes (the fast lane's too),
//!   and the async accept loop around it that `serve`, `relay` and `proxy` share;
//! * [`client`]: the note's client (`send`), the interactive client (`connect`) and the
//!   listener wired to stdin/stdout (`listen`);
//! * [`relay`]: accept on one endpoint, forward each client to another (`relay`);
//! * [`proxy`]: SOCKS5, SOCKS4/4a and HTTP CONNECT on one port (`proxy`): pure wire
//!   parsers and destination rules, then the relay's copy path for each tunnel;
//! * [`probe`]: which TCP ports of a host are open (`probe`, nc -z);
//! * [`idle`]: "no traffic either way for so long", shared by connect and relay;
//! * [`clock`]: the monotonic clocks as integers, for the idle clock and the load
//!   generator's epoll engine;
//! * [`bench`](mod@bench): the load generator (`bench`): patterns, open/closed loop, HDR latency;
//! * [`build_info`]: what this binary was built from (`sockit version`);
//! * [`shutdown`]: signals (SIGTERM, SIGINT, SIGHUP) → graceful, bounded drain;
//! * [`obs`]: events on stdout, diagnostics on stderr, counters and their Prometheus text;
//! * [`metrics_http`]: `--metrics`, that text served over HTTP at `/metrics`;
//! * [`escape`]: bytes → printable text for logs and events (control characters escaped);
//! * [`error`]: every failure with its message and exit code.
//!
//! Layers, highest first: a module imports only from its own layer or lower ones, and
//! the modules of one folder import one another without a cycle (`tests/it/layers.rs`
//! fails otherwise, and when this line and its tiers disagree):
//!
//! `cli` → `bench` `relay` `server` `client` `probe` `proxy` `metrics_http` → `access`
//! `behaviour` `obs` → `transport` → `endpoint` `framing` `error` `escape` `shutdown`
//! `idle` `clock` `build_info`.

// The module docs are a map for whoever works on the crate, so they name private modules
// too (`cargo doc --document-private-items` resolves those links).
#![allow(rustdoc::private_intra_doc_links)]
// Every unsafe block says why it is sound.
#![warn(clippy::undocumented_unsafe_blocks)]

// sockit is built on Linux system calls and socket features throughout: splice(2),
// recvmmsg/sendmmsg, accept4, abstract Unix sockets, unshare(CLONE_FILES) (with the
// `own-table` feature).
#[cfg(not(target_os = "linux"))]
compile_error!(
    "sockit runs on Linux only: it is built on Linux system calls (splice, recvmmsg, accept4, \
     abstract Unix sockets); build it on Linux, or in a Linux VM or container"
);

pub mod access;
pub mod behaviour;
pub mod bench;
pub mod build_info;
pub mod cli;
pub mod client;
pub mod clock;
pub mod endpoint;
pub mod error;
pub mod escape;
pub mod framing;
pub mod idle;
pub mod metrics_http;
pub mod obs;
pub mod probe;
pub mod proxy;
pub mod relay;
pub mod server;
pub mod shutdown;
pub mod transport;

pub use endpoint::Endpoint;
pub use error::{Error, ExitStatus, Result};
pub use server::{ServeOptions, Server};
pub use shutdown::Shutdown;
