//! The datagram loop: receive, answer the sender at its own address, repeat.
//!
//! One loop serves every sender; nothing waits on a client, so a silent client cannot
//! block anyone. The loop runs on a thread of its own, waiting in `recvmmsg(2)` for up to
//! 32 datagrams at a time and answering them with one `sendmmsg(2)`: a busy server pays
//! for the system calls once per batch, not once per datagram, and no reactor is involved
//! (see [`answer_until_stopped`] for why).
//!
//! Datagrams from senders the access rules deny are dropped (counted, and logged at a
//! bounded rate). Replies are held to the anti-amplification budget of their source
//! ([`AmplificationGuard`], `--amplification-limit`): a reply over it is not sent, and
//! that is logged at a bounded rate. With `--exec`, each datagram runs the program in its own task (the
//! datagram on stdin, its stdout as the reply), at most `--max-conns` at once (default
//! [`DEFAULT_PROGRAMS`]).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use super::busy_poll::BusyPoll;
use super::{Handler, OverLimit, Shared};
use crate::access::gate::{self, Gate};
use crate::behaviour::exec::{self, ClientInfo, DatagramEnd, ExecSpec};
use crate::obs::hexdump::Direction;
use crate::obs::throttle::{Admit, LogThrottle};
use crate::obs::{ErrorKind, Event, Tally};
use socket2::SockAddr;

use crate::endpoint::PeerAddr;
use crate::transport::batch::{self, RecvBatch};
use crate::transport::datagram_cred;
use crate::transport::{DatagramSocket, MAX_DATAGRAM, StdDatagram};

/// Programs run at once for `--exec` on a datagram endpoint when `--max-conns` is not set.
pub const DEFAULT_PROGRAMS: usize = 64;

/// Receives and answers datagrams until shutdown.
pub(crate) async fn receive_loop(socket: StdDatagram, shared: &Arc<Shared>) {
    match &shared.handler {
        Handler::Exec(spec) => match socket.into_tokio() {
            Ok(socket) => exec_loop(socket, spec, shared).await,
            Err(e) => {
                tracing::error!("a server thread cannot register its socket: {e}");
                shared.shutdown.trigger();
            }
        },
        Handler::Perf(flows, _) => super::perf_udp::receive_flows(socket, flows, shared).await,
        // `Server::bind` refuses chat on datagram endpoints.
        Handler::Respond | Handler::Chat(_) => respond_loop(socket, shared).await,
    }
}

/// Answers each datagram with the responder, a batch of datagrams per system call, on a
/// thread of its own that waits in `recvmmsg(2)` (see [`answer_until_stopped`]); this
/// task only stops it at shutdown.
///
/// The socket is made blocking, which holds for every thread's copy of it: that is safe
/// because in this mode no thread registers it with a runtime.
async fn respond_loop(socket: StdDatagram, shared: &Arc<Shared>) {
    let stopper = socket.try_clone().and_then(|stopper| {
        socket.set_blocking()?;
        Ok(stopper)
    });
    let stopper = match stopper {
        Ok(stopper) => stopper,
        Err(e) => {
            tracing::error!("cannot set up the datagram loop: {e}");
            shared.shutdown.trigger();
            return;
        }
    };
    let worker_shared = Arc::clone(shared);
    let mut worker =
        tokio::task::spawn_blocking(move || answer_until_stopped(&socket, &worker_shared));
    let finished = tokio::select! {
        () = shared.shutdown.triggered() => false,
        _ = &mut worker => true,
    };
    if !finished {
        stopper.stop_receivers();
        let _ = worker.await;
    }
}

