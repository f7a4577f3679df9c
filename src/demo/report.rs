//! The demo's report: what the authority found, compared with the simulation's ground truth,
//! and what the gateways delivered. Owns the figures (recall and precision of exposed
//! venue-hours, errors of the co-present visitor estimates, delivery counts and delays), the
//! JSON shape `--json` prints and the text a person reads.
//!
//! Pure: facts in (the authority's `exposures` rows, the ground truth, what the stores and
//! logs said), a [`Report`] out; nothing is read or measured here. Collecting the facts is
//! [`super::run`]'s job, drawing them [`super::html`]'s.
//!
//! # Definitions
//!
//! - A venue-hour is *truly exposed* when an infected GAEN phone was at the venue during that
//!   UTC hour ([`GroundTruth::exposed_venue_hours`]); infected BlueTrace phones publish no keys
//!   and cannot be matched. It is *reported* when `exposures` lists it. Recall = found / truly
//!   exposed; precision = found / reported; each is `null` when its denominator is 0.
//! - Visitor counts compare the authority's `co_present_visitors` (an estimate of the GAEN
//!   phones co-present with an infectious one, from RPIs alone) with the ground truth's
//!   `co_present_gaen_phones`, over the venue-hours both found: mean absolute error, mean
//!   relative error (over hours with at least one true visitor) and the error of the totals.
//!   BlueTrace phones are counted in the truth's `co_present_all` for information only: they
//!   carry no identifier a gateway could count.
//! - BlueTrace (Wiqaytna): the infected BlueTrace phones are registered as cases for the
//!   whole day; a venue-hour *truly has a case* when one of them was there during that hour
//!   ([`GroundTruth::bluetrace_venue_hours`]), and is *reported* when `exposures` gives it
//!   `bt_cases` > 0. Recall and precision as above (the authority widens each presence by a
//!   2-minute margin, so a case arriving just after an hour began may also be counted in the
//!   hour before). Contacts compare `bt_contacts` with the truth's distinct co-present
//!   BlueTrace phones, in total over the venue-hours both found.
//! - GAEN rows are those of `exposures` with an infectious key (`infectious_keys` > 0): the
//!   report also lists venue-hours that only BlueTrace cases make.
//! - Delivery, per gateway: *sealed* = batches its outbox ever committed (next sequence − 1),
//!   *delivered* = distinct batches of those the authority stored, *lost* = sealed − delivered,
//!   *left* = still in the outbox, unreceipted. *Duplicates* are envelopes the authority
//!   received again after storing them (it receipts them again and stores nothing).
//!   *Delay* = stored at the authority − sealed at the gateway, wall-clock milliseconds.

use crate::sim::{BluetraceVenueHour, ExposedVenueHour, GroundTruth, PhoneKind, SimConfig};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};

/// A venue-hour as `venuetrace-authority exposures --format json` prints it (other fields are
/// ignored).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct FoundHour {
    /// Venue name.
    pub venue: String,
    /// Start of the hour, Unix seconds.
    pub hour_start_unix_s: i64,
    /// Exposure events (exposure windows of infectious keys).
    pub exposure_events: u64,
    /// Distinct infectious keys heard.
    pub infectious_keys: u64,
    /// Highest exposure-window score (weighted seconds).
    pub max_score: f64,
    /// Sum of the window scores.
    pub total_score: f64,
    /// Estimated GAEN phones co-present with an infectious one.
    pub co_present_visitors: u64,
    /// BlueTrace cases present (0 when none are registered).
    #[serde(default)]
    pub bt_cases: u64,
    /// Other BlueTrace UIDs co-present with a case.
    #[serde(default)]
    pub bt_contacts: u64,
}

/// One batch the authority stored, as its store records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    /// The gateway's sequence number of the batch.
    pub sequence: u64,
    /// Start of the batch's window, Unix seconds.
    pub window_start_unix_s: i64,
    /// Window length, minutes.
    pub window_minutes: u32,
    /// Distinct RPIs sealed in it.
    pub sightings: u64,
    /// When the authority stored it, Unix ms.
    pub received_ms: i64,
}

/// What is known about one gateway's deliveries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayFacts {
    /// Gateway id.
    pub gateway: String,
    /// Its venue.
    pub venue: String,
    /// Batches its outbox committed (next sequence − 1).
    pub sealed: u64,
    /// Batches still in its outbox.
    pub left_in_outbox: u64,
    /// Adverts it heard, if its log said.
    pub adverts: Option<u64>,
    /// When each batch was sealed, Unix ms, by sequence (from its log).
    pub sealed_ms: BTreeMap<u64, i64>,
    /// The batches of this gateway the authority stored (any order).
    pub stored: Vec<StoredBatch>,
}

