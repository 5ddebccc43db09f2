//! Issue 20, item 7: `--allow-uid`/`--allow-gid` on a `unixgram:` endpoint check each
//! datagram's sender (`SO_PASSCRED` / `SCM_CREDENTIALS`), so an abstract datagram socket,
//! which has no file to protect, answers only the users it names.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::util::{Proc, TIMEOUT};

fn my_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// A client bound to an abstract name of its own, so the server can answer it.
fn abstract_client(tag: &str) -> UnixDatagram {
    let name = format!("sockit-cred-client-{tag}-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let client = UnixDatagram::bind_addr(&addr).unwrap_or_else(|e| panic!("{e}"));
    client
        .set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    client
}

fn send_to_abstract(client: &UnixDatagram, name: &str, datagram: &[u8]) {
    let to = SocketAddr::from_abstract_name(name.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    client
        .send_to_addr(datagram, &to)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `command` on `unixgram:@NAME` with `--allow-uid` for each of `uids`.
fn start(command: &[&str], name: &str, uids: &[u32]) -> Proc {
    let endpoint = format!("unixgram:@{name}");
    let mut args: Vec<String> = command.iter().map(|a| a.to_string()).collect();
    args.insert(1, endpoint);
    for uid in uids {
        args.push("--allow-uid".into());
        args.push(uid.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::sockit(&args)
}

#[test]
fn serve_drops_datagrams_from_users_not_allowed_and_answers_the_others() {
    let me = my_uid();
    let other = if me == 65534 { 65533 } else { 65534 };
    let name = format!("sockit-cred-serve-{}", std::process::id());
    let mut refusing = start(&["serve", "--echo"], &name, &[other]);
    refusing.listening();
    let client = abstract_client("refused");
    send_to_abstract(&client, &name, b"let me in");
    crate::peers::wait_for_stderr(
        &refusing,
        &format!("dropped a unixgram datagram: uid {me} "),
    );
    refusing.signal(libc::SIGTERM);
    refusing.wait_exit();
    assert!(
        !refusing.stderr().contains("let me in"),
        "{}",
        refusing.report()
    );

    let mut allowing = start(&["serve", "--echo"], &name, &[other, me]);
    allowing.listening();
    let client = abstract_client("allowed");
    send_to_abstract(&client, &name, b"hello");
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf[..n], b"hello");
    allowing.signal(libc::SIGTERM);
    allowing.wait_exit();
}

#[test]
fn listen_drops_datagrams_from_users_not_allowed() {
    let me = my_uid();
    let other = if me == 65534 { 65533 } else { 65534 };
    let name = format!("sockit-cred-listen-{}", std::process::id());
    let endpoint = format!("unixgram:@{name}");
    let uid = other.to_string();
    let mut listen = Proc::spawn(
        crate::util::sockit_command(&["listen", &endpoint, "--allow-uid", &uid]),
        true,
    );
    crate::peers::wait_for_stderr(&listen, "listening on");
    let client = abstract_client("listen");
    send_to_abstract(&client, &name, b"not for stdout\n");
    crate::peers::wait_for_stderr(&listen, &format!("dropped a unixgram datagram: uid {me} "));
    listen.close_stdin();
    listen.signal(libc::SIGTERM);
    listen.wait_exit();
    assert!(
        listen.stdout.iter().all(|l| !l.contains("not for stdout")),
        "{}",
        listen.report()
    );
}

#[test]
fn allow_uid_on_udp_is_still_a_usage_error() {
    let output = crate::util::run_sockit(&["serve", "udp://127.0.0.1:0", "--allow-uid", "0"], None);
    assert_eq!(
        crate::util::code(&output),
        2,
        "{}",
        crate::util::describe(&output)
    );
}
