//! The replay beacon source, as the gateway uses it: the committed capture fixtures (btsnoop
//! with datalinks 1002 and 2001, JSON Lines) replay to the same adverts, in order, with the
//! fields and counters a reader of the file expects; pacing follows the recorded times (on
//! tokio's paused clock); cancellation stops it; a missing or unknown file is a clear error.
//!
//! The fixtures are generated here (see [`regenerate_fixtures`]) and checked against the
//! generator on every run, so they cannot drift from what this file documents:
//!
//! ```text
//! cargo test --test replay_source -- --ignored regenerate_fixtures
//! ```

use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use venuetrace::advert::{Advert, DeviceAddress, ServiceUuid, build_ad};
use venuetrace::beacon::GaenBeacon;
use venuetrace::btsnoop::{
    BtsnoopWriter, Datalink, PacketKind, RawRecordHeader, ReplayCounters, adverts_from_btsnoop,
    monitor_opcode,
};
use venuetrace::crypto::{Enin, Metadata, Tek};
use venuetrace::gateway::replay::{
    CaptureFormat, Pacing, ReplayError, ReplayOptions, ReplaySummary, StopReason, run_replay,
};
use venuetrace::hci::{
    RSSI_UNAVAILABLE, Report, encode_advertising_report, encode_extended_advertising_report,
};

/// The fixtures' TEK: the ASCII bytes of "venuetrace-tek-1".
const TEK: [u8; 16] = *b"venuetrace-tek-1";
/// Time of the first record: 2023-11-14 22:13:20 UTC, in ENIN 2,833,333.
const T0_MS: u64 = 1_700_000_000_000;
/// TX power in the phones' metadata (AEM plaintext).
const TX_POWER: i8 = -12;
const GAEN: ServiceUuid = ServiceUuid::from_u16(0xFD6F);
const PHONE: DeviceAddress = DeviceAddress([0x5A, 0x11, 0x22, 0x33, 0x44, 0x01]);
/// The same phone after rotating its address with its RPI.
const PHONE_ROTATED: DeviceAddress = DeviceAddress([0x4B, 0x55, 0x66, 0x77, 0x88, 0x02]);
const HEADPHONES: DeviceAddress = DeviceAddress([0xC4, 0x00, 0x00, 0x00, 0x00, 0x03]);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures")).join(name)
}

fn enin(offset: u32) -> Enin {
    let first = Enin::from_unix_seconds(T0_MS / 1000).expect("in range");
    first.checked_add(offset).expect("in range")
}

/// RPI ‖ AEM of the fixture TEK for interval `enin(offset)`.
fn gaen_payload(offset: u32) -> Vec<u8> {
    let tek = Tek::from_bytes(TEK);
    let rpi = tek.rpik().cipher().rpi(enin(offset));
    let aem = tek
        .aemk()
        .encrypt(&rpi, Metadata::v1_0(TX_POWER).to_bytes());
    [&rpi.as_bytes()[..], &aem.as_bytes()[..]].concat()
}

fn gaen_advert(time_ms: u64, address: DeviceAddress, rssi: i8, interval: u32) -> Advert {
    Advert {
        time_ms,
        address,
        rssi,
        service_uuids: vec![GAEN],
        service_data: vec![(GAEN, gaen_payload(interval))],
        ..Advert::default()
    }
}

fn headphones_advert(time_ms: u64) -> Advert {
    Advert {
        time_ms,
        address: HEADPHONES,
        rssi: -80,
        tx_power: Some(4),
        manufacturer_data: vec![(0x004C, vec![0x10, 0x05, 0x01, 0x18, 0x44, 0x00, 0x00])],
        ..Advert::default()
    }
}

/// The adverts every fixture holds, in order.
fn expected_adverts() -> Vec<Advert> {
    vec![
        gaen_advert(T0_MS + 1_000, PHONE, -60, 0),
        gaen_advert(T0_MS + 2_000, PHONE, -62, 0),
        headphones_advert(T0_MS + 2_000),
        gaen_advert(T0_MS + 405_000, PHONE_ROTATED, -58, 1),
    ]
}