/// How long a phase of the demo took.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Phase {
    /// What was done.
    pub name: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Everything the report is computed from.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The simulation every gateway ran.
    pub config: &'a SimConfig,
    /// Its ground truth.
    pub truth: &'a GroundTruth,
    /// Venue kinds by venue id.
    pub kinds: &'a BTreeMap<String, String>,
    /// The authority's exposure report.
    pub found: &'a [FoundHour],
    /// Per gateway, in venue order.
    pub gateways: &'a [GatewayFacts],
    /// Envelopes the authority received again after storing them, if its log said.
    pub duplicates: Option<u64>,
    /// Envelopes the authority quarantined.
    pub quarantined: u64,
    /// Diagnosis keys in the key server's export.
    pub keys_exported: usize,
    /// Keys the authority imported as new, if it said.
    pub keys_imported: Option<u64>,
    /// When the gateways were started, Unix ms (origin of the delivery timeline).
    pub gateways_started_ms: i64,
    /// BlueTrace cases registered at the authority.
    pub bluetrace_cases: usize,
}

/// The demo's findings. Serialized as the `--json` object.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The simulation's seed.
    pub seed: u64,
    /// Population size.
    pub phones: usize,
    /// Simulated hours.
    pub hours: f64,
    /// Share of phones later diagnosed.
    pub infected_share: f64,
    /// Start of the simulated day, Unix seconds.
    pub start_unix_s: u64,
    /// Its end (exclusive), Unix seconds.
    pub end_unix_s: u64,
    /// Time zone of the report's hours.
    pub timezone: &'static str,
    /// The venues, in order.
    pub venues: Vec<VenueSummary>,
    /// Who the phones were and what they did.
    pub population: Population,
    /// The diagnosis keys.
    pub keys: Keys,
    /// Found / truly exposed venue-hours (`null` if none was truly exposed).
    pub recall: Option<f64>,
    /// Found / reported venue-hours (`null` if none was reported).
    pub precision: Option<f64>,
    /// The counts behind recall and precision.
    pub exposed_venue_hours: Confusion,
    /// Co-present visitor estimates against the truth.
    pub visitors: VisitorErrors,
    /// What the gateways sealed and the authority stored.
    pub delivery: Delivery,
    /// Every venue-hour that was truly exposed or reported, by hour then venue order.
    pub venue_hours: Vec<VenueHourRow>,
    /// BlueTrace (Wiqaytna) cases and contacts against the truth.
    pub bluetrace: BluetraceFigures,
    /// Wall-clock time per phase.
    pub timings: Vec<Phase>,
    /// The HTML page written, if any.
    pub html: Option<String>,
}

/// BlueTrace venue-hours with a case, found against the truth.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BluetraceFigures {
    /// Infected BlueTrace phones registered as cases.
    pub cases_registered: usize,
    /// Venue-hours with a case: truth against `bt_cases` > 0.
    pub venue_hours: Confusion,
    /// found / truly with a case.
    pub recall: Option<f64>,
    /// found / reported.
    pub precision: Option<f64>,
    /// Over the venue-hours found: the authority's `bt_contacts`, summed.
    pub contacts_found: u64,
    /// Over the same venue-hours: the truth's distinct co-present BlueTrace phones, summed.
    pub contacts_true: u64,
}

/// Compares the BlueTrace venue-hours of the truth with the rows that report a case.
pub fn compare_bluetrace(
    truth: &[BluetraceVenueHour],
    found: &[FoundHour],
    cases_registered: usize,
) -> BluetraceFigures {
    let truth_by: HashMap<(&str, i64), &BluetraceVenueHour> = truth
        .iter()
        .map(|t| ((t.venue.as_str(), t.hour_start_unix_s as i64), t))
        .collect();
    let reported: Vec<&FoundHour> = found.iter().filter(|f| f.bt_cases > 0).collect();
    let mut figures = BluetraceFigures {
        cases_registered,
        venue_hours: Confusion {
            truly_exposed: truth.len(),
            reported: reported.len(),
            ..Confusion::default()
        },
        ..BluetraceFigures::default()
    };
    for f in reported {
        match truth_by.get(&(f.venue.as_str(), f.hour_start_unix_s)) {
            Some(t) => {
                figures.venue_hours.found += 1;
                figures.contacts_found += f.bt_contacts;
                figures.contacts_true += t.contacts as u64;
            }
            None => figures.venue_hours.false_alarms += 1,
        }
    }
    let c = &mut figures.venue_hours;
    c.missed = c.truly_exposed - c.found;
    (figures.recall, figures.precision) = recall_precision(&figures.venue_hours);
    figures
}

/// One venue of the demo.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VenueSummary {
    /// Venue id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Visits in the simulated day.
    pub visits: usize,
    /// Distinct phones that visited.
    pub visitors: usize,
}

