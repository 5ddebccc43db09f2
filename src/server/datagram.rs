//! The datagram loop: receive, answer the sender at its own address, repeat.
//!
//! One loop serves every sender; nothing waits on a client, so a silent client cannot
//! block anyone. When the socket is readable the loop drains it (up to a batch, then yields
//! to other tasks) before waiting again, so a busy server pays for readiness once per
//! batch, not once per datagram.

use std::io;
use std::sync::Arc;

use super::Shared;
use crate::obs::hexdump::Direction;
use crate::obs::{Event, Tally};
use crate::transport::{DatagramSocket, MAX_DATAGRAM, PeerAddr};

/// Datagrams handled per readiness event before yielding to other tasks.
const BATCH: usize = 64;

/// Receives and answers datagrams until shutdown.
pub(crate) async fn receive_loop(socket: DatagramSocket, shared: &Arc<Shared>) {
    // Whole datagrams, always: a receive buffer smaller than the datagram would truncate it.
    let mut buf = vec![0u8; shared.options.buffer_size.max(MAX_DATAGRAM)];
    let mut output = Vec::with_capacity(1024);
    let mut tally = Tally::default();
    loop {
        let ready = tokio::select! {
            biased;
            () = shared.shutdown.triggered() => break,
            ready = socket.readable() => ready,
        };
        if let Err(e) = ready {
            tracing::warn!("waiting for datagrams failed: {e}");
            continue;
        }
        for _ in 0..BATCH {
            match socket.try_recv_from(&mut buf) {
                Ok((len, peer)) => {
                    answer(&socket, &buf[..len], &peer, &mut output, shared, &mut tally).await;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // E.g. an ICMP error queued on the socket: it concerns one peer only.
                    tracing::debug!("receive failed: {e}");
                    break;
                }
            }
        }
        if tally.messages >= Tally::FLUSH_EVERY {
            shared.stats.absorb(&mut tally);
        }
    }
    shared.stats.absorb(&mut tally);
}

/// Answers one datagram; a failed send concerns that sender only and is logged.
async fn answer(
    socket: &DatagramSocket,
    datagram: &[u8],
    peer: &PeerAddr,
    output: &mut Vec<u8>,
    shared: &Shared,
    tally: &mut Tally,
) {
    output.clear();
    let hex = shared.options.layers.hex.as_ref();
    if let Some(hex) = hex {
        hex.datagram(Direction::Received, &peer.to_string(), datagram);
    }
    let replied = shared.options.responder.respond(datagram, &[], output);
    tally.messages += 1;
    tally.bytes_in += datagram.len() as u64;
    shared.events.emit(Event::Datagram {
        peer,
        received: datagram,
        sent: replied.then_some(output.as_slice()),
    });
    if replied {
        if let Some(hex) = hex {
            hex.datagram(Direction::Sent, &peer.to_string(), output);
        }
        match socket.send_to(output, peer).await {
            Ok(sent) => tally.bytes_out += sent as u64,
            Err(e) => tracing::info!(%peer, "could not send the reply: {e}"),
        }
    }
}
