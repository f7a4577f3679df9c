//! The BlueZ source against python3-dbusmock's bluez5 template on a private bus: devices and
//! their ServiceData/RSSI changes become adverts; unrelated devices do not; removed devices
//! are forgotten; the scan survives the adapter going away and coming back, bluetoothd dying
//! and restarting, and discovery being stopped under it; startup errors name the adapter.
//!
//! The source connects to "the system bus" through `DBUS_SYSTEM_BUS_ADDRESS`, which libdbus
//! reads once per process: the tests share one private bus, each with its own mock, and take
//! a lock to run one at a time.

mod common;

use common::bluez::{BluezMock, GAEN_UUID, MockControl, PrivateBus, wait_for};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use venuetrace::advert::{Advert, ServiceUuid};
use venuetrace::beacon::{Beacon, classify};
use venuetrace::gateway::bluez::{BluezError, BluezOptions, ScanHealth, run_bluez};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(15);

fn options(adapter: Option<&str>) -> BluezOptions {
    BluezOptions {
        adapter: adapter.map(str::to_owned),
        power_on: true,
        max_devices: 100,
        bluetrace_uuids: vec![ServiceUuid(0xB82AB3FC_1595_4F6A_80F0_FE094CC218F9)],
        retry: Duration::from_millis(200),
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
