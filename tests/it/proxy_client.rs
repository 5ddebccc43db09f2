//! Issue 19 item 1: `--proxy` on every client side, against real proxies nobody here
//! wrote: `microsocks` and Debian's `danted` (SOCKS5, SOCKS4), `tinyproxy` (HTTP CONNECT
//! with Basic auth), chains of them, `tls://` end to end through a proxy, and `ssh`'s
//! `ProxyCommand`. Every failure is asserted by its message and its exit code.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::peers::{Pki, error_lines, listening_port, spawn_peer};
use crate::util::{Proc, code, describe, run_sockit, sockit_command};

/// A port that was free a moment ago, for peers that cannot bind port 0.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port()
}

/// A temporary directory for a peer's configuration.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

/// Writes `text` to `dir/name`.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// A running proxy peer and the port it listens on; stopped on drop.
struct Peer {
    port: u16,
    process: Proc,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// `SCHEME://127.0.0.1:PORT`, optionally with `user:password@`.
    fn url(&self, scheme: &str, userinfo: Option<&str>) -> String {
        match userinfo {
            Some(userinfo) => format!("{scheme}://{userinfo}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// `microsocks` on a port the kernel picks, with `-u USER -P PASSWORD` if given.
    fn microsocks(credentials: Option<(&str, &str)>) -> Peer {
        let mut args = vec!["-i", "127.0.0.1", "-p", "0"];
        if let Some((user, password)) = credentials {
            args.extend(["-u", user, "-P", password]);
        }
        let process = spawn_peer("microsocks", &args, false);
        let port = listening_port(&process);
        Peer {
            port,
            process,
            _dir: scratch(),
        }
    }

    /// `tinyproxy` in the foreground with a temporary configuration, `BasicAuth` if given.
    fn tinyproxy(credentials: Option<(&str, &str)>) -> Peer {
        let dir = scratch();
        let port = free_port();
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nLogLevel Info\n\
             PidFile \"{}\"\n",
            dir.path().join("tinyproxy.pid").display()
        );
        if let Some((user, password)) = credentials {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let config = write(dir.path(), "tinyproxy.conf", &config);
        let mut cmd = Command::new("tinyproxy");
        cmd.arg("-d").arg("-c").arg(&config);
        let process = Proc::spawn(cmd, false);
        listening_port(&process);
        Peer {
            port,
            process,
            _dir: dir,
        }
    }

    /// Debian's `danted` with no authentication, CONNECT and UDP ASSOCIATE to anywhere
    /// from loopback.
    fn dante() -> Peer {
        let dir = scratch();
        let port = free_port();
        let config = write(
            dir.path(),
            "danted.conf",
            &format!(
                "logoutput: stderr\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
                 clientmethod: none\nsocksmethod: none\n\
                 user.privileged: root\nuser.unprivileged: nobody\n\
                 client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
                 socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect udpassociate udpreply }}\n"
            ),
        );
        let mut cmd = Command::new("danted");
        cmd.arg("-f")
            .arg(&config)
            .args(["-N", "1", "-p"])
            .arg(dir.path().join("danted.pid"));
        let process = Proc::spawn(cmd, false);
        listening_port(&process);
        Peer {
            port,
            process,
            _dir: dir,
        }
    }
}

/// `sockit serve tcp://127.0.0.1:0 --echo`; returns it and its port.
fn echo_server() -> (Proc, u16) {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo"]);
    let addr = server.listening();
    (server, port_of(&addr))
}

/// The port at the end of `HOST:PORT`.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    free_port()
}

/// `sockit send TARGET hello` through the proxies, with extra arguments.
fn send_through(target: &str, proxies: &[&str], extra: &[&str]) -> Output {
    let mut args = vec!["send", target, "hello through"];
    for proxy in proxies {
        args.extend(["--proxy", proxy]);
    }
    args.extend_from_slice(extra);
    run_sockit(&args, None)
}

