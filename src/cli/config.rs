//! From arguments to typed configuration ("high args"): endpoints parsed, defaults that
//! depend on the transport chosen, durations of zero turned into "never", stdin read.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::access::{AccessPolicy, PerSourceLimit};

use super::access_args::AccessArgs;
use super::args::{
    ClientCertArgs, ConnectArgs, FramingArgs, FramingChoice, ListenArgs, ProbeArgs, RelayArgs,
    RetryArgs, SendArgs, ServeArgs, SocketArgs, TlsClientArgs, TlsServerArgs, UnixSocketArgs,
};
use crate::behaviour::Responder;
use crate::behaviour::chat::{ChatOptions, SenderRate};
use crate::behaviour::exec::{ExecSpec, check_program};
use crate::client::SendOptions;
use crate::client::connect::{InteractiveOptions, LineEndings, StdinUse};
use crate::client::listen::{Clients, ListenerOptions};
use crate::client::send::ReplyEnd;
use crate::endpoint::{Delivery, Endpoint, Host, UnixAddr};
use crate::error::{Error, Result};
use crate::framing::Framing;
use crate::obs::HexDump;
use crate::obs::hexdump::Capture;
use crate::probe::{ProbeOptions, ProbeProtocol};
use crate::relay::{CopyMode, RelayOptions};
use crate::server::{AfterReply, Limits, ServeMode, ServeOptions};
use crate::transport::client_cert::{ClientAuth, ClientCertFiles};
use crate::transport::pcap::Pcap;
use crate::transport::proxy::SendProxy;
use crate::transport::tls::{CertFlags, ClientTls, ClientTlsOptions, Resumption, ServerTls, Trust};
use crate::transport::{
    Attempts, Broadcast, Carrier, ConnectOptions, Layers, ListenOptions, ListenSource, Nagle,
    PeerCredAllow, ProxyProtocol, Retry, SocketOptions, UnixFilePerms,
};

/// A validated `serve` command.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub endpoint: Endpoint,
    /// How to serve.
    pub options: ServeOptions,
    /// `--metrics`: where to serve Prometheus metrics.
    pub metrics: Option<Endpoint>,
}

/// A validated `send` command.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Where to send.
    pub endpoint: Endpoint,
    /// What to send and how to wait.
    pub options: SendOptions,
}

/// A validated `connect` command.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// How to behave.
    pub options: InteractiveOptions,
}

/// A validated `listen` command.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Where to listen.
    pub endpoint: Endpoint,
    /// How to behave.
    pub options: ListenerOptions,
}

/// A validated `relay` command.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where to accept clients.
    pub listen: Endpoint,
    /// Where to send them and how.
    pub options: RelayOptions,
    /// `--metrics`: where to serve Prometheus metrics.
    pub metrics: Option<Endpoint>,
}

/// A validated `probe` command.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The one host probed.
    pub host: Host,
    /// The ports, in the order given.
    pub ports: Vec<u16>,
    /// Concurrency and timeout.
    pub options: ProbeOptions,
    /// `--open`: print only open ports.
    pub only_open: bool,
}

/// The hex dump on stderr, if `--hex`.
fn hex_dump(hex: bool) -> Option<HexDump> {
    hex.then(HexDump::stderr)
}

/// The layers of a listener: TLS for `tls://` (files, or self-signed) and `--hex`.
///
/// # Errors
/// [`Error::Usage`] for `--cert` on a non-TLS endpoint; [`Error::TlsSetup`] for unusable
/// files.
fn server_layers(endpoint: &Endpoint, tls: &TlsServerArgs, hex: bool) -> Result<Layers> {
    let files = tls.cert.as_deref().zip(tls.key.as_deref());
    let clients = client_auth(tls);
    let tls = match endpoint {
        Endpoint::Tls(hp) => Some(Arc::new(ServerTls::load_with(files, hp, &clients)?)),
        _ if files.is_some() || clients != ClientAuth::None => {
            return Err(Error::Usage(format!(
                "--cert, --key and --client-ca are for tls:// endpoints; {endpoint} is not one (write tls://HOST:PORT)"
            )));
        }
        _ => None,
    };
    Ok(Layers {
        tls,
        hex: hex_dump(hex),
        ..Layers::default()
    })
}

/// `--client-ca` and `--client-ca-optional` as the server's client-certificate policy.
fn client_auth(tls: &TlsServerArgs) -> ClientAuth {
    match (&tls.client_ca, tls.client_ca_optional) {
        (None, _) => ClientAuth::None,
        (Some(path), false) => ClientAuth::Required(path.clone()),
        (Some(path), true) => ClientAuth::Optional(path.clone()),
    }
}

/// `relay --target-cert`/`--target-key` as the client certificate for a tls:// target.
fn target_cert(
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
) -> Option<(ClientCertFiles, CertFlags)> {
    let (cert, key) = cert.zip(key)?;
    Some((
        ClientCertFiles { cert, key },
        CertFlags {
            cert: "--target-cert",
            key: "--target-key",
        },
    ))
}

impl ClientCertArgs {
    /// `--cert`/`--key` as the client certificate for a tls:// server.
    pub(crate) fn files(&self) -> Option<(ClientCertFiles, CertFlags)> {
        let (cert, key) = self.cert.clone().zip(self.key.clone())?;
        Some((
            ClientCertFiles { cert, key },
            CertFlags {
                cert: "--cert",
                key: "--key",
            },
        ))
    }
}

