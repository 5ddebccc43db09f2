//! The process table, read from `/proc`: which processes a server started, and whether any
//! is left over (still running, or a zombie nobody reaped) once its client is gone.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use crate::util::TIMEOUT;

/// One line of the process table.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// State letter: R, S, D, Z (zombie), T…
    pub state: char,
    /// The command name.
    pub comm: String,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid …`; comm may hold spaces and parens.
fn parse_stat(text: &str) -> Option<ProcInfo> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_string();
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        state,
        comm,
    })
}

/// Every process on the machine (those that vanish while we read are skipped).
pub fn all() -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        panic!("cannot read /proc");
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|text| parse_stat(&text))
        .collect()
}

/// The processes whose parent is `pid`, zombies included.
pub fn children(pid: u32) -> Vec<ProcInfo> {
    all().into_iter().filter(|p| p.ppid == pid).collect()
}

/// `pid`'s children, their children, and so on.
pub fn descendants(pid: u32) -> Vec<ProcInfo> {
    let table = all();
    let mut found: Vec<ProcInfo> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for p in table.iter().filter(|p| p.ppid == parent) {
            frontier.push(p.pid);
            found.push(p.clone());
        }
    }
    found
}

/// Whether a process with this id exists (running or zombie).
pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Polls `check` until it returns `None` (done); panics with its last answer after
/// [`TIMEOUT`]. `check` returns `Some(description)` while the condition does not hold.
pub fn eventually(what: &str, mut check: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let Some(state) = check() else { return };
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last seen: {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `server` has no child process at all: none running, none a zombie.
pub fn wait_no_children(server: u32, context: &dyn Fn() -> String) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = children(server);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server {server} still has children (Z = zombie, not reaped): {left:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `server` has at least one child and returns them (the program it started).
pub fn wait_some_children(server: u32, context: &dyn Fn() -> String) -> Vec<ProcInfo> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let found = children(server);
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "server {server} never started a program\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn stat_lines_with_odd_command_names_parse() {
    let info = parse_stat("42 (a (b) c) Z 7 1 1 0").unwrap_or_else(|| panic!("no parse"));
    assert_eq!(
        (info.pid, info.comm.as_str(), info.state, info.ppid),
        (42, "a (b) c", 'Z', 7)
    );
    let me = std::process::id();
    assert!(
        all().iter().any(|p| p.pid == me),
        "this test process is listed"
    );
}
