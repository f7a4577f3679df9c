//! Issue 10: fleet load — the traffic of a whole fleet of gateways (default 10,000) through a
//! local Mosquitto into the authority's real ingest (`venuetrace::authority::ingest::run` on a
//! `SqliteStore`, as `examples/ingest_load.rs` drives it), with receipts, in two phases:
//!
//! 1. **steady**: every gateway seals one batch per 10-minute window (real `Batch`, real
//!    `seal`, `--sightings` sightings, sequences from 1) and publishes it at a uniformly random
//!    moment of the window. Time is compressed: a window lasts `--window-seconds` real seconds
//!    (default 6 s, 100× faster than life), so the offered rate is 100× the real one
//!    (10,000 gateways: 1,667 batches/s here for 16.7 batches/s in life). At each window end
//!    the backlog (published, not yet receipted) says whether the authority kept up. On the
//!    2-core reference machine 100× is more than the SQLite ingest drains (an overload test);
//!    `--window-seconds 12` (50×) is the steady-state one (docs/performance.md).
//! 2. **outage burst**: the broker is "down" for `--outage-windows` windows (default 6 = one
//!    hour): gateways keep those batches in their outboxes, then all publish them at once when
//!    it is back (60,000 batches for 10,000 gateways). The drain time is the time from the
//!    burst to the last receipt.
//!
//! The gateways share `--connections` MQTT connections (default 50) rather than one socket each:
//! 10,000 sockets for the gateways plus as many in the broker would pass the file-descriptor
//! limits of a test box (`ulimit -n`, Mosquitto's own), and the authority's load is the same —
//! it sees one shared subscription and the same messages either way. What is not modelled is
//! the broker's per-connection cost (keep-alives, 10,000 sessions), which is the broker's
//! concern, not the authority's.
//!
//! Sealing is not what is measured: each steady window is sealed one window ahead on a blocking
//! thread (the outage batches during the outage), timed, and reported separately. Memory stays
//! bounded by two windows of envelopes in the steady phase and by the outage's batches (what the
//! outboxes hold) in the burst.
//!
//! The publish time of a batch is when its connection's client takes it (a gateway's outbox
//! hands it to rumqttc); its receipt time is when the receipt, matched by the batch id in its
//! JSON, reaches a subscriber on `venuetrace/v1/gw/+/receipt`. Gateways' resends (a batch
//! without a receipt after `mqtt.resend_initial_seconds`) are not modelled. Exits 1 if a
//! batch has no receipt by `--deadline-seconds` after the burst, 2 if the ingest failed.
//!
//! Run: `scripts/bench-fleet` (starts a private Mosquitto; extra arguments come here), or
//! `cargo run --release --example fleet_load -- --port PORT [--gateways 10000] [--json]`.
//! `--database postgres://...` stores in PostgreSQL (an empty database) instead of a SQLite
//! file; `--workers N` runs N `ingest::run` instances, each with its own store connection and
//! MQTT client id, in one share group (`scripts/bench-fleet --postgres` starts a private
//! PostgreSQL and passes its URL).

use clap::Parser;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
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
use venuetrace::gateway::publisher::{MqttSettings, ReceiptMessage};
use venuetrace::seal::{KeyPair, PublicKey, seal};

/// Fleet load generator: gateways' batches through Mosquitto into the authority's ingest.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Broker port (127.0.0.1).
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Gateways in the fleet.
    #[arg(long, default_value_t = 10_000)]
    gateways: usize,
    /// Sightings per batch.
    #[arg(long, default_value_t = 50)]
    sightings: u32,
    /// Real seconds one 10-minute window lasts (6 = 100× faster than life).
    #[arg(long, default_value_t = 6.0)]
    window_seconds: f64,
    /// Windows of the steady phase.
    #[arg(long, default_value_t = 5)]
    windows: u64,
    /// Windows the broker is down before the burst (6 = one hour).
    #[arg(long, default_value_t = 6)]
    outage_windows: u64,
    /// MQTT connections the gateways share.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Seconds after the burst by which every batch must be receipted.
    #[arg(long, default_value_t = 600)]
    deadline_seconds: u64,
    /// Seed of the publish moments and sighting shapes.
    #[arg(long, default_value_t = 10)]
    seed: u64,
    /// Also print one JSON line with every figure.
    #[arg(long)]
    json: bool,
    /// PostgreSQL connection URL of an empty database (default: a SQLite file in a temporary
    /// directory).
    #[arg(long, default_value = "")]
    database: String,
    /// Ingest workers: `ingest::run` instances with their own store connections, one share
    /// group.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

