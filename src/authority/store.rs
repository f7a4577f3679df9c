//! The authority's store: venues, enrolled gateways, received batches and their sightings,
//! quarantined batches, diagnosis keys and exposure results — in one SQLite file (the
//! zero-setup default; DESIGN.md §5).
//!
//! Blocking (rusqlite): async callers run it on blocking threads. Every write that must be
//! atomic is one transaction: a batch and all its sightings, an import file's keys, a match
//! run's results. Batches are keyed by their id (`GATEWAY:SEQUENCE`), so storing one twice is
//! a no-op that says so. The schema is versioned with `PRAGMA user_version` and migrated on
//! open, in one transaction (version 1 → 2: BlueTrace).
//!
//! What is stored is what matching needs and nothing that identifies a phone beyond the RPIs
//! themselves (which rotate every 10 minutes and are purged after the retention period).
//! BlueTrace TempIDs are stored encrypted, as received; the UIDs inside them are never stored,
//! except those of registered cases and of contacts someone identified (`bluetrace contacts`,
//! with its audit log), both purged with the sightings.

use crate::aggregate::{Counters, MinuteRssi};
use crate::batch::Batch;
use crate::bluetrace::{EncounterRecord, TempId, Uid};
use crate::crypto::{Aem, Enin, Rpi};
use crate::export::{DiagnosisKey, ReportType};
use crate::matching::SightingHeader;
use crate::presence::{Contact, VenueHour};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// Schema version written by this code.
pub const SCHEMA_VERSION: i64 = 3;
/// Marks the file as a venuetrace authority store (`PRAGMA application_id`, "VTAU").
pub const APPLICATION_ID: i64 = 0x5654_4155;

/// Version 1 of the schema, as deployed stores were created with it. Never edit it: a change
/// is a new entry of [`MIGRATIONS`]. A new store is made by running it and every migration, so
/// new and migrated stores cannot differ.
const SCHEMA_V1: &str = "
CREATE TABLE venue (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  location TEXT
) STRICT;
CREATE TABLE gateway (
  id TEXT PRIMARY KEY,
  venue_id INTEGER NOT NULL REFERENCES venue(id),
  public_key BLOB NOT NULL CHECK (length(public_key) = 32),
  label TEXT,
  calibration_db INTEGER NOT NULL DEFAULT 0,
  enrolled_ms INTEGER NOT NULL,
  revoked_ms INTEGER
) STRICT;
CREATE TABLE batch (
  id INTEGER PRIMARY KEY,
  batch_id TEXT NOT NULL UNIQUE,
  gateway_id TEXT NOT NULL REFERENCES gateway(id),
  sequence INTEGER NOT NULL,
  venue_id INTEGER NOT NULL REFERENCES venue(id),
  window_start_enin INTEGER NOT NULL,
  window_minutes INTEGER NOT NULL,
  closed_early INTEGER NOT NULL,
  calibration_db INTEGER NOT NULL,
  adverts INTEGER NOT NULL, gaen INTEGER NOT NULL, malformed INTEGER NOT NULL,
  dropped INTEGER NOT NULL, late INTEGER NOT NULL, bluetrace_adverts INTEGER NOT NULL,
  bluetrace_devices INTEGER NOT NULL, unrelated INTEGER NOT NULL,
  sightings INTEGER NOT NULL,
  received_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX batch_window ON batch(window_start_enin);
CREATE TABLE sighting (
  batch INTEGER NOT NULL REFERENCES batch(id) ON DELETE CASCADE,
  venue_id INTEGER NOT NULL,
  window_start_enin INTEGER NOT NULL,
  rpi BLOB NOT NULL,
  aem BLOB NOT NULL,
  minutes BLOB NOT NULL
) STRICT;
CREATE INDEX sighting_window ON sighting(window_start_enin);
CREATE TABLE quarantine (
  id INTEGER PRIMARY KEY,
  received_ms INTEGER NOT NULL,
  topic TEXT NOT NULL,
  batch_id TEXT,
  reason TEXT NOT NULL,
  size INTEGER NOT NULL,
  sha256 TEXT NOT NULL
) STRICT;
CREATE TABLE diagnosis_key (
  id INTEGER PRIMARY KEY,
  key_data BLOB NOT NULL UNIQUE CHECK (length(key_data) = 16),
  rolling_start INTEGER NOT NULL,
  rolling_period INTEGER NOT NULL,
  transmission_risk_level INTEGER,
  report_type INTEGER,
  days_since_onset INTEGER,
  source TEXT NOT NULL,
  imported_ms INTEGER NOT NULL,
  revised_ms INTEGER
) STRICT;
CREATE TABLE exposure_event (
  key_id INTEGER NOT NULL REFERENCES diagnosis_key(id) ON DELETE CASCADE,
  venue_id INTEGER NOT NULL REFERENCES venue(id),
  start_s INTEGER NOT NULL,
  end_s INTEGER NOT NULL,
  score REAL NOT NULL,
  min_attenuation_db INTEGER NOT NULL,
  typical_attenuation_db INTEGER NOT NULL,
  minutes_immediate INTEGER NOT NULL, minutes_near INTEGER NOT NULL,
  minutes_medium INTEGER NOT NULL, minutes_other INTEGER NOT NULL,
  report_type INTEGER NOT NULL
) STRICT;
CREATE TABLE venue_hour (
  venue_id INTEGER NOT NULL REFERENCES venue(id),
  hour_start_s INTEGER NOT NULL,
  exposure_events INTEGER NOT NULL,
  infectious_keys INTEGER NOT NULL,
  exposure_minutes INTEGER NOT NULL,
  max_score REAL NOT NULL,
  total_score REAL NOT NULL,
  co_present INTEGER NOT NULL,
  PRIMARY KEY (venue_id, hour_start_s)
) STRICT;
CREATE INDEX exposure_event_start ON exposure_event(start_s);
CREATE TABLE match_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  key_id INTEGER NOT NULL,
  batch_id INTEGER NOT NULL,
  revised_ms INTEGER NOT NULL
) STRICT;
";

/// Version 2: BlueTrace. The batch's TempID counters; TempID sightings, encrypted as received,
/// minutes packed as in `sighting` (indexed by window for matching, by batch for deletes);
/// registered cases; venue-hour counts; identified-contact queries and their results.
const MIGRATION_2: &str = "
ALTER TABLE batch ADD COLUMN bluetrace_reads INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batch ADD COLUMN bluetrace_reads_dropped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batch ADD COLUMN tempids INTEGER NOT NULL DEFAULT 0;
CREATE TABLE tempid_sighting (
  batch INTEGER NOT NULL REFERENCES batch(id) ON DELETE CASCADE,
  venue_id INTEGER NOT NULL,
  window_start_enin INTEGER NOT NULL,
  tempid BLOB NOT NULL CHECK (length(tempid) = 61),
  org TEXT NOT NULL,
  minutes BLOB NOT NULL
) STRICT;
CREATE INDEX tempid_sighting_window ON tempid_sighting(window_start_enin);
CREATE INDEX tempid_sighting_batch ON tempid_sighting(batch);
CREATE TABLE bluetrace_case (
  uid BLOB PRIMARY KEY CHECK (length(uid) = 21),
  from_s INTEGER NOT NULL,
  to_s INTEGER NOT NULL CHECK (to_s > from_s),
  label TEXT,
  added_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE bluetrace_hour (
  venue_id INTEGER NOT NULL REFERENCES venue(id),
  hour_start_s INTEGER NOT NULL,
  cases INTEGER NOT NULL,
  contacts INTEGER NOT NULL,
  PRIMARY KEY (venue_id, hour_start_s)
) STRICT;
CREATE TABLE contact_query (
  id INTEGER PRIMARY KEY,
  run_ms INTEGER NOT NULL,
  operator TEXT NOT NULL,
  case_uid BLOB NOT NULL CHECK (length(case_uid) = 21),
  from_s INTEGER NOT NULL,
  to_s INTEGER NOT NULL,
  results INTEGER NOT NULL
) STRICT;
CREATE INDEX contact_query_to ON contact_query(to_s);
CREATE TABLE contact_result (
  query INTEGER NOT NULL REFERENCES contact_query(id) ON DELETE CASCADE,
  venue_id INTEGER NOT NULL REFERENCES venue(id),
  contact_uid BLOB NOT NULL CHECK (length(contact_uid) = 21),
  case_first_s INTEGER NOT NULL,
  case_last_s INTEGER NOT NULL,
  contact_first_s INTEGER NOT NULL,
  contact_last_s INTEGER NOT NULL,
  overlap_minutes INTEGER NOT NULL,
  max_rssi_dbm INTEGER NOT NULL
) STRICT;
CREATE INDEX contact_result_query ON contact_result(query);
";

/// Version 3: encounter lists. What placed the case at the venue in each identified contact
/// (its own TempIDs read, its uploaded encounter list, or both; earlier results rest on
/// reads), and registered cases' encounter lists (the other phones' TempIDs as uploaded,
/// encrypted; gone with the case).
const MIGRATION_3: &str = "
ALTER TABLE contact_result ADD COLUMN basis TEXT NOT NULL DEFAULT 'read'
  CHECK (basis IN ('read', 'encounter', 'both'));
CREATE TABLE bluetrace_case_encounter (
  case_uid BLOB NOT NULL REFERENCES bluetrace_case(uid) ON DELETE CASCADE,
  at_s INTEGER NOT NULL,
  tempid BLOB NOT NULL CHECK (length(tempid) = 61),
  org TEXT NOT NULL
) STRICT;
CREATE INDEX bluetrace_case_encounter_at ON bluetrace_case_encounter(at_s);
CREATE INDEX bluetrace_case_encounter_case ON bluetrace_case_encounter(case_uid, at_s);
";

/// `MIGRATIONS[i]` takes a store from version `i + 1` to `i + 2`.
const MIGRATIONS: &[&str] = &[MIGRATION_2, MIGRATION_3];

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("store {path}: {operation}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What was being done.
        operation: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The file is not an authority store, or of a newer schema.
    #[error("store {path}: {problem}")]
    Incompatible {
        /// The database file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// PostgreSQL failed ([`crate::authority::pg::PgStore`]).
    #[error("store {url}: {operation}")]
    Postgres {
        /// The connection string, password redacted.
        url: String,
        /// What was being done.
        operation: &'static str,
        /// Why.
        #[source]
        source: postgres::Error,
    },
    /// A registry operation refers to something missing or conflicting.
    #[error("{0}")]
    Registry(String),
}

/// A venue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Venue {
    /// Store number.
    pub id: u32,
    /// Name (the id gateways report).
    pub name: String,
    /// Kind: supermarket, market, station, bus...
    pub kind: String,
    /// Optional location text.
    pub location: Option<String>,
}

/// An enrolled gateway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gateway {
    /// Its id.
    pub id: String,
    /// Venue name.
    pub venue: String,
    /// X25519 public key.
    #[serde(serialize_with = "serialize_b64")]
    pub public_key: [u8; 32],
    /// Label.
    pub label: Option<String>,
    /// Receiver calibration, dB.
    pub calibration_db: i32,
    /// Enrollment time, Unix ms.
    pub enrolled_ms: i64,
    /// Revocation time, Unix ms.
    pub revoked_ms: Option<i64>,
}

