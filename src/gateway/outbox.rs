//! The gateway's outbox: sealed batches waiting for the authority's receipt, on disk (SQLite).
//!
//! Owns the file format (schema, migrations, pragmas), the batch sequence counter, the resend
//! schedule ([`Backoff`]), receipt checking, retention and the size quota. It stores only what
//! a stolen SD card may reveal (DESIGN.md §3.2): sealed envelopes, their receipt tags, times and
//! cumulative counters. There is no column for a plaintext RPI or a device address, and the API
//! takes none: sealing happens before [`Outbox::commit_window`] is called.
//!
//! Left to others: sealing (the envelope is opaque bytes here), publishing over MQTT, and
//! logging (purges and receipts return reports; the caller logs them with their counts).
//!
//! # Threading
//!
//! This is a blocking API (rusqlite does file I/O and `fsync` in every commit). The daemon owns
//! one [`Outbox`] on one dedicated blocking thread and talks to it over a channel; it is never
//! called from async workers, where a slow SD card would stall the runtime.
//!
//! # Durability
//!
//! The database runs in WAL mode with `synchronous = FULL`: every commit syncs the WAL, so a
//! batch whose window has been closed survives a power cut until the authority's receipt
//! deletes it. (`NORMAL` would be faster but may lose the last commits on power loss, and a
//! lost batch is a lost hour of a venue's sightings.)

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// `PRAGMA application_id` of an outbox file ("VTOB"), so another program's SQLite file is
/// refused instead of being migrated.
pub const APPLICATION_ID: i32 = 0x5654_4f42;

/// The schema, version 1. Tables and columns (a test asserts exactly these exist):
///
/// - `batches`: one sealed batch per closed window.
///   `sequence` (the gateway's batch counter), `batch_id` (what the authority receipts),
///   `window_start_unix_s`, `created_unix_ms`, `envelope` (the sealed bytes), `receipt_tag`
///   (the 32-byte MAC the receipt must carry), `attempts` (times published), `last_sent_unix_ms`
///   (NULL = due now).
/// - `meta`: one row, `next_sequence`: 1 + the highest sequence ever committed, kept even after
///   that batch is receipted and deleted, so sequences (and batch ids) are never reused.
/// - `totals`: one row of cumulative counters: `adverts`, `malformed`, `dropped`, `bluetrace`,
///   `sightings`.
const SCHEMA_V1: &str = "
CREATE TABLE batches (
    sequence            INTEGER PRIMARY KEY,
    batch_id            TEXT    NOT NULL UNIQUE,
    window_start_unix_s INTEGER NOT NULL,
    created_unix_ms     INTEGER NOT NULL,
    envelope            BLOB    NOT NULL,
    receipt_tag         BLOB    NOT NULL CHECK (length(receipt_tag) = 32),
    attempts            INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_sent_unix_ms   INTEGER
) STRICT;
CREATE INDEX batches_by_window ON batches (window_start_unix_s);
CREATE TABLE meta (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    next_sequence INTEGER NOT NULL CHECK (next_sequence >= 1)
) STRICT;
INSERT INTO meta (id, next_sequence) VALUES (1, 1);
CREATE TABLE totals (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    adverts   INTEGER NOT NULL,
    malformed INTEGER NOT NULL,
    dropped   INTEGER NOT NULL,
    bluetrace INTEGER NOT NULL,
    sightings INTEGER NOT NULL
) STRICT;
INSERT INTO totals (id, adverts, malformed, dropped, bluetrace, sightings) VALUES (1, 0, 0, 0, 0, 0);
";

/// How long to wait for a lock held by another connection (e.g. `status` reading the file)
/// before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits on what the outbox keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxOptions {
    /// Batches whose window started longer ago than this are purged, receipted or not
    /// (DESIGN.md §3.4). Default 21 days.
    pub retention: Duration,
    /// Quota on the total size of stored envelopes, bytes: past it, the oldest batches are
    /// purged. Default 512 MiB.
    pub max_bytes: u64,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(21 * 24 * 3600),
            max_bytes: 512 * 1024 * 1024,
        }
    }
}

