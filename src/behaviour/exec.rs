//! `--exec` / `--sh-exec`: a program per connection (or per datagram), its stdin and stdout
//! wired to the client.
//!
//! No shell is involved for `--exec PROGRAM ARGS…`: the words are passed to `execve` as
//! given. `--sh-exec CMD` is the explicit opt-in to `sh -c CMD`.
//!
//! What this module guarantees:
//! * **Half-close both ways.** When the client shuts down its write side, the program's
//!   stdin is closed once every byte before it was delivered; when the program closes its
//!   stdout, the socket's write side is shut down once every byte was sent.
//! * **Bounded memory.** At most [`PIPE_BUFFER`] bytes wait in each direction. A program
//!   that never reads stops the server reading from its client (TCP flow control pushes
//!   back); a client that never reads stops the server reading the program's output.
//! * **No zombies, no leftovers.** Each program runs in its own process group. When the
//!   exchange ends for any reason (the program finished, the client went away, the idle
//!   timeout, server shutdown) the whole group gets `SIGKILL`, and the program is always
//!   reaped (`wait`ed) before the connection task ends; `kill_on_drop` is the backstop if
//!   the task itself is dropped.
//! * **No escape.** A descendant that left the group (`setsid`, a daemon's double fork)
//!   is not lost: `sockit serve` makes itself a child subreaper
//!   (`PR_SET_CHILD_SUBREAPER`, [`adopt_escaped_descendants`]), so when its parent dies it
//!   becomes the server's child, and each connection's end sweeps the server's children
//!   for processes that are not running programs and carry that connection's
//!   `SOCKIT_CONN` (or none), killing and reaping them. A subreaper needs no
//!   privileges, cgroups or pidfd support, and it finds every escapee without scanning
//!   the whole process table; the marker keeps one connection's sweep away from another
//!   live connection's processes.
//! * **A client that left ends its program.** Once the client closed its side, the
//!   program may stay silent at most [`ExecSpec::eof_wait`] (socat's `-t`), then it is
//!   killed; output restarts the wait, so a program still answering is never cut.
//!
//! The program's stderr goes where [`ExecStderr`] says: the server's own stderr by default
//! (as ncat does), into the socket with stdout (`2>&1`), or nowhere.
//!
//! The program learns who it serves from its environment: `SOCKIT_CONN` (connection id),
//! `SOCKIT_PEER` (the client as printed in logs), and for IP clients `SOCKIT_PEER_ADDR`
//! and `SOCKIT_PEER_PORT`. For datagrams `SOCKIT_CONN` numbers the datagram. With
//! `--proxy-protocol`, `SOCKIT_VIA` is the load balancer that sent the header (the socket's
//! own peer; `SOCKIT_PEER` is the client the header names). With `--client-ca`, a client
//! that presented a certificate is named by `SOCKIT_TLS_CLIENT_SUBJECT`,
//! `SOCKIT_TLS_CLIENT_CN`, `SOCKIT_TLS_CLIENT_SANS` and `SOCKIT_TLS_CLIENT_SHA256`
//! ([`ClientIdentity::environment`]).
//!
//! The code here sees byte streams (`AsyncRead + AsyncWrite`), never sockets, so it works
//! the same over TCP, Unix sockets and TLS, and is tested over in-memory pipes.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

use crate::shutdown::Shutdown;
use crate::transport::PeerAddr;
use crate::transport::client_cert::ClientIdentity;

/// Bytes held per direction between the client and the program: the bound on what the
/// server buffers for one exec connection, whatever either side does.
pub const PIPE_BUFFER: usize = 16 * 1024;

/// How long a program that closed its stdout (with nothing more to read) gets to exit
/// before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// After the program finished, how long the server keeps reading (and dropping) what the
/// client still sends before closing. Closing a socket with unread input makes the kernel
/// send a reset, which can destroy output the client has not read yet; this "lingering
/// close" gives the client time to see the end of the output and close first.
const LINGER: Duration = Duration::from_secs(2);

/// How long to wait for a killed program to be reaped. `SIGKILL` cannot be ignored, so
/// this only runs out for a process stuck in the kernel (uninterruptible sleep).
const REAP_WAIT: Duration = Duration::from_secs(5);

/// Which program to run, and what to do with its stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// The program: a name looked up in `PATH`, or a path.
    pub program: OsString,
    /// Its arguments, passed as they are (no shell, no splitting).
    pub args: Vec<OsString>,
    /// Where the program's stderr goes.
    pub stderr: ExecStderr,
    /// After the client closed its side, how long the program may write nothing before it
    /// is killed (`--exec-eof-wait`); `None` waits as long as the idle timeout allows.
    pub eof_wait: Option<Duration>,
}