fn serialize_b64<S: serde::Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(key))
}

/// Outcome of storing a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Newly stored, with this many sightings.
    New(usize),
    /// Already stored (a resend): nothing written.
    Duplicate,
}

/// Which stored sightings [`SqliteStore::read_sightings`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SightingSelection {
    /// Those of windows starting in `from..to` (ENINs), stored at or before row `upto` (a
    /// [`SqliteStore::sighting_watermark`]).
    Windows {
        /// First window start.
        from: Enin,
        /// End of the window starts (exclusive).
        to: Enin,
        /// Highest sighting row id read.
        upto: i64,
    },
    /// Those stored after row `after`, up to row `upto`.
    StoredBetween {
        /// Sighting row id already read.
        after: i64,
        /// Highest sighting row id read.
        upto: i64,
    },
}

/// One stored sighting as [`SqliteStore::read_sightings`] passes it: borrowed from the row
/// being read.
#[derive(Debug, Clone, Copy)]
pub struct SightingRow<'a> {
    /// The batch's row id.
    pub batch: i64,
    /// Venue, window, RPI, AEM and calibration, as matching keeps them.
    pub header: SightingHeader,
    /// Per-minute RSSI as stored, 8 bytes a minute.
    pub(crate) packed_minutes: &'a [u8],
}

impl SightingRow<'_> {
    /// Per-minute RSSI, decoded as it is iterated.
    pub fn minutes(&self) -> impl ExactSizeIterator<Item = MinuteRssi> + '_ {
        self.packed_minutes.chunks_exact(8).map(unpack_minute)
    }
}

/// Batches and sightings of one UTC day ([`SqliteStore::day_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayCount {
    /// Days since the Unix epoch.
    pub day: u32,
    /// Batches with at least one sighting.
    pub batches: u64,
    /// Sightings.
    pub sightings: u64,
}

/// Per gateway delivery status.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GatewayStatus {
    /// Gateway id.
    pub id: String,
    /// Venue name.
    pub venue: String,
    /// Revoked?
    pub revoked: bool,
    /// Batches stored.
    pub batches: u64,
    /// Highest sequence stored.
    pub last_sequence: Option<u64>,
    /// Start of the latest window stored, Unix s.
    pub last_window_start_s: Option<i64>,
    /// When the latest batch arrived, Unix ms.
    pub last_received_ms: Option<i64>,
    /// Sum of the batches' counters.
    pub adverts: u64,
    /// Malformed GAEN adverts.
    pub malformed: u64,
    /// RPIs dropped by the gateways' caps.
    pub dropped: u64,
}

/// A quarantined message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Quarantined {
    /// Row id.
    pub id: i64,
    /// Arrival, Unix ms.
    pub received_ms: i64,
    /// MQTT topic.
    pub topic: String,
    /// Batch id from the envelope header, if readable.
    pub batch_id: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// Payload size.
    pub size: i64,
    /// SHA-256 of the payload, hex (the payload itself is not kept).
    pub sha256: String,
}

/// A stored diagnosis key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Row id.
    pub id: u64,
    /// The key.
    pub key: DiagnosisKey,
}

/// Result of importing keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyImport {
    /// Keys new to the store.
    pub new: u64,
    /// Keys already stored and unchanged.
    pub unchanged: u64,
    /// Keys whose report type or days since onset were revised.
    pub revised: u64,
}

/// Purge counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Batches (with their sightings) deleted.
    pub batches: u64,
    /// Sightings deleted with them.
    pub sightings: u64,
    /// BlueTrace TempID sightings deleted with them.
    pub tempid_sightings: u64,
    /// Keys deleted.
    pub keys: u64,
    /// BlueTrace cases whose period ended before the cutoff.
    pub bluetrace_cases: u64,
    /// Identified-contact queries (with their results) whose period ended before the cutoff.
    pub contact_queries: u64,
    /// Encounter records of cases older than the cutoff (those of purged cases went with them
    /// and are not counted).
    pub case_encounters: u64,
}

/// What the authority needs of a store, whichever database holds it: SQLite
/// ([`SqliteStore`], the zero-setup default) or PostgreSQL
/// ([`PgStore`](super::pg::PgStore), for several workers). Both give the same results for the
/// same calls (tests/store_contract.rs checks it); the commands and the daemon hold a
/// [`DynStore`] and never ask which.
pub trait Store {
    /// The schema version the store had when this open migrated it, if it did.
    fn migrated_from(&self) -> Option<i64>;

    /// Adds a venue, or returns the existing one's number when `name` is known (kind and
    /// location are updated when given).
    fn upsert_venue(
        &mut self,
        name: &str,
        kind: &str,
        location: Option<&str>,
    ) -> Result<u32, StoreError>;

    /// All venues, by name.
    fn venues(&self) -> Result<Vec<Venue>, StoreError>;