/// Advertising data as sent: the flags structure (which the parser skips), then the rest.
fn ad_bytes(advert: &Advert) -> Vec<u8> {
    let mut data = vec![0x02, 0x01, 0x1A];
    data.extend(build_ad(advert));
    data
}

fn legacy_event(adverts: &[&Advert]) -> Vec<u8> {
    let data: Vec<Vec<u8>> = adverts.iter().map(|a| ad_bytes(a)).collect();
    let reports: Vec<Report<'_>> = adverts
        .iter()
        .zip(&data)
        .map(|(a, d)| Report::nonconnectable(a.address, a.rssi, d))
        .collect();
    encode_advertising_report(&reports).expect("fits one event")
}

fn us(ms: u64) -> i64 {
    i64::try_from(ms * 1000).expect("in range")
}

/// The btsnoop fixture for `datalink` (1002 or 2001). Records, with times after T0:
///
/// - (2001 only) monitor notes: new index hci0, open index;
/// - 0 s: LE Set Scan Enable command, and its Command Complete event;
/// - 1 s: LE Advertising Report, one GAEN report (interval n);
/// - 2 s: LE Advertising Report, two reports: the same phone again, and headphones (Apple
///   manufacturer data, not GAEN);
/// - 2.5 s: a malformed event (its parameter length claims 5 bytes more than it has);
/// - 3 s: a corrupt record (included length 40 over an original length of 8);
/// - 405 s: LE Extended Advertising Report of a legacy PDU: the phone, rotated to interval n+1;
/// - 406 s: a GAEN report with RSSI 127 ("not available"): skipped.
fn btsnoop_fixture(datalink: Datalink) -> Vec<u8> {
    let adverts = expected_adverts();
    let mut w = BtsnoopWriter::new(Vec::new(), datalink).expect("header");
    if datalink == Datalink::Monitor {
        let mut new_index = vec![0x00, 0x01, 0, 0, 0, 0, 0, 0];
        new_index.extend(b"hci0\0\0\0\0");
        w.write_packet(
            us(T0_MS),
            0,
            PacketKind::MonitorNote(monitor_opcode::NEW_INDEX),
            &new_index,
        )
        .expect("write");
        w.write_packet(us(T0_MS), 0, PacketKind::MonitorNote(8), &[])
            .expect("write");
    }
    w.write_packet(
        us(T0_MS),
        0,
        PacketKind::Command,
        &[0x0C, 0x20, 0x02, 0x01, 0x00],
    )
    .expect("write");
    w.write_event(T0_MS, &[0x0E, 0x04, 0x01, 0x0C, 0x20, 0x00])
        .expect("write");
    w.write_event(T0_MS + 1_000, &legacy_event(&[&adverts[0]]))
        .expect("write");
    w.write_event(T0_MS + 2_000, &legacy_event(&[&adverts[1], &adverts[2]]))
        .expect("write");
    let mut malformed = legacy_event(&[&adverts[0]]);
    malformed[1] += 5;
    w.write_event(T0_MS + 2_500, &malformed).expect("write");
    let (flags, mut corrupt) = match datalink {
        Datalink::Monitor => (u32::from(monitor_opcode::EVENT), Vec::new()),
        _ => (3, vec![0x04]),
    };
    corrupt.extend(&legacy_event(&[&adverts[0]])[..40 - corrupt.len()]);
    w.write_raw(
        RawRecordHeader {
            original_len: 8,
            flags,
            drops: 0,
            timestamp_us: us(T0_MS + 3_000),
        },
        &corrupt,
    )
    .expect("write");
    let rotated = &adverts[3];
    let data = ad_bytes(rotated);
    let extended = encode_extended_advertising_report(&[Report::nonconnectable(
        rotated.address,
        rotated.rssi,
        &data,
    )
    .extended_legacy()])
    .expect("fits");
    w.write_event(rotated.time_ms, &extended).expect("write");
    let unavailable = Advert {
        rssi: RSSI_UNAVAILABLE,
        ..gaen_advert(T0_MS + 406_000, PHONE_ROTATED, 0, 1)
    };
    w.write_event(unavailable.time_ms, &legacy_event(&[&unavailable]))
        .expect("write");
    w.into_inner().expect("flush")
}