/// A sealed batch to store at window close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBatch {
    /// The gateway's batch counter; must be at least [`Outbox::next_sequence`].
    pub sequence: u64,
    /// The batch id the authority will name in its receipt.
    pub batch_id: String,
    /// Start of the window the batch covers, Unix seconds.
    pub window_start_unix_s: i64,
    /// When the batch was sealed, Unix milliseconds.
    pub created_unix_ms: i64,
    /// The sealed (encrypted) envelope, opaque here.
    pub envelope: Vec<u8>,
    /// The MAC the authority's receipt must carry for this batch.
    pub receipt_tag: [u8; 32],
}

/// A stored batch, as handed to the publisher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The gateway's batch counter.
    pub sequence: u64,
    /// The batch id the authority will name in its receipt.
    pub batch_id: String,
    /// Start of the window the batch covers, Unix seconds.
    pub window_start_unix_s: i64,
    /// When the batch was sealed, Unix milliseconds.
    pub created_unix_ms: i64,
    /// The sealed envelope to publish.
    pub envelope: Vec<u8>,
    /// How many times it has been published so far.
    pub attempts: u32,
    /// When it was last published, Unix milliseconds (`None`: never, or reset by a reconnect).
    pub last_sent_unix_ms: Option<i64>,
}

/// Counters of one window (added up in the `totals` table by [`Outbox::commit_window`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounters {
    /// Advertisements received.
    pub adverts: u64,
    /// Malformed GAEN payloads dropped.
    pub malformed: u64,
    /// Distinct RPIs dropped because the window's cap was reached.
    pub dropped: u64,
    /// BlueTrace adverts counted.
    pub bluetrace: u64,
    /// Sightings (distinct RPIs) sealed into batches.
    pub sightings: u64,
}

/// What a receipt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// The tag matched: the batch is safely at the authority and was deleted here.
    Removed,
    /// No such batch here: already receipted (receipts may arrive twice) or never ours.
    Unknown,
    /// The batch exists but the tag does not match: someone other than the authority sent
    /// this receipt. The batch is kept.
    Forged,
}

/// What [`Outbox::purge`] deleted, for the caller to log (DESIGN.md §3.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Batches deleted because their window is older than the retention period.
    pub expired_batches: u64,
    /// Envelope bytes of those.
    pub expired_bytes: u64,
    /// Batches deleted (oldest first) to bring the outbox under its size quota.
    pub over_quota_batches: u64,
    /// Envelope bytes of those.
    pub over_quota_bytes: u64,
}

impl PurgeReport {
    /// Whether anything was deleted.
    pub fn is_empty(&self) -> bool {
        self.expired_batches == 0 && self.over_quota_batches == 0
    }
}

/// How much is waiting in the outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    /// Batches not yet receipted.
    pub batches: u64,
    /// Their envelope bytes.
    pub bytes: u64,
    /// When the oldest of them was sealed, Unix milliseconds.
    pub oldest_created_unix_ms: Option<i64>,
}

/// The resend schedule of a batch that has no receipt yet: exponential, capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first publication.
    pub initial: Duration,
    /// Longest wait between publications.
    pub max: Duration,
}

impl Backoff {
    /// How long after its last publication a batch published `attempts` times is due again:
    /// zero for a batch never published, else `min(initial × 2^(attempts − 1), max)`.
    pub fn delay(&self, attempts: u32) -> Duration {
        let Some(doublings) = attempts.checked_sub(1) else {
            return Duration::ZERO;
        };
        // Past 2^31 (or a Duration overflow) the cap has long been reached.
        1u32.checked_shl(doublings)
            .and_then(|factor| self.initial.checked_mul(factor))
            .map_or(self.max, |delay| delay.min(self.max))
    }
}