/// Default for [`ExecSpec::eof_wait`]: socat's half-close timeout.
pub const DEFAULT_EOF_WAIT: Duration = Duration::from_millis(500);

/// Where a program's stderr goes (`--exec-stderr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ExecStderr {
    /// The server's own stderr, next to its diagnostics (as ncat does).
    #[default]
    Inherit,
    /// Into the socket, mixed with stdout, like `2>&1` (socat's `stderr` option).
    Socket,
    /// Discarded (`2>/dev/null`).
    Null,
}

/// Who a program serves; given to it in its environment.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// Connection id as in the server's events; for datagrams, the datagram's number.
    pub conn: u64,
    /// The client's address.
    pub peer: &'a PeerAddr,
    /// With `--proxy-protocol`: the load balancer the header came from (`SOCKIT_VIA`),
    /// since `peer` is only what its header claims.
    pub via: Option<&'a PeerAddr>,
    /// With `--client-ca`: the verified certificate the client presented.
    pub certificate: Option<&'a ClientIdentity>,
}

impl<'a> ClientInfo<'a> {
    /// A client known only by its connection id and address.
    pub fn new(conn: u64, peer: &'a PeerAddr) -> ClientInfo<'a> {
        ClientInfo {
            conn,
            peer,
            via: None,
            certificate: None,
        }
    }
}

/// How an exec connection ended.
#[derive(Debug)]
pub enum ExecEnd {
    /// The program's output ended and it exited (or stopped reading): the normal end.
    Finished,
    /// Reading from or writing to the client failed (reset, client gone mid-output).
    ClientFailed(io::Error),
    /// Nothing moved in either direction for this long.
    Idle(Duration),
    /// The client closed its side and the program then wrote nothing for this long.
    ClientClosed(Duration),
    /// The server is shutting down.
    Shutdown,
    /// The program could not be started (not found, not executable, out of processes).
    CannotStart(io::Error),
}

/// What happened on one exec connection: the outcome and the byte counts.
#[derive(Debug)]
pub struct ExecReport {
    /// Why it ended.
    pub end: ExecEnd,
    /// Bytes read from the client (including any dropped after the program finished).
    pub bytes_in: u64,
    /// Bytes written to the client.
    pub bytes_out: u64,
    /// How the program ended, once reaped (`None` if it never started or could not be
    /// waited for).
    pub status: Option<ExitStatus>,
    /// Whether the server had to kill the program (it was still running at the end).
    pub killed: bool,
}

impl ExecSpec {
    /// `--exec PROGRAM ARGS…`: run the program directly.
    pub fn program(program: OsString, args: Vec<OsString>) -> ExecSpec {
        ExecSpec {
            program,
            args,
            stderr: ExecStderr::default(),
            eof_wait: Some(DEFAULT_EOF_WAIT),
        }
    }

    /// `--sh-exec CMD`: run `sh -c CMD`.
    pub fn shell(command: OsString) -> ExecSpec {
        ExecSpec::program("sh".into(), vec!["-c".into(), command])
    }

