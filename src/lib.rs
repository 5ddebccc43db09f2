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
//! * [`transport`]: endpoints → listening and connected sockets;
//! * [`framing`]: a byte stream → messages;
//! * [`behaviour`]: a message → its answer (reply, echo, discard);
//! * [`server`]: accept loop and per-connection tasks, datagram loop, limits;
//! * [`client`]: the note's client (`send`);
//! * [`bench`](mod@bench): the load generator (`bench`): patterns, open/closed loop, HDR latency;
//! * [`shutdown`]: signals → graceful, bounded drain;
//! * [`obs`]: events on stdout, diagnostics on stderr, counters;
//! * [`error`]: every failure with its message and exit code.

pub mod behaviour;
pub mod bench;
pub mod cli;
pub mod client;
pub mod endpoint;
pub mod error;
pub mod framing;
pub mod obs;
pub mod server;
pub mod shutdown;
pub mod transport;

pub use endpoint::Endpoint;
pub use error::{Error, ExitStatus, Result};
pub use server::{ServeOptions, Server};
pub use shutdown::Shutdown;
