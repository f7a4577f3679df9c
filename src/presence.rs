//! BlueTrace (Wiqaytna) presence and contacts: stored TempID sightings → who was at which
//! venue when → a case's contacts, and per venue-hour how many cases and contacts there were.
//!
//! Pure: sightings, keys and settings in, values out. Reading sightings from the store,
//! storing results, the audit log and printing are [`crate::authority`]'s.
//!
//! # From sightings to reads
//!
//! Each TempID sighting (one TempID read by one gateway in one window, with the minutes it was
//! read in) is decided once ([`decide`]): its organisation must be one of the configured ones
//! (else *wrong org*); one of the keys must authenticate it (else *undecryptable*: another
//! key, or altered bytes); and every minute it was read in, `[window start + minute·60,
//! +60 s)`, must fall inside the TempID's validity window widened by the tolerance (else a
//! *replay*: a legitimate phone picks its TempID by the time, so one read outside its window
//! was recorded and played back, or comes from a clock far off). A sighting with any minute
//! outside is flagged and none of it is used: what else it says cannot be trusted either.
//! Used sightings become *reads*: (venue, UID, Unix minute, highest calibrated RSSI), one per
//! UID and minute at a venue whatever the number of gateways and TempIDs.
//!
//! # Presences and contacts
//!
//! A UID's reads at one venue form *presences*: reads at most `gap_minutes` apart are one
//! presence (gateways re-read a phone every ~100 s but phones do not always answer), from its
//! first read minute to the end of its last, widened by `margin_minutes` on both sides
//! (someone leaving right after a read was still there), presences that then overlap merged.
//! A *case* (UID, infectious period `[from, to)`) has the presences built from its reads inside
//! the period, clipped to it. A *contact* is a presence of another UID at the same venue that
//! overlaps one of the case's: one row per such presence, with the overlap in minutes
//! (rounded up) and the highest calibrated RSSI read in it — how close that phone came to the
//! gateway, the only proximity a gateway can measure. A contact's presences are built from its
//! reads within [`read_span`] of the case's period, so a case's result depends on nothing
//! outside that span.
//!
//! # Encounter lists
//!
//! A case's phone may not have been read at a venue (a gateway reads a phone only when it
//! answers a connection, and not every phone does) while its phone still recorded the phones
//! around it. Its uploaded encounter list (OpenTrace's `StreetPassRecord`s: when, and the other
//! phone's TempID) then places it: each record inside the case's period is decided as a
//! sighting is ([`decide_encounters`]: organisation, key, and the record's second inside the
//! TempID's validity, else a replay), and a used one whose UID has a presence at a venue
//! containing that second puts the case at that venue in that minute — phones exchange
//! TempIDs only within a few metres. Those minutes join the case's own reads at the venue
//! before its presences are built, so a contact's row says what put the case there
//! ([`Basis`]: its own TempIDs read, an encounter, or both). The phone that was met is a
//! contact too, like anyone else whose presence overlaps. An encounter with a UID no gateway
//! read then places nothing: the venue is unknown.
//!
//! # Venue-hours
//!
//! Per venue and hour ([`Presences::venue_hours`]): `cases`, the distinct case UIDs with a
//! presence in that hour (widened by the margin and clipped to their period, as for contacts,
//! so an hour with contacts always has its case), and `contacts`, the distinct other UIDs whose
//! presence overlapped a case's in that hour (a registered case counted as a case in that hour
//! is not also a contact). Counts only: the venue-hour report never names anyone.

use crate::aggregate::MinuteRssi;
use crate::bluetrace::{EncounterRecord, TempId, TempIdKey, Uid, Validity};
use crate::crypto::Enin;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

/// How sightings are decided and presences built (`[bluetrace]` of the authority's
/// configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceSettings {
    /// Organisation codes whose TempIDs are used; empty: any.
    pub orgs: Vec<String>,
    /// Clock skew allowed around a TempID's validity window, seconds.
    pub validity_tolerance_s: i64,
    /// Reads at most this many minutes apart are one presence (at least 1).
    pub gap_minutes: u32,
    /// Presences are widened by this many minutes on both sides.
    pub margin_minutes: u32,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            orgs: vec!["MAR".to_owned()],
            validity_tolerance_s: 60,
            gap_minutes: 15,
            margin_minutes: 2,
        }
    }
}

/// One stored TempID sighting, as presence needs it.
#[derive(Debug, Clone, Copy)]
pub struct TempIdObservation<'a> {
    /// Venue number.
    pub venue: u32,
    /// Start of the batch's window.
    pub window_start: Enin,
    /// The gateway's calibration, dB, added to its RSSI.
    pub rssi_calibration_db: i32,
    /// The encrypted TempID, as received.
    pub tempid: &'a TempId,
    /// The organisation code that came with it.
    pub org: &'a str,
    /// The minutes it was read in (offsets from the window start) and their RSSI.
    pub minutes: &'a [MinuteRssi],
}

/// What one sighting is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Decrypted, of a configured organisation, read inside its validity: used as this UID.
    Used(Uid),
    /// No key authenticates it: another key, or altered bytes.
    Undecryptable,
    /// Its organisation is not a configured one.
    WrongOrg,
    /// Read (at least one minute) outside its validity window: before its start or after its
    /// expiry, beyond the tolerance.
    Replay(Validity),
}

/// Decides one sighting (see the module documentation). Keys are tried in order.
pub fn decide(
    sighting: &TempIdObservation<'_>,
    keys: &[TempIdKey],
    settings: &PresenceSettings,
) -> Decision {
    let window_start_s = i64::from(sighting.window_start.0) * 600;
    decide_tempid(
        sighting.tempid,
        sighting.org,
        sighting.minutes.iter().map(|m| {
            let seen_from = window_start_s + i64::from(m.minute) * 60;
            (seen_from, seen_from + 60)
        }),
        keys,
        settings,
    )
}

/// Decides a TempID of organisation `org` seen in each of the spans `seen` (Unix seconds,
/// `[from, until)`): organisation, then a key, then every span inside the validity.
fn decide_tempid(
    tempid: &TempId,
    org: &str,
    seen: impl IntoIterator<Item = (i64, i64)>,
    keys: &[TempIdKey],
    settings: &PresenceSettings,
) -> Decision {
    if !settings.orgs.is_empty() && !settings.orgs.iter().any(|o| o == org) {
        return Decision::WrongOrg;
    }
    let Some(decrypted) = keys.iter().find_map(|k| k.decrypt(tempid).ok()) else {
        return Decision::Undecryptable;
    };
    for (from, until) in seen {
        match decrypted.validity(from, until, settings.validity_tolerance_s) {
            Validity::Valid => {}
            other => return Decision::Replay(other),
        }
    }
    Decision::Used(decrypted.uid)
}