/// The simulated population.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Population {
    /// Phones.
    pub phones: usize,
    /// Of which GAEN phones.
    pub gaen: usize,
    /// Of which BlueTrace phones.
    pub bluetrace: usize,
    /// Phones later diagnosed.
    pub diagnosed: usize,
    /// Of which GAEN phones (their keys are published).
    pub diagnosed_gaen: usize,
    /// Visits, all venues.
    pub visits: usize,
    /// Phones that visited more than one venue.
    pub multi_venue_phones: usize,
    /// Arrivals that found no free phone (population too small for the rates).
    pub arrivals_without_free_phone: u64,
}

/// The diagnosis keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Keys {
    /// In the signed export.
    pub exported: usize,
    /// Imported as new by the authority.
    pub imported: Option<u64>,
}

/// Exposed venue-hours: truth against report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// Truly exposed.
    pub truly_exposed: usize,
    /// Reported by the authority.
    pub reported: usize,
    /// Both (true positives).
    pub found: usize,
    /// Truly exposed, not reported (false negatives).
    pub missed: usize,
    /// Reported, not truly exposed (false positives).
    pub false_alarms: usize,
}

/// Co-present visitor estimates against the truth, over the found venue-hours.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VisitorErrors {
    /// Venue-hours compared.
    pub venue_hours: usize,
    /// Mean of |estimate − truth|, phones (`null` if none compared).
    pub mean_absolute_error: Option<f64>,
    /// Mean of |estimate − truth| / truth over hours with truth > 0 (`null` if none).
    pub mean_relative_error: Option<f64>,
    /// Sum of the estimates.
    pub total_estimate: u64,
    /// Sum of the true counts.
    pub total_true: u64,
    /// (total estimate − total truth) / total truth (`null` if the truth is 0).
    pub total_relative_error: Option<f64>,
}

/// Delivery figures, all gateways.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Delivery {
    /// Batches sealed.
    pub sealed: u64,
    /// Of those, stored by the authority.
    pub delivered: u64,
    /// Envelopes received again after being stored (`null` if unknown).
    pub duplicates: Option<u64>,
    /// Envelopes quarantined by the authority.
    pub quarantined: u64,
    /// Sealed but never stored.
    pub lost: u64,
    /// Still in the gateways' outboxes.
    pub left_in_outbox: u64,
    /// Median seal-to-store delay, ms (`null` if unknown).
    pub median_delay_ms: Option<i64>,
    /// Longest seal-to-store delay, ms.
    pub max_delay_ms: Option<i64>,
    /// Per gateway.
    pub gateways: Vec<GatewayDelivery>,
}

/// Delivery figures of one gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GatewayDelivery {
    /// Gateway id.
    pub gateway: String,
    /// Its venue.
    pub venue: String,
    /// Adverts heard, if known.
    pub adverts: Option<u64>,
    /// Batches sealed.
    pub sealed: u64,
    /// Of those, stored by the authority.
    pub delivered: u64,
    /// Sealed but never stored.
    pub lost: u64,
    /// Sequences of the lost batches.
    pub missing: Vec<u64>,
    /// Still in the outbox.
    pub left_in_outbox: u64,
    /// Median seal-to-store delay, ms.
    pub median_delay_ms: Option<i64>,
    /// Longest seal-to-store delay, ms.
    pub max_delay_ms: Option<i64>,
    /// Every stored batch, by window (for the page's timeline; not in the JSON).
    #[serde(skip)]
    pub timeline: Vec<TimelinePoint>,
}

/// One stored batch on the delivery timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelinePoint {
    /// Sequence number.
    pub sequence: u64,
    /// Window start, Unix seconds (simulated time).
    pub window_start_unix_s: i64,
    /// Window length, minutes.
    pub window_minutes: u32,
    /// Distinct RPIs in it.
    pub sightings: u64,
    /// Stored at the authority, ms after the gateways started.
    pub stored_after_ms: i64,
    /// Seal-to-store delay, ms, if the seal time is known.
    pub delay_ms: Option<i64>,
}

/// Truth against report for one venue-hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Truly exposed and reported.
    Found,
    /// Truly exposed, not reported.
    Missed,
    /// Reported, not truly exposed.
    FalseAlarm,
}

impl Verdict {
    /// As the text report says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Found => "found",
            Verdict::Missed => "MISSED",
            Verdict::FalseAlarm => "false alarm",
        }
    }
}

