//! Test helpers: run the real `sockit` binary (or any program) with bounded waits, and
//! start in-process servers on port 0.
//!
//! Every wait here has a deadline; on failure the helpers panic with the command line,
//! everything the process printed, and what was expected, so a failing test explains itself.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sockit::obs::{EventLog, Summary};
use sockit::{Endpoint, ServeOptions, Server, Shutdown};

/// The longest any single wait in a test may take. Generous, so a loaded CI machine does
/// not fail a correct test; a hung test still ends.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the binary under test.
pub fn sockit_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sockit"))
}

/// A `sockit` command with colour off, ready for arguments.
pub fn sockit_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(sockit_bin());
    cmd.args(args).env("NO_COLOR", "1").env_remove("RUST_LOG");
    cmd
}

/// Runs `sockit ARGS` to completion (stdin from `input`), killing it after [`TIMEOUT`].
pub fn run_sockit(args: &[&str], input: Option<&[u8]>) -> Output {
    let mut cmd = assert_cmd::Command::new(sockit_bin());
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .timeout(TIMEOUT);
    if let Some(input) = input {
        cmd.write_stdin(input.to_vec());
    }
    match cmd.output() {
        Ok(output) => output,
        Err(e) => panic!("could not run sockit {args:?}: {e}"),
    }
}

/// The exit code, or a panic naming the signal that killed the process.
pub fn code(output: &Output) -> i32 {
    output
        .status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {}", describe(output)))
}

/// Everything about a finished run, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A running background process whose output is read line by line.
pub struct Proc {
    child: Child,
    label: String,
    lines: Receiver<String>,
    /// Every stdout line seen so far.
    pub stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
    /// Signalled when stderr reaches end-of-file, so what a process prints last (the
    /// summary) is read before a test looks at it.
    stderr_done: Receiver<()>,
}

impl Proc {
    /// Starts `cmd` with piped stdout/stderr (stdin closed unless `with_stdin`).
    pub fn spawn(mut cmd: Command, with_stdin: bool) -> Proc {
        let label = format!("{cmd:?}");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if with_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        let (tx, lines) = channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        let (done_tx, stderr_done) = channel();
        if let Some(mut err) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let _done = DropSignal(done_tx);
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        Proc {
            child,
            label,
            lines,
            stdout: Vec::new(),
            stderr,
            stderr_done,
        }
    }

    /// Starts `sockit ARGS` in the background.
    pub fn sockit(args: &[&str]) -> Proc {
        Proc::spawn(sockit_command(args), false)
    }

    /// The child's stdin, when started `with_stdin`.
    pub fn stdin(&mut self) -> &mut std::process::ChildStdin {
        match self.child.stdin.as_mut() {
            Some(stdin) => stdin,
            None => panic!("{} was started without stdin", self.label),
        }
    }

    /// Closes the child's stdin (EOF).
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A full report for panics.
    pub fn report(&self) -> String {
        format!(
            "process: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.label,
            self.stdout.join("\n"),
            self.stderr()
        )
    }

    /// Waits for the next stdout line matching `pred` (earlier lines are kept in `stdout`).
    pub fn wait_for_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.try_wait_for_line(what, pred) {
            Some(line) => line,
            None => panic!("stdout closed while waiting for {what}\n{}", self.report()),
        }
    }

    /// Like [`Proc::wait_for_line`], but `None` when stdout closes first (the process
    /// exited); still panics on timeout.
    pub fn try_wait_for_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("timed out waiting for {what}\n{}", self.report())
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Reads `n` more stdout lines.
    pub fn next_lines(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| self.wait_for_line("another line", |_| true))
            .collect()
    }

    /// Waits for the note's "server start at: ADDR" line and returns ADDR.
    pub fn listening(&mut self) -> String {
        let line = self.wait_for_line("the listening line", |l| l.starts_with("server start at: "));
        line.trim_start_matches("server start at: ").to_string()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        send_signal(&self.child, signal);
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for exit; returns the status and the rest of stdout.
    pub fn wait_exit(&mut self) -> ExitStatus {
        match exit_within_timeout(&mut self.child) {
            Ok(Some(status)) => {
                // Collect what the reader thread still has.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    self.stdout.push(line);
                }
                // Bounded: a program the process started may still hold its stderr.
                let _ = self.stderr_done.recv_timeout(STDERR_EOF_WAIT);
                status
            }
            Ok(None) => panic!("process did not exit in time\n{}", self.report()),
            Err(e) => panic!("wait failed: {e}\n{}", self.report()),
        }
    }
}

