//! The command line as typed: clap derive structs. "Low args", as ripgrep calls them:
//! values are only parsed and checked here; nothing touches the network or the terminal.
//! [`super::config`] turns them into typed configurations.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::access_args::{AccessArgs, LIMITS};
use super::values::{
    parse_amplification, parse_duration, parse_fingerprint, parse_mode, parse_size,
};
use crate::behaviour::exec::ExecStderr;
use crate::obs::LogFormat;
use crate::relay::{CopyMode, RelayOptions};
use crate::server::Amplification;

const ABOUT: &str =
    "A socket toolkit: the note's TCP/UDP hello demo, never blocked, over every transport.";

const LONG_ABOUT: &str = "\
A socket toolkit: the note's TCP/UDP hello demo, never blocked, over every transport.

With no arguments, `sockit serve` and `sockit send` are the note's TCP server and client
on 127.0.0.1:8000, line for line; `sockit serve udp` / `sockit send udp` are its UDP pair.
One async server answers thousands of clients at once: a silent client blocks nobody.";

const MAIN_EXAMPLES: &str = "\
Examples:
  sockit serve                        the note's TCP server on 127.0.0.1:8000
  sockit send                         the note's TCP client: prints the reply
  sockit serve udp                    the note's UDP server
  sockit send udp                     the note's UDP client
  sockit serve tcp://[::1]:9000 --echo
  sockit send unix:/tmp/s.sock 'hi' --count 3
  sockit connect tcp://127.0.0.1:9000 interactive client: stdin to the socket, the socket to stdout
  sockit listen 9000 > file           take one client: its bytes to stdout, stdin to it (nc -l)
  sockit relay tcp://0.0.0.0:8443 tcp://127.0.0.1:8080
  sockit serve tls://127.0.0.1:8443 --echo   TLS with a self-signed certificate
  sockit probe 127.0.0.1 22,80,8000-8010

