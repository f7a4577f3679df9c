//! Running the project's binaries from tests: a command that must succeed, the public key a
//! `keygen` printed, paths as arguments, and children killed when a test ends early.

use std::path::Path;
use std::process::{Child, Command};

/// Runs `bin` with `args`; its stdout. Panics (with stderr) unless it succeeds.
pub fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "{bin} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The key `keygen` printed on its `public key ...` line.
pub fn public_key(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key "))
        .expect("public key printed")
        .to_owned()
}

/// `p` as an argument.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A child killed (if still running) and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