/// How many sightings were used, and why the others were not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outcomes {
    /// Used.
    pub used: u64,
    /// No key authenticates them.
    pub undecryptable: u64,
    /// Of another organisation.
    pub wrong_org: u64,
    /// Read outside their validity window.
    pub replays: u64,
}

impl std::ops::AddAssign for Outcomes {
    fn add_assign(&mut self, other: Outcomes) {
        let Outcomes {
            used,
            undecryptable,
            wrong_org,
            replays,
        } = other;
        self.used += used;
        self.undecryptable += undecryptable;
        self.wrong_org += wrong_org;
        self.replays += replays;
    }
}

impl Outcomes {
    /// Sightings not used.
    pub fn not_used(&self) -> u64 {
        self.undecryptable + self.wrong_org + self.replays
    }

    fn count(&mut self, decision: &Decision) {
        match decision {
            Decision::Used(_) => self.used += 1,
            Decision::Undecryptable => self.undecryptable += 1,
            Decision::WrongOrg => self.wrong_org += 1,
            Decision::Replay(_) => self.replays += 1,
        }
    }
}

/// One UID read at one venue in one minute: the highest calibrated RSSI of that minute.
/// 16 bytes: a span's reads are held in memory at once (~3 per sighting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Read {
    venue: u32,
    uid: u32,
    /// Unix minute (an `i32` lasts until the year 6053; ingest refuses windows in the
    /// future, so stored ones fit).
    minute: i32,
    /// dBm: an `i8` RSSI plus a calibration of ±30 dB.
    rssi: i16,
}

/// Collects the reads of decided sightings; [`finish`](Self::finish) indexes them.
#[derive(Debug, Default)]
pub struct Reads {
    uids: Vec<Uid>,
    ids: HashMap<Uid, u32>,
    reads: Vec<Read>,
    outcomes: Outcomes,
}

impl Reads {
    /// Nothing read yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides `sighting` and keeps its reads if it is used; returns the decision.
    pub fn add(
        &mut self,
        sighting: &TempIdObservation<'_>,
        keys: &[TempIdKey],
        settings: &PresenceSettings,
    ) -> Decision {
        let decision = decide(sighting, keys, settings);
        self.outcomes.count(&decision);
        if let Decision::Used(uid) = decision {
            let next = self.uids.len() as u32;
            let id = *self.ids.entry(uid).or_insert(next);
            if id == next {
                self.uids.push(uid);
            }
            let window_minute = i64::from(sighting.window_start.0) * 10;
            self.reads.extend(sighting.minutes.iter().map(|m| {
                Read {
                    venue: sighting.venue,
                    uid: id,
                    minute: i32::try_from(window_minute + i64::from(m.minute)).unwrap_or(i32::MAX),
                    rssi: i16::try_from(i32::from(m.max) + sighting.rssi_calibration_db)
                        .unwrap_or(i16::MAX),
                }
            }));
        }
        decision
    }

    /// Sightings decided so far, by outcome.
    pub fn outcomes(&self) -> Outcomes {
        self.outcomes
    }

    /// Sorts and indexes the reads (one per venue, UID and minute: the highest RSSI).
    pub fn finish(mut self) -> Presences {
        self.reads
            .sort_unstable_by_key(|r| (r.venue, r.uid, r.minute, std::cmp::Reverse(r.rssi)));
        self.reads.dedup_by_key(|r| (r.venue, r.uid, r.minute));
        let mut groups: Vec<Group> = Vec::new();
        for (i, r) in self.reads.iter().enumerate() {
            match groups.last_mut() {
                Some(g) if g.venue == r.venue && g.uid == r.uid => g.reads.end = i + 1,
                _ => groups.push(Group {
                    venue: r.venue,
                    uid: r.uid,
                    reads: i..i + 1,
                }),
            }
        }
        let mut by_uid: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, g) in groups.iter().enumerate() {
            by_uid.entry(g.uid).or_default().push(i);
        }
        Presences {
            uids: self.uids,
            ids: self.ids,
            reads: self.reads,
            groups,
            by_uid,
            outcomes: self.outcomes,
        }
    }
}

/// The reads of one UID at one venue.
#[derive(Debug, Clone)]
struct Group {
    venue: u32,
    uid: u32,
    reads: Range<usize>,
}

/// A registered case: whose presences count as infectious, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// The case's UID.
    pub uid: Uid,
    /// Infectious from, Unix seconds.
    pub from_s: i64,
    /// Infectious until (exclusive), Unix seconds.
    pub to_s: i64,
}

/// The reads that can matter to a case of period `[from_s, to_s)`, Unix seconds: the period
/// and `gap + margin` minutes either side (a contact's presence is built from these only).
pub fn read_span(from_s: i64, to_s: i64, settings: &PresenceSettings) -> (i64, i64) {
    let pad = i64::from(settings.gap_minutes + settings.margin_minutes) * 60;
    (from_s - pad, to_s + pad)
}

/// The case's phone met another phone: that phone's UID (its TempID decrypted) and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encounter {
    /// The other phone's UID.
    pub uid: Uid,
    /// When, Unix seconds.
    pub at_s: i64,
}

/// How the records of a case's encounter list were decided, and how many placed the case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EncounterOutcomes {
    /// Records outside the case's period (not decided).
    pub outside_period: u64,
    /// Records inside it, decided: used (decrypted, of a configured organisation, recorded
    /// inside the TempID's validity) or why not.
    #[serde(flatten)]
    pub decided: Outcomes,
    /// Used records that put the case at a venue: the other phone was read there then.
    pub placed: u64,
}

/// Decides the records of `case`'s encounter list that fall in its period, as sightings are
/// decided ([`decide`]; the record's second is the time seen). Returns the used ones.
pub fn decide_encounters(
    records: &[EncounterRecord],
    case: &Case,
    keys: &[TempIdKey],
    settings: &PresenceSettings,
) -> (Vec<Encounter>, EncounterOutcomes) {
    let mut outcomes = EncounterOutcomes::default();
    let mut used = Vec::new();
    for r in records {
        if r.at_s < case.from_s || r.at_s >= case.to_s {
            outcomes.outside_period += 1;
            continue;
        }
        let decision = decide_tempid(&r.tempid, &r.org, [(r.at_s, r.at_s + 1)], keys, settings);
        outcomes.decided.count(&decision);
        if let Decision::Used(uid) = decision {
            used.push(Encounter { uid, at_s: r.at_s });
        }
    }
    (used, outcomes)
}