Endpoints:
  tcp://HOST:PORT  udp://HOST:PORT  tls://HOST:PORT  unix:PATH  unixgram:PATH
  unix:@NAME (Linux abstract)  HOST:PORT (TCP)  PORT (TCP on 127.0.0.1)
  tcp | udp (the note's 127.0.0.1:8000); IPv6 in brackets: tcp://[::1]:8000

Exit codes:
  0 ok  1 exchange failed  2 usage  3 host not found  4 refused  5 timeout
  6 cannot listen or bind the local side (--source, --bind-device, --mark)  7 TLS failure
  8 proxy unreachable  9 proxy refused authentication  10 proxy refused the target";

const SERVE_EXAMPLES: &str = "\
Examples:
  sockit serve                          the note's server: tcp://127.0.0.1:8000, replies 'hello tcp client'
  sockit serve udp                      the note's UDP server
  sockit serve --close                  close after the first reply, exactly as the note does
  sockit serve tcp://0.0.0.0:9000 --echo --framing line
  sockit serve unix:/tmp/echo.sock --echo
  sockit serve 9000 --reply 'pong' -q   no per-message lines (for load tests)
  sockit serve 9000 --close -q --busy-poll 100us
                                        lowest latency for clients that come right back,
                                        paid with idle CPU (the polling stops when idle)
  sockit serve tls://127.0.0.1:8443 --echo
                                        TLS; a self-signed certificate is made and its
                                        SHA-256 fingerprint printed on stderr
  sockit serve tls://0.0.0.0:443 --cert cert.pem --key key.pem
  sockit serve tls://0.0.0.0:443 --cert cert.pem --key key.pem --client-ca clients.pem
                                        mutual TLS: only clients with a certificate
                                        issued by a CA in clients.pem get in
  sockit serve 9000 --echo --hex        dump all traffic as hex on stderr
  sockit serve 9000 --discard --log text
                                        count what arrives (bytes per connection in 'closed')

Programs (one per connection; per datagram on udp:// and unixgram:):
  sockit serve 9000 --exec cat -n       number the client's lines; no shell involved
  sockit serve 9000 --sh-exec 'sort | uniq -c'
                                        a shell command line, when you want the shell
  sockit serve udp://127.0.0.1:9000 --exec tr a-z A-Z
                                        each datagram on stdin, the program's output as reply
  Everything after --exec is the program's command line: put sockit's options before it
  (one that comes after it goes to the program, with a warning at start-up). A program
  that exits non-zero or is killed by a signal is logged and counted as an error.
  The client half-closes -> the program's stdin closes; the program's stdout closes ->
  the client sees end-of-file. On disconnect, idle timeout or shutdown the program (and
  everything it started) is killed and reaped. It finds the client in SOCKIT_PEER,
  SOCKIT_PEER_ADDR, SOCKIT_PEER_PORT and SOCKIT_CONN; with --proxy-protocol the balancer
  in SOCKIT_VIA; with --client-ca the client's certificate in SOCKIT_TLS_CLIENT_SUBJECT,
  SOCKIT_TLS_CLIENT_CN, SOCKIT_TLS_CLIENT_SANS (comma-separated, DNS:…, IP:…) and
  SOCKIT_TLS_CLIENT_SHA256.

Chat:
  sockit serve 0.0.0.0:9000 --chat      every line goes to all other clients as '<user3> line'

Access and limits:
  sockit serve 0.0.0.0:9000 --echo --allow 10.0.0.0/8 --deny 10.0.0.13
                                        deny wins; with any --allow, only those ranges get in
  sockit serve 9000 --echo --max-conns 100 --max-conns-mode refuse
                                        client 101 is closed at once instead of waiting

Running in production:
  sockit serve 0.0.0.0:9000 --echo --metrics 127.0.0.1:9100
                                        Prometheus text at http://127.0.0.1:9100/metrics
  sockit serve 0.0.0.0:9000 --echo --proxy-protocol --allow 203.0.113.0/24
                                        behind HAProxy/nginx/a cloud balancer: logs and
                                        --allow/--deny use the client's real address
  sockit serve tls --systemd --cert c.pem --key k.pem
                                        serve TLS on the socket a systemd .socket unit passed
  sockit serve 9000 --log json --log-level warn
                                        machine-readable lines; each names its conn id and peer

Signals:
  SIGTERM, SIGINT (Ctrl-C), SIGHUP      stop accepting, finish in-flight exchanges within
                                        --grace, print the summary, exit 0
  SIGTERM or SIGHUP again               still the graceful stop (timeout and systemd send
                                        SIGTERM to the process and to its group)
  Ctrl-C again / SIGQUIT (Ctrl-\\)       exit at once with status 130 / 131
  SIGHUP does not reload anything: sockit has no configuration to re-read. A closed
  terminal (or `kill -HUP`) therefore drains and stops it, like SIGTERM.";

const SEND_EXAMPLES: &str = "\
Examples:
  sockit send                           the note's client: sends 'hello tcp server'
  sockit send udp                       the note's UDP client
  sockit send tcp://[::1]:9000 'ping' --count 3
  echo 'hello' | sockit send unix:/tmp/echo.sock - --framing line
  sockit send localhost:9000 hi --timeout 2s
  sockit send tls://localhost:8443 hi --ca ca.pem
  sockit send tls://localhost:8443 hi --ca ca.pem --cert me.pem --key me.key
                                        mutual TLS: present a client certificate
  sockit send tls://127.0.0.1:8443 hi --insecure --hex
  sockit send 9000 - < request.bin --reply-size 512
  sockit send 9000 hi --retry forever --retry-max-delay 5s
  sockit send udp://127.0.0.1:9000 hi --source :5353 --ttl 1

A raw reply is everything the server sends until it pauses for --reply-quiet (200ms) or
closes, or exactly --reply-size bytes; with --framing line it is one line; over udp://
and unixgram: one datagram. The send:/receive: lines show at most 1024 bytes of a message,
then its length: '… (5000 bytes)'. An empty message is a usage error on streams (nothing
would be sent) and an empty datagram on udp:// and unixgram:.";

const CONNECT_EXAMPLES: &str = "\
Examples:
  sockit connect tcp://127.0.0.1:9000   type lines; what the server sends is printed
  printf 'GET / HTTP/1.0\\r\\n\\r\\n' | sockit connect tcp://127.0.0.1:8080
  sockit connect udp://127.0.0.1:9000   each line typed is one datagram
  sockit connect unix:/tmp/s.sock --close-on-eof < request.bin > reply.bin
  sockit connect tls://example.org:443 --crlf
  sockit connect tls://127.0.0.1:8443 --insecure --hex
  sockit connect 10.0.0.5:9000 --source 10.0.0.2:5000 --tos 16 --keepalive 30s,5s,3
                                        bind the local side, mark the traffic (nc -s -p -T)
  sockit connect 127.0.0.1:9000 --retry 10 --retry-delay 200ms
                                        wait for a server that is starting (socat retry=)
  sockit connect --proxy socks5h://bastion:1080 db.internal:5432
                                        through a SOCKS5 proxy that resolves the name
                                        (nc -X 5 -x, ncat --proxy); repeat --proxy to chain
  ssh -o ProxyCommand='sockit connect --proxy http://proxy:3128 %h:%p' host
                                        ssh through an HTTP CONNECT proxy; credentials
                                        from SOCKIT_PROXY_AUTH=USER:PASSWORD
  sockit connect 127.0.0.1:9000 --capture caps/
                                        caps/conn1_127.0.0.1_9000.sent and .received

Half-close (nc -N, always on; --close-on-eof says so explicitly): when stdin ends, the
sending side of the connection is shut down and everything the server sends is still
printed until it closes. --quit-after D (nc -q D) also stops once the server has been
quiet for D after stdin ended; it never cuts a reply that is still arriving. --no-stdin
(nc -d) sends nothing and prints until the server closes. If the server closes first,
what stdin still holds is still sent (the server may only have closed its sending
side); if the server no longer takes it, that input is lost and the exit status is 1.
For udp:// and unixgram: each read of stdin is one datagram; after stdin ends, replies
are printed until none has come for --quit-after (default 2s). Exit 0 when the
conversation ended normally (stdout closed included); 1 reset or input not delivered,
4 refused, 5 connect timeout, 7 TLS failure, 8-10 --proxy failures (unreachable,
authentication, target refused).";

const LISTEN_EXAMPLES: &str = "\
Examples:
  sockit listen 9000 > file             receive a file (nc -l 9000 > file); the sender runs
                                        sockit connect 127.0.0.1:9000 < file
  sockit listen 9000 < file             offer a file to the client that connects
  sockit listen 9000 | tar x            receive a tar stream (tar c dir | sockit connect ...)
  sockit listen 0.0.0.0:9000 -k         every client's bytes to stdout, stdin to all (ncat -lk)
  sockit listen 127.0.0.1:0             any free port: the line on stderr names it
  sockit listen udp://127.0.0.1:9000    the first sender is the peer (nc -u -l)
  sockit listen tls://127.0.0.1:8443    TLS, self-signed unless --cert/--key (ncat -l --ssl)
  sockit listen unix:/tmp/s.sock

PORT alone listens on 127.0.0.1 (as serve does); 0.0.0.0:PORT or [::]:PORT for every
interface. Once listening, one line on stderr names the endpoint bound:
`listening on tcp://127.0.0.1:9000`.

Half-close, as connect: when stdin ends, the sending side is shut down (FIN, TLS
close_notify) and the client's bytes are still printed until it closes; if the client
closes first, the rest of stdin is still sent. Without --keep-open the listener takes one
client and exits 0 only if all of stdin was sent and the client's end of data was seen;
otherwise a line says how many bytes were received and sent (1 reset or closed early,
5 --idle-timeout, 6 cannot listen, 7 TLS failure). With --keep-open clients are served at
once; each read from a client goes to stdout whole (interleaving at read boundaries),
stdin is broadcast to the clients connected when it is read, a client's end of data
closes its connection; SIGINT/SIGTERM stops it (exit 1 if a client failed). Datagrams: the first sender is the peer and stdin goes to it
one datagram per read, other senders are ignored; after stdin ends, datagrams are still
printed until none has come for --idle-timeout (default 2s). With -k every sender is a
peer.";

const RELAY_EXAMPLES: &str = "\
Examples:
  sockit relay tcp://0.0.0.0:8080 tcp://10.0.0.5:80        a TCP port forwarder
  sockit relay tcp://127.0.0.1:9000 unix:/run/app.sock     expose a Unix socket on TCP
  sockit relay tls://0.0.0.0:8443 tcp://127.0.0.1:8080     add TLS in front of a plain server
  sockit relay tcp://127.0.0.1:8080 tls://example.org:443  speak plain TCP to a TLS server
  sockit relay tcp://0.0.0.0:80 tcp://10.0.0.5:8080 --send-proxy v2
                                                           tells the target the client's address
  sockit relay udp://0.0.0.0:5353 udp://127.0.0.1:53       UDP, one session per client
  sockit relay tcp://127.0.0.1:9000 tcp://127.0.0.1:8000 --hex

Each client gets its own connection to the target. Bytes move through one buffer per
direction that starts at 16 KiB and grows to --buffer (4 MiB) only while reads fill it:
chatty connections stay small, bulk ones get large reads (--copy splice moves them with
splice(2) instead, between plain sockets on Linux). Either way a direction holds at most
--buffer bytes, so a slow side slows the other and memory stays bounded; half-close is
passed on. Ctrl-C, SIGTERM or SIGHUP stops accepting, lets open connections finish
within --grace, and prints a summary (however often SIGTERM comes); a second Ctrl-C exits
at once (130), as SIGQUIT does (131).

  sockit relay tcp://0.0.0.0:8080 tcp://10.0.0.5:80 --proxy-protocol --metrics 9100
                                        behind a load balancer, with Prometheus metrics

Access and limits (as `serve`):
  sockit relay tcp://0.0.0.0:8080 tcp://10.0.0.5:80 --allow 10.0.0.0/8 --deny 10.0.0.13
                                        only 10/8 but 10.0.0.13 gets in; the rest is
                                        closed at once and logged
  sockit relay tcp://0.0.0.0:8080 tcp://10.0.0.5:80 --max-conns 100 --max-conns-mode refuse
                                        client 101 is closed at once instead of waiting
  Datagram relays drop denied senders' datagrams and cap clients with --max-sessions.";

const PROBE_EXAMPLES: &str = "\
Examples:
  sockit probe 127.0.0.1 22,80,443
  sockit probe localhost 8000-8010 --open
  sockit probe ::1 1-1024 --concurrency 200 --timeout 500ms

Each port gets a TCP connect: open (it was accepted), closed (refused), filtered (no
answer within --timeout) or unreachable. Only the host you name is probed. Exit 0 when
at least one port is open, 1 when none is (as nc -z).

  sockit probe -u 127.0.0.1 53,5353,9000-9010

With -u each port gets one 13-byte datagram, \"sockit-probe\\n\", from a connected socket:
open (a datagram came back), closed (ICMP port unreachable) or open|filtered (nothing
within --timeout: a server that ignores the probe and a firewall look the same). Exit 0
when a port is open or open|filtered (no refusal came back, as nc -zu), 1 when all
are closed.";

const BENCH_EXAMPLES: &str = "\
Examples:
  sockit bench                            the note's exchange against 127.0.0.1:8000, 10 s
  sockit bench 9000 -p echo -c 50 -d 5s   50 connections ping-ponging 64 bytes
  sockit bench tcp://127.0.0.1:9000 -p echo --rate 20000 -c 50
                                          open loop: 20,000 requests/s on a fixed schedule
  sockit bench udp://127.0.0.1:9000 -c 32 the note's UDP exchange, 32 outstanding, loss counted
  sockit bench unix:/tmp/s.sock -p stream -c 1
                                          Gbit/s into a server that discards (serve --discard)
  sockit bench 9000 -p echo -d 3s --json run.json
  sockit bench 9000 -p echo --rate 5000 --hlog run.hlog --plot run.svg
                                          HdrHistogram interval log (1 s intervals) and a
                                          percentile / throughput-over-time picture
  sockit bench merge a.json b.json --json all.json

Throughput tests (iperf3's job) against `sockit serve --perf`, which serves everyone at once:
  sockit bench tcp://HOST:5201 -R -c 4 -d 10s -i 1s
                                          server → client over 4 streams, a line per second
                                          with TCP_INFO (iperf3 -c HOST -R -P 4 -t 10 -i 1)
  sockit bench tcp://HOST:5201 --bidir --latency --json -
                                          both ways at once, round trips probed alongside,
                                          NDJSON per interval on stdout
  sockit bench udp://HOST:5201 -b 1G --size 1400 -i 1s
                                          UDP paced at 1 Gbit/s; loss, reordering and jitter
                                          from the receiver (iperf3 -c HOST -u -b 1G -l 1400)
  sockit bench udp://239.1.2.3:5201 -b 10M --multicast-if 127.0.0.1
                                          to a multicast group; one report per receiver

Patterns:
  hello   connect, send, read the reply, close: exchanges/s and connect+reply latency
  echo    persistent connections, send S bytes, wait for S bytes back: messages/s, round trip
  stream  persistent connections writing S-byte chunks to a server that discards: Gbit/s
  udp     request/reply datagrams, one outstanding per socket; loss = no reply in --timeout

Closed loop (default): each connection sends when its last reply arrives.
Open loop (--rate R): R requests/s in total on a fixed timetable; latency counts from when
each request was due, so a stalled server shows in the percentiles (coordinated omission).
Connections are shared over --threads N threads (default: the cores this process may use,
so `taskset -c 0 sockit bench ...` drives from one core), each with its own runtime.
The report on stdout has one figure per line, including the load generator's own CPU use
(near 100% per thread: it may be the limit, not the server); --json writes every figure
and the HDR histogram itself (lossless, mergeable). Exit status: 0 if any exchange
succeeded, otherwise the first failure's code (4 refused, 5 timeout, ...).";

const MERGE_EXAMPLES: &str = "\
Examples:
  sockit bench merge a.json b.json                 print the combined report
  sockit bench merge host1.json host2.json --json all.json
  sockit bench merge host1.hlog host2.hlog         latency of interval logs (--hlog)

Throughputs and counts are summed and histograms added (percentiles come from the sum,
never averaged): for runs taken at the same time against one server from several machines.
Give every run the same --start-at so they measure the same span (clocks kept by NTP):
  at=$(( $(date +%s) + 30 ))                       measuring starts in 30 s, everywhere
  for h in load1 load2 load3; do
    ssh $h sockit bench tcp://server:9000 -p echo --start-at $at --json $h.json &
  done; wait                                       then copy the files here and:
  sockit bench merge load1.json load2.json load3.json
Interval logs (--hlog) merge too: every interval of every log is added into one histogram
and its percentiles printed (a log holds no counts or rates, so only the latency).";

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "sockit",
    version,
    long_version = crate::build_info::LONG_VERSION,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = MAIN_EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Help heading for the options every command takes.
const GLOBAL: &str = "Global options";

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// No per-connection or per-message lines (the listening line and errors remain).
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,

    /// How events are printed on stdout.
    #[arg(long, value_enum, global = true, help_heading = GLOBAL, default_value_t = LogFormat::Seed)]
    pub log: LogFormat,

    /// Diagnostics shown on stderr: error, warn, info, debug, trace (RUST_LOG overrides).
    #[arg(long, global = true, help_heading = GLOBAL, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,

    /// Threads [default: one per CPU this process may use]. `serve` runs one accept loop
    /// per thread, each serving its own connections to the end.
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// When to colour error messages.
    #[arg(long, value_enum, global = true, help_heading = GLOBAL, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

/// Colour on/off, ripgrep style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Listen and answer every message: the note's server, never blocked.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Send a message and print the reply: the note's client.
    #[command(after_help = SEND_EXAMPLES)]
    Send(SendArgs),
    /// Interactive client: stdin to the socket, the socket to stdout (nc, ncat).
    #[command(after_help = CONNECT_EXAMPLES)]
    Connect(ConnectArgs),
    /// Listen and wire the client to stdin/stdout (nc -l, ncat -l): receive or send a file.
    #[command(after_help = LISTEN_EXAMPLES)]
    Listen(ListenArgs),
    /// Accept on one endpoint and forward each client to another (socat, ncat --sh-exec).
    #[command(after_help = RELAY_EXAMPLES)]
    Relay(RelayArgs),
    /// SOCKS5 (CONNECT, UDP ASSOCIATE), SOCKS4/4a and HTTP CONNECT proxy on one port
    /// (danted, microsocks, ncat -l --proxy-type http).
    #[command(after_help = super::proxy::PROXY_EXAMPLES)]
    Proxy(super::proxy::ProxyArgs),
    /// Report which TCP ports of a host accept connections, or which UDP ports answer
    /// (nc -z, nc -zu).
    #[command(after_help = PROBE_EXAMPLES)]
    Probe(ProbeArgs),
    /// Load-test a server: throughput, latency percentiles, errors by kind.
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),
    /// Print the version with what a bug report needs: git commit, build profile,
    /// features, compiler and target (the same as `sockit --version`; `-V` is short).
    Version,
    /// Print a shell completion script on stdout.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout: `sockit man | man -l -`.
    Man(ManArgs),
}

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  sockit completions bash > ~/.local/share/bash-completion/completions/sockit
  sockit completions zsh > ~/.zfunc/_sockit        (with fpath+=(~/.zfunc) in ~/.zshrc)
  sockit completions fish > ~/.config/fish/completions/sockit.fish";

/// `sockit man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// A command's own page (`sockit man serve` is sockit-serve(1)) [default: sockit(1)].
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// `sockit completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// Help heading for the flags choosing what a server does.
const MODES: &str = "Modes (one per server)";
/// Help heading for metrics, load balancers and socket activation.
const PRODUCTION: &str = "Running in production";

impl Command {
    /// Whether the command starts its own threads (thread-per-core `serve`, `bench`), so
    /// `main` should give it a single-threaded runtime to start from.
    pub fn runs_its_own_threads(&self) -> bool {
        matches!(self, Command::Serve(_) | Command::Bench(_))
    }
}

/// `sockit serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen (see `sockit --help` for the forms).
    #[arg(default_value = "tcp", value_name = "ENDPOINT")]
    pub endpoint: String,

    /// Reply with this text to every message [default: the note's "hello tcp client" /
    /// "hello udp client"].
    #[arg(long, help_heading = MODES, value_name = "TEXT", group = "answer")]
    pub reply: Option<String>,

    /// Send every message back unchanged.
    #[arg(long, help_heading = MODES, group = "answer")]
    pub echo: bool,

    /// Send nothing back; only read and count: no message lines, the bytes appear in the
    /// `closed` events and the summary (nc -lk PORT > /dev/null).
    #[arg(long, help_heading = MODES, group = "answer")]
    pub discard: bool,

    /// The other end of `sockit bench`'s throughput tests (iperf3 -s, but for every
    /// client at once): discards what clients send, sends to clients that ask
    /// (--reverse, --bidir), echoes the --latency probe, and measures each UDP sender's
    /// loss, reordering and jitter (--bitrate) and reports them back to it.
    #[arg(long, help_heading = MODES, group = "answer")]
    pub perf: bool,

    /// Run PROGRAM with ARGS for each connection, its stdin and stdout wired to the client;
    /// no shell. Takes the rest of the command line, so put it last. On datagram endpoints,
    /// one run per datagram: the datagram on stdin, the output as the reply.
    #[arg(long, help_heading = MODES, value_name = "PROGRAM [ARGS]", num_args = 1.., allow_hyphen_values = true,
          group = "answer")]
    pub exec: Option<Vec<OsString>>,

    /// Like --exec, through `sh -c CMD`: for pipes, redirections and other shell syntax.
    #[arg(long, help_heading = MODES, value_name = "CMD", group = "answer")]
    pub sh_exec: Option<OsString>,

    /// Where the program's stderr goes (with --exec / --sh-exec): the server's stderr, the
    /// client (like 2>&1), or nowhere.
    #[arg(long, help_heading = MODES, value_enum, value_name = "WHERE", default_value_t = ExecStderr::Inherit)]
    pub exec_stderr: ExecStderr,

    /// Once the client has closed its side, how long the program may write nothing before
    /// it is killed with everything it started (socat's -t); each output byte restarts
    /// the wait. "0" waits as long as --idle-timeout allows.
    #[arg(long, help_heading = MODES, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub exec_eof_wait: Duration,

    /// Chat room: every line a client sends goes to all the others, prefixed with the
    /// sender's tag (`<user3> hello`); joins and leaves are announced. Streams only.
    #[arg(long, help_heading = MODES, group = "answer")]
    pub chat: bool,

    /// Most memory the --chat room may hold for undelivered lines, all members together
    /// (each line counted once with its allocation, plus each member's queue entry); when
    /// full, the members furthest behind are disconnected. Suffixes K, M, G (powers of 1024).
    #[arg(long, help_heading = MODES, value_name = "BYTES", default_value = "64M",
          value_parser = parse_size, requires = "chat")]
    pub chat_memory: u64,

    /// Lines per second one --chat member may send (a burst of one second's worth); a
    /// faster sender is slowed down, not disconnected. "0" no limit.
    #[arg(long, help_heading = MODES, value_name = "LINES", default_value_t = 100, requires = "chat")]
    pub chat_rate: u32,

    /// Bytes per second one --chat member may send, as --chat-rate. "0" no limit.
    #[arg(long, help_heading = MODES, value_name = "BYTES", default_value = "256K",
          value_parser = parse_size, requires = "chat")]
    pub chat_bytes_rate: u64,

    /// Close each connection after its first reply, as the note's server does.
    #[arg(long, help_heading = MODES, conflicts_with_all = ["exec", "sh_exec", "chat", "discard", "perf"])]
    pub close: bool,

    /// Who may connect and how many at once.
    #[command(flatten)]
    pub access: AccessArgs,

    /// Who may open a Unix socket.
    #[command(flatten)]
    pub unix: UnixSocketArgs,

    /// How a stream is cut into messages.
    #[command(flatten)]
    pub framing: FramingArgs,

    /// Close connections silent this long in both directions ("0" never); with --exec the
    /// program is killed, in --chat the member leaves.
    #[arg(long, help_heading = LIMITS, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Time allowed to finish a message once it has started ("0" never); with --exec on
    /// datagrams, the time each program run may take.
    #[arg(long, help_heading = LIMITS, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub message_timeout: Duration,

    /// UDP: send a source at most K bytes of replies per byte it sent (a forged sender
    /// address cannot turn the server into an amplifier; QUIC uses 3); "off" never holds
    /// a reply back [default: 3 on non-loopback listeners, off on loopback].
    #[arg(long, help_heading = LIMITS, value_name = "K|off", value_parser = parse_amplification)]
    pub amplification_limit: Option<Amplification>,

    /// How long Ctrl-C / SIGTERM waits for in-flight exchanges.
    #[arg(long, help_heading = LIMITS, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,

    /// listen(2) backlog: connections the kernel queues while we are busy.
    #[arg(long, help_heading = LIMITS, value_name = "N", default_value_t = 1024)]
    pub backlog: u32,

    /// Give each thread its own listening socket (SO_REUSEPORT; TCP and UDP) and let the
    /// kernel spread clients over them, instead of the threads sharing one socket: for
    /// many cores. Another program of the same user may then bind the port too.
    #[arg(long, help_heading = LIMITS)]
    pub reuse_port: bool,

    /// Let each serving thread poll for new events this long (e.g. 100us) before it
    /// sleeps: lower latency for clients that come back quickly, paid with the thread's
    /// idle CPU. The window adapts (it closes while the server is idle). Reply, echo and
    /// discard on datagrams, and on TCP without TLS, --hex or --proxy-protocol. "0" never
    /// polls.
    #[arg(long, help_heading = LIMITS, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub busy_poll: Duration,

    /// Socket options set on the listening socket, which Linux copies to every
    /// connection it accepts (--source does not apply).
    #[command(flatten)]
    pub socket: SocketArgs,

    /// Certificate and key for tls:// endpoints.
    #[command(flatten)]
    pub tls: TlsServerArgs,

    /// Dump all traffic as offset / hex / ASCII on stderr.
    #[arg(long)]
    pub hex: bool,

    /// Write each connection's bytes to files in DIR (created if missing), one per
    /// direction: `conn<N>_<peer>.sent` (the replies) and .received (from the client). On
    /// udp:// and unixgram: each sender also gets `conn<N>_<peer>.datagrams`, one line per
    /// datagram (time, direction, offset, length). Connections are then served one
    /// task each, not by the fast lane.
    #[arg(long, value_name = "DIR")]
    pub capture: Option<PathBuf>,

    /// Write what was sent and received to FILE as a pcap (synthetic IP and TCP or UDP
    /// headers around each chunk; tcpdump -r and Wireshark open it). tcp://, tls:// and
    /// udp:// only; connections are then served one task each, not by the fast lane.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Serve Prometheus metrics over HTTP at ADDR, path /metrics (e.g. 127.0.0.1:9100,
    /// 9100, unix:/run/sockit-metrics.sock).
    #[arg(long, help_heading = PRODUCTION, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Every connection starts with a HAProxy PROXY protocol header (v1 or v2), as load
    /// balancers send it: logs, events and --allow/--deny then use the real client
    /// address. A connection without a valid header within 5s is closed and logged.
    #[arg(long, help_heading = PRODUCTION)]
    pub proxy_protocol: bool,

    /// Serve on the socket systemd passed (socket activation, LISTEN_FDS) instead of
    /// binding; ENDPOINT then only names the protocol: tcp, tls, udp, unix:PATH, unixgram:PATH.
    #[arg(long, help_heading = PRODUCTION)]
    pub systemd: bool,
}

