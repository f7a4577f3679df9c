//! The store contract: the same scenarios run against the SQLite store (a temporary file) and
//! the PostgreSQL store (a private cluster, tests/common/postgres.rs), and their results must
//! be equal. Then what only PostgreSQL has: dropped day partitions, concurrent workers storing
//! one batch, concurrent processes migrating one database.
//!
//! [`Contract`] lists the methods the scenarios use, implemented for both stores by the same
//! forwarding macro: a method whose name, arguments or result differ between the stores does
//! not compile.

mod common;

use common::postgres::{PgCluster, TestDb};
use std::time::Instant;
use venuetrace::aggregate::{Counters, MinuteRssi, Sighting, TempIdSighting};
use venuetrace::authority::pg::{PgStore, partition_name};
use venuetrace::authority::store::{
    BluetraceCase, BluetraceCounts, ContactQuery, DayCount, ExposureFilter, ExposureRow, Gateway,
    GatewayStatus, KeyImport, MatchChanges, Purged, Quarantined, SCHEMA_VERSION, SightingSelection,
    SqliteStore, Store, Stored, StoredKey, Venue, VenueHourRow, VenueHourView,
};
use venuetrace::batch::{Batch, BatchId, GatewayId};
use venuetrace::bluetrace::{EncounterRecord, TempId, Uid};
use venuetrace::crypto::{Aem, Enin, RollingPeriod, Rpi, Tek};
use venuetrace::export::{DiagnosisKey, ReportType};
use venuetrace::presence::{Basis, Contact, VenueHour};

/// A sighting as read back, owned: batch row, venue, window, window minutes, RPI, AEM,
/// calibration, minutes.
type ReadSighting = (i64, u32, u32, u32, [u8; 16], [u8; 4], i32, Vec<MinuteRssi>);
/// A TempID sighting as read back, owned.
type ReadTempId = (u32, u32, i32, Option<Vec<u8>>, String, Vec<MinuteRssi>);

/// The store methods the scenarios use; every call `expect`s success.
trait Contract {
    fn upsert_venue(&mut self, name: &str, kind: &str, location: Option<&str>) -> u32;
    fn venues(&self) -> Vec<Venue>;
    #[allow(clippy::too_many_arguments)]
    fn add_gateway(
        &mut self,
        id: &str,
        venue: &str,
        kind: &str,
        key: [u8; 32],
        label: Option<&str>,
        calibration_db: i32,
        now_ms: i64,
    ) -> Result<(), String>;
    fn revoke_gateway(&mut self, id: &str, now_ms: i64) -> Result<(), String>;
    fn gateways(&self) -> Vec<Gateway>;
    fn gateway(&self, id: &str) -> Option<Gateway>;
    fn gateway_status(&self) -> Vec<GatewayStatus>;
    fn has_batch(&self, id: &str) -> bool;
    fn store_batch(&mut self, batch: &Batch, gateway: &Gateway, now_ms: i64) -> Stored;
    fn quarantine(
        &mut self,
        topic: &str,
        id: Option<&str>,
        reason: &str,
        payload: &[u8],
        now_ms: i64,
    );
    fn quarantined(&self, limit: usize) -> Vec<Quarantined>;
    fn batch_count(&self) -> u64;
    fn read_sightings(&self, which: SightingSelection) -> Vec<ReadSighting>;
    fn sighting_watermark(&self) -> i64;
    fn day_counts(&self) -> Vec<DayCount>;
    fn read_tempid_sightings(&self, from: Enin, to: Enin) -> Vec<ReadTempId>;
    fn tempid_batches_since(&self, after: i64) -> (i64, Vec<u32>);
    fn import_keys(&mut self, keys: &[DiagnosisKey], source: &str, now_ms: i64) -> KeyImport;
    fn keys(&self) -> Vec<StoredKey>;
    fn purge(&mut self, sightings_before_s: i64, keys_before_s: i64) -> Purged;
    fn replace_exposures(&mut self, events: &[ExposureRow], hours: &[VenueHourRow]);
    fn replace_exposures_between(
        &mut self,
        from_s: i64,
        to_s: i64,
        events: &[ExposureRow],
        hours: &[VenueHourRow],
    );
    fn venue_hours(&self, filter: &ExposureFilter) -> Vec<VenueHourView>;
    fn changes_since_match(&self) -> MatchChanges;
    fn set_matched(&mut self, watermark: (i64, i64, i64));
    fn upsert_case(&mut self, case: &BluetraceCase) -> bool;
    fn remove_case(&mut self, uid: &Uid) -> Result<(), String>;
    fn cases(&self) -> Vec<BluetraceCase>;
    fn replace_bluetrace_hours(&mut self, hours: &[VenueHour]);
    fn replace_bluetrace_hours_between(&mut self, from_s: i64, to_s: i64, hours: &[VenueHour]);
    fn record_contact_query(&mut self, query: &ContactQuery, contacts: &[Contact]) -> i64;
    fn bluetrace_counts(&self) -> BluetraceCounts;
    fn set_case_encounters(&mut self, uid: &Uid, records: &[EncounterRecord])
    -> Result<(), String>;
    fn read_case_encounters(
        &self,
        from_s: i64,
        to_s: i64,
        case: Option<&Uid>,
    ) -> Vec<(Uid, EncounterRecord)>;
    fn case_encounter_counts(&self) -> Vec<(Uid, u64)>;
}