    /// The command line, for logs (`cat -n`, `sh -c 'echo hi'`).
    pub fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|word| quote(word))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A word as a shell would need it, for display only.
fn quote(word: &OsStr) -> String {
    let text = word.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Checks, at start-up, that `program` can be run, so a typo fails once with a clear
/// message instead of on every connection.
///
/// # Errors
/// A sentence naming the program and what to do.
pub fn check_program(program: &OsStr) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let shown = program.to_string_lossy();
    if program.is_empty() {
        return Err("--exec needs a program name".into());
    }
    if program.as_bytes().contains(&b'/') {
        return if is_executable(std::path::Path::new(program)) {
            Ok(())
        } else {
            Err(format!(
                "--exec: {shown} is not an executable file; check the path and its permissions"
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program))) {
        Ok(())
    } else {
        Err(format!(
            "--exec: program {shown:?} not found in PATH; give its full path or install it \
             (use --sh-exec for a shell command line)"
        ))
    }
}

/// Whether `path` is a regular file with an execute bit.
fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A started program: the child, its process group, and our ends of its pipes.
struct Running {
    child: Child,
    group: ProcessGroup,
    /// Whose program it is (`SOCKIT_CONN`), for the sweep of escaped descendants.
    conn: u64,
    stdin: Option<ChildStdin>,
    /// The program's stdout (and stderr with [`ExecStderr::Socket`]).
    output: pipe::Receiver,
}

/// Starts the program in a new process group with piped stdin/stdout.
fn start(spec: &ExecSpec, client: &ClientInfo<'_>) -> io::Result<Running> {
    // Our own pipe for the output, so stderr can share it for `2>&1`.
    let (output_read, output_write) = std::io::pipe()?;
    let stderr = match spec.stderr {
        ExecStderr::Inherit => Stdio::inherit(),
        ExecStderr::Null => Stdio::null(),
        ExecStderr::Socket => Stdio::from(output_write.try_clone()?),
    };
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(output_write))
        .stderr(stderr)
        .kill_on_drop(true)
        // Its own group: the server can kill everything it started (a `sh -c` pipeline
        // included), and a Ctrl-C at the terminal reaches the server, which then decides.
        .process_group(0)
        // Socket activation is sockit's, not the program's (the descriptors are
        // close-on-exec already; this keeps the environment honest too).
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env("SOCKIT_CONN", client.conn.to_string())
        .env("SOCKIT_PEER", client.peer.to_string());
    if let PeerAddr::Ip(addr) = client.peer {
        command
            .env("SOCKIT_PEER_ADDR", addr.ip().to_string())
            .env("SOCKIT_PEER_PORT", addr.port().to_string());
    }
    if let Some(via) = client.via {
        command.env("SOCKIT_VIA", via.to_string());
    }
    if let Some(identity) = client.certificate {
        command.envs(identity.environment());
    }
    // Registered under the lock a sweep takes, so no sweep sees it unregistered.
    let mut programs = orphans::programs();
    let mut child = command.spawn()?;
    if let Some(pid) = child.id() {
        programs.insert(pid);
    }
    drop(programs);
    // The command holds our copies of the pipe's write end; dropping it closes them, so
    // end-of-file on `output` means the program (and whatever it started) closed it.
    drop(command);
    let group = ProcessGroup(child.id().and_then(|pid| i32::try_from(pid).ok()));
    let stdin = child.stdin.take();
    let output = pipe::Receiver::from_owned_fd(OwnedFd::from(output_read))?;
    Ok(Running {
        child,
        group,
        conn: client.conn,
        stdin,
        output,
    })
}

/// The process group a program leads (its id is the program's pid).
#[derive(Debug, Clone, Copy)]
struct ProcessGroup(Option<i32>);

impl ProcessGroup {
    /// Sends `SIGKILL` to every process in the group.
    ///
    /// Safe against pid reuse: the group id stays reserved while any member lives (the
    /// kernel keeps the pid allocated), and the leader is killed before it is reaped; once
    /// the group is empty the call fails with `ESRCH`, which is ignored.
    fn kill(self) {
        use rustix::process::{Pid, Signal, kill_process_group};
        let Some(pgid) = self.0.filter(|&pgid| pgid > 1).and_then(Pid::from_raw) else {
            return;
        };
        let _ = kill_process_group(pgid, Signal::KILL);
    }
}

/// Kills the program's group and makes sure the program is reaped; returns whether it was
/// still running (so the server killed it).
async fn finish(
    child: &mut Child,
    group: ProcessGroup,
    conn: u64,
    exited: &mut Option<io::Result<ExitStatus>>,
) -> bool {
    let still_running = exited.is_none();
    let pid = child.id();
    group.kill();
    if still_running {
        // `start_kill` covers a program that left its group (setsid) but is still our child.
        let _ = child.start_kill();
        match tokio::time::timeout(REAP_WAIT, child.wait()).await {
            Ok(status) => *exited = Some(status),
            Err(_) => tracing::error!(
                "a killed program did not exit within {}; it will be reaped when it does",
                humantime::format_duration(REAP_WAIT)
            ),
        }
    }
    if let Some(pid) = pid {
        orphans::programs().remove(&pid);
    }
    if ADOPTING.load(std::sync::atomic::Ordering::Relaxed) {
        // Whatever escaped the group is the server's child now; off the async threads, as
        // it reads /proc and waits for the killed to die.
        let _ = tokio::task::spawn_blocking(move || orphans::sweep(conn)).await;
    }
    still_running
}

/// Set once this process adopts its programs' escaped descendants.
static ADOPTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes this process a child subreaper, so a program's descendant whose parent dies
/// becomes its child instead of init's, and turns on the sweep that kills and reaps such
/// descendants when their connection ends.
///
/// For a process whose only children are the programs it runs (`sockit serve --exec`):
/// the sweep reaps every child that is not a running program and that no other
/// connection claims, which would take the children of a program embedding this library.
pub fn adopt_escaped_descendants() {
    match rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        Ok(()) => ADOPTING.store(true, std::sync::atomic::Ordering::Relaxed),
        Err(e) => tracing::warn!(
            "cannot become a child subreaper ({e}); processes a program starts in their own session may outlive it"
        ),
    }
}