/// What puts the case with a contact: the contact's presence overlaps the case's presences
/// built from its own reads alone, from its encounters alone, or both. A contact met only where
/// an encounter joined two stretches of reads, or extended one, rests on the encounter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Basis {
    /// A gateway there read the case's own TempIDs.
    Read,
    /// The case's phone met a phone a gateway there read at that time (its encounter list).
    Encounter,
    /// Both.
    Both,
}

impl Basis {
    /// The name used in output and the store: `read`, `encounter`, `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Read => "read",
            Basis::Encounter => "encounter",
            Basis::Both => "both",
        }
    }
}

/// A presence of one UID at one venue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// First minute read, Unix seconds.
    pub first_s: i64,
    /// Last minute read (its start), Unix seconds.
    pub last_s: i64,
    /// Start, widened by the margin (and clipped to a case's period), Unix seconds.
    pub start_s: i64,
    /// End (exclusive), widened by the margin (and clipped), Unix seconds.
    pub end_s: i64,
    /// Highest calibrated RSSI read, dBm.
    pub max_rssi_dbm: i32,
}

/// Presences of `reads` ((Unix minute, calibrated RSSI), ascending by minute): reads at most
/// `gap_minutes` apart are one presence; each is widened by `margin_minutes`, and those that
/// then overlap are merged.
pub fn presences(
    reads: impl IntoIterator<Item = (i64, i32)>,
    settings: &PresenceSettings,
) -> Vec<Presence> {
    let (gap, margin) = (
        i64::from(settings.gap_minutes.max(1)),
        i64::from(settings.margin_minutes) * 60,
    );
    let mut runs: Vec<Presence> = Vec::new();
    for (minute, rssi) in reads {
        match runs.last_mut() {
            Some(p) if minute - p.last_s / 60 <= gap => {
                p.last_s = p.last_s.max(minute * 60);
                p.end_s = p.end_s.max((minute + 1) * 60 + margin);
                p.max_rssi_dbm = p.max_rssi_dbm.max(rssi);
            }
            _ => runs.push(Presence {
                first_s: minute * 60,
                last_s: minute * 60,
                start_s: minute * 60 - margin,
                end_s: (minute + 1) * 60 + margin,
                max_rssi_dbm: rssi,
            }),
        }
    }
    let mut merged: Vec<Presence> = Vec::with_capacity(runs.len());
    for p in runs {
        match merged.last_mut() {
            Some(m) if p.start_s < m.end_s => {
                m.last_s = m.last_s.max(p.last_s);
                m.end_s = m.end_s.max(p.end_s);
                m.max_rssi_dbm = m.max_rssi_dbm.max(p.max_rssi_dbm);
            }
            _ => merged.push(p),
        }
    }
    merged
}

/// Someone who was at a venue at the same time as a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// Venue number.
    pub venue: u32,
    /// The case's first known minute (a read, or an encounter's) in the presences this contact
    /// overlapped, Unix seconds.
    pub case_first_s: i64,
    /// The case's last known minute (its start) in those presences, Unix seconds.
    pub case_last_s: i64,
    /// The contact's UID.
    pub contact: Uid,
    /// The contact's first read in this presence, Unix seconds.
    pub contact_first_s: i64,
    /// The contact's last read (the minute's start) in this presence, Unix seconds.
    pub contact_last_s: i64,
    /// Minutes the widened presences overlapped (rounded up).
    pub overlap_minutes: u32,
    /// The contact's highest calibrated RSSI in this presence, dBm (nearness to the gateway).
    pub max_rssi_dbm: i32,
    /// What put the case there: its own TempIDs read, its encounter list, or both.
    pub basis: Basis,
}

/// A case's presence at a venue: where and when it was, on what basis, with how many others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visit {
    /// Venue number.
    pub venue: u32,
    /// The case's first known minute there, Unix seconds.
    pub first_s: i64,
    /// Its last known minute (the minute's start), Unix seconds.
    pub last_s: i64,
    /// The presence widened by the margin and clipped to the period: from, Unix seconds.
    pub start_s: i64,
    /// To (exclusive), Unix seconds.
    pub end_s: i64,
    /// Its own TempIDs read there, its encounters, or both.
    pub basis: Basis,
    /// Distinct other UIDs whose presence overlapped it.
    pub contacts: u32,
}

/// One venue-hour of BlueTrace cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VenueHour {
    /// Venue number.
    pub venue: u32,
    /// Start of the hour, Unix seconds.
    pub hour_start_s: i64,
    /// Distinct cases present (inside their period).
    pub cases: u32,
    /// Distinct other UIDs present with a case.
    pub contacts: u32,
}

/// One contact presence, with the overlapping stretches (for the venue-hours).
struct Overlap {
    contact: Contact,
    uid: u32,
    segments: Vec<(i64, i64)>,
}

/// What one case gives: its presences per venue and its contacts.
struct CaseResult {
    /// Per venue, the case's presences and what each rests on.
    presences: Vec<(u32, Vec<(Presence, Basis)>)>,
    overlaps: Vec<Overlap>,
    /// Encounters that placed the case at a venue.
    placed: u64,
}

/// What rests on `p`'s overlap with the case's presences built from its reads alone
/// (`by_reads`) and from its encounters alone (`by_encounters`).
fn basis_of(p: &Presence, by_reads: &[Presence], by_encounters: &[Presence]) -> Basis {
    let meets = |ps: &[Presence]| {
        ps.iter()
            .any(|k| p.start_s.max(k.start_s) < p.end_s.min(k.end_s))
    };
    match (meets(by_reads), meets(by_encounters)) {
        (true, true) => Basis::Both,
        (true, false) => Basis::Read,
        (false, _) => Basis::Encounter,
    }
}

/// One minute the case is known to have been at a venue: (Unix minute, calibrated RSSI, from
/// an encounter rather than a read of its own TempID).
type CaseMinute = (i64, i32, bool);

/// The reads of a span, indexed by venue and UID.
#[derive(Debug)]
pub struct Presences {
    uids: Vec<Uid>,
    ids: HashMap<Uid, u32>,
    reads: Vec<Read>,
    /// Sorted by (venue, UID).
    groups: Vec<Group>,
    by_uid: HashMap<u32, Vec<usize>>,
    outcomes: Outcomes,
}

impl Presences {
    /// How the sightings read were decided.
    pub fn outcomes(&self) -> Outcomes {
        self.outcomes
    }