/// Asserts the echo came back (`receive:` over streams, `recvfrom ADDR:` over UDP).
fn assert_echoed(output: &Output) {
    assert_eq!(code(output), 0, "{}", describe(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let echoed = stdout.lines().any(|line| {
        (line.starts_with("receive: ") || line.starts_with("recvfrom "))
            && line.ends_with(": hello through")
    });
    assert!(echoed, "{}", describe(output));
}

/// Asserts exit `status` and one `error:` line holding every needle.
fn assert_fails(output: &Output, status: i32, needles: &[&str]) {
    assert_eq!(code(output), status, "{}", describe(output));
    let errors = error_lines(output);
    assert_eq!(errors.len(), 1, "{}", describe(output));
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "{needle:?} missing\n{}",
            describe(output)
        );
    }
    assert!(
        !errors[0].contains("Os {") && !errors[0].contains("Kind("),
        "{}",
        describe(output)
    );
}

#[test]
fn socks5_and_socks5h_through_microsocks() {
    let (_server, port) = echo_server();
    let proxy = Peer::microsocks(None);
    let target = format!("tcp://127.0.0.1:{port}");
    assert_echoed(&send_through(&target, &[&proxy.url("socks5", None)], &[]));
    // socks5h: the name goes to the proxy, which resolves it.
    let named = format!("tcp://localhost:{port}");
    assert_echoed(&send_through(&named, &[&proxy.url("socks5h", None)], &[]));
    // A proxy at an IPv6 address.
    let v6 = spawn_peer("microsocks", &["-i", "::1", "-p", "0"], false);
    let v6_url = format!("socks5://[::1]:{}", listening_port(&v6));
    assert_echoed(&send_through(&target, &[&v6_url], &[]));
    // The wrong scheme for the proxy: microsocks closes on an HTTP request.
    let wrong = send_through(&target, &[&proxy.url("http", None)], &[]);
    assert_fails(&wrong, 1, &["broke the protocol", "is it an HTTP proxy?"]);
}

#[test]
fn microsocks_password_from_url_environment_or_file_and_a_wrong_one_is_refused() {
    let (_server, port) = echo_server();
    let proxy = Peer::microsocks(Some(("alice", "s3cret")));
    let target = format!("tcp://127.0.0.1:{port}");
    assert_echoed(&send_through(
        &target,
        &[&proxy.url("socks5", Some("alice:s3cret"))],
        &[],
    ));

    let bare = proxy.url("socks5", None);
    let with_env = sockit_command(&["send", &target, "hello through", "--proxy", &bare])
        .env("SOCKIT_PROXY_AUTH", "alice:s3cret")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_echoed(&with_env);

    let dir = scratch();
    let file = write(dir.path(), "auth", "alice:s3cret\n");
    let file_arg = file.to_str().unwrap_or_else(|| panic!("temp path"));
    assert_echoed(&send_through(
        &target,
        &[&bare],
        &["--proxy-auth-file", file_arg],
    ));

    let wrong = send_through(&target, &[&proxy.url("socks5", Some("alice:nope"))], &[]);
    assert_fails(
        &wrong,
        9,
        &[
            &bare,
            "refused authentication",
            "user \"alice\"",
            "not accepted",
        ],
    );
    assert!(
        !String::from_utf8_lossy(&wrong.stderr).contains("nope"),
        "{}",
        describe(&wrong)
    );

    let none = send_through(&target, &[&bare], &[]);
    assert_fails(
        &none,
        9,
        &["requires a user name and password", "SOCKIT_PROXY_AUTH"],
    );
}