fn jsonl_line(advert: &Advert, long_uuids: bool) -> String {
    let uuid = |u: ServiceUuid| match u.as_u16() {
        Some(short) if !long_uuids => format!("{short:04x}"),
        _ => u.to_string(),
    };
    let a = advert.address.0;
    let mut line = json!({
        "t_ms": advert.time_ms,
        "addr": a.map(|b| format!("{b:02x}")).join(":"),
        "rssi": advert.rssi,
        "tx_power": advert.tx_power,
    });
    let fields = line.as_object_mut().expect("object");
    if !advert.service_uuids.is_empty() {
        fields.insert(
            "service_uuids".into(),
            advert.service_uuids.iter().map(|&u| uuid(u)).collect(),
        );
    }
    if !advert.service_data.is_empty() {
        let map: serde_json::Map<_, _> = advert
            .service_data
            .iter()
            .map(|(u, d)| (uuid(*u), hex::encode(d).into()))
            .collect();
        fields.insert("service_data".into(), map.into());
    }
    if !advert.manufacturer_data.is_empty() {
        let map: serde_json::Map<_, _> = advert
            .manufacturer_data
            .iter()
            .map(|(c, d)| (c.to_string(), hex::encode(d).into()))
            .collect();
        fields.insert("manufacturer_data".into(), map.into());
    }
    line.to_string()
}

/// The JSON Lines fixture: the same adverts (the last one with 128-bit UUIDs), with a comment,
/// a blank line, a bad line (line 7) and an RSSI-127 line.
fn jsonl_fixture() -> String {
    let adverts = expected_adverts();
    let unavailable = Advert {
        rssi: RSSI_UNAVAILABLE,
        ..gaen_advert(T0_MS + 406_000, PHONE_ROTATED, 0, 1)
    };
    [
        "# venuetrace replay fixture: JSON Lines, one advert per line. Generated by".to_owned(),
        "# tests/replay_source.rs (cargo test --test replay_source -- --ignored \
         regenerate_fixtures)"
            .to_owned(),
        "# GAEN adverts of TEK \"venuetrace-tek-1\" (ASCII), intervals 2833333-2833334, \
         TX power -12."
            .to_owned(),
        jsonl_line(&adverts[0], false),
        String::new(),
        jsonl_line(&adverts[1], false),
        r#"{"t_ms": "yesterday", "rssi": -70}"#.to_owned(),
        jsonl_line(&adverts[2], false),
        jsonl_line(&adverts[3], true),
        jsonl_line(&unavailable, false),
    ]
    .join("\n")
        + "\n"
}

fn fixtures() -> [(&'static str, Vec<u8>); 3] {
    [
        ("gaen-h4.btsnoop", btsnoop_fixture(Datalink::H4)),
        ("gaen-monitor.btsnoop", btsnoop_fixture(Datalink::Monitor)),
        ("gaen.jsonl", jsonl_fixture().into_bytes()),
    ]
}

/// Rewrites the committed fixtures from the generator above. Run it after changing the
/// generator (it is ignored by default so a plain test run never writes to the tree).
#[test]
#[ignore = "writes tests/fixtures; run explicitly to regenerate"]
fn regenerate_fixtures() {
    std::fs::create_dir_all(fixture("")).expect("fixtures directory");
    for (name, bytes) in fixtures() {
        std::fs::write(fixture(name), bytes).expect("write fixture");
    }
}

/// The committed fixtures are exactly what the generator makes (so the expectations in this
/// file describe them).
#[test]
fn committed_fixtures_match_the_generator() {
    for (name, bytes) in fixtures() {
        let committed =
            std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("reading fixture {name}: {e}"));
        assert!(
            committed == bytes,
            "fixture {name} differs from its generator: run \
             `cargo test --test replay_source -- --ignored regenerate_fixtures`"
        );
    }
}