/// Who may open a listening Unix socket (`serve`, `relay`, `listen`): the socket file's
/// mode and owners, and for any Unix stream socket (abstract ones have no file) the users
/// let in by their credentials.
#[derive(Debug, Args)]
pub struct UnixSocketArgs {
    /// Permission bits of a unix:PATH / unixgram:PATH socket file, in octal (0600: only
    /// its owner may connect), in place before anyone can connect [default: from the umask].
    #[arg(long, help_heading = LIMITS, value_name = "OCTAL", value_parser = parse_mode)]
    pub mode: Option<u32>,

    /// Owner of the socket file: a user name or uid (only root may give a file away).
    #[arg(long, help_heading = LIMITS, value_name = "USER")]
    pub owner: Option<String>,

    /// Group of the socket file: a group name or gid (one of yours, or any as root).
    #[arg(long, help_heading = LIMITS, value_name = "GROUP")]
    pub group: Option<String>,

    /// Let in only Unix clients running as this uid (repeatable): the access control for
    /// abstract sockets (unix:@NAME), which have no file. Stream clients are checked with
    /// SO_PEERCRED and closed at once, with one log line each; on unixgram: each
    /// datagram's sender is checked (SCM_CREDENTIALS) and others' datagrams dropped,
    /// logged at most once a second.
    #[arg(long, help_heading = LIMITS, value_name = "UID")]
    pub allow_uid: Vec<u32>,

