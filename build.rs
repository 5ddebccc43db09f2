//! Records what `sockit version` reports about this build: the git commit (when built
//! from a git checkout; "unknown" from a source archive), the profile, the enabled
//! features, the compiler and the target.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // The "-modified" mark follows the sources, so they are watched too.
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    let commit = git_commit().unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SOCKIT_BUILD_COMMIT={commit}");
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SOCKIT_BUILD_PROFILE={profile}");
    println!("cargo:rustc-env=SOCKIT_BUILD_FEATURES={}", features());
    println!("cargo:rustc-env=SOCKIT_BUILD_RUSTC={}", rustc_version());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SOCKIT_BUILD_TARGET={target}");
}

/// Runs git in the package directory; `None` when git or the repository is missing.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_string())
}

/// The short commit, with "-modified" when tracked files differ from it; also asks cargo
/// to run this again when HEAD or the branch it points to moves.
fn git_commit() -> Option<String> {
    let git_dir = PathBuf::from(git(&["rev-parse", "--absolute-git-dir"])?);
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    if let Some(common) = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]) {
        let common = PathBuf::from(common);
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            let reference = common.join(&branch);
            if reference.exists() {
                println!("cargo:rerun-if-changed={}", reference.display());
            }
        }
        let packed = common.join("packed-refs");
        if packed.exists() {
            println!("cargo:rerun-if-changed={}", packed.display());
        }
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let modified = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    Some(if modified {
        format!("{commit}-modified")
    } else {
        commit
    })
}

/// The enabled cargo features, comma-separated, or "none".
fn features() -> String {
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(key, _)| {
            key.strip_prefix("CARGO_FEATURE_")
                .map(|name| name.to_lowercase().replace('_', "-"))
        })
        .collect();
    features.sort();
    if features.is_empty() {
        "none".into()
    } else {
        features.join(",")
    }
}

/// `rustc --version` of the compiler building this.
fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