#[test]
fn dante_carries_socks5_and_socks4_byte_for_byte_and_names_a_refused_target() {
    let (_server, port) = echo_server();
    let dante = Peer::dante();
    let target = format!("tcp://127.0.0.1:{port}");
    assert_echoed(&send_through(&target, &[&dante.url("socks5", None)], &[]));
    assert_echoed(&send_through(
        &format!("tcp://localhost:{port}"),
        &[&dante.url("socks5h", None)],
        &[],
    ));
    assert_echoed(&send_through(&target, &[&dante.url("socks4", None)], &[]));
    // connect: stdin to the server and back, byte for byte, through the tunnel, the
    // half-close included (microsocks ends a tunnel at the client's FIN, dante does not).
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let output = run_sockit(
        &["connect", &target, "--proxy", &dante.url("socks5", None)],
        Some(&payload),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert!(
        output.stdout == payload,
        "{} bytes back",
        output.stdout.len()
    );

    let closed = closed_port();
    let refused = send_through(
        &format!("tcp://127.0.0.1:{closed}"),
        &[&dante.url("socks5", None)],
        &[],
    );
    assert_fails(
        &refused,
        10,
        &[
            &format!("could not connect to 127.0.0.1:{closed}"),
            "connection refused by the target (SOCKS5 reply 5)",
        ],
    );
    drop(dante.process);
}

#[test]
fn tinyproxy_http_connect_with_basic_auth() {
    let (_server, port) = echo_server();
    let proxy = Peer::tinyproxy(Some(("bob", "hunter2")));
    let target = format!("tcp://127.0.0.1:{port}");
    // Percent-encoding decodes to plain letters too.
    assert_echoed(&send_through(
        &target,
        &[&proxy.url("http", Some("bob:hunter%32"))],
        &[],
    ));

    let bare = proxy.url("http", None);
    let none = send_through(&target, &[&bare], &[]);
    assert_fails(
        &none,
        9,
        &[&bare, "requires a user name and password", "407"],
    );

    let wrong = send_through(&target, &[&proxy.url("http", Some("bob:wrong"))], &[]);
    assert_fails(&wrong, 9, &["user \"bob\"", "not accepted"]);

    let closed = closed_port();
    let refused = send_through(
        &format!("tcp://127.0.0.1:{closed}"),
        &[&proxy.url("http", Some("bob:hunter2"))],
        &[],
    );
    assert_fails(
        &refused,
        10,
        &[
            &format!("could not connect to 127.0.0.1:{closed}"),
            "HTTP 500",
        ],
    );
    // The wrong scheme for the proxy: tinyproxy waits for the rest of an HTTP request
    // that never comes, and the timeout names the chain.
    let socks = proxy.url("socks5", None);
    let hung = send_through(&target, &[&socks], &["-t", "1s"]);
    assert_fails(&hung, 5, &[&format!("through {socks}"), "timed out"]);
}

#[test]
fn a_chain_is_used_in_order_and_a_failure_names_its_hop() {
    let (_server, port) = echo_server();
    let socks = Peer::microsocks(None);
    let http = Peer::tinyproxy(Some(("bob", "pw")));
    let target = format!("tcp://127.0.0.1:{port}");
    let first = socks.url("socks5", None);
    assert_echoed(&send_through(
        &target,
        &[&first, &http.url("http", Some("bob:pw"))],
        &[],
    ));
    // sockit → microsocks → tinyproxy: tinyproxy's refusal is reported as the second hop's.
    let second = http.url("http", None);
    let failed = send_through(&target, &[&first, &second], &[]);
    assert_fails(
        &failed,
        9,
        &[
            &format!("proxy 2 of 2 ({second})"),
            "requires a user name and password",
        ],
    );
    let closed = closed_port();
    let unreachable_second = format!("http://127.0.0.1:{closed}");
    let failed = send_through(&target, &[&first, &unreachable_second], &[]);
    assert_fails(
        &failed,
        10,
        &[
            &format!("proxy 1 of 2 ({first}) could not connect to 127.0.0.1:{closed}"),
            "SOCKS5 reply 5",
        ],
    );
}

#[test]
fn an_unreachable_proxy_is_named_with_its_own_exit_code() {
    let closed = closed_port();
    let url = format!("socks5://127.0.0.1:{closed}");
    let output = send_through("tcp://127.0.0.1:9", &[&url], &[]);
    assert_fails(
        &output,
        8,
        &[&format!("cannot reach proxy {url}"), "connection refused"],
    );
    // A proxy that is not up yet is worth waiting for, like a server.
    let retried = send_through(
        "tcp://127.0.0.1:9",
        &[&url],
        &["--retry", "1", "--retry-delay", "10ms"],
    );
    assert_fails(
        &retried,
        8,
        &["cannot reach proxy", "(gave up after 2 attempts)"],
    );
}

#[test]
fn tls_runs_end_to_end_through_proxies_and_checks_the_targets_name() {
    let pki = Pki::new();
    let mut server = Proc::sockit(&[
        "serve",
        "tls://127.0.0.1:0",
        "--echo",
        "--cert",
        Pki::arg(&pki.leaf),
        "--key",
        Pki::arg(&pki.leaf_key),
    ]);
    let port = port_of(&server.listening());
    let socks = Peer::microsocks(None);
    let http = Peer::tinyproxy(None);
    // The certificate names localhost only; both proxies are at 127.0.0.1. The check
    // passes because it is made against the target's name.
    let by_name = format!("tls://localhost:{port}");
    let ca = ["--ca", Pki::arg(&pki.ca)];
    assert_echoed(&send_through(&by_name, &[&socks.url("socks5h", None)], &ca));
    assert_echoed(&send_through(
        &by_name,
        &[&socks.url("socks5", None), &http.url("http", None)],
        &ca,
    ));
    // Asked for by address, the same server fails the name check: the certificate is
    // checked end to end, never skipped for going through a proxy.
    let by_address = format!("tls://127.0.0.1:{port}");
    let output = send_through(&by_address, &[&socks.url("socks5", None)], &ca);
    assert_fails(&output, 7, &["wrong name", "localhost"]);
}

/// The SHA-256 fingerprint a sockit TLS server printed on stderr.
fn printed_fingerprint(server: &Proc) -> String {
    let stderr = crate::peers::wait_for_stderr(server, "SHA-256 fingerprint ");
    stderr
        .split("SHA-256 fingerprint ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no fingerprint in\n{stderr}"))
}

