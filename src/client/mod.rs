//! Clients: programs that connect to a server.
//!
//! * [`send`](mod@send): the note's client, one message (or `--count N`) and its reply;
//! * [`connect`](mod@connect): the interactive client, stdin ⇄ socket (nc, ncat).

pub mod connect;
pub mod send;

pub use connect::{ConnectReport, InteractiveOptions, connect};
pub use send::{SendOptions, SendReport, send};
