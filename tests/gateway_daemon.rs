//! The real `venuetrace-gateway` binary as an operator runs it: `keygen`, then `run` with a
//! configuration file against a private Mosquitto and a receipt responder; and killed with
//! SIGKILL at random moments, again and again, without losing a sealed batch.

mod common;

use common::mosquitto::Broker;
use common::responder::Responder;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use venuetrace::gateway::outbox::{Outbox, OutboxOptions};
use venuetrace::seal::{KeyPair, PublicKey};

const BIN: &str = env!("CARGO_BIN_EXE_venuetrace-gateway");

fn keygen(path: &Path) -> PublicKey {
    let out = Command::new(BIN)
        .args(["keygen", "--key"])
        .arg(path)
        .output()
        .expect("keygen runs");
    assert!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("public key "))
        .expect("public key printed");
    PublicKey::parse(line).expect("base64 public key")
}

fn write_config(
    dir: &Path,
    port: u16,
    authority: &PublicKey,
    phones: u32,
    hours: f64,
) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nid = \"gw-cli\"\nvenue = \"souk-1\"\nstate_dir = \"{dir}\"\n\
             [authority]\npublic_key = \"{authority}\"\n\
             [scan]\nsource = \"sim\"\n\
             [sim]\nphones = {phones}\nhours = {hours}\nspeed = 0.0\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nresend_initial_seconds = 1\nresend_max_seconds = 2\n",
            dir = dir.display()
        ),
    )
    .expect("write config");
    path
}

async fn responder(port: u16, auth: &KeyPair, gw: PublicKey) -> Responder {
    Responder::start(
        port,
        auth.clone(),
        HashMap::from([("gw-cli".to_string(), gw)]),
    )
    .await
}

/// keygen writes a 0600 key and refuses to overwrite it; `run --exit-when-delivered` with a
/// simulated venue delivers every window and exits 0 with an empty outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_then_run_delivers_everything() {
    use std::os::unix::fs::PermissionsExt;
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = keygen(&dir.path().join("gateway.key"));
    let mode = std::fs::metadata(dir.path().join("gateway.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = Command::new(BIN)
        .args(["keygen", "--key"])
        .arg(dir.path().join("gateway.key"))
        .output()
        .expect("runs");
    assert_eq!(again.status.code(), Some(73), "refuses to overwrite a key");
    let auth = KeyPair::generate();
    let responder = responder(broker.port, &auth, gw).await;
    let config = write_config(dir.path(), broker.port, &auth.public(), 200, 2.0);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["run", "--exit-when-delivered", "--config"])
            .arg(&config)
            // No system bus: the daemon runs anyway and says so once.
            .env(
                "DBUS_SYSTEM_BUS_ADDRESS",
                "unix:path=/nonexistent/venuetrace-test-bus",
            )
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {log}");
    assert!(log.contains("every batch is receipted"), "{log}");
    assert_eq!(
        log.matches("no status on D-Bus").count(),
        1,
        "said once: {log}"
    );
    let received = responder.received.lock().expect("lock");
    assert_eq!(
        received.batches.len(),
        12,
        "two hours = 12 windows: {:?}",
        received.batches.keys()
    );
    assert!(
        received
            .batches
            .values()
            .map(|b| b.sightings.len())
            .sum::<usize>()
            > 0
    );
    let outbox =
        Outbox::open(&dir.path().join("outbox.sqlite"), OutboxOptions::default()).expect("outbox");
    assert_eq!(outbox.depth().expect("depth").batches, 0);
}

/// SIGKILL at 20 random moments (while simulating, sealing, committing, publishing), then one
/// run to the end: every sequence number the outbox ever handed out reaches the authority
/// side (no gap, so no sealed batch was lost), and the outbox ends empty and intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_batch() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = keygen(&dir.path().join("gateway.key"));
    let auth = KeyPair::generate();
    let responder = responder(broker.port, &auth, gw).await;
    let config = write_config(dir.path(), broker.port, &auth.public(), 400, 6.0);
    // A deterministic spread of kill delays (no RNG dependency): 40 ms .. 1 s.
    let mut delay = 40u64;
    for round in 0..20 {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run");
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        delay = 40 + (delay * 7 + 131 * round) % 960;
    }
    let config_path = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["run", "--exit-when-delivered", "--config"])
            .arg(&config_path)
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outbox = Outbox::open(&dir.path().join("outbox.sqlite"), OutboxOptions::default())
        .expect("outbox intact");
    assert_eq!(outbox.depth().expect("depth").batches, 0, "outbox empty");
    let last = outbox.next_sequence().expect("sequence") - 1;
    assert!(
        last >= 36,
        "at least the final run's 36 windows were sealed, got {last}"
    );
    // Receipts may still be in flight for the last few; the final run only exits once all are in.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (missing, rejected) = {
            let received = responder.received.lock().expect("lock");
            let missing: Vec<u64> = (1..=last)
                .filter(|s| !received.batches.contains_key(&format!("gw-cli:{s}")))
                .collect();
            (missing, received.rejected)
        };
        if missing.is_empty() {
            assert_eq!(rejected, 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sealed batches never delivered: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `run --source replay:FILE` on the recorded btsnoop fixture (H4 datalink): every GAEN advert
/// of the capture reaches the authority side inside sealed batches, under the RPIs derived from
/// the fixture's TEK, and the non-GAEN advert is counted, not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_btsnoop_capture_is_delivered() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = keygen(&dir.path().join("gateway.key"));
    let auth = KeyPair::generate();
    let responder = responder(broker.port, &auth, gw).await;
    let config = write_config(dir.path(), broker.port, &auth.public(), 1, 1.0);
    let capture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gaen-h4.btsnoop"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "run",
                "--exit-when-delivered",
                "--source",
                &format!("replay:{capture}"),
                "--config",
            ])
            .arg(&config)
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let received = responder.received.lock().expect("lock");
    assert!(!received.batches.is_empty());
    let tek = venuetrace::crypto::Tek::from_bytes(*b"venuetrace-tek-1");
    let mut sightings = 0;
    for batch in received.batches.values() {
        for s in &batch.sightings {
            let derived = tek.rpik().cipher().rpi(batch.window_start);
            let previous = tek.rpik().cipher().rpi(venuetrace::crypto::Enin(
                batch.window_start.0.saturating_sub(1),
            ));
            assert!(
                s.rpi == derived || s.rpi == previous,
                "an RPI not derived from the fixture's TEK"
            );
            sightings += 1;
        }
    }
    assert!(sightings > 0);
    let gaen: u64 = received.batches.values().map(|b| b.counters.gaen).sum();
    let unrelated: u64 = received
        .batches
        .values()
        .map(|b| b.counters.unrelated)
        .sum();
    let reports: u64 = received
        .batches
        .values()
        .flat_map(|b| &b.sightings)
        .map(|s| u64::from(s.reports))
        .sum();
    assert_eq!(reports, gaen, "every GAEN report is in a sighting");
    assert!(
        unrelated > 0,
        "the capture's non-GAEN advert is counted, not stored"
    );
}