#[test]
fn a_pinned_fingerprint_is_checked_end_to_end_through_a_chain_with_sockit_proxy() {
    // The default self-signed certificate: only a pin (or --insecure) can trust it.
    let mut server = Proc::sockit(&["serve", "tls://127.0.0.1:0", "--echo"]);
    let target = format!("tls://{}", server.listening());
    let fingerprint = printed_fingerprint(&server);
    let mut first = Proc::sockit(&["proxy", "tcp://127.0.0.1:0", "--allow-to", "127.0.0.0/8"]);
    let first = format!("socks5://{}", first.listening());
    let second = Peer::microsocks(None);
    let chain = [first.as_str(), &second.url("socks5h", None)];

    assert_echoed(&send_through(&target, &chain, &["--pin", &fingerprint]));
    let lowercase_hex = fingerprint.replace(':', "").to_lowercase();
    assert_echoed(&send_through(&target, &chain, &["--pin", &lowercase_hex]));

    // Another server's fingerprint is refused, naming the one the target has: the pin is
    // checked against the target at the end of the chain, not against a proxy.
    let mut other = Proc::sockit(&["serve", "tls://127.0.0.1:0", "--echo"]);
    let _ = other.listening();
    let other_fingerprint = printed_fingerprint(&other);
    assert_ne!(other_fingerprint, fingerprint, "two servers, one key");
    let output = send_through(&target, &chain, &["--pin", &other_fingerprint]);
    assert_fails(&output, 7, &["matches no --pin", &fingerprint]);
}

