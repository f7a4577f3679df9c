//! The BlueZ source against python3-dbusmock's bluez5 template on a private bus: devices and
//! their ServiceData/RSSI changes become adverts; unrelated devices do not; removed devices
//! are forgotten; the scan survives the adapter going away and coming back, bluetoothd dying
//! and restarting, and discovery being stopped under it; startup errors name the adapter.
//!
//! BlueTrace TempIDs over GATT (`bluetrace.collect_tempids`): mock phones with GATT services
//! answer reads with payloads made by the independent reference implementation
//! (`tests/common/tempid_ref.py`); a good read comes down the channel, every failure is
//! counted while scanning goes on, reads are capped (per device, connections, per minute),
//! shutdown disconnects a read in flight, and with collection off nothing ever connects.
//!
//! The source connects to "the system bus" through `DBUS_SYSTEM_BUS_ADDRESS`, which libdbus
//! reads once per process: the tests share one private bus, each with its own mock, and take
//! a lock to run one at a time.

mod common;

use common::bluez::{BluezMock, GAEN_UUID, GattBehaviour, MockControl, PrivateBus, wait_for};
use common::tempid_ref;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use venuetrace::advert::{Advert, ServiceUuid};
use venuetrace::beacon::{Beacon, classify};
use venuetrace::bluetrace::{TempId, TempIdKey, Uid};
use venuetrace::gateway::bluez::{BluezError, BluezOptions, ScanHealth, run_bluez};
use venuetrace::gateway::gatt::GattOptions;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(15);

fn options(adapter: Option<&str>) -> BluezOptions {
    BluezOptions {
        adapter: adapter.map(str::to_owned),
        power_on: true,
        max_devices: 100,
        bluetrace_uuids: vec![ServiceUuid(0xB82AB3FC_1595_4F6A_80F0_FE094CC218F9)],
        retry: Duration::from_millis(200),
        gatt: None,
    }
}

/// The sample production BlueTrace service UUID (the scanner's configured one).
const BT_UUID: &str = "b82ab3fc-1595-4f6a-80f0-fe094cc218f9";
/// The OpenTrace v2 characteristic.
const V2_CHARACTERISTIC: &str = "117bdd58-57ce-4e7a-8e87-7cccdda2a804";
/// The backend's TempID key (test value).
const TEMPID_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Options with TempID collection on.
fn with_gatt(timeout: Duration, max_connections: usize, per_minute: usize) -> BluezOptions {
    BluezOptions {
        gatt: Some(GattOptions {
            orgs: vec!["MAR".into()],
            max_connections,
            attempt_timeout: timeout,
            reread_after: Duration::from_secs(100),
            max_reads_per_minute: per_minute,
        }),
        ..options(Some("hci0"))
    }
}

/// A phone whose BlueTrace service answers reads with `value`.
fn answers(value: impl Into<Vec<u8>>) -> GattBehaviour {
    GattBehaviour::Answers {
        service_uuid: BT_UUID.into(),
        characteristic_uuid: V2_CHARACTERISTIC.into(),
        value: value.into(),
    }
}

/// A v2 payload with a fresh TempID of `org`, from the reference implementation; with the
/// TempID (base64) and the UID (base64) it hides.
fn reference_payload(user: &str, org: &str) -> (String, String, String) {
    let uid = tempid_ref(&["uid", user]);
    let tempid = tempid_ref(&["encrypt", TEMPID_KEY, &uid, "1700000000", "1700000900"]);
    let payload = tempid_ref(&["payload", &tempid, org, "Pixel 7"]);
    (payload, tempid, uid)
}

fn counter(health: &ScanHealth, name: &str) -> u64 {
    health
        .counters()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or_else(|| panic!("no counter {name}"), |(_, v)| v)
}