    /// Distinct UIDs read.
    pub fn uids(&self) -> usize {
        self.uids.len()
    }

    /// Reads kept (one per venue, UID and minute).
    pub fn reads(&self) -> usize {
        self.reads.len()
    }

    /// The presences of `group`'s reads with minutes starting in `[from_s, to_s)`.
    fn group_presences(
        &self,
        group: &Group,
        from_s: i64,
        to_s: i64,
        settings: &PresenceSettings,
    ) -> Vec<Presence> {
        let reads = &self.reads[group.reads.clone()];
        let lo = reads.partition_point(|r| i64::from(r.minute) * 60 < from_s);
        let hi = reads.partition_point(|r| i64::from(r.minute) * 60 < to_s);
        presences(
            reads[lo..hi.max(lo)]
                .iter()
                .map(|r| (i64::from(r.minute), i32::from(r.rssi))),
            settings,
        )
    }

    fn case_result(
        &self,
        case: &Case,
        encounters: &[Encounter],
        settings: &PresenceSettings,
    ) -> CaseResult {
        let mut result = CaseResult {
            presences: Vec::new(),
            overlaps: Vec::new(),
            placed: 0,
        };
        let case_id = self.ids.get(&case.uid).copied();
        let groups_of = |id: u32| self.by_uid.get(&id).map_or(&[][..], Vec::as_slice);
        // Where the case was, per venue: its own reads in its period, then the minutes its
        // encounters place it.
        let mut own: BTreeMap<u32, Vec<CaseMinute>> = BTreeMap::new();
        for &g in case_id.map_or(&[][..], groups_of) {
            let group = &self.groups[g];
            let reads = &self.reads[group.reads.clone()];
            let lo = reads.partition_point(|r| i64::from(r.minute) * 60 < case.from_s);
            let hi = reads.partition_point(|r| i64::from(r.minute) * 60 < case.to_s);
            own.entry(group.venue).or_default().extend(
                reads[lo..hi.max(lo)]
                    .iter()
                    .map(|r| (i64::from(r.minute), i32::from(r.rssi), false)),
            );
        }
        // A presence containing an instant has a read within gap + margin of it.
        let pad = i64::from(settings.gap_minutes.max(1) + settings.margin_minutes + 1) * 60;
        for e in encounters {
            if e.at_s < case.from_s || e.at_s >= case.to_s {
                continue;
            }
            let Some(&id) = self.ids.get(&e.uid) else {
                continue;
            };
            if Some(id) == case_id {
                continue;
            }
            let mut placed = false;
            for &g in groups_of(id) {
                let group = &self.groups[g];
                let there = self
                    .group_presences(group, e.at_s - pad, e.at_s + pad, settings)
                    .iter()
                    .any(|p| p.start_s <= e.at_s && e.at_s < p.end_s);
                if there {
                    own.entry(group.venue).or_default().push((
                        e.at_s.div_euclid(60),
                        i32::MIN,
                        true,
                    ));
                    placed = true;
                }
            }
            result.placed += u64::from(placed);
        }
        let (span_from, span_to) = read_span(case.from_s, case.to_s, settings);
        for (venue, mut minutes) in own {
            minutes.sort_unstable_by_key(|&(minute, rssi, _)| (minute, std::cmp::Reverse(rssi)));
            // The case's presences from everything known, and (for each contact's basis) from
            // its reads alone and its encounters alone; all clipped to its period.
            let built = |which: Option<bool>| -> Vec<Presence> {
                let minutes = minutes
                    .iter()
                    .filter(|x| which.is_none_or(|encounter| x.2 == encounter))
                    .map(|&(m, r, _)| (m, r));
                let mut built = presences(minutes, settings);
                for p in &mut built {
                    p.start_s = p.start_s.max(case.from_s);
                    p.end_s = p.end_s.min(case.to_s);
                }
                built.retain(|p| p.start_s < p.end_s);
                built
            };
            let own = built(None);
            if own.is_empty() {
                continue;
            }
            let (by_reads, by_encounters) = (built(Some(false)), built(Some(true)));
            let lo = self.groups.partition_point(|x| x.venue < venue);
            let hi = self.groups.partition_point(|x| x.venue <= venue);
            for other in &self.groups[lo..hi] {
                if Some(other.uid) == case_id {
                    continue;
                }
                for c in self.group_presences(other, span_from, span_to, settings) {
                    let mut segments = Vec::new();
                    let (mut case_first, mut case_last) = (i64::MAX, i64::MIN);
                    for k in &own {
                        let (a, b) = (c.start_s.max(k.start_s), c.end_s.min(k.end_s));
                        if a < b {
                            segments.push((a, b));
                            case_first = case_first.min(k.first_s);
                            case_last = case_last.max(k.last_s);
                        }
                    }
                    if segments.is_empty() {
                        continue;
                    }
                    let basis = basis_of(&c, &by_reads, &by_encounters);
                    let seconds: i64 = segments.iter().map(|(a, b)| b - a).sum();
                    result.overlaps.push(Overlap {
                        contact: Contact {
                            venue,
                            case_first_s: case_first,
                            case_last_s: case_last,
                            contact: self.uids[other.uid as usize],
                            contact_first_s: c.first_s,
                            contact_last_s: c.last_s,
                            overlap_minutes: u32::try_from((seconds + 59) / 60).unwrap_or(u32::MAX),
                            max_rssi_dbm: c.max_rssi_dbm,
                            basis,
                        },
                        uid: other.uid,
                        segments,
                    });
                }
            }
            let own = own
                .into_iter()
                .map(|p| {
                    let basis = basis_of(&p, &by_reads, &by_encounters);
                    (p, basis)
                })
                .collect();
            result.presences.push((venue, own));
        }
        result
    }

    /// The contacts of `case` (see the module documentation), by venue, then the case's first
    /// read, the contact's first read and UID.
    pub fn contacts(&self, case: &Case, settings: &PresenceSettings) -> Vec<Contact> {
        self.case_contacts(case, &[], settings).0
    }

    /// The contacts of `case`, placed at venues by its own reads and by its `encounters` (see
    /// the module documentation), sorted as [`contacts`](Self::contacts); and how many
    /// encounters placed it somewhere.
    pub fn case_contacts(
        &self,
        case: &Case,
        encounters: &[Encounter],
        settings: &PresenceSettings,
    ) -> (Vec<Contact>, u64) {
        let result = self.case_result(case, encounters, settings);
        let mut contacts: Vec<Contact> = result.overlaps.into_iter().map(|o| o.contact).collect();
        contacts.sort_by(|a, b| {
            (a.venue, a.case_first_s, a.contact_first_s, a.contact).cmp(&(
                b.venue,
                b.case_first_s,
                b.contact_first_s,
                b.contact,
            ))
        });
        (contacts, result.placed)
    }