#[test]
fn relay_and_bench_reach_their_target_through_a_proxy() {
    let (_server, port) = echo_server();
    let proxy = Peer::microsocks(None);
    let url = proxy.url("socks5", None);
    let target = format!("tcp://127.0.0.1:{port}");
    let mut relay = Proc::sockit(&["relay", "tcp://127.0.0.1:0", &target, "--proxy", &url]);
    let relay_addr = relay.listening();
    assert_echoed(&run_sockit(&["send", &relay_addr, "hello through"], None));

    let output = run_sockit(
        &[
            "bench",
            &target,
            "--proxy",
            &url,
            "-d",
            "1s",
            "--warmup",
            "0",
            "-c",
            "2",
            "--threads",
            "1",
            "--timeout",
            "10s",
        ],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let udp = run_sockit(
        &["bench", "udp://127.0.0.1:9", "--proxy", &url, "-d", "1s"],
        None,
    );
    assert_fails(&udp, 2, &["datagram endpoint", "tcp:// and tls://"]);
}

#[test]
fn socks4a_request_is_byte_for_byte_the_one_socat_sends() {
    // No SOCKS4a server is packaged; socat's SOCKS4A: client is the reference. Both
    // send their request to a listener that records it and closes.
    fn recorded(run: impl FnOnce(u16)) -> Vec<u8> {
        let (addr, handle) = crate::util::one_shot_server(|mut stream| {
            use std::io::Read;
            let mut request = vec![0u8; 512];
            let n = stream.read(&mut request).unwrap_or(0);
            request.truncate(n);
            request
        });
        run(port_of(&addr));
        crate::util::join(handle)
    }
    let ours = recorded(|port| {
        let output = send_through(
            "tcp://example.org:4242",
            &[&format!("socks4a://carol@127.0.0.1:{port}")],
            &[],
        );
        assert_fails(&output, 1, &["closed the connection", "SOCKS4"]);
    });
    let socat = recorded(|port| {
        crate::peers::run_peer(
            "socat",
            &[
                "-T",
                "5",
                "-",
                &format!("SOCKS4A:127.0.0.1:example.org:4242,socksport={port},socksuser=carol"),
            ],
            b"",
        );
    });
    assert_eq!(ours, socat);
    assert_eq!(&ours[..8], &[4, 1, 0x10, 0x92, 0, 0, 0, 1]);
}

/// A real `sshd` on a loopback port with a temporary host key, accepting one user key
/// for the user running the tests; stopped on drop.
struct Sshd {
    port: u16,
    user_key: PathBuf,
    _process: Proc,
    _dir: tempfile::TempDir,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = scratch();
        let d = dir.path();
        for key in ["host_key", "user_key"] {
            let made = crate::peers::run_peer(
                "ssh-keygen",
                &[
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-f",
                    &d.join(key).display().to_string(),
                ],
                b"",
            );
            assert!(made.status.success(), "{}", describe(&made));
        }
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys"))
            .unwrap_or_else(|e| panic!("{e}"));
        // sshd started by root needs its privilege separation directory, which the
        // Debian service creates at boot and a container may lack.
        if rustix::process::geteuid().is_root() {
            std::fs::create_dir_all("/run/sshd").unwrap_or_else(|e| panic!("/run/sshd: {e}"));
        }
        let port = free_port();
        let config = write(
            d,
            "sshd_config",
            &format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {pid}\n\
                 AuthorizedKeysFile {keys}\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n",
                host = d.join("host_key").display(),
                pid = d.join("sshd.pid").display(),
                keys = d.join("authorized_keys").display(),
            ),
        );
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.arg("-D").arg("-e").arg("-f").arg(&config);
        let process = Proc::spawn(cmd, false);
        listening_port(&process);
        Sshd {
            port,
            user_key: d.join("user_key"),
            _process: process,
            _dir: dir,
        }
    }
}

#[test]
fn ssh_proxycommand_through_sockit_connect_and_socks5_or_http_proxies() {
    let sshd = Sshd::start();
    let socks = Peer::microsocks(None);
    let http = Peer::tinyproxy(Some(("bob", "hunter2")));
    // sshd speaks first (its banner), so through HTTP CONNECT the banner may arrive in
    // the same segment as the proxy's 200: none of it may be lost.
    check_ssh_through(&sshd, &socks.url("socks5", None), &[]);
    check_ssh_through(
        &sshd,
        &http.url("http", None),
        &[("SOCKIT_PROXY_AUTH", "bob:hunter2")],
    );
}

