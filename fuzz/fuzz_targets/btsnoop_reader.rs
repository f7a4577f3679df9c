//! Fuzzes the capture readers with arbitrary bytes: the btsnoop reader (header, record framing,
//! corrupt-record recovery) and the adverts it yields, `hci::parse_event` on the raw bytes, and
//! the JSON Lines reader of the replay source. Any panic, overflow, hang or runaway allocation
//! is a bug; errors and skipped records are the expected outcome.

#![no_main]

use libfuzzer_sys::fuzz_target;
use venuetrace::btsnoop::{BtsnoopAdverts, BtsnoopReader};
use venuetrace::gateway::replay::adverts_from_jsonl;
use venuetrace::hci::parse_event;

fuzz_target!(|data: &[u8]| {
    // Raw HCI event decoding: all or nothing.
    let mut out = Vec::new();
    if parse_event(data, 0, &mut out).is_err() {
        assert!(out.is_empty());
    }

    // Record framing: every record is bounded by the input, and the reader ends.
    if let Ok(reader) = BtsnoopReader::new(data) {
        let mut records = 0usize;
        for record in reader {
            records += 1;
            if let Ok(record) = record {
                assert!(record.data.len() <= data.len());
                let _ = record.packet();
                let _ = record.time_ms();
            }
            assert!(records <= data.len(), "more records than bytes");
        }
    }

    // Adverts and counters agree.
    if let Ok(mut stream) = BtsnoopAdverts::new(data) {
        let adverts = stream.by_ref().filter(Result::is_ok).count() as u64;
        let counters = stream.counters();
        assert_eq!(adverts, counters.adverts);
        assert!(counters.corrupt_records <= counters.records);
        assert!(counters.malformed_events <= counters.events);
        assert!(counters.events <= counters.records);
    }

    // The same bytes as a JSON Lines capture.
    if let Ok((adverts, counters)) = adverts_from_jsonl(data) {
        assert_eq!(adverts.len() as u64, counters.adverts);
    }
});
