//! Clients: programs that connect to a server.
//!
//! * [`send`]: the note's client, one message (or `--count N`) and its reply.

pub mod send;

pub use send::{SendOptions, SendReport, send};