    /// Let in only Unix clients whose primary group is this gid (repeatable), as
    /// --allow-uid; a client matching either is let in.
    #[arg(long, help_heading = LIMITS, value_name = "GID")]
    pub allow_gid: Vec<u32>,
}

/// The listening side of TLS (`serve`, `relay`).
#[derive(Debug, Args)]
pub struct TlsServerArgs {
    /// Certificate chain (PEM) for a tls:// listener [default: a self-signed certificate
    /// made at start, its SHA-256 fingerprint printed on stderr].
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Mutual TLS: ask every tls:// client for a certificate and let in only those issued
    /// by a CA in FILE (PEM; a self-signed client certificate listed in FILE is trusted as
    /// it is). The client's subject and names go to the logs, events and --exec's
    /// environment.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,

    /// With --client-ca: ask for a client certificate but let clients without one in
    /// (one that presents a certificate must still pass the check).
    #[arg(long, requires = "client_ca")]
    pub client_ca_optional: bool,
}

/// The certificate a connecting command presents when a tls:// server asks for one
/// (mutual TLS): `send`, `connect`, `bench`. `relay` has `--target-cert`/`--target-key`,
/// since its `--cert`/`--key` are the listening side's.
#[derive(Debug, Args)]
pub struct ClientCertArgs {
    /// Client certificate chain (PEM) to present to a tls:// server that asks for one.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

/// The connecting side of TLS, one definition for every command that connects (`send`,
/// `connect`, `relay`'s target, `bench`).
#[derive(Debug, Args)]
pub struct TlsClientArgs {
    /// Trust only the certificates in FILE (PEM) for tls://: the CAs that issue the
    /// server's certificate, or the server's own self-signed certificate [default: the
    /// system's trusted roots].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Accept a tls:// server whose certificate has this SHA-256 fingerprint, as sockit
    /// and `openssl x509 -fingerprint -sha256` print it (AB:CD:…) or as 64 hex digits
    /// (repeatable). Name and dates are not checked; the handshake signature is.
    #[arg(long, value_name = "SHA256", value_parser = parse_fingerprint)]
    pub pin: Vec<crate::transport::tls::Fingerprint>,

