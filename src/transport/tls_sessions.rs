//! The TLS client's session store: what lets a connection resume an earlier session with
//! the same server instead of a full handshake.
//!
//! rustls' own in-memory store keeps at most 8 TLS 1.3 tickets per server, and each ticket
//! is used once. A command that opens many connections to one server at once (`bench -c
//! 50`, a relay to a `tls://` target) takes tickets faster than 8 can supply, so most of
//! its handshakes would be full ones. [`SessionStore`] keeps as many tickets per server as
//! handshakes have needed: 8, plus one for every handshake that found none (so the number
//! follows how many connections start at once, not how many tickets a server sends).
//!
//! Everything it holds counts against one memory budget ([`SessionStore::DEFAULT_BUDGET`]):
//! each ticket and TLS 1.2 session is charged its own size plus the server's certificate
//! chain, which rustls copies into every one of them. When the budget is full, the oldest
//! ticket goes first, then the oldest server.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;

/// The tickets kept per server before any handshake has found the store empty: rustls'
/// own figure.
const BASE_TICKETS_PER_SERVER: usize = 8;

/// What a ticket or session costs besides the certificate chain: the value itself, the
/// ticket the server sent (an opaque blob, typically 32 to 300 bytes), the secret, and
/// the store's bookkeeping.
const ENTRY_OVERHEAD: usize = 640;

/// What a server's entry costs besides its name.
const SERVER_OVERHEAD: usize = 256;

/// The certificate chain size charged for a server whose chain has not been seen yet:
/// a leaf and an intermediate of a public CA.
const ASSUMED_CHAIN: usize = 4096;

/// A [`ClientSessionStore`] that holds as many TLS 1.3 tickets per server as handshakes
/// need, within a memory budget.
pub struct SessionStore {
    /// The byte budget everything held counts against.
    budget: usize,
    /// The servers and their tickets; one lock, taken once per operation.
    state: Mutex<State>,
}

/// What a [`SessionStore`] holds.
#[derive(Default)]
struct State {
    /// Per server: its hint, TLS 1.2 session, and the order of its tickets.
    servers: HashMap<ServerName<'static>, Server>,
    /// Every ticket by age (a rising number), so the oldest goes first when the budget
    /// is full.
    tickets: BTreeMap<u64, Ticket>,
    /// Servers by the age of their entry, for when no ticket is left to drop.
    servers_by_age: BTreeMap<u64, ServerName<'static>>,
    /// The next age number.
    next: u64,
    /// Bytes charged for everything held.
    bytes: usize,
}

/// One server's sessions.
struct Server {
    /// The key exchange group the server chose last time.
    kx_hint: Option<NamedGroup>,
    /// The TLS 1.2 session (reused by every connection) and its charge.
    tls12: Option<(Tls12ClientSessionValue, usize)>,
    /// Its TLS 1.3 tickets' age numbers, oldest first.
    tickets: VecDeque<u64>,
    /// How many tickets to keep for this server.
    keep: usize,
    /// The bytes of the certificate chain it presents, once seen.
    chain: Option<usize>,
    /// What the entry itself is charged.
    charge: usize,
}

/// One TLS 1.3 ticket.
struct Ticket {
    /// The server it resumes with.
    server: ServerName<'static>,
    /// The ticket and its secrets.
    value: Tls13ClientSessionValue,
    /// What it is charged against the budget.
    charge: usize,
}

impl SessionStore {
    /// The memory budget of a client's session store: 8 MiB, about 5,000 tickets for a
    /// server with a self-signed ECDSA certificate or 1,500 for one with a public CA's
    /// RSA chain.
    pub const DEFAULT_BUDGET: usize = 8 << 20;

    /// An empty store holding at most `budget` bytes.
    pub fn new(budget: usize) -> SessionStore {
        SessionStore {
            budget,
            state: Mutex::new(State::default()),
        }
    }

    /// Records the size of the certificate chain `server` presents, so its tickets are
    /// charged what they really hold (rustls keeps a copy of the chain in each one).
    pub fn note_chain(&self, server: &ServerName<'static>, chain_bytes: usize) {
        let mut state = self.lock();
        let server = state.server(server.clone());
        server.chain = Some(chain_bytes);
        state.evict_to(self.budget);
    }

    /// The bytes charged for everything held now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The TLS 1.3 tickets held for `server`.
    #[cfg(test)]
    pub fn tickets_for(&self, server: &ServerName<'_>) -> usize {
        self.lock()
            .servers
            .get(server)
            .map_or(0, |entry| entry.tickets.len())
    }

