//! Shared test support: where the reference data in `../shared/testdata/` lives.
//!
//! The reference files are never copied or edited; tests read them in place. A missing
//! file is a failure (with the reason), never a skip, so a test cannot pass vacuously.

#![allow(dead_code)]

pub mod bluez;
pub mod mosquitto;
pub mod responder;

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
