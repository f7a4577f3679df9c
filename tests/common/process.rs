//! Running the project's binaries from tests: a command that must succeed, the public key a
//! `keygen` printed, paths as arguments, a gateway enrolled or run until delivered, and
//! children killed when a test ends early.

use std::path::Path;
use std::process::{Child, Command, Stdio};

const GW: &str = env!("CARGO_BIN_EXE_venuetrace-gateway");
const AUTH: &str = env!("CARGO_BIN_EXE_venuetrace-authority");

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

/// Makes `gw_dir`, a gateway key in it (`gateway.key`), and enrolls that key at the authority
/// configured by `auth_config` as gateway `id` at `venue`.
pub fn enroll_gateway(gw_dir: &Path, id: &str, venue: &str, auth_config: &Path) {
    std::fs::create_dir(gw_dir).expect("gateway dir");
    let public = public_key(&run(
        GW,
        &["keygen", "--key", path(&gw_dir.join("gateway.key"))],
    ));
    run(
        AUTH,
        &[
            "gateways",
            "add",
            "--id",
            id,
            "--venue",
            venue,
            "--public-key",
            &public,
            "-c",
            path(auth_config),
        ],
    );
}

/// `venuetrace-gateway run --exit-when-delivered -c CONFIG`, started: stdout discarded, stderr
/// piped (read it with `wait_with_output`).
pub fn run_gateway_until_delivered(config: &Path) -> Child {
    Command::new(GW)
        .args(["run", "--exit-when-delivered", "-c", path(config)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gateway run")
}
