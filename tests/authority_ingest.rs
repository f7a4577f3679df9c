//! The authority's ingest decision for each message, against a real store (SQLite or
//! PostgreSQL, as `VENUETRACE_TEST_STORE` selects: tests/common/store.rs): good
//! batches are stored once and receipted (again on a resend), with their BlueTrace TempID
//! sightings stored encrypted as received; forged, truncated, bit-flipped, wrong-version,
//! unknown-gateway, revoked-gateway, future and expired batches are quarantined with their
//! reason, and nothing already stored is lost.

mod common;

use common::store::TestStore;
use venuetrace::advert::{Advert, ServiceUuid};
use venuetrace::aggregate::{Aggregator, AggregatorConfig};
use venuetrace::authority::ingest::{IngestLimits, Outcome, process};
use venuetrace::authority::store::{DynStore, SightingSelection};
use venuetrace::batch::{Batch, BatchId, GatewayId};
use venuetrace::bluetrace::{TempId, TempIdKey, TempIdRead, Uid};
use venuetrace::crypto::Enin;
use venuetrace::seal::{self, KeyPair};

const NOW_MS: i64 = 1_770_000_000_000;
const TOPIC: &str = "venuetrace/v1/gw/gw-a/batch";

fn batch(sequence: u64, window_start_s: i64) -> Batch {
    let mut agg = Aggregator::new(AggregatorConfig::default());
    let t0 = window_start_s as u64 * 1000;
    for i in 0..3u8 {
        let mut data = vec![i + 1; 16];
        data.extend([1, 2, 3, 4]);
        agg.observe(&Advert {
            time_ms: t0 + u64::from(i) * 1000,
            rssi: -60,
            service_data: vec![(ServiceUuid::from_u16(0xFD6F), data)],
            ..Advert::default()
        });
    }
    let window = agg.close_early().expect("window");
    Batch::from_window(
        GatewayId::new("gw-a").expect("id"),
        sequence,
        "souk-1",
        0,
        window,
    )
}

// Dropped in field order: the connection, then the test database, then the directory.
struct Fixture {
    store: DynStore,
    db: TestStore,
    _dir: tempfile::TempDir,
    authority: KeyPair,
    gateway: KeyPair,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestStore::new(dir.path());
    let mut store = db.open();
    let gateway = KeyPair::generate();
    store
        .add_gateway(
            "gw-a",
            "souk-1",
            "market",
            *gateway.public().as_bytes(),
            None,
            0,
            NOW_MS,
        )
        .expect("enroll");
    Fixture {
        store,
        db,
        _dir: dir,
        authority: KeyPair::generate(),
        gateway,
    }
}

fn recent() -> i64 {
    (NOW_MS / 1000 - 3600) / 600 * 600
}

fn quarantined(outcome: Outcome) -> String {
    match outcome {
        Outcome::Quarantined { reason, .. } => reason,
        other => panic!("expected quarantine, got {other:?}"),
    }
}

