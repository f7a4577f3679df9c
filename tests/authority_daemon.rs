//! The authority daemon (`venuetrace-authority run`, the real binary) when its store refuses
//! one batch while answering everything else (a bug, a constraint): that batch is
//! acknowledged without a receipt and counted, ingest goes on with the others, and the batch
//! is not lost: its gateway keeps it and resends it, and once the store takes it, it is stored
//! once and the gateway's outbox empties. SQLite: the refusal is a trigger planted in the file.

mod common;

use common::mosquitto::Broker;
use common::process::{Killed, enroll_gateway, path, public_key, run};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GW: &str = env!("CARGO_BIN_EXE_venuetrace-gateway");
const AUTH: &str = env!("CARGO_BIN_EXE_venuetrace-authority");

fn stored(db: &std::path::Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).expect("open store");
    let mut stmt = conn
        .prepare("SELECT sequence FROM batch ORDER BY sequence")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .and_then(Iterator::collect)
        .expect("query")
}

#[test]
fn a_batch_the_store_refuses_is_resent_not_lost() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let db = d.join("a.sqlite");
    let auth_public = public_key(&run(
        AUTH,
        &[
            "keygen",
            "--key",
            path(&d.join("authority.key")),
            "--database",
            path(&db),
        ],
    ));
    let config = d.join("authority.toml");
    std::fs::write(
        &config,
        format!(
            "[authority]\nstate_dir = \"{dir}\"\nprivate_key = \"authority.key\"\n\
             database = \"a.sqlite\"\ntimezone = \"UTC\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[log]\nlevel = \"info\"\n",
            dir = d.display(),
            port = broker.port
        ),
    )
    .expect("authority.toml");
    let gw_dir = d.join("gw");
    enroll_gateway(&gw_dir, "gw-1", "souk-1", &config);
    std::fs::write(
        gw_dir.join("gateway.toml"),
        format!(
            "[gateway]\nid = \"gw-1\"\nvenue = \"souk-1\"\nstate_dir = \"{dir}\"\n\
             [authority]\npublic_key = \"{auth_public}\"\n[scan]\nsource = \"sim\"\n\
             [sim]\nseed = 5\nphones = 50\nhours = 1.0\nspeed = 0.0\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n\
             resend_initial_seconds = 1\nresend_max_seconds = 2\n",
            dir = gw_dir.display(),
            port = broker.port
        ),
    )
    .expect("gateway.toml");
    // The store refuses batch 3 of gw-1, and only it.
    rusqlite::Connection::open(&db)
        .expect("open store")
        .execute_batch(
            "CREATE TRIGGER refuse_3 BEFORE INSERT ON batch WHEN NEW.sequence = 3
             BEGIN SELECT RAISE(ABORT, 'refused for the test'); END;",
        )
        .expect("trigger");

    let log = d.join("authority.log");
    let mut authority = Killed(
        Command::new(AUTH)
            .args(["run", "-c", path(&config)])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("authority run"),
    );
    let gateway = Killed(
        Command::new(GW)
            .args([
                "run",
                "--exit-when-delivered",
                "-c",
                path(&gw_dir.join("gateway.toml")),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gateway run"),
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();

    // Refused (and resent, refused again...) while the others are stored around it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seqs = stored(&db);
        if read().contains("store refused this batch") && seqs.len() >= 5 {
            assert!(!seqs.contains(&3), "{seqs:?}");
            assert_eq!(seqs, [1, 2, 4, 5, 6], "every other batch stored");
            break;
        }
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", read());
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut gateway = gateway;
    assert!(
        gateway.0.try_wait().expect("wait").is_none(),
        "the gateway still holds batch 3 (no receipt)"
    );
    assert!(
        authority.0.try_wait().expect("wait").is_none(),
        "ingest goes on"
    );

    // The store takes it again: the gateway's next resend is stored, and it is done.
    rusqlite::Connection::open(&db)
        .expect("open store")
        .execute_batch("DROP TRIGGER refuse_3")
        .expect("drop trigger");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = gateway.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "batch 3 never delivered:\n{}",
            read()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "gateway: {status}");
    assert_eq!(
        stored(&db),
        [1, 2, 3, 4, 5, 6],
        "batch 3 stored once, at last"
    );

    Command::new("kill")
        .args(["-TERM", &authority.0.id().to_string()])
        .status()
        .expect("kill");
    let status = authority.0.wait().expect("authority exits");
    assert!(status.success(), "authority: {status}\n{}", read());
    let log = read();
    assert!(log.contains("store_refused="), "{log}");
    assert!(!log.contains("store_refused=0"), "counted: {log}");
}
