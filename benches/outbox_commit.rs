//! G3: committing sealed batches to the gateway's SQLite outbox, against raw SQLite inserts of
//! the same bytes with the same durability settings (WAL, synchronous=FULL), in the same run.
//!
//! - `outbox_commit`: `Outbox::commit_window`, one transaction per batch (what the gateway does
//!   at each window close: batch row, counters, next sequence).
//! - `raw_insert_per_txn`: `INSERT INTO t(seq, envelope)` in its own transaction: the floor for
//!   the same durability.
//! - `raw_insert_bulk`: the same inserts, 100 per transaction (a bulk load: fewer fsyncs; no
//!   gateway could do this without holding windows back).
//!
//! The envelope is a real sealed batch of 200 sightings. Run: `cargo bench --bench
//! outbox_commit`; results in docs/performance.md (scripts/bench prints the ratios).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use venuetrace::aggregate::{Counters, MinuteRssi, Sighting, Window};
use venuetrace::batch::{Batch, GatewayId};
use venuetrace::crypto::{Aem, Enin, Rpi};
use venuetrace::gateway::outbox::{NewBatch, Outbox, OutboxOptions, WindowCounters};
use venuetrace::seal::{KeyPair, seal};

fn envelope() -> Vec<u8> {
    let sightings = (0..200u32)
        .map(|i| {
            let mut rpi = [0u8; 16];
            rpi[..4].copy_from_slice(&i.to_be_bytes());
            Sighting {
                rpi: Rpi::from_bytes(rpi),
                aem: Aem::from_bytes([1, 2, 3, 4]),
                first_minute: 0,
                last_minute: 4,
                reports: 5,
                minutes: (0..5)
                    .map(|m| MinuteRssi {
                        minute: m,
                        count: 1,
                        min: -70,
                        mean: -70,
                        max: -70,
                    })
                    .collect(),
            }
        })
        .collect();
    let counters = Counters {
        adverts: 1000,
        gaen: 1000,
        ..Counters::default()
    };
    let window = Window {
        start: Enin(2_950_000),
        intervals: 1,
        closed_early: false,
        counters,
        sightings,
        tempids: Vec::new(),
    };
    let batch = Batch::from_window(
        GatewayId::new("gw-bench").expect("id"),
        1,
        "souk-1",
        0,
        window,
    );
    seal(&batch, &KeyPair::generate(), &KeyPair::generate().public())
        .expect("seal")
        .envelope
}

fn raw_db(dir: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("raw.sqlite")).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE t (seq INTEGER PRIMARY KEY, envelope BLOB NOT NULL);",
    )
    .expect("schema");
    conn
}

fn outbox_commit(c: &mut Criterion) {
    let envelope = envelope();
    eprintln!(
        "outbox_commit: envelope of 200 sightings = {} bytes",
        envelope.len()
    );
    let mut group = c.benchmark_group("outbox_commit");
    group.throughput(Throughput::Elements(1));
    group.sample_size(50);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut outbox =
        Outbox::open(&dir.path().join("outbox.sqlite"), OutboxOptions::default()).expect("outbox");
    let counters = WindowCounters {
        adverts: 1000,
        sightings: 200,
        ..WindowCounters::default()
    };
    let mut sequence = 1u64;
    group.bench_function("outbox_commit", |b| {
        b.iter_batched(
            || {
                let batch = NewBatch {
                    sequence,
                    batch_id: format!("gw-bench:{sequence}"),
                    window_start_unix_s: 1_770_000_000,
                    created_unix_ms: 1_770_000_000_000,
                    envelope: envelope.clone(),
                    receipt_tag: [7; 32],
                };
                sequence += 1;
                batch
            },
            |batch| outbox.commit_window(&batch, &counters).expect("commit"),
            BatchSize::SmallInput,
        )
    });

    let raw_dir = tempfile::tempdir().expect("tempdir");
    let mut raw = raw_db(raw_dir.path());
    let mut seq = 0i64;
    group.bench_function("raw_insert_per_txn", |b| {
        b.iter(|| {
            seq += 1;
            let tx = raw.transaction().expect("begin");
            tx.execute(
                "INSERT INTO t(seq, envelope) VALUES (?1, ?2)",
                rusqlite::params![seq, &envelope],
            )
            .expect("insert");
            tx.commit().expect("commit");
        })
    });

    group.throughput(Throughput::Elements(100));
    let bulk_dir = tempfile::tempdir().expect("tempdir");
    let mut bulk = raw_db(bulk_dir.path());
    let mut seq = 0i64;
    group.bench_function("raw_insert_bulk", |b| {
        b.iter(|| {
            let tx = bulk.transaction().expect("begin");
            {
                let mut stmt = tx
                    .prepare_cached("INSERT INTO t(seq, envelope) VALUES (?1, ?2)")
                    .expect("prepare");
                for _ in 0..100 {
                    seq += 1;
                    stmt.execute(rusqlite::params![seq, &envelope])
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
        })
    });
    group.finish();
}

criterion_group!(benches, outbox_commit);
criterion_main!(benches);
