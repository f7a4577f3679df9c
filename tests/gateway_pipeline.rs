//! The gateway pipeline end to end with real parts: adverts on the source channel → aggregator
//! → HPKE-sealed batches → SQLite outbox → a private Mosquitto → a receipt responder standing
//! in for the authority → receipts → outbox empty.

mod common;

use common::mosquitto::Broker;
use common::responder::Responder;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use venuetrace::advert::{Advert, DeviceAddress, ServiceUuid};
use venuetrace::aggregate::AggregatorConfig;
use venuetrace::batch::GatewayId;
use venuetrace::bluetrace::{TempIdKey, TempIdRead, Uid};
use venuetrace::crypto::{Enin, Metadata, Tek};
use venuetrace::gateway::daemon::{self, DaemonSettings, RunReport, SourceSpec};
use venuetrace::gateway::outbox::{Backoff, OutboxOptions};
use venuetrace::gateway::publisher::MqttSettings;
use venuetrace::seal::KeyPair;

const T0_ENIN: u32 = 2_950_000;

/// `phones` phones, each advertising its real RPI/AEM for interval `enin` every 5 s for the
/// first 9 minutes of that interval, with a MAC of its own.
fn interval_adverts(enin: u32, phones: u8) -> Vec<Advert> {
    let mut out = Vec::new();
    for phone in 0..phones {
        let tek = Tek::from_bytes([phone; 16]);
        let rpi = tek.rpik().cipher().rpi(Enin(enin));
        let aem = tek.aemk().encrypt(&rpi, Metadata::v1_0(-10).to_bytes());
        let mut data = rpi.as_bytes().to_vec();
        data.extend_from_slice(aem.as_bytes());
        for step in 0..108u64 {
            out.push(Advert {
                time_ms: u64::from(enin) * 600_000 + step * 5_000 + u64::from(phone),
                address: DeviceAddress([0xC0, phone, 0xEE, 0xEE, 0xEE, enin as u8]),
                rssi: -50 - phone as i8,
                service_uuids: vec![ServiceUuid::from_u16(0xFD6F)],
                service_data: vec![(ServiceUuid::from_u16(0xFD6F), data.clone())],
                ..Advert::default()
            });
        }
    }
    out.sort_by_key(|a| a.time_ms);
    out
}

fn settings(
    dir: &std::path::Path,
    port: u16,
    keys: &KeyPair,
    authority: &KeyPair,
) -> DaemonSettings {
    DaemonSettings {
        gateway_id: GatewayId::new("gw-test").expect("id"),
        venue: "souk-1".into(),
        rssi_calibration_db: -2,
        keys: keys.clone(),
        authority: authority.public(),
        aggregator: AggregatorConfig::default(),
        outbox_path: dir.join("outbox.sqlite"),
        outbox_options: OutboxOptions::default(),
        backoff: Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(4),
        },
        mqtt: MqttSettings {
            host: "127.0.0.1".into(),
            port,
            client_id: "venuetrace-gw-test".into(),
            tls: None,
            credentials: None,
            keep_alive: Duration::from_secs(5),
            max_packet_bytes: 32 << 20,
        },
        source: SourceSpec::Channel,
        exit_when_delivered: true,
        flush_deadline: Duration::from_secs(5),
        dbus_status: false,
    }
}