/// One venue-hour that was truly exposed or reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VenueHourRow {
    /// Venue id.
    pub venue: String,
    /// Its kind.
    pub kind: String,
    /// The hour, `YYYY-MM-DD HH:00` UTC.
    pub hour: String,
    /// Start of the hour, Unix seconds.
    pub hour_start_unix_s: i64,
    /// Truth against report.
    pub verdict: Verdict,
    /// Exposure events reported (0 if not reported).
    pub exposure_events: u64,
    /// Infectious keys reported.
    pub infectious_keys: u64,
    /// Highest window score reported.
    pub max_score: f64,
    /// Sum of window scores reported.
    pub total_score: f64,
    /// Co-present visitors estimated (`null` if not reported).
    pub co_present_estimate: Option<u64>,
    /// Co-present GAEN phones in truth (`null` if not truly exposed).
    pub co_present_true: Option<u64>,
    /// Co-present phones of any kind in truth.
    pub co_present_all: Option<u64>,
    /// Infected GAEN phones present in truth.
    pub infected_phones: Option<u64>,
}

/// `YYYY-MM-DD HH:MM` in UTC.
pub fn utc_minute(unix_s: i64) -> String {
    jiff::Timestamp::from_second(unix_s)
        .map(|t| t.strftime("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| unix_s.to_string())
}

fn ratio(numerator: usize, denominator: usize) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Compares the truly exposed venue-hours with the reported ones: the rows (by hour, then
/// venue in `venue_order`), the confusion counts and the visitor-count errors.
pub fn compare(
    truth: &[ExposedVenueHour],
    found: &[FoundHour],
    kinds: &BTreeMap<String, String>,
    venue_order: &[String],
) -> (Vec<VenueHourRow>, Confusion, VisitorErrors) {
    let rank: HashMap<&str, usize> = venue_order
        .iter()
        .enumerate()
        .map(|(i, v)| (v.as_str(), i))
        .collect();
    let key = |venue: &str, hour: i64| (hour, rank.get(venue).copied().unwrap_or(usize::MAX));
    let mut truth_by: BTreeMap<(i64, usize, String), &ExposedVenueHour> = BTreeMap::new();
    for t in truth {
        let hour = t.hour_start_unix_s as i64;
        let (h, r) = key(&t.venue, hour);
        truth_by.insert((h, r, t.venue.clone()), t);
    }
    let mut found_by: BTreeMap<(i64, usize, String), &FoundHour> = BTreeMap::new();
    for f in found {
        let (h, r) = key(&f.venue, f.hour_start_unix_s);
        found_by.insert((h, r, f.venue.clone()), f);
    }
    let all: BTreeSet<&(i64, usize, String)> = truth_by.keys().chain(found_by.keys()).collect();
    let mut rows = Vec::with_capacity(all.len());
    let mut confusion = Confusion {
        truly_exposed: truth_by.len(),
        reported: found_by.len(),
        ..Confusion::default()
    };
    let (mut abs_sum, mut rel_sum, mut rel_n) = (0.0, 0.0, 0usize);
    let mut visitors = VisitorErrors::default();
    for k in all {
        let (t, f) = (truth_by.get(k), found_by.get(k));
        let verdict = match (t, f) {
            (Some(_), Some(_)) => Verdict::Found,
            (Some(_), None) => Verdict::Missed,
            _ => Verdict::FalseAlarm,
        };
        match verdict {
            Verdict::Found => confusion.found += 1,
            Verdict::Missed => confusion.missed += 1,
            Verdict::FalseAlarm => confusion.false_alarms += 1,
        }
        if let (Some(t), Some(f)) = (t, f) {
            let (estimate, actual) = (f.co_present_visitors, t.co_present_gaen_phones as u64);
            let error = estimate.abs_diff(actual) as f64;
            abs_sum += error;
            if actual > 0 {
                rel_sum += error / actual as f64;
                rel_n += 1;
            }
            visitors.venue_hours += 1;
            visitors.total_estimate += estimate;
            visitors.total_true += actual;
        }
        let venue = k.2.clone();
        rows.push(VenueHourRow {
            kind: kinds.get(&venue).cloned().unwrap_or_default(),
            hour: utc_minute(k.0),
            hour_start_unix_s: k.0,
            verdict,
            exposure_events: f.map_or(0, |f| f.exposure_events),
            infectious_keys: f.map_or(0, |f| f.infectious_keys),
            max_score: f.map_or(0.0, |f| f.max_score),
            total_score: f.map_or(0.0, |f| f.total_score),
            co_present_estimate: f.map(|f| f.co_present_visitors),
            co_present_true: t.map(|t| t.co_present_gaen_phones as u64),
            co_present_all: t.map(|t| t.co_present_phones as u64),
            infected_phones: t.map(|t| t.infected_phones as u64),
            venue,
        });
    }
    if visitors.venue_hours > 0 {
        visitors.mean_absolute_error = Some(abs_sum / visitors.venue_hours as f64);
    }
    if rel_n > 0 {
        visitors.mean_relative_error = Some(rel_sum / rel_n as f64);
    }
    if visitors.total_true > 0 {
        visitors.total_relative_error = Some(
            (visitors.total_estimate as f64 - visitors.total_true as f64)
                / visitors.total_true as f64,
        );
    }
    (rows, confusion, visitors)
}

/// Recall and precision of a comparison (`None` where the denominator is 0).
pub fn recall_precision(c: &Confusion) -> (Option<f64>, Option<f64>) {
    (ratio(c.found, c.truly_exposed), ratio(c.found, c.reported))
}

fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2
    })
}

