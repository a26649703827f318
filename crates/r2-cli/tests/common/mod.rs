//! Helpers shared by the `r2` binary's end-to-end tests.

use std::process::{Command, Output, Stdio};

/// The `r2` binary, isolated from the caller's R2_* settings, never fetching from the Hugging
/// Face Hub, with no standard input.
pub fn r2() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_r2"));
    cmd.env_remove("R2_CHECKPOINTS")
        .env_remove("R2_CONFIG")
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null());
    cmd
}

/// Standard output of a run that must succeed.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "r2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Standard error of a run that must fail.
#[allow(dead_code)] // Not every test file has a failing case.
pub fn failed(out: Output) -> String {
    assert!(!out.status.success(), "r2 should have failed");
    String::from_utf8(out.stderr).unwrap()
}