macro_rules! contract {
    ($store:ty) => {
        impl Contract for $store {
            fn upsert_venue(&mut self, name: &str, kind: &str, location: Option<&str>) -> u32 {
                <$store as Store>::upsert_venue(self, name, kind, location).expect("upsert_venue")
            }
            fn venues(&self) -> Vec<Venue> {
                <$store as Store>::venues(self).expect("venues")
            }
            fn add_gateway(
                &mut self,
                id: &str,
                venue: &str,
                kind: &str,
                key: [u8; 32],
                label: Option<&str>,
                calibration_db: i32,
                now_ms: i64,
            ) -> Result<(), String> {
                <$store as Store>::add_gateway(
                    self,
                    id,
                    venue,
                    kind,
                    key,
                    label,
                    calibration_db,
                    now_ms,
                )
                .map_err(|e| e.to_string())
            }
            fn revoke_gateway(&mut self, id: &str, now_ms: i64) -> Result<(), String> {
                <$store as Store>::revoke_gateway(self, id, now_ms).map_err(|e| e.to_string())
            }
            fn gateways(&self) -> Vec<Gateway> {
                <$store as Store>::gateways(self).expect("gateways")
            }
            fn gateway(&self, id: &str) -> Option<Gateway> {
                <$store as Store>::gateway(self, id).expect("gateway")
            }
            fn gateway_status(&self) -> Vec<GatewayStatus> {
                <$store as Store>::gateway_status(self).expect("gateway_status")
            }
            fn has_batch(&self, id: &str) -> bool {
                <$store as Store>::has_batch(self, id).expect("has_batch")
            }
            fn store_batch(&mut self, batch: &Batch, gateway: &Gateway, now_ms: i64) -> Stored {
                <$store as Store>::store_batch(self, batch, gateway, now_ms).expect("store_batch")
            }
            fn quarantine(
                &mut self,
                topic: &str,
                id: Option<&str>,
                reason: &str,
                payload: &[u8],
                now_ms: i64,
            ) {
                <$store as Store>::quarantine(self, topic, id, reason, payload, now_ms)
                    .expect("quarantine")
            }
            fn quarantined(&self, limit: usize) -> Vec<Quarantined> {
                <$store as Store>::quarantined(self, limit).expect("quarantined")
            }
            fn batch_count(&self) -> u64 {
                <$store as Store>::batch_count(self).expect("batch_count")
            }
            fn read_sightings(&self, which: SightingSelection) -> Vec<ReadSighting> {
                let mut out = Vec::new();
                let n = <$store as Store>::read_sightings(self, which, &mut |r| {
                    out.push((
                        r.batch,
                        r.header.venue,
                        r.header.window_start.0,
                        r.header.window_minutes,
                        *r.header.rpi.as_bytes(),
                        *r.header.aem.as_bytes(),
                        r.header.rssi_calibration_db,
                        r.minutes().collect(),
                    ))
                })
                .expect("read_sightings");
                assert_eq!(n, out.len() as u64, "read_sightings counts what it passes");
                out
            }
            fn sighting_watermark(&self) -> i64 {
                <$store as Store>::sighting_watermark(self).expect("sighting_watermark")
            }
            fn day_counts(&self) -> Vec<DayCount> {
                <$store as Store>::day_counts(self).expect("day_counts")
            }
            fn read_tempid_sightings(&self, from: Enin, to: Enin) -> Vec<ReadTempId> {
                let mut out = Vec::new();
                <$store as Store>::read_tempid_sightings(self, from, to, &mut |r| {
                    out.push((
                        r.venue,
                        r.window_start.0,
                        r.rssi_calibration_db,
                        r.tempid.map(|t| t.as_bytes().to_vec()),
                        r.org.to_owned(),
                        r.minutes().collect(),
                    ))
                })
                .expect("read_tempid_sightings");
                out
            }
            fn tempid_batches_since(&self, after: i64) -> (i64, Vec<u32>) {
                <$store as Store>::tempid_batches_since(self, after).expect("tempid_batches_since")
            }
            fn import_keys(
                &mut self,
                keys: &[DiagnosisKey],
                source: &str,
                now_ms: i64,
            ) -> KeyImport {
                <$store as Store>::import_keys(self, keys, source, now_ms).expect("import_keys")
            }
            fn keys(&self) -> Vec<StoredKey> {
                <$store as Store>::keys(self).expect("keys")
            }
            fn purge(&mut self, sightings_before_s: i64, keys_before_s: i64) -> Purged {
                <$store as Store>::purge(self, sightings_before_s, keys_before_s).expect("purge")
            }
            fn replace_exposures(&mut self, events: &[ExposureRow], hours: &[VenueHourRow]) {
                <$store as Store>::replace_exposures(self, events, hours)
                    .expect("replace_exposures")
            }
            fn replace_exposures_between(
                &mut self,
                from_s: i64,
                to_s: i64,
                events: &[ExposureRow],
                hours: &[VenueHourRow],
            ) {
                <$store as Store>::replace_exposures_between(self, from_s, to_s, events, hours)
                    .expect("replace_exposures_between")
            }
            fn venue_hours(&self, filter: &ExposureFilter) -> Vec<VenueHourView> {
                <$store as Store>::venue_hours(self, filter).expect("venue_hours")
            }
            fn changes_since_match(&self) -> MatchChanges {
                <$store as Store>::changes_since_match(self).expect("changes_since_match")
            }
            fn set_matched(&mut self, watermark: (i64, i64, i64)) {
                <$store as Store>::set_matched(self, watermark).expect("set_matched")
            }
            fn upsert_case(&mut self, case: &BluetraceCase) -> bool {
                <$store as Store>::upsert_case(self, case).expect("upsert_case")
            }
            fn remove_case(&mut self, uid: &Uid) -> Result<(), String> {
                <$store as Store>::remove_case(self, uid).map_err(|e| e.to_string())
            }
            fn cases(&self) -> Vec<BluetraceCase> {
                <$store as Store>::cases(self).expect("cases")
            }
            fn replace_bluetrace_hours(&mut self, hours: &[VenueHour]) {
                <$store as Store>::replace_bluetrace_hours(self, hours)
                    .expect("replace_bluetrace_hours")
            }
            fn replace_bluetrace_hours_between(
                &mut self,
                from_s: i64,
                to_s: i64,
                hours: &[VenueHour],
            ) {
                <$store as Store>::replace_bluetrace_hours_between(self, from_s, to_s, hours)
                    .expect("replace_bluetrace_hours_between")
            }
            fn record_contact_query(&mut self, query: &ContactQuery, contacts: &[Contact]) -> i64 {
                <$store as Store>::record_contact_query(self, query, contacts)
                    .expect("record_contact_query")
            }
            fn bluetrace_counts(&self) -> BluetraceCounts {
                <$store as Store>::bluetrace_counts(self).expect("bluetrace_counts")
            }
            fn set_case_encounters(
                &mut self,
                uid: &Uid,
                records: &[EncounterRecord],
            ) -> Result<(), String> {
                <$store as Store>::set_case_encounters(self, uid, records)
                    .map_err(|e| e.to_string())
            }
            fn read_case_encounters(
                &self,
                from_s: i64,
                to_s: i64,
                case: Option<&Uid>,
            ) -> Vec<(Uid, EncounterRecord)> {
                let mut rows = Vec::new();
                <$store as Store>::read_case_encounters(self, from_s, to_s, case, &mut |uid, r| {
                    rows.push((*uid, r))
                })
                .expect("read_case_encounters");
                rows.sort_by(|a, b| (a.0, a.1.at_s, a.1.tempid).cmp(&(b.0, b.1.at_s, b.1.tempid)));
                rows
            }
            fn case_encounter_counts(&self) -> Vec<(Uid, u64)> {
                let mut counts: Vec<_> = <$store as Store>::case_encounter_counts(self)
                    .expect("case_encounter_counts")
                    .into_iter()
                    .collect();
                counts.sort();
                counts
            }
        }
    };
}