/// The server's children that are not running programs: escaped descendants of finished
/// programs, adopted by the subreaper.
mod orphans {
    use std::collections::HashSet;
    use std::sync::{Mutex, MutexGuard, OnceLock};
    use std::time::{Duration, Instant};

    use rustix::process::{Pid, Signal, WaitOptions, kill_process, waitpid};

    /// How long one sweep keeps looking: killed orphans die, and their own children are
    /// then adopted in turn.
    const SWEEP_FOR: Duration = Duration::from_millis(500);

    /// Pids of the programs running now (started, not yet reaped).
    pub(super) fn programs() -> MutexGuard<'static, HashSet<u32>> {
        static PROGRAMS: OnceLock<Mutex<HashSet<u32>>> = OnceLock::new();
        PROGRAMS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Kills and reaps every child of the server that is not a running program and that
    /// belongs to connection `conn` or to no connection, until none is left (or
    /// [`SWEEP_FOR`] passes).
    pub(super) fn sweep(conn: u64) {
        let deadline = Instant::now() + SWEEP_FOR;
        loop {
            let strays = strays(conn);
            if strays.is_empty() || Instant::now() >= deadline {
                return;
            }
            for &pid in &strays {
                if let Some(pid) = Pid::from_raw(pid) {
                    let _ = kill_process(pid, Signal::KILL);
                }
            }
            for &pid in &strays {
                if let Some(pid) = Pid::from_raw(pid) {
                    reap(pid, deadline);
                }
            }
        }
    }

    /// Waits (briefly) for a killed child and collects its exit status.
    fn reap(pid: Pid, deadline: Instant) {
        while Instant::now() < deadline {
            match waitpid(Some(pid), WaitOptions::NOHANG) {
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
    }

    /// The children to sweep for `conn`.
    fn strays(conn: u64) -> Vec<i32> {
        let programs = programs();
        children()
            .into_iter()
            .filter(|pid| !programs.contains(pid))
            .filter(|pid| owner(*pid).is_none_or(|owner| owner == conn))
            .filter_map(|pid| i32::try_from(pid).ok())
            .collect()
    }

    /// The server's children, from every thread's `children` list in /proc, or from the
    /// whole process table on a kernel built without those lists.
    pub(super) fn children() -> Vec<u32> {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        let lists: Vec<String> = tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .collect();
        if lists.is_empty() {
            return children_from_the_process_table();
        }
        lists
            .iter()
            .flat_map(|list| {
                list.split_ascii_whitespace()
                    .filter_map(|pid| pid.parse().ok())
            })
            .collect()
    }

    /// Every process whose parent is the server, from each `/proc/PID/stat`.
    pub(super) fn children_from_the_process_table() -> Vec<u32> {
        let me = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| parent_of(*pid) == Some(me))
            .collect()
    }

    /// The parent pid, field 4 of `/proc/PID/stat` (after the parenthesised name).
    fn parent_of(pid: u32) -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        rest.split_ascii_whitespace().nth(1)?.parse().ok()
    }

    /// The connection a process was started for (`SOCKIT_CONN` in its environment);
    /// `None` for a process without one (or already dead).
    fn owner(pid: u32) -> Option<u64> {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        environ
            .split(|&b| b == 0)
            .find_map(|entry| entry.strip_prefix(b"SOCKIT_CONN="))
            .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())
    }
}