    /// Do not check the tls:// server's certificate (a warning is printed).
    #[arg(long, conflicts_with_all = ["ca", "pin"])]
    pub insecure: bool,

    /// A full TLS handshake on every connection: do not resume earlier sessions (for
    /// measuring handshakes).
    #[arg(long)]
    pub no_resume: bool,

    /// Name to send as SNI and to check in the certificate [default: the endpoint's host].
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
}

/// Help heading for the local side of client sockets.
const LOCAL_SOCKET: &str = "Local socket (source address and options)";

/// The local side of every socket a command opens to a peer (`send`, `connect`,
/// `relay`'s target side, `bench`; on `listen`, the accepted connections): one
/// definition so the flags mean the same everywhere. Turned into socket options by
/// `transport::SocketOptions`.
#[derive(Debug, Args)]
pub struct SocketArgs {
    /// Bind this local address and/or port before connecting: ADDR, ADDR:PORT,
    /// `[IPv6]:PORT` or :PORT (nc -s ADDR -p PORT). Its family must be the target's.
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "ADDR[:PORT]", value_parser = parse_source)]
    pub source: Option<crate::transport::Source>,

    /// Send and receive only through this network interface (SO_BINDTODEVICE; needs
    /// root or CAP_NET_RAW).
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "IF", value_parser = parse_interface)]
    pub bind_device: Option<String>,

    /// Mark the packets for policy routing and firewall rules (SO_MARK; needs root or
    /// CAP_NET_ADMIN).
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "N")]
    pub mark: Option<u32>,

    /// The IP TOS byte (IPv6: traffic class), 0-255, e.g. 16 for low delay (nc -T).
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "N", conflicts_with = "dscp",
          value_parser = clap::value_parser!(u8))]
    pub tos: Option<u8>,

    /// The DSCP code point, 0-63 (the TOS byte's upper six bits), e.g. 46 for EF.
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "N",
          value_parser = clap::value_parser!(u8).range(0..=63))]
    pub dscp: Option<u8>,

    /// Time to live of outgoing packets, 1-255 (IPv6: the hop limit).
    #[arg(long, visible_alias = "hop-limit", help_heading = LOCAL_SOCKET, value_name = "N",
          value_parser = clap::value_parser!(u8).range(1..))]
    pub ttl: Option<u8>,

    /// TCP keepalive: probe after IDLE without traffic, then every INTERVAL, dropping the
    /// connection after COUNT unanswered probes (e.g. 30s or 30s,5s,3).
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "IDLE[,INTERVAL,COUNT]")]
    pub keepalive: Option<crate::transport::Keepalive>,

    /// Let the kernel hold small TCP writes back to coalesce them (Nagle's algorithm on)
    /// [default: off, TCP_NODELAY, every write leaves at once].
    #[arg(long, help_heading = LOCAL_SOCKET, conflicts_with = "no_delay")]
    pub delay: bool,

    /// TCP_NODELAY: every write leaves at once (the default; says so explicitly).
    #[arg(long, help_heading = LOCAL_SOCKET)]
    pub no_delay: bool,

    /// Socket send buffer in bytes (SO_SNDBUF; the kernel doubles it and caps it at
    /// net.core.wmem_max).
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64 / 2))]
    pub send_buffer: Option<u64>,

    /// Socket receive buffer in bytes (SO_RCVBUF; the kernel doubles it and caps it at
    /// net.core.rmem_max).
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=i32::MAX as u64 / 2))]
    pub recv_buffer: Option<u64>,

    /// Allow sending to broadcast addresses on udp:// (SO_BROADCAST, nc -b).
    #[arg(long, help_heading = LOCAL_SOCKET)]
    pub broadcast: bool,

    /// Multicast (udp:// to or on a group address such as 239.1.2.3): the interface to
    /// send from and join on, by name or IPv4 address (127.0.0.1 or lo keeps it on this
    /// host) [default: the kernel's choice by its routes].
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "IF")]
    pub multicast_if: Option<String>,

    /// Multicast: hops a datagram may take, 0-255 [default: 1, this network only].
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "N")]
    pub multicast_ttl: Option<u8>,

    /// Multicast: whether receivers on this host get what it sends.
    #[arg(long, help_heading = LOCAL_SOCKET, value_enum, value_name = "ON|OFF", default_value_t = crate::transport::multicast::MulticastLoop::On)]
    pub multicast_loop: crate::transport::multicast::MulticastLoop,
}

/// Parses `--source`.
fn parse_source(text: &str) -> Result<crate::transport::Source, String> {
    text.parse()
}

/// Checks an interface name the kernel could accept (at most 15 bytes, no `/`, no space).
fn parse_interface(text: &str) -> Result<String, String> {
    let fits =
        !text.is_empty() && text.len() < libc::IFNAMSIZ && !text.contains(['/', ' ', '\0', ':']);
    if fits {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not an interface name (1 to 15 characters, no '/', ':' or spaces; see `ip link`)"
        ))
    }
}

/// Connecting again when a connect fails (`send`, `connect`, `relay`'s target), as
/// socat's `retry=N` / `forever` with `interval=`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Connect again this many times after a failed attempt (refused, timed out,
    /// unreachable, name not found), or "forever".
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "N|forever", default_value = "0",
          allow_hyphen_values = true)]
    pub retry: crate::transport::Attempts,

    /// Wait before the first retry; each later wait doubles, up to --retry-max-delay.
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "DURATION", default_value = "1s",
          value_parser = parse_duration)]
    pub retry_delay: Duration,

    /// The longest wait between two attempts.
    #[arg(long, help_heading = LOCAL_SOCKET, value_name = "DURATION", default_value = "30s",
          value_parser = parse_duration)]
    pub retry_max_delay: Duration,
}

/// Framing options shared by `serve` and `send`.
#[derive(Debug, Args)]
pub struct FramingArgs {
    /// raw: each read is one message (the note). line: one message per line.
    #[arg(long, value_enum, default_value_t = FramingChoice::Raw)]
    pub framing: FramingChoice,

    /// Bytes per read [default: 1024, the note's recv(1024); 256 KiB for `serve --discard`,
    /// where only throughput matters].
    #[arg(long, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    pub buffer: Option<u64>,

