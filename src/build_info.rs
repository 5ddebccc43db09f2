//! What this binary was built from, as `build.rs` recorded it: the text of
//! `sockit --version` and `sockit version`, which users paste into bug reports.

/// The package version, then one line per build fact (clap prints it after "sockit ").
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit:   ",
    env!("SOCKIT_BUILD_COMMIT"),
    "\nprofile:  ",
    env!("SOCKIT_BUILD_PROFILE"),
    "\nfeatures: ",
    env!("SOCKIT_BUILD_FEATURES"),
    "\nrustc:    ",
    env!("SOCKIT_BUILD_RUSTC"),
    "\ntarget:   ",
    env!("SOCKIT_BUILD_TARGET"),
);
