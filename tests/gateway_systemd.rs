//! The real `venuetrace-gateway run` with the BlueZ source, as systemd runs it: on a private
//! bus with the bluez5 mock, a private Mosquitto and a receipt responder, a `NOTIFY_SOCKET`
//! this test listens on, and `WATCHDOG_USEC`. Checks READY → WATCHDOG → STOPPING in order;
//! the status over D-Bus (`venuetrace-gateway status`, and PropertiesChanged signals); SIGHUP
//! with a changed and with an invalid configuration; SIGTERM in the middle of a window (the
//! partial window is sealed and delivered); and that the debug-level log of the whole run holds
//! no MAC address, RPI or key. A second run collects BlueTrace TempIDs over GATT: the TempID
//! counters in `status` (JSON and table), the TempID sealed in the delivered batch, and no
//! address, TempID, UID or payload in its debug-level log.

mod common;

use common::bluez::{BluezMock, GAEN_UUID, GattBehaviour, MockControl, PrivateBus, wait_for};
use common::mosquitto::Broker;
use common::responder::Responder;
use futures::StreamExt;
use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use venuetrace::seal::{KeyPair, PublicKey};

const BIN: &str = env!("CARGO_BIN_EXE_venuetrace-gateway");
const WAIT: Duration = Duration::from_secs(30);
/// The tests' window length: an hour, so a run rarely meets a window boundary.
const WINDOW_MINUTES: u64 = 60;
const MACS: [&str; 2] = ["4E:A1:B2:C3:D4:E5", "4E:0F:0F:0F:0F:0F"];

fn config_text(dir: &Path, port: u16, authority: &PublicKey, extra: &str) -> String {
    format!(
        "[gateway]\nid = \"gw-bz\"\nvenue = \"market-1\"\nstate_dir = \"{dir}\"\n\
         [authority]\npublic_key = \"{authority}\"\n\
         [scan]\nsource = \"bluez\"\nadapter = \"hci0\"\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nresend_initial_seconds = 1\nresend_max_seconds = 2\n\
         [window]\nminutes = {WINDOW_MINUTES}\n\
         [log]\nlevel = \"debug\"\n{extra}",
        dir = dir.display()
    )
}