    /// Longest line accepted with --framing line.
    #[arg(long, value_name = "BYTES", default_value_t = 65536,
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub max_line: u64,
}

/// `--framing` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FramingChoice {
    /// Each read is a message.
    Raw,
    /// Each newline-terminated line is a message.
    Line,
}

/// `sockit send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where to send (see `sockit --help` for the forms).
    #[arg(default_value = "tcp", value_name = "ENDPOINT")]
    pub endpoint: String,

    /// The message; "-" reads it from stdin [default: the note's "hello tcp server" /
    /// "hello udp server"].
    #[arg(value_name = "MESSAGE")]
    pub message: Option<String>,

    /// Send the message this many times, waiting for each reply.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// Give up connecting or waiting for a reply after this long.
    #[arg(short = 't', long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// How the reply is read.
    #[command(flatten)]
    pub framing: FramingArgs,

    /// A raw reply is complete after exactly this many bytes (instead of at a pause).
    #[arg(long, value_name = "BYTES", conflicts_with = "reply_quiet",
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub reply_size: Option<u64>,

    /// A raw reply is complete once the server has sent nothing for this long (or
    /// closes); the whole reply is read, however many reads it takes.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = parse_duration)]
    pub reply_quiet: Duration,

    /// How a tls:// server is checked.
    #[command(flatten)]
    pub tls: TlsClientArgs,

    /// The client certificate, for servers that ask for one.
    #[command(flatten)]
    pub client_cert: ClientCertArgs,

    /// Source address and socket options.
    #[command(flatten)]
    pub socket: SocketArgs,

    /// Connecting again while the server is not up.
    #[command(flatten)]
    pub retry: RetryArgs,

    /// Proxies to connect through.
    #[command(flatten)]
    pub proxy: super::proxy_client::ProxyClientArgs,

    /// Dump all traffic as offset / hex / ASCII on stderr.
    #[arg(long)]
    pub hex: bool,
}

/// `sockit connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Where to connect (see `sockit --help` for the forms).
    #[arg(value_name = "ENDPOINT")]
    pub endpoint: String,

    /// The port, when ENDPOINT is a host alone (`connect 127.0.0.1 9000`, as nc takes it).
    #[arg(value_name = "PORT")]
    pub port: Option<String>,

    /// What nc -N does, and what connect always does: when stdin ends, shut down the
    /// sending side (FIN) and keep printing until the server closes.
    #[arg(long, short = 'N')]
    pub close_on_eof: bool,

    /// After stdin ends, stop once the server has sent nothing for this long, even if it
    /// has not closed (nc -q; never stops while bytes arrive; "0": wait for the close)
    /// [default: wait for the close; datagrams: 2s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub quit_after: Option<Duration>,

    /// Do not read stdin: send nothing, only print what the server sends until it closes
    /// (nc -d).
    #[arg(long, short = 'd', conflicts_with_all = ["crlf", "close_on_eof"])]
    pub no_stdin: bool,

    /// Send line endings as CRLF (for HTTP, SMTP and other CRLF protocols).
    #[arg(long)]
    pub crlf: bool,

    /// End after this long with no traffic either way ("0": never) [default: never for
    /// streams; 2s of quiet after stdin ends for datagrams].
    #[arg(short = 'i', long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Give up connecting (TCP and TLS handshake together) after this long.
    #[arg(short = 't', long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// How a tls:// server is checked.
    #[command(flatten)]
    pub tls: TlsClientArgs,

    /// The client certificate, for servers that ask for one.
    #[command(flatten)]
    pub client_cert: ClientCertArgs,

    /// Source address and socket options.
    #[command(flatten)]
    pub socket: SocketArgs,

    /// Connecting again while the server is not up.
    #[command(flatten)]
    pub retry: RetryArgs,

    /// Proxies to connect through.
    #[command(flatten)]
    pub proxy: super::proxy_client::ProxyClientArgs,

    /// Dump all traffic as offset / hex / ASCII on stderr.
    #[arg(long)]
    pub hex: bool,

    /// Write each connection's bytes to files in DIR (created if missing), one per
    /// direction: `conn<N>_<peer>.sent` and `conn<N>_<peer>.received`. On udp:// and
    /// unixgram: each peer also gets `conn<N>_<peer>.datagrams`, one line per datagram
    /// (time, direction, offset, length), so datagram boundaries are kept.
    #[arg(long, value_name = "DIR")]
    pub capture: Option<PathBuf>,

    /// Write what was sent and received to FILE as a pcap (synthetic IP and TCP or UDP
    /// headers around each chunk; tcpdump -r and Wireshark open it). tcp://, tls:// and
    /// udp:// only.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
}

/// `sockit listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Where to listen (see `sockit --help` for the forms; PORT alone is 127.0.0.1:PORT).
    #[arg(value_name = "ENDPOINT")]
    pub endpoint: String,

    /// Keep listening after the first client, serving several at once, until a signal
    /// (ncat -lk); datagrams: every sender is a peer.
    #[arg(short = 'k', long)]
    pub keep_open: bool,

    /// End a conversation after this long with no traffic either way ("0": never)
    /// [default: never for streams; 2s of quiet after stdin ends for datagrams].
    #[arg(short = 'i', long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Certificate and key for tls:// endpoints.
    #[command(flatten)]
    pub tls: TlsServerArgs,

    /// Socket options set on the listening socket, which Linux copies to every
    /// connection it accepts (--source does not apply).
    #[command(flatten)]
    pub socket: SocketArgs,

    /// Dump all traffic as offset / hex / ASCII on stderr.
    #[arg(long)]
    pub hex: bool,

    /// Write each connection's bytes to files in DIR (created if missing), one per
    /// direction: `conn<N>_<peer>.sent` and `conn<N>_<peer>.received`. On udp:// and
    /// unixgram: each peer also gets `conn<N>_<peer>.datagrams`, one line per datagram
    /// (time, direction, offset, length), so datagram boundaries are kept.
    #[arg(long, value_name = "DIR")]
    pub capture: Option<PathBuf>,

    /// Write what was sent and received to FILE as a pcap (synthetic IP and TCP or UDP
    /// headers around each chunk; tcpdump -r and Wireshark open it). tcp://, tls:// and
    /// udp:// only.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Who may open a Unix socket.
    #[command(flatten)]
    pub unix: UnixSocketArgs,
}