/// Waits until counter `name` reaches `value`.
async fn counted(health: &ScanHealth, name: &str, value: u64) {
    let what = format!("{name} = {value}");
    wait_for(&what, WAIT, || async { counter(health, name) >= value }).await;
    assert_eq!(
        counter(health, name),
        value,
        "{name} overshot: {:?}",
        health.counters()
    );
}

/// A GAEN advert of `device` with beacon `n` still comes through, and no TempID read comes
/// before it: the scanner went on after whatever happened to a read.
async fn scanning_goes_on(
    control: &MockControl,
    rx: &mut mpsc::Receiver<Advert>,
    device: &str,
    n: u8,
) {
    control.advert(device, -55, GAEN_UUID, &beacon(n)).await;
    loop {
        let a = next_advert(rx).await;
        assert!(a.tempid_read.is_none(), "no TempID from a failed read");
        if a.service_data_for(ServiceUuid::from_u16(0xFD6F)) == Some(&beacon(n)[..]) {
            return;
        }
    }
}

/// The process's one private bus, with no BlueZ on it yet.
async fn bus() -> &'static PrivateBus {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("venuetrace=debug")
        .try_init();
    let bus = PrivateBus::shared();
    common::bluez::wait_owner(bus, false).await;
    bus
}

fn beacon(n: u8) -> Vec<u8> {
    (0..20)
        .map(|i| n.wrapping_mul(31).wrapping_add(i))
        .collect()
}

async fn next_advert(rx: &mut mpsc::Receiver<Advert>) -> Advert {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an advert within the timeout")
        .expect("source still running")
}

/// Nothing more arrives within a short while.
async fn quiet(rx: &mut mpsc::Receiver<Advert>) {
    if let Ok(Some(a)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!(
            "unexpected advert: rssi {} data {:?}",
            a.rssi, a.service_data
        );
    }
}

struct Running {
    health: Arc<ScanHealth>,
    rx: mpsc::Receiver<Advert>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), BluezError>>,
}

fn start(opts: BluezOptions) -> Running {
    let health = Arc::new(ScanHealth::default());
    let (tx, rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run_bluez(opts, tx, cancel.clone(), Arc::clone(&health)));
    Running {
        health,
        rx,
        cancel,
        task,
    }
}

async fn scanning(health: &ScanHealth, control: &MockControl, adapter: &str, armed: u64) {
    let what = format!(
        "scanning, armed ≥ {armed} (counters now {:?})",
        health.counters()
    );
    wait_for(&what, WAIT, || async {
        health.scanning()
            && health.armed.load(Ordering::Relaxed) >= armed
            && control.discovering(adapter).await
    })
    .await;
}

/// Waits until the scanner tracks `n` devices (the mock does not store the properties of
/// adverts it signals, so a device must be tracked before it advertises).
async fn tracked(health: &ScanHealth, n: u64) {
    wait_for(&format!("{n} devices tracked"), WAIT, || async {
        health.devices.load(Ordering::Relaxed) == n
    })
    .await;
}