fn options(name: &str, pacing: Pacing) -> ReplayOptions {
    ReplayOptions {
        path: fixture(name),
        pacing,
        rebase_time_to_now: false,
    }
}

/// Runs a replay to the end, collecting what it sends with the (paused or real) tokio time
/// each advert arrived at.
async fn replay_all(opts: ReplayOptions) -> (Vec<(Instant, Advert)>, ReplaySummary) {
    let (tx, mut rx) = mpsc::channel(2);
    let task = tokio::spawn(run_replay(opts, tx, CancellationToken::new()));
    let mut received = Vec::new();
    while let Some(advert) = rx.recv().await {
        received.push((Instant::now(), advert));
    }
    let summary = task.await.expect("no panic").expect("replay runs");
    (received, summary)
}

fn btsnoop_counters(datalink: Datalink) -> ReplayCounters {
    let notes = if datalink == Datalink::Monitor { 2 } else { 0 };
    ReplayCounters {
        records: 8 + notes,
        events: 6,
        adverts: 4,
        corrupt_records: 1,
        malformed_events: 1,
        non_advert_packets: 2 + notes,
        rssi_unavailable: 1,
        bad_ad_data: 0,
        incomplete_data: 0,
    }
}

/// Both btsnoop fixtures replay all their adverts, in order, with every field as recorded
/// (times, addresses, RSSI, service data, manufacturer data), and the corrupt record, the
/// malformed event, the non-advert packets and the RSSI-127 report are counted, not sent.
#[tokio::test]
async fn btsnoop_fixtures_replay_every_advert_in_order() {
    for (name, datalink) in [
        ("gaen-h4.btsnoop", Datalink::H4),
        ("gaen-monitor.btsnoop", Datalink::Monitor),
    ] {
        let (received, summary) = replay_all(options(name, Pacing::AsFastAsPossible)).await;
        let adverts: Vec<Advert> = received.into_iter().map(|(_, a)| a).collect();
        assert_eq!(adverts, expected_adverts(), "{name}");
        assert_eq!(
            summary,
            ReplaySummary {
                format: CaptureFormat::Btsnoop(datalink),
                counters: btsnoop_counters(datalink),
                sent: 4,
                stop: StopReason::EndOfCapture,
            },
            "{name}"
        );
    }
}

/// The GAEN adverts in the fixtures are the fixture TEK's: their RPIs are its RPIs for the
/// recorded intervals, and their AEMs decrypt to metadata 1.0 with the recorded TX power.
#[test]
fn fixture_beacons_belong_to_the_fixture_tek() {
    let bytes = std::fs::read(fixture("gaen-h4.btsnoop")).expect("fixture");
    let (adverts, _) = adverts_from_btsnoop(&bytes[..]).expect("readable");
    let tek = Tek::from_bytes(TEK);
    let (cipher, aemk) = (tek.rpik().cipher(), tek.aemk());
    let mut beacons = 0;
    for advert in &adverts {
        let Some(data) = advert.service_data_for(GAEN) else {
            continue;
        };
        let beacon = GaenBeacon::decode(data).expect("well-formed beacon");
        let interval = Enin::from_unix_seconds(advert.time_ms / 1000).expect("in range");
        assert_eq!(beacon.rpi, cipher.rpi(interval));
        let metadata = aemk
            .decrypt_metadata(&beacon.rpi, &beacon.aem)
            .expect("metadata");
        assert_eq!(metadata, Metadata::v1_0(TX_POWER));
        beacons += 1;
    }
    assert_eq!(beacons, 3);
}

