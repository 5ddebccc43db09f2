//! sockit's integration tests: one test binary (as ripgrep does), real sockets on
//! loopback and in temporary directories, the real `sockit` binary, and the note's own
//! Python programs as peers.

mod bench;
mod concurrency;
mod errors;
mod seed;
mod shutdown;
mod transports;
mod util;