/// Adverts, filtering, device removal, the discovery filter, and stopping on shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_updates_become_adverts() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus().await;
    let _mock = BluezMock::start(bus, dir.path()).await;
    let control = MockControl::new(bus).await;
    control.add_adapter("hci0").await;

    let mut run = start(options(None));
    scanning(&run.health, &control, "hci0", 1).await;
    assert_eq!(run.health.adapter(), "hci0", "the default adapter");

    // LE only, duplicates reported, and no UUID filter (BlueZ mishandles those).
    let filter = control
        .get("/org/bluez/hci0", "org.bluez.Adapter1", "DiscoveryFilter")
        .await;
    let filter: std::collections::HashMap<String, zbus::OwnedVariant> =
        filter.try_into().expect("a{sv}");
    let get = |k: &str| filter.get(k).map(|v| format!("{v:?}"));
    assert!(
        get("Transport").is_some_and(|t| t.contains("\"le\"")),
        "{filter:?}"
    );
    assert!(
        get("DuplicateData").is_some_and(|t| t.contains("true")),
        "{filter:?}"
    );
    assert!(
        get("UUIDs").is_none_or(|t| t.contains("elements: []")),
        "no UUID filter: {filter:?}"
    );

    // A phone appears and advertises twice.
    let phone = control.add_device("hci0", "4E:11:22:33:44:55").await;
    tracked(&run.health, 1).await;
    control.advert(&phone, -61, GAEN_UUID, &beacon(1)).await;
    let a = next_advert(&mut run.rx).await;
    assert_eq!(a.rssi, -61);
    assert_eq!(a.address.0, [0x4E, 0x11, 0x22, 0x33, 0x44, 0x55]);
    assert!(matches!(classify(&a, &[]), Beacon::Gaen(_)));
    control.advert(&phone, -70, GAEN_UUID, &beacon(1)).await;
    let a = next_advert(&mut run.rx).await;
    assert_eq!(a.rssi, -70, "the new RSSI");
    assert_eq!(
        a.service_data_for(ServiceUuid::from_u16(0xFD6F)),
        Some(&beacon(1)[..])
    );

    // Malformed 0xFD6F data is passed on (the aggregator counts it as malformed).
    let odd = control.add_device("hci0", "4E:00:00:00:00:02").await;
    tracked(&run.health, 2).await;
    control.advert(&odd, -50, GAEN_UUID, &[1, 2, 3]).await;
    let a = next_advert(&mut run.rx).await;
    assert!(matches!(classify(&a, &[]), Beacon::MalformedGaen(_)));

    // Headphones: not a phone of either app, not sent.
    let other = control.add_device("hci0", "4E:00:00:00:00:03").await;
    tracked(&run.health, 3).await;
    control
        .advert(&other, -40, "0000180f-0000-1000-8000-00805f9b34fb", &[99])
        .await;
    quiet(&mut run.rx).await;
    assert!(run.health.unrelated.load(Ordering::Relaxed) >= 1);

    // BlueZ forgets the phone: its state is dropped.
    control.remove_device("hci0", &phone).await;
    wait_for("device removal counted", WAIT, || async {
        run.health.devices_removed.load(Ordering::Relaxed) == 1
    })
    .await;

    // Shutdown stops discovery.
    run.cancel.cancel();
    run.task.await.expect("joined").expect("clean stop");
    assert!(!control.discovering("hci0").await, "discovery stopped");
    assert!(!run.health.scanning());
}

/// The adapter removed and re-added, discovery stopped under the scanner, bluetoothd killed
/// and restarted: each time scanning resumes, and each cause is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanning_survives_bluez_lifecycle() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus().await;
    let mock = BluezMock::start(bus, dir.path()).await;
    let control = MockControl::new(bus).await;
    control.add_adapter("hci0").await;

    let mut run = start(options(Some("hci0")));
    scanning(&run.health, &control, "hci0", 1).await;

    // The adapter goes away (unplugged) and comes back.
    control.remove_adapter("hci0").await;
    wait_for("adapter loss seen", WAIT, || async {
        run.health.adapter_lost.load(Ordering::Relaxed) == 1 && !run.health.scanning()
    })
    .await;
    control.add_adapter("hci0").await;
    scanning(&run.health, &control, "hci0", 2).await;
    let phone = control.add_device("hci0", "4E:00:00:00:00:10").await;
    tracked(&run.health, 1).await;
    control.advert(&phone, -66, GAEN_UUID, &beacon(2)).await;
    assert_eq!(next_advert(&mut run.rx).await.rssi, -66);

    // Someone stops discovery (Discovering turns false): re-armed.
    control.stop_discovery("hci0").await;
    wait_for("discovery stop seen", WAIT, || async {
        run.health.discovery_stopped.load(Ordering::Relaxed) >= 1
    })
    .await;
    scanning(&run.health, &control, "hci0", 3).await;

    // bluetoothd dies; a new one starts with the adapter.
    mock.kill(bus).await;
    wait_for("BlueZ loss seen", WAIT, || async {
        run.health.bluez_lost.load(Ordering::Relaxed) == 1
    })
    .await;
    let armed = run.health.armed.load(Ordering::Relaxed) + 1;
    let _mock = BluezMock::start(bus, dir.path()).await;
    control.add_adapter("hci0").await;
    scanning(&run.health, &control, "hci0", armed).await;
    let phone = control.add_device("hci0", "4E:00:00:00:00:11").await;
    tracked(&run.health, 1).await;
    control.advert(&phone, -58, GAEN_UUID, &beacon(3)).await;
    let a = next_advert(&mut run.rx).await;
    assert_eq!(a.rssi, -58);
    assert_eq!(
        run.health.adapter_lost.load(Ordering::Relaxed),
        1,
        "each cause counted once"
    );

    run.cancel.cancel();
    run.task.await.expect("joined").expect("clean stop");
}