/// `--send-proxy` for this target: stream targets only (the header goes first, before
/// TLS for a `tls://` target).
///
/// # Errors
/// [`Error::Usage`] for a datagram target.
fn send_proxy(version: Option<SendProxy>, target: &Endpoint) -> Result<Option<SendProxy>> {
    match version {
        Some(_) if target.delivery() != Delivery::Stream => Err(Error::Usage(format!(
            "--send-proxy is for stream targets; {target} is a datagram endpoint"
        ))),
        version => Ok(version),
    }
}

/// `--proxy-protocol` as a layer setting.
fn proxy_protocol(on: bool) -> ProxyProtocol {
    if on {
        ProxyProtocol::required()
    } else {
        ProxyProtocol::Off
    }
}

/// `--systemd`: where the listening socket comes from.
fn listen_source(systemd: bool) -> ListenSource {
    if systemd {
        ListenSource::Systemd
    } else {
        ListenSource::Bind
    }
}

/// Parses `--metrics ADDR` (any stream endpoint form; checked when bound).
fn metrics_endpoint(text: Option<&str>) -> Result<Option<Endpoint>> {
    text.map(|t| t.parse::<Endpoint>().map_err(Error::from))
        .transpose()
}

/// The TLS client for a `tls://` endpoint (`None` for other schemes), built once here
/// for the whole command: every connection the command makes shares it.
///
/// # Errors
/// [`Error::Usage`] for TLS flags on a non-TLS endpoint; [`Error::TlsSetup`] for an
/// unusable `--ca` file or missing system roots.
pub(crate) fn client_tls(
    endpoint: &Endpoint,
    tls: &TlsClientArgs,
    client_cert: Option<(ClientCertFiles, CertFlags)>,
) -> Result<Option<ClientTls>> {
    let trust = match (&tls.ca, tls.insecure, tls.pin.is_empty()) {
        (Some(path), _, _) => Trust::CaFile(path.clone()),
        (None, true, _) => Trust::Insecure,
        (None, false, false) => Trust::Pinned,
        (None, false, true) => Trust::System,
    };
    if !matches!(endpoint, Endpoint::Tls(_)) {
        if let Some((_, flags)) = &client_cert {
            return Err(Error::Usage(format!(
                "{} and {} are for tls:// endpoints; {endpoint} is not one (write tls://HOST:PORT)",
                flags.cert, flags.key
            )));
        }
        if trust != Trust::System || tls.server_name.is_some() || tls.no_resume {
            return Err(Error::Usage(format!(
                "--ca, --pin, --insecure, --server-name and --no-resume are for tls:// endpoints; {endpoint} is not one (write tls://HOST:PORT)"
            )));
        }
        return Ok(None);
    }
    ClientTls::with_options(ClientTlsOptions {
        trust,
        pins: tls.pin.clone(),
        server_name: tls.server_name.clone(),
        resumption: if tls.no_resume {
            Resumption::Off
        } else {
            Resumption::On
        },
        client_cert,
    })
    .map(Some)
}

/// A client target from its words: `ENDPOINT`, or `HOST PORT` as nc takes them.
///
/// # Errors
/// [`Error::Endpoint`] for a malformed endpoint, port 0, or a second word that does not
/// fit.
pub(crate) fn client_target(endpoint: &str, port: Option<&str>) -> Result<Endpoint> {
    match port {
        Some(port) => Ok(Endpoint::from_host_and_port(endpoint, port)?),
        None => Ok(Endpoint::parse_target(endpoint)?),
    }
}

/// `send`'s target: when the endpoint lacks its port and the message looks like one
/// (`send 127.0.0.1 9000`, the nc habit), says which command was meant.
fn send_target(endpoint: &str, message: Option<&str>) -> Result<Endpoint> {
    let parsed = Endpoint::parse_target(endpoint);
    let (Err(e), Some(word)) = (&parsed, message) else {
        return Ok(parsed?);
    };
    match Endpoint::from_host_and_port(endpoint, word) {
        Ok(meant) => Err(Error::Usage(format!(
            "{endpoint:?} has no port; did you mean `sockit send {meant} [MESSAGE]`? (send's second word is the message)"
        ))),
        Err(_) => Err(e.clone().into()),
    }
}

/// The read size of the note's `recv(1024)`: the default.
const NOTE_BUFFER: usize = 1024;

/// The read size for `serve --discard`, which only counts bytes: large reads are what
/// make a sink fast.
const DISCARD_BUFFER: usize = 256 * 1024;