/// Delivery figures from what the gateways and the authority recorded.
pub fn delivery(
    gateways: &[GatewayFacts],
    duplicates: Option<u64>,
    quarantined: u64,
    started_ms: i64,
) -> Delivery {
    let mut total = Delivery {
        duplicates,
        quarantined,
        ..Delivery::default()
    };
    let mut all_delays = Vec::new();
    for g in gateways {
        let mut stored: Vec<&StoredBatch> = g
            .stored
            .iter()
            .filter(|b| (1..=g.sealed).contains(&b.sequence))
            .collect();
        stored.sort_by_key(|b| b.sequence);
        stored.dedup_by_key(|b| b.sequence);
        let have: BTreeSet<u64> = stored.iter().map(|b| b.sequence).collect();
        let missing: Vec<u64> = (1..=g.sealed).filter(|s| !have.contains(s)).collect();
        let mut timeline: Vec<TimelinePoint> = stored
            .iter()
            .map(|b| TimelinePoint {
                sequence: b.sequence,
                window_start_unix_s: b.window_start_unix_s,
                window_minutes: b.window_minutes,
                sightings: b.sightings,
                stored_after_ms: b.received_ms - started_ms,
                delay_ms: g.sealed_ms.get(&b.sequence).map(|s| b.received_ms - s),
            })
            .collect();
        timeline.sort_by_key(|p| (p.window_start_unix_s, p.sequence));
        let mut delays: Vec<i64> = timeline.iter().filter_map(|p| p.delay_ms).collect();
        all_delays.extend_from_slice(&delays);
        let delivered = have.len() as u64;
        let row = GatewayDelivery {
            gateway: g.gateway.clone(),
            venue: g.venue.clone(),
            adverts: g.adverts,
            sealed: g.sealed,
            delivered,
            lost: g.sealed - delivered,
            missing,
            left_in_outbox: g.left_in_outbox,
            max_delay_ms: delays.iter().copied().max(),
            median_delay_ms: median(&mut delays),
            timeline,
        };
        total.sealed += row.sealed;
        total.delivered += row.delivered;
        total.lost += row.lost;
        total.left_in_outbox += row.left_in_outbox;
        total.gateways.push(row);
    }
    total.max_delay_ms = all_delays.iter().copied().max();
    total.median_delay_ms = median(&mut all_delays);
    total
}

/// The whole report. `timings` and `html` are filled in by the caller as they become known.
pub fn build(facts: &Facts<'_>) -> Report {
    let truth = facts.truth;
    let venue_order: Vec<String> = facts.config.venues.iter().map(|v| v.id.clone()).collect();
    let exposed = truth.exposed_venue_hours();
    let gaen_rows: Vec<FoundHour> = facts
        .found
        .iter()
        .filter(|f| f.infectious_keys > 0)
        .cloned()
        .collect();
    let (venue_hours, confusion, visitors) =
        compare(&exposed, &gaen_rows, facts.kinds, &venue_order);
    let bluetrace = compare_bluetrace(
        &truth.bluetrace_venue_hours(),
        facts.found,
        facts.bluetrace_cases,
    );
    let (recall, precision) = recall_precision(&confusion);

    let mut visits: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut multi_venue_phones = 0;
    for phone in &truth.phones {
        let venues: BTreeSet<&str> = phone.visits.iter().map(|v| v.venue.as_str()).collect();
        multi_venue_phones += usize::from(venues.len() > 1);
        for v in &phone.visits {
            visits.entry(v.venue.as_str()).or_default().0 += 1;
        }
        for v in venues {
            visits.entry(v).or_default().1 += 1;
        }
    }
    let gaen = truth
        .phones
        .iter()
        .filter(|p| p.kind == PhoneKind::Gaen)
        .count();
    let diagnosed = truth.phones.iter().filter(|p| p.infected).count();
    let diagnosed_gaen = truth
        .phones
        .iter()
        .filter(|p| p.infected && p.kind == PhoneKind::Gaen)
        .count();
    Report {
        seed: facts.config.seed,
        phones: facts.config.phones,
        hours: facts.config.hours,
        infected_share: facts.config.infected_share,
        start_unix_s: truth.start_unix_s,
        end_unix_s: truth.end_unix_s,
        timezone: "UTC",
        venues: facts
            .config
            .venues
            .iter()
            .map(|v| {
                let (n, distinct) = visits.get(v.id.as_str()).copied().unwrap_or_default();
                VenueSummary {
                    id: v.id.clone(),
                    kind: v.kind.clone(),
                    visits: n,
                    visitors: distinct,
                }
            })
            .collect(),
        population: Population {
            phones: truth.phones.len(),
            gaen,
            bluetrace: truth.phones.len() - gaen,
            diagnosed,
            diagnosed_gaen,
            visits: truth.phones.iter().map(|p| p.visits.len()).sum(),
            multi_venue_phones,
            arrivals_without_free_phone: truth.arrivals_without_free_phone,
        },
        keys: Keys {
            exported: facts.keys_exported,
            imported: facts.keys_imported,
        },
        recall,
        precision,
        exposed_venue_hours: confusion,
        visitors,
        delivery: delivery(
            facts.gateways,
            facts.duplicates,
            facts.quarantined,
            facts.gateways_started_ms,
        ),
        venue_hours,
        bluetrace,
        timings: Vec::new(),
        html: None,
    }
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| v.to_string())
}

fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.decimals$}"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{:+.1} %", v * 100.0))
}

fn millis(value: Option<i64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v} ms"))
}

/// Writes the report for a person: the venue exposure report, the comparison with the ground
/// truth, the delivery figures, the population and the timings.
pub fn write_text(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    use crate::output::Table;
    writeln!(
        out,
        "venuetrace demo: {} venues, {} phones, {} h from {} UTC, {:.1} % later diagnosed, seed {}",
        r.venues.len(),
        r.phones,
        r.hours,
        utc_minute(r.start_unix_s as i64),
        r.infected_share * 100.0,
        r.seed
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Venue exposure report (hours in UTC; score = weighted seconds of exposure, GAEN v2)"
    )?;
    let mut table = Table::new([
        "hour",
        "venue",
        "events",
        "keys",
        "max_score",
        "co_present_est",
        "co_present_true",
        "ground_truth",
    ]);
    for row in &r.venue_hours {
        table.row([
            row.hour.clone(),
            row.venue.clone(),
            row.exposure_events.to_string(),
            row.infectious_keys.to_string(),
            if row.verdict == Verdict::Missed {
                "-".to_owned()
            } else {
                format!("{:.0}", row.max_score)
            },
            opt(row.co_present_estimate),
            opt(row.co_present_true),
            row.verdict.as_str().to_owned(),
        ]);
    }
    if r.venue_hours.is_empty() {
        writeln!(out, "(no venue-hour exposed or reported)")?;
    } else {
        table.write(out)?;
    }
    writeln!(out)?;
    let c = &r.exposed_venue_hours;
    let v = &r.visitors;
    writeln!(out, "Against the ground truth")?;
    writeln!(
        out,
        "  exposed venue-hours: {} true, {} reported: {} found, {} missed, {} false alarms",
        c.truly_exposed, c.reported, c.found, c.missed, c.false_alarms
    )?;
    writeln!(
        out,
        "  recall {}   precision {}",
        fixed(r.recall, 3),
        fixed(r.precision, 3)
    )?;
    writeln!(
        out,
        "  co-present GAEN visitors over {} venue-hours: mean absolute error {} phones, \
         mean relative error {}, total {} estimated vs {} true ({})",
        v.venue_hours,
        fixed(v.mean_absolute_error, 1),
        v.mean_relative_error
            .map_or_else(|| "n/a".to_owned(), |e| format!("{:.1} %", e * 100.0)),
        v.total_estimate,
        v.total_true,
        percent(v.total_relative_error)
    )?;
    let b = &r.bluetrace;
    writeln!(
        out,
        "  BlueTrace (Wiqaytna; TempIDs read by the gateways, {} diagnosed users registered as cases):",
        b.cases_registered
    )?;
    writeln!(
        out,
        "    venue-hours with a case: {} true, {} reported: {} found, {} missed, {} false alarms; \
         recall {}   precision {}",
        b.venue_hours.truly_exposed,
        b.venue_hours.reported,
        b.venue_hours.found,
        b.venue_hours.missed,
        b.venue_hours.false_alarms,
        fixed(b.recall, 3),
        fixed(b.precision, 3)
    )?;
    let excess = (b.contacts_true > 0)
        .then(|| (b.contacts_found as f64 - b.contacts_true as f64) / b.contacts_true as f64);
    writeln!(
        out,
        "    co-present BlueTrace contacts over those venue-hours: {} counted vs {} true ({})",
        b.contacts_found,
        b.contacts_true,
        percent(excess)
    )?;
    writeln!(out)?;
    let d = &r.delivery;
    writeln!(out, "Delivery (gateway outbox → MQTT → authority store)")?;
    let mut table = Table::new([
        "gateway",
        "venue",
        "adverts",
        "sealed",
        "delivered",
        "lost",
        "in_outbox",
        "median_delay",
        "max_delay",
    ]);
    for g in &d.gateways {
        table.row([
            g.gateway.clone(),
            g.venue.clone(),
            opt(g.adverts),
            g.sealed.to_string(),
            g.delivered.to_string(),
            g.lost.to_string(),
            g.left_in_outbox.to_string(),
            millis(g.median_delay_ms),
            millis(g.max_delay_ms),
        ]);
    }
    table.write(out)?;
    writeln!(
        out,
        "  total: {} batches sealed, {} delivered, {} duplicates, {} quarantined, {} lost",
        d.sealed,
        d.delivered,
        opt(d.duplicates),
        d.quarantined,
        d.lost
    )?;
    writeln!(out)?;
    let p = &r.population;
    writeln!(
        out,
        "Population: {} phones ({} GAEN, {} BlueTrace), {} visits, {} phones visited several \
         venues; {} later diagnosed ({} GAEN: {} keys exported, {} imported)",
        p.phones,
        p.gaen,
        p.bluetrace,
        p.visits,
        p.multi_venue_phones,
        p.diagnosed,
        p.diagnosed_gaen,
        r.keys.exported,
        opt(r.keys.imported)
    )?;
    if p.arrivals_without_free_phone > 0 {
        writeln!(
            out,
            "  {} arrivals found every phone busy and were dropped: use more --phones",
            p.arrivals_without_free_phone
        )?;
    }
    if !r.timings.is_empty() {
        let parts: Vec<String> = r
            .timings
            .iter()
            .map(|t| format!("{} {:.1} s", t.name, t.seconds))
            .collect();
        writeln!(out, "Time: {}", parts.join(", "))?;
    }
    if let Some(html) = &r.html {
        writeln!(out, "Page: {html}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 1_748_858_400; // 2025-06-02 10:00 UTC

    fn truth(venue: &str, hour: i64, co_gaen: usize) -> ExposedVenueHour {
        ExposedVenueHour {
            venue: venue.into(),
            hour_start_unix_s: hour as u64,
            infected_phones: 1,
            co_present_phones: co_gaen + 2,
            co_present_gaen_phones: co_gaen,
        }
    }

    fn found(venue: &str, hour: i64, co: u64) -> FoundHour {
        FoundHour {
            venue: venue.into(),
            hour_start_unix_s: hour,
            exposure_events: 1,
            infectious_keys: 1,
            max_score: 900.0,
            total_score: 1200.0,
            co_present_visitors: co,
            bt_cases: 0,
            bt_contacts: 0,
        }
    }

    /// BlueTrace venue-hours: found when `bt_cases` > 0 at a true hour, false alarms
    /// elsewhere, missed otherwise; contacts summed over the found ones; GAEN-free rows do not
    /// count as GAEN exposure.
    #[test]
    fn bluetrace_figures() {
        let t = |venue: &str, hour: i64, contacts| BluetraceVenueHour {
            venue: venue.into(),
            hour_start_unix_s: hour as u64,
            cases: 1,
            contacts,
        };
        let bt = |venue: &str, hour: i64, cases, contacts| FoundHour {
            exposure_events: 0,
            infectious_keys: 0,
            bt_cases: cases,
            bt_contacts: contacts,
            ..found(venue, hour, 0)
        };
        let figures = compare_bluetrace(
            &[t("a", H, 4), t("b", H, 2), t("a", H + 3600, 3)],
            &[
                bt("a", H, 1, 5),
                found("b", H, 2),
                bt("b", H + 7200, 1, 1),
                bt("a", H + 3600, 2, 3),
            ],
            2,
        );
        assert_eq!(
            figures.venue_hours,
            Confusion {
                truly_exposed: 3,
                reported: 3,
                found: 2,
                missed: 1,
                false_alarms: 1,
            }
        );
        assert_eq!((figures.contacts_found, figures.contacts_true), (8, 7));
        assert_eq!(figures.cases_registered, 2);
        assert_eq!(figures.recall, Some(2.0 / 3.0));
    }

    fn kinds() -> BTreeMap<String, String> {
        [("a", "souk"), ("b", "cafe")]
            .map(|(v, k)| (v.to_owned(), k.to_owned()))
            .into()
    }

    /// Three truly exposed venue-hours, three reported: two found, one missed, one false
    /// alarm; recall = precision = 2/3; visitor errors over the two found hours only
    /// (|12 − 10| = 2 and |3 − 4| = 1: mean absolute 1.5, mean relative (0.2 + 0.25) / 2,
    /// totals 15 against 14).
    #[test]
    fn recall_precision_and_visitor_errors() {
        let order = vec!["a".to_owned(), "b".to_owned()];
        let (rows, confusion, visitors) = compare(
            &[truth("a", H, 10), truth("b", H, 4), truth("a", H + 3600, 7)],
            &[found("b", H, 3), found("a", H, 12), found("b", H + 7200, 5)],
            &kinds(),
            &order,
        );
        assert_eq!(
            confusion,
            Confusion {
                truly_exposed: 3,
                reported: 3,
                found: 2,
                missed: 1,
                false_alarms: 1
            }
        );
        let (recall, precision) = recall_precision(&confusion);
        assert_eq!((recall, precision), (Some(2.0 / 3.0), Some(2.0 / 3.0)));
        assert_eq!(visitors.venue_hours, 2);
        assert_eq!(visitors.mean_absolute_error, Some(1.5));
        assert_eq!(visitors.mean_relative_error, Some((0.2 + 0.25) / 2.0));
        assert_eq!((visitors.total_estimate, visitors.total_true), (15, 14));
        assert_eq!(visitors.total_relative_error, Some(1.0 / 14.0));
        let summary: Vec<(&str, i64, Verdict)> = rows
            .iter()
            .map(|r| (r.venue.as_str(), r.hour_start_unix_s, r.verdict))
            .collect();
        assert_eq!(
            summary,
            [
                ("a", H, Verdict::Found),
                ("b", H, Verdict::Found),
                ("a", H + 3600, Verdict::Missed),
                ("b", H + 7200, Verdict::FalseAlarm),
            ]
        );
        assert_eq!(rows[0].kind, "souk");
        assert_eq!(rows[0].hour, "2025-06-02 10:00");
        assert_eq!(rows[2].co_present_estimate, None);
        assert_eq!(rows[3].co_present_true, None);
    }

    /// Nothing exposed and nothing reported: recall and precision are undefined, not 1 or 0;
    /// a true count of zero is left out of the relative error.
    #[test]
    fn empty_comparisons_are_undefined() {
        let (_, confusion, visitors) = compare(&[], &[], &kinds(), &[]);
        assert_eq!(recall_precision(&confusion), (None, None));
        assert_eq!(visitors.mean_absolute_error, None);
        let (_, confusion, visitors) =
            compare(&[truth("a", H, 0)], &[found("a", H, 2)], &kinds(), &[]);
        assert_eq!(recall_precision(&confusion), (Some(1.0), Some(1.0)));
        assert_eq!(visitors.mean_absolute_error, Some(2.0));
        assert_eq!(visitors.mean_relative_error, None);
        assert_eq!(visitors.total_relative_error, None);
    }

    fn stored(sequence: u64, received_ms: i64) -> StoredBatch {
        StoredBatch {
            sequence,
            window_start_unix_s: H + sequence as i64 * 600,
            window_minutes: 10,
            sightings: 3,
            received_ms,
        }
    }

    /// Lost = sealed − distinct stored sequences (a stored duplicate counts once; a sequence
    /// the gateway never sealed does not count); delays are store − seal times, with their
    /// median over every gateway.
    #[test]
    fn delivery_counts_and_delays() {
        let a = GatewayFacts {
            gateway: "gw-a".into(),
            venue: "a".into(),
            sealed: 4,
            left_in_outbox: 1,
            adverts: Some(99),
            sealed_ms: [(1, 1000), (2, 2000), (4, 4000)].into(),
            stored: vec![
                stored(2, 2050),
                stored(1, 1010),
                stored(4, 4500),
                stored(2, 2070),
            ],
        };
        let b = GatewayFacts {
            gateway: "gw-b".into(),
            venue: "b".into(),
            sealed: 2,
            stored: vec![stored(1, 1100), stored(2, 1200), stored(3, 1300)],
            ..GatewayFacts::default()
        };
        let d = delivery(&[a, b], Some(1), 0, 1000);
        assert_eq!((d.sealed, d.delivered, d.lost), (6, 5, 1));
        assert_eq!((d.left_in_outbox, d.duplicates), (1, Some(1)));
        let g = &d.gateways[0];
        assert_eq!((g.delivered, g.lost, g.missing.clone()), (3, 1, vec![3]));
        assert_eq!((g.median_delay_ms, g.max_delay_ms), (Some(50), Some(500)));
        assert_eq!(
            g.timeline
                .iter()
                .map(|p| (p.sequence, p.stored_after_ms, p.delay_ms))
                .collect::<Vec<_>>(),
            [(1, 10, Some(10)), (2, 1050, Some(50)), (4, 3500, Some(500))]
        );
        assert_eq!(d.gateways[1].lost, 0);
        assert_eq!(d.gateways[1].median_delay_ms, None);
        assert_eq!((d.median_delay_ms, d.max_delay_ms), (Some(50), Some(500)));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(2));
    }
}
