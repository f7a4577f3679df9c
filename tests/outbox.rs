//! The gateway outbox on real files: sequence persistence, atomic window commits, the resend
//! schedule, receipts, retention and quota, schema versioning, file mode, and survival of a
//! process killed with SIGKILL in the middle of committing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use venuetrace::gateway::outbox::{
    Backoff, NewBatch, Outbox, OutboxError, OutboxOptions, PurgeReport, ReceiptOutcome,
    WindowCounters,
};

/// Environment variable that turns [`crash_child_commits_until_killed`] into the child process
/// of [`committed_batches_survive_sigkill`]; its value is the outbox path.
const CRASH_CHILD_ENV: &str = "VENUETRACE_OUTBOX_CRASH_CHILD";

const T0_MS: i64 = 1_700_000_000_000;

/// The envelope of batch `sequence`: a deterministic function of it, 200 to ~6,200 bytes so
/// that some envelopes span several SQLite pages.
fn envelope(sequence: u64) -> Vec<u8> {
    let len = 200 + (sequence.wrapping_mul(2_654_435_761) % 6000) as usize;
    (0..len)
        .map(|i| (sequence.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

fn tag(sequence: u64) -> [u8; 32] {
    let mut tag = [0u8; 32];
    for (i, byte) in tag.iter_mut().enumerate() {
        *byte = (sequence as u8).wrapping_mul(13).wrapping_add(i as u8);
    }
    tag
}

fn batch(sequence: u64) -> NewBatch {
    NewBatch {
        sequence,
        batch_id: format!("gw-1:{sequence}"),
        window_start_unix_s: T0_MS / 1000 + sequence as i64 * 600,
        created_unix_ms: T0_MS + sequence as i64 * 600_000 + 5_000,
        envelope: envelope(sequence),
        receipt_tag: tag(sequence),
    }
}

fn counters(n: u64) -> WindowCounters {
    WindowCounters {
        adverts: n,
        malformed: 2 * n,
        dropped: 3 * n,
        bluetrace: 4 * n,
        sightings: 5 * n,
    }
}

fn open(path: &Path) -> Outbox {
    Outbox::open(path, OutboxOptions::default())
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

fn temp_outbox() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox.sqlite");
    (dir, path)
}

fn sequences(entries: &[venuetrace::gateway::outbox::OutboxEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.sequence).collect()
}

/// The next sequence is 1 + the highest ever committed: it survives closing and reopening
/// the file, and receipting (deleting) every batch does not bring an old number back.
#[test]
fn sequence_persists_across_reopen_and_receipts() {
    let (_dir, path) = temp_outbox();
    {
        let mut outbox = open(&path);
        assert_eq!(outbox.next_sequence().expect("reads"), 1);
        for seq in 1..=3 {
            outbox
                .commit_window(&batch(seq), &counters(1))
                .expect("commits");
        }
        assert_eq!(outbox.next_sequence().expect("reads"), 4);
    }
    let mut outbox = open(&path);
    assert_eq!(outbox.next_sequence().expect("reads"), 4);
    for seq in 1..=3 {
        assert_eq!(
            outbox
                .receipt(&format!("gw-1:{seq}"), &tag(seq))
                .expect("handled"),
            ReceiptOutcome::Removed
        );
    }
    assert_eq!(outbox.depth().expect("reads").batches, 0);
    assert_eq!(outbox.next_sequence().expect("reads"), 4);
    drop(outbox);
    let outbox = open(&path);
    assert_eq!(outbox.next_sequence().expect("reads"), 4);
    assert_eq!(outbox.totals().expect("reads"), counters(3));
}

/// A window commit that fails part-way leaves nothing behind: reusing a receipted batch's
/// sequence fails after the totals and the row were written, and neither is visible after;
/// a duplicate batch id fails the same way. The outbox stays usable.
#[test]
fn commit_window_is_all_or_nothing() {
    let (_dir, path) = temp_outbox();
    let mut outbox = open(&path);
    outbox
        .commit_window(&batch(1), &counters(1))
        .expect("commits");
    assert_eq!(
        outbox.receipt("gw-1:1", &tag(1)).expect("handled"),
        ReceiptOutcome::Removed
    );

    // Sequence 1 is free in the table but was used: refused, mid-transaction.
    let err = outbox
        .commit_window(&batch(1), &counters(100))
        .expect_err("sequence reuse is refused");
    assert!(
        matches!(
            err,
            OutboxError::SequenceReused {
                sequence: 1,
                next: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    // A new sequence with an id already stored: refused by the insert.
    outbox
        .commit_window(&batch(2), &counters(1))
        .expect("commits");
    let mut clash = batch(3);
    clash.batch_id = "gw-1:2".into();
    let err = outbox
        .commit_window(&clash, &counters(100))
        .expect_err("duplicate id is refused");
    assert!(
        matches!(err, OutboxError::Duplicate { sequence: 3, .. }),
        "{err}"
    );

    // The same sequence twice: refused.
    let err = outbox
        .commit_window(&batch(2), &counters(100))
        .expect_err("duplicate sequence is refused");
    assert!(
        matches!(err, OutboxError::Duplicate { sequence: 2, .. }),
        "{err}"
    );

    drop(outbox);
    let mut outbox = open(&path);
    assert_eq!(outbox.totals().expect("reads"), counters(2));
    assert_eq!(outbox.next_sequence().expect("reads"), 3);
    let stored = outbox
        .due(
            T0_MS,
            &Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
            10,
        )
        .expect("lists");
    assert_eq!(sequences(&stored), [2]);
    outbox
        .commit_window(&batch(3), &counters(1))
        .expect("still usable");
}

/// Batches are due when never sent; after sending, again once `initial × 2^(attempts−1)`
/// (capped at `max`) has passed; oldest first and at most `limit`. A reconnect makes all due
/// at once, keeping the attempt counts.
#[test]
fn due_follows_the_backoff_schedule() {
    let (_dir, path) = temp_outbox();
    let mut outbox = open(&path);
    let backoff = Backoff {
        initial: Duration::from_secs(30),
        max: Duration::from_secs(120),
    };
    for seq in 1..=3 {
        outbox
            .commit_window(&batch(seq), &counters(1))
            .expect("commits");
    }
    let t = T0_MS;
    let all = outbox.due(t, &backoff, 10).expect("lists");
    assert_eq!(sequences(&all), [1, 2, 3]);
    assert_eq!(all[0], {
        let b = batch(1);
        venuetrace::gateway::outbox::OutboxEntry {
            sequence: 1,
            batch_id: b.batch_id,
            window_start_unix_s: b.window_start_unix_s,
            created_unix_ms: b.created_unix_ms,
            envelope: b.envelope,
            attempts: 0,
            last_sent_unix_ms: None,
        }
    });
    assert_eq!(
        sequences(&outbox.due(t, &backoff, 2).expect("lists")),
        [1, 2]
    );
    assert!(outbox.due(t, &backoff, 0).expect("lists").is_empty());

    outbox.mark_sent(1, t).expect("marks");
    outbox.mark_sent(2, t).expect("marks");
    assert_eq!(sequences(&outbox.due(t, &backoff, 10).expect("lists")), [3]);
    assert_eq!(
        sequences(&outbox.due(t + 29_999, &backoff, 10).expect("lists")),
        [3]
    );
    assert_eq!(
        sequences(&outbox.due(t + 30_000, &backoff, 10).expect("lists")),
        [1, 2, 3]
    );

    // Second attempt of batch 1: next wait is 60 s.
    outbox.mark_sent(1, t + 30_000).expect("marks");
    assert_eq!(
        sequences(&outbox.due(t + 89_999, &backoff, 10).expect("lists")),
        [2, 3]
    );
    assert_eq!(
        sequences(&outbox.due(t + 90_000, &backoff, 10).expect("lists")),
        [1, 2, 3]
    );

    // Many attempts: the wait is capped at 120 s.
    for _ in 0..10 {
        outbox.mark_sent(1, t + 100_000).expect("marks");
    }
    let due = outbox.due(t + 219_999, &backoff, 10).expect("lists");
    assert_eq!(sequences(&due), [2, 3]);
    assert_eq!(
        sequences(&outbox.due(t + 220_000, &backoff, 10).expect("lists")),
        [1, 2, 3]
    );

    // Receipted meanwhile: marking it sent is harmless.
    outbox.receipt("gw-1:3", &tag(3)).expect("handled");
    outbox
        .mark_sent(3, t)
        .expect("a vanished batch is not an error");

    // Reconnect: everything sent before is due now, attempts kept.
    assert_eq!(outbox.mark_all_unsent().expect("marks"), 2);
    let due = outbox.due(t + 100_001, &backoff, 10).expect("lists");
    assert_eq!(sequences(&due), [1, 2]);
    assert_eq!(due[0].attempts, 12);
    assert_eq!(due[0].last_sent_unix_ms, None);
    assert_eq!(due[1].attempts, 1);
}

/// A receipt whose tag matches deletes the batch; a second copy of it, or a receipt for a
/// batch never ours, is `Unknown`; a receipt with the wrong tag is `Forged` and the batch stays.
#[test]
fn receipts_remove_only_with_the_right_tag() {
    let (_dir, path) = temp_outbox();
    let mut outbox = open(&path);
    outbox
        .commit_window(&batch(1), &counters(1))
        .expect("commits");
    outbox
        .commit_window(&batch(2), &counters(1))
        .expect("commits");

    let mut wrong = tag(1);
    wrong[31] ^= 1;
    assert_eq!(
        outbox.receipt("gw-1:1", &wrong).expect("handled"),
        ReceiptOutcome::Forged
    );
    assert_eq!(
        outbox.receipt("gw-1:1", &tag(2)).expect("handled"),
        ReceiptOutcome::Forged
    );
    assert_eq!(outbox.depth().expect("reads").batches, 2);

    assert_eq!(
        outbox.receipt("gw-1:1", &tag(1)).expect("handled"),
        ReceiptOutcome::Removed
    );
    assert_eq!(
        outbox.receipt("gw-1:1", &tag(1)).expect("handled"),
        ReceiptOutcome::Unknown
    );
    assert_eq!(
        outbox.receipt("gw-9:1", &tag(1)).expect("handled"),
        ReceiptOutcome::Unknown
    );

    let depth = outbox.depth().expect("reads");
    assert_eq!(depth.batches, 1);
    assert_eq!(depth.bytes, envelope(2).len() as u64);
    assert_eq!(depth.oldest_created_unix_ms, Some(batch(2).created_unix_ms));
}

/// Purging deletes batches whose window started longer ago than the retention period, and
/// reports how many and how many bytes; batches inside the period stay.
#[test]
fn purge_by_age_reports_counts() {
    let (_dir, path) = temp_outbox();
    let day_s = 24 * 3600;
    let mut outbox = Outbox::open(
        &path,
        OutboxOptions {
            retention: Duration::from_secs(day_s as u64),
            max_bytes: u64::MAX,
        },
    )
    .expect("opens");
    let now_s = T0_MS / 1000;
    let starts = [
        now_s - 2 * day_s,
        now_s - day_s - 1,
        now_s - day_s,
        now_s - 600,
    ];
    for (i, start) in starts.iter().enumerate() {
        let mut b = batch(i as u64 + 1);
        b.window_start_unix_s = *start;
        b.envelope = vec![0xEE; 100 + i];
        outbox.commit_window(&b, &counters(1)).expect("commits");
    }
    let report = outbox.purge(T0_MS).expect("purges");
    assert_eq!(
        report,
        PurgeReport {
            expired_batches: 2,
            expired_bytes: 100 + 101,
            over_quota_batches: 0,
            over_quota_bytes: 0,
        }
    );
    assert_eq!(outbox.depth().expect("reads").batches, 2);
    assert!(outbox.purge(T0_MS).expect("purges").is_empty());
    // Purging does not give sequences back, nor touch the totals.
    assert_eq!(outbox.next_sequence().expect("reads"), 5);
    assert_eq!(outbox.totals().expect("reads"), counters(4));
}

/// Past the size quota, the oldest batches are deleted until the rest fits, and the report
/// says how many and how many bytes.
#[test]
fn purge_by_quota_deletes_oldest_first() {
    let (_dir, path) = temp_outbox();
    let mut outbox = Outbox::open(
        &path,
        OutboxOptions {
            retention: Duration::from_secs(21 * 24 * 3600),
            max_bytes: 250,
        },
    )
    .expect("opens");
    for seq in 1..=4 {
        let mut b = batch(seq);
        b.envelope = vec![seq as u8; 100];
        outbox.commit_window(&b, &counters(1)).expect("commits");
    }
    let report = outbox.purge(T0_MS + 3_600_000).expect("purges");
    assert_eq!(
        report,
        PurgeReport {
            expired_batches: 0,
            expired_bytes: 0,
            over_quota_batches: 2,
            over_quota_bytes: 200,
        }
    );
    let depth = outbox.depth().expect("reads");
    assert_eq!((depth.batches, depth.bytes), (2, 200));
    let backoff = Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
    };
    assert_eq!(
        sequences(&outbox.due(T0_MS, &backoff, 10).expect("lists")),
        [3, 4]
    );
}

/// A file whose schema version is newer than this code knows is refused with an error naming
/// the file and both versions, and left as it was; so is another program's SQLite file.
#[test]
fn other_schema_versions_and_foreign_files_are_refused() {
    let (dir, path) = temp_outbox();
    drop(open(&path));
    {
        let conn = rusqlite::Connection::open(&path).expect("opens raw");
        conn.pragma_update(None, "user_version", 2)
            .expect("sets version");
    }
    let err = Outbox::open(&path, OutboxOptions::default()).expect_err("refused");
    assert!(
        matches!(
            err,
            OutboxError::NewerSchema {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("schema version 2"), "{message}");
    let conn = rusqlite::Connection::open(&path).expect("opens raw");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("reads");
    assert_eq!(version, 2, "a refused file is not modified");

    let foreign = dir.path().join("other.sqlite");
    {
        let conn = rusqlite::Connection::open(&foreign).expect("creates raw");
        conn.execute_batch("CREATE TABLE t (x); PRAGMA user_version = 1;")
            .expect("writes");
    }
    let err = Outbox::open(&foreign, OutboxOptions::default()).expect_err("refused");
    assert!(matches!(err, OutboxError::NotAnOutbox { .. }), "{err}");
    let conn = rusqlite::Connection::open(&foreign).expect("opens raw");
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("reads");
    assert_eq!(mode, "delete", "a refused file is not switched to WAL");
}

/// The outbox's directory must exist: a missing one is an error naming it, not created.
#[test]
fn missing_directory_is_a_clear_error() {
    let (dir, _) = temp_outbox();
    let path = dir.path().join("no-such-dir").join("outbox.sqlite");
    let err = Outbox::open(&path, OutboxOptions::default()).expect_err("refused");
    assert!(matches!(err, OutboxError::NoDirectory { .. }), "{err}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    assert!(!path.parent().expect("has parent").exists());
}

/// The database file and its WAL are readable by their owner only (0600), also when the
/// file existed before with a wider mode.
#[test]
fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = temp_outbox();
    let mut outbox = open(&path);
    outbox
        .commit_window(&batch(1), &counters(1))
        .expect("commits");
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    for file in [&path, &wal] {
        let mode = std::fs::metadata(file)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }
    drop(outbox);

    let (_dir2, wide) = temp_outbox();
    std::fs::write(&wide, b"").expect("creates");
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    drop(open(&wide));
    let mode = std::fs::metadata(&wide)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

/// Privacy by construction (DESIGN.md §3.2): the file has exactly the documented tables and
/// columns, so there is no place a plaintext RPI or a device address could be stored.
#[test]
fn schema_has_exactly_the_documented_columns() {
    let (_dir, path) = temp_outbox();
    drop(open(&path));
    let conn = rusqlite::Connection::open(&path).expect("opens raw");
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .expect("prepares")
        .query_map([], |row| row.get(0))
        .expect("queries")
        .collect::<Result<_, _>>()
        .expect("reads");
    tables.sort();
    assert_eq!(tables, ["batches", "meta", "totals"]);
    let columns = |table: &str| -> Vec<String> {
        conn.prepare(&format!(
            "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
        ))
        .expect("prepares")
        .query_map([], |row| row.get(0))
        .expect("queries")
        .collect::<Result<_, _>>()
        .expect("reads")
    };
    assert_eq!(
        columns("batches"),
        [
            "sequence",
            "batch_id",
            "window_start_unix_s",
            "created_unix_ms",
            "envelope",
            "receipt_tag",
            "attempts",
            "last_sent_unix_ms",
        ]
    );
    assert_eq!(columns("meta"), ["id", "next_sequence"]);
    assert_eq!(
        columns("totals"),
        [
            "id",
            "adverts",
            "malformed",
            "dropped",
            "bluetrace",
            "sightings"
        ]
    );
}

/// Not a specification on its own: the child process of [`committed_batches_survive_sigkill`].
/// Without the environment variable it does nothing. With it, it commits one batch after
/// another (envelope = `envelope(sequence)`, one advert each) and prints `committed N` only
/// after `commit_window` has returned, until it is killed.
#[test]
fn crash_child_commits_until_killed() {
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let mut outbox = open(Path::new(&path));
    let mut stdout = std::io::stdout().lock();
    // Bounded, so an orphaned child cannot run forever if its parent died.
    for _ in 0..100_000 {
        let seq = outbox.next_sequence().expect("reads");
        outbox
            .commit_window(&batch(seq), &counters(1))
            .expect("commits");
        writeln!(stdout, "committed {seq}").expect("writes");
        stdout.flush().expect("flushes");
    }
}

/// Crash safety: a process committing batches in a loop is killed with SIGKILL at a random
/// moment, 25 times over the same file. After each kill the file opens, passes SQLite's
/// integrity check, and holds every batch the child reported committed, intact; every batch
/// it holds is intact, sequences are contiguous, and the totals agree with the batches
/// (no half-committed window).
#[test]
fn committed_batches_survive_sigkill() {
    let (_dir, path) = temp_outbox();
    let exe = std::env::current_exe().expect("test binary path");
    let mut rng = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
        | 1;
    eprintln!("random seed {rng}");
    let mut next_random = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut reported_total = 0usize;
    for round in 0..25 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_commits_until_killed",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("child starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut reported = Vec::new();
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                // A line cut by the kill has no newline: it does not count.
                let Some(text) = line.strip_suffix(b"\n") else {
                    break;
                };
                let text = String::from_utf8_lossy(text);
                if let Some(seq) = text.strip_prefix("committed ") {
                    let seq: u64 = seq.parse().expect("a sequence number");
                    if reported.is_empty() {
                        let _ = first_tx.send(());
                    }
                    reported.push(seq);
                }
            }
            reported
        });
        // Kill while the loop is running: after its first commit, plus 0-40 ms.
        first_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("round {round}: the child committed nothing in 30 s"));
        std::thread::sleep(Duration::from_micros(next_random() % 40_000));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let reported = reader.join().expect("reader thread");
        reported_total += reported.len();
        eprintln!("round {round}: child reported {} commits", reported.len());

        let outbox = open(&path);
        let conn = rusqlite::Connection::open(&path).expect("opens raw");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("checks");
        assert_eq!(check, "ok", "round {round}: integrity check");
        let rows: Vec<(u64, Vec<u8>)> = conn
            .prepare("SELECT sequence, envelope FROM batches ORDER BY sequence")
            .expect("prepares")
            .query_map([], |row| Ok((row.get::<_, i64>(0)? as u64, row.get(1)?)))
            .expect("queries")
            .collect::<Result<_, _>>()
            .expect("reads");
        for (seq, bytes) in &rows {
            assert!(
                *bytes == envelope(*seq),
                "round {round}: batch {seq} is not intact"
            );
        }
        let stored: Vec<u64> = rows.iter().map(|(seq, _)| *seq).collect();
        let expected: Vec<u64> = (1..=stored.len() as u64).collect();
        assert_eq!(
            stored, expected,
            "round {round}: sequences are contiguous from 1"
        );
        for seq in &reported {
            assert!(
                stored.contains(seq),
                "round {round}: reported batch {seq} is missing"
            );
        }
        assert_eq!(
            outbox.next_sequence().expect("reads"),
            stored.len() as u64 + 1
        );
        assert_eq!(
            outbox.totals().expect("reads"),
            counters(stored.len() as u64)
        );
    }
    eprintln!("{reported_total} commits reported over 25 rounds");
    assert!(reported_total >= 25, "each round committed at least once");
}