/// The longest [`Proc::wait_exit`] waits for stderr's end after the process exited.
const STDERR_EOF_WAIT: Duration = Duration::from_secs(5);

/// Sends `()` when dropped: the stderr reader's "done", however its loop ends.
struct DropSignal(std::sync::mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to a child this test started.
pub fn send_signal(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// Waits at most [`TIMEOUT`] for `child` to exit: its status, or `None` if it is still
/// running then.
pub fn exit_within_timeout(child: &mut Child) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match child.try_wait()? {
            Some(status) => return Ok(Some(status)),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            None => return Ok(None),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server running inside the test process, on port 0 (or a temp Unix path).
pub struct TestServer {
    /// The endpoint actually bound.
    pub endpoint: Endpoint,
    /// Triggers shutdown.
    pub shutdown: Shutdown,
    /// Resolves to the summary once the server has drained.
    pub done: tokio::task::JoinHandle<Summary>,
}

/// Binds `endpoint` with `options` and runs it in the background (quiet events).
pub async fn start_server(
    endpoint: &str,
    options: impl FnOnce(&Endpoint) -> ServeOptions,
) -> TestServer {
    let endpoint: Endpoint = endpoint.parse().unwrap_or_else(|e| panic!("{e}"));
    let server = Server::bind(&endpoint, options(&endpoint))
        .await
        .unwrap_or_else(|e| panic!("bind {endpoint}: {e}"));
    let endpoint = server.local_endpoint().clone();
    let shutdown = Shutdown::new();
    let done = tokio::spawn(server.run(EventLog::disabled(), shutdown.clone()));
    TestServer {
        endpoint,
        shutdown,
        done,
    }
}

/// A blocking TCP connection to `addr` whose reads and writes give up after [`TIMEOUT`],
/// so a server that stops answering fails the test instead of hanging it.
pub fn connect_tcp(addr: &str) -> std::net::TcpStream {
    let stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    stream
        .set_write_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    stream
}

/// Sends `message` on `stream`, then reads until the server closes: the note's exchange
/// with a server that closes after its reply.
pub fn exchange_to_eof(stream: &mut std::net::TcpStream, message: &[u8]) -> Vec<u8> {
    use std::io::Write;
    stream.write_all(message).unwrap_or_else(|e| panic!("{e}"));
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("{e}"));
    reply
}

/// Awaits `future` for at most [`TIMEOUT`], panicking with `what` if it takes longer.
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Waits (at most [`TIMEOUT`]) for a thread's result; panics naming `what` if the
/// thread panicked.
pub async fn join_within<T: Send + 'static>(what: &str, handle: std::thread::JoinHandle<T>) -> T {
    within(what, tokio::task::spawn_blocking(move || handle.join()))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|_| panic!("{what}: the thread panicked"))
}

/// The Python interpreter used for interop tests.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Path of a file under `tests/`.
pub fn test_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(relative)
}

/// A one-connection TCP server on a free loopback port, running `serve` on its thread.
pub fn one_shot_server<T: Send + 'static>(
    serve: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (String, thread::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap_or_else(|e| panic!("accept: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).ok();
        serve(stream)
    });
    (addr, handle)
}

/// Waits for a [`one_shot_server`] thread and returns what it returned.
pub fn join<T>(handle: thread::JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|_| panic!("the test server thread panicked"))
}