/// The answer loop: wait for datagrams, answer the batch, repeat, until shutdown.
///
/// Why a blocking thread rather than a task: a task needs the socket registered with the
/// reactor, and then every reply the kernel frees (once its client has read it) walks the
/// socket's wait queue to the reactor's entry, and the loop pays a readiness check and a
/// receive that finds nothing before each sleep. A thread blocked in `recvmmsg` is on that
/// queue only while it sleeps, as the hand-written C servers are, and one call both waits
/// and takes the whole batch. One loop still serves every sender, and a client that never
/// reads its replies costs nothing, so nobody waits on anybody.
fn answer_until_stopped(socket: &StdDatagram, shared: &Shared) {
    let fd = socket.as_fd().as_raw_fd();
    let mut batch = RecvBatch::new();
    let mut to_send: Vec<(usize, SockAddr)> = Vec::with_capacity(batch::BATCH);
    let mut tally = Tally::default();
    let mut gate = Gate::default();
    let local = match socket {
        StdDatagram::Udp(udp) => udp.local_addr().ok(),
        StdDatagram::Unix(_) => None,
    };
    let mut guard = AmplificationGuard::at(local, shared);
    let mut busy = BusyPoll::new(shared.options.busy_poll);
    loop {
        let received = match busy.as_mut() {
            Some(busy) => receive_polling(&mut batch, fd, busy),
            None => batch.receive_waiting(fd),
        };
        if shared.shutdown.is_triggered() {
            break;
        }
        match received {
            Ok(_) => {
                let mut checks = Checks {
                    gate: &mut gate,
                    guard: guard.as_mut(),
                };
                let answering = Answering { fd, local };
                answer_batch(
                    answering,
                    &batch,
                    &mut to_send,
                    shared,
                    &mut tally,
                    &mut checks,
                );
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // E.g. an ICMP error queued on the socket: it concerns one peer only.
            Err(e) if is_per_datagram(&e) => tracing::debug!("receive failed: {e}"),
            Err(e) => {
                // Not expected; a short pause keeps a lasting failure from spinning.
                tracing::warn!("receiving datagrams failed: {e}; retrying");
                std::thread::sleep(UNEXPECTED_ERROR_PAUSE);
            }
        }
        // Once per batch (this shard's own counters), so live metrics stay current.
        shared.stats.absorb(&mut tally);
    }
    shared.stats.absorb(&mut tally);
}

/// `--busy-poll`: takes what is queued, polling for the current window before it waits
/// (see [`super::busy_poll`]).
fn receive_polling(batch: &mut RecvBatch, fd: RawFd, busy: &mut BusyPoll) -> io::Result<usize> {
    let started = Instant::now();
    let window = busy.window();
    loop {
        match batch.receive_queued(fd) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            received => return received,
        }
        if started.elapsed() >= window {
            break;
        }
        std::hint::spin_loop();
    }
    let received = batch.receive_waiting(fd);
    busy.slept(started.elapsed());
    received
}

/// How long the answer loop pauses after a receive error it does not expect.
const UNEXPECTED_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Receive errors that concern one datagram or one peer, after which the socket still
/// works.
fn is_per_datagram(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EMSGSIZE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::EAGAIN
        )
    )
}

/// What the answer loop checks each datagram and reply against.
struct Checks<'a> {
    /// The access rules.
    gate: &'a mut Gate,
    /// The anti-amplification budget, where it applies.
    guard: Option<&'a mut AmplificationGuard>,
}

/// The socket a batch is answered on: its descriptor, and its address (UDP) for
/// `--pcap`.
#[derive(Clone, Copy)]
struct Answering {
    fd: RawFd,
    local: Option<SocketAddr>,
}

/// `--capture` and `--pcap`: a received datagram and the reply the server is about to
/// send it.
fn record(
    layers: &crate::transport::Layers,
    local: Option<SocketAddr>,
    peer: &PeerAddr,
    datagram: &[u8],
    reply: Option<&[u8]>,
) {
    if let Some(capture) = &layers.capture {
        let peer = peer.to_string();
        capture.datagram(Direction::Received, &peer, datagram);
        if let Some(reply) = reply {
            capture.datagram(Direction::Sent, &peer, reply);
        }
    }
    if let (Some(pcap), Some(local), PeerAddr::Ip(peer)) = (&layers.pcap, local, peer) {
        pcap.datagram(local, *peer, Direction::Received, datagram);
        if let Some(reply) = reply {
            pcap.datagram(local, *peer, Direction::Sent, reply);
        }
    }
}