contract!(SqliteStore);
contract!(PgStore);

/// A UTC day (days since the epoch) in late 2026; windows below are ENINs of it and the next.
const DAY: u32 = 20_600;

fn window(day: u32, interval: u32) -> u32 {
    day * 144 + interval
}

fn minutes(seed: u8, n: u8) -> Vec<MinuteRssi> {
    (0..n)
        .map(|m| MinuteRssi {
            minute: m,
            count: u32::from(seed) * 1000 + u32::from(m),
            min: -90 + m as i8,
            mean: -70,
            max: -(seed as i8 % 50),
        })
        .collect()
}

/// A batch of gateway `gateway`'s `sequence` for window `enin`: `sightings` RPIs and
/// `tempids` TempIDs, all distinct per (sequence, index).
fn batch(gateway: &str, sequence: u64, enin: u32, sightings: u8, tempids: u8) -> Batch {
    let tag = sequence as u8;
    Batch {
        id: BatchId {
            gateway: GatewayId::new(gateway).expect("gateway id"),
            sequence,
        },
        venue: "ignored: the enrolled venue wins".into(),
        window_start: Enin(enin),
        window_minutes: 10,
        closed_early: sequence.is_multiple_of(2),
        rssi_calibration_db: 99,
        counters: Counters {
            adverts: 100 + sequence,
            gaen: 90,
            malformed: sequence,
            dropped: 2,
            late: 1,
            bluetrace_adverts: 7,
            bluetrace_devices: 3,
            bluetrace_reads: u64::from(tempids),
            bluetrace_reads_dropped: 1,
            unrelated: 5,
        },
        sightings: (0..sightings)
            .map(|i| Sighting {
                rpi: Rpi::from_bytes([tag ^ i; 16]),
                aem: Aem::from_bytes([i, tag, 0x40, 1]),
                first_minute: 0,
                last_minute: i % 10,
                reports: u32::from(i) + 1,
                minutes: minutes(tag.wrapping_add(i), i % 10 + 1),
            })
            .collect(),
        tempids: (0..tempids)
            .map(|i| TempIdSighting {
                tempid: TempId::from_bytes([tag.wrapping_mul(31) ^ i; TempId::LEN]),
                org: if i % 2 == 0 { "MAR" } else { "SG_MOH" }.into(),
                first_minute: 1,
                last_minute: 3,
                reads: 2,
                minutes: minutes(i, 3),
            })
            .collect(),
    }
}

