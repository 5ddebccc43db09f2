//! The network side of a benchmark: one [`Driver`] per traffic pattern, over whatever
//! transport the endpoint names (TCP, Unix stream and, through
//! [`connect_stream`], TLS with the run's one client configuration; UDP and Unix datagram through
//! [`DatagramSocket`]).
//!
//! * [`HelloDriver`]: the note's exchange, one connection per request: connect, send,
//!   read the reply, close. The connect is inside the timed exchange.
//! * [`EchoDriver`]: one persistent connection; send a message, wait for the whole reply.
//! * [`StreamDriver`]: one persistent connection; each exchange is one write.
//! * [`DatagramDriver`]: one connected datagram socket; send a request, wait for a reply.
//!   After a timeout (a lost datagram) the socket is replaced, so a late reply can never
//!   be taken for the answer to the next request.
//!
//! Each driver allocates its buffers once and shares the request bytes with every other
//! connection; the hot path allocates nothing (errors build their message when they
//! happen, which is off the hot path).

use std::cell::RefCell;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::measure::Driver;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::transport::{ConnectOptions, DatagramSocket, MAX_DATAGRAM, Stream, connect_stream};

/// Most bytes one "first read" reply takes (the note reads 1024); a buffer of this size
/// per connection keeps 10,000 connections within 40 MB.
const FIRST_READ_SIZE: usize = 4096;

thread_local! {
    /// One receive buffer per thread for every datagram socket on it, large enough for
    /// any datagram. A datagram is read in one synchronous call, so the borrow never
    /// spans an await and the sockets of a thread can share it.
    static DATAGRAM_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM + 1]);
}

/// When a reply is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyLength {
    /// The first read that returns data (the note's `recv(1024)`); any datagram.
    FirstRead,
    /// Exactly this many bytes (at least this many for a datagram).
    Bytes(usize),
}

/// What every driver of a run shares: where to go and what to send.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where to connect.
    pub endpoint: Arc<Endpoint>,
    /// The request (or, streaming, the chunk written each time), shared by every
    /// connection.
    pub request: Bytes,
    /// When a reply is complete.
    pub reply: ReplyLength,
    /// Limit for connecting, and the TLS client shared by every connection.
    pub connect: ConnectOptions,
}

impl Target {
    /// An I/O error while talking to the target, named for what it means to a benchmark.
    fn io_error(&self, source: io::Error, during: &str) -> Error {
        if source.kind() == io::ErrorKind::ConnectionRefused {
            return Error::Refused {
                endpoint: (*self.endpoint).clone(),
            };
        }
        Error::exchange(source, self.endpoint.to_string(), during)
    }

    /// A read buffer big enough for one reply.
    fn reply_buffer(&self, minimum: usize) -> Vec<u8> {
        let size = match self.reply {
            ReplyLength::FirstRead => minimum,
            ReplyLength::Bytes(n) => n.max(1),
        };
        vec![0; size]
    }
}

/// Reads one reply as `length` says; `Err(UnexpectedEof)` if the peer closes first.
async fn read_reply<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut [u8],
    length: ReplyLength,
) -> io::Result<()> {
    match length {
        ReplyLength::FirstRead => {
            if reader.read(buffer).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(())
        }
        ReplyLength::Bytes(n) => {
            let end = n.min(buffer.len());
            reader.read_exact(&mut buffer[..end]).await.map(|_| ())
        }
    }
}

/// The note's exchange: a new connection per request.
#[derive(Debug)]
pub struct HelloDriver {
    /// Where and what.
    target: Target,
    /// Reused for every reply.
    buffer: Vec<u8>,
}

impl HelloDriver {
    /// A driver for one connection slot.
    pub fn new(target: Target) -> HelloDriver {
        let buffer = target.reply_buffer(FIRST_READ_SIZE);
        HelloDriver { target, buffer }
    }
}

impl Driver for HelloDriver {
    async fn prepare(&mut self) -> Result<()> {
        Ok(())
    }

    async fn exchange(&mut self) -> Result<u64> {
        let mut stream = connect_stream(&self.target.endpoint, self.target.connect.clone()).await?;
        stream
            .write_all(&self.target.request)
            .await
            .map_err(|e| self.target.io_error(e, "while sending the request"))?;
        read_reply(&mut stream, &mut self.buffer, self.target.reply)
            .await
            .map_err(|e| self.target.io_error(e, "before the whole reply arrived"))?;
        Ok(self.target.request.len() as u64)
    }

    fn abandon(&mut self) {}
}

/// Request and reply over one persistent connection.
#[derive(Debug)]
pub struct EchoDriver {
    /// Where and what.
    target: Target,
    /// The connection, opened by `prepare` and dropped after a failure.
    stream: Option<Stream>,
    /// Reused for every reply.
    buffer: Vec<u8>,
}

