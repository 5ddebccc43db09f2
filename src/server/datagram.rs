//! The datagram loop: receive, answer the sender at its own address, repeat.
//!
//! One loop serves every sender; nothing waits on a client, so a silent client cannot
//! block anyone. When the socket is readable the loop drains it in batches of up to 32
//! datagrams per `recvmmsg(2)`, answered with one `sendmmsg(2)`, then yields to other tasks
//! (so a flood cannot monopolise a thread) before waiting again: a busy server pays for
//! readiness and for the system calls once per batch, not once per datagram.
//!
//! Datagrams from senders the access rules deny are dropped (counted, and logged at a
//! bounded rate). With `--exec`, each datagram runs the program in its own task (the
//! datagram on stdin, its stdout as the reply), at most `--max-conns` at once (default
//! [`DEFAULT_PROGRAMS`]).

use std::io;
use std::sync::Arc;

use super::{Handler, OverLimit, Shared};
use crate::access::gate::{self, Gate};
use crate::behaviour::exec::{self, ClientInfo, DatagramEnd, ExecSpec};
use crate::obs::hexdump::Direction;
use crate::obs::{ErrorKind, Event, Tally};
use socket2::SockAddr;

use crate::transport::batch::{self, RecvBatch};
use crate::transport::{DatagramSocket, MAX_DATAGRAM, PeerAddr};

/// Programs run at once for `--exec` on a datagram endpoint when `--max-conns` is not set.
pub const DEFAULT_PROGRAMS: usize = 64;

/// Receives and answers datagrams until shutdown.
pub(crate) async fn receive_loop(socket: DatagramSocket, shared: &Arc<Shared>) {
    match &shared.handler {
        Handler::Exec(spec) => exec_loop(socket, spec, shared).await,
        // `Server::bind` refuses chat on datagram endpoints.
        Handler::Respond | Handler::Chat(_) => respond_loop(socket, shared).await,
    }
}

/// Answers each datagram with the responder, a batch of datagrams per system call.
async fn respond_loop(socket: DatagramSocket, shared: &Arc<Shared>) {
    let mut batch = RecvBatch::new();
    let mut to_send: Vec<(usize, SockAddr)> = Vec::with_capacity(batch::BATCH);
    let mut tally = Tally::default();
    let mut gate = Gate::default();
    let stop = shared.shutdown.cancelled();
    tokio::pin!(stop);
    loop {
        let ready = tokio::select! {
            biased;
            () = stop.as_mut() => break,
            ready = socket.readable() => ready,
        };
        if let Err(e) = ready {
            tracing::warn!("waiting for datagrams failed: {e}");
            continue;
        }
        // Drain a few batches, then let other tasks (and the shutdown check) in.
        let mut drained = false;
        for _ in 0..BATCHES_PER_WAKE {
            match socket.try_recv_batch(&mut batch) {
                Ok(_) => {
                    answer_batch(&socket, &batch, &mut to_send, shared, &mut tally, &mut gate)
                        .await;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) => {
                    // E.g. an ICMP error queued on the socket: it concerns one peer only.
                    tracing::debug!("receive failed: {e}");
                    break;
                }
            }
        }
        // Once per wake-up (this shard's own counters), so live metrics stay current.
        shared.stats.absorb(&mut tally);
        if !drained {
            // Still more queued (a flood): let the other tasks on this thread run before
            // the next batches; `readable()` alone would return at once and keep the
            // thread, so a flood would delay TCP clients.
            tokio::task::yield_now().await;
        }
    }
    shared.stats.absorb(&mut tally);
}

/// Batches drained per readiness event before yielding.
const BATCHES_PER_WAKE: usize = 4;

/// Answers one received batch: checks and logs each datagram, then sends every reply in
/// as few system calls as possible.
async fn answer_batch(
    socket: &DatagramSocket,
    batch: &RecvBatch,
    to_send: &mut Vec<(usize, SockAddr)>,
    shared: &Shared,
    tally: &mut Tally,
    gate: &mut Gate,
) {
    let responder = &shared.options.responder;
    let hex = shared.options.layers.hex.as_ref();
    let needs_peer =
        !shared.options.access.is_open() || shared.events.wants_messages() || hex.is_some();
    to_send.clear();
    for i in 0..batch.len() {
        let datagram = batch.datagram(i);
        let sender = batch.sender(i);
        // Raw datagrams have no terminator, so an answer is one slice.
        let answer = responder.answer(datagram, &[]).map(|[reply, _]| reply);
        if needs_peer {
            let peer = sender
                .as_socket()
                .map_or_else(|| PeerAddr::Unix(Box::new(sender.clone())), PeerAddr::Ip);
            if !gate.admit(&peer, "datagram", shared) {
                continue;
            }
            shared.events.emit(Event::Datagram {
                peer: &peer,
                received: datagram,
                sent: answer,
            });
            if let Some(hex) = hex {
                let peer = peer.to_string();
                hex.datagram(Direction::Received, &peer, datagram);
                if let Some(reply) = answer {
                    hex.datagram(Direction::Sent, &peer, reply);
                }
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
        (bytes, to)
    };
    tally.bytes_out += socket.send_batch(to_send.len(), reply).await;
    tally.replies += to_send.len() as u64;
}

/// Runs the program for each datagram, each run in its own tracked task.
async fn exec_loop(socket: DatagramSocket, spec: &ExecSpec, shared: &Arc<Shared>) {
    let socket = Arc::new(socket);
    let limits = &shared.options.limits;
    // With --max-conns the limit is server-wide (shared by every thread); without, each
    // thread runs at most DEFAULT_PROGRAMS programs.
    let slots = shared
        .slots
        .clone()
        .or_else(|| Some(Arc::new(tokio::sync::Semaphore::new(DEFAULT_PROGRAMS))));
    let mut buf = vec![0u8; shared.options.buffer_size.max(MAX_DATAGRAM)];
    let mut gate = Gate::default();
    let mut ids = shared.ids.iter();
    loop {
        let Some((len, peer)) = gate.next_admitted(&socket, &mut buf, &**shared).await else {
            break;
        };
        let slot = match limits.over_limit {
            OverLimit::Wait => match gate::wait_for_slot(slots.as_ref(), &**shared).await {
                Some(slot) => slot,
                None => break,
            },
            OverLimit::Refuse => {
                match gate.try_slot(slots.as_ref(), &peer, "datagram", &**shared) {
                    Some(slot) => slot,
                    None => continue,
                }
            }
        };
        let id = ids.next().unwrap_or_default();
        let datagram = buf[..len].to_vec();
        let (socket, task_shared, spec) = (Arc::clone(&socket), Arc::clone(shared), spec.clone());
        shared.shutdown.spawn(async move {
            run_program(&socket, &spec, &datagram, &peer, id, &task_shared).await;
            drop(slot);
        });
    }
}

/// Runs the program for one datagram and sends its output back as the reply.
async fn run_program(
    socket: &DatagramSocket,
    spec: &ExecSpec,
    datagram: &[u8],
    peer: &PeerAddr,
    id: u64,
    shared: &Shared,
) {
    let limits = &shared.options.limits;
    let time_limit = limits.message_timeout.or(limits.idle_timeout);
    let client = ClientInfo { conn: id, peer };
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
        tracing::warn!(%peer, "datagram from {peer}: {problem}");
    }
    let reply = (!run.output.is_empty()).then_some(run.output.as_slice());
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
            Err(e) => tracing::info!(%peer, "could not send the reply: {e}"),
        }
    }
    shared.stats.absorb(&mut tally);
}
