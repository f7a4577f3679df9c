//! M4: authority ingest throughput — sealed batches of 200 sightings from many gateways,
//! published as fast as possible to a local Mosquitto, opened, validated, stored in SQLite and
//! receipted by `venuetrace::authority::ingest::run`. Reports batches/s from the first publish
//! to the last receipt (issue 6 target: ≥ 1,000 batches/s).
//!
//! Run: `scripts/bench-ingest` (starts a private Mosquitto), or
//! `cargo run --release --example ingest_load -- --port PORT [--batches 5000] [--gateways 50]`.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use venuetrace::aggregate::{Counters, MinuteRssi, Sighting, Window};
use venuetrace::authority::ingest::{self, IngestLimits};
use venuetrace::authority::store::{SqliteStore, Store};
use venuetrace::batch::{Batch, GatewayId};
use venuetrace::crypto::{Aem, Enin, Rpi};
use venuetrace::gateway::publisher::MqttSettings;
use venuetrace::seal::{KeyPair, seal};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    venuetrace::process::init_logging("warn", venuetrace::config_schema::LogFormat::Text);
    let port = arg("--port", 1883) as u16;
    let batches = arg("--batches", 5000);
    let gateways = arg("--gateways", 50);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(&dir.path().join("authority.sqlite")).expect("store");
    let authority = KeyPair::generate();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let first_enin = (now_s / 600) as u32 - 144;
    let keys: Vec<KeyPair> = (0..gateways).map(|_| KeyPair::generate()).collect();
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

    let store: Arc<Mutex<venuetrace::authority::store::DynStore>> =
        Arc::new(Mutex::new(Box::new(store)));
    let shutdown = CancellationToken::new();
    let settings = MqttSettings {
        host: "127.0.0.1".into(),
        port,
        client_id: "ingest-load-authority".into(),
        tls: None,
        credentials: None,
        keep_alive: Duration::from_secs(30),
        max_packet_bytes: 32 << 20,
    };
    let ingest = {
        let (store, shutdown, authority) =
            (Arc::clone(&store), shutdown.clone(), authority.clone());
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
    };

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
    let report = ingest.await.expect("join").expect("ingest");
    let got = receipts.load(Ordering::Relaxed);
    println!(
        "M4 ingest: {got}/{batches} batches stored and receipted in {elapsed:.2} s = {:.0} batches/s ({:.0} sightings/s); stored {}, duplicates {}, quarantined {}",
        got as f64 / elapsed,
        got as f64 * 200.0 / elapsed,
        report.stored,
        report.duplicates,
        report.quarantined
    );
    if got < batches {
        std::process::exit(1);
    }
}
