//! Several authority workers on one PostgreSQL store (issue 10), with the faults a national
//! deployment meets: two `venuetrace-authority run` processes share the batches through one
//! `$share` subscription while real gateways deliver simulated days; one worker is killed
//! (SIGKILL) in the middle of the flow and comes back, and the database is restarted under
//! load. Every batch is stored exactly once and every gateway gets all its receipts. Below
//! the processes: housekeeping leases, the ingest barrier that makes watermarks safe with
//! concurrent writers, and reconnection after the server cut the connection.
//!
//! One private cluster for the whole file, and the tests take turns (a restart cuts every
//! session of the cluster).

mod common;

use common::mosquitto::Broker;
use common::postgres::{PgCluster, TestDb};
use common::process::{Killed, enroll_gateway, path, public_key, run, run_gateway_until_delivered};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use venuetrace::authority::pg::{INGEST_BARRIER, PgStore, partition_name};
use venuetrace::authority::store::{Lease, Store};

const AUTH: &str = env!("CARGO_BIN_EXE_venuetrace-authority");

/// The tests of this file run one at a time: one restarts the shared cluster.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// One `venuetrace-authority run` worker: its own MQTT client id (a persistent session per
/// worker), the same share group and database as the others; its log in `dir`.
fn worker(config: &Path, dir: &Path, n: u32) -> Killed {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("worker-{n}.log")))
        .expect("worker log");
    Killed(
        Command::new(AUTH)
            .args(["run", "-c", path(config)])
            .env(
                "VENUETRACE_AUTHORITY__MQTT__CLIENT_ID",
                format!("authority-worker-{n}"),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("authority run"),
    )
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name}");
}

/// Two workers share ingest from six gateways delivering two simulated hours each (12
/// windows, one every second of real time); worker 1 is SIGKILLed a few seconds in and
/// restarted, then the database is restarted. Afterwards: every gateway exited after all its
/// batches were receipted; each gateway's batches are stored once each, with no gap in their
/// sequence; both workers stored some; both are still running and stop cleanly on SIGTERM.
#[test]
fn workers_share_ingest_and_ride_out_a_kill_and_a_database_restart() {
    let _turn = serial();
    let cluster = PgCluster::start();
    let db: TestDb = cluster.database();
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // With a password (the private cluster trusts local connections and ignores it): it must
    // never reach a log.
    let url = db.uri().replacen("postgres@", "postgres:pw-s3cret@", 1);
    assert!(url.contains("pw-s3cret"), "{url}");

    let auth_public = public_key(&run(
        AUTH,
        &[
            "keygen",
            "--key",
            path(&d.join("authority.key")),
            "--database",
            &url,
        ],
    ));
    let config = d.join("authority.toml");
    std::fs::write(
        &config,
        format!(
            "[authority]\nstate_dir = \"{dir}\"\nprivate_key = \"authority.key\"\n\
             database = \"{url}\"\ntimezone = \"UTC\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nshare_group = \"workers\"\n\
             [log]\nlevel = \"info\"\n",
            dir = d.display(),
            port = broker.port
        ),
    )
    .expect("authority.toml");

    let gateways: Vec<String> = (1..=6).map(|i| format!("gw-{i}")).collect();
    for (i, id) in gateways.iter().enumerate() {
        let gw_dir = d.join(id);
        // The simulation's venues, two gateways each.
        let venue = ["supermarket-1", "souk-1", "bus-station-1"][i % 3].to_owned();
        enroll_gateway(&gw_dir, id, &venue, &config);
        std::fs::write(
            gw_dir.join("gateway.toml"),
            format!(
                "[gateway]\nid = \"{id}\"\nvenue = \"{venue}\"\nstate_dir = \"{dir}\"\n\
                 [authority]\npublic_key = \"{auth_public}\"\n[scan]\nsource = \"sim\"\n\
                 [sim]\nseed = {seed}\nphones = 60\nhours = 2.0\nspeed = 600.0\n\
                 [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n\
                 resend_initial_seconds = 1\nresend_max_seconds = 2\n",
                dir = gw_dir.display(),
                seed = 40 + i,
                port = broker.port
            ),
        )
        .expect("gateway.toml");
    }

    let mut w1 = worker(&config, d, 1);
    let w2 = worker(&config, d, 2);
    let started = Instant::now();
    let gateway_runs: Vec<Child> = gateways
        .iter()
        .map(|id| run_gateway_until_delivered(&d.join(id).join("gateway.toml")))
        .collect();

    // A worker killed outright in the middle of the flow (mid-batch or between batches: the
    // kill does not wait for either), and started again with the same session.
    std::thread::sleep(Duration::from_secs(3));
    let _ = w1.0.kill();
    let _ = w1.0.wait();
    std::thread::sleep(Duration::from_secs(1));
    w1 = worker(&config, d, 1);
    // The database restarted under load: sessions cut, the server away for a moment.
    std::thread::sleep(Duration::from_secs(2));
    let restarted = started.elapsed();
    cluster.restart();

    let deadline = Instant::now() + Duration::from_secs(120);
    for gateway in gateway_runs {
        let out = gateway.wait_with_output().expect("gateway exits");
        assert!(
            out.status.success(),
            "gateway failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(Instant::now() < deadline, "gateways took over 120 s");
    }
    let delivered = started.elapsed();
    assert!(
        delivered > restarted,
        "the flow outlasted the database restart"
    );

    // Every batch once, no gap: sequences 1..=n for n batches per gateway.
    let mut client = db.client();
    let rows = client
        .query(
            "SELECT gateway_id, count(*), count(DISTINCT sequence), min(sequence), max(sequence)
             FROM batch GROUP BY gateway_id ORDER BY gateway_id",
            &[],
        )
        .expect("query");
    assert_eq!(rows.len(), gateways.len(), "every gateway delivered");
    for row in &rows {
        let (id, n, distinct, lo, hi): (String, i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        assert_eq!(
            (n, distinct, lo, hi),
            (n, n, 1, n),
            "{id}: batches 1..={n} once each"
        );
        assert!(n >= 12, "{id}: {n} batches for 12 windows");
    }
    let stored_twice: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT batch_id FROM batch GROUP BY batch_id HAVING count(*) > 1) t",
            &[],
        )
        .expect("query")
        .get(0);
    assert_eq!(stored_twice, 0);

    // Both workers took part, both rode out the restart, both stop cleanly.
    for w in [&mut w1.0, &mut { w2 }.0] {
        assert!(
            w.try_wait().expect("wait").is_none(),
            "worker still running"
        );
        signal(w, "TERM");
        let status = w.wait().expect("worker exits");
        assert!(status.success(), "worker after SIGTERM: {status}");
    }
    let logs: Vec<String> = [1, 2]
        .map(|n| std::fs::read_to_string(d.join(format!("worker-{n}.log"))).expect("log"))
        .into();
    assert!(
        logs.iter().any(|l| l.contains("reconnected to PostgreSQL")),
        "a worker reconnected after the restart:\n{}",
        logs.join("\n")
    );
    for (n, log) in (1..).zip(&logs) {
        assert!(
            log.contains("stored batch"),
            "worker {n} stored nothing:\n{log}"
        );
        assert!(!log.contains("pw-s3cret"), "password in the log:\n{log}");
        assert!(
            log.contains("postgres:***@"),
            "the database named, redacted:\n{log}"
        );
    }
    drop(broker);
}

