//! BlueTrace (Wiqaytna) at the authority: `venuetrace-authority bluetrace cases …` and
//! `bluetrace contacts`, and the venue-hour counts `match`, the daemon and `exposures` use.
//!
//! The decisions are [`crate::presence`]'s; this file reads the TempID sightings a question
//! needs from the store (the spans of the cases' periods, see [`presence::read_span`]),
//! decrypts them in memory with the configured keys, and stores what may be stored: the
//! venue-hour counts (`bluetrace_hour`, recomputed whole, [`recompute_hours`], or for the
//! hours new batches can change, [`recompute_hours_between`]) and, for
//! `bluetrace contacts`, the query and its results. That command names people, so it is off
//! unless `bluetrace.identify_contacts = true`, and every use is first appended to the audit
//! log ([`append_audit`]): if that fails, nothing is shown.

use super::config::{AuthorityConfig, BluetraceSettings};
use super::service::local;
use super::store::{BluetraceCase, ContactQuery, Store, StoreError};
use crate::bluetrace::{EncounterList, EncounterRecord, Uid, parse_encounter_list};
use crate::crypto::Enin;
use crate::exit::Exit;
use crate::output::{ListFormat, Table};
use crate::presence::{
    self, Case, Contact, EncounterOutcomes, Outcomes, PresenceSettings, Presences, Reads,
};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest window a batch covers, seconds: a window starting this long before a span can
/// hold minutes inside it.
const MAX_WINDOW_S: i64 = 3600;