/// A good batch is stored and receipted with the tag the gateway holds; the same envelope
/// again is receipted again but stored once.
#[test]
fn stores_once_and_receipts_every_time() {
    let mut f = fixture();
    let sealed = seal::seal(&batch(1, recent()), &f.gateway, &f.authority.public()).expect("seal");
    let limits = IngestLimits::default();
    for round in 0..2 {
        match process(
            &mut *f.store,
            &f.authority,
            TOPIC,
            &sealed.envelope,
            NOW_MS,
            &limits,
        )
        .expect("store")
        {
            Outcome::Receipt {
                batch_id,
                new,
                sightings,
                topic,
                payload,
            } => {
                assert_eq!(batch_id, "gw-a:1");
                assert_eq!(new, round == 0);
                assert_eq!(sightings, if round == 0 { 3 } else { 0 });
                assert_eq!(topic, "venuetrace/v1/gw/gw-a/receipt");
                assert!(
                    payload.contains(&hex::encode(sealed.receipt_tag)),
                    "{payload}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    let status = f.store.gateway_status().expect("status");
    assert_eq!(status[0].batches, 1);
    let from = Enin((recent() / 600) as u32);
    assert_eq!(
        f.store
            .read_sightings(
                SightingSelection::Windows {
                    from,
                    to: Enin(from.0 + 1),
                    upto: i64::MAX,
                },
                &mut |_| {},
            )
            .expect("sightings"),
        3
    );
}

/// Every kind of bad message is quarantined with a reason naming the problem; the store
/// keeps what it had and goes on accepting good batches.
#[test]
fn hostile_messages_are_quarantined() {
    let mut f = fixture();
    let limits = IngestLimits::default();
    let good = seal::seal(&batch(1, recent()), &f.gateway, &f.authority.public()).expect("seal");
    assert!(matches!(
        process(
            &mut *f.store,
            &f.authority,
            TOPIC,
            &good.envelope,
            NOW_MS,
            &limits
        ),
        Ok(Outcome::Receipt { .. })
    ));

    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let forger = KeyPair::generate();
    cases.push((
        "forged",
        seal::seal(&batch(2, recent()), &forger, &f.authority.public())
            .expect("seal")
            .envelope,
        "does not open",
    ));
    cases.push((
        "truncated",
        good.envelope[..good.envelope.len() / 2].to_vec(),
        "does not open",
    ));
    let mut flipped = seal::seal(&batch(3, recent()), &f.gateway, &f.authority.public())
        .expect("seal")
        .envelope;
    let last = flipped.len() - 5;
    flipped[last] ^= 0x40;
    cases.push(("bit-flipped", flipped, "does not open"));
    cases.push(("garbage", b"hello".to_vec(), "envelope"));
    let mut v2 = batch(4, recent()).encode();
    v2[1] = 2; // field 1 (schema_version) = 2
    let wrong_version = seal::seal_raw(
        &BatchId {
            gateway: GatewayId::new("gw-a").expect("id"),
            sequence: 4,
        },
        Enin((recent() / 600) as u32),
        &v2,
        &f.gateway,
        &f.authority.public(),
    )
    .expect("seal");
    cases.push(("wrong version", wrong_version.envelope, "schema version 2"));
    let future = seal::seal(
        &batch(5, NOW_MS / 1000 + 7200),
        &f.gateway,
        &f.authority.public(),
    )
    .expect("seal");
    cases.push(("future window", future.envelope, "in the future"));
    let old = seal::seal(
        &batch(6, NOW_MS / 1000 - 30 * 86_400),
        &f.gateway,
        &f.authority.public(),
    )
    .expect("seal");
    cases.push(("expired window", old.envelope, "past retention"));
    for (what, payload, want) in cases {
        let reason = quarantined(
            process(
                &mut *f.store,
                &f.authority,
                TOPIC,
                &payload,
                NOW_MS,
                &limits,
            )
            .expect(what),
        );
        assert!(
            reason.contains(want),
            "{what}: {reason:?} should mention {want:?}"
        );
    }
    // Wrong topic for the sealed gateway id.
    let reason = quarantined(
        process(
            &mut *f.store,
            &f.authority,
            "venuetrace/v1/gw/gw-b/batch",
            &good.envelope,
            NOW_MS,
            &limits,
        )
        .expect("topic"),
    );
    assert!(reason.contains("sealed as gateway gw-a"), "{reason}");
    // Unknown gateway.
    let stranger = KeyPair::generate();
    let mut other = batch(1, recent());
    other.id.gateway = GatewayId::new("gw-x").expect("id");
    let sealed = seal::seal(&other, &stranger, &f.authority.public()).expect("seal");
    let reason = quarantined(
        process(
            &mut *f.store,
            &f.authority,
            "venuetrace/v1/gw/gw-x/batch",
            &sealed.envelope,
            NOW_MS,
            &limits,
        )
        .expect("unknown"),
    );
    assert!(reason.contains("unknown gateway gw-x"), "{reason}");
    // Revoked gateway: refused from now on.
    f.store.revoke_gateway("gw-a", NOW_MS).expect("revoke");
    let later = seal::seal(&batch(7, recent()), &f.gateway, &f.authority.public()).expect("seal");
    let reason = quarantined(
        process(
            &mut *f.store,
            &f.authority,
            TOPIC,
            &later.envelope,
            NOW_MS,
            &limits,
        )
        .expect("revoked"),
    );
    assert!(reason.contains("revoked"), "{reason}");

    assert_eq!(f.store.quarantined(100).expect("list").len(), 10);
    let status = f.store.gateway_status().expect("status");
    assert_eq!(
        status[0].batches, 1,
        "the good batch is still there, and only it"
    );
    assert!(f.store.quarantined(1).expect("list")[0].sha256.len() == 64);
}

/// A sealed batch with BlueTrace TempID reads is stored in the same transaction as its RPI
/// sightings: one TempID sighting per distinct TempID, with its organisation, its minutes and
/// the gateway's enrolled calibration, the TempID bytes exactly as received (encrypted), and
/// the batch's TempID counters. No UID appears anywhere in the database files; a resend
/// stores nothing more.
#[test]
fn tempid_sightings_are_stored_encrypted() {
    let mut f = fixture();
    f.store.revoke_gateway("gw-a", NOW_MS).expect("revoke");
    f.store
        .add_gateway(
            "gw-a",
            "souk-1",
            "market",
            *f.gateway.public().as_bytes(),
            None,
            -4,
            NOW_MS,
        )
        .expect("re-enroll with a calibration");
    let key = TempIdKey::new(&[42; 32]);
    let start = recent();
    let uids = [Uid::from_bytes([0xA1; 21]), Uid::from_bytes([0xB2; 21])];
    let tempids: Vec<TempId> = uids
        .iter()
        .enumerate()
        .map(|(i, uid)| key.encrypt(uid, start as i32, start as i32 + 900, &[i as u8; 16]))
        .collect();
    let mut agg = Aggregator::new(AggregatorConfig::default());
    let t0 = start as u64 * 1000;
    let mut data = vec![9; 16];
    data.extend([1, 2, 3, 4]);
    agg.observe(&Advert {
        time_ms: t0,
        rssi: -60,
        service_data: vec![(ServiceUuid::from_u16(0xFD6F), data)],
        ..Advert::default()
    });
    for (at_s, tempid, rssi) in [(10, 0, -70), (130, 0, -64), (200, 1, -80)] {
        agg.observe(&Advert {
            time_ms: t0 + at_s * 1000,
            rssi,
            tempid_read: Some(TempIdRead {
                tempid: tempids[tempid],
                org: "MAR".into(),
            }),
            ..Advert::default()
        });
    }
    let window = agg.close_early().expect("window");
    let batch = Batch::from_window(GatewayId::new("gw-a").expect("id"), 1, "souk-1", 0, window);
    assert_eq!(batch.tempids.len(), 2);
    let sealed = seal::seal(&batch, &f.gateway, &f.authority.public()).expect("seal");
    let limits = IngestLimits::default();
    for _ in 0..2 {
        assert!(matches!(
            process(
                &mut *f.store,
                &f.authority,
                TOPIC,
                &sealed.envelope,
                NOW_MS,
                &limits
            ),
            Ok(Outcome::Receipt { .. })
        ));
    }

    let from = Enin((start / 600) as u32);
    let mut stored = Vec::new();
    let n = f
        .store
        .read_tempid_sightings(from, Enin(from.0 + 1), &mut |row| {
            stored.push((
                row.tempid,
                row.org.to_owned(),
                row.rssi_calibration_db,
                row.minutes()
                    .map(|m| (m.minute, m.count, m.max))
                    .collect::<Vec<_>>(),
            ));
        })
        .expect("read");
    assert_eq!(n, 2, "one row per TempID, the resend stored nothing");
    let mut expected = vec![
        (
            Some(tempids[0]),
            "MAR".to_owned(),
            -4,
            vec![(0, 1, -70), (2, 1, -64)],
        ),
        (Some(tempids[1]), "MAR".to_owned(), -4, vec![(3, 1, -80)]),
    ];
    expected.sort_by_key(|e| e.0);
    stored.sort_by_key(|e| e.0);
    assert_eq!(stored, expected);
    assert_eq!(
        f.store.bluetrace_counts().expect("counts").tempid_sightings,
        2
    );

    let counters_sql = "SELECT bluetrace_reads, bluetrace_reads_dropped, tempids FROM batch";
    let counters: (i64, i64, i64) = if f.db.is_postgres() {
        let mut client =
            postgres::Client::connect(&f.db.database, postgres::NoTls).expect("connect");
        let row = client.query_one(counters_sql, &[]).expect("batch row");
        (row.get(0), row.get(1), row.get(2))
    } else {
        let conn = rusqlite::Connection::open(&f.db.database).expect("open");
        conn.query_row(counters_sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("batch row")
    };
    assert_eq!(counters, (3, 0, 2));
    if f.db.is_postgres() {
        // The byte scan below is of the SQLite file and its write-ahead log (SQLite only);
        // that PostgreSQL gives back the TempIDs exactly as SQLite does is
        // tests/store_contract.rs's `read_tempid_sightings` comparison.
        return;
    }
    // The database and its write-ahead log hold the TempIDs as received and no UID.
    let mut bytes = Vec::new();
    for file in [f.db.database.clone(), format!("{}-wal", f.db.database)] {
        bytes.extend(std::fs::read(file).unwrap_or_default());
    }
    for uid in &uids {
        assert!(
            !bytes.windows(21).any(|w| w == uid.as_bytes()),
            "a UID is stored"
        );
    }
    for tempid in &tempids {
        assert!(
            bytes.windows(TempId::LEN).any(|w| w == tempid.as_bytes()),
            "a TempID is not stored as received"
        );
    }
}
