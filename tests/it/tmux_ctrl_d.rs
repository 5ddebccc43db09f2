//! Issue 18, "Tests with real peers": Ctrl-D typed into an interactive `sockit connect`
//! in a real terminal (a tmux pane) ends its input: the server receives the typed line,
//! then EOF (a half-close, the connection still open), and its answer after that EOF
//! still reaches the pane before `connect` exits 0.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::peers::poll_until;
use crate::util::{Proc, sockit_bin};

/// A tmux server of this test's own (its socket in a temp dir), killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(dir: &Path) -> Tmux {
        Tmux {
            socket: dir.join("tmux.sock"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux (is it installed?): {e}"))
    }

    fn ok(&self, args: &[&str]) {
        let output = self.run(args);
        assert!(output.status.success(), "tmux {args:?}: {output:?}");
    }

    /// What the pane shows now.
    fn pane(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// A Python server that prints `accepted`, reads to EOF, prints `got <bytes> EOF`,
/// answers `bye` on the half-closed connection and closes.
fn python_half_close_server() -> Proc {
    let script = "\
import socket
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen()
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
print('accepted', flush=True)
got = b''
while True:
    chunk = c.recv(1024)
    if not chunk:
        break
    got += chunk
print('got %r EOF' % got, flush=True)
c.sendall(b'bye after eof\\n')
c.close()
";
    let mut cmd = Command::new(crate::util::python());
    cmd.args(["-c", script]);
    Proc::spawn(cmd, false)
}

#[test]
fn ctrl_d_typed_in_a_terminal_half_closes_and_the_answer_still_arrives() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut server = python_half_close_server();
    let port = server.wait_for_line("the port", |_| true);
    let tmux = Tmux::new(dir.path());
    let command = format!(
        "'{}' connect 127.0.0.1:{}; echo \"connect exited $?\"; sleep 60",
        sockit_bin().display(),
        port.trim()
    );
    tmux.ok(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "100",
        "-y",
        "20",
        &command,
    ]);
    server.wait_for_line("the connection", |l| l == "accepted");
    tmux.ok(&["send-keys", "-t", "t", "-l", "typed in tmux"]);
    tmux.ok(&["send-keys", "-t", "t", "Enter"]);
    tmux.ok(&["send-keys", "-t", "t", "C-d"]);
    let got = server.wait_for_line("the bytes and EOF", |l| l.starts_with("got "));
    assert_eq!(got, "got b'typed in tmux\\n' EOF");
    let pane = poll_until(
        "connect to print the answer and exit",
        || format!("{}\npane:\n{}", server.report(), tmux.pane()),
        || {
            let pane = tmux.pane();
            pane.contains("connect exited").then_some(pane)
        },
    );
    assert!(pane.contains("bye after eof"), "{pane}");
    assert!(pane.contains("connect exited 0"), "{pane}");
    assert!(server.wait_exit().success(), "{}", server.report());
}