/// Runs `scenario` on a fresh SQLite store and a fresh PostgreSQL store, asserts that both
/// give the same result, reports the time each took, and returns the PostgreSQL store (with
/// its database, for catalog checks) and the result.
fn on_both<T: PartialEq + std::fmt::Debug>(
    name: &str,
    cluster: &PgCluster,
    scenario: impl Fn(&mut dyn Contract) -> T,
) -> (PgStore, TestDb, T) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sqlite = SqliteStore::open(&dir.path().join("authority.db")).expect("open SQLite");
    let started = Instant::now();
    let expected = scenario(&mut sqlite);
    let sqlite_time = started.elapsed();
    let db = cluster.database();
    let started = Instant::now();
    let mut pg = PgStore::connect(&db.url).expect("connect PostgreSQL");
    let connect_time = started.elapsed();
    let started = Instant::now();
    let actual = scenario(&mut pg);
    let pg_time = started.elapsed();
    eprintln!(
        "{name}: SQLite {sqlite_time:?}, PostgreSQL {pg_time:?} (+ connect and migrate {connect_time:?})"
    );
    assert_eq!(actual, expected, "{name}: PostgreSQL differs from SQLite");
    (pg, db, actual)
}

/// Enrolls `gw-a` (venue souk-1, calibration -3) and `gw-b` (venue gare, revoked at 5 and
/// enrolled again with another key at 6); returns gw-a.
fn enroll(store: &mut dyn Contract) -> Gateway {
    store
        .add_gateway(
            "gw-a",
            "souk-1",
            "market",
            [1; 32],
            Some("north door"),
            -3,
            1,
        )
        .expect("enroll gw-a");
    store
        .add_gateway("gw-b", "gare", "station", [2; 32], None, 0, 2)
        .expect("enroll gw-b");
    store.gateway("gw-a").expect("gw-a enrolled")
}

/// Registry and batches: venues upserted, gateways enrolled (twice is refused), revoked and
/// re-enrolled; a batch stored, then again (a duplicate: nothing written); batches with
/// TempIDs; quarantine newest first; per-gateway status — the same on both stores.
#[test]
fn registry_batches_and_quarantine_agree() {
    let cluster = PgCluster::start();
    on_both("registry and batches", &cluster, |s| {
        let venue = s.upsert_venue("souk-1", "market", Some("Rabat"));
        let gw = enroll(s);
        let again = s.add_gateway("gw-a", "souk-1", "market", [9; 32], None, 0, 3);
        let revoke_unknown = s.revoke_gateway("gw-x", 4);
        s.revoke_gateway("gw-b", 5).expect("revoke gw-b");
        let revoked = s.gateway("gw-b");
        s.add_gateway(
            "gw-b",
            "gare",
            "station",
            [3; 32],
            Some("re-enrolled"),
            2,
            6,
        )
        .expect("re-enroll gw-b");
        let first = s.store_batch(&batch("gw-a", 1, window(DAY, 6), 5, 0), &gw, 10);
        let duplicate = s.store_batch(&batch("gw-a", 1, window(DAY, 6), 5, 0), &gw, 11);
        let with_tempids = s.store_batch(&batch("gw-a", 2, window(DAY, 7), 3, 4), &gw, 12);
        let empty = s.store_batch(&batch("gw-a", 3, window(DAY, 8), 0, 0), &gw, 13);
        s.quarantine(
            "venuetrace/v1/gw/gw-x/batch",
            None,
            "unknown gateway",
            b"abc",
            20,
        );
        s.quarantine(
            "venuetrace/v1/gw/gw-a/batch",
            Some("gw-a:9"),
            "bad seal",
            b"",
            21,
        );
        (
            venue,
            again.expect_err("enrolled twice"),
            revoke_unknown.expect_err("unknown gateway"),
            revoked,
            s.venues(),
            s.gateways(),
            (first, duplicate, with_tempids, empty),
            (
                s.has_batch("gw-a:1"),
                s.has_batch("gw-a:4"),
                s.batch_count(),
            ),
            s.quarantined(10),
            s.quarantined(1),
            s.gateway_status(),
        )
    });
}