/// Zero means "no limit" for timeouts given on the command line.
fn optional(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

/// The framing rule and read size chosen by the shared flags.
///
/// `default_buffer` is the read size when `--buffer` is not given.
fn framing(args: &FramingArgs, default_buffer: usize) -> Result<(Framing, usize)> {
    let buffer = match args.buffer {
        Some(bytes) => {
            usize::try_from(bytes).map_err(|_| Error::Usage("--buffer is too large".into()))?
        }
        None => default_buffer,
    };
    let max_len = usize::try_from(args.max_line)
        .map_err(|_| Error::Usage("--max-line is too large".into()))?;
    let framing = match args.framing {
        FramingChoice::Raw => Framing::Raw,
        FramingChoice::Line => Framing::Line { max_len },
    };
    Ok((framing, buffer))
}

/// Programs running at once for `serve --exec` on a stream endpoint without --max-conns:
/// ncat's default connection limit. Clients beyond it wait in the kernel backlog.
const DEFAULT_STREAM_PROGRAMS: usize = 100;

impl ServeArgs {
    /// Parses the endpoint and settles every default.
    ///
    /// # Errors
    /// [`Error::Endpoint`] for a malformed endpoint, [`Error::Usage`] for values that
    /// do not fit.
    pub fn into_config(self) -> Result<ServeConfig> {
        let endpoint: Endpoint = self.endpoint.parse()?;
        let default_buffer = if self.discard {
            DISCARD_BUFFER
        } else {
            NOTE_BUFFER
        };
        let (framing, buffer_size) = framing(&self.framing, default_buffer)?;
        let mode = serve_mode(&self, framing)?;
        let responder = if self.echo {
            Responder::Echo
        } else if self.discard {
            Responder::Discard
        } else if let Some(text) = self.reply {
            check_reply_fits(&endpoint, &text)?;
            Responder::Reply(Bytes::from(text))
        } else {
            Responder::seed_reply(endpoint.seed_word())
        };
        let capture = capture_dir(self.capture.as_deref())?;
        if (capture.is_some() || self.pcap.is_some())
            && matches!(mode, ServeMode::Exec(_))
            && endpoint.delivery() == Delivery::Datagram
        {
            return Err(Error::Usage(format!(
                "--capture and --pcap record datagrams the server answers itself; with --exec \
                 on {endpoint} each datagram goes to a program (capture on the client side instead)"
            )));
        }
        let max_conns = match self.access.max_conns()? {
            None if matches!(mode, ServeMode::Exec(_))
                && endpoint.delivery() == Delivery::Stream =>
            {
                Some(DEFAULT_STREAM_PROGRAMS)
            }
            chosen => chosen,
        };
        let options = ServeOptions {
            mode,
            responder,
            access: self.access.policy()?,
            framing,
            buffer_size,
            after_reply: if self.close {
                AfterReply::Close
            } else {
                AfterReply::KeepOpen
            },
            limits: Limits {
                max_conns,
                over_limit: self.access.over_limit(max_conns)?,
                idle_timeout: optional(self.idle_timeout),
                message_timeout: optional(self.message_timeout),
                grace: self.grace,
                amplification: self.amplification_limit.unwrap_or_default(),
            },
            listen: ListenOptions {
                backlog: self.backlog,
                reuse_port: self.reuse_port,
                source: listen_source(self.systemd),
                accepted: self.socket.checked_for_listening(&endpoint)?,
                unix_file: self.unix.file_perms(&endpoint)?,
            },
            layers: Layers {
                proxy: proxy_protocol(self.proxy_protocol),
                capture,
                pcap: pcap_file(self.pcap.as_deref(), &endpoint)?,
                ..server_layers(&endpoint, &self.tls, self.hex)?
            },
            busy_poll: self.busy_poll,
        };
        let metrics = metrics_endpoint(self.metrics.as_deref())?;
        Ok(ServeConfig {
            endpoint,
            options,
            metrics,
        })
    }
}

/// A `--reply` a datagram cannot hold is refused at start, not once per datagram.
///
/// # Errors
/// [`Error::Usage`] naming the limit.
fn check_reply_fits(endpoint: &Endpoint, reply: &str) -> Result<()> {
    use crate::transport::MAX_DATAGRAM;
    if endpoint.delivery() == Delivery::Datagram && reply.len() > MAX_DATAGRAM {
        return Err(Error::Usage(format!(
            "--reply is {} bytes; a datagram on {endpoint} holds at most {MAX_DATAGRAM}",
            reply.len()
        )));
    }
    Ok(())
}

impl UnixSocketArgs {
    /// `--mode`, `--owner`, `--group` resolved to numbers; installs `--allow-uid` /
    /// `--allow-gid` as the rule for every Unix socket this process accepts or receives
    /// datagrams on.
    ///
    /// # Errors
    /// [`Error::Usage`] for a user or group that does not exist.
    fn file_perms(&self, endpoint: &Endpoint) -> Result<UnixFilePerms> {
        let file = matches!(
            endpoint,
            Endpoint::Unix(UnixAddr::Path(_)) | Endpoint::UnixDgram(UnixAddr::Path(_))
        );
        if !file && (self.mode.is_some() || self.owner.is_some() || self.group.is_some()) {
            return Err(Error::Usage(format!(
                "--mode, --owner and --group set a socket file's permissions, and {endpoint} has no file; \
                 they apply to unix:PATH and unixgram:PATH (use --allow-uid for unix:@NAME)"
            )));
        }
        let allow_list = !(self.allow_uid.is_empty() && self.allow_gid.is_empty());
        if allow_list && !matches!(endpoint, Endpoint::Unix(_) | Endpoint::UnixDgram(_)) {
            return Err(Error::Usage(format!(
                "--allow-uid and --allow-gid check the credentials of a Unix client, and {endpoint} \
                 is not a unix: or unixgram: endpoint (use --allow/--deny for IP clients)"
            )));
        }
        PeerCredAllow {
            uids: self.allow_uid.clone(),
            gids: self.allow_gid.clone(),
        }
        .install();
        Ok(UnixFilePerms {
            mode: self.mode,
            owner: self
                .owner
                .as_deref()
                .map(|u| account_id(u, "/etc/passwd", "--owner"))
                .transpose()?,
            group: self
                .group
                .as_deref()
                .map(|g| account_id(g, "/etc/group", "--group"))
                .transpose()?,
        })
    }
}

/// A uid or gid given as a number, or as a name looked up in `/etc/passwd` or
/// `/etc/group` (name:x:ID:… lines).
fn account_id(name: &str, table: &str, flag: &str) -> Result<u32> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    std::fs::read_to_string(table)
        .ok()
        .and_then(|text| {
            text.lines()
                .map(|line| line.split(':').collect::<Vec<_>>())
                .find(|fields| fields.first() == Some(&name))
                .and_then(|fields| fields.get(2)?.parse().ok())
        })
        .ok_or_else(|| {
            Error::Usage(format!(
                "{flag} {name}: no such name in {table}; give a number or an existing name"
            ))
        })
}

