//! Shared test support: where the reference data in `../shared/testdata/` lives.
//!
//! The reference files are never copied or edited; tests read them in place. A missing
//! file is a failure (with the reason), never a skip, so a test cannot pass vacuously.

#![allow(dead_code)]

pub mod bluez;
pub mod mosquitto;
pub mod postgres;
pub mod process;
pub mod responder;
pub mod store;

use std::path::PathBuf;

/// Path of a file in the shared reference data directory (`VENUETRACE_TESTDATA` overrides it).
pub fn testdata(name: &str) -> PathBuf {
    let dir = std::env::var_os("VENUETRACE_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata"))
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "reference file {} is missing: the shared/ directory must sit beside the repository \
         (or set VENUETRACE_TESTDATA)",
        path.display()
    );
    path
}

/// Contents of a reference file.
pub fn read_testdata(name: &str) -> Vec<u8> {
    let path = testdata(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs the independent TempID reference implementation (`tests/common/tempid_ref.py`, Python
/// `cryptography` on OpenSSL, sharing no code with `src/bluetrace.rs`) with `args`; its output,
/// trimmed. See the script's docstring for the subcommands.
pub fn tempid_ref(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/tempid_ref.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .args(args)
        .output()
        .expect("/usr/bin/python3 runs (./scripts/test installs python3-cryptography)");
    assert!(
        out.status.success(),
        "tempid_ref.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}