/// Startup failures are errors that say what is wrong, with the adapter's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_name_the_adapter() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus().await;

    // No bluetoothd at all.
    let run = start(options(None));
    let e = run.task.await.expect("joined").expect_err("no BlueZ");
    assert!(matches!(e, BluezError::NoBluez), "{e}");
    assert!(e.to_string().contains("bluetoothd"), "{e}");

    let _mock = BluezMock::start(bus, dir.path()).await;
    let control = MockControl::new(bus).await;

    // BlueZ without an adapter.
    let e = start(options(None))
        .task
        .await
        .expect("joined")
        .expect_err("no adapter");
    assert!(
        matches!(e, BluezError::NoAdapter),
        "{}",
        venuetrace::exit::describe(&e)
    );

    // The configured adapter does not exist; the message lists those that do.
    control.add_adapter("hci0").await;
    let e = start(options(Some("hci7")))
        .task
        .await
        .expect("joined")
        .expect_err("wrong adapter");
    let text = e.to_string();
    assert!(text.contains("hci7") && text.contains("hci0"), "{text}");

    // Powered off, and not allowed to power it on.
    let mut props = std::collections::HashMap::new();
    props.insert("Powered", zbus::Variant::from(false));
    control
        .update("/org/bluez/hci0", "org.bluez.Adapter1", props)
        .await;
    let mut opts = options(Some("hci0"));
    opts.power_on = false;
    let e = start(opts).task.await.expect("joined").expect_err("off");
    assert!(
        matches!(&e, BluezError::PoweredOff { name } if name == "hci0"),
        "{e}"
    );

    // Allowed: the scanner powers it on and scans.
    let run = start(options(Some("hci0")));
    scanning(&run.health, &control, "hci0", 1).await;
    let powered = control
        .get("/org/bluez/hci0", "org.bluez.Adapter1", "Powered")
        .await;
    assert!(bool::try_from(powered).expect("bool"), "powered on");
    run.cancel.cancel();
    run.task.await.expect("joined").expect("clean stop");
}