/// Answers one received batch: checks and logs each datagram, then sends every reply in
/// as few system calls as possible.
fn answer_batch(
    answering: Answering,
    batch: &RecvBatch,
    to_send: &mut Vec<(usize, SockAddr)>,
    shared: &Shared,
    tally: &mut Tally,
    checks: &mut Checks<'_>,
) {
    let gate = &mut *checks.gate;
    let responder = &shared.options.responder;
    let hex = shared.options.layers.hex.as_ref();
    let shows_messages = shared.shows_messages();
    let layers = &shared.options.layers;
    let recording = layers.capture.is_some() || layers.pcap.is_some();
    let needs_peer =
        !shared.options.access.is_open() || shows_messages || hex.is_some() || recording;
    to_send.clear();
    let checks_senders = datagram_cred::checks_senders();
    for i in 0..batch.len() {
        let datagram = batch.datagram(i);
        if checks_senders && !datagram_cred::sender_allowed(batch.sender_cred(i)) {
            shared
                .stats
                .denied
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        let sender = batch.sender(i);
        // Raw datagrams have no terminator, so an answer is one slice.
        let mut answer = responder.answer(datagram, &[]).map(|[reply, _]| reply);
        if let (Some(guard), Some(reply), Some(from)) =
            (checks.guard.as_deref_mut(), answer, sender.as_socket())
            && !guard.allows(from, datagram.len(), reply.len())
        {
            answer = None;
        }
        if needs_peer {
            let peer = sender
                .as_socket()
                .map_or_else(|| PeerAddr::Unix(Box::new(sender.clone())), PeerAddr::Ip);
            if !gate.admit(&peer, "datagram", &shared.gate_config()) {
                continue;
            }
            if shows_messages {
                shared.events.emit(Event::Datagram {
                    peer: &peer,
                    received: datagram,
                    sent: answer,
                });
            }
            if let Some(hex) = hex {
                let peer = peer.to_string();
                hex.datagram(Direction::Received, &peer, datagram);
                if let Some(reply) = answer {
                    hex.datagram(Direction::Sent, &peer, reply);
                }
            }
            if recording {
                record(layers, answering.local, &peer, datagram, answer);
            }
        }
        tally.messages += 1;
        tally.bytes_in += datagram.len() as u64;
        if answer.is_some() {
            to_send.push((i, sender));
        }
    }
    let reply = |k: usize| {
        let (slot, to) = &to_send[k];
        // Raw datagrams have no terminator, so an answer is one slice.
        let bytes = responder
            .answer(batch.datagram(*slot), &[])
            .map_or(&[][..], |[reply, _]| reply);
        (bytes, Some(to))
    };
    let mut done = 0;
    while done < to_send.len() {
        let rest = || (done..to_send.len()).map(reply);
        match batch::send_batch_waiting(answering.fd, rest()) {
            Ok(n) => {
                tally.bytes_out += rest().take(n).map(|(b, _)| b.len() as u64).sum::<u64>();
                tally.replies += n as u64;
                done += n.max(1);
            }
            Err(e) => {
                // Refused for this destination (unreachable, too large): skip it.
                tracing::info!("could not send a reply: {e}");
                done += 1;
            }
        }
    }
}

/// Runs the program for each datagram, each run in its own tracked task.
async fn exec_loop(socket: DatagramSocket, spec: &ExecSpec, shared: &Arc<Shared>) {
    let socket = Arc::new(socket);
    let limits = &shared.options.limits;
    // Server-wide, shared by every thread: --max-conns, or DEFAULT_PROGRAMS (set when the
    // server is prepared).
    let slots = shared.slots.clone();
    let mut buf = vec![0u8; shared.options.buffer_size.max(MAX_DATAGRAM)];
    let mut gate = Gate::default();
    let mut ids = shared.ids.iter();
    let local = match &*socket {
        DatagramSocket::Udp(udp) => udp.local_addr().ok(),
        DatagramSocket::Unix(..) | DatagramSocket::Socks(_) => None,
    };
    // One per loop, shared by its programs' tasks (see AmplificationGuard).
    let guard = AmplificationGuard::at(local, shared).map(|g| Arc::new(std::sync::Mutex::new(g)));
    loop {
        let Some((len, peer)) = gate
            .next_admitted(&socket, &mut buf, &shared.gate_config())
            .await
        else {
            break;
        };
        let slot = match limits.over_limit {
            OverLimit::Wait => {
                match gate::wait_for_slot(slots.as_ref(), &shared.gate_config()).await {
                    Some(slot) => slot,
                    None => break,
                }
            }
            OverLimit::Refuse => {
                match gate.try_slot(slots.as_ref(), &peer, "datagram", &shared.gate_config()) {
                    Some(slot) => slot,
                    None => continue,
                }
            }
        };
        let id = ids.next().unwrap_or_default();
        let datagram = buf[..len].to_vec();
        let (socket, task_shared, spec) = (Arc::clone(&socket), Arc::clone(shared), spec.clone());
        let guard = guard.clone();
        shared.shutdown.spawn(async move {
            let run = Run {
                socket: &socket,
                spec: &spec,
                guard: guard.as_deref(),
            };
            run_program(&run, &datagram, &peer, id, &task_shared).await;
            drop(slot);
        });
    }
}

/// The span a line about one client's datagram is logged under,
/// `datagram{peer=192.0.2.7:40000}: …`, the shape of a connection's `conn{id=… peer=…}`.
/// At ERROR level so it is there whatever `--log-level` lets through.
fn datagram_span(peer: &PeerAddr) -> tracing::Span {
    tracing::error_span!("datagram", peer = %peer)
}

/// How a failed program ended, in words: "the program exited with status 1".
fn program_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("the program exited with status {code}"),
        (None, Some(signal)) => format!("the program was killed by signal {signal}"),
        (None, None) => format!("the program ended ({status})"),
    }
}