    /// Enrolls a gateway at a venue (created if new). An id already enrolled is an error,
    /// unless it was revoked (re-enrollment with a new key).
    #[allow(clippy::too_many_arguments)] // one call site per command; a struct adds nothing
    fn add_gateway(
        &mut self,
        id: &str,
        venue: &str,
        venue_kind: &str,
        public_key: [u8; 32],
        label: Option<&str>,
        calibration_db: i32,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Revokes a gateway: its batches are refused from now on (stored ones stay).
    fn revoke_gateway(&mut self, id: &str, now_ms: i64) -> Result<(), StoreError>;

    /// All gateways, by id.
    fn gateways(&self) -> Result<Vec<Gateway>, StoreError>;

    /// The gateway `id`, if enrolled (revoked or not). One indexed lookup: ingest calls it for
    /// every message.
    fn gateway(&self, id: &str) -> Result<Option<Gateway>, StoreError>;

    /// Whether batch `batch_id` is stored.
    fn has_batch(&self, batch_id: &str) -> Result<bool, StoreError>;

    /// Stores an opened, validated batch, its sightings and its TempID sightings (encrypted, as
    /// received) in one transaction, under the enrolled gateway's venue and calibration; a
    /// batch id already stored is a no-op.
    fn store_batch(
        &mut self,
        batch: &Batch,
        gateway: &Gateway,
        now_ms: i64,
    ) -> Result<Stored, StoreError>;

    /// Records a refused message (its hash and size, not its bytes).
    fn quarantine(
        &mut self,
        topic: &str,
        batch_id: Option<&str>,
        reason: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Quarantined messages, newest first.
    fn quarantined(&self, limit: usize) -> Result<Vec<Quarantined>, StoreError>;

    /// Delivery status per gateway.
    fn gateway_status(&self) -> Result<Vec<GatewayStatus>, StoreError>;

    /// Calls `each` with every selected sighting, in the order of their windows (and of their
    /// storage within a window: a batch's sightings are together). Nothing is allocated per
    /// row: `each` sees the row's own bytes. Returns the number of sightings read.
    fn read_sightings(
        &self,
        which: SightingSelection,
        each: &mut dyn FnMut(&SightingRow<'_>),
    ) -> Result<u64, StoreError>;

    /// The highest sighting row id stored so far (0 when there is none): sightings stored
    /// later have higher ones, unless every sighting was deleted (then ids start again).
    fn sighting_watermark(&self) -> Result<i64, StoreError>;

    /// Per UTC day of their windows (days since the Unix epoch), the batches holding sightings
    /// and how many sightings they hold, by day. Reads the batch table only.
    fn day_counts(&self) -> Result<Vec<DayCount>, StoreError>;

    /// Imports keys in one transaction. A key already stored with the same data is unchanged;
    /// with another report type or days since onset it is revised (the newer file wins).
    fn import_keys(
        &mut self,
        keys: &[DiagnosisKey],
        source: &str,
        now_ms: i64,
    ) -> Result<KeyImport, StoreError>;

    /// All stored keys.
    fn keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Deletes sightings and TempID sightings (with their batches) of windows that started
    /// before `sightings_before_s`, and the results about them: exposure events and venue-hours
    /// starting before it, BlueTrace venue-hours, cases and identified-contact queries (with
    /// their results) whose period ended by then; and keys whose validity ended before
    /// `keys_before_s` (with their exposure results).
    fn purge(&mut self, sightings_before_s: i64, keys_before_s: i64) -> Result<Purged, StoreError>;

    /// Replaces all exposure results with a match run's, in one transaction.
    fn replace_exposures(
        &mut self,
        events: &[ExposureRow],
        hours: &[VenueHourRow],
    ) -> Result<(), StoreError> {
        self.replace_exposures_between(i64::MIN, i64::MAX, events, hours)
    }

    /// Replaces the exposure results of events starting, and venue-hours, in `from_s..to_s`
    /// (one transaction). Rows given outside that span are not written.
    fn replace_exposures_between(
        &mut self,
        from_s: i64,
        to_s: i64,
        events: &[ExposureRow],
        hours: &[VenueHourRow],
    ) -> Result<(), StoreError>;

    /// Venue-hours with GAEN exposure (at least `min_score`) or BlueTrace cases, filtered, by
    /// hour then venue name; a venue-hour with only one of them has zeros for the other.
    fn venue_hours(&self, filter: &ExposureFilter) -> Result<Vec<VenueHourView>, StoreError>;

    /// Calls `each` with every TempID sighting of windows starting in `from..to`, by window.
    /// Nothing is allocated per row. Returns the number read.
    fn read_tempid_sightings(
        &self,
        from: Enin,
        to: Enin,
        each: &mut dyn FnMut(&TempIdRow<'_>),
    ) -> Result<u64, StoreError>;

    /// TempID sightings stored, and batches stored after row `after` that hold some, with the
    /// window starts of those (the daemon recomputes BlueTrace venue-hours when they fall in
    /// a case's span).
    fn tempid_batches_since(&self, after: i64) -> Result<(i64, Vec<u32>), StoreError>;

    /// Registers a case, or changes the period and label of one registered; returns whether
    /// it is new.
    fn upsert_case(&mut self, case: &BluetraceCase) -> Result<bool, StoreError>;

    /// Removes a registered case (an error if there is none).
    fn remove_case(&mut self, uid: &Uid) -> Result<(), StoreError>;

    /// Registered cases, by the start of their period.
    fn cases(&self) -> Result<Vec<BluetraceCase>, StoreError>;

    /// Replaces the encounter list of the registered case `uid` with `records` (kept as
    /// uploaded: the TempIDs encrypted; decided each time they are used). An error if there is
    /// no such case.
    fn set_case_encounters(
        &mut self,
        uid: &Uid,
        records: &[EncounterRecord],
    ) -> Result<(), StoreError>;

    /// Calls `f` with each registered case's encounter record timed in `[from_s, to_s)` (only
    /// `case`'s, if given); returns how many.
    fn read_case_encounters(
        &self,
        from_s: i64,
        to_s: i64,
        case: Option<&Uid>,
        f: &mut dyn FnMut(&Uid, EncounterRecord),
    ) -> Result<u64, StoreError>;

    /// Encounter records stored per registered case (cases without any are absent).
    fn case_encounter_counts(&self) -> Result<std::collections::HashMap<Uid, u64>, StoreError>;

    /// Replaces every BlueTrace venue-hour (one transaction).
    fn replace_bluetrace_hours(&mut self, hours: &[VenueHour]) -> Result<(), StoreError> {
        self.replace_bluetrace_hours_between(i64::MIN, i64::MAX, hours)
    }

    /// Replaces the BlueTrace venue-hours starting in `from_s..to_s` with `hours` (one
    /// transaction); rows given outside that span are not written.
    fn replace_bluetrace_hours_between(
        &mut self,
        from_s: i64,
        to_s: i64,
        hours: &[VenueHour],
    ) -> Result<(), StoreError>;

    /// Records an identified-contact query and its results (one transaction); returns its id.
    fn record_contact_query(
        &mut self,
        query: &ContactQuery,
        contacts: &[Contact],
    ) -> Result<i64, StoreError>;

    /// Rows of the BlueTrace tables (TempID sightings, cases, venue-hours, contact queries,
    /// contact results), for status and tests.
    fn bluetrace_counts(&self) -> Result<BluetraceCounts, StoreError>;

    /// Venue names by number.
    fn venue_names(&self) -> Result<std::collections::HashMap<u32, String>, StoreError>;

    /// What changed since the last match: keys added or revised since, and the windows of
    /// batches stored since, with the new watermark to record once they are matched.
    fn changes_since_match(&self) -> Result<MatchChanges, StoreError>;

    /// Records that everything up to `watermark` (from [`changes_since_match`]) is matched.
    ///
    /// [`changes_since_match`]: Self::changes_since_match
    fn set_matched(&mut self, watermark: (i64, i64, i64)) -> Result<(), StoreError>;

    /// Number of batches stored so far (the matching driver reruns when it changes).
    fn batch_count(&self) -> Result<u64, StoreError>;

    /// Makes ready to store batches of `days` (UTC days since the epoch) ahead of their first
    /// batch: PostgreSQL creates their partitions, which takes a lock on the parent tables
    /// that a batch creating them would hold until it commits. Nothing to do in SQLite.
    fn prepare_days(&mut self, days: std::ops::RangeInclusive<i64>) -> Result<(), StoreError> {
        let _ = days;
        Ok(())
    }

    /// Takes `lease` if no other worker holds it; `false` if one does. The SQLite store has one
    /// writer at a time by construction, so it always grants it.
    fn try_lease(&mut self, lease: Lease) -> Result<bool, StoreError> {
        let _ = lease;
        Ok(true)
    }

    /// Gives `lease` back (also given back if this worker's connection ends).
    fn release_lease(&mut self, lease: Lease) -> Result<(), StoreError> {
        let _ = lease;
        Ok(())
    }
}

/// Housekeeping work that, when several `run` workers share one store, one of them does at a
/// time: whoever holds the lease does it, the others skip that round (and ingest meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Matching new batches and keys, and the BlueTrace venue-hours after them.
    Match = 1,
    /// The retention purge.
    Purge = 2,
}

/// A store of either kind, as the commands and the daemon hold it.
pub type DynStore = Box<dyn Store + Send>;

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    migrated_from: Option<i64>,
}

/// One stored TempID sighting as [`SqliteStore::read_tempid_sightings`] passes it: borrowed
/// from the row being read.
#[derive(Debug, Clone, Copy)]
pub struct TempIdRow<'a> {
    /// Venue number.
    pub venue: u32,
    /// Start of the batch's window.
    pub window_start: Enin,
    /// The enrolled calibration of the gateway, dB.
    pub rssi_calibration_db: i32,
    /// The TempID, encrypted as received (`None` if the stored bytes are not one: never, as
    /// the column is checked).
    pub tempid: Option<TempId>,
    /// Organisation code.
    pub org: &'a str,
    pub(crate) packed_minutes: &'a [u8],
}

impl TempIdRow<'_> {
    /// Per-minute RSSI, decoded as it is iterated.
    pub fn minutes(&self) -> impl ExactSizeIterator<Item = MinuteRssi> + '_ {
        self.packed_minutes.chunks_exact(8).map(unpack_minute)
    }
}