impl AccessArgs {
    /// The `--allow` / `--deny` rules, `--proxy-from` and `--max-conns-per-source`.
    ///
    /// # Errors
    /// [`Error::Usage`] when the per-source limit does not fit this machine's `usize`.
    pub(super) fn policy(&self) -> Result<AccessPolicy> {
        let per_source = self
            .max_conns_per_source
            .map(|n| {
                usize::try_from(n)
                    .map_err(|_| Error::Usage("--max-conns-per-source is too large".into()))
            })
            .transpose()?;
        Ok(AccessPolicy::new(self.allow.clone(), self.deny.clone())
            .with_proxy_from(self.proxy_from.clone())
            .with_per_source(PerSourceLimit::from_flag(per_source)))
    }

    /// `--max-conns` as a count.
    ///
    /// # Errors
    /// [`Error::Usage`] when it does not fit this machine's `usize`.
    /// `--max-conns-mode` for a command whose limit, defaults included, is `limit`.
    ///
    /// # Errors
    /// [`Error::Usage`] when a mode is given but nothing limits the connections.
    pub(super) fn over_limit(&self, limit: Option<usize>) -> Result<crate::server::OverLimit> {
        match (self.max_conns_mode, limit) {
            (Some(_), None) => Err(Error::Usage(
                "--max-conns-mode needs a limit to apply to; give --max-conns N".into(),
            )),
            (mode, _) => Ok(mode.unwrap_or_default()),
        }
    }

    pub(super) fn max_conns(&self) -> Result<Option<usize>> {
        self.max_conns
            .map(|n| {
                usize::try_from(n).map_err(|_| Error::Usage("--max-conns is too large".into()))
            })
            .transpose()
    }
}

/// `--exec` takes the rest of the command line, so `--exec cat -n --echo` gives `--echo`
/// to cat, which then fails on every connection. Such a command line stays valid (the
/// program may well take an option of the same name), but each argument that is also an
/// option of `sockit serve` gets one warning at start-up saying where it went and where
/// sockit's own options belong.
fn warn_of_serve_flags_given_to_the_program(
    program: &std::ffi::OsStr,
    args: &[std::ffi::OsString],
) {
    use clap::CommandFactory;
    let cli = super::Cli::command();
    let serve_flags: Vec<String> = cli
        .get_arguments()
        .chain(
            cli.find_subcommand("serve")
                .into_iter()
                .flat_map(clap::Command::get_arguments),
        )
        .filter_map(clap::Arg::get_long)
        .map(|long| format!("--{long}"))
        .collect();
    let program = program.to_string_lossy();
    for arg in args {
        let arg = arg.to_string_lossy();
        let name = arg.split('=').next().unwrap_or_default();
        if serve_flags.iter().any(|flag| flag == name) {
            tracing::warn!(
                "`{arg}` comes after --exec, so it is an argument of {program}, not an option \
                 of sockit; put sockit's options before --exec"
            );
        }
    }
}

/// The connection behaviour chosen by `--exec`, `--sh-exec` or `--chat` (default: answer
/// each message).
fn serve_mode(args: &ServeArgs, framing: Framing) -> Result<ServeMode> {
    if let Some(words) = &args.exec {
        let Some((program, rest)) = words.split_first() else {
            return Err(Error::Usage("--exec needs a program to run".into()));
        };
        check_program(program).map_err(Error::Usage)?;
        warn_of_serve_flags_given_to_the_program(program, rest);
        let mut spec = ExecSpec::program(program.clone(), rest.to_vec());
        spec.stderr = args.exec_stderr;
        spec.eof_wait = optional(args.exec_eof_wait);
        return Ok(ServeMode::Exec(spec));
    }
    if let Some(command) = &args.sh_exec {
        if command.to_string_lossy().trim().is_empty() {
            return Err(Error::Usage(
                "--sh-exec needs a command line to run (e.g. --sh-exec 'sort | uniq -c')".into(),
            ));
        }
        let mut spec = ExecSpec::shell(command.clone());
        spec.stderr = args.exec_stderr;
        spec.eof_wait = optional(args.exec_eof_wait);
        return Ok(ServeMode::Exec(spec));
    }
    if args.perf {
        return Ok(ServeMode::Perf);
    }
    if args.chat {
        let max_line = match framing {
            Framing::Line { max_len } => max_len,
            Framing::Raw => usize::try_from(args.framing.max_line)
                .map_err(|_| Error::Usage("--max-line is too large".into()))?,
        };
        let room_limit = usize::try_from(args.chat_memory)
            .map_err(|_| Error::Usage("--chat-memory is too large".into()))?;
        return Ok(ServeMode::Chat(ChatOptions {
            max_line,
            room_limit,
            rate: SenderRate {
                lines_per_sec: args.chat_rate,
                bytes_per_sec: args.chat_bytes_rate,
            },
            ..ChatOptions::default()
        }));
    }
    Ok(ServeMode::Respond)
}

