//! The Exposure Notification crypto core against the official test vectors of the
//! Cryptography Specification v1.2 (`../shared/testdata/en-crypto-vectors.json`, loaded from
//! the file, not retyped), plus properties the specification implies.

mod common;

use proptest::prelude::*;
use serde::Deserialize;
use venuetrace::crypto::{Aem, Enin, Metadata, RollingPeriod, Rpi, Tek};

#[derive(Deserialize)]
struct Vectors {
    key_generation_unix_seconds: u64,
    tek_rolling_start_interval_number: u32,
    tek_rolling_period: i64,
    tek: String,
    rpik: String,
    aemk: String,
    metadata: String,
    intervals: Vec<Interval>,
}

#[derive(Deserialize)]
struct Interval {
    i: u32,
    enin: u32,
    rpi: String,
    aem: String,
}

fn vectors() -> Vectors {
    serde_json::from_slice(&common::read_testdata("en-crypto-vectors.json"))
        .expect("en-crypto-vectors.json parses")
}

fn tek(v: &Vectors) -> Tek {
    Tek::from_hex(&v.tek).expect("vector TEK is 16 bytes of hex")
}

/// The vector file is the complete one: 144 intervals of one day-long key.
#[test]
fn vector_file_is_complete() {
    let v = vectors();
    assert_eq!(v.intervals.len(), 144);
    assert_eq!(
        RollingPeriod::new(v.tek_rolling_period),
        Ok(RollingPeriod::DAY)
    );
    assert_eq!(
        Enin::from_unix_seconds(v.key_generation_unix_seconds),
        Some(Enin(v.tek_rolling_start_interval_number))
    );
    for (n, interval) in v.intervals.iter().enumerate() {
        assert_eq!(interval.i as usize, n);
        assert_eq!(
            interval.enin,
            v.tek_rolling_start_interval_number + interval.i
        );
    }
}

/// RPIK and AEMK derive from the TEK by HKDF-SHA256 with infos "EN-RPIK" and "EN-AEMK".
#[test]
fn rpik_and_aemk_match_vectors() {
    let v = vectors();
    let tek = tek(&v);
    assert_eq!(tek.rpik().to_hex(), v.rpik);
    assert_eq!(tek.aemk().to_hex(), v.aemk);
    let (rpik, aemk) = tek.keys();
    assert_eq!(
        (rpik.to_hex(), aemk.to_hex()),
        (v.rpik.clone(), v.aemk.clone())
    );
}

/// All 144 RPIs, derived in one call with one key schedule, match the vectors; so does each one
/// derived alone.
#[test]
fn all_144_rpis_match_vectors() {
    let v = vectors();
    let cipher = tek(&v).rpik().cipher();
    let rpis = cipher.derive(Enin(v.tek_rolling_start_interval_number), 144);
    for (interval, rpi) in v.intervals.iter().zip(&rpis) {
        assert_eq!(
            rpi.to_hex(),
            interval.rpi,
            "bulk RPI of interval {}",
            interval.i
        );
        assert_eq!(
            cipher.rpi(Enin(interval.enin)).to_hex(),
            interval.rpi,
            "single RPI of interval {}",
            interval.i
        );
    }
}

/// All 144 AEMs (AES-128-CTR of metadata 40080000 under AEMK with IV = RPI) match the
/// vectors, and decrypt back to metadata version 1.0 with TX power +8 dBm.
#[test]
fn all_144_aems_match_vectors_and_decrypt() {
    let v = vectors();
    let aemk = tek(&v).aemk();
    let mut metadata = [0u8; 4];
    hex::decode_to_slice(&v.metadata, &mut metadata).expect("vector metadata is 4 bytes");
    for interval in &v.intervals {
        let rpi = Rpi::from_hex(&interval.rpi).expect("vector RPI");
        let aem = aemk.encrypt(&rpi, metadata);
        assert_eq!(aem.to_hex(), interval.aem, "AEM of interval {}", interval.i);
        let expected = Aem::from_hex(&interval.aem).expect("vector AEM");
        assert_eq!(aemk.decrypt(&rpi, &expected), metadata);
        assert_eq!(
            aemk.decrypt_metadata(&rpi, &expected),
            Ok(Metadata::v1_0(8))
        );
    }
}

proptest! {
    /// The specialised HKDF in the crypto core equals the generic `hkdf` crate for any TEK.
    #[test]
    fn key_derivation_equals_reference_hkdf(tek in any::<[u8; 16]>()) {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(None, &tek);
        let (mut rpik, mut aemk) = ([0u8; 16], [0u8; 16]);
        hkdf.expand(b"EN-RPIK", &mut rpik).expect("16-byte output");
        hkdf.expand(b"EN-AEMK", &mut aemk).expect("16-byte output");
        let tek = Tek::from_bytes(tek);
        prop_assert_eq!(*tek.rpik().as_bytes(), rpik);
        prop_assert_eq!(*tek.aemk().as_bytes(), aemk);
        let (r, a) = tek.keys();
        prop_assert_eq!((*r.as_bytes(), *a.as_bytes()), (rpik, aemk));
    }

    /// Decrypting an AEM with its key and RPI gives back the metadata bytes, for any key,
    /// interval and metadata.
    #[test]
    fn aem_decrypt_inverts_encrypt(tek in any::<[u8; 16]>(), enin in any::<u32>(), metadata in any::<[u8; 4]>()) {
        let tek = Tek::from_bytes(tek);
        let rpi = tek.rpik().cipher().rpi(Enin(enin));
        let aemk = tek.aemk();
        prop_assert_eq!(aemk.decrypt(&rpi, &aemk.encrypt(&rpi, metadata)), metadata);
    }

    /// The RPIs of distinct intervals of one key differ (AES is a permutation), so every
    /// interval of a day-long key, and the tolerance intervals around it, are distinguishable.
    #[test]
    fn rpis_of_distinct_intervals_differ(tek in any::<[u8; 16]>(), start in 0u32..(u32::MAX - 200)) {
        let rpis = Tek::from_bytes(tek).rpik().cipher().derive(Enin(start), 168);
        let distinct: std::collections::HashSet<_> = rpis.iter().collect();
        prop_assert_eq!(distinct.len(), rpis.len());
    }

    /// Metadata survives encode → parse for every 1.x version and TX power.
    #[test]
    fn metadata_round_trips(minor in 0u8..4, tx in any::<i8>()) {
        let m = Metadata { version: venuetrace::crypto::MetadataVersion { major: 1, minor }, tx_power_dbm: tx };
        prop_assert_eq!(Metadata::parse(m.to_bytes()), Ok(m));
    }
}