/// Sightings read back alike: by window span (with a watermark cutting off later rows), by
/// watermark (stored between two), per-day counts, TempID sightings by window span and the
/// batches holding TempIDs since a row.
#[test]
fn sightings_read_by_window_and_watermark_agree() {
    let cluster = PgCluster::start();
    let (_pg, _db, (_, _, _, upto_first_two, ..)) = on_both("sightings", &cluster, |s| {
        let gw = enroll(s);
        let empty_watermark = s.sighting_watermark();
        s.store_batch(&batch("gw-a", 1, window(DAY, 6), 4, 2), &gw, 10);
        s.store_batch(&batch("gw-a", 2, window(DAY, 143), 3, 0), &gw, 11);
        let upto_first_two = s.sighting_watermark();
        s.store_batch(&batch("gw-a", 3, window(DAY + 1, 0), 6, 3), &gw, 12);
        // Stored after the second, for an earlier window: read by window, it comes first.
        s.store_batch(&batch("gw-a", 4, window(DAY, 5), 2, 0), &gw, 13);
        let (tempid_upto, _) = s.tempid_batches_since(0);
        s.store_batch(&batch("gw-a", 5, window(DAY + 1, 9), 1, 1), &gw, 14);
        let all = s.sighting_watermark();
        (
            empty_watermark,
            s.read_sightings(SightingSelection::Windows {
                from: Enin(window(DAY, 0)),
                to: Enin(window(DAY + 2, 0)),
                upto: all,
            }),
            s.read_sightings(SightingSelection::Windows {
                from: Enin(window(DAY, 6)),
                to: Enin(window(DAY + 1, 1)),
                upto: upto_first_two,
            }),
            upto_first_two,
            s.read_sightings(SightingSelection::StoredBetween {
                after: upto_first_two,
                upto: all,
            }),
            all,
            s.day_counts(),
            s.read_tempid_sightings(Enin(window(DAY, 0)), Enin(window(DAY + 1, 5))),
            s.tempid_batches_since(tempid_upto),
        )
    });
    assert_eq!(upto_first_two, 7, "row ids count sightings from 1");
}

fn key(byte: u8, day: u32, report: Option<ReportType>, onset: Option<i32>) -> DiagnosisKey {
    DiagnosisKey {
        tek: Tek::from_bytes([byte; 16]),
        transmission_risk_level: Some(i32::from(byte % 8)),
        rolling_start: Enin(day * 144),
        rolling_period: RollingPeriod::DAY,
        report_type: report,
        days_since_onset_of_symptoms: onset,
    }
}

/// Key import: new keys, the same again (unchanged), a revision of report type and onset
/// (revised), read back alike.
#[test]
fn key_import_and_revision_agree() {
    let cluster = PgCluster::start();
    on_both("keys", &cluster, |s| {
        let keys = [
            key(1, DAY, Some(ReportType::ConfirmedTest), Some(2)),
            key(2, DAY, None, None),
            key(3, DAY - 1, Some(ReportType::SelfReport), Some(-1)),
        ];
        let first = s.import_keys(&keys, "export-1.zip", 100);
        let same = s.import_keys(&keys[..2], "export-1.zip", 200);
        let revised = s.import_keys(
            &[
                key(
                    2,
                    DAY,
                    Some(ReportType::ConfirmedClinicalDiagnosis),
                    Some(0),
                ),
                key(4, DAY, None, Some(3)),
            ],
            "export-2.zip",
            300,
        );
        (first, same, revised, s.keys())
    });
}

/// Retention: sightings of windows before the cutoff go with their batches (the cutoff's own
/// day row-wise), keys whose validity ended, and the results about them — the same counts and
/// survivors on both stores; on PostgreSQL the whole day before the cutoff's is a dropped
/// partition, the cutoff's day's partition stays.
#[test]
fn purge_by_retention_agrees_and_drops_old_days() {
    let cluster = PgCluster::start();
    let cutoff_s = i64::from(window(DAY + 1, 50)) * 600;
    let (pg, db, _) = on_both("purge", &cluster, |s| {
        let gw = enroll(s);
        s.store_batch(&batch("gw-a", 1, window(DAY, 6), 4, 2), &gw, 10);
        s.store_batch(&batch("gw-a", 2, window(DAY, 120), 3, 0), &gw, 11);
        s.store_batch(&batch("gw-a", 3, window(DAY + 1, 10), 2, 1), &gw, 12);
        s.store_batch(&batch("gw-a", 4, window(DAY + 1, 100), 5, 2), &gw, 13);
        s.import_keys(
            &[key(1, DAY - 20, None, None), key(2, DAY, None, None)],
            "k",
            1,
        );
        s.upsert_case(&BluetraceCase {
            uid: Uid::from_bytes([7; 21]),
            from_s: 0,
            to_s: cutoff_s - 1,
            label: None,
            added_ms: 1,
        });
        let purged = s.purge(cutoff_s, i64::from(DAY - 10) * 86_400);
        let all = s.sighting_watermark();
        (
            purged,
            s.batch_count(),
            s.day_counts(),
            s.read_sightings(SightingSelection::Windows {
                from: Enin(0),
                to: Enin(u32::MAX),
                upto: all,
            }),
            s.read_tempid_sightings(Enin(0), Enin(u32::MAX)),
            s.keys().len(),
            s.bluetrace_counts(),
        )
    });
    drop(pg);
    let mut client = db.client();
    let children: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent IN ('sighting'::regclass, 'tempid_sighting'::regclass)
             ORDER BY 1",
            &[],
        )
        .expect("list partitions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let day = i64::from(DAY);
    assert_eq!(
        children,
        vec![
            partition_name("sighting", day + 1),
            partition_name("tempid_sighting", day + 1)
        ],
        "the old day's partitions are dropped, the cutoff day's kept"
    );
    let old_tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname IN ($1, $2)",
            &[
                &partition_name("sighting", day),
                &partition_name("tempid_sighting", day),
            ],
        )
        .expect("look up old partitions")
        .get(0);
    assert_eq!(old_tables, 0, "dropped, not detached");
}