/// A `bluetrace` command failed.
#[derive(Debug, thiserror::Error)]
pub enum BluetraceError {
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `bluetrace contacts` or `visits` while `bluetrace.identify_contacts` is off.
    #[error(
        "bluetrace contacts and visits are disabled: identifying contacts needs \
         bluetrace.identify_contacts = true in {config} (every use is then logged to \
         bluetrace.audit_log)"
    )]
    Disabled {
        /// The configuration file.
        config: PathBuf,
    },
    /// No TempID key is configured: nothing can be decrypted.
    #[error(
        "TempIDs cannot be decrypted: bluetrace.key_files is empty in {config} (TempIDs are \
         stored, encrypted)"
    )]
    NoKeys {
        /// The configuration file.
        config: PathBuf,
    },
    /// `--from` is not before `--to`.
    #[error("--from must be before --to")]
    Period,
    /// `cases add --encounters` with several UIDs.
    #[error("--encounters is one case's list: give it with one UID")]
    EncountersOfOne,
    /// The audit log cannot be written: the command is refused.
    #[error("refused: cannot write the audit log {path}")]
    Audit {
        /// The audit log.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The case's encounter list cannot be read.
    #[error("cannot read the encounter list {path}")]
    EncountersRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The case's encounter list is not one.
    #[error("encounter list {path}: {reason}")]
    Encounters {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing the result failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl BluetraceError {
    /// The sysexits code.
    pub fn exit(&self) -> Exit {
        match self {
            BluetraceError::Store(StoreError::Registry(_)) => Exit::DataErr,
            BluetraceError::Store(StoreError::Incompatible { .. }) => Exit::Config,
            BluetraceError::Store(_) => Exit::IoErr,
            BluetraceError::Disabled { .. } => Exit::NoPerm,
            BluetraceError::NoKeys { .. } => Exit::Config,
            BluetraceError::Period | BluetraceError::EncountersOfOne => Exit::Usage,
            BluetraceError::Audit { .. } => Exit::CantCreat,
            BluetraceError::EncountersRead { .. } => Exit::NoInput,
            BluetraceError::Encounters { .. } => Exit::DataErr,
            BluetraceError::Output(_) => Exit::IoErr,
        }
    }
}

/// The presence settings of the `[bluetrace]` configuration.
pub fn presence_settings(b: &BluetraceSettings) -> PresenceSettings {
    PresenceSettings {
        orgs: b.orgs.clone(),
        validity_tolerance_s: i64::from(b.validity_tolerance_s),
        gap_minutes: b.presence_gap_minutes,
        margin_minutes: b.presence_margin_minutes,
    }
}

/// The window starts (ENINs, `from..to`) whose minutes can fall in `[from_s, to_s)`: windows
/// ending after `from_s` (at most [`MAX_WINDOW_S`] long) and starting before `to_s`.
fn windows(from_s: i64, to_s: i64) -> (Enin, Enin) {
    // The first interval starting at or after `s`.
    let enin = |s: i64| Enin(u32::try_from((s + 599).div_euclid(600).max(0)).unwrap_or(u32::MAX));
    (enin(from_s - MAX_WINDOW_S + 1), enin(to_s))
}

/// Reads and decides the TempID sightings that can matter to `cases`: those of the windows
/// covering each case's [`presence::read_span`], read once where spans overlap.
pub fn load_presences(
    store: &dyn Store,
    cases: &[Case],
    b: &BluetraceSettings,
) -> Result<(Presences, u64), StoreError> {
    let settings = presence_settings(b);
    let keys = b.tempid_keys();
    let mut ranges: Vec<(Enin, Enin)> = cases
        .iter()
        .map(|c| {
            let (from, to) = presence::read_span(c.from_s, c.to_s, &settings);
            windows(from, to)
        })
        .collect();
    ranges.sort();
    let mut merged: Vec<(Enin, Enin)> = Vec::new();
    for (from, to) in ranges {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    let mut reads = Reads::new();
    let mut minutes = Vec::new();
    let mut sightings = 0;
    for (from, to) in merged {
        sightings += store.read_tempid_sightings(from, to, &mut |row| {
            let Some(tempid) = row.tempid else {
                return;
            };
            minutes.clear();
            minutes.extend(row.minutes());
            reads.add(
                &presence::TempIdObservation {
                    venue: row.venue,
                    window_start: row.window_start,
                    rssi_calibration_db: row.rssi_calibration_db,
                    tempid: &tempid,
                    org: row.org,
                    minutes: &minutes,
                },
                &keys,
                &settings,
            );
        })?;
    }
    Ok((reads.finish(), sightings))
}

/// The registered cases' stored encounter records inside `cases`' periods, decided (counted
/// on `outcomes`), by case UID.
fn load_case_encounters(
    store: &dyn Store,
    cases: &[Case],
    b: &BluetraceSettings,
    outcomes: &mut EncounterOutcomes,
) -> Result<HashMap<Uid, Vec<presence::Encounter>>, StoreError> {
    let (Some(from_s), Some(to_s)) = (
        cases.iter().map(|c| c.from_s).min(),
        cases.iter().map(|c| c.to_s).max(),
    ) else {
        return Ok(HashMap::new());
    };
    let mut records: HashMap<Uid, Vec<EncounterRecord>> = HashMap::new();
    store.read_case_encounters(from_s, to_s, None, &mut |uid, record| {
        records.entry(*uid).or_default().push(record);
    })?;
    let (keys, settings) = (b.tempid_keys(), presence_settings(b));
    let mut met = HashMap::new();
    for case in cases {
        if let Some(list) = records.get(&case.uid) {
            let (used, decided) = presence::decide_encounters(list, case, &keys, &settings);
            outcomes.decided += decided.decided;
            met.insert(case.uid, used);
        }
    }
    Ok(met)
}

/// What a recompute of the BlueTrace venue-hours did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoursSummary {
    /// Registered cases.
    pub cases: usize,
    /// Venue-hours with cases stored.
    pub venue_hours: usize,
    /// TempID sightings read.
    pub sightings: u64,
    /// How they were decided.
    pub outcomes: Outcomes,
    /// Whether any TempID key is configured (without, nothing is decrypted and no venue-hour
    /// has cases).
    pub decrypted: bool,
    /// The cases' encounter records read (within their periods), and how they were decided
    /// and placed.
    pub encounters: EncounterOutcomes,
}

impl HoursSummary {
    /// One line for people: what was found, and how many TempID sightings were not used.
    pub fn line(&self, config_file: &Path) -> String {
        if !self.decrypted {
            return format!(
                "bluetrace: {} cases, but bluetrace.key_files is empty in {}: TempIDs are \
                 stored, not decrypted",
                self.cases,
                config_file.display()
            );
        }
        let o = &self.outcomes;
        let mut line = format!(
            "bluetrace: {} cases present in {} venue-hours ({} TempID sightings read: {} used, \
             {} undecryptable, {} of other organisations, {} replays)",
            self.cases,
            self.venue_hours,
            self.sightings,
            o.used,
            o.undecryptable,
            o.wrong_org,
            o.replays
        );
        let e = &self.encounters;
        if e.decided.used + e.decided.not_used() > 0 {
            line.push_str(&format!(
                "; cases' encounter records: {} used ({} placed a case), {} undecryptable, {} of \
                 other organisations, {} replays",
                e.decided.used,
                e.placed,
                e.decided.undecryptable,
                e.decided.wrong_org,
                e.decided.replays
            ));
        }
        line
    }
}

fn as_cases(cases: &[BluetraceCase]) -> Vec<Case> {
    cases
        .iter()
        .map(|c| Case {
            uid: c.uid,
            from_s: c.from_s,
            to_s: c.to_s,
        })
        .collect()
}

/// Recomputes every BlueTrace venue-hour from the registered cases and the TempID sightings of
/// their spans, and replaces the stored ones. Without keys the venue-hours are emptied.
pub fn recompute_hours(
    store: &mut dyn Store,
    b: &BluetraceSettings,
) -> Result<HoursSummary, StoreError> {
    let cases = as_cases(&store.cases()?);
    let (summary, hours) = hours_of(store, b, &cases)?;
    store.replace_bluetrace_hours(&hours)?;
    Ok(summary)
}

/// Recomputes the BlueTrace venue-hours of the hours that start in `[from_s, to_s)` (widened
/// to whole hours) and replaces those only: the same rows as [`recompute_hours`] gives for
/// them, at the cost of the span instead of every case's whole period.
///
/// Why it is exact: whether a presence overlaps an hour, and which presences overlap each other
/// in it, depends only on reads within `gap + margin` minutes of that hour (a presence is a
/// chain of reads at most `gap` apart, widened by `margin`). So each case's period is clipped to
/// the span padded by `gap + margin` on both sides; presences then built from that clipped
/// period (and contacts from reads padded again, [`presence::read_span`]) cover the span's
/// hours exactly as the whole period's do. A case's encounters inside the clipped period are
/// minutes of the case like its reads, placed by presences of reads within `gap + margin` of
/// them: inside that read span too. A test compares both on random data.
pub fn recompute_hours_between(
    store: &mut dyn Store,
    b: &BluetraceSettings,
    from_s: i64,
    to_s: i64,
) -> Result<HoursSummary, StoreError> {
    let (from_s, to_s) = (
        from_s.div_euclid(3600) * 3600,
        to_s.div_euclid(3600) * 3600 + 3600,
    );
    let pad = i64::from(b.presence_gap_minutes + b.presence_margin_minutes) * 60;
    let cases: Vec<Case> = as_cases(&store.cases()?)
        .into_iter()
        .filter_map(|c| {
            let (from, to) = (c.from_s.max(from_s - pad), c.to_s.min(to_s + pad));
            (from < to).then_some(Case {
                from_s: from,
                to_s: to,
                ..c
            })
        })
        .collect();
    let (summary, hours) = hours_of(store, b, &cases)?;
    store.replace_bluetrace_hours_between(from_s, to_s, &hours)?;
    Ok(summary)
}

/// The venue-hours of `cases` (empty without keys), and what computing them read.
fn hours_of(
    store: &dyn Store,
    b: &BluetraceSettings,
    cases: &[Case],
) -> Result<(HoursSummary, Vec<presence::VenueHour>), StoreError> {
    let mut summary = HoursSummary {
        cases: cases.len(),
        decrypted: !b.keys.is_empty(),
        ..HoursSummary::default()
    };
    let hours = if cases.is_empty() || b.keys.is_empty() {
        Vec::new()
    } else {
        let (presences, sightings) = load_presences(store, cases, b)?;
        summary.sightings = sightings;
        summary.outcomes = presences.outcomes();
        let settings = presence_settings(b);
        let met = load_case_encounters(store, cases, b, &mut summary.encounters)?;
        let (hours, placed) = presences.venue_hours_with(cases, &met, &settings);
        summary.encounters.placed = placed;
        hours
    };
    summary.venue_hours = hours.len();
    Ok((summary, hours))
}

/// The daemon's trigger: after new batches, recompute when one of them holds TempID sightings
/// whose window falls in a registered case's span — only the hours those windows can change
/// ([`recompute_hours_between`]: from `2 × (gap + margin)` before the earliest window to as
/// much after the latest: twice, for the cases placed through their encounter lists); the
/// first call recomputes everything ([`recompute_hours`]), which covers cases
/// and batches from before the daemon started. Cases added or removed through the command line
/// are recomputed by the command itself.
#[derive(Debug, Default)]
pub struct HoursWatch {
    /// The highest batch row looked at (`None`: not yet).
    seen: Option<i64>,
}

impl HoursWatch {
    /// Nothing looked at yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at the batches stored since the last call; recomputes if needed (see the type).
    pub fn after_batches(
        &mut self,
        store: &mut dyn Store,
        b: &BluetraceSettings,
    ) -> Result<Option<HoursSummary>, StoreError> {
        let (last, windows_stored) = store.tempid_batches_since(self.seen.unwrap_or(i64::MAX))?;
        let first = self.seen.is_none();
        let settings = presence_settings(b);
        let needed = first || {
            let cases = store.cases()?;
            windows_stored.iter().any(|&w| {
                let start = i64::from(w) * 600;
                cases.iter().any(|c| {
                    let (from, to) = presence::read_span(c.from_s, c.to_s, &settings);
                    start + MAX_WINDOW_S > from && start < to
                })
            })
        };
        let summary = match (
            needed,
            windows_stored.iter().min(),
            windows_stored.iter().max(),
        ) {
            (false, _, _) => None,
            (true, Some(&first_window), Some(&last_window)) if !first => {
                // A read changes its UID's presences up to `gap + margin` away; a case's
                // encounter within such a presence places the case, whose own presences (and
                // hours) then change up to `gap + margin` further — before the window too,
                // where no allowance for the window's length helps.
                let pad = 2 * i64::from(b.presence_gap_minutes + b.presence_margin_minutes) * 60;
                Some(recompute_hours_between(
                    store,
                    b,
                    i64::from(first_window) * 600 - pad,
                    i64::from(last_window) * 600 + MAX_WINDOW_S + pad,
                )?)
            }
            (true, _, _) => Some(recompute_hours(store, b)?),
        };
        self.seen = Some(last);
        Ok(summary)
    }
}

/// Says on `notes` (stderr) when cases are registered but no key is configured: their
/// venue-hours cannot be computed (`exposures`, `bluetrace cases list`).
pub fn note_without_keys(
    store: &dyn Store,
    config: &AuthorityConfig,
    notes: &mut dyn Write,
) -> Result<(), StoreError> {
    if config.bluetrace.keys.is_empty() {
        let cases = store.bluetrace_counts()?.cases;
        if cases > 0 {
            let _ = writeln!(
                notes,
                "note: {cases} BlueTrace cases registered, but bluetrace.key_files is empty in \
                 {}: TempIDs are stored, not decrypted, and bt_cases stays 0",
                config.file.display()
            );
        }
    }
    Ok(())
}

/// `bluetrace cases add`: registers (or updates) the cases `uids`, all with the period
/// `[from_s, to_s)`, stores the one case's encounter list if given (its records within the
/// period; the file is read and checked before anything is written), then recomputes the
/// venue-hours once.
#[allow(clippy::too_many_arguments)] // one call site; a struct adds nothing
pub fn cases_add(
    store: &mut dyn Store,
    config: &AuthorityConfig,
    uids: &[Uid],
    from_s: i64,
    to_s: i64,
    label: Option<&str>,
    encounters: Option<&Path>,
    now_ms: i64,
    out: &mut dyn Write,
) -> Result<(), BluetraceError> {
    if from_s >= to_s {
        return Err(BluetraceError::Period);
    }
    if encounters.is_some() && uids.len() != 1 {
        return Err(BluetraceError::EncountersOfOne);
    }
    let encounters = encounters.map(read_encounters).transpose()?;
    let tz = &config.authority.timezone;
    let mut lines = String::new();
    for uid in uids {
        let new = store.upsert_case(&BluetraceCase {
            uid: *uid,
            from_s,
            to_s,
            label: label.map(str::to_owned),
            added_ms: now_ms,
        })?;
        lines.push_str(&format!(
            "{} case {} from {} to {}\n",
            if new { "registered" } else { "updated" },
            uid.to_base64(),
            local(from_s, tz),
            local(to_s, tz),
        ));
    }
    if encounters.is_none() {
        // A changed period: a stored list keeps only its records within the new one.
        for uid in uids {
            let mut stored = Vec::new();
            store
                .read_case_encounters(i64::MIN, i64::MAX, Some(uid), &mut |_, r| stored.push(r))?;
            let all = stored.len();
            stored.retain(|r| (from_s..to_s).contains(&r.at_s));
            if stored.len() < all {
                store.set_case_encounters(uid, &stored)?;
                lines.push_str(&format!(
                    "encounter list of {}: {} records outside the new period dropped, {} kept \
                     (--encounters FILE again restores a wider period's)\n",
                    uid.to_base64(),
                    all - stored.len(),
                    stored.len(),
                ));
            }
        }
    }
    if let (Some(file), [uid]) = (&encounters, uids) {
        let kept: Vec<EncounterRecord> = file
            .list
            .records
            .iter()
            .filter(|r| (from_s..to_s).contains(&r.at_s))
            .cloned()
            .collect();
        store.set_case_encounters(uid, &kept)?;
        lines.push_str(&format!(
            "encounter list {} ({}): {} records kept (within the period) of {}, {} malformed\n",
            file.path.display(),
            &file.sha256[..16],
            kept.len(),
            file.list.records.len() as u64 + file.list.malformed,
            file.list.malformed,
        ));
    }
    let summary = recompute_hours(store, &config.bluetrace)?;
    writeln!(out, "{lines}{}", summary.line(&config.file)).map_err(BluetraceError::Output)
}

/// `bluetrace cases remove`: removes a case and recomputes the venue-hours.
pub fn cases_remove(
    store: &mut dyn Store,
    config: &AuthorityConfig,
    uid: Uid,
    out: &mut dyn Write,
) -> Result<(), BluetraceError> {
    store.remove_case(&uid)?;
    let summary = recompute_hours(store, &config.bluetrace)?;
    writeln!(
        out,
        "removed case {}\n{}",
        uid.to_base64(),
        summary.line(&config.file)
    )
    .map_err(BluetraceError::Output)
}

/// `bluetrace cases list`.
pub fn cases_list(
    store: &dyn Store,
    tz: &jiff::tz::TimeZone,
    format: ListFormat,
    out: &mut dyn Write,
) -> Result<(), BluetraceError> {
    let mut table = Table::new(["uid", "from", "to", "label", "added", "encounters"]);
    let mut json = Vec::new();
    let encounters = store.case_encounter_counts()?;
    for c in store.cases()? {
        let added = local(c.added_ms.div_euclid(1000), tz);
        let met = encounters.get(&c.uid).copied().unwrap_or(0);
        table.row([
            c.uid.to_base64(),
            local(c.from_s, tz),
            local(c.to_s, tz),
            c.label.clone().unwrap_or_default(),
            added.clone(),
            met.to_string(),
        ]);
        json.push(serde_json::json!({
            "uid": c.uid.to_base64(),
            "from": local(c.from_s, tz),
            "from_unix_s": c.from_s,
            "to": local(c.to_s, tz),
            "to_unix_s": c.to_s,
            "label": c.label,
            "added": added,
            "added_unix_ms": c.added_ms,
            "encounters": met,
        }));
    }
    crate::output::write_list(&table, &serde_json::Value::from(json), format, out)
        .map_err(BluetraceError::Output)
}

/// A `bluetrace contacts` request.
#[derive(Debug, Clone)]
pub struct ContactsRequest {
    /// The case.
    pub uid: Uid,
    /// Period from, Unix s.
    pub from_s: i64,
    /// Period to (exclusive), Unix s.
    pub to_s: i64,
    /// Who asks (recorded in the audit log and the store).
    pub operator: String,
    /// The case's uploaded encounter list, if the health team has it.
    pub encounters: Option<PathBuf>,
    /// Output format.
    pub format: ListFormat,
    /// The others present with the case, or the case's own visits.
    pub kind: QueryKind,
}

/// What a `bluetrace contacts|visits` request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// The people present with the case (`bluetrace contacts`).
    Contacts,
    /// Where the case was (`bluetrace visits`).
    Visits,
}

impl QueryKind {
    /// The command's name, as the audit log records it.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryKind::Contacts => "contacts",
            QueryKind::Visits => "visits",
        }
    }
}