/// What every program run of one loop shares.
struct Run<'a> {
    /// Where replies are sent from.
    socket: &'a DatagramSocket,
    /// The program.
    spec: &'a ExecSpec,
    /// The loop's anti-amplification budget, where it applies.
    guard: Option<&'a std::sync::Mutex<AmplificationGuard>>,
}

/// Runs the program for one datagram and sends its output back as the reply.
async fn run_program(
    run_with: &Run<'_>,
    datagram: &[u8],
    peer: &PeerAddr,
    id: u64,
    shared: &Shared,
) {
    let Run { socket, spec, .. } = *run_with;
    let limits = &shared.options.limits;
    let time_limit = limits.message_timeout.or(limits.idle_timeout);
    let client = ClientInfo::new(id, peer);
    let run = exec::run_for_datagram(
        spec,
        datagram,
        &client,
        MAX_DATAGRAM,
        time_limit,
        &shared.shutdown,
    )
    .await;
    let mut tally = Tally {
        messages: 1,
        bytes_in: datagram.len() as u64,
        ..Tally::default()
    };
    let problem = match &run.end {
        DatagramEnd::Exited(status) if super::session::status_is_failure(Some(*status), false) => {
            Some((ErrorKind::Program, program_exit(*status)))
        }
        DatagramEnd::Exited(_) | DatagramEnd::Shutdown => None,
        DatagramEnd::TooMuchOutput => Some((
            ErrorKind::Program,
            format!(
                "the program wrote more than one datagram holds; replying with the first {MAX_DATAGRAM} bytes"
            ),
        )),
        DatagramEnd::TimedOut(d) => Some((
            ErrorKind::Timeout,
            format!(
                "the program did not finish within {} and was killed (raise --message-timeout)",
                humantime::format_duration(*d)
            ),
        )),
        DatagramEnd::CannotStart(e) => Some((
            ErrorKind::Program,
            format!("cannot start `{}`: {e}", spec.command_line()),
        )),
    };
    if let Some((kind, problem)) = problem {
        shared.stats.count_error(kind);
        datagram_span(peer).in_scope(|| tracing::warn!("{problem}"));
    }
    let reply = (!run.output.is_empty())
        .then_some(run.output.as_slice())
        .filter(|reply| within_budget(run_with.guard, peer, datagram.len(), reply.len()));
    shared.events.emit(Event::Datagram {
        peer,
        received: datagram,
        sent: reply,
    });
    if let Some(reply) = reply {
        match socket.send_to(reply, peer).await {
            Ok(sent) => {
                tally.bytes_out += sent as u64;
                tally.replies += 1;
            }
            Err(e) => {
                datagram_span(peer).in_scope(|| tracing::info!("could not send the reply: {e}"));
            }
        }
    }
    shared.stats.absorb(&mut tally);
}

/// Whether a `reply`-byte answer to a `request`-byte datagram from `peer` fits its
/// source's budget (always, without a guard or for a Unix peer).
fn within_budget(
    guard: Option<&std::sync::Mutex<AmplificationGuard>>,
    peer: &PeerAddr,
    request: usize,
    reply: usize,
) -> bool {
    let (Some(guard), PeerAddr::Ip(from)) = (guard, peer) else {
        return true;
    };
    // A poisoned lock only means another program's task panicked mid-update; the
    // budget is still usable.
    guard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .allows(*from, request, reply)
}

