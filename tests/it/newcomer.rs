//! Issue 16, point 3: shell completions and the man page come from the clap definitions,
//! and the shells and `man` accept them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::{TIMEOUT, code, describe, run_sockit};

/// The commands every completion script and the man page must name.
const COMMANDS: [&str; 6] = ["serve", "send", "connect", "relay", "probe", "bench"];

/// Runs `sockit ARGS`, asserts success, and returns stdout.
fn stdout_of(args: &[&str]) -> String {
    let output = run_sockit(args, None);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    String::from_utf8(output.stdout).unwrap_or_else(|e| panic!("sockit {args:?}: {e}"))
}

#[test]
fn every_shell_gets_a_completion_script_naming_the_commands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout_of(&["completions", shell]);
        for command in COMMANDS {
            assert!(
                script.contains(command),
                "{shell} script does not mention {command}"
            );
        }
        assert!(
            script.contains("echo"),
            "{shell} script lacks serve's --echo"
        );
    }
}

#[test]
fn bash_accepts_the_bash_script() {
    let script = stdout_of(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("sockit.bash");
    std::fs::write(&path, script).unwrap_or_else(|e| panic!("{e}"));
    let output = run_peer("bash", &["-n".as_ref(), path.as_ref()], &[]);
    assert!(output.status.success(), "bash -n: {}", describe(&output));
    // Sourcing it registers the completion function, as a user's shell would.
    let register = r#"source "$1" && complete -p sockit"#;
    let args: [&OsStr; 4] = [
        "-c".as_ref(),
        register.as_ref(),
        "bash".as_ref(),
        path.as_ref(),
    ];
    let output = run_peer("bash", &args, &[]);
    assert!(output.status.success(), "source: {}", describe(&output));
}

#[test]
fn the_man_pages_render_with_man() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pages = [("sockit", None), ("sockit-serve", Some("serve"))];
    for (title, command) in pages {
        let args: Vec<&str> = std::iter::once("man").chain(command).collect();
        let page = stdout_of(&args);
        let path = dir.path().join(format!("{title}.1"));
        std::fs::write(&path, page).unwrap_or_else(|e| panic!("{e}"));
        let env = [
            ("MANPAGER", "cat"),
            ("MANWIDTH", "80"),
            ("LC_ALL", "C.UTF-8"),
        ];
        let output = run_peer("man", &["-l".as_ref(), path.as_ref()], &env);
        assert!(output.status.success(), "man -l: {}", describe(&output));
        assert!(output.stderr.is_empty(), "man -l: {}", describe(&output));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("NAME") && text.contains(title), "{text}");
        assert!(text.contains("SYNOPSIS"), "{text}");
    }
    let top = stdout_of(&["man"]);
    for command in COMMANDS {
        assert!(top.contains(&format!("sockit\\-{command}")), "{top}");
    }
}

#[test]
fn a_man_page_for_no_command_is_a_usage_error() {
    let output = run_sockit(&["man", "nope"], None);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("serve, send"), "{stderr}");
}

/// Runs `program ARGS` to completion with the environment `env`, killed after [`TIMEOUT`].
fn run_peer(program: &str, args: &[&OsStr], env: &[(&str, &str)]) -> Output {
    let mut cmd = assert_cmd::Command::new(program);
    cmd.args(args).envs(env.iter().copied()).timeout(TIMEOUT);
    cmd.output().unwrap_or_else(|e| {
        panic!("could not run {program} (is it installed? .ci/run installs it): {e}")
    })
}

/// Issue 16, point 5: sockit is Linux-only (`compile_error!` in `src/lib.rs` says so on any
/// other target), so no source file keeps a branch for another system that nothing builds.
#[test]
fn the_source_has_no_branches_for_other_systems() {
    let other_systems = [
        "android",
        "freebsd",
        "netbsd",
        "openbsd",
        "dragonfly",
        "macos",
        "ios",
        "windows",
        "solaris",
        "illumos",
    ];
    let mut found = Vec::new();
    for file in rust_files(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")) {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        for (number, line) in text.lines().enumerate() {
            let names_other = other_systems
                .iter()
                .any(|os| line.contains(&format!("target_os = \"{os}\"")));
            if names_other || line.contains("cfg(unix)") || line.contains("cfg(windows)") {
                found.push(format!("{}:{}: {line}", file.display(), number + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "branches for other systems:\n{}",
        found.join("\n")
    );
    let lib = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        lib.contains("#[cfg(not(target_os = \"linux\"))]\ncompile_error!("),
        "src/lib.rs must refuse other targets with compile_error!"
    );
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files
}