/// The JSON Lines fixture replays the same adverts; its bad line is counted and skipped,
/// as is its RSSI-127 line.
#[tokio::test]
async fn jsonl_fixture_replays_the_same_adverts() {
    let (received, summary) = replay_all(options("gaen.jsonl", Pacing::AsFastAsPossible)).await;
    let adverts: Vec<Advert> = received.into_iter().map(|(_, a)| a).collect();
    assert_eq!(adverts, expected_adverts());
    assert_eq!(summary.format, CaptureFormat::JsonLines);
    assert_eq!(
        summary.counters,
        ReplayCounters {
            records: 6,
            adverts: 4,
            corrupt_records: 1,
            rssi_unavailable: 1,
            ..ReplayCounters::default()
        }
    );
    assert_eq!(summary.sent, 4);
}

/// Real-time pacing at speed 10 sends each advert at a tenth of its recorded offset from the
/// first advert, so the whole capture takes a tenth of its recorded span (paused clock).
#[tokio::test(start_paused = true)]
async fn pacing_at_speed_ten_takes_a_tenth_of_the_recorded_span() {
    for name in ["gaen-h4.btsnoop", "gaen-monitor.btsnoop", "gaen.jsonl"] {
        let start = Instant::now();
        let (received, summary) = replay_all(options(name, Pacing::RealTime { speed: 10.0 })).await;
        assert_eq!(summary.sent, 4);
        let first_ms = received[0].1.time_ms;
        for (arrived, advert) in &received {
            let expected = Duration::from_millis((advert.time_ms - first_ms) / 10);
            let actual = arrived.duration_since(start);
            // The timer wheel has 1 ms resolution and rounds deadlines up.
            assert!(
                actual >= expected && actual <= expected + Duration::from_millis(2),
                "{name}: advert at +{} ms recorded arrived after {actual:?}, expected {expected:?}",
                advert.time_ms - first_ms
            );
        }
        let span = received[3].0.duration_since(start);
        assert!(
            span >= Duration::from_millis(40_400) && span <= Duration::from_millis(40_402),
            "{name}: {span:?}"
        );
        // Times are kept as recorded unless rebased.
        assert_eq!(received[0].1.time_ms, T0_MS + 1_000);
    }
}

/// With `rebase_time_to_now`, the first advert is stamped with the current time and the others
/// keep their recorded spacing.
#[tokio::test]
async fn rebasing_moves_the_first_advert_to_now() {
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let (received, _) = replay_all(ReplayOptions {
        rebase_time_to_now: true,
        ..options("gaen-h4.btsnoop", Pacing::AsFastAsPossible)
    })
    .await;
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let times: Vec<u64> = received.iter().map(|(_, a)| a.time_ms).collect();
    assert!(before <= times[0] && times[0] <= after, "{times:?}");
    let offsets: Vec<u64> = times.iter().map(|t| t - times[0]).collect();
    assert_eq!(offsets, [0, 1_000, 1_000, 404_000]);
}

/// Cancelling stops a paced replay promptly, in the middle of a wait, and it reports how far
/// it got; cancelling while the receiver applies back-pressure stops it too.
#[tokio::test(start_paused = true)]
async fn cancel_stops_the_replay() {
    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(run_replay(
        options("gaen-h4.btsnoop", Pacing::RealTime { speed: 1.0 }),
        tx,
        cancel.clone(),
    ));
    rx.recv().await.expect("first advert");
    rx.recv().await.expect("second advert");
    // The replay now waits for the advert recorded 404 s later.
    tokio::time::sleep(Duration::from_secs(10)).await;
    cancel.cancel();
    let summary = task.await.expect("no panic").expect("replay runs");
    assert_eq!(summary.stop, StopReason::Cancelled);
    assert_eq!(summary.sent, 3);
    // 1 s of recorded spacing, 10 s of waiting, and no more.
    assert_eq!(start.elapsed(), Duration::from_secs(11));

    // Back-pressure: a one-slot channel nobody reads. Once it is full, the replay is blocked
    // sending the second advert.
    let (tx, _rx) = mpsc::channel(1);
    let probe = tx.clone();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_replay(
        options("gaen.jsonl", Pacing::AsFastAsPossible),
        tx,
        cancel.clone(),
    ));
    while probe.capacity() > 0 {
        tokio::task::yield_now().await;
    }
    tokio::task::yield_now().await;
    cancel.cancel();
    let summary = task.await.expect("no panic").expect("replay runs");
    assert_eq!(summary.stop, StopReason::Cancelled);
    assert_eq!(summary.sent, 1);
}