/// A registered BlueTrace case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BluetraceCase {
    /// The case's UID.
    pub uid: Uid,
    /// Infectious from, Unix s.
    pub from_s: i64,
    /// Infectious until (exclusive), Unix s.
    pub to_s: i64,
    /// A label for people (e.g. the health team's file number).
    pub label: Option<String>,
    /// When it was registered (or last changed), Unix ms.
    pub added_ms: i64,
}

/// One identified-contact query, as recorded with its results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactQuery {
    /// When it ran, Unix ms.
    pub run_ms: i64,
    /// Who ran it.
    pub operator: String,
    /// The case's UID.
    pub case_uid: Uid,
    /// Period from, Unix s.
    pub from_s: i64,
    /// Period to (exclusive), Unix s.
    pub to_s: i64,
}

/// Maps a SQLite error of `operation` on the store at `path`.
fn sqlite_error(
    path: &str,
    operation: &'static str,
) -> impl Fn(rusqlite::Error) -> StoreError + use<> {
    let path = path.to_owned();
    move |source| StoreError::Sqlite {
        path: path.clone(),
        operation,
        source,
    }
}

/// Per-minute RSSI packed as the `minutes` columns hold it (both stores), 8 bytes a minute.
pub(crate) fn pack_minutes(minutes: &[MinuteRssi]) -> Vec<u8> {
    let mut out = Vec::with_capacity(minutes.len() * 8);
    for m in minutes {
        out.push(m.minute);
        out.extend_from_slice(&m.count.to_le_bytes());
        out.extend_from_slice(&[m.min as u8, m.mean as u8, m.max as u8]);
    }
    out
}

#[cfg(test)]
fn unpack_minutes(bytes: &[u8]) -> Vec<MinuteRssi> {
    bytes.chunks_exact(8).map(unpack_minute).collect()
}

fn unpack_minute(c: &[u8]) -> MinuteRssi {
    MinuteRssi {
        minute: c[0],
        count: u32::from_le_bytes([c[1], c[2], c[3], c[4]]),
        min: c[5] as i8,
        mean: c[6] as i8,
        max: c[7] as i8,
    }
}

/// The bytes of a BLOB column (empty for anything else: matching treats a malformed row as
/// carrying a zero RPI and no minutes rather than failing the whole run).
fn blob<'a>(row: &'a rusqlite::Row<'_>, column: usize) -> rusqlite::Result<&'a [u8]> {
    Ok(match row.get_ref(column)? {
        rusqlite::types::ValueRef::Blob(bytes) => bytes,
        _ => &[],
    })
}

