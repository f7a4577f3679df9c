//! Fuzzes the diagnosis-key export reader with arbitrary bytes: reading (zip or bare
//! `export.bin`, limits, validation) and, when a file is accepted, checking its signature with
//! no keys. Any panic, overflow or runaway allocation is a bug; errors are the expected outcome.

#![no_main]

use libfuzzer_sys::fuzz_target;
use venuetrace::export::{ReadLimits, read_export, verify};

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run fast and make the limit checks themselves reachable.
    let limits = ReadLimits {
        max_entry_bytes: 1024 * 1024,
        max_keys: 10_000,
    };
    if let Ok(archive) = read_export("fuzz", data, &limits) {
        // Parsing export.sig happens here; with no keys the status is never Verified.
        let check = verify(&archive, &[]);
        assert_ne!(check.status, venuetrace::export::SignatureStatus::Verified);
    }
});