/// When the receiver goes away the replay stops and says so.
#[tokio::test]
async fn a_dropped_receiver_stops_the_replay() {
    let (tx, rx) = mpsc::channel(8);
    drop(rx);
    let summary = run_replay(
        options("gaen.jsonl", Pacing::AsFastAsPossible),
        tx,
        CancellationToken::new(),
    )
    .await
    .expect("replay runs");
    assert_eq!(summary.stop, StopReason::ReceiverClosed);
    assert_eq!(summary.sent, 0);
}

/// A missing file is an error naming the path and the cause.
#[tokio::test]
async fn a_missing_file_is_a_clear_error() {
    let (tx, _rx) = mpsc::channel(1);
    let err = run_replay(
        options("no-such-capture.btsnoop", Pacing::AsFastAsPossible),
        tx,
        CancellationToken::new(),
    )
    .await
    .expect_err("missing file");
    let ReplayError::Open { path, source } = &err else {
        panic!("expected Open, got {err:?}");
    };
    assert_eq!(path, &fixture("no-such-capture.btsnoop"));
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    let message = venuetrace::exit::describe(&err);
    assert!(
        message.contains("cannot open capture") && message.contains("no-such-capture.btsnoop"),
        "{message}"
    );
}

/// A file that is neither btsnoop nor JSON Lines, a btsnoop file with an unsupported
/// datalink, and a bad speed are errors naming the problem.
#[tokio::test]
async fn unusable_files_and_speeds_are_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let zip = dir.path().join("capture.zip");
    std::fs::write(&zip, b"PK\x03\x04 not a capture").expect("write");
    let (tx, _rx) = mpsc::channel(1);
    let err = run_replay(
        ReplayOptions {
            path: zip.clone(),
            pacing: Pacing::AsFastAsPossible,
            rebase_time_to_now: false,
        },
        tx.clone(),
        CancellationToken::new(),
    )
    .await
    .expect_err("unknown format");
    assert!(matches!(&err, ReplayError::UnknownFormat { path } if path == &zip));
    assert!(
        err.to_string()
            .contains("neither a btsnoop file nor JSON Lines")
    );

    let pcap = dir.path().join("capture.btsnoop");
    let mut bytes = b"btsnoop\0".to_vec();
    bytes.extend(1u32.to_be_bytes());
    bytes.extend(1003u32.to_be_bytes());
    std::fs::write(&pcap, bytes).expect("write");
    let err = run_replay(
        ReplayOptions {
            path: pcap,
            pacing: Pacing::AsFastAsPossible,
            rebase_time_to_now: false,
        },
        tx.clone(),
        CancellationToken::new(),
    )
    .await
    .expect_err("unsupported datalink");
    assert!(
        venuetrace::exit::describe(&err).contains("datalink 1003"),
        "{err:?}"
    );

    for speed in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = run_replay(
            options("gaen.jsonl", Pacing::RealTime { speed }),
            tx.clone(),
            CancellationToken::new(),
        )
        .await
        .expect_err("bad speed");
        assert!(matches!(err, ReplayError::InvalidSpeed { .. }));
    }
}