pub(crate) fn report_type_code(r: Option<ReportType>) -> Option<i64> {
    r.map(|r| i64::from(r.to_i32()))
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`: WAL, foreign keys, schema migration.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let display = path.display().to_string();
        let err = |operation| sqlite_error(&display, operation);
        let conn = Connection::open(path).map_err(err("open"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err("set busy timeout"))?;
        let app: i64 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(err("read application id"))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("read schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Incompatible {
                path: display,
                problem: format!(
                    "schema version {version} is newer than this program's ({SCHEMA_VERSION}); upgrade venuetrace"
                ),
            });
        }
        if version > 0 && app != APPLICATION_ID {
            return Err(StoreError::Incompatible {
                path: display,
                problem: "not a venuetrace authority store".into(),
            });
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        )
        .map_err(err("configure"))?;
        let mut migrated_from = None;
        if version < SCHEMA_VERSION {
            // IMMEDIATE: one process creates or migrates; another waiting on the lock then
            // finds the work done (the version is read again inside the transaction).
            let tx = rusqlite::Transaction::new_unchecked(
                &conn,
                rusqlite::TransactionBehavior::Immediate,
            )
            .map_err(err("begin schema update"))?;
            let version: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(err("read schema version"))?;
            if version > SCHEMA_VERSION {
                return Err(StoreError::Incompatible {
                    path: display,
                    problem: format!(
                        "schema version {version} is newer than this program's ({SCHEMA_VERSION}); upgrade venuetrace"
                    ),
                });
            }
            if version == 0 {
                let tables: i64 = tx
                    .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                    .map_err(err("inspect"))?;
                if tables > 0 {
                    return Err(StoreError::Incompatible {
                        path: display,
                        problem: "not a venuetrace authority store (it already has other tables)"
                            .into(),
                    });
                }
                tx.execute_batch(SCHEMA_V1).map_err(err("create schema"))?;
            } else if version < SCHEMA_VERSION {
                migrated_from = Some(version);
            }
            for migration in &MIGRATIONS[(version.max(1) - 1) as usize..] {
                tx.execute_batch(migration).map_err(err("migrate schema"))?;
            }
            tx.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
            ))
            .map_err(err("set schema version"))?;
            tx.commit().map_err(err("commit schema update"))?;
        }
        Ok(Self {
            conn,
            path: path.to_owned(),
            migrated_from,
        })
    }

    fn err(&self, operation: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + use<> {
        sqlite_error(&self.path.display().to_string(), operation)
    }

    fn query_gateways(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Gateway>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT g.id, v.name, g.public_key, g.label, g.calibration_db, g.enrolled_ms, g.revoked_ms
                 FROM gateway g JOIN venue v ON v.id = g.venue_id {filter} ORDER BY g.id"
            ))
            .map_err(self.err("list gateways"))?;
        stmt.query_map(args, |r| {
            let key: Vec<u8> = r.get(2)?;
            let mut public_key = [0u8; 32];
            public_key.copy_from_slice(&key[..32.min(key.len())]);
            Ok(Gateway {
                id: r.get(0)?,
                venue: r.get(1)?,
                public_key,
                label: r.get(3)?,
                calibration_db: r.get(4)?,
                enrolled_ms: r.get(5)?,
                revoked_ms: r.get(6)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(self.err("list gateways"))
    }
}

impl Store for SqliteStore {
    fn migrated_from(&self) -> Option<i64> {
        self.migrated_from
    }

    fn upsert_venue(
        &mut self,
        name: &str,
        kind: &str,
        location: Option<&str>,
    ) -> Result<u32, StoreError> {
        self.conn
            .execute(
                "INSERT INTO venue(name, kind, location) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET kind = excluded.kind,
                   location = coalesce(excluded.location, venue.location)",
                params![name, kind, location],
            )
            .map_err(self.err("add venue"))?;
        self.conn
            .query_row("SELECT id FROM venue WHERE name = ?1", [name], |r| r.get(0))
            .map_err(self.err("read venue"))
    }

    fn venues(&self) -> Result<Vec<Venue>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, kind, location FROM venue ORDER BY name")
            .map_err(self.err("list venues"))?;
        stmt.query_map([], |r| {
            Ok(Venue {
                id: r.get(0)?,
                name: r.get(1)?,
                kind: r.get(2)?,
                location: r.get(3)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(self.err("list venues"))
    }

    fn add_gateway(
        &mut self,
        id: &str,
        venue: &str,
        venue_kind: &str,
        public_key: [u8; 32],
        label: Option<&str>,
        calibration_db: i32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let existing: Option<Option<i64>> = self
            .conn
            .query_row("SELECT revoked_ms FROM gateway WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err("read gateway"))?;
        if matches!(existing, Some(None)) {
            return Err(StoreError::Registry(format!(
                "gateway {id} is already enrolled; revoke it first to enroll a new key"
            )));
        }
        let venue_id = self.upsert_venue(venue, venue_kind, None)?;
        self.conn
            .execute(
                "INSERT INTO gateway(id, venue_id, public_key, label, calibration_db, enrolled_ms, revoked_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)
                 ON CONFLICT(id) DO UPDATE SET venue_id = excluded.venue_id, public_key = excluded.public_key,
                   label = excluded.label, calibration_db = excluded.calibration_db,
                   enrolled_ms = excluded.enrolled_ms, revoked_ms = NULL",
                params![id, venue_id, &public_key[..], label, calibration_db, now_ms],
            )
            .map_err(self.err("enroll gateway"))?;
        Ok(())
    }

    fn revoke_gateway(&mut self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE gateway SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, now_ms],
            )
            .map_err(self.err("revoke gateway"))?;
        if n == 0 {
            return Err(StoreError::Registry(format!(
                "no enrolled (unrevoked) gateway {id}"
            )));
        }
        Ok(())
    }

    fn gateways(&self) -> Result<Vec<Gateway>, StoreError> {
        self.query_gateways("", &[])
    }

    fn gateway(&self, id: &str) -> Result<Option<Gateway>, StoreError> {
        Ok(self.query_gateways("WHERE g.id = ?1", &[&id])?.pop())
    }

    fn has_batch(&self, batch_id: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM batch WHERE batch_id = ?1",
                [batch_id],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(self.err("look up batch"))
    }

    fn store_batch(
        &mut self,
        batch: &Batch,
        gateway: &Gateway,
        now_ms: i64,
    ) -> Result<Stored, StoreError> {
        let path = self.path.display().to_string();
        let err = |operation| sqlite_error(&path, operation);
        let tx = self.conn.transaction().map_err(err("begin batch"))?;
        let venue_id: u32 = tx
            .query_row(
                "SELECT venue_id FROM gateway WHERE id = ?1",
                [&gateway.id],
                |r| r.get(0),
            )
            .map_err(err("read gateway venue"))?;
        let c: &Counters = &batch.counters;
        let inserted = tx
            .execute(
                "INSERT INTO batch(batch_id, gateway_id, sequence, venue_id, window_start_enin, window_minutes,
                   closed_early, calibration_db, adverts, gaen, malformed, dropped, late, bluetrace_adverts,
                   bluetrace_devices, unrelated, sightings, received_ms, bluetrace_reads,
                   bluetrace_reads_dropped, tempids)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                   ?19, ?20, ?21)
                 ON CONFLICT(batch_id) DO NOTHING",
                params![
                    batch.id.to_string(),
                    gateway.id,
                    batch.id.sequence as i64,
                    venue_id,
                    batch.window_start.0,
                    batch.window_minutes,
                    batch.closed_early,
                    // The enrolled calibration wins over the gateway's claim: operators set it at
                    // enrollment after measuring the installation.
                    gateway.calibration_db,
                    c.adverts as i64,
                    c.gaen as i64,
                    c.malformed as i64,
                    c.dropped as i64,
                    c.late as i64,
                    c.bluetrace_adverts as i64,
                    c.bluetrace_devices as i64,
                    c.unrelated as i64,
                    batch.sightings.len() as i64,
                    now_ms,
                    c.bluetrace_reads as i64,
                    c.bluetrace_reads_dropped as i64,
                    batch.tempids.len() as i64
                ],
            )
            .map_err(err("insert batch"))?;
        if inserted == 0 {
            return Ok(Stored::Duplicate);
        }
        let row = tx.last_insert_rowid();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO sighting(batch, venue_id, window_start_enin, rpi, aem, minutes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(err("prepare sightings"))?;
            for s in &batch.sightings {
                stmt.execute(params![
                    row,
                    venue_id,
                    batch.window_start.0,
                    &s.rpi.as_bytes()[..],
                    &s.aem.as_bytes()[..],
                    pack_minutes(&s.minutes)
                ])
                .map_err(err("insert sighting"))?;
            }
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO tempid_sighting(batch, venue_id, window_start_enin, tempid, org, minutes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(err("prepare TempID sightings"))?;
            for t in &batch.tempids {
                stmt.execute(params![
                    row,
                    venue_id,
                    batch.window_start.0,
                    &t.tempid.as_bytes()[..],
                    t.org,
                    pack_minutes(&t.minutes)
                ])
                .map_err(err("insert TempID sighting"))?;
            }
        }
        tx.commit().map_err(err("commit batch"))?;
        Ok(Stored::New(batch.sightings.len()))
    }

    fn quarantine(
        &mut self,
        topic: &str,
        batch_id: Option<&str>,
        reason: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(payload));
        self.conn
            .execute(
                "INSERT INTO quarantine(received_ms, topic, batch_id, reason, size, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![now_ms, topic, batch_id, reason, payload.len() as i64, sha],
            )
            .map_err(self.err("quarantine"))?;
        Ok(())
    }

    fn quarantined(&self, limit: usize) -> Result<Vec<Quarantined>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, received_ms, topic, batch_id, reason, size, sha256 FROM quarantine ORDER BY id DESC LIMIT ?1")
            .map_err(self.err("list quarantine"))?;
        stmt.query_map([limit as i64], |r| {
            Ok(Quarantined {
                id: r.get(0)?,
                received_ms: r.get(1)?,
                topic: r.get(2)?,
                batch_id: r.get(3)?,
                reason: r.get(4)?,
                size: r.get(5)?,
                sha256: r.get(6)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(self.err("list quarantine"))
    }

    fn gateway_status(&self) -> Result<Vec<GatewayStatus>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT g.id, v.name, g.revoked_ms IS NOT NULL, count(b.id), max(b.sequence),
                   max(b.window_start_enin) * 600, max(b.received_ms),
                   coalesce(sum(b.adverts), 0), coalesce(sum(b.malformed), 0), coalesce(sum(b.dropped), 0)
                 FROM gateway g JOIN venue v ON v.id = g.venue_id LEFT JOIN batch b ON b.gateway_id = g.id
                 GROUP BY g.id ORDER BY g.id",
            )
            .map_err(self.err("gateway status"))?;
        stmt.query_map([], |r| {
            Ok(GatewayStatus {
                id: r.get(0)?,
                venue: r.get(1)?,
                revoked: r.get(2)?,
                batches: r.get::<_, i64>(3)? as u64,
                last_sequence: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                last_window_start_s: r.get(5)?,
                last_received_ms: r.get(6)?,
                adverts: r.get::<_, i64>(7)? as u64,
                malformed: r.get::<_, i64>(8)? as u64,
                dropped: r.get::<_, i64>(9)? as u64,
            })
        })
        .and_then(Iterator::collect)
        .map_err(self.err("gateway status"))
    }

    fn read_sightings(
        &self,
        which: SightingSelection,
        each: &mut dyn FnMut(&SightingRow<'_>),
    ) -> Result<u64, StoreError> {
        // The JOIN finds each row's batch by primary key; rows of one batch are stored
        // together, so those lookups hit the same (cached) page.
        const COLUMNS: &str =
            "SELECT s.batch, s.venue_id, s.window_start_enin, b.window_minutes, s.rpi, s.aem,
                 b.calibration_db, s.minutes FROM sighting s JOIN batch b ON b.id = s.batch";
        let (sql, args) = match which {
            SightingSelection::Windows { from, to, upto } => (
                format!(
                    "{COLUMNS} WHERE s.window_start_enin >= ?1 AND s.window_start_enin < ?2
                     AND s.rowid <= ?3 ORDER BY s.window_start_enin, s.rowid"
                ),
                [i64::from(from.0), i64::from(to.0), upto],
            ),
            SightingSelection::StoredBetween { after, upto } => (
                format!("{COLUMNS} WHERE s.rowid > ?1 AND s.rowid <= ?2 ORDER BY s.rowid"),
                [after, upto, 0],
            ),
        };
        let err = self.err("read sightings");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(&err)?;
        let mut rows = match which {
            SightingSelection::Windows { .. } => stmt.query(args),
            SightingSelection::StoredBetween { .. } => stmt.query([args[0], args[1]]),
        }
        .map_err(&err)?;
        let mut n = 0u64;
        while let Some(r) = rows.next().map_err(&err)? {
            let row = (|| -> rusqlite::Result<SightingRow<'_>> {
                Ok(SightingRow {
                    batch: r.get(0)?,
                    header: SightingHeader {
                        venue: r.get(1)?,
                        window_start: Enin(r.get(2)?),
                        window_minutes: r.get(3)?,
                        rpi: Rpi::from_slice(blob(r, 4)?).unwrap_or(Rpi::from_bytes([0; 16])),
                        aem: Aem::from_slice(blob(r, 5)?).unwrap_or(Aem::from_bytes([0; 4])),
                        rssi_calibration_db: r.get(6)?,
                    },
                    packed_minutes: blob(r, 7)?,
                })
            })()
            .map_err(&err)?;
            each(&row);
            n += 1;
        }
        Ok(n)
    }

    fn sighting_watermark(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT coalesce(max(rowid), 0) FROM sighting", [], |r| {
                r.get(0)
            })
            .map_err(self.err("read sighting watermark"))
    }

    fn day_counts(&self) -> Result<Vec<DayCount>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT window_start_enin / 144 AS day, count(*), sum(sightings) FROM batch
                 WHERE sightings > 0 GROUP BY day ORDER BY day",
            )
            .map_err(self.err("count sightings per day"))?;
        stmt.query_map([], |r| {
            Ok(DayCount {
                day: r.get(0)?,
                batches: r.get::<_, i64>(1)? as u64,
                sightings: r.get::<_, i64>(2)? as u64,
            })
        })
        .and_then(Iterator::collect)
        .map_err(self.err("count sightings per day"))
    }

    fn import_keys(
        &mut self,
        keys: &[DiagnosisKey],
        source: &str,
        now_ms: i64,
    ) -> Result<KeyImport, StoreError> {
        let path = self.path.display().to_string();
        let err = |operation| sqlite_error(&path, operation);
        let tx = self.conn.transaction().map_err(err("begin key import"))?;
        let mut result = KeyImport::default();
        for key in keys {
            let existing: Option<(Option<i64>, Option<i64>)> = tx
                .query_row(
                    "SELECT report_type, days_since_onset FROM diagnosis_key WHERE key_data = ?1",
                    [&key.tek.as_bytes()[..]],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(err("look up key"))?;
            let report = report_type_code(key.report_type);
            let onset = key.days_since_onset_of_symptoms.map(i64::from);
            match existing {
                None => {
                    tx.execute(
                        "INSERT INTO diagnosis_key(key_data, rolling_start, rolling_period, transmission_risk_level,
                           report_type, days_since_onset, source, imported_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            &key.tek.as_bytes()[..],
                            key.rolling_start.0,
                            key.rolling_period.get(),
                            key.transmission_risk_level,
                            report,
                            onset,
                            source,
                            now_ms
                        ],
                    )
                    .map_err(err("insert key"))?;
                    result.new += 1;
                }
                Some((r, o)) if r == report && o == onset => result.unchanged += 1,
                Some(_) => {
                    tx.execute(
                        "UPDATE diagnosis_key SET report_type = ?2, days_since_onset = ?3, revised_ms = ?4, source = ?5
                         WHERE key_data = ?1",
                        params![&key.tek.as_bytes()[..], report, onset, now_ms, source],
                    )
                    .map_err(err("revise key"))?;
                    result.revised += 1;
                }
            }
        }
        tx.commit().map_err(err("commit key import"))?;
        Ok(result)
    }

    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, key_data, rolling_start, rolling_period, transmission_risk_level, report_type, days_since_onset
                 FROM diagnosis_key ORDER BY id",
            )
            .map_err(self.err("read keys"))?;
        stmt.query_map([], |r| {
            let data: Vec<u8> = r.get(1)?;
            let mut tek = [0u8; 16];
            tek.copy_from_slice(&data[..16.min(data.len())]);
            let period: i64 = r.get(3)?;
            Ok(StoredKey {
                id: r.get::<_, i64>(0)? as u64,
                key: DiagnosisKey {
                    tek: crate::crypto::Tek::from_bytes(tek),
                    transmission_risk_level: r.get(4)?,
                    rolling_start: Enin(r.get(2)?),
                    rolling_period: crate::crypto::RollingPeriod::new(period)
                        .unwrap_or(crate::crypto::RollingPeriod::DAY),
                    report_type: r.get::<_, Option<i32>>(5)?.map(ReportType::from_i32),
                    days_since_onset_of_symptoms: r.get(6)?,
                },
            })
        })
        .and_then(Iterator::collect)
        .map_err(self.err("read keys"))
    }

    fn purge(&mut self, sightings_before_s: i64, keys_before_s: i64) -> Result<Purged, StoreError> {
        let path = self.path.display().to_string();
        let err = |operation| sqlite_error(&path, operation);
        let tx = self.conn.transaction().map_err(err("begin purge"))?;
        let before = sightings_before_s.div_euclid(600);
        let sightings = tx
            .execute(
                "DELETE FROM sighting WHERE window_start_enin < ?1",
                [before],
            )
            .map_err(err("purge sightings"))? as u64;
        let tempid_sightings = tx
            .execute(
                "DELETE FROM tempid_sighting WHERE window_start_enin < ?1",
                [before],
            )
            .map_err(err("purge TempID sightings"))? as u64;
        let batches = tx
            .execute("DELETE FROM batch WHERE window_start_enin < ?1", [before])
            .map_err(err("purge batches"))? as u64;
        let keys = tx
            .execute(
                "DELETE FROM diagnosis_key WHERE (rolling_start + rolling_period) * 600 < ?1",
                [keys_before_s],
            )
            .map_err(err("purge keys"))? as u64;
        // Results about purged sightings go with them.
        tx.execute(
            "DELETE FROM exposure_event WHERE start_s < ?1",
            [sightings_before_s],
        )
        .map_err(err("purge exposure events"))?;
        tx.execute(
            "DELETE FROM venue_hour WHERE hour_start_s < ?1",
            [sightings_before_s],
        )
        .map_err(err("purge venue hours"))?;
        tx.execute(
            "DELETE FROM bluetrace_hour WHERE hour_start_s < ?1",
            [sightings_before_s],
        )
        .map_err(err("purge BlueTrace venue hours"))?;
        let contact_queries = tx
            .execute(
                "DELETE FROM contact_query WHERE to_s <= ?1",
                [sightings_before_s],
            )
            .map_err(err("purge contact queries"))? as u64;
        let bluetrace_cases = tx
            .execute(
                "DELETE FROM bluetrace_case WHERE to_s <= ?1",
                [sightings_before_s],
            )
            .map_err(err("purge BlueTrace cases"))? as u64;
        // Other people's TempIDs in a case's list go with the sightings of their time.
        let case_encounters = tx
            .execute(
                "DELETE FROM bluetrace_case_encounter WHERE at_s < ?1",
                [sightings_before_s],
            )
            .map_err(err("purge case encounters"))? as u64;
        tx.commit().map_err(err("commit purge"))?;
        Ok(Purged {
            batches,
            sightings,
            tempid_sightings,
            keys,
            bluetrace_cases,
            contact_queries,
            case_encounters,
        })
    }

    fn replace_exposures_between(
        &mut self,
        from_s: i64,
        to_s: i64,
        events: &[ExposureRow],
        hours: &[VenueHourRow],
    ) -> Result<(), StoreError> {
        let path = self.path.display().to_string();
        let err = |operation| sqlite_error(&path, operation);
        let tx = self
            .conn
            .transaction()
            .map_err(err("begin exposure update"))?;
        tx.execute(
            "DELETE FROM exposure_event WHERE start_s >= ?1 AND start_s < ?2",
            params![from_s, to_s],
        )
        .map_err(err("clear exposure events"))?;
        tx.execute(
            "DELETE FROM venue_hour WHERE hour_start_s >= ?1 AND hour_start_s < ?2",
            params![from_s, to_s],
        )
        .map_err(err("clear venue hours"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO exposure_event(key_id, venue_id, start_s, end_s, score, min_attenuation_db,
                       typical_attenuation_db, minutes_immediate, minutes_near, minutes_medium, minutes_other, report_type)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(err("prepare exposure events"))?;
            for e in events
                .iter()
                .filter(|e| (from_s..to_s).contains(&e.start_s))
            {
                stmt.execute(params![
                    e.key_id as i64,
                    e.venue,
                    e.start_s,
                    e.end_s,
                    e.score,
                    e.min_attenuation_db,
                    e.typical_attenuation_db,
                    e.minutes_by_bucket[0],
                    e.minutes_by_bucket[1],
                    e.minutes_by_bucket[2],
                    e.minutes_by_bucket[3],
                    e.report_type
                ])
                .map_err(err("insert exposure event"))?;
            }
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO venue_hour(venue_id, hour_start_s, exposure_events, infectious_keys, exposure_minutes,
                       max_score, total_score, co_present) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(err("prepare venue hours"))?;
            for h in hours
                .iter()
                .filter(|h| (from_s..to_s).contains(&h.hour_start_s))
            {
                stmt.execute(params![
                    h.venue,
                    h.hour_start_s,
                    h.exposure_events,
                    h.infectious_keys,
                    h.exposure_minutes,
                    h.max_score,
                    h.total_score,
                    h.co_present
                ])
                .map_err(err("insert venue hour"))?;
            }
        }
        tx.commit().map_err(err("commit exposures"))?;
        Ok(())
    }

    fn venue_hours(&self, filter: &ExposureFilter) -> Result<Vec<VenueHourView>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT v.name, v.kind, k.hour_start_s, coalesce(h.exposure_events, 0),
                   coalesce(h.infectious_keys, 0), coalesce(h.exposure_minutes, 0),
                   coalesce(h.max_score, 0.0), coalesce(h.total_score, 0.0), coalesce(h.co_present, 0),
                   coalesce(b.cases, 0), coalesce(b.contacts, 0)
                 FROM (SELECT venue_id, hour_start_s FROM venue_hour WHERE max_score >= ?4
                       UNION SELECT venue_id, hour_start_s FROM bluetrace_hour WHERE cases > 0) k
                 JOIN venue v ON v.id = k.venue_id
                 LEFT JOIN venue_hour h ON h.venue_id = k.venue_id AND h.hour_start_s = k.hour_start_s
                 LEFT JOIN bluetrace_hour b ON b.venue_id = k.venue_id AND b.hour_start_s = k.hour_start_s
                 WHERE (?1 IS NULL OR v.name = ?1) AND (?2 IS NULL OR k.hour_start_s >= ?2)
                   AND (?3 IS NULL OR k.hour_start_s < ?3)
                 ORDER BY k.hour_start_s, v.name",
            )
            .map_err(self.err("query exposures"))?;
        stmt.query_map(
            params![filter.venue, filter.from_s, filter.to_s, filter.min_score],
            |r| {
                Ok(VenueHourView {
                    venue: r.get(0)?,
                    kind: r.get(1)?,
                    hour_start_s: r.get(2)?,
                    exposure_events: r.get(3)?,
                    infectious_keys: r.get(4)?,
                    exposure_minutes: r.get(5)?,
                    max_score: r.get(6)?,
                    total_score: r.get(7)?,
                    co_present: r.get(8)?,
                    bt_cases: r.get(9)?,
                    bt_contacts: r.get(10)?,
                })
            },
        )
        .and_then(Iterator::collect)
        .map_err(self.err("query exposures"))
    }

    fn read_tempid_sightings(
        &self,
        from: Enin,
        to: Enin,
        each: &mut dyn FnMut(&TempIdRow<'_>),
    ) -> Result<u64, StoreError> {
        let err = self.err("read TempID sightings");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT t.venue_id, t.window_start_enin, b.calibration_db, t.tempid, t.org, t.minutes
                 FROM tempid_sighting t JOIN batch b ON b.id = t.batch
                 WHERE t.window_start_enin >= ?1 AND t.window_start_enin < ?2
                 ORDER BY t.window_start_enin, t.rowid",
            )
            .map_err(&err)?;
        let mut rows = stmt.query([from.0, to.0]).map_err(&err)?;
        let mut n = 0u64;
        while let Some(r) = rows.next().map_err(&err)? {
            let row = (|| -> rusqlite::Result<TempIdRow<'_>> {
                Ok(TempIdRow {
                    venue: r.get(0)?,
                    window_start: Enin(r.get(1)?),
                    rssi_calibration_db: r.get(2)?,
                    tempid: TempId::from_slice(blob(r, 3)?),
                    org: match r.get_ref(4)? {
                        rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t).unwrap_or(""),
                        _ => "",
                    },
                    packed_minutes: blob(r, 5)?,
                })
            })()
            .map_err(&err)?;
            each(&row);
            n += 1;
        }
        Ok(n)
    }

    fn tempid_batches_since(&self, after: i64) -> Result<(i64, Vec<u32>), StoreError> {
        let err = self.err("read new TempID batches");
        let last: i64 = self
            .conn
            .query_row("SELECT coalesce(max(id), 0) FROM batch", [], |r| r.get(0))
            .map_err(&err)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT window_start_enin FROM batch WHERE id > ?1 AND id <= ?2 AND tempids > 0",
            )
            .map_err(&err)?;
        let windows = stmt
            .query_map([after, last], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(&err)?;
        Ok((last, windows))
    }

    fn upsert_case(&mut self, case: &BluetraceCase) -> Result<bool, StoreError> {
        let err = self.err("register case");
        let tx = self.conn.transaction().map_err(&err)?;
        let existed = tx
            .query_row(
                "SELECT 1 FROM bluetrace_case WHERE uid = ?1",
                [&case.uid.as_bytes()[..]],
                |_| Ok(()),
            )
            .optional()
            .map_err(&err)?
            .is_some();
        tx.execute(
            "INSERT INTO bluetrace_case(uid, from_s, to_s, label, added_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(uid) DO UPDATE SET from_s = excluded.from_s, to_s = excluded.to_s,
               label = excluded.label, added_ms = excluded.added_ms",
            params![
                &case.uid.as_bytes()[..],
                case.from_s,
                case.to_s,
                case.label,
                case.added_ms
            ],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(!existed)
    }

    fn remove_case(&mut self, uid: &Uid) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM bluetrace_case WHERE uid = ?1",
                [&uid.as_bytes()[..]],
            )
            .map_err(self.err("remove case"))?;
        if n == 0 {
            return Err(StoreError::Registry(format!(
                "no registered case {}",
                uid.to_base64()
            )));
        }
        Ok(())
    }

    fn cases(&self) -> Result<Vec<BluetraceCase>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT uid, from_s, to_s, label, added_ms FROM bluetrace_case ORDER BY from_s, uid")
            .map_err(self.err("list cases"))?;
        stmt.query_map([], |r| {
            let mut uid = [0u8; crate::bluetrace::UID_LEN];
            let bytes = blob(r, 0)?;
            let n = bytes.len().min(uid.len());
            uid[..n].copy_from_slice(&bytes[..n]);
            Ok(BluetraceCase {
                uid: Uid::from_bytes(uid),
                from_s: r.get(1)?,
                to_s: r.get(2)?,
                label: r.get(3)?,
                added_ms: r.get(4)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(self.err("list cases"))
    }

    fn set_case_encounters(
        &mut self,
        uid: &Uid,
        records: &[EncounterRecord],
    ) -> Result<(), StoreError> {
        let err = self.err("store case encounters");
        // Immediate: the write lock from the start, waiting (busy timeout) for a writer in
        // flight instead of failing on a stale read snapshot.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&err)?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM bluetrace_case WHERE uid = ?1",
                [&uid.as_bytes()[..]],
                |_| Ok(()),
            )
            .optional()
            .map_err(&err)?
            .is_some();
        if !exists {
            return Err(StoreError::Registry(format!(
                "no registered case {}",
                uid.to_base64()
            )));
        }
        tx.execute(
            "DELETE FROM bluetrace_case_encounter WHERE case_uid = ?1",
            [&uid.as_bytes()[..]],
        )
        .map_err(&err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO bluetrace_case_encounter(case_uid, at_s, tempid, org)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(&err)?;
            for r in records {
                stmt.execute(params![
                    &uid.as_bytes()[..],
                    r.at_s,
                    &r.tempid.as_bytes()[..],
                    r.org
                ])
                .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)
    }

    fn read_case_encounters(
        &self,
        from_s: i64,
        to_s: i64,
        case: Option<&Uid>,
        f: &mut dyn FnMut(&Uid, EncounterRecord),
    ) -> Result<u64, StoreError> {
        let err = self.err("read case encounters");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT case_uid, at_s, tempid, org FROM bluetrace_case_encounter
                 WHERE at_s >= ?1 AND at_s < ?2 AND (?3 IS NULL OR case_uid = ?3)",
            )
            .map_err(&err)?;
        let mut rows = stmt
            .query(params![from_s, to_s, case.map(|c| &c.as_bytes()[..])])
            .map_err(&err)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(&err)? {
            let uid = <[u8; crate::bluetrace::UID_LEN]>::try_from(blob(r, 0).map_err(&err)?);
            let tempid = TempId::from_slice(blob(r, 2).map_err(&err)?);
            // The schema's checks hold the lengths; a row that broke them is skipped.
            if let (Ok(uid), Some(tempid)) = (uid, tempid) {
                n += 1;
                f(
                    &Uid::from_bytes(uid),
                    EncounterRecord {
                        at_s: r.get(1).map_err(&err)?,
                        tempid,
                        org: r.get(3).map_err(&err)?,
                    },
                );
            }
        }
        Ok(n)
    }

    fn case_encounter_counts(&self) -> Result<std::collections::HashMap<Uid, u64>, StoreError> {
        let err = self.err("count case encounters");
        let mut stmt = self
            .conn
            .prepare("SELECT case_uid, count(*) FROM bluetrace_case_encounter GROUP BY case_uid")
            .map_err(&err)?;
        let mut rows = stmt.query([]).map_err(&err)?;
        let mut counts = std::collections::HashMap::new();
        while let Some(r) = rows.next().map_err(&err)? {
            if let Ok(uid) = <[u8; crate::bluetrace::UID_LEN]>::try_from(blob(r, 0).map_err(&err)?)
            {
                counts.insert(
                    Uid::from_bytes(uid),
                    r.get::<_, i64>(1).map_err(&err)? as u64,
                );
            }
        }
        Ok(counts)
    }

    fn replace_bluetrace_hours_between(
        &mut self,
        from_s: i64,
        to_s: i64,
        hours: &[VenueHour],
    ) -> Result<(), StoreError> {
        let err = self.err("store BlueTrace venue hours");
        let tx = self.conn.transaction().map_err(&err)?;
        tx.execute(
            "DELETE FROM bluetrace_hour WHERE hour_start_s >= ?1 AND hour_start_s < ?2",
            params![from_s, to_s],
        )
        .map_err(&err)?;
        let hours = hours
            .iter()
            .filter(|h| (from_s..to_s).contains(&h.hour_start_s));
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO bluetrace_hour(venue_id, hour_start_s, cases, contacts) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(&err)?;
            for h in hours {
                stmt.execute(params![h.venue, h.hour_start_s, h.cases, h.contacts])
                    .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)
    }

    fn record_contact_query(
        &mut self,
        query: &ContactQuery,
        contacts: &[Contact],
    ) -> Result<i64, StoreError> {
        let err = self.err("record contact query");
        let tx = self.conn.transaction().map_err(&err)?;
        tx.execute(
            "INSERT INTO contact_query(run_ms, operator, case_uid, from_s, to_s, results)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                query.run_ms,
                query.operator,
                &query.case_uid.as_bytes()[..],
                query.from_s,
                query.to_s,
                contacts.len() as i64
            ],
        )
        .map_err(&err)?;
        let id = tx.last_insert_rowid();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO contact_result(query, venue_id, contact_uid, case_first_s, case_last_s,
                       contact_first_s, contact_last_s, overlap_minutes, max_rssi_dbm, basis)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(&err)?;
            for c in contacts {
                stmt.execute(params![
                    id,
                    c.venue,
                    &c.contact.as_bytes()[..],
                    c.case_first_s,
                    c.case_last_s,
                    c.contact_first_s,
                    c.contact_last_s,
                    c.overlap_minutes,
                    c.max_rssi_dbm,
                    c.basis.as_str()
                ])
                .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        Ok(id)
    }

    fn bluetrace_counts(&self) -> Result<BluetraceCounts, StoreError> {
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM tempid_sighting), (SELECT count(*) FROM bluetrace_case),
                   (SELECT count(*) FROM bluetrace_hour), (SELECT count(*) FROM contact_query),
                   (SELECT count(*) FROM contact_result),
                   (SELECT count(*) FROM bluetrace_case_encounter)",
                [],
                |r| {
                    Ok(BluetraceCounts {
                        tempid_sightings: r.get::<_, i64>(0)? as u64,
                        cases: r.get::<_, i64>(1)? as u64,
                        hours: r.get::<_, i64>(2)? as u64,
                        contact_queries: r.get::<_, i64>(3)? as u64,
                        contact_results: r.get::<_, i64>(4)? as u64,
                        case_encounters: r.get::<_, i64>(5)? as u64,
                    })
                },
            )
            .map_err(self.err("count BlueTrace rows"))
    }

    fn venue_names(&self) -> Result<std::collections::HashMap<u32, String>, StoreError> {
        Ok(self.venues()?.into_iter().map(|v| (v.id, v.name)).collect())
    }

    fn changes_since_match(&self) -> Result<MatchChanges, StoreError> {
        let (key_id, batch_id, revised_ms): (i64, i64, i64) = self
            .conn
            .query_row(
                "SELECT key_id, batch_id, revised_ms FROM match_state WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.err("read match state"))?
            .unwrap_or((0, 0, 0));
        let mut stmt = self
            .conn
            .prepare(
                "SELECT rolling_start, rolling_period FROM diagnosis_key
                 WHERE id > ?1 OR coalesce(revised_ms, 0) > ?2",
            )
            .map_err(self.err("read new keys"))?;
        let key_ranges: Vec<(u32, u32)> = stmt
            .query_map(params![key_id, revised_ms], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(self.err("read new keys"))?;
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT window_start_enin FROM batch WHERE id > ?1")
            .map_err(self.err("read new batches"))?;
        let windows: Vec<u32> = stmt
            .query_map([batch_id], |r| r.get(0))
            .and_then(Iterator::collect)
            .map_err(self.err("read new batches"))?;
        let watermark: (i64, i64, i64) = self
            .conn
            .query_row(
                "SELECT (SELECT coalesce(max(id), 0) FROM diagnosis_key),
                        (SELECT coalesce(max(id), 0) FROM batch),
                        (SELECT coalesce(max(revised_ms), 0) FROM diagnosis_key)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(self.err("read watermark"))?;
        Ok(MatchChanges {
            key_ranges,
            windows,
            watermark,
        })
    }

    fn set_matched(&mut self, watermark: (i64, i64, i64)) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO match_state(id, key_id, batch_id, revised_ms) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET key_id = excluded.key_id, batch_id = excluded.batch_id,
                   revised_ms = excluded.revised_ms",
                params![watermark.0, watermark.1, watermark.2],
            )
            .map_err(self.err("write match state"))?;
        Ok(())
    }

    fn batch_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM batch", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.err("count batches"))
    }
}

/// What changed since the last match run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchChanges {
    /// `(rolling_start, rolling_period)` of keys added or revised.
    pub key_ranges: Vec<(u32, u32)>,
    /// Window starts (ENIN) of batches added.
    pub windows: Vec<u32>,
    /// Highest key id, batch row id and revision time now in the store.
    pub watermark: (i64, i64, i64),
}

/// One exposure event to store (key row, venue number, times, attenuation profile, score).
#[derive(Debug, Clone, PartialEq)]
pub struct ExposureRow {
    /// The key's row id.
    pub key_id: u64,
    /// Venue number.
    pub venue: u32,
    /// Start, Unix s.
    pub start_s: i64,
    /// End, Unix s.
    pub end_s: i64,
    /// Window score (weighted seconds).
    pub score: f64,
    /// Lowest attenuation seen, dB.
    pub min_attenuation_db: u8,
    /// Typical attenuation, dB.
    pub typical_attenuation_db: u8,
    /// Minutes per attenuation bucket (immediate, near, medium, other).
    pub minutes_by_bucket: [u32; 4],
    /// Report type code.
    pub report_type: i32,
}

/// One venue-hour to store.
#[derive(Debug, Clone, PartialEq)]
pub struct VenueHourRow {
    /// Venue number.
    pub venue: u32,
    /// Hour start, Unix s.
    pub hour_start_s: i64,
    /// Exposure events.
    pub exposure_events: u32,
    /// Distinct infectious keys.
    pub infectious_keys: u32,
    /// Minutes with an infectious key present.
    pub exposure_minutes: u32,
    /// Highest window score.
    pub max_score: f64,
    /// Sum of window scores.
    pub total_score: f64,
    /// Estimated other visitors present meanwhile.
    pub co_present: u32,
}

/// Rows of the BlueTrace tables ([`SqliteStore::bluetrace_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BluetraceCounts {
    /// TempID sightings.
    pub tempid_sightings: u64,
    /// Registered cases.
    pub cases: u64,
    /// Venue-hours with cases.
    pub hours: u64,
    /// Identified-contact queries.
    pub contact_queries: u64,
    /// Their results.
    pub contact_results: u64,
    /// Encounter records of registered cases.
    pub case_encounters: u64,
}

/// Filter of an exposure query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExposureFilter {
    /// Only this venue (name).
    pub venue: Option<String>,
    /// Hours starting at or after, Unix s.
    pub from_s: Option<i64>,
    /// Hours starting before, Unix s.
    pub to_s: Option<i64>,
    /// Minimum window score of GAEN venue-hours (venue-hours with BlueTrace cases are listed
    /// whatever their score).
    pub min_score: f64,
}

/// A venue-hour as health teams see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VenueHourView {
    /// Venue name.
    pub venue: String,
    /// Venue kind.
    pub kind: String,
    /// Hour start, Unix s.
    pub hour_start_s: i64,
    /// Exposure events.
    pub exposure_events: u32,
    /// Distinct infectious keys present.
    pub infectious_keys: u32,
    /// Minutes with an infectious key present.
    pub exposure_minutes: u32,
    /// Highest window score.
    pub max_score: f64,
    /// Sum of window scores.
    pub total_score: f64,
    /// Estimated other visitors present while an infectious key was.
    pub co_present: u32,
    /// BlueTrace cases present.
    pub bt_cases: u32,
    /// Other BlueTrace users present with a case.
    pub bt_contacts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-minute RSSI survives the packed column format.
    #[test]
    fn minutes_pack_round_trip() {
        let minutes = vec![
            MinuteRssi {
                minute: 0,
                count: 3,
                min: -80,
                mean: -70,
                max: -60,
            },
            MinuteRssi {
                minute: 9,
                count: 70_000,
                min: -127,
                mean: -1,
                max: 20,
            },
        ];
        assert_eq!(unpack_minutes(&pack_minutes(&minutes)), minutes);
    }
}