/// Everything sent to the notify socket, in order.
fn listen(path: &Path) -> Arc<Mutex<Vec<String>>> {
    let socket = UnixDatagram::bind(path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => out
                    .lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Arc::strong_count(&out) == 1 {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    seen
}

fn position(seen: &[String], what: &str) -> Option<usize> {
    seen.iter()
        .position(|m| m.lines().any(|l| l.starts_with(what)))
}

fn status(bus: &PrivateBus) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["status", "--format", "json"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .expect("status runs");
    assert!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Kills the gateway if the test fails before it stops it.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Windows close on the wall clock (aligned to the epoch), so a boundary passing while a test
/// runs would close its window normally instead of at SIGTERM. Waits out the end of the current
/// window when less than two minutes of it remain, so the whole test runs inside one window.
async fn clear_of_window_boundary() {
    let window = WINDOW_MINUTES * 60;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    let left = Duration::from_secs(window) - Duration::from_secs(now.as_secs() % window);
    if left < Duration::from_secs(120) {
        eprintln!("waiting {left:?} for the next window to start");
        tokio::time::sleep(left + Duration::from_secs(1)).await;
    }
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_under_systemd_with_bluez() {
    clear_of_window_boundary().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let bus = PrivateBus::start();
    let _mock = BluezMock::start(&bus, d).await;
    let control = MockControl::new(&bus).await;
    control.add_adapter("hci0").await;

    let broker = Broker::start();
    let gateway_keys = KeyPair::generate();
    gateway_keys.save(&d.join("gateway.key")).expect("key");
    let authority = KeyPair::generate();
    let responder = Responder::start(
        broker.port,
        authority.clone(),
        HashMap::from([("gw-bz".to_string(), gateway_keys.public())]),
    )
    .await;
    let config = d.join("gateway.toml");
    std::fs::write(
        &config,
        config_text(d, broker.port, &authority.public(), ""),
    )
    .expect("config");

    let notify = listen(&d.join("notify"));
    let log_path = d.join("gateway.log");
    let mut child = Guard(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("NOTIFY_SOCKET", d.join("notify"))
            .env("WATCHDOG_USEC", "2000000")
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log file"))
            .spawn()
            .expect("gateway starts"),
    );
    let pid = child.0.id();

    wait_for("READY=1", WAIT, || async {
        position(&notify.lock().expect("lock"), "READY=1").is_some()
    })
    .await;
    assert!(control.discovering("hci0").await, "scanning when ready");

    // Watch the status object's PropertiesChanged signals.
    let watcher = bus.connect().await;
    let props = zbus::fdo::PropertiesProxy::builder(&watcher)
        .destination("org.venuetrace.Gateway1")
        .path("/org/venuetrace/Gateway1")
        .build()
        .await
        .expect("properties proxy");
    let mut changes = props.receive_properties_changed().await.expect("subscribe");

    // Two phones and a broken beacon.
    let rpis: Vec<Vec<u8>> = (0..2u8)
        .map(|n| (0..20).map(|i| 0x50 + n * 16 + i).collect())
        .collect();
    // (Each device is tracked before it advertises: the mock, unlike bluetoothd, does not
    // update the stored properties the scanner reads when it first sees a device.)
    let mut paths = Vec::new();
    for mac in MACS.iter().chain(["4E:99:99:99:99:99"].iter()) {
        paths.push(control.add_device("hci0", mac).await);
    }
    wait_for("devices tracked", WAIT, || {
        let s = status(&bus);
        async move { s["counters"]["scan_devices_tracked"] == 3 }
    })
    .await;
    for (path, data) in paths.iter().zip(&rpis) {
        for rssi in [-60, -64, -62] {
            control.advert(path, rssi, GAEN_UUID, data).await;
        }
    }
    control.advert(&paths[2], -70, GAEN_UUID, &[1, 2, 3]).await;

    let deadline = std::time::Instant::now() + WAIT;
    let last = loop {
        let last = status(&bus);
        if last["scanning"] == true
            && last["adapter"] == "hci0"
            && last["sightings_in_window"] == 2
            && last["counters"]["malformed"] == 1
            && last["broker_connected"] == true
        {
            break last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never showed the sightings: {last:#}\n{}",
            read(&log_path)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(last["gateway_id"], "gw-bz");
    assert_eq!(last["source"], "bluez");
    let change = tokio::time::timeout(WAIT, changes.next())
        .await
        .expect("a PropertiesChanged signal")
        .expect("stream open");
    let args = change.args().expect("args");
    assert_eq!(args.interface_name().as_str(), "org.venuetrace.Gateway1");

    // SIGHUP with a changed configuration: run-time settings apply, others are reported.
    std::fs::write(
        &config,
        config_text(d, broker.port, &authority.public(), "")
            .replace("level = \"debug\"", "level = \"info\"")
            .replace("resend_max_seconds = 2", "resend_max_seconds = 3")
            .replace("venue = \"market-1\"", "venue = \"market-2\""),
    )
    .expect("config");
    signal(pid, "HUP");
    wait_for("reload applied", WAIT, || {
        let s = status(&bus);
        async move { s["counters"]["reloads"] == 1 }
    })
    .await;
    let log = read(&log_path);
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(
        log.contains("apply only after a restart") && log.contains("[gateway]"),
        "{log}"
    );
    // ...and with an invalid one: every problem reported, nothing changes, still running.
    std::fs::write(
        &config,
        config_text(d, broker.port, &authority.public(), "bogus = 1\n")
            .replace("port = ", "port = -"),
    )
    .expect("config");
    signal(pid, "HUP");
    wait_for("reload refused", WAIT, || {
        let s = status(&bus);
        async move { s["counters"]["reload_failures"] == 1 }
    })
    .await;
    let log = read(&log_path);
    assert!(log.contains("configuration reload refused"), "{log}");
    assert!(
        log.contains("log.bogus") && log.contains("mqtt.port"),
        "{log}"
    );
    assert!(child.0.try_wait().expect("wait").is_none(), "still running");

    wait_for("WATCHDOG=1", WAIT, || async {
        position(&notify.lock().expect("lock"), "WATCHDOG=1").is_some()
    })
    .await;

    // SIGTERM in the middle of the window: sealed early, delivered, exit 0.
    signal(pid, "TERM");
    let exit = tokio::task::spawn_blocking(move || child.0.wait().expect("wait"))
        .await
        .expect("join");
    let log = read(&log_path);
    assert!(exit.success(), "exit {exit}: {log}");
    assert!(!control.discovering("hci0").await, "discovery stopped");
    {
        let received = responder.received.lock().expect("lock");
        let batch = received
            .batches
            .values()
            .find(|b| !b.sightings.is_empty())
            .unwrap_or_else(|| panic!("partial window delivered: {log}"));
        assert!(batch.closed_early);
        assert_eq!(batch.sightings.len(), 2);
        assert_eq!(batch.counters.malformed, 1);
        let mut got: Vec<Vec<u8>> = batch
            .sightings
            .iter()
            .map(|s| [s.rpi.as_bytes().as_slice(), s.aem.as_bytes().as_slice()].concat())
            .collect();
        got.sort();
        assert_eq!(got, rpis);
    }
    assert!(log.contains("unreceipted=0"), "flushed: {log}");

    let seen = notify.lock().expect("lock").clone();
    let (ready, watchdog, stopping) = (
        position(&seen, "READY=1"),
        position(&seen, "WATCHDOG=1"),
        position(&seen, "STOPPING=1"),
    );
    assert!(
        ready < watchdog && watchdog < stopping && stopping.is_some(),
        "order READY < WATCHDOG < STOPPING: {seen:?}"
    );
    assert!(
        seen.iter().any(|m| m.contains("STATUS=scanning hci0")),
        "{seen:?}"
    );

    // Privacy: the debug log of the whole run holds no address, RPI or key.
    for mac in MACS.iter().chain(["4E:99:99:99:99:99"].iter()) {
        let compact = mac.replace(':', "");
        for form in [
            mac.to_string(),
            mac.to_lowercase(),
            compact.clone(),
            compact.to_lowercase(),
            mac.replace(':', "_"),
        ] {
            assert!(!log.contains(&form), "address {form} in the log");
        }
    }
    for rpi in &rpis {
        let hex = hex::encode(&rpi[..16]);
        assert!(!log.to_lowercase().contains(&hex), "RPI {hex} in the log");
    }
    let secret = std::fs::read_to_string(d.join("gateway.key")).expect("key file");
    for line in secret
        .lines()
        .filter(|l| !l.starts_with('#') && l.len() > 16)
    {
        assert!(!log.contains(line.trim()), "private key in the log");
    }
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "ran at debug level"
    );
}

/// The addresses of the TempID run's phones.
const BT_MACS: [&str; 3] = [
    "5A:A1:B2:C3:D4:E5",
    "5A:0F:0F:0F:0F:0F",
    "5A:77:77:77:77:77",
];
/// The sample production BlueTrace service UUID (the default configuration's).
const BT_UUID: &str = "b82ab3fc-1595-4f6a-80f0-fe094cc218f9";
/// The backend's TempID key (test value).
const TEMPID_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// `bluetrace.collect_tempids` through the real binary: one phone answers with a reference
/// TempID, one with a malformed payload, one never resolves its services. `status` shows each
/// outcome's counter (JSON and the table); the TempID arrives sealed in the batch delivered at
/// SIGTERM, with its organisation; and the debug log holds none of the addresses, the TempID,
/// its UID or the payloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collects_tempids_with_bluez() {
    clear_of_window_boundary().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let bus = PrivateBus::start();
    let _mock = BluezMock::start(&bus, d).await;
    let control = MockControl::new(&bus).await;
    control.add_adapter("hci0").await;

    let broker = Broker::start();
    let gateway_keys = KeyPair::generate();
    gateway_keys.save(&d.join("gateway.key")).expect("key");
    let authority = KeyPair::generate();
    let responder = Responder::start(
        broker.port,
        authority.clone(),
        HashMap::from([("gw-bz".to_string(), gateway_keys.public())]),
    )
    .await;
    let config = d.join("gateway.toml");
    std::fs::write(
        &config,
        config_text(
            d,
            broker.port,
            &authority.public(),
            "[bluetrace]\ncollect_tempids = true\nmax_connections = 3\nconnect_timeout_s = 3\n",
        ),
    )
    .expect("config");

    let uid = common::tempid_ref(&["uid", "wiqaytna-systemd"]);
    let tempid = common::tempid_ref(&["encrypt", TEMPID_KEY, &uid, "1700000000", "1700000900"]);
    let payload = common::tempid_ref(&["payload", &tempid, "MAR", "Pixel 7"]);
    let malformed = format!("{{\"v\":2,\"id\":\"{}\"", &tempid[..40]);
    let behaviours = [
        GattBehaviour::Answers {
            service_uuid: BT_UUID.into(),
            characteristic_uuid: "117bdd58-57ce-4e7a-8e87-7cccdda2a804".into(),
            value: payload.clone().into_bytes(),
        },
        GattBehaviour::Answers {
            service_uuid: BT_UUID.into(),
            characteristic_uuid: "117bdd58-57ce-4e7a-8e87-7cccdda2a804".into(),
            value: malformed.clone().into_bytes(),
        },
        GattBehaviour::NeverResolves,
    ];
    let mut paths = Vec::new();
    for (mac, behaviour) in BT_MACS.iter().zip(&behaviours) {
        let path = control.add_device("hci0", mac).await;
        control.gatt_phone(&path, behaviour).await;
        paths.push(path);
    }

    let log_path = d.join("gateway.log");
    let mut child = Guard(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log file"))
            .spawn()
            .expect("gateway starts"),
    );
    let pid = child.0.id();
    wait_for("devices tracked", WAIT, || {
        let ok = Command::new(BIN)
            .args(["status", "--format", "json"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .is_some_and(|s| s["counters"]["scan_devices_tracked"] == 3);
        async move { ok }
    })
    .await;
    for path in &paths {
        control.bluetrace_advert(path, -63, BT_UUID).await;
    }

    let deadline = std::time::Instant::now() + WAIT;
    let last = loop {
        let last = status(&bus);
        let c = &last["counters"];
        if c["tempid_reads"] == 1 && c["tempid_malformed"] == 1 && c["tempid_timeouts"] == 1 {
            break last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never showed the reads: {last:#}\n{}",
            read(&log_path)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let c = &last["counters"];
    assert_eq!(c["tempid_attempts"], 3, "{last:#}");
    assert_eq!(c["bluetrace_reads"], 1, "into the window: {last:#}");
    for name in [
        "tempid_connect_failures",
        "tempid_read_failures",
        "tempid_no_characteristic",
        "tempid_wrong_org",
        "tempid_skipped_busy",
        "tempid_skipped_rate",
    ] {
        assert_eq!(c[name], 0, "{name}: {last:#}");
    }
    let table = Command::new(BIN)
        .arg("status")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .expect("status runs");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.contains("tempid_reads") && l.trim_end().ends_with('1')),
        "{table}"
    );

    signal(pid, "TERM");
    let exit = tokio::task::spawn_blocking(move || child.0.wait().expect("wait"))
        .await
        .expect("join");
    let log = read(&log_path);
    assert!(exit.success(), "exit {exit}: {log}");
    {
        let received = responder.received.lock().expect("lock");
        let batch = received
            .batches
            .values()
            .find(|b| !b.tempids.is_empty())
            .unwrap_or_else(|| panic!("TempID delivered: {log}"));
        assert_eq!(batch.tempids.len(), 1);
        assert_eq!(batch.tempids[0].tempid.to_base64(), tempid);
        assert_eq!(batch.tempids[0].org, "MAR");
    }

    // Privacy: at debug level, no address, TempID, UID or payload.
    assert!(log.contains("DEBUG"), "ran at debug level: {log}");
    assert!(log.contains("malformed payload"), "failures logged: {log}");
    for mac in BT_MACS {
        let compact = mac.replace(':', "");
        for form in [
            mac.to_string(),
            mac.to_lowercase(),
            compact.clone(),
            compact.to_lowercase(),
            mac.replace(':', "_"),
        ] {
            assert!(!log.contains(&form), "address {form} in the log");
        }
    }
    let tempid_hex = hex::encode(
        venuetrace::bluetrace::TempId::from_base64(&tempid)
            .expect("TempID")
            .as_bytes(),
    );
    for secret in [
        &tempid[..16],
        &tempid[40..56],
        &uid[..16],
        &tempid_hex[..32],
    ] {
        assert!(!log.contains(secret), "TempID or UID {secret} in the log");
    }
    assert!(!log.contains("Pixel"), "payload in the log");
}
