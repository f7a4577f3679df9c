//! Fuzzes the parser of a case's uploaded encounter list (`bluetrace contacts --encounters`,
//! `bluetrace cases add --encounters`): the file comes from a case's phone, so anything can be
//! in it. Never panics; every record kept has a time within the TempID's range, a TempID and a
//! well-formed organisation code, and kept + malformed never exceeds what a list of this size
//! can hold.

#![no_main]

use libfuzzer_sys::fuzz_target;
use venuetrace::bluetrace::{parse_encounter_list, valid_org};

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = parse_encounter_list(data) {
        for r in &list.records {
            assert!((0..=i64::from(i32::MAX)).contains(&r.at_s));
            assert!(valid_org(&r.org));
        }
        // A record takes at least two bytes of JSON ("{}" or a scalar and a comma).
        assert!(list.records.len() as u64 + list.malformed <= data.len() as u64);
        assert_eq!(list.first_malformed.is_some(), list.malformed > 0);
    }
});
