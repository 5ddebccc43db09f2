//! The fast lane: the engine of the per-message modes (reply, echo, discard with raw
//! framing and no TLS, `--hex` or PROXY header), everything it is made of in one folder.
//!
//! Entry points: [`serve`], one shard's thread waiting in its own epoll set until
//! shutdown; [`start`] and [`LaneThread::finish`], the same in two steps, for the extra
//! shards of [`super::Server::run_threads`].
//!
//! * [`lane_shard`]: the shard's thread, its acceptor and its drain;
//! * [`fast_lane`]: the connections in the epoll set, served without tasks;
//! * [`conn_state`]: one connection's state, and the non-blocking steps that answer it;
//! * [`own_table`]: the thread's own descriptor table (the `own-table` feature);
//! * [`busy_poll`]: `--busy-poll`'s adaptive polling window (shared with the datagram
//!   answer loop).
//!
//! What it shares with the task engine lives elsewhere: the admission rules of an
//! accept loop (`access::admission`: slot, gate, count, back-off), answering a message
//! ([`super::answer`]) and how a connection ended ([`super::end`]).

pub(super) mod busy_poll;
mod conn_state;
mod fast_lane;
mod lane_shard;
mod own_table;

pub(super) use lane_shard::{LaneThread, serve, start};