/// Why an outbox operation failed. Each names the file and the operation.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The directory the outbox file goes in does not exist (it is not created here: a
    /// missing state directory is a deployment mistake worth seeing).
    #[error("cannot open outbox {path}: directory {} does not exist", dir.display())]
    NoDirectory {
        /// The outbox file.
        path: PathBuf,
        /// Its missing parent directory.
        dir: PathBuf,
    },
    /// A file-system operation on the outbox file failed.
    #[error("cannot {operation} outbox {path}")]
    Io {
        /// The outbox file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("cannot {operation} outbox {path}")]
    Sqlite {
        /// The outbox file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite would not switch the file to WAL mode (e.g. a file system without shared memory).
    #[error("cannot open outbox {path}: SQLite refused WAL mode (journal mode stayed {mode})")]
    NoWal {
        /// The file.
        path: PathBuf,
        /// The journal mode it stayed in.
        mode: String,
    },
    /// The file is a SQLite database of some other program.
    #[error("{path} is not a venuetrace outbox (SQLite application_id {found:#010x})")]
    NotAnOutbox {
        /// The file.
        path: PathBuf,
        /// Its application id.
        found: i32,
    },
    /// The file was written by a newer venuetrace, with a schema this one does not know.
    #[error(
        "outbox {path} has schema version {found}, newer than version {supported} that this \
         program knows: run a newer venuetrace-gateway, or move the file aside"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest version this code knows.
        supported: i64,
    },
    /// The batch's sequence was already used (committed before, maybe receipted since).
    #[error(
        "cannot commit batch {batch_id} to outbox {path}: sequence {sequence} was already used \
         (next is {next})"
    )]
    SequenceReused {
        /// The file.
        path: PathBuf,
        /// The batch's id.
        batch_id: String,
        /// The sequence given.
        sequence: u64,
        /// The lowest sequence still free.
        next: u64,
    },
    /// A batch with this sequence or batch id is already in the outbox.
    #[error(
        "cannot commit batch {batch_id} to outbox {path}: sequence {sequence} or its batch id is already stored"
    )]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The batch's id.
        batch_id: String,
        /// The batch's sequence.
        sequence: u64,
    },
    /// A number does not fit SQLite's signed 64-bit integers.
    #[error("cannot {operation} outbox {path}: {what} {value} is too large")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// Which number.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A stored value is out of its documented range (the file was edited or is corrupt).
    #[error("outbox {path} is corrupt: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

impl OutboxError {
    /// The sysexits code for this failure, if it ends a command.
    pub fn exit(&self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            OutboxError::NoDirectory { .. } => Exit::CantCreat,
            OutboxError::Io { .. } | OutboxError::Sqlite { .. } | OutboxError::NoWal { .. } => {
                Exit::IoErr
            }
            OutboxError::NotAnOutbox { .. }
            | OutboxError::NewerSchema { .. }
            | OutboxError::Corrupt { .. } => Exit::DataErr,
            OutboxError::SequenceReused { .. }
            | OutboxError::Duplicate { .. }
            | OutboxError::TooLarge { .. } => Exit::Software,
        }
    }
}

/// The outbox file, open. See the module documentation for threading and durability.
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
    options: OutboxOptions,
}

impl Outbox {
    /// Opens (creating it if needed, mode 0600) the outbox at `path`, whose directory must
    /// exist, and migrates it to the current schema. A file of a newer schema, or another
    /// program's SQLite file, is refused.
    pub fn open(path: &Path, options: OutboxOptions) -> Result<Self, OutboxError> {
        let dir = match path.parent() {
            Some(dir) if dir.as_os_str().is_empty() => Path::new("."),
            Some(dir) => dir,
            None => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(OutboxError::NoDirectory {
                path: path.to_owned(),
                dir: dir.to_owned(),
            });
        }
        create_private(path)?;
        let sqlite = |operation| sql_err(path, operation);
        let conn = Connection::open_with_flags(
            path,
            // No CREATE: `create_private` made the file with its mode; no URI: a path is a path.
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite("set the busy timeout of"))?;
        // Refuse a foreign or newer file before changing anything in it (journal mode included).
        check_identity(&conn, path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sqlite("enable WAL mode on"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OutboxError::NoWal {
                path: path.to_owned(),
                mode,
            });
        }
        // FULL, not NORMAL: in WAL mode NORMAL skips the sync at commit, and a batch without a
        // receipt must survive a power cut (module documentation).
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite("set synchronous = FULL on"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sqlite("enable foreign keys on"))?;
        // The outbox appends one row per window and reads a few small columns to schedule
        // resends: 512 KiB of page cache is plenty, and keeps a Pi's memory flat instead of
        // letting SQLite's default 2 MiB cache fill over the first hours (scripts/memory-soak).
        conn.pragma_update(None, "cache_size", -512)
            .map_err(sqlite("set cache_size on"))?;
        let mut outbox = Self {
            conn,
            path: path.to_owned(),
            options,
        };
        outbox.migrate()?;
        Ok(outbox)
    }