async fn run_with(
    settings: DaemonSettings,
    adverts: Vec<Advert>,
    pause: Option<(usize, Duration)>,
) -> RunReport {
    let (tx, rx) = mpsc::channel(1024);
    let run = tokio::spawn(daemon::run(settings, CancellationToken::new(), Some(rx)));
    for (i, advert) in adverts.into_iter().enumerate() {
        if let Some((at, wait)) = pause
            && i == at
        {
            tokio::time::sleep(wait).await;
        }
        tx.send(advert).await.expect("daemon takes adverts");
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("daemon finishes within 60 s")
        .expect("daemon task")
        .expect("daemon succeeds")
}

/// Three windows of adverts from 5 phones become three sealed batches, all delivered and
/// receipted; the authority side opens exactly the RPIs and minutes that were sent, with the
/// gateway's calibration, and the TempIDs read from two BlueTrace phones; the outbox ends empty
/// and holds no RPI, TempID or MAC in its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_are_sealed_delivered_and_receipted() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, auth) = (KeyPair::generate(), KeyPair::generate());
    let responder = Responder::start(
        broker.port,
        auth.clone(),
        HashMap::from([("gw-test".to_string(), gw.public())]),
    )
    .await;
    let mut adverts = Vec::new();
    for enin in T0_ENIN..T0_ENIN + 3 {
        adverts.extend(interval_adverts(enin, 5));
    }
    // Two BlueTrace phones read over GATT every 100 s, each presenting one TempID a window.
    let key = TempIdKey::new(&[3; 32]);
    for enin in T0_ENIN..T0_ENIN + 3 {
        for phone in 0..2u8 {
            let uid = Uid::from_bytes([phone; 21]);
            let start = enin as i32 * 600;
            let tempid = key.encrypt(&uid, start - 60, start + 900, &[phone ^ enin as u8; 16]);
            for read in 0..5u64 {
                adverts.push(Advert {
                    time_ms: u64::from(enin) * 600_000 + 3_000 + read * 100_000,
                    address: DeviceAddress([0xD0, phone, 0xEE, 0xEE, 0xEE, enin as u8]),
                    rssi: -70,
                    tempid_read: Some(TempIdRead {
                        tempid,
                        org: "MAR".into(),
                    }),
                    ..Advert::default()
                });
            }
        }
    }
    adverts.sort_by_key(|a| a.time_ms);
    let fed = adverts.clone();
    let report = run_with(settings(dir.path(), broker.port, &gw, &auth), adverts, None).await;
    assert_eq!(report.adverts, 1620 + 30);
    assert_eq!(report.batches_sealed, 3);
    assert_eq!(report.batches_receipted, 3);
    assert_eq!(report.outbox_left, 0);

    let received = responder.received.lock().expect("lock");
    assert_eq!(received.rejected, 0);
    let ids: Vec<&String> = received.batches.keys().collect();
    assert_eq!(ids, ["gw-test:1", "gw-test:2", "gw-test:3"]);
    for (i, batch) in received.batches.values().enumerate() {
        assert_eq!(batch.window_start, Enin(T0_ENIN + i as u32));
        assert_eq!(batch.venue, "souk-1");
        assert_eq!(batch.rssi_calibration_db, -2);
        assert_eq!(batch.counters.gaen, 540);
        assert_eq!(batch.sightings.len(), 5);
        assert_eq!(batch.counters.bluetrace_reads, 10);
        assert_eq!(batch.tempids.len(), 2);
        for t in &batch.tempids {
            assert_eq!((t.first_minute, t.last_minute, t.reads), (0, 6, 5));
            let d = key.decrypt(&t.tempid).expect("the TempID that was read");
            assert_eq!(i64::from(d.start), batch.window_start_unix_s() - 60);
        }
        for s in &batch.sightings {
            assert_eq!((s.first_minute, s.last_minute, s.reports), (0, 8, 108));
            let phone = (0..5u8)
                .find(|p| {
                    Tek::from_bytes([*p; 16])
                        .rpik()
                        .cipher()
                        .rpi(batch.window_start)
                        == s.rpi
                })
                .expect("an RPI that was sent");
            assert_eq!(s.minutes[0].max, -50 - phone as i8);
        }
    }
    drop(received);

    // Privacy at rest: no RPI and no MAC that was fed in appears in the outbox files.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        bytes.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
    }
    for advert in &fed {
        if let Some(read) = &advert.tempid_read {
            assert!(
                !bytes
                    .windows(16)
                    .any(|w| w == &read.tempid.as_bytes()[..16]),
                "a TempID is stored in the outbox"
            );
            continue;
        }
        let rpi = &advert.service_data[0].1[..16];
        assert!(
            !bytes.windows(16).any(|w| w == rpi),
            "an RPI is stored in the outbox"
        );
        assert!(
            !bytes.windows(6).any(|w| w == advert.address.0),
            "a MAC is stored in the outbox"
        );
    }
}

/// The broker goes down while windows close and comes back later: the batches wait in the
/// outbox, are all delivered after the restart, and the authority side holds each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, auth) = (KeyPair::generate(), KeyPair::generate());
    let responder = Responder::start(
        broker.port,
        auth.clone(),
        HashMap::from([("gw-test".to_string(), gw.public())]),
    )
    .await;
    let settings = settings(dir.path(), broker.port, &gw, &auth);
    let (tx, rx) = mpsc::channel(1024);
    let run = tokio::spawn(daemon::run(settings, CancellationToken::new(), Some(rx)));
    let send = |enin: u32| {
        let tx = tx.clone();
        async move {
            for advert in interval_adverts(enin, 3) {
                tx.send(advert).await.expect("send");
            }
        }
    };
    send(T0_ENIN).await;
    send(T0_ENIN + 1).await; // closes window 1
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.stop();
    for enin in T0_ENIN + 2..T0_ENIN + 6 {
        send(enin).await; // windows 2..5 close while the broker is down
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    drop(tx);
    let report = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("delivered within 90 s of the restart")
        .expect("task")
        .expect("daemon");
    assert_eq!(report.batches_sealed, 6);
    assert_eq!(report.batches_receipted, 6);
    assert_eq!(report.outbox_left, 0);
    let received = responder.received.lock().expect("lock");
    assert_eq!(
        received.batches.len(),
        6,
        "each batch stored once: {:?}",
        received.batches.keys()
    );
    assert!(received.envelopes >= 6);
}
