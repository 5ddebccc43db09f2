//! sockit's integration tests: one test binary (as ripgrep does), real sockets on
//! loopback and in temporary directories, the real `sockit` binary, and the note's own
//! Python programs as peers.

mod access;
mod bench;
mod bench_output;
mod bench_payload;
mod busy_poll;
mod concurrency;
mod connect;
mod errors;
mod faults;
mod hexdump;
mod hostile;
mod lane;
mod layers;
mod limits;
mod listen;
mod newcomer;
mod ops;
mod peers;
mod plain_errors;
mod probe;
mod procs;
mod production;
mod proxy_client;
mod proxy_server;
mod relay;
mod relay_access;
mod retry;
mod seed;
mod send;
mod serve_paths;
mod server_modes;
mod shutdown;
mod sockopt;
mod tls;
mod tls_trust;
mod transports;
mod util;
mod wording;