/// Runs `ssh … sha256sum` with `ProxyCommand=sockit connect --proxy PROXY %h:%p` and a
/// megabyte on stdin; sshd's digest of what it received must be the local one.
fn check_ssh_through(sshd: &Sshd, proxy: &str, env: &[(&str, &str)]) {
    let proxy_command = format!(
        "ProxyCommand={} connect --proxy {proxy} %h:%p",
        crate::util::sockit_bin().display(),
    );
    let user = String::from_utf8_lossy(&crate::peers::run_peer("id", &["-un"], b"").stdout)
        .trim()
        .to_string();
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let key = sshd.user_key.display().to_string();
    let port = sshd.port.to_string();
    let login = format!("{user}@127.0.0.1");
    let mut ssh = assert_cmd::Command::new("ssh");
    ssh.args(["-F", "/dev/null", "-i", &key, "-o", "BatchMode=yes"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", &proxy_command, "-p", &port, &login, "sha256sum"])
        .envs(env.iter().copied())
        .timeout(crate::util::TIMEOUT)
        .write_stdin(payload.clone());
    let output = ssh.output().unwrap_or_else(|e| panic!("ssh: {e}"));
    assert!(output.status.success(), "{proxy}\n{}", describe(&output));
    let local = crate::peers::run_peer("sha256sum", &[], &payload);
    let digest = |out: &Output| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        digest(&output),
        digest(&local),
        "{proxy}\n{}",
        describe(&output)
    );
    assert_eq!(digest(&local).len(), 64);
}

#[test]
fn udp_send_and_connect_through_dante_udp_associate() {
    let mut server = Proc::sockit(&["serve", "udp://127.0.0.1:0", "--echo"]);
    let port = port_of(&server.listening());
    let dante = Peer::dante();
    let target = format!("udp://127.0.0.1:{port}");
    let output = run_sockit(
        &[
            "send",
            &target,
            "hello through",
            "-n",
            "3",
            "--proxy",
            &dante.url("socks5", None),
        ],
        None,
    );
    assert_echoed(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout
            .matches(&format!("recvfrom 127.0.0.1:{port}: hello through"))
            .count(),
        3,
        "{}",
        describe(&output)
    );
    // socks5h: dante resolves the name.
    let named = format!("udp://localhost:{port}");
    assert_echoed(&send_through(&named, &[&dante.url("socks5h", None)], &[]));
    let output = run_sockit(
        &[
            "connect",
            &target,
            "--proxy",
            &dante.url("socks5", None),
            "--quit-after",
            "2s",
        ],
        Some(b"one\ntwo\n"),
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "one\ntwo\n",
        "{}",
        describe(&output)
    );
}

#[test]
fn udp_through_a_proxy_without_udp_associate_is_refused_in_words() {
    // microsocks has no UDP ASSOCIATE: it answers "command not supported".
    let proxy = Peer::microsocks(None);
    let output = send_through(
        "udp://127.0.0.1:9",
        &[&proxy.url("socks5", None)],
        &["-t", "5s"],
    );
    assert_fails(
        &output,
        10,
        &[
            "udp://127.0.0.1:9 (UDP ASSOCIATE)",
            "command not supported (SOCKS5 reply 7)",
        ],
    );
    let http = send_through("udp://127.0.0.1:9", &[&proxy.url("http", None)], &[]);
    assert_fails(&http, 2, &["cannot carry datagrams"]);
    let chained = send_through(
        "udp://127.0.0.1:9",
        &[&proxy.url("socks5", None), &proxy.url("socks5", None)],
        &[],
    );
    assert_fails(&chained, 2, &["exactly one --proxy"]);
}

/// Through `--proxy`, `send` and `connect` name the target, not the proxy, as their peer:
/// in `--log json` events, in the `--hex` header and in `--capture` file names.
#[test]
fn through_a_proxy_events_hex_and_captures_name_the_target() {
    let (_server, port) = echo_server();
    let proxy = Peer::microsocks(None);
    let proxy_port = format!(":{}", proxy.port);
    let cases = [
        (
            format!("tcp://localhost:{port}"),
            proxy.url("socks5h", None),
        ),
        (format!("tcp://127.0.0.1:{port}"), proxy.url("socks5", None)),
    ];
    for (target, via) in &cases {
        let named = target.trim_start_matches("tcp://");
        let output = send_through(target, &[via], &["--log", "json", "--hex"]);
        assert_echoed_json(&output);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let events: Vec<&str> = stdout.lines().filter(|l| l.contains("\"event\"")).collect();
        assert!(!events.is_empty(), "{}", describe(&output));
        for event in events {
            assert!(
                event.contains(&format!("\"peer\":\"{named}\"")),
                "{event}\n{}",
                describe(&output)
            );
        }
        assert!(
            stderr.contains(&format!("sent 13 bytes to {named}")),
            "{}",
            describe(&output)
        );
        assert!(!stderr.contains(&proxy_port), "{}", describe(&output));
    }
    let capture = scratch();
    let dir = capture.path().to_string_lossy().into_owned();
    let target = format!("tcp://localhost:{port}");
    let proxy_url = proxy.url("socks5h", None);
    let connect = ["connect", &target, "--proxy", &proxy_url, "--capture", &dir];
    let output = run_sockit(&connect, Some(b"ping\n"));
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let mut names: Vec<String> = std::fs::read_dir(capture.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            format!("conn1_localhost_{port}.received"),
            format!("conn1_localhost_{port}.sent")
        ],
        "{}",
        describe(&output)
    );
}

/// Asserts `send --log json` succeeded and its `received` event holds the echo.
fn assert_echoed_json(output: &Output) {
    assert_eq!(code(output), 0, "{}", describe(output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("\"event\":\"received\"")
                && l.contains("\"data\":\"hello through\"")),
        "{}",
        describe(output)
    );
}