    /// The file this outbox lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The limits this outbox was opened with.
    pub fn options(&self) -> &OutboxOptions {
        &self.options
    }

    /// Replaces the retention and quota (a configuration reload); they apply from the next
    /// purge.
    pub fn set_options(&mut self, options: OutboxOptions) {
        self.options = options;
    }

    fn sqlite(&self, operation: &'static str) -> impl FnOnce(rusqlite::Error) -> OutboxError {
        sql_err(&self.path, operation)
    }

    /// Brings the schema to [`SCHEMA_VERSION`], in one transaction.
    fn migrate(&mut self) -> Result<(), OutboxError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(&path, "migrate"))?;
        // Checked again inside the transaction: another process may have migrated meanwhile.
        let version = check_identity(&tx, &path)?;
        if version < 1 {
            tx.execute_batch(SCHEMA_V1)
                .map_err(sql_err(&path, "create the schema of"))?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(sql_err(&path, "create the schema of"))?;
        }
        // Later versions: `if version < 2 { ... }`, each step in this same transaction.
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql_err(&path, "migrate"))?;
        tx.commit().map_err(sql_err(&path, "migrate"))
    }

    fn to_i64(
        &self,
        operation: &'static str,
        what: &'static str,
        value: u64,
    ) -> Result<i64, OutboxError> {
        i64::try_from(value).map_err(|_| OutboxError::TooLarge {
            path: self.path.clone(),
            operation,
            what,
            value,
        })
    }

    fn to_u64(&self, what: &str, value: i64) -> Result<u64, OutboxError> {
        u64::try_from(value).map_err(|_| OutboxError::Corrupt {
            path: self.path.clone(),
            what: format!("{what} is negative ({value})"),
        })
    }

    /// The sequence the next batch gets: 1 + the highest sequence ever committed (also when
    /// that batch has since been receipted and deleted); 1 for a new outbox.
    pub fn next_sequence(&self) -> Result<u64, OutboxError> {
        let next: i64 = self
            .conn
            .query_row("SELECT next_sequence FROM meta WHERE id = 1", [], |row| {
                row.get(0)
            })
            .map_err(self.sqlite("read the next sequence from"))?;
        self.to_u64("meta.next_sequence", next)
    }

    /// Stores a closed window in one transaction: the sealed batch, the advanced sequence
    /// counter and the window's counters added to the totals. Either all of it is stored or
    /// (on any error) none of it.
    ///
    /// Fails if `batch.sequence` is below [`next_sequence`](Self::next_sequence) (sequences are
    /// never reused) or its sequence or batch id is already stored. A sequence above it is
    /// accepted (the gap is harmless) and the counter moves past it.
    pub fn commit_window(
        &mut self,
        batch: &NewBatch,
        counters: &WindowCounters,
    ) -> Result<(), OutboxError> {
        const OP: &str = "commit a window to";
        let sequence = self.to_i64(OP, "sequence", batch.sequence)?;
        let add = [
            self.to_i64(OP, "adverts counter", counters.adverts)?,
            self.to_i64(OP, "malformed counter", counters.malformed)?,
            self.to_i64(OP, "dropped counter", counters.dropped)?,
            self.to_i64(OP, "bluetrace counter", counters.bluetrace)?,
            self.to_i64(OP, "sightings counter", counters.sightings)?,
        ];
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(&path, OP))?;
        // The order below is deliberate only in that any step may fail after earlier ones
        // succeeded; the transaction makes that invisible (tests rely on it).
        tx.execute(
            "UPDATE totals SET adverts = adverts + ?1, malformed = malformed + ?2, \
             dropped = dropped + ?3, bluetrace = bluetrace + ?4, sightings = sightings + ?5 \
             WHERE id = 1",
            params![add[0], add[1], add[2], add[3], add[4]],
        )
        .map_err(sql_err(&path, OP))?;
        let inserted = tx.execute(
            "INSERT INTO batches (sequence, batch_id, window_start_unix_s, created_unix_ms, \
             envelope, receipt_tag) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                sequence,
                batch.batch_id,
                batch.window_start_unix_s,
                batch.created_unix_ms,
                batch.envelope,
                batch.receipt_tag.as_slice(),
            ],
        );
        match inserted {
            Ok(_) => {}
            Err(source)
                if source.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
            {
                return Err(OutboxError::Duplicate {
                    path,
                    batch_id: batch.batch_id.clone(),
                    sequence: batch.sequence,
                });
            }
            Err(source) => {
                return Err(OutboxError::Sqlite {
                    path,
                    operation: OP,
                    source,
                });
            }
        }
        let advanced = tx
            .execute(
                "UPDATE meta SET next_sequence = ?1 + 1 WHERE id = 1 AND next_sequence <= ?1",
                params![sequence],
            )
            .map_err(sql_err(&path, OP))?;
        if advanced == 0 {
            let next: i64 = tx
                .query_row("SELECT next_sequence FROM meta WHERE id = 1", [], |row| {
                    row.get(0)
                })
                .map_err(sql_err(&path, OP))?;
            // Dropping `tx` rolls back the totals and the insert.
            return Err(OutboxError::SequenceReused {
                path,
                batch_id: batch.batch_id.clone(),
                sequence: batch.sequence,
                next: u64::try_from(next).unwrap_or(0),
            });
        }
        tx.commit().map_err(sql_err(&path, OP))
    }

    /// Up to `limit` batches to publish now, oldest first: those never published (or reset by
    /// [`mark_all_unsent`](Self::mark_all_unsent)) and those last published at least
    /// `backoff.delay(attempts)` before `now_unix_ms`.
    pub fn due(
        &self,
        now_unix_ms: i64,
        backoff: &Backoff,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, OutboxError> {
        const OP: &str = "list due batches in";
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The schedule is decided in Rust (one definition, `Backoff::delay`) over the small
        // metadata columns; envelopes are read only for the batches picked. An outbox holds
        // at most a few thousand batches (21 days of 10-minute windows).
        let mut picked = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT sequence, attempts, last_sent_unix_ms FROM batches ORDER BY sequence",
                )
                .map_err(self.sqlite(OP))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                })
                .map_err(self.sqlite(OP))?;
            for row in rows {
                let (sequence, attempts, last_sent) = row.map_err(self.sqlite(OP))?;
                let is_due = match last_sent {
                    None => true,
                    Some(last) => {
                        let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
                        let delay =
                            i64::try_from(backoff.delay(attempts).as_millis()).unwrap_or(i64::MAX);
                        now_unix_ms.saturating_sub(last) >= delay
                    }
                };
                if is_due {
                    picked.push(sequence);
                    if picked.len() == limit {
                        break;
                    }
                }
            }
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT sequence, batch_id, window_start_unix_s, created_unix_ms, envelope, \
                 attempts, last_sent_unix_ms FROM batches WHERE sequence = ?1",
            )
            .map_err(self.sqlite(OP))?;
        let mut entries = Vec::with_capacity(picked.len());
        for sequence in picked {
            let row = stmt
                .query_row([sequence], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, Vec<u8>>(4)?,
                        row.get::<_, i64>(5)?,
                        row.get::<_, Option<i64>>(6)?,
                    ))
                })
                .map_err(self.sqlite(OP))?;
            let (
                sequence,
                batch_id,
                window_start_unix_s,
                created_unix_ms,
                envelope,
                attempts,
                last,
            ) = row;
            entries.push(OutboxEntry {
                sequence: self.to_u64("batches.sequence", sequence)?,
                batch_id,
                window_start_unix_s,
                created_unix_ms,
                envelope,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                last_sent_unix_ms: last,
            });
        }
        Ok(entries)
    }

    /// Records a publication: one more attempt, last sent at `now_unix_ms`. A sequence no
    /// longer stored (its receipt arrived meanwhile) is not an error.
    pub fn mark_sent(&mut self, sequence: u64, now_unix_ms: i64) -> Result<(), OutboxError> {
        const OP: &str = "mark a batch as sent in";
        let sequence = self.to_i64(OP, "sequence", sequence)?;
        self.conn
            .execute(
                "UPDATE batches SET attempts = attempts + 1, last_sent_unix_ms = ?2 \
                 WHERE sequence = ?1",
                params![sequence, now_unix_ms],
            )
            .map_err(self.sqlite(OP))?;
        Ok(())
    }

    /// Makes every stored batch due now (after a reconnect, the broker session may have lost
    /// what was in flight). Attempt counts are kept. Returns how many batches were waiting
    /// for a resend and are now due.
    pub fn mark_all_unsent(&mut self) -> Result<u64, OutboxError> {
        let changed = self
            .conn
            .execute(
                "UPDATE batches SET last_sent_unix_ms = NULL WHERE last_sent_unix_ms IS NOT NULL",
                [],
            )
            .map_err(self.sqlite("mark batches unsent in"))?;
        Ok(changed as u64)
    }

    /// Handles the authority's receipt for `batch_id`: if `tag` equals the batch's receipt
    /// tag (compared in constant time), the batch is deleted ([`ReceiptOutcome::Removed`]);
    /// an id not stored is [`ReceiptOutcome::Unknown`]; a wrong tag is
    /// [`ReceiptOutcome::Forged`] and the batch is kept.
    pub fn receipt(&mut self, batch_id: &str, tag: &[u8]) -> Result<ReceiptOutcome, OutboxError> {
        const OP: &str = "process a receipt in";
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sql_err(&path, OP))?;
        let stored: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT sequence, receipt_tag FROM batches WHERE batch_id = ?1",
                [batch_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(sql_err(&path, OP))?;
        let Some((sequence, expected)) = stored else {
            return Ok(ReceiptOutcome::Unknown);
        };
        if !constant_time_eq(&expected, tag) {
            return Ok(ReceiptOutcome::Forged);
        }
        tx.execute("DELETE FROM batches WHERE sequence = ?1", [sequence])
            .map_err(sql_err(&path, OP))?;
        tx.commit().map_err(sql_err(&path, OP))?;
        Ok(ReceiptOutcome::Removed)
    }

    /// Applies retention and the size quota, in one transaction: deletes batches whose window
    /// started more than `retention` before `now_unix_ms`, then, while the stored envelopes
    /// exceed `max_bytes`, the oldest batches. Returns what was deleted, for the caller to log.
    pub fn purge(&mut self, now_unix_ms: i64) -> Result<PurgeReport, OutboxError> {
        const OP: &str = "purge";
        let retention_s = i64::try_from(self.options.retention.as_secs()).unwrap_or(i64::MAX);
        let cutoff_s = now_unix_ms.div_euclid(1000).saturating_sub(retention_s);
        let max_bytes = self.options.max_bytes;
        let path = self.path.clone();
        let sql = move |source| OutboxError::Sqlite {
            path: path.clone(),
            operation: OP,
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&sql)?;
        let mut report = PurgeReport::default();
        let (count, bytes): (i64, i64) = tx
            .query_row(
                "SELECT count(*), coalesce(sum(length(envelope)), 0) FROM batches \
                 WHERE window_start_unix_s < ?1",
                [cutoff_s],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(&sql)?;
        if count > 0 {
            tx.execute(
                "DELETE FROM batches WHERE window_start_unix_s < ?1",
                [cutoff_s],
            )
            .map_err(&sql)?;
            report.expired_batches = count as u64;
            report.expired_bytes = bytes as u64;
        }
        let total: i64 = tx
            .query_row(
                "SELECT coalesce(sum(length(envelope)), 0) FROM batches",
                [],
                |row| row.get(0),
            )
            .map_err(&sql)?;
        let mut excess = (total as u64).saturating_sub(max_bytes);
        if excess > 0 {
            // Oldest first, until what remains fits the quota.
            let mut last_deleted = None;
            {
                let mut stmt = tx
                    .prepare("SELECT sequence, length(envelope) FROM batches ORDER BY sequence")
                    .map_err(&sql)?;
                let mut rows = stmt.query([]).map_err(&sql)?;
                while excess > 0 {
                    let Some(row) = rows.next().map_err(&sql)? else {
                        break;
                    };
                    let sequence: i64 = row.get(0).map_err(&sql)?;
                    let len = row.get::<_, i64>(1).map_err(&sql)? as u64;
                    last_deleted = Some(sequence);
                    report.over_quota_batches += 1;
                    report.over_quota_bytes += len;
                    excess = excess.saturating_sub(len);
                }
            }
            if let Some(last) = last_deleted {
                tx.execute("DELETE FROM batches WHERE sequence <= ?1", [last])
                    .map_err(&sql)?;
            }
        }
        tx.commit().map_err(&sql)?;
        Ok(report)
    }

    /// How much is waiting for a receipt.
    pub fn depth(&self) -> Result<Depth, OutboxError> {
        let (batches, bytes, oldest): (i64, i64, Option<i64>) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(length(envelope)), 0), min(created_unix_ms) \
                 FROM batches",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(self.sqlite("measure"))?;
        Ok(Depth {
            batches: batches as u64,
            bytes: bytes as u64,
            oldest_created_unix_ms: oldest,
        })
    }

    /// The cumulative counters of every window committed to this outbox.
    pub fn totals(&self) -> Result<WindowCounters, OutboxError> {
        let row: [i64; 5] = self
            .conn
            .query_row(
                "SELECT adverts, malformed, dropped, bluetrace, sightings FROM totals WHERE id = 1",
                [],
                |row| {
                    Ok([
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ])
                },
            )
            .map_err(self.sqlite("read the totals of"))?;
        Ok(WindowCounters {
            adverts: self.to_u64("totals.adverts", row[0])?,
            malformed: self.to_u64("totals.malformed", row[1])?,
            dropped: self.to_u64("totals.dropped", row[2])?,
            bluetrace: self.to_u64("totals.bluetrace", row[3])?,
            sightings: self.to_u64("totals.sightings", row[4])?,
        })
    }
}