/// One direction of the exchange: a reader, a writer, and at most [`PIPE_BUFFER`] bytes
/// read from the one and not yet written to the other.
struct Flow<R, W> {
    /// `None` once the source reached end-of-file (or was set aside).
    reader: Option<R>,
    /// `None` once closed (the program's stdin) or gone.
    writer: Option<W>,
    buf: Box<[u8]>,
    /// Unwritten bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

/// What one step of a [`Flow`] did.
enum Step {
    /// Bytes read from the source.
    Read(usize),
    /// Bytes written to the sink.
    Wrote(usize),
    /// The source reached end-of-file.
    ReadEnded,
    /// Reading failed.
    ReadFailed(io::Error),
    /// Writing failed.
    WriteFailed(io::Error),
}

impl<R, W> Flow<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    fn new(reader: R, writer: Option<W>) -> Flow<R, W> {
        Flow {
            reader: Some(reader),
            writer,
            buf: vec![0; PIPE_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn pending(&self) -> bool {
        self.start < self.end
    }

    /// The source has ended and everything read from it was written.
    fn drained(&self) -> bool {
        self.reader.is_none() && !self.pending()
    }

    /// Stops this direction: drops unwritten bytes and the writer, and hands back the
    /// reader (if it had not ended) so the caller can still drain it.
    fn stop(&mut self) -> Option<R> {
        self.writer = None;
        self.start = 0;
        self.end = 0;
        self.reader.take()
    }

    /// Writes pending bytes if there are any, otherwise reads more. Cancel-safe: each
    /// branch is one `read` or one `write`, and state changes only after it completes.
    /// Never completes once the direction is finished.
    async fn step(&mut self) -> Step {
        if self.pending() {
            let Some(writer) = self.writer.as_mut() else {
                return std::future::pending().await;
            };
            match writer.write(&self.buf[self.start..self.end]).await {
                Ok(0) => Step::WriteFailed(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.start += n;
                    Step::Wrote(n)
                }
                Err(e) => Step::WriteFailed(e),
            }
        } else if let Some(reader) = self.reader.as_mut() {
            match reader.read(&mut self.buf).await {
                Ok(0) => {
                    self.reader = None;
                    Step::ReadEnded
                }
                Ok(n) => {
                    self.start = 0;
                    self.end = n;
                    Step::Read(n)
                }
                Err(e) => Step::ReadFailed(e),
            }
        } else {
            std::future::pending().await
        }
    }
}

/// Runs `spec` for one stream client and relays between them until the exchange ends.
///
/// Never fails: every outcome, including a program that cannot start, is in the report;
/// the program has always been reaped when this returns.
pub async fn serve_stream<S>(
    spec: &ExecSpec,
    stream: S,
    client: &ClientInfo<'_>,
    idle_timeout: Option<Duration>,
    shutdown: &Shutdown,
) -> ExecReport
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut report = ExecReport {
        end: ExecEnd::Finished,
        bytes_in: 0,
        bytes_out: 0,
        status: None,
        killed: false,
    };
    let Running {
        mut child,
        group,
        conn,
        stdin,
        output,
    } = match start(spec, client) {
        Ok(running) => running,
        Err(e) => {
            report.end = ExecEnd::CannotStart(e);
            return report;
        }
    };
    let (client_read, client_write) = tokio::io::split(stream);
    let mut inbound = Flow::new(client_read, stdin);
    let mut outbound = Flow::new(output, Some(client_write));
    let mut exited: Option<io::Result<ExitStatus>> = None;
    let mut lingering = None;
    let timeouts = Timeouts {
        idle: idle_timeout,
        eof_wait: spec.eof_wait,
    };
    let end = relay(
        &mut inbound,
        &mut outbound,
        &mut child,
        &mut exited,
        &mut lingering,
        &mut report,
        timeouts,
        shutdown,
    )
    .await;
    if matches!(end, ExecEnd::Finished) {
        // The program closed its output; give it a moment to exit on its own.
        if exited.is_none() {
            let wait = tokio::time::timeout(EXIT_GRACE, child.wait());
            tokio::select! {
                biased;
                () = shutdown.triggered() => {}
                status = wait => exited = status.ok(),
            }
        }
        let reader = lingering.or_else(|| inbound.stop());
        if let Some(reader) = reader {
            report.bytes_in += linger(reader, shutdown).await;
        }
    }
    report.killed = finish(&mut child, group, conn, &mut exited).await;
    report.status = exited.and_then(Result::ok);
    report.end = end;
    report
}

/// The time limits of one exchange.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// Nothing moved either way for this long (`--idle-timeout`).
    idle: Option<Duration>,
    /// The client closed and the program wrote nothing for this long (`--exec-eof-wait`).
    eof_wait: Option<Duration>,
}

/// The relay loop: moves bytes both ways until the exchange is over.
#[allow(clippy::too_many_arguments)]
async fn relay<C, O>(
    inbound: &mut Flow<C, ChildStdin>,
    outbound: &mut Flow<pipe::Receiver, O>,
    child: &mut Child,
    exited: &mut Option<io::Result<ExitStatus>>,
    lingering: &mut Option<C>,
    report: &mut ExecReport,
    timeouts: Timeouts,
    shutdown: &Shutdown,
) -> ExecEnd
where
    C: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut last_activity = Instant::now();
    let mut last_output = Instant::now();
    let mut client_closed = false;
    let mut write_side_shut = false;
    loop {
        if inbound.drained() {
            // The client is done and the program has every byte: end-of-file on its stdin.
            inbound.writer = None;
        }
        if outbound.drained() && !write_side_shut {
            // The program is done writing and the client has every byte: our FIN.
            if let Some(writer) = outbound.writer.as_mut() {
                // Bounded: a TLS close_notify may need the peer to read.
                let _ = tokio::time::timeout(EXIT_GRACE, writer.shutdown()).await;
            }
            write_side_shut = true;
        }
        if write_side_shut && (inbound.writer.is_none() || exited.is_some()) {
            return ExecEnd::Finished;
        }
        let idle_deadline = timeouts.idle.map(|d| (last_activity + d, d));
        let eof_deadline = timeouts
            .eof_wait
            .filter(|_| client_closed && exited.is_none())
            .map(|d| (last_output + d, d));
        tokio::select! {
            biased;
            () = shutdown.triggered() => return ExecEnd::Shutdown,
            status = child.wait(), if exited.is_none() => {
                *exited = Some(status);
                // Nothing can reach the program any more; keep the client's reader for the
                // lingering close, drop what was meant for the program.
                if let Some(reader) = inbound.stop() {
                    *lingering = Some(reader);
                }
            }
            step = outbound.step() => match step {
                Step::Read(_) => {
                    last_activity = Instant::now();
                    last_output = last_activity;
                }
                Step::Wrote(n) => {
                    report.bytes_out += n as u64;
                    last_activity = Instant::now();
                    last_output = last_activity;
                }
                Step::ReadEnded => {}
                Step::ReadFailed(e) => {
                    tracing::debug!("reading the program's output failed: {e}; treating it as its end");
                    outbound.reader = None;
                }
                Step::WriteFailed(e) => return ExecEnd::ClientFailed(e),
            },
            step = inbound.step() => match step {
                Step::Read(n) => {
                    report.bytes_in += n as u64;
                    last_activity = Instant::now();
                }
                Step::Wrote(_) => last_activity = Instant::now(),
                Step::ReadEnded => {
                    client_closed = true;
                    last_output = Instant::now();
                }
                Step::ReadFailed(e) => return ExecEnd::ClientFailed(e),
                Step::WriteFailed(e) => {
                    // The program closed its stdin (or exited): it wants no more input.
                    tracing::debug!("the program stopped reading its input: {e}");
                    if let Some(reader) = inbound.stop() {
                        *lingering = Some(reader);
                    }
                }
            },
            () = sleep_until_deadline(eof_deadline.map(|(at, _)| at)) => {
                return ExecEnd::ClientClosed(eof_deadline.map_or(Duration::ZERO, |(_, d)| d));
            }
            () = sleep_until_deadline(idle_deadline.map(|(at, _)| at)) => {
                let limit = idle_deadline.map_or(Duration::ZERO, |(_, d)| d);
                return ExecEnd::Idle(limit);
            }
        }
    }
}