impl SocketArgs {
    /// The socket options these flags ask for.
    ///
    /// # Errors
    /// [`Error::Usage`] for a buffer size this machine cannot hold.
    pub fn options(&self) -> Result<SocketOptions> {
        let size = |flag: &str, bytes: Option<u64>| {
            bytes
                .map(|b| {
                    usize::try_from(b).map_err(|_| Error::Usage(format!("{flag} is too large")))
                })
                .transpose()
        };
        Ok(SocketOptions {
            source: self.source,
            bind_device: self.bind_device.clone(),
            mark: self.mark,
            tos: self.tos.or(self.dscp.map(|dscp| dscp << 2)),
            ttl: self.ttl,
            keepalive: self.keepalive,
            nagle: if self.delay { Nagle::On } else { Nagle::Off },
            send_buffer: size("--send-buffer", self.send_buffer)?,
            recv_buffer: size("--recv-buffer", self.recv_buffer)?,
            broadcast: if self.broadcast {
                Broadcast::Allowed
            } else {
                Broadcast::Refused
            },
            multicast: crate::transport::multicast::Multicast {
                interface: self
                    .multicast_if
                    .as_deref()
                    .map(crate::transport::multicast::MulticastIf::parse)
                    .transpose()
                    .map_err(Error::Usage)?,
                ttl: self.multicast_ttl,
                looped: self.multicast_loop,
            },
        })
    }

    /// The options for connecting to `target`, checked on a scratch socket first so a
    /// refused option fails the command before it starts.
    ///
    /// # Errors
    /// [`Error::Usage`] or [`Error::LocalSocket`].
    pub fn checked_for(&self, target: &Endpoint) -> Result<SocketOptions> {
        let options = self.options()?;
        if let Some(family_error) = unix_target_with_ip_options(&options, target) {
            return Err(family_error);
        }
        let carrier = match target.delivery() {
            Delivery::Stream => Carrier::Tcp,
            Delivery::Datagram => Carrier::Udp,
        };
        if matches!(
            target,
            Endpoint::Tcp(_) | Endpoint::Tls(_) | Endpoint::Udp(_)
        ) {
            options.check(target, carrier)?;
        }
        Ok(options)
    }
}

impl SocketArgs {
    /// The options for a listening socket (`serve`), which Linux copies to every
    /// connection it accepts; checked first so a refused one fails before binding.
    ///
    /// # Errors
    /// [`Error::Usage`] for `--source` (the endpoint is the address bound), or
    /// [`Error::LocalSocket`].
    pub fn checked_for_listening(&self, endpoint: &Endpoint) -> Result<SocketOptions> {
        let options = self.options()?;
        if options.source.is_some() {
            return Err(Error::Usage(
                "--source is for connecting commands; a listener binds the address ENDPOINT names"
                    .into(),
            ));
        }
        if matches!(
            endpoint,
            Endpoint::Tcp(_) | Endpoint::Tls(_) | Endpoint::Udp(_)
        ) {
            let carrier = match endpoint.delivery() {
                Delivery::Stream => Carrier::Tcp,
                Delivery::Datagram => Carrier::Udp,
            };
            options.check(endpoint, carrier)?;
        }
        Ok(options)
    }
}

/// A UDP relay opens one socket to the target per client, so a fixed `--source` port
/// would hold for one client only: the port is refused at start, the address is fine.
///
/// # Errors
/// [`Error::Usage`] for `--source ADDR:PORT` with a port on a `udp://` target.
fn one_source_port_per_session(options: &SocketOptions, target: &Endpoint) -> Result<()> {
    match (&options.source, target) {
        (Some(source), Endpoint::Udp(_)) if source.port != 0 => Err(Error::Usage(format!(
            "--source names port {}, but a UDP relay opens a socket to {target} per client: \
             give the source address without a port",
            source.port
        ))),
        _ => Ok(()),
    }
}

/// A Unix socket target has no source address, TOS or TTL: say so instead of ignoring it.
fn unix_target_with_ip_options(options: &SocketOptions, target: &Endpoint) -> Option<Error> {
    let is_unix = matches!(target, Endpoint::Unix(_) | Endpoint::UnixDgram(_));
    (is_unix && *options != SocketOptions::default()).then(|| {
        Error::Usage(format!(
            "{target} is a Unix socket; --source and the other socket options are for tcp://, tls:// and udp://"
        ))
    })
}

/// `--capture DIR`, checked (created, writable) before anything connects or listens.
///
/// # Errors
/// [`Error::Usage`] naming the directory and the reason.
fn capture_dir(dir: Option<&std::path::Path>) -> Result<Option<Capture>> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    Capture::new(dir).map(Some).map_err(Error::Usage)
}

/// `--pcap FILE`, created before anything connects or listens. Packets need IP
/// addresses: tcp://, tls:// and udp:// only.
///
/// # Errors
/// [`Error::Usage`] for a Unix endpoint, or a file that cannot be created.
fn pcap_file(path: Option<&std::path::Path>, endpoint: &Endpoint) -> Result<Option<Pcap>> {
    let Some(path) = path else {
        return Ok(None);
    };
    if !matches!(
        endpoint,
        Endpoint::Tcp(_) | Endpoint::Tls(_) | Endpoint::Udp(_)
    ) {
        return Err(Error::Usage(format!(
            "--pcap writes IP packets, for tcp://, tls:// and udp://; {endpoint} has no IP \
             addresses (use --capture)"
        )));
    }
    Pcap::create(path).map(Some).map_err(Error::Usage)
}