/// Checks that the file is a new SQLite database or an outbox of a schema this code knows, and
/// returns its schema version (0 for a new file).
fn check_identity(conn: &Connection, path: &Path) -> Result<i64, OutboxError> {
    let read = |pragma: &str| -> rusqlite::Result<i64> {
        conn.pragma_query_value(None, pragma, |row| row.get(0))
    };
    let version = read("user_version").map_err(sql_err(path, "read the schema version of"))?;
    let app_id = read("application_id").map_err(sql_err(path, "read the schema version of"))?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(sql_err(path, "read the schema of"))?;
    // application_id is a signed 32-bit header field.
    let app_id = i32::try_from(app_id).unwrap_or(-1);
    if (version != 0 || objects != 0) && app_id != APPLICATION_ID {
        return Err(OutboxError::NotAnOutbox {
            path: path.to_owned(),
            found: app_id,
        });
    }
    if version > SCHEMA_VERSION {
        return Err(OutboxError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(version)
}

/// Maps a SQLite error to [`OutboxError::Sqlite`] naming the file and the operation.
fn sql_err(
    path: &Path,
    operation: &'static str,
) -> impl FnOnce(rusqlite::Error) -> OutboxError + use<> {
    let path = path.to_owned();
    move |source| OutboxError::Sqlite {
        path,
        operation,
        source,
    }
}

/// Creates the file with mode 0600 if it does not exist, and tightens the mode of an existing
/// one: the envelopes are sealed, but the counters and timing are the gateway's business.
/// (SQLite creates the `-wal` and `-shm` files with the database file's mode.)
fn create_private(path: &Path) -> Result<(), OutboxError> {
    let io = |operation| {
        let path = path.to_owned();
        move |source| OutboxError::Io {
            path,
            operation,
            source,
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("create"))?;
        let mode = file.metadata().map_err(io("inspect"))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format_args!("{:o}", mode & 0o777), "outbox file was readable by others; setting mode 0600");
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io("set the mode of"))?;
        }
    }
    #[cfg(not(unix))]
    {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("create"))?;
    }
    Ok(())
}