    /// Where `case` was (placed by its reads and its `encounters`), by venue and time, each
    /// visit with the number of distinct others present with it.
    pub fn case_visits(
        &self,
        case: &Case,
        encounters: &[Encounter],
        settings: &PresenceSettings,
    ) -> Vec<Visit> {
        let result = self.case_result(case, encounters, settings);
        let mut visits = Vec::new();
        for (venue, presences) in &result.presences {
            for (p, basis) in presences {
                let met: BTreeSet<u32> = result
                    .overlaps
                    .iter()
                    .filter(|o| {
                        o.contact.venue == *venue
                            && o.segments
                                .iter()
                                .any(|&(a, b)| a < p.end_s && p.start_s < b)
                    })
                    .map(|o| o.uid)
                    .collect();
                visits.push(Visit {
                    venue: *venue,
                    first_s: p.first_s,
                    last_s: p.last_s,
                    start_s: p.start_s,
                    end_s: p.end_s,
                    basis: *basis,
                    contacts: met.len() as u32,
                });
            }
        }
        visits.sort_by_key(|v| (v.start_s, v.venue));
        visits
    }

    /// Per venue and hour, the distinct cases present and the distinct other UIDs present with
    /// one of them; by venue and hour.
    pub fn venue_hours(&self, cases: &[Case], settings: &PresenceSettings) -> Vec<VenueHour> {
        self.venue_hours_with(cases, &HashMap::new(), settings).0
    }