impl EchoDriver {
    /// A driver for one connection.
    pub fn new(target: Target) -> EchoDriver {
        let buffer = target.reply_buffer(FIRST_READ_SIZE);
        EchoDriver {
            target,
            stream: None,
            buffer,
        }
    }
}

impl Driver for EchoDriver {
    async fn prepare(&mut self) -> Result<()> {
        if self.stream.is_none() {
            let stream = connect_stream(&self.target.endpoint, self.target.connect.clone()).await?;
            self.stream = Some(stream);
        }
        Ok(())
    }

    async fn exchange(&mut self) -> Result<u64> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(not_connected());
        };
        stream
            .write_all(&self.target.request)
            .await
            .map_err(|e| self.target.io_error(e, "while sending a message"))?;
        read_reply(stream, &mut self.buffer, self.target.reply)
            .await
            .map_err(|e| self.target.io_error(e, "before the whole reply arrived"))?;
        Ok(self.target.request.len() as u64)
    }

    fn abandon(&mut self) {
        self.stream = None;
    }
}

/// Writes as fast as the connection takes them, to a server that discards.
#[derive(Debug)]
pub struct StreamDriver {
    /// Where, and the chunk to write.
    target: Target,
    /// The connection, opened by `prepare` and dropped after a failure.
    stream: Option<Stream>,
}

impl StreamDriver {
    /// A driver for one connection.
    pub fn new(target: Target) -> StreamDriver {
        StreamDriver {
            target,
            stream: None,
        }
    }
}

impl Driver for StreamDriver {
    async fn prepare(&mut self) -> Result<()> {
        if self.stream.is_none() {
            let stream = connect_stream(&self.target.endpoint, self.target.connect.clone()).await?;
            self.stream = Some(stream);
        }
        Ok(())
    }

    async fn exchange(&mut self) -> Result<u64> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(not_connected());
        };
        match stream.write(&self.target.request).await {
            Ok(0) => Err(self.target.io_error(
                io::ErrorKind::WriteZero.into(),
                "while streaming (it accepts no more data)",
            )),
            Ok(n) => Ok(n as u64),
            Err(e) => Err(self.target.io_error(e, "while streaming")),
        }
    }

    fn abandon(&mut self) {
        self.stream = None;
    }
}

/// Request and reply datagrams over one connected socket.
#[derive(Debug)]
pub struct DatagramDriver {
    /// Where and what.
    target: Target,
    /// The socket, replaced after a failure or a lost datagram.
    socket: Option<DatagramSocket>,
}

impl DatagramDriver {
    /// A driver for one socket.
    pub fn new(target: Target) -> DatagramDriver {
        DatagramDriver {
            target,
            socket: None,
        }
    }
}

/// Waits for one datagram on a connected socket and returns its length, reading it into
/// the thread's shared buffer.
async fn receive_datagram(socket: &DatagramSocket) -> io::Result<usize> {
    loop {
        socket.readable().await?;
        let received = DATAGRAM_BUFFER.with(|buffer| {
            // The borrow lasts for this one non-blocking call only (see DATAGRAM_BUFFER).
            let mut buffer = buffer.borrow_mut();
            socket.try_recv_from(&mut buffer).map(|(n, _)| n)
        });
        match received {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

impl Driver for DatagramDriver {
    async fn prepare(&mut self) -> Result<()> {
        if self.socket.is_none() {
            self.socket = Some(DatagramSocket::connect(&self.target.endpoint).await?);
        }
        Ok(())
    }

    async fn exchange(&mut self) -> Result<u64> {
        let Some(socket) = self.socket.as_ref() else {
            return Err(not_connected());
        };
        socket
            .send(&self.target.request)
            .await
            .map_err(|e| self.target.io_error(e, "while sending a datagram"))?;
        let received = receive_datagram(socket)
            .await
            .map_err(|e| self.target.io_error(e, "while waiting for the reply"))?;
        if let ReplyLength::Bytes(expected) = self.target.reply
            && received < expected
        {
            return Err(Error::ClosedEarly {
                peer: self.target.endpoint.to_string(),
                during: format!("with a {received}-byte reply where {expected} were expected"),
            });
        }
        Ok(self.target.request.len() as u64)
    }

    fn abandon(&mut self) {
        self.socket = None;
    }
}

/// `exchange` without a successful `prepare`: a bug in the caller, reported as an error.
fn not_connected() -> Error {
    Error::Io {
        doing: "benchmark exchange".into(),
        source: io::Error::new(io::ErrorKind::NotConnected, "no connection was prepared"),
    }
}