/// Housekeeping leases: one holder at a time per job, jobs independent, given back on
/// release and when the holder's connection ends.
#[test]
fn leases_are_exclusive_and_freed_with_the_connection() {
    let _turn = serial();
    let cluster = PgCluster::start();
    let db = cluster.database();
    let mut a = PgStore::connect(&db.url).expect("connect a");
    let mut b = PgStore::connect(&db.url).expect("connect b");
    assert!(a.try_lease(Lease::Match).expect("lease"));
    assert!(!b.try_lease(Lease::Match).expect("lease"), "held by a");
    assert!(b.try_lease(Lease::Purge).expect("lease"), "another job");
    a.release_lease(Lease::Match).expect("release");
    assert!(b.try_lease(Lease::Match).expect("lease"), "released by a");
    assert!(!a.try_lease(Lease::Purge).expect("lease"), "held by b");
    drop(b);
    // The server frees a session's locks when it ends; it notices the closed socket at once
    // on loopback, but give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.try_lease(Lease::Purge).expect("lease") {
        assert!(Instant::now() < deadline, "lease outlived its holder");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.try_lease(Lease::Match).expect("lease"));
}

/// A watermark is not read while a writer that may hold lower ids is still open: the reader
/// waits for the ingest barrier, and then sees the writer's rows.
#[test]
fn watermark_waits_for_writers_in_flight() {
    let _turn = serial();
    let cluster = PgCluster::start();
    let db = cluster.database();
    let store = PgStore::connect(&db.url).expect("connect");
    let mut writer = db.client();
    let mut tx = writer.transaction().expect("begin");
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared($1)",
        &[&INGEST_BARRIER],
    )
    .expect("barrier, shared");
    let (done, finished) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let watermark = store.sighting_watermark().expect("watermark");
        let changes = store.changes_since_match().expect("changes");
        done.send((watermark, changes.watermark)).expect("send");
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        finished.try_recv().is_err(),
        "watermark read while a writer was in flight"
    );
    tx.commit().expect("commit");
    let read = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("watermark read once the writer committed");
    assert_eq!(read, (0, (0, 0, 0)));
    reader.join().expect("reader");
}

/// The server cutting the connection (a restart, a failover, an administrator) costs at most
/// the call that found it cut: the next one reconnects, with the data intact.
#[test]
fn reconnects_after_the_server_cut_the_connection() {
    let _turn = serial();
    let cluster = PgCluster::start();
    let db = cluster.database();
    let mut store = PgStore::connect(&db.url).expect("connect");
    store.upsert_venue("souk", "market", None).expect("venue");
    let mut admin = db.client();
    let cut: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .expect("terminate")
        .get(0);
    assert_eq!(cut, 1, "the store's session");
    let mut failures = 0;
    let venues = loop {
        match store.venues() {
            Ok(v) => break v,
            Err(e) => {
                failures += 1;
                assert!(failures < 2, "still failing after reconnecting: {e}");
                assert!(e.to_string().contains("list venues") || !e.to_string().is_empty());
            }
        }
    };
    assert_eq!(venues.len(), 1, "data intact");
    assert_eq!(venues[0].name, "souk");
}

/// The daemon prepares today's and tomorrow's partitions ahead of their first batch; doing it
/// again changes nothing.
#[test]
fn days_are_prepared_ahead() {
    let _turn = serial();
    let cluster = PgCluster::start();
    let db = cluster.database();
    let mut store = PgStore::connect(&db.url).expect("connect");
    let day = 20_600;
    store.prepare_days(day..=day + 1).expect("prepare");
    store.prepare_days(day..=day + 1).expect("prepare again");
    let mut client = db.client();
    for table in ["sighting", "tempid_sighting"] {
        let days: Vec<String> = client
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = to_regclass($1) ORDER BY 1",
                &[&table],
            )
            .expect("catalog")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            days,
            [partition_name(table, day), partition_name(table, day + 1)],
            "{table}"
        );
    }
}