impl RetryArgs {
    /// The retry policy these flags ask for.
    ///
    /// # Errors
    /// [`Error::Usage`] for a zero delay with retries (a busy loop).
    pub fn retry(&self) -> Result<Retry> {
        if self.retry != Attempts::Again(0) && self.retry_delay.is_zero() {
            return Err(Error::Usage(
                "--retry-delay must be more than 0 (retrying at once would spin)".into(),
            ));
        }
        Ok(Retry {
            attempts: self.retry,
            delay: self.retry_delay,
            max_delay: self.retry_max_delay.max(self.retry_delay),
        })
    }
}

impl SendArgs {
    /// Parses the endpoint and reads the message (from stdin for "-").
    ///
    /// # Errors
    /// [`Error::Endpoint`] for a malformed endpoint, [`Error::Io`] if stdin cannot be read.
    pub fn into_config(self) -> Result<SendConfig> {
        let endpoint = send_target(&self.endpoint, self.message.as_deref())?;
        let (framing, buffer_size) = framing(&self.framing, NOTE_BUFFER)?;
        let mut options = SendOptions::seed(&endpoint);
        match self.message.as_deref() {
            Some("-") => {
                let mut message = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut message)
                    .map_err(|source| Error::Io {
                        doing: "reading the message from stdin".into(),
                        source,
                    })?;
                options.message = Bytes::from(message);
            }
            Some(text) => options.message = Bytes::from(text.to_string()),
            None => {}
        }
        options.count = self.count;
        options.timeout = self.timeout;
        options.framing = framing;
        options.buffer_size = buffer_size;
        if self.reply_size.is_some() && framing != Framing::Raw {
            return Err(Error::Usage(
                "--reply-size is for raw replies; with --framing line a reply is one line".into(),
            ));
        }
        options.reply_end = reply_end(self.reply_size, self.reply_quiet)?;
        if options.timeout.is_zero() {
            return Err(Error::Usage("--timeout must be more than 0".into()));
        }
        if options.message.is_empty()
            && endpoint.delivery() == Delivery::Stream
            && framing == Framing::Raw
        {
            return Err(Error::Usage(format!(
                "the message is empty: over {} there is no empty message to send, so no reply could come; give at least one byte (or --framing line to send an empty line)",
                endpoint.scheme()
            )));
        }
        options.tls = client_tls(&endpoint, &self.tls, self.client_cert.files())?;
        options.socket = self.socket.checked_for(&endpoint)?;
        options.retry = self.retry.retry()?;
        options.proxies = self.proxy.chain(&endpoint)?;
        options.hex = hex_dump(self.hex);
        Ok(SendConfig { endpoint, options })
    }
}

/// Where a raw `send` reply ends: `--reply-size` bytes, or a pause of `--reply-quiet`.
///
/// # Errors
/// [`Error::Usage`] for a zero pause or a size this machine cannot hold.
fn reply_end(size: Option<u64>, quiet: Duration) -> Result<ReplyEnd> {
    if let Some(size) = size {
        let size =
            usize::try_from(size).map_err(|_| Error::Usage("--reply-size is too large".into()))?;
        return Ok(ReplyEnd::Size(size));
    }
    if quiet.is_zero() {
        return Err(Error::Usage(
            "--reply-quiet must be more than 0 (a reply would end before it could arrive)".into(),
        ));
    }
    Ok(ReplyEnd::Quiet(quiet))
}

impl ConnectArgs {
    /// Parses the endpoint and sets up TLS.
    ///
    /// # Errors
    /// [`Error::Endpoint`], [`Error::Usage`] or [`Error::TlsSetup`].
    pub fn into_config(self) -> Result<ConnectConfig> {
        let endpoint = client_target(&self.endpoint, self.port.as_deref())?;
        if self.timeout.is_zero() {
            return Err(Error::Usage("--timeout must be more than 0".into()));
        }
        // --close-on-eof names the behaviour every run has (nc -N): nothing to set.
        let _explicit_half_close = self.close_on_eof;
        if self.pcap.is_some()
            && !self.proxy.proxy.is_empty()
            && matches!(endpoint, Endpoint::Udp(_))
        {
            return Err(Error::Usage(
                "--pcap does not record UDP through --proxy (the datagrams travel inside SOCKS5 \
                 headers); use --capture"
                    .into(),
            ));
        }
        let options = InteractiveOptions {
            connect: ConnectOptions {
                timeout: self.timeout,
                tls: client_tls(&endpoint, &self.tls, self.client_cert.files())?,
                socket: self.socket.checked_for(&endpoint)?,
                retry: self.retry.retry()?,
                proxies: self.proxy.chain(&endpoint)?,
            },
            stdin: if self.no_stdin {
                StdinUse::Ignore
            } else {
                StdinUse::Send
            },
            // "0" waits for the close, as nc -q 0 does in practice.
            quit_after: self.quit_after.and_then(optional),
            line_endings: if self.crlf {
                LineEndings::Crlf
            } else {
                LineEndings::AsIs
            },
            idle_timeout: self.idle_timeout.and_then(optional),
            hex: hex_dump(self.hex),
            capture: capture_dir(self.capture.as_deref())?,
            pcap: pcap_file(self.pcap.as_deref(), &endpoint)?,
        };
        Ok(ConnectConfig { endpoint, options })
    }
}