fn exposure(key_id: u64, venue: u32, start_s: i64, score: f64) -> ExposureRow {
    ExposureRow {
        key_id,
        venue,
        start_s,
        end_s: start_s + 1800,
        score,
        min_attenuation_db: 48,
        typical_attenuation_db: 60,
        minutes_by_bucket: [5, 10, 0, 15],
        report_type: 1,
    }
}

fn hour(venue: u32, hour_start_s: i64, max_score: f64) -> VenueHourRow {
    VenueHourRow {
        venue,
        hour_start_s,
        exposure_events: 2,
        infectious_keys: 1,
        exposure_minutes: 30,
        max_score,
        total_score: max_score * 1.5,
        co_present: 12,
    }
}

/// Exposure results: replaced whole, then one span replaced (rows outside it not written),
/// venue-hours filtered by venue, time and score, BlueTrace venue-hours joined in; match
/// watermarks move with new keys, revisions and batches and are recorded — alike.
#[test]
fn exposures_and_match_watermarks_agree() {
    let cluster = PgCluster::start();
    on_both("exposures and matching", &cluster, |s| {
        let gw = enroll(s);
        let souk = gw_venue(s, "souk-1");
        let gare = gw_venue(s, "gare");
        let nothing_yet = s.changes_since_match();
        s.import_keys(&[key(1, DAY, None, None), key(2, DAY, None, None)], "k", 1);
        s.store_batch(&batch("gw-a", 1, window(DAY, 6), 2, 0), &gw, 10);
        let changes = s.changes_since_match();
        s.set_matched(changes.watermark);
        let after_match = s.changes_since_match();
        s.import_keys(&[key(2, DAY, Some(ReportType::Recursive), None)], "k2", 50);
        s.store_batch(&batch("gw-a", 2, window(DAY, 9), 1, 0), &gw, 60);
        let after_revision = s.changes_since_match();
        let t = i64::from(DAY) * 86_400;
        s.replace_exposures(
            &[
                exposure(1, souk, t + 3600, 900.0),
                exposure(2, gare, t + 7200, 30.0),
            ],
            &[hour(souk, t + 3600, 900.0), hour(gare, t + 7200, 30.0)],
        );
        let whole = s.venue_hours(&ExposureFilter::default());
        s.replace_exposures_between(
            t + 7200,
            t + 10_800,
            &[
                exposure(1, souk, t + 3600, 1.0),
                exposure(1, gare, t + 7300, 400.0),
            ],
            &[hour(souk, t + 3600, 1.0), hour(gare, t + 7200, 400.0)],
        );
        s.replace_bluetrace_hours(&[
            VenueHour {
                venue: souk,
                hour_start_s: t + 10_800,
                cases: 1,
                contacts: 4,
            },
            VenueHour {
                venue: gare,
                hour_start_s: t + 14_400,
                cases: 2,
                contacts: 9,
            },
        ]);
        // A span replaced: the hour inside it changes, the one outside stays, and a row given
        // outside the span is not written.
        s.replace_bluetrace_hours_between(
            t + 14_400,
            t + 18_000,
            &[
                VenueHour {
                    venue: gare,
                    hour_start_s: t + 14_400,
                    cases: 1,
                    contacts: 3,
                },
                VenueHour {
                    venue: souk,
                    hour_start_s: t + 21_600,
                    cases: 5,
                    contacts: 5,
                },
            ],
        );
        let filters = [
            ExposureFilter::default(),
            ExposureFilter {
                venue: Some("gare".into()),
                ..ExposureFilter::default()
            },
            ExposureFilter {
                from_s: Some(t + 3601),
                to_s: Some(t + 10_800),
                ..ExposureFilter::default()
            },
            ExposureFilter {
                min_score: 500.0,
                ..ExposureFilter::default()
            },
        ];
        (
            nothing_yet,
            changes,
            after_match,
            after_revision,
            whole,
            filters.map(|f| s.venue_hours(&f)),
        )
    });
}

fn gw_venue(s: &mut dyn Contract, name: &str) -> u32 {
    s.venues()
        .into_iter()
        .find(|v| v.name == name)
        .expect("venue")
        .id
}