/// `sockit relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Where to accept clients.
    #[arg(value_name = "LISTEN_ENDPOINT")]
    pub listen: String,

    /// Where to forward each client.
    #[arg(value_name = "TARGET_ENDPOINT")]
    pub target: String,

    /// Bytes held per direction per connection (buffer or splice pipe, grown to this
    /// only while reads fill it): the most the relay ever holds for one side while the
    /// other is slow. Lower it (e.g. 262144) to cap memory with many fast bulk transfers.
    #[arg(long, value_name = "BYTES", default_value_t = RelayOptions::DEFAULT_BUFFER as u64,
          value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    pub buffer: u64,

    /// How stream bytes are copied: buffered reads and writes through a buffer that grows
    /// with the traffic; splice moves them between two plain sockets on Linux without
    /// copying (the pipe holds at most --buffer; best with --buffer 262144).
    #[arg(long, value_name = "MODE", value_enum, default_value_t = CopyMode::Buffered)]
    pub copy: CopyMode,

    /// Who may connect and how many at once.
    #[command(flatten)]
    pub access: AccessArgs,

    /// Who may open a Unix socket.
    #[command(flatten)]
    pub unix: UnixSocketArgs,

    /// Close a connection (or end a UDP session) after this long with no traffic ("0": never).
    #[arg(long, help_heading = LIMITS, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Give up connecting to the target (TCP and TLS together) after this long.
    #[arg(short = 't', long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Most UDP / Unix datagram client sessions at once; at the cap a new client takes the
    /// place of the session idle longest (counted and logged as evicted).
    #[arg(long, help_heading = LIMITS, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_sessions: u64,

    /// How long Ctrl-C / SIGTERM lets open connections finish.
    #[arg(long, help_heading = LIMITS, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,

    /// listen(2) backlog: connections the kernel queues while we are busy (or at
    /// --max-conns).
    #[arg(long, help_heading = LIMITS, value_name = "N", default_value_t = 1024)]
    pub backlog: u32,

    /// Certificate and key when LISTEN_ENDPOINT is tls://.
    #[command(flatten)]
    pub tls_listen: TlsServerArgs,

    /// How the target is checked when TARGET_ENDPOINT is tls://.
    #[command(flatten)]
    pub tls_target: TlsClientArgs,

    /// Client certificate chain (PEM) to present when a tls:// target asks for one
    /// (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "target_key")]
    pub target_cert: Option<PathBuf>,

    /// Private key (PEM) of --target-cert.
    #[arg(long, value_name = "FILE", requires = "target_cert")]
    pub target_key: Option<PathBuf>,

    /// Source address and socket options of the connections to the target.
    #[command(flatten)]
    pub socket: SocketArgs,

    /// Connecting again while the server is not up.
    #[command(flatten)]
    pub retry: RetryArgs,

    /// Proxies to connect through.
    #[command(flatten)]
    pub proxy: super::proxy_client::ProxyClientArgs,

    /// Dump the clients' traffic (both directions) as offset / hex / ASCII on stderr.
    #[arg(long)]
    pub hex: bool,

    /// Write each client connection's bytes to files in DIR (created if missing), one
    /// per direction: `conn<N>_<peer>.sent` (to the client) and .received (from it). On
    /// udp:// and unixgram: each client also gets `conn<N>_<peer>.datagrams`, one line per
    /// datagram (time, direction, offset, length).
    #[arg(long, value_name = "DIR")]
    pub capture: Option<PathBuf>,

    /// Write the client side's traffic to FILE as a pcap (synthetic IP and TCP or UDP
    /// headers around each chunk; tcpdump -r and Wireshark open it). tcp://, tls:// and
    /// udp:// listeners only.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Serve Prometheus metrics over HTTP at ADDR, path /metrics (e.g. 127.0.0.1:9100,
    /// 9100, unix:/run/sockit-metrics.sock).
    #[arg(long, help_heading = PRODUCTION, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Every connection starts with a HAProxy PROXY protocol header (v1 or v2), as load
    /// balancers send it: logs, events and --allow/--deny then use the real client
    /// address. A connection without a valid header within 5s is closed and logged.
    #[arg(long, help_heading = PRODUCTION)]
    pub proxy_protocol: bool,

    /// Serve on the socket systemd passed (socket activation, LISTEN_FDS) instead of
    /// binding; LISTEN_ENDPOINT then only names the protocol.
    #[arg(long, help_heading = PRODUCTION)]
    pub systemd: bool,

    /// Start each target connection with a PROXY protocol header (v1 text or v2 binary)
    /// naming the real client: the socket's peer, or with --proxy-protocol the client the
    /// incoming header named (HAProxy's send-proxy / send-proxy-v2). Stream targets; on
    /// a tls:// target the header precedes the TLS handshake, as HAProxy sends it.
    #[arg(long, help_heading = PRODUCTION, value_enum, value_name = "VERSION")]
    pub send_proxy: Option<crate::transport::proxy::SendProxy>,
}

/// `sockit probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The host to probe: an IP address or a name (only this host is contacted).
    #[arg(value_name = "HOST")]
    pub host: String,

    /// Ports: a list and ranges, e.g. 22,80,8000-8010.
    #[arg(value_name = "PORTS")]
    pub ports: String,

    /// Connection attempts in flight at once.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: u64,

    /// A port that has not answered after this long is reported filtered.
    #[arg(short = 't', long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Print only open ports.
    #[arg(long)]
    pub open: bool,

    /// Probe UDP ports: one datagram ("sockit-probe\n") each; open (a reply came),
    /// closed (ICMP port unreachable) or open|filtered (no answer), as nmap says (nc -zu).
    #[arg(short = 'u', long)]
    pub udp: bool,
}

/// `sockit bench`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchArgs {
    /// `sockit bench merge …` instead of a run.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,

    /// The server to load (see `sockit --help` for the forms).
    #[arg(default_value = "tcp", value_name = "ENDPOINT")]
    pub endpoint: String,

    /// The port, when ENDPOINT is a host alone (`bench 127.0.0.1 9000`).
    #[arg(value_name = "PORT")]
    pub port: Option<String>,

    /// Traffic to send [default: hello on stream endpoints, udp on datagram endpoints].
    #[arg(short, long, value_enum)]
    pub pattern: Option<crate::bench::Pattern>,

    /// Connections (datagram sockets) side by side, each with one request outstanding;
    /// in a throughput test, the parallel streams per direction (iperf3 -P) [default: 10;
    /// 1 in a throughput test].
    #[arg(short, long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=crate::bench::MAX_CONNECTIONS as u64))]
    pub connections: Option<u64>,

    /// How long to measure.
    #[arg(short, long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before measuring starts, not counted.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Bytes per request (per write for stream) [default: the note's 16-byte message for
    /// hello and udp, 64 for echo, 131072 for stream].
    #[arg(short, long, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=crate::bench::MAX_STREAM_SIZE as u64))]
    pub size: Option<u64>,

    /// Open loop: this many requests per second in total, on a fixed timetable.
    #[arg(short, long, value_name = "PER_SECOND", allow_hyphen_values = true)]
    pub rate: Option<String>,

    /// A reply (or a connect) slower than this counts as a timeout; for udp, a loss.
    #[arg(short, long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// A reply is complete after this many bytes [default: echo: --size; hello and udp:
    /// the first read / any datagram].
    #[arg(long, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=crate::bench::MAX_STREAM_SIZE as u64))]
    pub reply_size: Option<u64>,

    /// Also write every figure and the latency histogram as JSON to FILE ("-": stdout,
    /// and the table goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,

    /// The request to send, with escapes \n \r \t \\ \xNN (echo then expects as many
    /// bytes back).
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true,
          conflicts_with_all = ["size", "message_file"])]
    pub message: Option<String>,

    /// Read the request from FILE; with --message-delimiter, several requests sent in
    /// turn.
    #[arg(long, value_name = "FILE", conflicts_with = "size")]
    pub message_file: Option<std::path::PathBuf>,

    /// Split --message-file into several requests at D (escapes as in --message; D
    /// itself is not sent).
    #[arg(
        long,
        value_name = "D",
        requires = "message_file",
        allow_hyphen_values = true
    )]
    pub message_delimiter: Option<String>,

    /// Sent once on each new connection before its first request (a handshake or a
    /// login); its reply is read and not checked against --reply-regex.
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub first_message: Option<String>,

    /// A reply is complete at this delimiter (escapes as in --message).
    #[arg(
        long,
        value_name = "DELIM",
        conflicts_with = "reply_size",
        allow_hyphen_values = true
    )]
    pub reply_until: Option<String>,

    /// Every reply must match this regex, or it counts as a mismatch; alone, a reply is
    /// complete as soon as what arrived matches.
    #[arg(long, value_name = "RE", allow_hyphen_values = true)]
    pub reply_regex: Option<String>,

    /// Open loop: this many requests per second on each connection (tcpkali -r); the
    /// total is this times --connections.
    #[arg(
        long,
        value_name = "PER_SECOND",
        conflicts_with = "rate",
        allow_hyphen_values = true
    )]
    pub rate_per_conn: Option<String>,

    /// Open the connections at this pace from the start ("50/s" or "50").
    #[arg(long, value_name = "N/s", allow_hyphen_values = true)]
    pub connect_rate: Option<String>,

    /// Open loop: raise the total rate linearly from 0 over DURATION from the start;
    /// latency during the ramp is reported apart from the steady state.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub ramp_up: Option<String>,

    /// Also write the latencies as an HdrHistogram interval log to FILE (one compressed
    /// histogram per --hlog-interval, in microseconds), for HistogramLogProcessor and
    /// other HdrHistogram tools.
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<std::path::PathBuf>,

    /// The length of one interval of --hlog and --plot.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub hlog_interval: Duration,

    /// Also draw the latency percentile spectrum, and throughput and p99 per interval,
    /// as an SVG picture in FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,

    /// Start measuring at TIME (RFC 3339, such as 2026-12-06T21:00:00Z, or Unix
    /// seconds), after the warm-up that ends then: runs on several machines line up for
    /// `bench merge`. TIME must leave room for the warm-up and be within 24 hours.
    #[arg(long, value_name = "TIME")]
    pub start_at: Option<String>,

    /// What drives the connections: `lane` (one epoll set per thread: hello, echo and udp
    /// over plain TCP or UDP to an IP address or Unix stream paths, without TLS, proxy,
    /// first message or regex), `tasks` (a task per connection: every option), or `auto`
    /// (the lane when the run fits it).
    #[arg(long, value_enum, value_name = "ENGINE", default_value = "auto")]
    pub engine: crate::bench::EngineChoice,

    /// Throughput test, server → client (iperf3 -R); needs `sockit serve --perf`.
    #[arg(short = 'R', long, help_heading = THROUGHPUT, conflicts_with = "bidir")]
    pub reverse: bool,

    /// Throughput test in both directions at once, on separate connections (iperf3
    /// --bidir); needs `sockit serve --perf`.
    #[arg(long, help_heading = THROUGHPUT)]
    pub bidir: bool,

    /// Throughput test: a report line every DURATION (per stream and in total, with TCP_INFO
    /// for TCP); with --json, one NDJSON object per interval.
    #[arg(short = 'i', long, help_heading = THROUGHPUT, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Throughput test: a request/response probe on a connection of its own during the
    /// test, its round-trip percentiles reported next to the throughput.
    #[arg(long, help_heading = THROUGHPUT)]
    pub latency: bool,

    /// UDP throughput test at this rate, paced evenly: bits per second with k, M, G
    /// (powers of 1000), e.g. 100M or 1G (iperf3 -u -b); needs `sockit serve --perf`.
    #[arg(short = 'b', long, help_heading = THROUGHPUT, value_name = "RATE", allow_hyphen_values = true)]
    pub bitrate: Option<String>,

    /// How a tls:// server is checked.
    #[command(flatten)]
    pub tls: TlsClientArgs,

    /// The client certificate, for servers that ask for one.
    #[command(flatten)]
    pub client_cert: ClientCertArgs,

    /// Source address and socket options.
    #[command(flatten)]
    pub socket: SocketArgs,

    /// Proxies to connect through.
    #[command(flatten)]
    pub proxy: super::proxy_client::ProxyClientArgs,
}