/// A new connection to the store. The `postgres` client blocks on a runtime of its own, so
/// store calls (and drops) outside the ingest's blocking tasks go through `block_in_place`.
fn open(database: &str, sqlite: &std::path::Path) -> DynStore {
    tokio::task::block_in_place(|| -> DynStore {
        if database.is_empty() {
            Box::new(SqliteStore::open(sqlite).expect("SQLite store"))
        } else {
            Box::new(PgStore::connect(database).expect("PostgreSQL store"))
        }
    })
}

/// One sealed batch, ready for its gateway's connection.
struct Outgoing {
    gateway: usize,
    sequence: u64,
    topic: String,
    envelope: Vec<u8>,
}

/// Per batch: when it was published and receipted (µs since `origin`, + 1 so that 0 = not yet).
struct Ledger {
    origin: Instant,
    per_gateway: u64,
    published_us: Vec<AtomicU64>,
    receipted_us: Vec<AtomicU64>,
    published: AtomicU64,
    receipted: AtomicU64,
    duplicate_receipts: AtomicU64,
    unknown_receipts: AtomicU64,
}

impl Ledger {
    fn new(gateways: usize, per_gateway: u64) -> Self {
        let n = gateways * per_gateway as usize;
        Self {
            origin: Instant::now(),
            per_gateway,
            published_us: (0..n).map(|_| AtomicU64::new(0)).collect(),
            receipted_us: (0..n).map(|_| AtomicU64::new(0)).collect(),
            published: AtomicU64::new(0),
            receipted: AtomicU64::new(0),
            duplicate_receipts: AtomicU64::new(0),
            unknown_receipts: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64 + 1
    }

    fn slot(&self, gateway: usize, sequence: u64) -> usize {
        gateway * self.per_gateway as usize + (sequence - 1) as usize
    }

    fn mark_published(&self, gateway: usize, sequence: u64) {
        self.published_us[self.slot(gateway, sequence)].store(self.now_us(), Ordering::Relaxed);
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a receipt for `gw-{g}:{sequence}`.
    fn mark_receipted(&self, batch_id: &str) {
        let parsed = batch_id
            .strip_prefix("gw-")
            .and_then(|rest| rest.rsplit_once(':'))
            .and_then(|(g, s)| Some((g.parse::<usize>().ok()?, s.parse::<u64>().ok()?)))
            .filter(|&(g, s)| {
                s >= 1 && s <= self.per_gateway && g * (self.per_gateway as usize) < self.len()
            });
        let Some((g, s)) = parsed else {
            self.unknown_receipts.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let slot = &self.receipted_us[self.slot(g, s)];
        if slot
            .compare_exchange(0, self.now_us(), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.receipted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicate_receipts.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn len(&self) -> usize {
        self.published_us.len()
    }

    fn backlog(&self) -> u64 {
        self.published.load(Ordering::Relaxed) - self.receipted.load(Ordering::Relaxed)
    }

    /// Figures over the batches whose sequence is in `sequences`.
    fn phase(&self, sequences: std::ops::RangeInclusive<u64>) -> PhaseFigures {
        let mut latencies = Vec::new();
        let (mut published, mut first_publish, mut last_publish, mut last_receipt) =
            (0u64, u64::MAX, 0u64, 0u64);
        for slot in 0..self.len() {
            let sequence = (slot as u64 % self.per_gateway) + 1;
            if !sequences.contains(&sequence) {
                continue;
            }
            let p = self.published_us[slot].load(Ordering::Relaxed);
            if p == 0 {
                continue;
            }
            published += 1;
            first_publish = first_publish.min(p);
            last_publish = last_publish.max(p);
            let r = self.receipted_us[slot].load(Ordering::Relaxed);
            if r != 0 {
                latencies.push(r.saturating_sub(p));
                last_receipt = last_receipt.max(r);
            }
        }
        latencies.sort_unstable();
        let pct = |q: f64| -> f64 {
            if latencies.is_empty() {
                return f64::NAN;
            }
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i] as f64 / 1000.0
        };
        PhaseFigures {
            published,
            receipted: latencies.len() as u64,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
            first_publish_s: first_publish as f64 / 1e6,
            last_publish_s: last_publish as f64 / 1e6,
            last_receipt_s: last_receipt as f64 / 1e6,
        }
    }
}

/// Latency and timing of one phase (times in s since the ledger's origin).
#[derive(Debug, Clone, Copy)]
struct PhaseFigures {
    published: u64,
    receipted: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    first_publish_s: f64,
    last_publish_s: f64,
    last_receipt_s: f64,
}

/// The batch gateway `g` seals for its window `sequence` (sightings shaped like visits: 1–5
/// minutes, one report a minute).
fn batch_for(g: usize, sequence: u64, start: Enin, sightings: u32, rng: &mut ChaCha8Rng) -> Batch {
    let mut list: Vec<Sighting> = (0..sightings)
        .map(|s| {
            let mut rpi = [0u8; 16];
            rpi[..4].copy_from_slice(&(g as u32).to_le_bytes());
            rpi[4..8].copy_from_slice(&(sequence as u32).to_le_bytes());
            rpi[8..12].copy_from_slice(&s.to_le_bytes());
            rpi[12..].copy_from_slice(&rng.random::<u32>().to_le_bytes());
            let first: u8 = rng.random_range(0..6);
            let last = first + rng.random_range(0..5u8);
            let rssi = -55 - rng.random_range(0..30) as i8;
            Sighting {
                rpi: Rpi::from_bytes(rpi),
                aem: Aem::from_bytes([0x40, 0xf4, 0, 0]),
                first_minute: first,
                last_minute: last,
                reports: u32::from(last - first) + 1,
                minutes: (first..=last)
                    .map(|minute| MinuteRssi {
                        minute,
                        count: 1,
                        min: rssi,
                        mean: rssi,
                        max: rssi,
                    })
                    .collect(),
            }
        })
        .collect();
    list.sort_by_key(|s| s.rpi);
    let reports: u64 = list.iter().map(|s| u64::from(s.reports)).sum();
    let window = Window {
        start,
        intervals: 1,
        closed_early: false,
        counters: Counters {
            adverts: reports,
            gaen: reports,
            ..Counters::default()
        },
        sightings: list,
        tempids: Vec::new(),
    };
    Batch::from_window(
        GatewayId::new(&format!("gw-{g}")).expect("gw-N is a valid gateway id"),
        sequence,
        &format!("venue-{g}"),
        0,
        window,
    )
}

/// Seals every gateway's batch of window `sequence`, split by connection (gateway g uses
/// connection g mod n). Blocking: run it on a blocking thread. Returns the time it took.
fn seal_window(
    keys: &[KeyPair],
    authority: &PublicKey,
    sequence: u64,
    start: Enin,
    sightings: u32,
    connections: usize,
    seed: u64,
) -> (Vec<Vec<Outgoing>>, Duration) {
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ sequence.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut out: Vec<Vec<Outgoing>> = (0..connections).map(|_| Vec::new()).collect();
    for (g, key) in keys.iter().enumerate() {
        let batch = batch_for(g, sequence, start, sightings, &mut rng);
        let sealed = seal(&batch, key, authority).expect("sealing a well-formed batch");
        out[g % connections].push(Outgoing {
            gateway: g,
            sequence,
            topic: format!("venuetrace/v1/gw/gw-{g}/batch"),
            envelope: sealed.envelope,
        });
    }
    (out, started.elapsed())
}

/// Publishes `items` on `client`, each at `start + offset` (steady) or at once (burst: all
/// offsets zero), marking each in the ledger as it is handed over.
async fn publish_all(
    client: AsyncClient,
    items: Vec<(Duration, Outgoing)>,
    start: tokio::time::Instant,
    ledger: Arc<Ledger>,
) {
    for (offset, item) in items {
        tokio::time::sleep_until(start + offset).await;
        // Marked before the handover, so a fast receipt never finds it unpublished.
        ledger.mark_published(item.gateway, item.sequence);
        client
            .publish(item.topic, QoS::AtLeastOnce, false, item.envelope)
            .await
            .expect("the publisher's event loop runs until the end");
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn mqtt_options(client_id: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(60))
        .set_max_packet_size(32 << 20, 32 << 20);
    options
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    venuetrace::process::init_logging("warn", venuetrace::config_schema::LogFormat::Text);
    let a = Args::parse();
    assert!(a.gateways > 0 && a.connections > 0 && a.windows > 0 && a.window_seconds > 0.0);
    let connections = a.connections.min(a.gateways);
    let per_gateway = a.windows + a.outage_windows;
    let window = Duration::from_secs_f64(a.window_seconds);
    eprintln!(
        "fleet_load: {} gateways on {connections} connections, {} sightings a batch, {} steady + {} outage windows of {:.1} s; load {}",
        a.gateways,
        a.sightings,
        a.windows,
        a.outage_windows,
        a.window_seconds,
        loadavg()
    );

    // Enrollment: one autocommit transaction per gateway, as `gateways add` does.
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = dir.path().join("authority.sqlite");
    let mut store = open(&a.database, &sqlite);
    let authority = KeyPair::generate();
    let keys: Vec<KeyPair> = (0..a.gateways).map(|_| KeyPair::generate()).collect();
    let enroll_started = Instant::now();
    tokio::task::block_in_place(|| {
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
    let enroll_s = enroll_started.elapsed().as_secs_f64();
    eprintln!(
        "fleet_load: enrolled {} gateways in {enroll_s:.2} s",
        a.gateways
    );

    // Simulated windows are real ENINs in the recent past (so none is "in the future" for
    // the ingest's validation), one per sequence.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let first_enin = (now_s / 600) as u32 - per_gateway as u32 - 1;
    let enin_of = move |sequence: u64| Enin(first_enin + sequence as u32 - 1);
    let keys = Arc::new(keys);
    let authority_public = authority.public();
    let seal_job = {
        let (keys, authority_public) = (Arc::clone(&keys), authority_public);
        let (sightings, seed) = (a.sightings, a.seed);
        move |sequence: u64| {
            let (keys, authority_public) = (Arc::clone(&keys), authority_public);
            tokio::task::spawn_blocking(move || {
                seal_window(
                    &keys,
                    &authority_public,
                    sequence,
                    enin_of(sequence),
                    sightings,
                    connections,
                    seed,
                )
            })
        }
    };
    let mut seal_times: Vec<Duration> = Vec::new();
    let (mut current, took) = seal_job(1).await.expect("seal");
    seal_times.push(took);
    let envelope_bytes = current
        .iter()
        .flatten()
        .map(|o| o.envelope.len())
        .sum::<usize>() as f64
        / a.gateways as f64;
    eprintln!(
        "fleet_load: sealed window 1 in {:.2} s ({:.0} batches/s), {envelope_bytes:.0} bytes a batch",
        took.as_secs_f64(),
        a.gateways as f64 / took.as_secs_f64()
    );

    // The authority.
    // Worker 0 keeps the connection that enrolled the gateways; the others open their own.
    // Kept here, so that the connections are dropped outside the runtime's tasks.
    let mut stores = vec![store];
    stores.extend((1..a.workers.max(1)).map(|_| open(&a.database, &sqlite)));
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
                port: a.port,
                client_id: if w == 0 {
                    "fleet-load-authority".into()
                } else {
                    format!("fleet-load-authority-{w}")
                },
                tls: None,
                credentials: None,
                keep_alive: Duration::from_secs(30),
                max_packet_bytes: 32 << 20,
            };
            let (shutdown, authority) = (shutdown.clone(), authority.clone());
            tokio::spawn(async move {
                ingest::run(
                    &settings,
                    "fleet",
                    authority,
                    store,
                    IngestLimits::default(),
                    shutdown,
                )
                .await
            })
        })
        .collect();

    // Receipts, as the gateways would see them.
    let ledger = Arc::new(Ledger::new(a.gateways, per_gateway));
    let stop = CancellationToken::new();
    let (rclient, mut rloop) = AsyncClient::new(mqtt_options("fleet-load-receipts", a.port), 64);
    rclient
        .subscribe("venuetrace/v1/gw/+/receipt", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let subscribed = Arc::new(tokio::sync::Notify::new());
    {
        let (ledger, stop, subscribed) = (Arc::clone(&ledger), stop.clone(), subscribed.clone());
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => break,
                    event = rloop.poll() => event,
                };
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        match serde_json::from_slice::<ReceiptMessage>(&p.payload) {
                            Ok(receipt) => ledger.mark_receipted(&receipt.batch_id),
                            Err(_) => {
                                ledger.unknown_receipts.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => subscribed.notify_one(),
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("fleet_load: receipt subscriber: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
        .await
        .expect("receipt subscription acknowledged within 10 s");

    // The gateways' shared connections. Each event loop is polled in its own task.
    let clients: Vec<AsyncClient> = (0..connections)
        .map(|c| {
            let mut options = mqtt_options(&format!("fleet-load-gw-{c}"), a.port);
            options.set_inflight(100);
            let (client, mut eventloop) = AsyncClient::new(options, 256);
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let event = tokio::select! {
                        () = stop.cancelled() => break,
                        event = eventloop.poll() => event,
                    };
                    if let Err(e) = event {
                        eprintln!("fleet_load: gateway connection {c}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            });
            client
        })
        .collect();
    // The ingest subscribes on its ConnAck; give it (and the connections) time to be in place.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Phase 1: steady.
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let mut window_ends: Vec<serde_json::Value> = Vec::new();
    let steady_start = tokio::time::Instant::now();
    let steady_start_s = ledger.origin.elapsed().as_secs_f64();
    let mut outage_sealing = None;
    let mut seal_stall = Duration::ZERO;
    for w in 0..a.windows {
        let sequence = w + 1;
        let start = steady_start + window.mul_f64(w as f64);
        // Seal the next window (or, at the last one, the outage's) while this one publishes.
        let next = if sequence < a.windows {
            Some(seal_job(sequence + 1))
        } else {
            let (keys, authority_public) = (Arc::clone(&keys), authority_public);
            let (sightings, seed, from, to) = (a.sightings, a.seed, a.windows + 1, per_gateway);
            outage_sealing = Some(tokio::task::spawn_blocking(move || {
                let mut all: Vec<Vec<Outgoing>> = (0..connections).map(|_| Vec::new()).collect();
                let mut took = Duration::ZERO;
                for sequence in from..=to {
                    let (sealed, t) = seal_window(
                        &keys,
                        &authority_public,
                        sequence,
                        enin_of(sequence),
                        sightings,
                        connections,
                        seed,
                    );
                    took += t;
                    for (c, items) in sealed.into_iter().enumerate() {
                        all[c].extend(items);
                    }
                }
                (all, took)
            }));
            None
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (c, items) in std::mem::take(&mut current).into_iter().enumerate() {
            let mut timed: Vec<(Duration, Outgoing)> = items
                .into_iter()
                .map(|o| (window.mul_f64(rng.random::<f64>()), o))
                .collect();
            timed.sort_by_key(|(offset, _)| *offset);
            tasks.spawn(publish_all(
                clients[c].clone(),
                timed,
                start,
                Arc::clone(&ledger),
            ));
        }
        tokio::time::sleep_until(start + window).await;
        let backlog = ledger.backlog();
        while tasks.try_join_next().is_some() {}
        // Connections still handing over this window's batches at its end (client queue full).
        let late_publishers = tasks.len();
        while tasks.join_next().await.is_some() {}
        eprintln!(
            "fleet_load: steady window {sequence}: published {}, receipted {}, backlog at window end {backlog}",
            ledger.published.load(Ordering::Relaxed),
            ledger.receipted.load(Ordering::Relaxed)
        );
        window_ends.push(serde_json::json!({
            "window": sequence,
            "published": ledger.published.load(Ordering::Relaxed),
            "receipted": ledger.receipted.load(Ordering::Relaxed),
            "backlog": backlog,
            "publishers_still_running": late_publishers,
        }));
        if let Some(next) = next {
            let waited = tokio::time::Instant::now();
            let (sealed, took) = next.await.expect("seal");
            // The next window starts on time only if it was sealed during this one.
            seal_stall += waited.elapsed();
            seal_times.push(took);
            current = sealed;
        }
    }
    let steady_end_s = ledger.origin.elapsed().as_secs_f64();
    let steady_backlog_at_end = ledger.backlog();

    // Phase 2: outage, then burst.
    let outage_end = tokio::time::Instant::now() + window.mul_f64(a.outage_windows as f64);
    tokio::time::sleep_until(outage_end).await;
    let steady_backlog_after_outage = ledger.backlog();
    let (outboxes, outage_seal_time) = outage_sealing
        .expect("sealed at the last steady window")
        .await
        .expect("seal");
    let burst_delay = tokio::time::Instant::now() - outage_end;
    if burst_delay > Duration::from_millis(100) {
        eprintln!(
            "fleet_load: sealing the outage's batches outlasted the outage by {:.1} s",
            burst_delay.as_secs_f64()
        );
    }
    let burst_batches = a.gateways as u64 * a.outage_windows;
    eprintln!(
        "fleet_load: burst: {burst_batches} batches from {} gateways' outboxes (sealed in {:.2} s); load {}",
        a.gateways,
        outage_seal_time.as_secs_f64(),
        loadavg()
    );
    let burst_start = tokio::time::Instant::now();
    let burst_start_s = ledger.origin.elapsed().as_secs_f64();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, items) in outboxes.into_iter().enumerate() {
        // An outbox resends oldest first; the gateways of one connection interleave.
        let mut items: Vec<Outgoing> = items;
        items.sort_by_key(|o| (o.sequence, o.gateway));
        let timed = items.into_iter().map(|o| (Duration::ZERO, o)).collect();
        tasks.spawn(publish_all(
            clients[c].clone(),
            timed,
            burst_start,
            Arc::clone(&ledger),
        ));
    }
    let deadline = burst_start + Duration::from_secs(a.deadline_seconds);
    let total = a.gateways as u64 * per_gateway;
    let mut last_report = tokio::time::Instant::now();
    while ledger.receipted.load(Ordering::Relaxed) < total && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = tokio::time::Instant::now();
            eprintln!(
                "fleet_load: {} / {total} receipted, {:.0} s after the burst",
                ledger.receipted.load(Ordering::Relaxed),
                burst_start.elapsed().as_secs_f64()
            );
        }
    }
    while tasks.join_next().await.is_some() {}
    // Duplicate receipts (a redelivery) would arrive right after; let them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let mut report = ingest::IngestReport::default();
    for ingest in ingests {
        match ingest.await.expect("join") {
            Ok(r) => {
                report.stored += r.stored;
                report.duplicates += r.duplicates;
                report.quarantined += r.quarantined;
            }
            Err(e) => {
                eprintln!("fleet_load: ingest failed: {e}");
                std::process::exit(2);
            }
        }
    }
    let in_store = tokio::task::block_in_place(|| {
        drop(stores);
        open(&a.database, &sqlite).batch_count().expect("count")
    });
    eprintln!(
        "fleet_load: {} worker(s) on {}: batches in the store {in_store}",
        a.workers.max(1),
        if a.database.is_empty() {
            "SQLite"
        } else {
            "PostgreSQL"
        }
    );
    stop.cancel();
    let load_end = loadavg();

    let steady = ledger.phase(1..=a.windows);
    let burst = ledger.phase(a.windows + 1..=per_gateway);
    let offered = a.gateways as f64 / a.window_seconds;
    let in_life = a.gateways as f64 / 600.0;
    let steady_throughput = steady.receipted as f64 / (steady.last_receipt_s - steady_start_s);
    let drain_s = burst.last_receipt_s - burst_start_s;
    let burst_rate = burst.receipted as f64 / drain_s;
    let seal_steady_s = seal_times.iter().map(Duration::as_secs_f64).sum::<f64>();
    let seal_rate = (seal_times.len() * a.gateways) as f64 / seal_steady_s;
    let missing = total - ledger.receipted.load(Ordering::Relaxed);

    println!(
        "fleet load: {} gateways, {} connections, {} sightings/batch ({envelope_bytes:.0} B sealed), window {:.1} s (= 10 min, {:.0}× life)",
        a.gateways,
        connections,
        a.sightings,
        a.window_seconds,
        600.0 / a.window_seconds
    );
    println!(
        "enrollment: {enroll_s:.2} s ({:.0} gateways/s); sealing (not in the figures): {seal_rate:.0} batches/s on one thread, steady windows delayed by it {:.2} s",
        a.gateways as f64 / enroll_s,
        seal_stall.as_secs_f64()
    );
    println!("| phase  | published | receipted | p50 ms | p99 ms | max ms | rate batches/s |");
    println!("|--------|-----------|-----------|--------|--------|--------|----------------|");
    for (name, f, rate) in [
        ("steady", steady, steady_throughput),
        ("burst", burst, burst_rate),
    ] {
        println!(
            "| {name:<6} | {:>9} | {:>9} | {:>6.0} | {:>6.0} | {:>6.0} | {:>14.0} |",
            f.published, f.receipted, f.p50_ms, f.p99_ms, f.max_ms, rate
        );
    }
    println!(
        "steady: offered {offered:.0} batches/s (in life {in_life:.1}/s), receipted {steady_throughput:.0}/s; backlog at window ends {:?}; {steady_backlog_at_end} at the phase end, {steady_backlog_after_outage} after the outage",
        window_ends
            .iter()
            .map(|w| w["backlog"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>()
    );
    println!(
        "burst: {burst_batches} batches handed over in {:.2} s, drained in {drain_s:.2} s = {burst_rate:.0} batches/s ({:.0} sightings/s)",
        burst.last_publish_s - burst_start_s,
        burst_rate * f64::from(a.sightings)
    );
    println!(
        "ingest: stored {}, duplicates {}, quarantined {}; receipts: duplicate {}, unknown {}; missing {missing}; load average {load_end}",
        report.stored,
        report.duplicates,
        report.quarantined,
        ledger.duplicate_receipts.load(Ordering::Relaxed),
        ledger.unknown_receipts.load(Ordering::Relaxed)
    );
    if a.json {
        let phase = |f: PhaseFigures| {
            serde_json::json!({
                "published": f.published,
                "receipted": f.receipted,
                "latency_ms": {"p50": f.p50_ms, "p99": f.p99_ms, "max": f.max_ms},
                "publish_span_s": f.last_publish_s - f.first_publish_s,
            })
        };
        let line = serde_json::json!({
            "bench": "fleet_load",
            "gateways": a.gateways,
            "connections": connections,
            "sightings": a.sightings,
            "envelope_bytes": envelope_bytes.round(),
            "window_seconds": a.window_seconds,
            "enroll_s": enroll_s,
            "seal_batches_per_s": seal_rate,
            "seal_stall_s": seal_stall.as_secs_f64(),
            "steady": {
                "windows": a.windows,
                "offered_per_s": offered,
                "in_life_per_s": in_life,
                "receipted_per_s": steady_throughput,
                "window_ends": window_ends,
                "backlog_at_phase_end": steady_backlog_at_end,
                "backlog_after_outage": steady_backlog_after_outage,
                "duration_s": steady_end_s - steady_start_s,
                "figures": phase(steady),
            },
            "burst": {
                "outage_windows": a.outage_windows,
                "batches": burst_batches,
                "handover_s": burst.last_publish_s - burst_start_s,
                "drain_s": drain_s,
                "per_s": burst_rate,
                "figures": phase(burst),
            },
            "ingest": {"stored": report.stored, "duplicates": report.duplicates, "quarantined": report.quarantined},
            "receipts": {
                "duplicate": ledger.duplicate_receipts.load(Ordering::Relaxed),
                "unknown": ledger.unknown_receipts.load(Ordering::Relaxed),
                "missing": missing,
            },
            "loadavg_end": load_end,
        });
        println!("{line}");
    }
    if missing > 0 {
        eprintln!(
            "fleet_load: {missing} batches never receipted within {} s of the burst",
            a.deadline_seconds
        );
        std::process::exit(1);
    }
}