    /// The state, even if a thread panicked while holding it (every change leaves it
    /// consistent before anything that could panic).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The entry for `name`, made (and charged) if there is none.
    fn server(&mut self, name: ServerName<'static>) -> &mut Server {
        let next = &mut self.next;
        let bytes = &mut self.bytes;
        let by_age = &mut self.servers_by_age;
        self.servers.entry(name).or_insert_with_key(|name| {
            let charge = SERVER_OVERHEAD + name_bytes(name);
            by_age.insert(*next, name.clone());
            *next += 1;
            *bytes += charge;
            Server {
                kx_hint: None,
                tls12: None,
                tickets: VecDeque::new(),
                keep: BASE_TICKETS_PER_SERVER,
                chain: None,
                charge,
            }
        })
    }

    /// Drops the oldest tickets, then the oldest servers, until at most `budget` bytes
    /// are held.
    fn evict_to(&mut self, budget: usize) {
        while self.bytes > budget {
            if let Some((&age, _)) = self.tickets.first_key_value() {
                self.drop_ticket(age);
            } else if let Some((_, name)) = self.servers_by_age.pop_first() {
                self.drop_server(&name);
            } else {
                break;
            }
        }
    }

    /// Removes the ticket of this age (the oldest of its server's).
    fn drop_ticket(&mut self, age: u64) {
        let Some(ticket) = self.tickets.remove(&age) else {
            return;
        };
        self.bytes -= ticket.charge;
        if let Some(server) = self.servers.get_mut(&ticket.server) {
            // The oldest ticket overall, or the surplus one, is its server's oldest.
            if server.tickets.front() == Some(&age) {
                server.tickets.pop_front();
            } else {
                server.tickets.retain(|&a| a != age);
            }
        }
    }

    /// Removes a server's entry and its TLS 1.2 session (its tickets are gone already).
    fn drop_server(&mut self, name: &ServerName<'static>) {
        if let Some(server) = self.servers.remove(name) {
            self.bytes -= server.charge;
            if let Some((_, charge)) = server.tls12 {
                self.bytes -= charge;
            }
            for age in server.tickets {
                if let Some(ticket) = self.tickets.remove(&age) {
                    self.bytes -= ticket.charge;
                }
            }
        }
    }
}

/// The bytes a server name holds.
fn name_bytes(name: &ServerName<'_>) -> usize {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().len(),
        _ => 0,
    }
}

/// What one ticket or session is charged when its server presents `chain` bytes.
fn entry_charge(chain: Option<usize>) -> usize {
    ENTRY_OVERHEAD + chain.unwrap_or(ASSUMED_CHAIN)
}

impl ClientSessionStore for SessionStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        let mut state = self.lock();
        state.server(server_name).kx_hint = Some(group);
        state.evict_to(self.budget);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.lock()
            .servers
            .get(server_name)
            .and_then(|server| server.kx_hint)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        let mut state = self.lock();
        let server = state.server(server_name);
        let charge = entry_charge(server.chain);
        let old = server.tls12.replace((value, charge));
        state.bytes += charge;
        if let Some((_, old_charge)) = old {
            state.bytes -= old_charge;
        }
        state.evict_to(self.budget);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.lock()
            .servers
            .get(server_name)
            .and_then(|server| server.tls12.as_ref().map(|(value, _)| value.clone()))
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        let mut state = self.lock();
        let old = state
            .servers
            .get_mut(server_name)
            .and_then(|server| server.tls12.take());
        if let Some((_, charge)) = old {
            state.bytes -= charge;
        }
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        let mut state = self.lock();
        let age = state.next;
        state.next += 1;
        let server = state.server(server_name.clone());
        let charge = entry_charge(server.chain);
        server.tickets.push_back(age);
        let surplus = (server.tickets.len() > server.keep)
            .then(|| server.tickets.front().copied())
            .flatten();
        state.bytes += charge;
        state.tickets.insert(
            age,
            Ticket {
                server: server_name,
                value,
                charge,
            },
        );
        if let Some(oldest) = surplus {
            state.drop_ticket(oldest);
        }
        state.evict_to(self.budget);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        let mut state = self.lock();
        let server = state.server(server_name.clone());
        let Some(age) = server.tickets.pop_back() else {
            // A handshake found no ticket: one more connection at once than the tickets
            // kept could serve. Keep one more, up to what the budget could hold (a server
            // that never sends tickets would otherwise raise it without end).
            server.keep = (server.keep + 1).min(self.budget / ENTRY_OVERHEAD);
            state.evict_to(self.budget);
            return None;
        };
        let ticket = state.tickets.remove(&age)?;
        state.bytes -= ticket.charge;
        Some(ticket.value)
    }
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The sessions' secrets stay out of debug output.
        f.debug_struct("SessionStore")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}