/// A BlueTrace phone's advert makes the gateway connect, find the v2 characteristic under the
/// configured BlueTrace service, read it and disconnect; the TempID comes down the channel
/// with the device's address and latest RSSI, equals the reference implementation's, and
/// decrypts (with the crate's cipher, and with the reference) to the reference UID. The phone
/// is not read again within `reread_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempid_is_read_over_gatt() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus().await;
    let _mock = BluezMock::start(bus, dir.path()).await;
    let control = MockControl::new(bus).await;
    control.add_adapter("hci0").await;
    let (payload, tempid_b64, uid_b64) = reference_payload("wiqaytna-user-1", "MAR");
    let phone = control.add_device("hci0", "5A:11:22:33:44:55").await;
    control.gatt_phone(&phone, &answers(payload)).await;

    let mut run = start(with_gatt(Duration::from_secs(6), 1, 20));
    scanning(&run.health, &control, "hci0", 1).await;
    tracked(&run.health, 1).await;
    control.bluetrace_advert(&phone, -67, BT_UUID).await;

    let advert = next_advert(&mut run.rx).await;
    assert!(advert.tempid_read.is_none(), "the advert itself first");
    assert_eq!(
        classify(&advert, &[ServiceUuid::parse(BT_UUID).expect("uuid")]),
        Beacon::BlueTrace
    );
    let read = next_advert(&mut run.rx).await;
    let tempid = read.tempid_read.clone().expect("a TempID read");
    assert_eq!(
        tempid.tempid,
        TempId::from_base64(&tempid_b64).expect("reference TempID")
    );
    assert_eq!(tempid.org, "MAR");
    assert_eq!(read.rssi, -67);
    assert_eq!(read.address.0, [0x5A, 0x11, 0x22, 0x33, 0x44, 0x55]);
    assert!(read.service_data.is_empty() && read.service_uuids.is_empty());
    let key = TempIdKey::from_base64(TEMPID_KEY).expect("key");
    let decrypted = key.decrypt(&tempid.tempid).expect("decrypts");
    assert_eq!(
        decrypted.uid,
        Uid::from_base64(&uid_b64).expect("reference UID")
    );
    assert_eq!(
        (decrypted.start, decrypted.expiry),
        (1_700_000_000, 1_700_000_900)
    );
    assert_eq!(
        tempid_ref(&["decrypt", TEMPID_KEY, &tempid.tempid.to_base64()]),
        format!("{uid_b64} 1700000000 1700000900")
    );

    counted(&run.health, "tempid_reads", 1).await;
    assert_eq!(counter(&run.health, "tempid_attempts"), 1);
    assert!(
        !control.connected(&phone).await,
        "disconnected after the read"
    );
    assert_eq!(control.calls(&phone, "Connect").await, 1);
    assert_eq!(control.calls(&phone, "Disconnect").await, 1);
    assert_eq!(
        control
            .calls(&format!("{phone}/service000a/char000b"), "ReadValue")
            .await,
        1
    );

    // Heard again at once: an advert, no second read.
    control.bluetrace_advert(&phone, -60, BT_UUID).await;
    let again = next_advert(&mut run.rx).await;
    assert!(again.tempid_read.is_none());
    assert_eq!(again.rssi, -60);
    quiet(&mut run.rx).await;
    assert_eq!(control.calls(&phone, "Connect").await, 1, "no re-read");
    assert_eq!(counter(&run.health, "tempid_attempts"), 1);

    run.cancel.cancel();
    run.task.await.expect("joined").expect("clean stop");
}