/// Help heading of the throughput test's flags.
const THROUGHPUT: &str = "Throughput tests (against serve --perf)";

/// `sockit bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Combine JSON reports (or interval logs) of simultaneous runs: throughputs summed,
    /// histograms added.
    #[command(after_help = MERGE_EXAMPLES)]
    Merge(MergeArgs),
}

/// `sockit bench merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Reports written by `sockit bench --json`, or interval logs written by `--hlog`
    /// (all of one kind).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<std::path::PathBuf>,

    /// Also write the combined report as JSON to FILE ("-": stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,

    /// Also draw the latency percentile spectrum of each run and of the sum, one line
    /// each, as an SVG picture in FILE: two servers or two builds compared at a glance.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::OverLimit;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn zero_arguments_mean_the_note() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from(["sockit", "serve"])?;
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.endpoint, "tcp");
        assert_eq!(args.framing.buffer, None);
        Ok(())
    }

    #[test]
    fn the_relay_copies_through_buffers_of_up_to_4_mib_by_default() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from(["sockit", "relay", "tcp://127.0.0.1:1", "tcp"])?;
        let Command::Relay(args) = cli.command else {
            panic!("expected relay");
        };
        assert_eq!(args.copy, CopyMode::Buffered);
        assert_eq!(args.buffer, 4 * 1024 * 1024);
        assert_eq!(args.buffer, RelayOptions::DEFAULT_BUFFER as u64);
        let cli = Cli::try_parse_from(["sockit", "relay", "tcp", "tcp", "--copy", "splice"])?;
        let Command::Relay(args) = cli.command else {
            panic!("expected relay");
        };
        assert_eq!(args.copy, CopyMode::Splice);
        Ok(())
    }

    #[test]
    fn answer_modes_are_exclusive() {
        assert!(Cli::try_parse_from(["sockit", "serve", "--echo", "--reply", "x"]).is_err());
        assert!(Cli::try_parse_from(["sockit", "serve", "--echo", "--discard"]).is_err());
        assert!(Cli::try_parse_from(["sockit", "serve", "--chat", "--sh-exec", "cat"]).is_err());
        assert!(Cli::try_parse_from(["sockit", "serve", "--echo", "--exec", "cat"]).is_err());
        assert!(Cli::try_parse_from(["sockit", "serve", "--close", "--chat"]).is_err());
    }

    fn serve_args(argv: &[&str]) -> ServeArgs {
        let mut full = vec!["sockit", "serve"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).map(|cli| cli.command) {
            Ok(Command::Serve(args)) => args,
            other => panic!("{argv:?}: {other:?}"),
        }
    }

    #[test]
    fn exec_takes_the_rest_of_the_line_hyphens_included() {
        let args = serve_args(&["9000", "--idle-timeout", "1s", "--exec", "cat", "-n", "--x"]);
        assert_eq!(args.endpoint, "9000");
        assert_eq!(args.idle_timeout, Duration::from_secs(1));
        assert_eq!(
            args.exec,
            Some(vec!["cat".into(), "-n".into(), "--x".into()])
        );
    }

    #[test]
    fn access_ranges_repeat_and_refuse_needs_a_limit() {
        let args = serve_args(&[
            "--allow",
            "10.0.0.0/8",
            "--allow",
            "::1",
            "--deny",
            "10.0.0.1",
        ]);
        assert_eq!(args.access.allow.len(), 2);
        assert_eq!(args.access.deny.len(), 1);
        assert!(Cli::try_parse_from(["sockit", "serve", "--allow", "ten"]).is_err());
        assert!(
            serve_args(&["--max-conns-mode", "refuse"])
                .into_config()
                .is_err_and(|e| e.to_string().contains("--max-conns")),
            "refuse without a limit means nothing"
        );
        let args = serve_args(&["--max-conns", "2", "--max-conns-mode", "refuse"]);
        assert_eq!(args.access.max_conns_mode, Some(OverLimit::Refuse));
    }

    #[test]
    fn relay_takes_the_same_access_flags_as_serve() {
        let cli = Cli::try_parse_from([
            "sockit",
            "relay",
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:1",
            "--allow",
            "10.0.0.0/8",
            "--deny",
            "10.0.0.1",
            "--max-conns",
            "5",
            "--max-conns-mode",
            "refuse",
        ]);
        let Ok(Command::Relay(args)) = cli.map(|cli| cli.command) else {
            panic!("expected relay");
        };
        assert_eq!(args.access.allow.len(), 1);
        assert_eq!(args.access.deny.len(), 1);
        assert_eq!(args.access.max_conns, Some(5));
        assert_eq!(args.access.max_conns_mode, Some(OverLimit::Refuse));
    }

    /// Issue 20: a stream relay has a default --max-conns, so --max-conns-mode alone
    /// applies to it.
    #[test]
    fn relay_takes_max_conns_mode_for_its_default_limit() {
        let cli = Cli::try_parse_from([
            "sockit",
            "relay",
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:1",
            "--max-conns-mode",
            "refuse",
        ]);
        let Ok(Command::Relay(args)) = cli.map(|cli| cli.command) else {
            panic!("expected relay");
        };
        let config = args.into_config().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.options.over_limit, OverLimit::Refuse);
        assert_eq!(
            config.options.max_conns,
            Some(crate::relay::RelayOptions::DEFAULT_MAX_CONNS)
        );
    }
}