/// BlueTrace registry: cases registered (new, then changed), removed (an unknown one is an
/// error), identified-contact queries recorded with their results, counted — alike.
#[test]
fn bluetrace_cases_and_contact_queries_agree() {
    let cluster = PgCluster::start();
    let (_pg, _db, found) = on_both("BlueTrace", &cluster, |s| {
        let gw = enroll(s);
        let souk = gw_venue(s, "souk-1");
        let case = |byte: u8, from_s: i64| BluetraceCase {
            uid: Uid::from_bytes([byte; 21]),
            from_s,
            to_s: from_s + 86_400,
            label: Some(format!("file {byte}")),
            added_ms: 5,
        };
        let new = s.upsert_case(&case(1, 2000));
        let changed = s.upsert_case(&BluetraceCase {
            label: None,
            ..case(1, 1000)
        });
        s.upsert_case(&case(2, 500));
        s.upsert_case(&case(3, 700));
        s.remove_case(&Uid::from_bytes([3; 21])).expect("remove");
        let unknown = s.remove_case(&Uid::from_bytes([9; 21]));
        s.store_batch(&batch("gw-a", 1, window(DAY, 6), 0, 3), &gw, 10);
        let contact = Contact {
            venue: souk,
            case_first_s: 10,
            case_last_s: 20,
            contact: Uid::from_bytes([4; 21]),
            contact_first_s: 12,
            contact_last_s: 30,
            overlap_minutes: 8,
            max_rssi_dbm: -61,
            basis: Basis::Read,
        };
        let query = ContactQuery {
            run_ms: 99,
            operator: "nurse".into(),
            case_uid: Uid::from_bytes([1; 21]),
            from_s: 0,
            to_s: 100,
        };
        let placed = Contact {
            basis: Basis::Encounter,
            ..contact.clone()
        };
        let first = s.record_contact_query(&query, &[contact, placed]);
        let second = s.record_contact_query(&query, &[]);
        // Encounter lists: stored for a case (replacing one stored before), read back by
        // time, counted; refused for an unknown case; gone with their case.
        let record = |byte: u8, at_s: i64| EncounterRecord {
            at_s,
            tempid: TempId::from_bytes([byte; TempId::LEN]),
            org: "MAR".into(),
        };
        let one = Uid::from_bytes([1; 21]);
        let two = Uid::from_bytes([2; 21]);
        s.set_case_encounters(&one, &[record(9, 1), record(9, 2)])
            .expect("first list");
        s.set_case_encounters(&one, &[record(7, 1500), record(8, 1600), record(9, 2500)])
            .expect("replaced");
        s.set_case_encounters(&two, &[record(6, 1550)])
            .expect("list");
        let refused = s.set_case_encounters(&Uid::from_bytes([3; 21]), &[record(5, 1)]);
        let read = s.read_case_encounters(1500, 2500, None);
        let of_two = s.read_case_encounters(0, 5000, Some(&two));
        let counts = s.case_encounter_counts();
        s.remove_case(&two).expect("remove");
        (
            (new, changed),
            unknown.expect_err("no such case"),
            s.cases(),
            (first, second),
            (read, counts, refused.expect_err("no such case"), of_two),
            (s.case_encounter_counts(), s.bluetrace_counts()),
        )
    });
    let (read, counts, refused, of_two) = &found.4;
    let (one, two) = (Uid::from_bytes([1; 21]), Uid::from_bytes([2; 21]));
    let read: Vec<(Uid, i64, u8)> = read
        .iter()
        .map(|(uid, r)| (*uid, r.at_s, r.tempid.as_bytes()[0]))
        .collect();
    assert_eq!(read, [(one, 1500, 7), (one, 1600, 8), (two, 1550, 6)]);
    assert_eq!(counts, &[(one, 3), (two, 1)]);
    assert_eq!(of_two.len(), 1);
    assert_eq!((of_two[0].0, of_two[0].1.at_s), (two, 1550));
    assert!(refused.contains("no registered case"), "{refused}");
    assert_eq!(found.5.0, [(one, 3)], "gone with their case");
    assert_eq!(found.5.1.case_encounters, 3);
}

/// Two workers storing the same batch at the same moment (each its own connection): it is
/// stored once, one of them is told it is a duplicate, and its sightings are there once.
#[test]
fn concurrent_workers_store_a_batch_once() {
    let cluster = PgCluster::start();
    let db = cluster.database();
    let mut setup = PgStore::connect(&db.url).expect("connect");
    let gw = enroll(&mut setup);
    for round in 0..5u64 {
        let barrier = std::sync::Barrier::new(2);
        let outcomes: Vec<Stored> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (url, gw, barrier) = (&db.url, &gw, &barrier);
                    scope.spawn(move || {
                        let mut store = PgStore::connect(url).expect("connect worker");
                        // A new day each round: both workers also race to create its partitions.
                        let b = batch("gw-a", round + 1, window(DAY + round as u32, 3), 6, 2);
                        barrier.wait();
                        Store::store_batch(&mut store, &b, gw, 10).expect("store")
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .collect()
        });
        let mut sorted = outcomes.clone();
        sorted.sort_by_key(|o| matches!(o, Stored::Duplicate));
        assert_eq!(sorted, [Stored::New(6), Stored::Duplicate], "round {round}");
    }
    assert_eq!(Store::batch_count(&setup).expect("count"), 5);
    let n = Store::read_sightings(
        &setup,
        SightingSelection::StoredBetween {
            after: 0,
            upto: i64::MAX,
        },
        &mut |_| {},
    )
    .expect("read");
    assert_eq!(n, 5 * 6, "each batch's sightings once");
    assert_eq!(
        Store::bluetrace_counts(&setup)
            .expect("count")
            .tempid_sightings,
        5 * 2
    );
}