impl ListenArgs {
    /// Parses the endpoint and sets up TLS (self-signed unless --cert/--key).
    ///
    /// # Errors
    /// [`Error::Endpoint`], [`Error::Usage`] or [`Error::TlsSetup`].
    pub fn into_config(self) -> Result<ListenConfig> {
        let endpoint: Endpoint = self.endpoint.parse()?;
        let layers = Layers {
            pcap: pcap_file(self.pcap.as_deref(), &endpoint)?,
            ..server_layers(&endpoint, &self.tls, self.hex)?
        };
        let accepted = self.socket.checked_for_listening(&endpoint)?;
        let options = ListenerOptions {
            interactive: InteractiveOptions {
                idle_timeout: self.idle_timeout.and_then(optional),
                hex: layers.hex.clone(),
                capture: capture_dir(self.capture.as_deref())?,
                ..InteractiveOptions::new()
            },
            layers,
            clients: if self.keep_open {
                Clients::KeepOpen
            } else {
                Clients::One
            },
            socket: ListenOptions {
                accepted,
                unix_file: self.unix.file_perms(&endpoint)?,
                ..ListenOptions::default()
            },
        };
        Ok(ListenConfig { endpoint, options })
    }
}

impl RelayArgs {
    /// Parses both endpoints and sets up TLS on either side.
    ///
    /// # Errors
    /// [`Error::Endpoint`], [`Error::Usage`] or [`Error::TlsSetup`].
    pub fn into_config(self) -> Result<RelayConfig> {
        let listen: Endpoint = self.listen.parse()?;
        let target = Endpoint::parse_target(&self.target)?;
        if self.timeout.is_zero() {
            return Err(Error::Usage("--timeout must be more than 0".into()));
        }
        let buffer_size = usize::try_from(self.buffer)
            .map_err(|_| Error::Usage("--buffer is too large".into()))?;
        let max_sessions = usize::try_from(self.max_sessions)
            .map_err(|_| Error::Usage("--max-sessions is too large".into()))?;
        let connect = ConnectOptions {
            timeout: self.timeout,
            tls: client_tls(
                &target,
                &self.tls_target,
                target_cert(self.target_cert.clone(), self.target_key.clone()),
            )?,
            socket: self.socket.checked_for(&target)?,
            retry: self.retry.retry()?,
            proxies: self.proxy.stream_chain(&target)?,
        };
        let max_conns = self
            .access
            .max_conns()?
            .or((listen.delivery() == Delivery::Stream).then_some(RelayOptions::DEFAULT_MAX_CONNS));
        one_source_port_per_session(&connect.socket, &target)?;
        let pcap = pcap_file(self.pcap.as_deref(), &listen)?;
        let options = RelayOptions {
            connect,
            layers: Layers {
                proxy: proxy_protocol(self.proxy_protocol),
                pcap: pcap.clone(),
                ..server_layers(&listen, &self.tls_listen, self.hex)?
            },
            buffer_size,
            // splice(2) moves bytes the pcap tap would never see.
            copy: if pcap.is_some() {
                CopyMode::Buffered
            } else {
                self.copy
            },
            access: self.access.policy()?,
            max_conns,
            over_limit: self.access.over_limit(max_conns)?,
            idle_timeout: optional(self.idle_timeout),
            max_sessions,
            grace: self.grace,
            listen: ListenOptions {
                backlog: self.backlog,
                source: listen_source(self.systemd),
                unix_file: self.unix.file_perms(&listen)?,
                ..ListenOptions::default()
            },
            capture: capture_dir(self.capture.as_deref())?,
            send_proxy: send_proxy(self.send_proxy, &target)?,
            ..RelayOptions::new(target)
        };
        let metrics = metrics_endpoint(self.metrics.as_deref())?;
        Ok(RelayConfig {
            listen,
            options,
            metrics,
        })
    }
}