/// The anti-amplification budget of each source, for one answer loop (see
/// [`super::Amplification`]).
///
/// Each loop keeps its own: a source's datagrams to one loop are answered from the credit
/// its datagrams to that loop earned, so the bound holds for the server as a whole without
/// a shared lock on the hot path.
#[derive(Debug)]
pub(crate) struct AmplificationGuard {
    /// Reply bytes allowed per request byte.
    factor: u64,
    /// Reply bytes each source may still be sent (IPv4 address or IPv6 /64).
    credit: HashMap<IpAddr, u64>,
    /// Log lines for replies held back.
    log: LogThrottle,
}

impl AmplificationGuard {
    /// Sources remembered at once; past it the table starts afresh (every source's
    /// credit back to nothing, the safe side), so spraying forged addresses costs memory
    /// only up to here.
    const MAX_SOURCES: usize = 65_536;

    /// A guard with factor `factor`.
    pub(crate) fn new(factor: u64) -> AmplificationGuard {
        AmplificationGuard {
            factor,
            credit: HashMap::new(),
            log: LogThrottle::default(),
        }
    }

    /// The guard for a loop answering at `local` (`None`: a Unix socket), if
    /// `--amplification-limit` applies there.
    fn at(local: Option<SocketAddr>, shared: &Shared) -> Option<AmplificationGuard> {
        shared
            .options
            .limits
            .amplification
            .factor_at(local)
            .map(AmplificationGuard::new)
    }

    /// Credits `from` with a `request`-byte datagram and says whether a `reply`-byte
    /// answer fits its budget (which it then spends). A reply that does not fit is not
    /// sent, and that is logged at a bounded rate. The credit never exceeds what the
    /// largest datagram earns, so a quiet source's budget cannot be saved up and spent
    /// by someone forging its address.
    pub(crate) fn allows(&mut self, from: SocketAddr, request: usize, reply: usize) -> bool {
        let source = crate::access::source_of(from.ip());
        if self.credit.len() >= AmplificationGuard::MAX_SOURCES
            && !self.credit.contains_key(&source)
        {
            self.credit.clear();
        }
        let ceiling = self.factor.saturating_mul(MAX_DATAGRAM as u64);
        let credit = self.credit.entry(source).or_insert(0);
        *credit = credit
            .saturating_add(self.factor.saturating_mul(request as u64))
            .min(ceiling);
        if reply as u64 <= *credit {
            *credit -= reply as u64;
            return true;
        }
        if let admit @ Admit::Log { .. } = self.log.admit(tokio::time::Instant::now()) {
            tracing::info!(
                "held back a {reply}-byte reply to {from}: over {}x the {} bytes it sent \
                 (--amplification-limit {}; off turns it off){}",
                self.factor,
                request,
                self.factor,
                admit.suffix()
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn a_source_gets_at_most_k_times_what_it_sent() {
        let mut guard = AmplificationGuard::new(3);
        let victim = addr("192.0.2.7:53");
        assert!(!guard.allows(victim, 1, 1000), "1 byte buys 3, not 1000");
        assert!(guard.allows(victim, 5, 5), "an echo always fits");
        assert!(
            guard.allows(addr("192.0.2.7:9"), 100, 300),
            "the source, any port"
        );
        // Left: 3 + 15 - 5 + 300 - 300 = 13.
        assert!(!guard.allows(victim, 0, 14));
        assert!(guard.allows(victim, 0, 13));
        assert!(!guard.allows(victim, 0, 1));
        assert!(
            guard.allows(addr("192.0.2.8:53"), 2, 6),
            "another source has its own"
        );
    }

    #[test]
    fn credit_cannot_be_saved_up_beyond_one_full_datagram() {
        let mut guard = AmplificationGuard::new(3);
        let source = addr("[2001:db8::1]:5");
        for _ in 0..10 {
            assert!(guard.allows(source, MAX_DATAGRAM, 0));
        }
        assert!(
            guard.allows(addr("[2001:db8::2]:5"), 0, 3 * MAX_DATAGRAM),
            "same /64"
        );
        assert!(!guard.allows(source, 0, 1));
    }
}