    /// [`venue_hours`](Self::venue_hours), the cases placed also by their decided encounter
    /// lists (`encounters` by case UID): a case no gateway read counts where its encounters
    /// place it. Also returns how many encounters placed their case somewhere.
    pub fn venue_hours_with(
        &self,
        cases: &[Case],
        encounters: &HashMap<Uid, Vec<Encounter>>,
        settings: &PresenceSettings,
    ) -> (Vec<VenueHour>, u64) {
        // (venue, hour) → (case UIDs, contact UIDs), UIDs as indexes.
        let mut hours: BTreeMap<(u32, i64), (BTreeSet<u32>, BTreeSet<u32>)> = BTreeMap::new();
        let hours_of = |a: i64, b: i64| a.div_euclid(3600)..=(b - 1).div_euclid(3600);
        let mut placed = 0;
        for (index, case) in cases.iter().enumerate() {
            // A case no gateway read gets an index no read UID has.
            let case_id = self
                .ids
                .get(&case.uid)
                .copied()
                .unwrap_or(u32::MAX - index as u32);
            let met = encounters.get(&case.uid).map_or(&[][..], Vec::as_slice);
            let result = self.case_result(case, met, settings);
            placed += result.placed;
            for (venue, presences) in &result.presences {
                for (p, _) in presences {
                    for hour in hours_of(p.start_s, p.end_s) {
                        hours.entry((*venue, hour)).or_default().0.insert(case_id);
                    }
                }
            }
            for o in &result.overlaps {
                for &(a, b) in &o.segments {
                    for hour in hours_of(a, b) {
                        hours
                            .entry((o.contact.venue, hour))
                            .or_default()
                            .1
                            .insert(o.uid);
                    }
                }
            }
        }
        let hours = hours
            .into_iter()
            .map(|((venue, hour), (cases, contacts))| VenueHour {
                venue,
                hour_start_s: hour * 3600,
                cases: cases.len() as u32,
                contacts: contacts.difference(&cases).count() as u32,
            })
            .collect();
        (hours, placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UTC midnight, as an ENIN (multiple of 144).
    const DAY: u32 = 2_950_128;
    const DAY_S: i64 = DAY as i64 * 600;

    fn key() -> TempIdKey {
        TempIdKey::new(&[7; 32])
    }

    fn uid(n: u8) -> Uid {
        Uid::from_bytes([n; 21])
    }

    /// A TempID of `uid` valid for the whole day.
    fn tempid(uid: Uid) -> TempId {
        key().encrypt(
            &uid,
            DAY_S as i32,
            DAY_S as i32 + 86_400,
            &[uid.as_bytes()[0]; 16],
        )
    }

    fn minute(offset: u8, max: i8) -> MinuteRssi {
        MinuteRssi {
            minute: offset,
            count: 1,
            min: max,
            mean: max,
            max,
        }
    }

    /// A sighting of `tempid` at `venue` in the 10-minute window `window` of the day, read in
    /// minutes `offsets`.
    struct Sighting {
        venue: u32,
        window: u32,
        tempid: TempId,
        org: &'static str,
        calibration: i32,
        minutes: Vec<MinuteRssi>,
    }

    impl Sighting {
        fn new(venue: u32, window: u32, tempid: TempId, offsets: &[u8]) -> Self {
            Self {
                venue,
                window,
                tempid,
                org: "MAR",
                calibration: 0,
                minutes: offsets.iter().map(|&o| minute(o, -70)).collect(),
            }
        }

        fn observation(&self) -> TempIdObservation<'_> {
            TempIdObservation {
                venue: self.venue,
                window_start: Enin(DAY + self.window),
                rssi_calibration_db: self.calibration,
                tempid: &self.tempid,
                org: self.org,
                minutes: &self.minutes,
            }
        }
    }

    /// `uid` read at `venue` every `step` minutes from minute `from` to `to` (exclusive) of
    /// the day.
    fn visit(venue: u32, uid: Uid, from: u32, to: u32, step: u32) -> Vec<Sighting> {
        let mut by_window: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for m in (from..to).step_by(step as usize) {
            by_window.entry(m / 10).or_default().push((m % 10) as u8);
        }
        by_window
            .into_iter()
            .map(|(w, offsets)| Sighting::new(venue, w, tempid(uid), &offsets))
            .collect()
    }

    fn presences_of(sightings: &[Sighting], settings: &PresenceSettings) -> Presences {
        let mut reads = Reads::new();
        for s in sightings {
            reads.add(&s.observation(), &[key()], settings);
        }
        reads.finish()
    }

    fn at(minute_of_day: i64) -> i64 {
        DAY_S + minute_of_day * 60
    }

    /// Reads at most `gap` minutes apart are one presence, further apart two; each presence
    /// runs from its first read to the end of its last, widened by the margin.
    #[test]
    fn gap_merging_and_margin() {
        let settings = PresenceSettings {
            gap_minutes: 15,
            margin_minutes: 2,
            ..PresenceSettings::default()
        };
        let found = presences([(100, -70), (101, -60), (115, -80), (131, -75)], &settings);
        assert_eq!(
            found,
            [
                Presence {
                    first_s: 6000,
                    last_s: 6900,
                    start_s: 6000 - 120,
                    end_s: 6960 + 120,
                    max_rssi_dbm: -60,
                },
                Presence {
                    first_s: 7860,
                    last_s: 7860,
                    start_s: 7860 - 120,
                    end_s: 7920 + 120,
                    max_rssi_dbm: -75,
                },
            ],
            "115 is 14 minutes after 101: same presence; 131 is 16 after 115: a new one"
        );
        // Exactly `gap` apart still merges.
        assert_eq!(presences([(0, -70), (15, -70)], &settings).len(), 1);
        // Presences further apart than the gap but whose margins overlap are merged.
        let wide = PresenceSettings {
            gap_minutes: 3,
            margin_minutes: 2,
            ..PresenceSettings::default()
        };
        assert_eq!(presences([(0, -70), (4, -70)], &wide).len(), 1);
        assert_eq!(
            presences([(0, -70), (5, -70)], &wide).len(),
            2,
            "ends at 1+2 = 3, the next starts at 5-2 = 3: touching, not overlapping"
        );
        assert!(presences([], &settings).is_empty());
    }

    /// A contact's overlap with the case is computed on the widened presences, in minutes;
    /// first/last reads, the calibrated RSSI and the venue are as read; someone at another
    /// venue, or at the same venue outside the case's presence, is no contact.
    #[test]
    fn overlap_and_rssi() {
        let settings = PresenceSettings::default();
        let mut sightings = visit(1, uid(1), 600, 630, 2); // 10:00-10:28, the case
        sightings.extend(visit(1, uid(2), 625, 660, 2)); // 10:25-10:59
        sightings.extend(visit(1, uid(3), 700, 720, 2)); // 11:40: after the case left
        sightings.extend(visit(2, uid(4), 600, 630, 2)); // another venue
        let mut loud = Sighting::new(1, 63, tempid(uid(2)), &[1]);
        loud.minutes[0].max = -50;
        loud.calibration = 5;
        sightings.push(loud);
        let p = presences_of(&sightings, &settings);
        assert_eq!(p.outcomes().used, sightings.len() as u64);
        let case = Case {
            uid: uid(1),
            from_s: at(0),
            to_s: at(1440),
        };
        assert_eq!(
            p.contacts(&case, &settings),
            [Contact {
                venue: 1,
                case_first_s: at(600),
                case_last_s: at(628),
                contact: uid(2),
                contact_first_s: at(625),
                contact_last_s: at(659),
                // Case widened to [598, 631), contact to [623, 662): 8 minutes.
                overlap_minutes: 8,
                max_rssi_dbm: -45,
                basis: Basis::Read,
            }]
        );
    }

    /// Only the case's reads inside its period count, and its presences are clipped to the
    /// period: someone present only before it is no contact, someone overlapping its start
    /// overlaps only from the start.
    #[test]
    fn case_period_bounds() {
        let settings = PresenceSettings::default();
        let mut sightings = visit(1, uid(1), 600, 700, 1); // 10:00-11:39
        sightings.extend(visit(1, uid(2), 600, 630, 1)); // 10:00-10:29
        sightings.extend(visit(1, uid(3), 630, 660, 1)); // 10:30-10:59
        sightings.extend(visit(1, uid(4), 690, 720, 1)); // 11:30-11:59
        let p = presences_of(&sightings, &settings);
        let case = Case {
            uid: uid(1),
            from_s: at(640),
            to_s: at(695),
        };
        let contacts = p.contacts(&case, &settings);
        let found: Vec<(Uid, u32, i64, i64)> = contacts
            .iter()
            .map(|c| (c.contact, c.overlap_minutes, c.case_first_s, c.case_last_s))
            .collect();
        assert_eq!(
            found,
            [
                // [628, 662) ∩ [640, 695) = 22 minutes; the case's reads from 10:40.
                (uid(3), 22, at(640), at(694)),
                // [688, 722) ∩ [640, 695) = 7 minutes.
                (uid(4), 7, at(640), at(694)),
            ],
            "uid 2 left at 10:31 (widened), before the period"
        );
        // Outside its period entirely: nothing.
        let later = Case {
            uid: uid(1),
            from_s: at(800),
            to_s: at(900),
        };
        assert!(p.contacts(&later, &settings).is_empty());
        // An unknown UID: nothing.
        assert!(
            p.contacts(
                &Case {
                    uid: uid(9),
                    ..case
                },
                &settings
            )
            .is_empty()
        );
    }

    /// Sightings read outside their TempID's validity (with the tolerance) are replays, counted
    /// and not used — early or expired, even when only one minute is outside; the tolerance
    /// absorbs clock skew.
    #[test]
    fn replays_are_excluded() {
        let settings = PresenceSettings::default(); // 60 s tolerance
        // Valid 10:00-10:15 of the day.
        let short = key().encrypt(&uid(5), at(600) as i32, at(615) as i32, &[5; 16]);
        let cases = [
            (60, &[0, 5][..], Decision::Used(uid(5))),
            (61, &[4], Decision::Used(uid(5))), // 10:14, inside
            (61, &[5], Decision::Used(uid(5))), // 10:15-10:16: within the 60 s tolerance
            (61, &[6], Decision::Replay(Validity::Expired)), // 10:16, past it
            (61, &[0, 9], Decision::Replay(Validity::Expired)), // one minute out is enough
            (59, &[9], Decision::Used(uid(5))), // 09:59-10:00: within the tolerance
            (59, &[8], Decision::Replay(Validity::Early)), // 09:58-09:59 ends at start − 60 s
            (70, &[0], Decision::Replay(Validity::Expired)), // replayed 1 h 40 later
        ];
        let mut reads = Reads::new();
        for (window, offsets, want) in cases {
            let s = Sighting::new(1, window, short, offsets);
            assert_eq!(
                reads.add(&s.observation(), &[key()], &settings),
                want,
                "window {window} minutes {offsets:?}"
            );
        }
        assert_eq!(
            reads.outcomes(),
            Outcomes {
                used: 4,
                replays: 4,
                ..Outcomes::default()
            }
        );
        let p = reads.finish();
        assert_eq!(
            p.reads(),
            5,
            "10:00, 10:05, 10:14, 10:15, 09:59: replays left out"
        );
    }

    /// A TempID under another key, or with any byte altered, is undecryptable; with several
    /// keys (a rotation) each is tried; another organisation's TempID is not used even when it
    /// decrypts; an empty organisation list takes any.
    #[test]
    fn wrong_key_tampered_and_wrong_org() {
        let settings = PresenceSettings::default();
        let other = TempIdKey::new(&[8; 32]);
        let good = tempid(uid(1));
        let by_other = other.encrypt(&uid(2), DAY_S as i32, DAY_S as i32 + 86_400, &[2; 16]);
        let mut tag = *good.as_bytes();
        tag[TempId::LEN - 1] ^= 1;
        let mut body = *good.as_bytes();
        body[3] ^= 0x80;
        let decide_with = |tempid: TempId, org: &'static str, keys: &[TempIdKey]| {
            let mut s = Sighting::new(1, 60, tempid, &[0]);
            s.org = org;
            decide(&s.observation(), keys, &settings)
        };
        assert_eq!(decide_with(good, "MAR", &[key()]), Decision::Used(uid(1)));
        assert_eq!(
            decide_with(by_other, "MAR", &[key()]),
            Decision::Undecryptable
        );
        assert_eq!(
            decide_with(by_other, "MAR", &[key(), other.clone()]),
            Decision::Used(uid(2)),
            "the second key of a rotation"
        );
        assert_eq!(
            decide_with(TempId::from_bytes(tag), "MAR", &[key()]),
            Decision::Undecryptable
        );
        assert_eq!(
            decide_with(TempId::from_bytes(body), "MAR", &[key()]),
            Decision::Undecryptable
        );
        assert_eq!(decide_with(good, "MAR", &[]), Decision::Undecryptable);
        assert_eq!(decide_with(good, "SG_MOH", &[key()]), Decision::WrongOrg);
        let any = PresenceSettings {
            orgs: Vec::new(),
            ..PresenceSettings::default()
        };
        let s = Sighting {
            org: "SG_MOH",
            ..Sighting::new(1, 60, good, &[0])
        };
        assert_eq!(
            decide(&s.observation(), &[key()], &any),
            Decision::Used(uid(1))
        );

        let mut reads = Reads::new();
        for (tempid, org) in [(good, "MAR"), (by_other, "MAR"), (good, "XX")] {
            let mut s = Sighting::new(1, 60, tempid, &[0]);
            s.org = org;
            reads.add(&s.observation(), &[key()], &settings);
        }
        let outcomes = reads.outcomes();
        assert_eq!(
            (
                outcomes.used,
                outcomes.undecryptable,
                outcomes.wrong_org,
                outcomes.not_used()
            ),
            (1, 1, 1, 2)
        );
    }