/// Equality whose time depends on the lengths only, not on where the bytes differ, so a forger
/// cannot learn a receipt tag byte by byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(sequence: u64) -> NewBatch {
        NewBatch {
            sequence,
            batch_id: format!("gw-1:{sequence}"),
            window_start_unix_s: 1_700_000_000 + sequence as i64 * 600,
            created_unix_ms: 1_700_000_600_000 + sequence as i64 * 600_000,
            envelope: vec![sequence as u8; 100],
            receipt_tag: [sequence as u8; 32],
        }
    }

    fn open_temp() -> (tempfile::TempDir, Outbox) {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(&dir.path().join("outbox.sqlite"), OutboxOptions::default())
            .expect("opens");
        (dir, outbox)
    }

    /// Backoff doubles from `initial` after each attempt, is capped at `max`, and a batch never
    /// sent is due at once; huge attempt counts do not overflow.
    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(900),
        };
        let delays: Vec<u64> = (0..8).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(delays, [0, 30, 60, 120, 240, 480, 900, 900]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(900));
        assert_eq!(b.delay(33), Duration::from_secs(900));
    }

    /// Tags are equal only if lengths and every byte are.
    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(&[1, 2, 3], &[1, 2, 3]));
        assert!(!constant_time_eq(&[1, 2, 3], &[1, 2, 4]));
        assert!(!constant_time_eq(&[1, 2, 3], &[1, 2]));
        assert!(constant_time_eq(&[], &[]));
    }

    /// A new outbox starts at sequence 1 and committing moves the counter past the batch,
    /// also across a gap.
    #[test]
    fn commit_advances_sequence() {
        let (_dir, mut outbox) = open_temp();
        assert_eq!(outbox.next_sequence().expect("reads"), 1);
        outbox
            .commit_window(&batch(1), &WindowCounters::default())
            .expect("commits");
        assert_eq!(outbox.next_sequence().expect("reads"), 2);
        outbox
            .commit_window(&batch(5), &WindowCounters::default())
            .expect("commits");
        assert_eq!(outbox.next_sequence().expect("reads"), 6);
    }

    /// Counters of each committed window add up in the totals.
    #[test]
    fn totals_accumulate() {
        let (_dir, mut outbox) = open_temp();
        let c = WindowCounters {
            adverts: 100,
            malformed: 2,
            dropped: 1,
            bluetrace: 7,
            sightings: 40,
        };
        outbox.commit_window(&batch(1), &c).expect("commits");
        outbox.commit_window(&batch(2), &c).expect("commits");
        assert_eq!(
            outbox.totals().expect("reads"),
            WindowCounters {
                adverts: 200,
                malformed: 4,
                dropped: 2,
                bluetrace: 14,
                sightings: 80,
            }
        );
    }

    /// Numbers past SQLite's i64 are refused with an error naming them, not wrapped.
    #[test]
    fn too_large_numbers_are_refused() {
        let (_dir, mut outbox) = open_temp();
        let err = outbox
            .commit_window(&batch(u64::MAX), &WindowCounters::default())
            .expect_err("refused");
        assert!(
            matches!(
                err,
                OutboxError::TooLarge {
                    what: "sequence",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(outbox.depth().expect("reads").batches, 0);
    }

    /// Depth counts batches and envelope bytes and names the oldest creation time.
    #[test]
    fn depth_measures_what_waits() {
        let (_dir, mut outbox) = open_temp();
        assert_eq!(outbox.depth().expect("reads"), Depth::default());
        outbox
            .commit_window(&batch(1), &WindowCounters::default())
            .expect("commits");
        outbox
            .commit_window(&batch(2), &WindowCounters::default())
            .expect("commits");
        assert_eq!(
            outbox.depth().expect("reads"),
            Depth {
                batches: 2,
                bytes: 200,
                oldest_created_unix_ms: Some(batch(1).created_unix_ms),
            }
        );
    }

    /// A receipt with a tag of the wrong length is forged, not an error.
    #[test]
    fn short_tag_is_forged() {
        let (_dir, mut outbox) = open_temp();
        outbox
            .commit_window(&batch(1), &WindowCounters::default())
            .expect("commits");
        assert_eq!(
            outbox.receipt("gw-1:1", &[1; 31]).expect("handled"),
            ReceiptOutcome::Forged
        );
        assert_eq!(outbox.depth().expect("reads").batches, 1);
    }
}