/// Every way a read fails is counted under its own name, the phone is disconnected all the
/// same, no TempID comes down the channel, and the scanner goes on (a GAEN advert after each
/// still arrives): a payload that is not JSON, one of another organisation, one longer than an
/// attribute can be, a phone that never resolves its services (timeout), one whose BlueTrace
/// service lacks the v2 characteristic, one with the characteristic under a service that is
/// not a BlueTrace one, and one that refuses the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reads_are_counted_and_scanning_goes_on() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus().await;
    let _mock = BluezMock::start(bus, dir.path()).await;
    let control = MockControl::new(bus).await;
    control.add_adapter("hci0").await;
    let (wrong_org, _, _) = reference_payload("singapore-user", "SG_MOH");
    let (good, _, _) = reference_payload("wiqaytna-user-2", "MAR");
    let mut too_long = good.into_bytes();
    too_long.resize(600, b' '); // still JSON, but longer than an attribute value can be
    let cases: Vec<(&str, GattBehaviour, &str)> = vec![
        (
            "5A:00:00:00:00:01",
            answers(&b"{\"v\":2,\"id\":"[..]),
            "tempid_malformed",
        ),
        ("5A:00:00:00:00:02", answers(wrong_org), "tempid_wrong_org"),
        ("5A:00:00:00:00:03", answers(too_long), "tempid_malformed"),
        (
            "5A:00:00:00:00:04",
            GattBehaviour::NeverResolves,
            "tempid_timeouts",
        ),
        (
            "5A:00:00:00:00:05",
            GattBehaviour::Answers {
                service_uuid: BT_UUID.into(),
                characteristic_uuid: "0000aaaa-0000-1000-8000-00805f9b34fb".into(),
                value: b"{}".to_vec(),
            },
            "tempid_no_characteristic",
        ),
        (
            "5A:00:00:00:00:06",
            GattBehaviour::Answers {
                service_uuid: "0000fff0-0000-1000-8000-00805f9b34fb".into(),
                characteristic_uuid: V2_CHARACTERISTIC.into(),
                value: b"{}".to_vec(),
            },
            "tempid_no_characteristic",
        ),
        (
            "5A:00:00:00:00:07",
            GattBehaviour::Refuses,
            "tempid_connect_failures",
        ),
    ];
    let gaen = control.add_device("hci0", "4E:00:00:00:00:20").await;
    let mut phones = Vec::new();
    for (address, behaviour, _) in &cases {
        let phone = control.add_device("hci0", address).await;
        control.gatt_phone(&phone, behaviour).await;
        phones.push(phone);
    }

    let mut run = start(with_gatt(Duration::from_secs(3), 1, 60));
    scanning(&run.health, &control, "hci0", 1).await;
    tracked(&run.health, 1 + cases.len() as u64).await;
    let mut expected: HashMap<&str, u64> = HashMap::new();
    for (n, ((_, _, name), phone)) in cases.iter().zip(&phones).enumerate() {
        *expected.entry(name).or_default() += 1;
        control.bluetrace_advert(phone, -70, BT_UUID).await;
        counted(&run.health, name, expected[name]).await;
        assert_eq!(control.calls(phone, "Connect").await, 1, "{name}");
        assert_eq!(
            control.calls(phone, "Disconnect").await,
            1,
            "{name}: disconnected all the same"
        );
        assert!(!control.connected(phone).await, "{name}");
        scanning_goes_on(&control, &mut run.rx, &gaen, n as u8).await;
    }
    assert_eq!(counter(&run.health, "tempid_attempts"), cases.len() as u64);
    assert_eq!(counter(&run.health, "tempid_reads"), 0);
    assert_eq!(counter(&run.health, "tempid_read_failures"), 0);
    assert!(run.health.scanning());

    run.cancel.cancel();
    run.task.await.expect("joined").expect("clean stop");
}

/// At most `max_connections` phones are connected at once (the mock's own peak count) and
/// adverts meanwhile are counted as skipped and connect nothing; at most
/// `max_reads_per_minute` attempts start in a minute, the rest counted as rate-skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_rate_are_capped() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus().await;
    let _mock = BluezMock::start(bus, dir.path()).await;
    let control = MockControl::new(bus).await;
    control.add_adapter("hci0").await;
    let mut phones = Vec::new();
    for n in 1..=4 {
        let phone = control
            .add_device("hci0", &format!("5A:00:00:00:01:0{n}"))
            .await;
        control
            .gatt_phone(&phone, &GattBehaviour::NeverResolves)
            .await;
        phones.push(phone);
    }

    let mut run = start(with_gatt(Duration::from_secs(2), 2, 3));
    scanning(&run.health, &control, "hci0", 1).await;
    tracked(&run.health, 4).await;

    // Three phones at once, two slots.
    for phone in &phones[..3] {
        control.bluetrace_advert(phone, -70, BT_UUID).await;
    }
    counted(&run.health, "tempid_skipped_busy", 1).await;
    assert_eq!(counter(&run.health, "tempid_attempts"), 2);
    wait_for("two phones connected", WAIT, || async {
        control.connected(&phones[0]).await && control.connected(&phones[1]).await
    })
    .await;
    assert_eq!(control.calls(&phones[2], "Connect").await, 0);

    // Both time out; the third phone's next advert takes a slot: the third attempt this
    // minute. The fourth phone is over the per-minute budget.
    counted(&run.health, "tempid_timeouts", 2).await;
    control.bluetrace_advert(&phones[2], -70, BT_UUID).await;
    counted(&run.health, "tempid_attempts", 3).await;
    control.bluetrace_advert(&phones[3], -70, BT_UUID).await;
    counted(&run.health, "tempid_skipped_rate", 1).await;
    assert_eq!(counter(&run.health, "tempid_attempts"), 3);
    assert_eq!(control.calls(&phones[3], "Connect").await, 0);
    counted(&run.health, "tempid_timeouts", 3).await;
    assert_eq!(
        control.peak_connections().await,
        2,
        "never more than two at once"
    );
    while run.rx.try_recv().is_ok() {}

    run.cancel.cancel();
    run.task.await.expect("joined").expect("clean stop");
}

