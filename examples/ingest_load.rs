//! M4: authority ingest throughput — sealed batches of 200 sightings from many gateways,
//! published as fast as possible to a local Mosquitto, opened, validated, stored and
//! receipted by `venuetrace::authority::ingest::run`. Reports batches/s from the first publish
//! to the last receipt (issue 6 target: ≥ 1,000 batches/s on SQLite; issue 10: ≥ 2,000 with
//! two workers on PostgreSQL), then checks that the store holds every batch exactly once.
//!
//! The store is a SQLite file in a temporary directory, or the PostgreSQL database
//! `--database URL` names (it should be empty). `--workers N` runs N `ingest::run` instances,
//! each with its own store connection and MQTT client id, in the same share group: the broker
//! splits the batches between them, as between several `venuetrace-authority run` processes.
//!
//! Run: `scripts/bench-ingest` (starts a private Mosquitto, and a private PostgreSQL for
//! `--postgres`), or `cargo run --release --example ingest_load -- --port PORT
//! [--batches 5000] [--gateways 50] [--database postgres://...] [--workers 1]`.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use venuetrace::aggregate::{Counters, MinuteRssi, Sighting, Window};
use venuetrace::authority::ingest::{self, IngestLimits};
use venuetrace::authority::pg::PgStore;
use venuetrace::authority::store::{DynStore, SqliteStore};
use venuetrace::batch::{Batch, GatewayId};
use venuetrace::crypto::{Aem, Enin, Rpi};
use venuetrace::gateway::publisher::MqttSettings;
use venuetrace::seal::{KeyPair, seal};

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A new connection to the benchmark's store. The `postgres` client blocks on a runtime of
/// its own, so store calls (and drops) outside `ingest::run`'s blocking tasks go through
/// `block_in_place`.
fn open(database: &str, sqlite: &std::path::Path) -> DynStore {
    tokio::task::block_in_place(|| -> DynStore {
        if database.is_empty() {
            Box::new(SqliteStore::open(sqlite).expect("SQLite store"))
        } else {
            Box::new(PgStore::connect(database).expect("PostgreSQL store"))
        }
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    venuetrace::process::init_logging("warn", venuetrace::config_schema::LogFormat::Text);
    let port: u16 = arg("--port", 1883);
    let batches: u64 = arg("--batches", 5000);
    let gateways: u64 = arg("--gateways", 50);
    let workers: usize = arg("--workers", 1).max(1);
    let database: String = arg("--database", String::new());
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = dir.path().join("authority.sqlite");
    let kind = if database.is_empty() {
        "SQLite"
    } else {
        "PostgreSQL"
    };
    let mut store = open(&database, &sqlite);
    let authority = KeyPair::generate();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let first_enin = (now_s / 600) as u32 - 144;
    let keys: Vec<KeyPair> = (0..gateways).map(|_| KeyPair::generate()).collect();
    tokio::task::block_in_place(|| {
        assert_eq!(
            store.batch_count().expect("count"),
            0,
            "the benchmark wants an empty store"
        );
        for (g, key) in keys.iter().enumerate() {
            store
                .add_gateway(
                    &format!("gw-{g}"),
                    &format!("venue-{g}"),
                    "market",
                    *key.public().as_bytes(),
                    None,
                    0,
                    0,
                )
                .expect("enroll");
        }
    });
    eprintln!("ingest_load: sealing {batches} batches of 200 sightings from {gateways} gateways");
    let envelopes: Vec<(String, Vec<u8>)> = (0..batches)
        .map(|i| {
            let g = i % gateways;
            let sequence = i / gateways + 1;
            let sightings = (0..200u32)
                .map(|s| {
                    let mut rpi = [0u8; 16];
                    rpi[..8].copy_from_slice(&i.to_le_bytes());
                    rpi[8..12].copy_from_slice(&s.to_le_bytes());
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
                .collect::<Vec<_>>();
            let mut sightings = sightings;
            sightings.sort_by_key(|s| s.rpi);
            let counters = Counters {
                adverts: 1000,
                gaen: 1000,
                ..Counters::default()
            };
            let window = Window {
                start: Enin(first_enin + (sequence as u32 % 140)),
                intervals: 1,
                closed_early: false,
                counters,
                sightings,
                tempids: Vec::new(),
            };
            let batch = Batch::from_window(
                GatewayId::new(&format!("gw-{g}")).expect("id"),
                sequence,
                &format!("venue-{g}"),
                0,
                window,
            );
            let sealed = seal(&batch, &keys[g as usize], &authority.public()).expect("seal");
            (format!("venuetrace/v1/gw/gw-{g}/batch"), sealed.envelope)
        })
        .collect();

    // Worker 0 keeps the connection that enrolled the gateways; the others open their own.
    let mut stores = vec![store];
    stores.extend((1..workers).map(|_| open(&database, &sqlite)));
    // Kept here, so that the connections are dropped outside the runtime's tasks.
    let stores: Vec<Arc<Mutex<DynStore>>> = stores
        .into_iter()
        .map(|store| Arc::new(Mutex::new(store)))
        .collect();
    let shutdown = CancellationToken::new();
    let ingests: Vec<_> = stores
        .iter()
        .cloned()
        .enumerate()
        .map(|(w, store)| {
            let settings = MqttSettings {
                host: "127.0.0.1".into(),
                port,
                client_id: format!("ingest-load-authority-{w}"),
                tls: None,
                credentials: None,
                keep_alive: Duration::from_secs(30),
                max_packet_bytes: 32 << 20,
            };
            let (shutdown, authority) = (shutdown.clone(), authority.clone());
            tokio::spawn(async move {
                ingest::run(
                    &settings,
                    "load",
                    authority,
                    store,
                    IngestLimits::default(),
                    shutdown,
                )
                .await
            })
        })
        .collect();

    // Count receipts as gateways would see them.
    let receipts = Arc::new(AtomicU64::new(0));
    let mut options = MqttOptions::new("ingest-load-receipts", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (rclient, mut rloop) = AsyncClient::new(options, 64);
    rclient
        .subscribe("venuetrace/v1/gw/+/receipt", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let counter = Arc::clone(&receipts);
    tokio::spawn(async move {
        loop {
            match rloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await; // subscriptions in place

    let mut options = MqttOptions::new("ingest-load-gateways", "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(32 << 20, 32 << 20)
        .set_inflight(200);
    let (pclient, mut ploop) = AsyncClient::new(options, 1024);
    tokio::spawn(async move {
        loop {
            if ploop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let started = Instant::now();
    for (topic, envelope) in envelopes {
        pclient
            .publish(topic, QoS::AtLeastOnce, false, envelope)
            .await
            .expect("publish");
    }
    let deadline = started + Duration::from_secs(300);
    eprintln!(
        "ingest_load: published {batches} batches in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let mut last_report = Instant::now();
    while receipts.load(Ordering::Relaxed) < batches && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "ingest_load: {} receipts after {:.0} s",
                receipts.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let (mut stored, mut duplicates, mut quarantined, mut per_worker) = (0, 0, 0, Vec::new());
    for ingest in ingests {
        let report = ingest.await.expect("join").expect("ingest");
        stored += report.stored;
        duplicates += report.duplicates;
        quarantined += report.quarantined;
        per_worker.push(report.stored);
    }
    let got = receipts.load(Ordering::Relaxed);
    // Every batch exactly once in the store, whichever worker stored it.
    let in_store = tokio::task::block_in_place(|| {
        drop(stores);
        open(&database, &sqlite).batch_count().expect("count")
    });
    println!(
        "M4 ingest ({kind}, {workers} worker(s)): {got}/{batches} batches stored and receipted in {elapsed:.2} s = {:.0} batches/s ({:.0} sightings/s); stored {stored} {per_worker:?}, duplicates {duplicates}, quarantined {quarantined}; batches in the store {in_store}",
        got as f64 / elapsed,
        got as f64 * 200.0 / elapsed,
    );
    if got < batches || in_store != batches || stored != batches {
        eprintln!("ingest_load: FAILED: every batch must be receipted and stored exactly once");
        std::process::exit(1);
    }
}