/// Largest encounter list read: a phone keeps 21 days of records, ~250 bytes each; a phone
/// recording 2,000 encounters a day uploads ~10 MiB.
pub const MAX_ENCOUNTER_LIST_BYTES: u64 = 64 << 20;

/// An encounter list read from its file: the parsed records and what identifies the file in
/// the audit log.
struct EncounterFile {
    path: PathBuf,
    sha256: String,
    list: EncounterList,
}

fn read_encounters(path: &Path) -> Result<EncounterFile, BluetraceError> {
    use sha2::Digest;
    let read_err = |source| BluetraceError::EncountersRead {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_ENCOUNTER_LIST_BYTES + 1),
        &mut bytes,
    )
    .map_err(read_err)?;
    if bytes.len() as u64 > MAX_ENCOUNTER_LIST_BYTES {
        return Err(BluetraceError::Encounters {
            path: path.to_owned(),
            reason: format!(
                "larger than {} MiB: not a phone's upload",
                MAX_ENCOUNTER_LIST_BYTES >> 20
            ),
        });
    }
    let list = parse_encounter_list(&bytes).map_err(|e| BluetraceError::Encounters {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(EncounterFile {
        // As the audit log names it: the absolute path, if it resolves.
        path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()),
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        list,
    })
}

/// Who runs the command, when `--operator` is not given: `$SUDO_USER` (the person behind
/// `sudo -u venuetrace-authority`), else `$USER`, else the numeric user id.
pub fn default_operator(env: &[(String, String)]) -> String {
    let var = |name: &str| {
        env.iter()
            .find(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
    };
    var("SUDO_USER").or_else(|| var("USER")).unwrap_or_else(|| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self")
            .map(|m| format!("uid {}", m.uid()))
            .unwrap_or_else(|_| "unknown".to_owned())
    })
}

