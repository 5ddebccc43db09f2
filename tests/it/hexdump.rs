//! Issue 3, point 6: `--hex` on `serve` and `send` (`connect` and `relay` are in their
//! own modules): both directions as offset / hex / ASCII on stderr, stdout unchanged.

use crate::util::{Proc, code, describe, run_sockit};

#[test]
fn serve_and_send_dump_both_directions() {
    let mut server = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--hex"]);
    let addr = server.listening();
    let output = run_sockit(&["send", &addr, "--hex"], None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    // stdout is the note's, untouched.
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "send: hello tcp server\nreceive: hello tcp client\n\n"
    );
    let client_dump = String::from_utf8_lossy(&output.stderr);
    assert!(
        client_dump.contains(&format!("> sent 16 bytes to {addr}"))
            && client_dump.contains("|hello tcp server|")
            && client_dump.contains("< received 16 bytes from")
            && client_dump.contains("|hello tcp client|"),
        "{client_dump}"
    );
    let server_dump = crate::peers::wait_for_stderr(&server, "|hello tcp client|");
    assert!(
        server_dump.contains("< received 16 bytes from 127.0.0.1:")
            && server_dump.contains("(conn ")
            && server_dump.contains(
                "< 00000000  68 65 6c 6c 6f 20 74 63  70 20 73 65 72 76 65 72  |hello tcp server|"
            ),
        "{server_dump}"
    );
    server.wait_for_line("the note's lines", |l| l == "send: hello tcp client");
}

#[test]
fn datagrams_are_dumped_one_by_one() {
    let mut server = Proc::sockit(&["serve", "udp://127.0.0.1:0", "--hex", "-q"]);
    let addr = server.listening();
    let output = run_sockit(
        &["send", &format!("udp://{addr}"), "--hex", "--count", "2"],
        None,
    );
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let client_dump = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        client_dump.matches("> sent 16 bytes").count(),
        2,
        "{client_dump}"
    );
    assert_eq!(
        client_dump.matches("< received 16 bytes").count(),
        2,
        "{client_dump}"
    );
    crate::peers::poll_until(
        "the server's dumps",
        || server.report(),
        || {
            let dump = server.stderr();
            (dump.matches("> sent 16 bytes").count() == 2).then_some(())
        },
    );
}

#[test]
fn every_command_documents_itself_with_examples() {
    for command in ["serve", "send", "connect", "relay", "probe"] {
        let output = run_sockit(&[command, "--help"], None);
        assert_eq!(code(&output), 0, "{}", describe(&output));
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            help.contains("Examples:"),
            "{command} --help has no examples"
        );
        assert!(
            help.contains(&format!("sockit {command}")),
            "{command}: {help}"
        );
    }
}

/// The relay dumps its client side: what the client sent (`<`) and what it got (`>`).
#[test]
fn relay_dumps_the_client_side() {
    let mut echo = Proc::sockit(&["serve", "tcp://127.0.0.1:0", "--echo", "-q"]);
    let echo_addr = echo.listening();
    let mut relay = Proc::sockit(&[
        "relay",
        "tcp://127.0.0.1:0",
        &format!("tcp://{echo_addr}"),
        "--hex",
        "-q",
    ]);
    let relay_addr = relay.listening();
    let output = run_sockit(&["connect", &relay_addr], Some(b"relayed"));
    assert_eq!(code(&output), 0, "{}", describe(&output));
    assert_eq!(output.stdout, b"relayed");
    let dump = crate::peers::wait_for_stderr(&relay, "> sent 7 bytes to 127.0.0.1:");
    assert!(
        dump.contains("< received 7 bytes from 127.0.0.1:") && dump.contains("|relayed|"),
        "{dump}"
    );
}