/// Reads and drops what the client still sends, until it closes, [`LINGER`] passes or
/// shutdown; returns the bytes dropped.
async fn linger<C: AsyncRead + Unpin>(mut reader: C, shutdown: &Shutdown) -> u64 {
    let deadline = Instant::now() + LINGER;
    let mut buf = vec![0u8; PIPE_BUFFER];
    let mut dropped = 0;
    loop {
        tokio::select! {
            biased;
            () = shutdown.triggered() => return dropped,
            () = tokio::time::sleep_until(deadline) => return dropped,
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return dropped,
                Ok(n) => dropped += n as u64,
            },
        }
    }
}

/// Sleeps until `deadline`; never completes without one.
async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How a per-datagram run ended.
#[derive(Debug)]
pub enum DatagramEnd {
    /// The program exited; its output is the reply.
    Exited(ExitStatus),
    /// The program wrote more than one datagram can carry; it was killed and the reply
    /// holds the first `max_output` bytes.
    TooMuchOutput,
    /// The program did not finish within the limit and was killed.
    TimedOut(Duration),
    /// The server is shutting down; the program was killed.
    Shutdown,
    /// The program could not be started.
    CannotStart(io::Error),
}

/// The result of running a program for one datagram.
#[derive(Debug)]
pub struct DatagramRun {
    /// What the program wrote, at most `max_output` bytes: the reply.
    pub output: Vec<u8>,
    /// How it ended.
    pub end: DatagramEnd,
}

