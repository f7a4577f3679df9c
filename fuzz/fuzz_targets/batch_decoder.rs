//! Fuzzes what the authority does with a message from the broker before any key is involved:
//! the envelope header reader, and the batch decoder/validator on arbitrary plaintext (a
//! compromised gateway can seal anything). Also checks that every batch the decoder accepts
//! re-encodes to bytes that decode to the same batch.

#![no_main]

use libfuzzer_sys::fuzz_target;
use venuetrace::batch::Batch;
use venuetrace::seal::read_header;

fuzz_target!(|data: &[u8]| {
    let _ = read_header(data);
    if let Ok(batch) = Batch::decode(data) {
        let again = Batch::decode(&batch.encode()).expect("a valid batch re-encodes validly");
        assert_eq!(again, batch);
    }
});