/// Shutdown in the middle of a read: the read is cancelled, the phone disconnected, and the
/// source stops promptly (well within the read's own 30 s bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_a_read_in_flight() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus().await;
    let _mock = BluezMock::start(bus, dir.path()).await;
    let control = MockControl::new(bus).await;
    control.add_adapter("hci0").await;
    let phone = control.add_device("hci0", "5A:00:00:00:02:01").await;
    control
        .gatt_phone(&phone, &GattBehaviour::NeverResolves)
        .await;

    let run = start(with_gatt(Duration::from_secs(30), 1, 20));
    scanning(&run.health, &control, "hci0", 1).await;
    tracked(&run.health, 1).await;
    control.bluetrace_advert(&phone, -70, BT_UUID).await;
    wait_for("phone connected", WAIT, || async {
        control.connected(&phone).await
    })
    .await;

    let stopped = std::time::Instant::now();
    run.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), run.task)
        .await
        .expect("stops promptly")
        .expect("joined")
        .expect("clean stop");
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    assert!(!control.connected(&phone).await, "disconnected on shutdown");
    assert_eq!(control.calls(&phone, "Disconnect").await, 1);
    assert!(!control.discovering("hci0").await, "discovery stopped");
    assert_eq!(
        counter(&run.health, "tempid_timeouts"),
        0,
        "cancelled, not timed out"
    );
}

/// With collection off (the default) a BlueTrace phone is only an advert: no connection is
/// ever made, and no TempID counters are shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_off_never_connects() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = bus().await;
    let _mock = BluezMock::start(bus, dir.path()).await;
    let control = MockControl::new(bus).await;
    control.add_adapter("hci0").await;
    let (payload, _, _) = reference_payload("wiqaytna-user-3", "MAR");
    let phone = control.add_device("hci0", "5A:00:00:00:03:01").await;
    control.gatt_phone(&phone, &answers(payload)).await;

    let mut run = start(options(Some("hci0")));
    scanning(&run.health, &control, "hci0", 1).await;
    tracked(&run.health, 1).await;
    for rssi in [-70, -65] {
        control.bluetrace_advert(&phone, rssi, BT_UUID).await;
        let a = next_advert(&mut run.rx).await;
        assert!(a.tempid_read.is_none());
        assert_eq!(i16::from(a.rssi), rssi);
    }
    quiet(&mut run.rx).await;
    assert_eq!(control.calls(&phone, "Connect").await, 0);
    assert_eq!(control.calls(&phone, "Disconnect").await, 0);
    assert!(
        run.health
            .counters()
            .iter()
            .all(|(name, _)| !name.starts_with("tempid_")),
        "{:?}",
        run.health.counters()
    );

    run.cancel.cancel();
    run.task.await.expect("joined").expect("clean stop");
}