/// Appends one line (`record` as JSON) to the audit log at `path`: opened append-only (created
/// with mode 0600 if absent, never truncated or rewritten), written in one `write`, and
/// fsync'ed before returning.
pub fn append_audit(path: &Path, record: &serde_json::Value) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut line = record.to_string();
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(line.as_bytes())?;
    file.sync_all()
}

/// `bluetrace contacts`: refused unless `bluetrace.identify_contacts` (exit 77) and keys are
/// configured; reads and decides the case's encounter list if one is given (refused before
/// the store is read if the file is not one); computes the contacts, appends the audit line
/// (refused, printing nothing, if that fails), records the query and its results, then prints
/// them; the TempID sightings and encounter records not used are counted on `notes` (stderr).
pub fn contacts(
    store: &mut dyn Store,
    config: &AuthorityConfig,
    database: &super::config::Database,
    request: &ContactsRequest,
    now_ms: i64,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<(), BluetraceError> {
    let b = &config.bluetrace;
    if !b.identify_contacts {
        return Err(BluetraceError::Disabled {
            config: config.file.clone(),
        });
    }
    if b.keys.is_empty() {
        return Err(BluetraceError::NoKeys {
            config: config.file.clone(),
        });
    }
    if request.from_s >= request.to_s {
        return Err(BluetraceError::Period);
    }
    let case = Case {
        uid: request.uid,
        from_s: request.from_s,
        to_s: request.to_s,
    };
    // The list is read and decided before the store: a list that is not one is refused
    // without a query (nothing audited, nothing recorded).
    let settings = presence_settings(b);
    let encounters = request
        .encounters
        .as_deref()
        .map(read_encounters)
        .transpose()?;
    // Without a file, the list stored with the case (`cases add --encounters`), if any.
    let mut stored = Vec::new();
    if encounters.is_none() {
        store.read_case_encounters(
            request.from_s,
            request.to_s,
            Some(&request.uid),
            &mut |_, r| stored.push(r),
        )?;
    }
    let records = encounters
        .as_ref()
        .map_or(&stored, |file| &file.list.records);
    let (met, mut met_outcomes) =
        presence::decide_encounters(records, &case, &b.tempid_keys(), &settings);
    let (presences, sightings) = load_presences(store, &[case], b)?;
    let (found, placed) = presences.case_contacts(&case, &met, &settings);
    met_outcomes.placed = placed;
    let visits = match request.kind {
        QueryKind::Visits => presences.case_visits(&case, &met, &settings),
        QueryKind::Contacts => Vec::new(),
    };
    let results = match request.kind {
        QueryKind::Contacts => found.len(),
        QueryKind::Visits => visits.len(),
    };
    let tz = &config.authority.timezone;
    let mut record = serde_json::json!({
        "time": crate::output::iso_utc((now_ms.max(0) / 1000) as u64),
        "time_unix_ms": now_ms,
        "query": request.kind.as_str(),
        "operator": request.operator,
        "case_uid": request.uid.to_base64(),
        "from": local(request.from_s, tz),
        "from_unix_s": request.from_s,
        "to": local(request.to_s, tz),
        "to_unix_s": request.to_s,
        "results": results,
        "database": database.to_string(),
    });
    // Which list was used (the file and its digest, or the stored one) and what came of it.
    let source = match &encounters {
        Some(file) => Some(serde_json::json!({
            "file": file.path.display().to_string(),
            "sha256": file.sha256,
            "records": file.list.records.len() as u64 + file.list.malformed,
            "malformed": file.list.malformed,
        })),
        None if !stored.is_empty() => {
            Some(serde_json::json!({ "stored": true, "records": stored.len() }))
        }
        None => None,
    };
    if let Some(mut summary) = source {
        if let (Some(summary), serde_json::Value::Object(outcomes)) = (
            summary.as_object_mut(),
            serde_json::to_value(met_outcomes).unwrap_or_default(),
        ) {
            summary.extend(outcomes);
        }
        record["encounters"] = summary;
    }
    append_audit(&b.audit_log, &record).map_err(|source| BluetraceError::Audit {
        path: b.audit_log.clone(),
        source,
    })?;
    // Identified contacts are kept with the store's retention; a case's visits name nobody
    // else and are not kept (the audit line records the query).
    if request.kind == QueryKind::Contacts {
        store.record_contact_query(
            &ContactQuery {
                run_ms: now_ms,
                operator: request.operator.clone(),
                case_uid: request.uid,
                from_s: request.from_s,
                to_s: request.to_s,
            },
            &found,
        )?;
    }
    let o = presences.outcomes();
    let _ = writeln!(
        notes,
        "note: {results} {}; {sightings} TempID sightings read, {} used; not used: {} \
         undecryptable, {} of other organisations, {} replays (read outside their validity)",
        request.kind.as_str(),
        o.used,
        o.undecryptable,
        o.wrong_org,
        o.replays
    );
    if let Some(file) = &encounters {
        let m = &met_outcomes;
        let first_malformed = file
            .list
            .first_malformed
            .as_ref()
            .map(|(index, why)| format!(" (the first: record {} of the list, {why})", index + 1))
            .unwrap_or_default();
        let _ = writeln!(
            notes,
            "note: encounter list {}: {} records, {} malformed{first_malformed}, {} outside the \
             period; {} used, {} placed the case at a venue; not used: {} undecryptable, {} of \
             other organisations, {} replays (recorded outside their validity)",
            file.path.display(),
            file.list.records.len() as u64 + file.list.malformed,
            file.list.malformed,
            m.outside_period,
            m.decided.used,
            m.placed,
            m.decided.undecryptable,
            m.decided.wrong_org,
            m.decided.replays,
        );
    } else if !stored.is_empty() {
        let m = &met_outcomes;
        let _ = writeln!(
            notes,
            "note: the case's stored encounter list: {} records in the period; {} used, {} placed \
             the case at a venue; not used: {} undecryptable, {} of other organisations, {} \
             replays (recorded outside their validity)",
            stored.len(),
            m.decided.used,
            m.placed,
            m.decided.undecryptable,
            m.decided.wrong_org,
            m.decided.replays,
        );
    }
    match request.kind {
        QueryKind::Contacts => write_contacts(store, &found, tz, request.format, out),
        QueryKind::Visits => write_visits(store, &visits, tz, request.format, out),
    }
}

/// A venue's name, or its number if it has none in `venues`.
fn venue_name(venues: &HashMap<u32, String>, venue: u32) -> String {
    venues
        .get(&venue)
        .cloned()
        .unwrap_or_else(|| venue.to_string())
}

fn write_visits(
    store: &dyn Store,
    visits: &[presence::Visit],
    tz: &jiff::tz::TimeZone,
    format: ListFormat,
    out: &mut dyn Write,
) -> Result<(), BluetraceError> {
    let venues = store.venue_names()?;
    let mut table = Table::new([
        "venue",
        "first_seen",
        "last_seen",
        "from",
        "to",
        "minutes",
        "basis",
        "contacts",
    ]);
    let mut json = Vec::new();
    for v in visits {
        let venue = venue_name(&venues, v.venue);
        let times = [v.first_s, v.last_s, v.start_s, v.end_s].map(|s| local(s, tz));
        let minutes = (v.end_s - v.start_s + 59) / 60;
        table.row([
            venue.clone(),
            times[0].clone(),
            times[1].clone(),
            times[2].clone(),
            times[3].clone(),
            minutes.to_string(),
            v.basis.as_str().to_owned(),
            v.contacts.to_string(),
        ]);
        json.push(serde_json::json!({
            "venue": venue,
            "first_seen": times[0],
            "first_seen_unix_s": v.first_s,
            "last_seen": times[1],
            "last_seen_unix_s": v.last_s,
            "from": times[2],
            "from_unix_s": v.start_s,
            "to": times[3],
            "to_unix_s": v.end_s,
            "minutes": minutes,
            "basis": v.basis.as_str(),
            "contacts": v.contacts,
        }));
    }
    crate::output::write_list(&table, &serde_json::Value::from(json), format, out)
        .map_err(BluetraceError::Output)
}

fn write_contacts(
    store: &dyn Store,
    found: &[Contact],
    tz: &jiff::tz::TimeZone,
    format: ListFormat,
    out: &mut dyn Write,
) -> Result<(), BluetraceError> {
    let venues = store.venue_names()?;
    let mut table = Table::new([
        "venue",
        "case_first",
        "case_last",
        "contact_uid",
        "contact_first",
        "contact_last",
        "overlap_min",
        "max_rssi_dbm",
        "basis",
    ]);
    let mut json = Vec::new();
    for c in found {
        let venue = venue_name(&venues, c.venue);
        let times = [
            c.case_first_s,
            c.case_last_s,
            c.contact_first_s,
            c.contact_last_s,
        ]
        .map(|s| local(s, tz));
        table.row([
            venue.clone(),
            times[0].clone(),
            times[1].clone(),
            c.contact.to_base64(),
            times[2].clone(),
            times[3].clone(),
            c.overlap_minutes.to_string(),
            c.max_rssi_dbm.to_string(),
            c.basis.as_str().to_owned(),
        ]);
        json.push(serde_json::json!({
            "venue": venue,
            "case_first_seen": times[0],
            "case_first_seen_unix_s": c.case_first_s,
            "case_last_seen": times[1],
            "case_last_seen_unix_s": c.case_last_s,
            "contact_uid": c.contact.to_base64(),
            "contact_first_seen": times[2],
            "contact_first_seen_unix_s": c.contact_first_s,
            "contact_last_seen": times[3],
            "contact_last_seen_unix_s": c.contact_last_s,
            "overlap_minutes": c.overlap_minutes,
            "max_rssi_dbm": c.max_rssi_dbm,
            "basis": c.basis.as_str(),
        }));
    }
    crate::output::write_list(&table, &serde_json::Value::from(json), format, out)
        .map_err(BluetraceError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The windows read for a span start up to an hour before it (a 60-minute window holds
    /// minutes that late) and end with the window holding its last second.
    #[test]
    fn windows_of_a_span() {
        // 3000 + 3600 > 6000, 2400 + 3600 is not; 6000 < 6600, 6600 is not.
        assert_eq!(windows(6000, 6600), (Enin(5), Enin(11)));
        assert_eq!(windows(6001, 6601), (Enin(5), Enin(12)));
        assert_eq!(windows(6599, 6601), (Enin(5), Enin(12)));
        assert_eq!(windows(6600, 6601), (Enin(6), Enin(12)));
        assert_eq!(windows(0, 600), (Enin(0), Enin(1)));
    }

    /// The operator is `$SUDO_USER`, else `$USER`, else the user id.
    #[test]
    fn operator() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            default_operator(&env(&[("USER", "svc"), ("SUDO_USER", "alice")])),
            "alice"
        );
        assert_eq!(
            default_operator(&env(&[("USER", "svc"), ("SUDO_USER", "")])),
            "svc"
        );
        assert!(default_operator(&[]).starts_with("uid "));
    }
}