    /// Venue-hours count distinct cases present and distinct others present with a case, per
    /// venue and hour; a UID read by two gateways or under two TempIDs is one; a registered
    /// case present with another case in its period counts as a case, not a contact.
    #[test]
    fn venue_hour_counts() {
        let settings = PresenceSettings::default();
        let mut sightings = visit(1, uid(1), 630, 700, 2); // case A: 10:30-11:39 at venue 1
        sightings.extend(visit(1, uid(2), 640, 650, 2)); // with A at 10:40
        sightings.extend(visit(1, uid(2), 640, 650, 3)); // again (another gateway)
        sightings.extend(visit(1, uid(3), 670, 680, 2)); // with A at 11:10
        sightings.extend(visit(1, uid(4), 664, 674, 2)); // case B, 11:04, with A
        sightings.extend(visit(2, uid(3), 800, 810, 2)); // venue 2, no case there
        let p = presences_of(&sightings, &settings);
        let whole_day = |u| Case {
            uid: uid(u),
            from_s: at(0),
            to_s: at(1440),
        };
        let hours = p.venue_hours(&[whole_day(1), whole_day(4)], &settings);
        assert_eq!(
            hours,
            [
                VenueHour {
                    venue: 1,
                    hour_start_s: at(600),
                    cases: 1,
                    contacts: 1
                },
                VenueHour {
                    venue: 1,
                    hour_start_s: at(660),
                    cases: 2,
                    contacts: 1
                },
            ]
        );
        // With only A registered, B is a contact in the 11:00 hour.
        let hours = p.venue_hours(&[whole_day(1)], &settings);
        assert_eq!(
            hours
                .iter()
                .map(|h| (h.cases, h.contacts))
                .collect::<Vec<_>>(),
            [(1, 1), (1, 2)]
        );
        // A case whose period ends at 10:45 is counted until then only.
        let short = Case {
            to_s: at(645),
            ..whole_day(1)
        };
        let hours = p.venue_hours(&[short], &settings);
        assert_eq!(
            hours
                .iter()
                .map(|h| (h.hour_start_s, h.cases, h.contacts))
                .collect::<Vec<_>>(),
            [(at(600), 1, 1)]
        );
        assert_eq!(p.uids(), 4);
    }

    /// An encounter record of the case's phone, `uid`'s TempID (valid all day) at `second`.
    fn record(uid: Uid, second: i64) -> EncounterRecord {
        EncounterRecord {
            at_s: second,
            tempid: tempid(uid),
            org: "MAR".to_owned(),
        }
    }