impl ProbeArgs {
    /// Parses the host and the port list.
    ///
    /// # Errors
    /// [`Error::Usage`] for a bad host or port list, or a zero timeout.
    pub fn into_config(self) -> Result<ProbeConfig> {
        let text = self.host.trim();
        // Reuse the endpoint parser for the host; a bare IPv6 literal needs brackets there.
        let bracketed = if text.contains(':') && !text.starts_with('[') {
            format!("[{text}]")
        } else {
            text.to_string()
        };
        let host = match format!("tcp://{bracketed}:1").parse::<Endpoint>() {
            Ok(Endpoint::Tcp(hp)) => hp.host,
            _ => {
                return Err(Error::Usage(format!(
                    "{text:?} is not an IP address or a host name"
                )));
            }
        };
        if self.timeout.is_zero() {
            return Err(Error::Usage("--timeout must be more than 0".into()));
        }
        let concurrency = usize::try_from(self.concurrency)
            .map_err(|_| Error::Usage("--concurrency is too large".into()))?;
        Ok(ProbeConfig {
            host,
            ports: crate::probe::parse_ports(&self.ports)?,
            options: ProbeOptions {
                concurrency,
                timeout: self.timeout,
                protocol: if self.udp {
                    ProbeProtocol::Udp
                } else {
                    ProbeProtocol::Tcp
                },
            },
            only_open: self.open,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn serve(args: &[&str]) -> Result<ServeConfig> {
        let mut argv = vec!["sockit", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Command::Serve(serve)) => serve.into_config(),
            other => panic!("not a serve command: {other:?}"),
        }
    }

    #[test]
    fn unix_permissions_apply_where_they_mean_something() -> Result<()> {
        let file = serve(&[
            "unix:/tmp/x.sock",
            "--mode",
            "0600",
            "--owner",
            "0",
            "--group",
            "0",
        ])?;
        assert_eq!(
            file.options.listen.unix_file,
            UnixFilePerms {
                mode: Some(0o600),
                owner: Some(0),
                group: Some(0),
            }
        );
        assert!(serve(&["unixgram:/tmp/x.sock", "--mode", "0660"]).is_ok());
        for args in [
            &["tcp://127.0.0.1:0", "--mode", "0600"][..],
            &["unix:@name", "--mode", "0600"],
            &["udp://127.0.0.1:0", "--allow-uid", "0"],
            &["unix:/tmp/x.sock", "--owner", "no-such-user-here"],
        ] {
            assert!(
                matches!(serve(args), Err(Error::Usage(_))),
                "{args:?} must be a usage error"
            );
        }
        Ok(())
    }

    #[test]
    fn udp_defaults_to_the_notes_udp_reply() -> Result<()> {
        let config = serve(&["udp"])?;
        assert_eq!(config.options.responder, Responder::seed_reply("udp"));
        assert_eq!(config.endpoint.to_string(), "udp://127.0.0.1:8000");
        Ok(())
    }

    #[test]
    fn zero_timeouts_mean_never() -> Result<()> {
        let config = serve(&["--idle-timeout", "0", "--close", "--framing", "line"])?;
        assert_eq!(config.options.limits.idle_timeout, None);
        assert_eq!(config.options.after_reply, AfterReply::Close);
        assert_eq!(config.options.framing, Framing::Line { max_len: 65536 });
        Ok(())
    }

    #[test]
    fn exec_chat_and_access_reach_the_options() -> Result<()> {
        let config = serve(&[
            "--max-conns",
            "3",
            "--max-conns-mode",
            "refuse",
            "--deny",
            "10.0.0.0/8",
            "--exec",
            "cat",
            "-n",
        ])?;
        assert_eq!(
            config.options.mode,
            ServeMode::Exec(ExecSpec::program("cat".into(), vec!["-n".into()]))
        );
        assert_eq!(config.options.limits.max_conns, Some(3));
        assert_eq!(
            config.options.limits.over_limit,
            crate::server::OverLimit::Refuse
        );
        assert!(
            !config
                .options
                .access
                .check_ip([10, 1, 1, 1].into())
                .is_allowed()
        );
        let config = serve(&["--chat", "--max-line", "80"])?;
        assert_eq!(
            config.options.mode,
            ServeMode::Chat(ChatOptions {
                max_line: 80,
                ..ChatOptions::default()
            })
        );
        Ok(())
    }

    fn relay(args: &[&str]) -> Result<RelayConfig> {
        let mut argv = vec!["sockit", "relay"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Command::Relay(relay)) => relay.into_config(),
            other => panic!("not a relay command: {other:?}"),
        }
    }

    #[test]
    fn relay_access_and_limits_reach_the_options() -> Result<()> {
        let config = relay(&[
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:1",
            "--deny",
            "10.0.0.0/8",
            "--max-conns",
            "7",
            "--max-conns-mode",
            "refuse",
        ])?;
        assert_eq!(config.options.max_conns, Some(7));
        assert_eq!(config.options.over_limit, crate::server::OverLimit::Refuse);
        assert!(
            !config
                .options
                .access
                .check_ip([10, 1, 1, 1].into())
                .is_allowed()
        );
        assert!(
            config
                .options
                .access
                .check_ip([127, 0, 0, 1].into())
                .is_allowed()
        );
        let open = relay(&["tcp://127.0.0.1:0", "tcp://127.0.0.1:1"])?;
        assert!(open.options.access.is_open());
        assert_eq!(
            open.options.max_conns,
            Some(RelayOptions::DEFAULT_MAX_CONNS),
            "a stream relay has a connection limit by default"
        );
        let datagrams = relay(&["udp://127.0.0.1:0", "udp://127.0.0.1:1"])?;
        assert_eq!(
            datagrams.options.max_conns, None,
            "--max-sessions caps those"
        );
        let per_source = relay(&[
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:1",
            "--max-conns-per-source",
            "9",
            "--proxy-protocol",
            "--proxy-from",
            "10.0.0.1",
        ])?;
        assert_eq!(
            per_source.options.access.per_source(),
            crate::access::PerSourceLimit::Everyone(9)
        );
        assert_eq!(per_source.options.access.proxy_from().len(), 1);
        Ok(())
    }

    #[test]
    fn a_missing_program_is_a_usage_error() {
        match serve(&["--exec", "sockit-no-such-program"]) {
            Err(e) => {
                assert_eq!(e.exit_status() as u8, 2);
                assert!(e.to_string().contains("not found in PATH"), "{e}");
            }
            Ok(c) => panic!("accepted {c:?}"),
        }
    }

    #[test]
    fn malformed_endpoint_is_a_usage_error() {
        match serve(&["tcp://nowhere"]) {
            Err(e) => assert_eq!(e.exit_status() as u8, 2),
            Ok(c) => panic!("accepted {c:?}"),
        }
    }
}
