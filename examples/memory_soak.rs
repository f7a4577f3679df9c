//! Memory soak of the gateway pipeline (issue 4): one simulated hour at 2,000 adverts/s
//! (7.2 M adverts from a rotating crowd of GAEN phones with real RPIs) through the real daemon
//! loop — aggregator, sealing, SQLite outbox, MQTT publisher — fed on the source channel as
//! fast as the daemon takes them. Prints the process's resident memory (VmRSS) after every
//! simulated minute and checks that from minute 10 on it stays within 5 % of its mean.
//!
//! Run: `scripts/memory-soak` (starts a private Mosquitto), or
//! `cargo run --release --example memory_soak -- [--rate 2000] [--minutes 60] [--port PORT]`.

use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use venuetrace::advert::{Advert, DeviceAddress, ServiceUuid};
use venuetrace::aggregate::AggregatorConfig;
use venuetrace::batch::GatewayId;
use venuetrace::crypto::{Enin, Metadata, Tek};
use venuetrace::gateway::daemon::{self, DaemonSettings, SourceSpec};
use venuetrace::gateway::outbox::{Backoff, OutboxOptions};
use venuetrace::gateway::publisher::MqttSettings;
use venuetrace::seal::KeyPair;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

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
    let rate = arg("--rate", 2000);
    let minutes = arg("--minutes", 60);
    let port = arg("--port", 1) as u16;
    let crowd = 600u64; // phones present at any moment
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = DaemonSettings {
        gateway_id: GatewayId::new("gw-soak").expect("id"),
        venue: "soak".into(),
        rssi_calibration_db: 0,
        keys: KeyPair::generate(),
        authority: KeyPair::generate().public(),
        aggregator: AggregatorConfig::default(),
        outbox_path: dir.path().join("outbox.sqlite"),
        outbox_options: OutboxOptions::default(),
        backoff: Backoff {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(900),
        },
        mqtt: MqttSettings {
            host: "127.0.0.1".into(),
            port,
            client_id: "venuetrace-gw-soak".into(),
            tls: None,
            credentials: None,
            keep_alive: Duration::from_secs(30),
            max_packet_bytes: 32 << 20,
        },
        source: SourceSpec::Channel,
        exit_when_delivered: false,
        flush_deadline: Duration::from_secs(1),
        dbus_status: false,
    };
    let (tx, rx) = mpsc::channel(4096);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(daemon::run(settings, shutdown.clone(), Some(rx)));
    let gaen = ServiceUuid::from_u16(0xFD6F);
    let t0 = 2_950_000u64 * 600_000;
    let per_minute = rate * 60;
    let mut samples = Vec::new();
    println!("minute,rss_kib");
    let started = std::time::Instant::now();
    for minute in 0..minutes {
        let enin = Enin((t0 / 600_000 + minute / 10) as u32);
        // The crowd changes every 10 minutes (new phones, and every phone's RPI rotates).
        let payloads: Vec<Vec<u8>> = (0..crowd)
            .map(|p| {
                let id = p + 1000 * (minute / 10);
                let mut tek = [7u8; 16];
                tek[..8].copy_from_slice(&id.to_le_bytes());
                let tek = Tek::from_bytes(tek);
                let rpi = tek.rpik().cipher().rpi(enin);
                let aem = tek.aemk().encrypt(&rpi, Metadata::v1_0(-12).to_bytes());
                let mut data = rpi.as_bytes().to_vec();
                data.extend_from_slice(aem.as_bytes());
                data
            })
            .collect();
        for i in 0..per_minute {
            let p = (i * 7919) % crowd;
            let advert = Advert {
                time_ms: t0 + minute * 60_000 + i * 60_000 / per_minute,
                address: DeviceAddress([0xC0, (p >> 8) as u8, p as u8, 0, 0, (minute / 10) as u8]),
                rssi: -50 - (i % 40) as i8,
                service_uuids: vec![gaen],
                service_data: vec![(gaen, payloads[p as usize].clone())],
                ..Advert::default()
            };
            tx.send(advert).await.expect("daemon running");
        }
        let rss = rss_kib();
        samples.push(rss);
        println!("{},{}", minute + 1, rss);
    }
    shutdown.cancel();
    drop(tx);
    let report = run.await.expect("join").expect("daemon");
    let steady: Vec<f64> = samples.iter().skip(10).map(|&v| v as f64).collect();
    let mean = steady.iter().sum::<f64>() / steady.len().max(1) as f64;
    let worst = steady
        .iter()
        .map(|v| (v - mean).abs() / mean)
        .fold(0.0, f64::max);
    eprintln!(
        "memory_soak: {} adverts in {:.1} s, {} batches sealed; RSS from minute 11: mean {:.0} KiB, max deviation {:.1} % ({})",
        report.adverts,
        started.elapsed().as_secs_f64(),
        report.batches_sealed,
        mean,
        worst * 100.0,
        if worst <= 0.05 {
            "flat: within 5 %"
        } else {
            "NOT flat"
        }
    );
    if worst > 0.05 {
        std::process::exit(1);
    }
}