    /// A case no gateway read is placed by its encounter list: meeting uid 2 at venue 1 at
    /// 10:30 puts it there that minute (widened by the margin), so uid 2 and uid 3 (present
    /// then) are its contacts on that basis, uid 4 (at venue 1 only later) is not; meeting
    /// someone no gateway read, or someone read but elsewhere at that time, places nothing.
    /// Records are decided as sightings are: outside the period not decided; another key,
    /// another organisation, outside the TempID's validity not used.
    #[test]
    fn encounters_place_a_case() {
        let settings = PresenceSettings::default();
        let mut sightings = visit(1, uid(2), 620, 640, 2); // 10:20-10:38
        sightings.extend(visit(1, uid(3), 625, 700, 5)); // 10:25-11:35
        sightings.extend(visit(1, uid(4), 660, 700, 5)); // 11:00-11:35
        sightings.extend(visit(2, uid(5), 500, 520, 2)); // venue 2, 08:20-08:38
        let p = presences_of(&sightings, &settings);
        let case = Case {
            uid: uid(1),
            from_s: at(540),
            to_s: at(900),
        };
        let short =
            TempIdKey::new(&[7; 32]).encrypt(&uid(2), at(600) as i32, at(615) as i32, &[2; 16]);
        let records = [
            record(uid(2), at(630) + 17), // 10:30:17 with uid 2 at venue 1: placed
            record(uid(9), at(630)),      // never read by a gateway: used, not placed
            record(uid(5), at(630)),      // read, but at venue 2 and hours earlier: not placed
            record(uid(2), at(650)), // 10:50: uid 2 read until 10:38, gone by 10:41: not placed
            record(uid(2), at(400)), // before the period: not decided
            EncounterRecord {
                org: "SG_MOH".to_owned(),
                ..record(uid(2), at(631))
            },
            EncounterRecord {
                tempid: TempIdKey::new(&[8; 32]).encrypt(&uid(2), 0, i32::MAX, &[1; 16]),
                ..record(uid(2), at(631))
            },
            EncounterRecord {
                tempid: short, // valid 10:00-10:15, recorded 10:31: a replay
                ..record(uid(2), at(631))
            },
        ];
        let (encounters, outcomes) = decide_encounters(&records, &case, &[key()], &settings);
        assert_eq!(
            outcomes,
            EncounterOutcomes {
                outside_period: 1,
                decided: Outcomes {
                    used: 4,
                    undecryptable: 1,
                    wrong_org: 1,
                    replays: 1,
                },
                placed: 0,
            }
        );
        let (contacts, placed) = p.case_contacts(&case, &encounters, &settings);
        assert_eq!(placed, 1, "only the encounter with uid 2");
        let found: Vec<(u32, Uid, i64, i64, u32, Basis)> = contacts
            .iter()
            .map(|c| {
                (
                    c.venue,
                    c.contact,
                    c.case_first_s,
                    c.case_last_s,
                    c.overlap_minutes,
                    c.basis,
                )
            })
            .collect();
        // The case: [10:28, 10:33). uid 2 [10:18, 10:41), uid 3 [10:23, 11:38): 5 minutes each.
        assert_eq!(
            found,
            [
                (1, uid(2), at(630), at(630), 5, Basis::Encounter),
                (1, uid(3), at(630), at(630), 5, Basis::Encounter),
            ]
        );
        // Without the list the same case has nothing.
        assert!(p.contacts(&case, &settings).is_empty());
        assert!(p.venue_hours(&[case], &settings).is_empty());
        // With it, the venue-hour counts it where it was placed, with its two contacts.
        let lists = HashMap::from([(uid(1), encounters.clone())]);
        assert_eq!(
            p.venue_hours_with(&[case], &lists, &settings),
            (
                vec![VenueHour {
                    venue: 1,
                    hour_start_s: at(600),
                    cases: 1,
                    contacts: 2,
                }],
                1
            )
        );
    }

    /// A case read at a venue and placed there by an encounter too: one presence on both
    /// grounds where they meet; a presence resting on reads alone stays `read`.
    #[test]
    fn encounter_and_reads_combine() {
        let settings = PresenceSettings::default();
        let mut sightings = visit(1, uid(1), 600, 610, 2); // the case, 10:00-10:08
        sightings.extend(visit(1, uid(2), 600, 700, 5)); // 10:00-11:35
        sightings.extend(visit(1, uid(3), 640, 700, 5)); // 10:40-11:35
        let p = presences_of(&sightings, &settings);
        let case = Case {
            uid: uid(1),
            from_s: at(0),
            to_s: at(1440),
        };
        let read_only: Vec<(Uid, Basis)> = p
            .contacts(&case, &settings)
            .iter()
            .map(|c| (c.contact, c.basis))
            .collect();
        assert_eq!(read_only, [(uid(2), Basis::Read)]);

        // Met uid 2 at 10:12 (joins the 10:00-10:08 presence: within the gap) and at 10:50
        // (a presence of its own, where uid 3 is too).
        let encounters = [
            Encounter {
                uid: uid(2),
                at_s: at(612),
            },
            Encounter {
                uid: uid(2),
                at_s: at(650),
            },
        ];
        let (contacts, placed) = p.case_contacts(&case, &encounters, &settings);
        assert_eq!(placed, 2);
        let found: Vec<(Uid, i64, i64, Basis)> = contacts
            .iter()
            .map(|c| (c.contact, c.case_first_s, c.case_last_s, c.basis))
            .collect();
        assert_eq!(
            found,
            [
                (uid(2), at(600), at(650), Basis::Both),
                (uid(3), at(650), at(650), Basis::Encounter),
            ]
        );
        // Its visits: 09:58-10:15 on both grounds with uid 2, 10:48-10:53 placed by the
        // encounter, with uids 2 and 3.
        let visits: Vec<(i64, i64, Basis, u32)> = p
            .case_visits(&case, &encounters, &settings)
            .iter()
            .map(|v| (v.start_s, v.end_s, v.basis, v.contacts))
            .collect();
        assert_eq!(
            visits,
            [
                (at(598), at(615), Basis::Both, 1),
                (at(648), at(653), Basis::Encounter, 2),
            ]
        );
        let read_only: Vec<(i64, i64, Basis, u32)> = p
            .case_visits(&case, &[], &settings)
            .iter()
            .map(|v| (v.start_s, v.end_s, v.basis, v.contacts))
            .collect();
        assert_eq!(read_only, [(at(598), at(611), Basis::Read, 1)]);

        // Met uid 2 at 10:20 only: the case's presence now runs 09:58-10:23 (the encounter is
        // within the gap of its last read), so uid 4, read 10:17-10:22, overlaps it — but only
        // the stretch the encounter added (reads alone end at 10:11): its basis is the
        // encounter; uid 2 (there all along) overlaps both.
        let mut sightings = visit(1, uid(1), 600, 610, 2);
        sightings.extend(visit(1, uid(2), 600, 700, 5));
        sightings.extend(visit(1, uid(4), 617, 623, 1));
        let q = presences_of(&sightings, &settings);
        let later = [Encounter {
            uid: uid(2),
            at_s: at(620),
        }];
        let found: Vec<(Uid, i64, i64, Basis)> = q
            .case_contacts(&case, &later, &settings)
            .0
            .iter()
            .map(|c| (c.contact, c.case_first_s, c.case_last_s, c.basis))
            .collect();
        assert_eq!(
            found,
            [
                (uid(2), at(600), at(620), Basis::Both),
                (uid(4), at(600), at(620), Basis::Encounter),
            ]
        );

        // An encounter with the case's own UID (a forged list) places nothing.
        let own = [Encounter {
            uid: uid(1),
            at_s: at(605),
        }];
        assert_eq!(p.case_contacts(&case, &own, &settings).1, 0);
    }
}