/// Runs `spec` for one datagram: the datagram on stdin (then end-of-file), stdout as the
/// reply, at most `max_output` bytes, within `limit`. The program is always reaped.
pub async fn run_for_datagram(
    spec: &ExecSpec,
    datagram: &[u8],
    client: &ClientInfo<'_>,
    max_output: usize,
    limit: Option<Duration>,
    shutdown: &Shutdown,
) -> DatagramRun {
    let Running {
        mut child,
        group,
        conn,
        stdin,
        output: mut program_output,
    } = match start(spec, client) {
        Ok(running) => running,
        Err(e) => {
            return DatagramRun {
                output: Vec::new(),
                end: DatagramEnd::CannotStart(e),
            };
        }
    };
    let mut output = Vec::new();
    let mut exited = None;
    let end = {
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A program that exits without reading its input is not an error.
                let _ = stdin.write_all(datagram).await;
            }
        };
        let output = &mut output;
        let collect = async move {
            // One byte more than allowed tells "exactly full" from "too much".
            let cap = u64::try_from(max_output)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            (&mut program_output).take(cap).read_to_end(output).await
        };
        let child = &mut child;
        let exited = &mut exited;
        let work = async move {
            let ((), read) = tokio::join!(feed, collect);
            if read.is_ok_and(|n| n > max_output) {
                return DatagramEnd::TooMuchOutput;
            }
            let status = child.wait().await;
            let end = match &status {
                Ok(status) => DatagramEnd::Exited(*status),
                Err(e) => DatagramEnd::CannotStart(io::Error::new(e.kind(), e.to_string())),
            };
            *exited = Some(status);
            end
        };
        tokio::select! {
            biased;
            () = shutdown.triggered() => DatagramEnd::Shutdown,
            end = work => end,
            () = sleep_until_deadline(limit.map(|d| Instant::now() + d)) => {
                DatagramEnd::TimedOut(limit.unwrap_or_default())
            }
        }
    };
    finish(&mut child, group, conn, &mut exited).await;
    output.truncate(max_output);
    DatagramRun { output, end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn peer() -> PeerAddr {
        PeerAddr::Ip(SocketAddr::from(([127, 0, 0, 1], 4242)))
    }

    fn spec(words: &[&str]) -> ExecSpec {
        let mut words = words.iter().map(OsString::from);
        let program = words.next().unwrap_or_default();
        ExecSpec::program(program, words.collect())
    }

    #[test]
    fn the_process_table_names_our_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let pid = child.id();
        assert!(orphans::children().contains(&pid));
        assert!(orphans::children_from_the_process_table().contains(&pid));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn command_lines_are_shown_quoted() {
        assert_eq!(spec(&["cat", "-n"]).command_line(), "cat -n");
        assert_eq!(
            ExecSpec::shell("echo 'hi there'".into()).command_line(),
            r"sh -c 'echo '\''hi there'\'''"
        );
    }

    #[test]
    fn missing_programs_are_caught_at_start() {
        assert!(check_program(OsStr::new("sh")).is_ok());
        assert!(check_program(OsStr::new("/bin/sh")).is_ok());
        let missing = check_program(OsStr::new("no-such-program-sockit"));
        assert!(missing.is_err_and(|e| e.contains("not found in PATH")));
        assert!(
            check_program(OsStr::new("/")).is_err(),
            "a directory is not a program"
        );
        let plain = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            check_program(plain.path().as_os_str()).is_err(),
            "a file without an execute bit is not a program"
        );
    }

    #[tokio::test]
    async fn cat_echoes_and_half_close_delivers_everything() {
        let (mut client, server) = tokio::io::duplex(1024);
        let shutdown = Shutdown::new();
        let peer = peer();
        let info = ClientInfo::new(1, &peer);
        let spec = spec(&["cat"]);
        let serve = serve_stream(&spec, server, &info, None, &shutdown);
        let drive = async {
            // More than every buffer on the way, so backpressure is exercised.
            let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            let (mut read, mut write) = tokio::io::split(&mut client);
            let send = async {
                write.write_all(&data).await?;
                write.shutdown().await
            };
            let mut back = Vec::new();
            let (sent, got) = tokio::join!(send, read.read_to_end(&mut back));
            sent.and(got).map(|_| (data, back))
        };
        let (report, driven) = tokio::join!(serve, drive);
        let (data, back) = driven.unwrap_or_else(|e| panic!("client side: {e}"));
        assert_eq!(back.len(), data.len());
        assert!(back == data, "cat returned different bytes");
        assert!(matches!(report.end, ExecEnd::Finished), "{report:?}");
        assert_eq!(report.bytes_in, 200_000);
        assert_eq!(report.bytes_out, 200_000);
        assert!(report.status.is_some_and(|s| s.success()), "{report:?}");
    }

    #[tokio::test]
    async fn a_program_that_exits_early_ends_the_exchange() {
        let (mut client, server) = tokio::io::duplex(1024);
        let shutdown = Shutdown::new();
        let peer = peer();
        let info = ClientInfo::new(7, &peer);
        let spec = ExecSpec::shell("echo \"bye $SOCKIT_PEER_ADDR $SOCKIT_CONN\"".into());
        let serve = serve_stream(&spec, server, &info, None, &shutdown);
        let drive = async {
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.map(|_| back)
        };
        let (report, back) = tokio::join!(serve, drive);
        assert_eq!(back.unwrap_or_else(|e| panic!("{e}")), b"bye 127.0.0.1 7\n");
        assert!(matches!(report.end, ExecEnd::Finished), "{report:?}");
        assert!(!report.killed);
    }

    /// Issue 20 item 2 and issue 19 item 4: the balancer a PROXY header came from, and
    /// the client's verified certificate, reach the program.
    #[tokio::test]
    async fn the_program_learns_the_balancer_and_the_client_certificate() {
        let (mut client, server) = tokio::io::duplex(1024);
        let shutdown = Shutdown::new();
        let peer = peer();
        let balancer = PeerAddr::Ip(SocketAddr::from(([10, 0, 0, 9], 5000)));
        let identity = ClientIdentity {
            subject: "CN=alice".into(),
            common_name: Some("alice".into()),
            sans: vec!["DNS:alice.test".into(), "IP:127.0.0.1".into()],
            fingerprint: "ab".repeat(32).parse().unwrap_or_else(|e| panic!("{e}")),
        };
        let info = ClientInfo {
            via: Some(&balancer),
            certificate: Some(&identity),
            ..ClientInfo::new(3, &peer)
        };
        let spec = ExecSpec::shell(
            "echo \"$SOCKIT_VIA|$SOCKIT_TLS_CLIENT_SUBJECT|$SOCKIT_TLS_CLIENT_CN|$SOCKIT_TLS_CLIENT_SANS\"".into(),
        );
        let serve = serve_stream(&spec, server, &info, None, &shutdown);
        let drive = async {
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.map(|_| back)
        };
        let (_, back) = tokio::join!(serve, drive);
        assert_eq!(
            String::from_utf8_lossy(&back.unwrap_or_else(|e| panic!("{e}"))),
            "10.0.0.9:5000|CN=alice|alice|DNS:alice.test,IP:127.0.0.1\n"
        );
    }

    #[tokio::test]
    async fn idle_programs_are_killed_and_reaped() {
        let (_client, server) = tokio::io::duplex(1024);
        let shutdown = Shutdown::new();
        let peer = peer();
        let info = ClientInfo::new(1, &peer);
        let spec = spec(&["sleep", "1000"]);
        let report = serve_stream(
            &spec,
            server,
            &info,
            Some(Duration::from_millis(100)),
            &shutdown,
        )
        .await;
        assert!(matches!(report.end, ExecEnd::Idle(_)), "{report:?}");
        assert!(report.killed);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(report.status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn stderr_can_join_the_output() {
        let (mut client, server) = tokio::io::duplex(1024);
        let shutdown = Shutdown::new();
        let peer = peer();
        let info = ClientInfo::new(1, &peer);
        let mut spec = ExecSpec::shell("echo out; echo err >&2".into());
        spec.stderr = ExecStderr::Socket;
        let drive = async {
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.map(|_| back)
        };
        let (_, back) = tokio::join!(serve_stream(&spec, server, &info, None, &shutdown), drive);
        assert_eq!(back.unwrap_or_else(|e| panic!("{e}")), b"out\nerr\n");
    }

    #[tokio::test]
    async fn a_missing_program_is_reported() {
        let (_client, server) = tokio::io::duplex(1024);
        let peer = peer();
        let info = ClientInfo::new(1, &peer);
        let report = serve_stream(
            &spec(&["/nonexistent/sockit-test"]),
            server,
            &info,
            None,
            &Shutdown::new(),
        )
        .await;
        assert!(
            matches!(report.end, ExecEnd::CannotStart(ref e) if e.kind() == io::ErrorKind::NotFound),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn datagram_runs_reply_with_stdout() {
        let peer = peer();
        let info = ClientInfo::new(0, &peer);
        let shutdown = Shutdown::new();
        let run = run_for_datagram(
            &spec(&["tr", "a-z", "A-Z"]),
            b"hello",
            &info,
            100,
            None,
            &shutdown,
        )
        .await;
        assert_eq!(run.output, b"HELLO");
        assert!(matches!(run.end, DatagramEnd::Exited(s) if s.success()));

        let run = run_for_datagram(&spec(&["yes"]), b"", &info, 100, None, &shutdown).await;
        assert_eq!(run.output.len(), 100);
        assert!(matches!(run.end, DatagramEnd::TooMuchOutput), "{run:?}");

        let run = run_for_datagram(
            &spec(&["sleep", "1000"]),
            b"",
            &info,
            100,
            Some(Duration::from_millis(50)),
            &shutdown,
        )
        .await;
        assert!(matches!(run.end, DatagramEnd::TimedOut(_)), "{run:?}");
    }
}