/// Four processes opening a new database at the same moment migrate it once: all connect,
/// one set of version rows, one schema.
#[test]
fn concurrent_opens_migrate_once() {
    let cluster = PgCluster::start();
    let db = cluster.database();
    let barrier = std::sync::Barrier::new(4);
    let migrated: Vec<Option<i64>> = std::thread::scope(|scope| {
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let (url, barrier) = (&db.url, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    PgStore::connect(url).expect("connect").migrated_from()
                })
            })
            .collect();
        openers
            .into_iter()
            .map(|o| o.join().expect("opener"))
            .collect()
    });
    // Each migration is its own transaction: an opener may find version 1 (or 2) committed by
    // another and apply the next ones itself (reported as migrated from 1 or 2); none applies
    // one twice.
    assert!(
        migrated
            .iter()
            .all(|m| m.is_none_or(|v| (1..SCHEMA_VERSION).contains(&v))),
        "{migrated:?}"
    );
    let mut client = db.client();
    let versions: Vec<i64> = client
        .query(
            "SELECT version FROM venuetrace_schema ORDER BY version",
            &[],
        )
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    let batch_tables: i64 = client
        .query_one("SELECT count(*) FROM pg_class WHERE relname = 'batch'", &[])
        .expect("catalog")
        .get(0);
    assert_eq!(batch_tables, 1);
    // And a later open finds it current.
    let again = PgStore::connect(&db.url).expect("reconnect");
    assert_eq!(again.migrated_from(), None);
}

/// Two workers storing different batches of a day no partition exists for yet, at the same
/// moment: both are stored (the second waits for the first's partitions rather than failing
/// on the catalog), into one partition per table.
#[test]
fn concurrent_workers_create_a_days_partitions_once() {
    let cluster = PgCluster::start();
    let db = cluster.database();
    let mut setup = PgStore::connect(&db.url).expect("connect");
    let gw = enroll(&mut setup);
    let mut next_sequence = 1;
    for round in 0..5u32 {
        let day = DAY + 10 + round;
        let barrier = std::sync::Barrier::new(2);
        let batches = [0, 1].map(|i| {
            next_sequence += 1;
            batch("gw-a", next_sequence, window(day, i * 50), 4, 1)
        });
        let outcomes: Vec<Stored> = std::thread::scope(|scope| {
            let workers: Vec<_> = batches
                .iter()
                .map(|b| {
                    let (url, gw, barrier) = (&db.url, &gw, &barrier);
                    scope.spawn(move || {
                        let mut store = PgStore::connect(url).expect("connect worker");
                        barrier.wait();
                        Store::store_batch(&mut store, b, gw, 10).expect("store")
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker"))
                .collect()
        });
        assert_eq!(outcomes, [Stored::New(4), Stored::New(4)], "round {round}");
    }
    let mut client = db.client();
    let partitions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'sighting'::regclass",
            &[],
        )
        .expect("catalog")
        .get(0);
    assert_eq!(partitions, 5, "one partition per day");
    assert_eq!(
        Store::day_counts(&setup).expect("count").len(),
        5,
        "every batch stored under its day"
    );
}

/// Either store can be dropped on a thread driving async tasks, as the daemon drops its store
/// at the end of its async ingest loop: the PostgreSQL client closes its connection without
/// blocking on a runtime inside the runtime (which panicked), on both runtime flavours.
#[test]
fn stores_can_be_dropped_inside_an_async_runtime() {
    let cluster = PgCluster::start();
    let db = cluster.database();
    let dir = tempfile::tempdir().expect("tempdir");
    for multi_thread in [false, true] {
        let runtime = if multi_thread {
            tokio::runtime::Builder::new_multi_thread().build()
        } else {
            tokio::runtime::Builder::new_current_thread().build()
        }
        .expect("runtime");
        let sqlite = SqliteStore::open(&dir.path().join("authority.db")).expect("open SQLite");
        let pg = PgStore::connect(&db.url).expect("connect PostgreSQL");
        let stores: Vec<Box<dyn Store + Send>> = vec![Box::new(sqlite), Box::new(pg)];
        runtime.block_on(async move { drop(stores) });
    }
    // The connections were closed: soon only the test's own is left.
    let mut client = db.client();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sessions: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
                &[],
            )
            .expect("sessions")
            .get(0);
        if sessions == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{sessions} sessions left open");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A database that is not a venuetrace store (other tables, or a newer schema) is refused,
/// not touched; a server that cannot be reached is an error naming the operation, with the
/// password redacted.
#[test]
fn foreign_newer_and_unreachable_databases_are_refused() {
    let cluster = PgCluster::start();
    let foreign = cluster.database();
    foreign
        .client()
        .batch_execute("CREATE TABLE orders (id int)")
        .expect("foreign table");
    let err = PgStore::connect(&foreign.url).expect_err("foreign database");
    assert!(
        err.to_string()
            .contains("not a venuetrace authority store (it already has other tables)"),
        "{err}"
    );

    let newer = cluster.database();
    drop(PgStore::connect(&newer.url).expect("create"));
    newer
        .client()
        .batch_execute(&format!(
            "INSERT INTO venuetrace_schema(version) VALUES ({})",
            SCHEMA_VERSION + 1
        ))
        .expect("pretend a newer program migrated it");
    let err = PgStore::connect(&newer.url).expect_err("newer schema");
    assert!(
        err.to_string().contains(&format!(
            "schema version {} is newer than this program's ({SCHEMA_VERSION})",
            SCHEMA_VERSION + 1
        )),
        "{err}"
    );

    // Port 1 on 127.0.0.1: nothing listens there.
    let err = PgStore::connect("postgres://vt:s3cret@127.0.0.1:1/vt").expect_err("unreachable");
    let message = err.to_string();
    assert_eq!(message, "store postgres://vt:***@127.0.0.1:1/vt: connect");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
}
