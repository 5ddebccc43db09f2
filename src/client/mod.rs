//! Clients: programs that connect to a server.
//!
//! * [`send`](mod@send): the note's client, one message (or `--count N`) and its reply;
//! * [`connect`](mod@connect): the interactive client, stdin ⇄ socket (nc, ncat);
//! * [`listen`](mod@listen): its listening half, stdin ⇄ the client that connects (nc -l).

pub mod connect;
pub mod listen;
pub mod send;

pub use connect::{ConnectReport, InteractiveOptions, connect};
pub use listen::{Clients, ListenReport, Listener, ListenerOptions};
pub use send::{SendOptions, SendReport, send};
