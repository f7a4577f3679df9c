//! M3 at full scale, measured: diagnosis keys against stored sightings on this machine, with
//! the authority's real data structures, and (second mode) the same read from a real store.
//!
//! `memory` (default 3 M keys against 1e8 sightings): builds the inputs in memory, one compact
//! [`SightingTable`] per UTC day as the store would return them, indexes each day
//! ([`DayPart::build`], timed), then times [`SightingIndex::match_keys`] with the keys (the
//! whole match: join, AEM decryption, windows, scores, venue-hours, co-presence) and with
//! other keys of the same days of which nothing was stored (the join alone), `--rounds`
//! times each, interleaved. Prints the peak RSS (`VmHWM`).
//!
//! `store --db PATH` (default 2 days at the full scale's density: 9.5 M sightings, with the
//! keys those days have at full scale): writes the store through
//! [`SqliteStore::store_batch`] (one gateway batch per window and gateway) and
//! [`SqliteStore::import_keys`], then times reading every day back into tables (rows/s),
//! indexing them, the whole `match --full` ([`match_store_cached`]) and the daemon's minutely
//! rematch after one minute of new batches with its cache kept; also the read as the code
//! before the compact tables did it, and read variants considered. `--reuse` keeps an
//! existing store file. `store --database postgres://...` does the same on PostgreSQL
//! ([`PgStore`]; the database should be empty, or `--reuse` keeps what it holds), without the
//! SQLite-only read variants, reporting `pg_database_size`. `read --db PATH`: the read variants
//! alone.
//!
//! The scenario ("realistic"; every number is a flag):
//! - 21 days of sightings (the retention), 1e8 in all (~4.76 M a day), at 2,000 venues open
//!   06:00–22:00 UTC; 30 % of the venues have a second gateway, which hears half of the visits
//!   there too (its own calibration and RSSI);
//! - a visit is one phone at one venue for 1 + an exponential of mean 20 minutes (capped at
//!   3 h), heard every minute: one sighting per 10-minute window it overlaps and gateway
//!   hearing it, carrying the minutes of the visit in that window (6.97 minutes a sighting on
//!   average); the phone's RPI rotates at interval boundaries;
//! - 3 M diagnosis keys over the last 14 days (the key retention), ~214 k a day: 90 % from
//!   midnight for 144 intervals, 7 % same-day keys (midnight, 1–143 intervals), 3 % starting at
//!   a random interval (spanning two days); days since onset −3..=10 (all infectious, so every
//!   key is matched: the most work), 10 % self-reports;
//! - match rate: each key's phone made one visit to a covered venue with probability
//!   `--visit-rate` (default 0.1: 1e8 sightings over 21 days are ~1 M visits a day, i.e. a
//!   phone visits a covered venue one day in ten in a population of ~10 M phones, and cases
//!   behave like everyone); its sightings carry the key's real RPIs and AEMs. That finds
//!   0.32 sightings per key (0.25 % of the derived-RPI lookups). `--visit-rate 0.3` (0.72 %)
//!   is a heavy day, near the criterion bench's 1 %.
//!
//! Run (release; ~15 GB of memory and ~2 min at the defaults; run it alone on the machine):
//! `cargo run --release --example match_scale -- memory`
//! `cargo run --release --example match_scale -- store --db /tmp/vt-match-scale.sqlite`
//! (delete the file afterwards: ~1.1 GB)
//! `scripts/bench-match-store --days 1 --sightings 1e6 --venues 200` (SQLite, then a private
//! PostgreSQL, at the same scale)
//! Figures: docs/performance.md, "Matching, M3".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use venuetrace::aggregate::{Counters, MinuteRssi, Sighting};
use venuetrace::authority::pg::PgStore;
use venuetrace::authority::service::{MatchCache, load_days, match_store_cached};
use venuetrace::authority::store::{DynStore, SightingSelection, SqliteStore, Store};
use venuetrace::batch::{Batch, BatchId, GatewayId};
use venuetrace::crypto::{Aem, Enin, Metadata, RollingPeriod, Rpi, Tek};
use venuetrace::export::{DiagnosisKey, ReportType};
use venuetrace::matching::{
    DayCache, DayPart, MatchKey, MatchReport, RiskConfig, SightingHeader, SightingIndex,
    SightingTable,
};

/// 2026-11-09, the first day of sightings.
const FIRST_DAY: u32 = 20_766;
const OPEN_MINUTE: u64 = 6 * 60;
const CLOSE_MINUTE: u64 = 22 * 60;

/// The scenario's parameters (see the module documentation).
#[derive(Clone, Debug)]
struct Params {
    sightings: u64,
    days: u32,
    key_days: u32,
    keys: u64,
    venues: u32,
    visit_rate: f64,
    threads: usize,
    rounds: usize,
    seed: u64,
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            // Accept 1e8 for counts.
            v.parse::<T>().ok().or_else(|| {
                v.parse::<f64>()
                    .ok()
                    .and_then(|f| format!("{f:.0}").parse().ok())
            })
        })
        .map(|v| v.unwrap_or_else(|| panic!("{name}: cannot parse")))
        .unwrap_or(default)
}

/// SplitMix64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform float in [0, 1) from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The 1-minute load average (other work on the 2 cores during a measurement), and the share
/// of CPU time the hypervisor gave to other guests since the last call (steal).
fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    let cpu: Vec<u64> = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default();
    let (total, steal) = (cpu.iter().sum::<u64>(), cpu.get(7).copied().unwrap_or(0));
    static LAST: std::sync::Mutex<(u64, u64)> = std::sync::Mutex::new((0, 0));
    let mut last = LAST.lock().expect("lock");
    let share = (steal - last.1) as f64 / (total - last.0).max(1) as f64 * 100.0;
    *last = (total, steal);
    format!("{avg}, steal {share:.0} %")
}

/// CPU time this process has used, seconds (user + system, all threads).
fn cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // After the command name (in parentheses): state, ppid, ... utime is the 12th
            // field and stime the 13th, in clock ticks (100 a second on Linux).
            let mut fields = s.rsplit_once(')')?.1.split_whitespace().skip(11);
            let utime: u64 = fields.next()?.parse().ok()?;
            let stime: u64 = fields.next()?.parse().ok()?;
            Some((utime + stime) as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

fn peak_rss_mib() -> u64 {
    status_kib("VmHWM:") >> 10
}

fn rss_mib() -> u64 {
    status_kib("VmRSS:") >> 10
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One sighting to be: an RPI heard by a gateway in a window, minutes `from..to` of it.
#[derive(Clone, Copy)]
struct Rec {
    window: u32,
    gateway: u32,
    rpi: Rpi,
    aem: Aem,
    from: u8,
    to: u8,
    seed: u32,
}

impl Rec {
    fn minutes(&self) -> impl Iterator<Item = MinuteRssi> + '_ {
        (self.from..self.to).map(move |minute| {
            let h = mix(u64::from(self.seed) << 8 | u64::from(minute));
            let mean = -55 - (h % 40) as i8;
            MinuteRssi {
                minute,
                count: 3 + (h >> 8) as u32 % 40,
                min: mean - ((h >> 16) % 8) as i8,
                mean,
                max: mean + ((h >> 24) % 8) as i8,
            }
        })
    }
}

/// Gateways of a venue: `2v`, and `2v + 1` at 30 % of the venues.
fn gateways(p: &Params, venue: u32) -> u32 {
    if mix(p.seed ^ 0x6A7E ^ u64::from(venue)) % 10 < 3 {
        2
    } else {
        1
    }
}

fn calibration(gateway: u32) -> i32 {
    (mix(u64::from(gateway) ^ 0xCA1) % 11) as i32 - 5
}

/// A visit's sightings: per overlapped window and hearing gateway; `rpi(interval)` gives the
/// phone's RPI and AEM.
fn visit_recs(
    p: &Params,
    venue: u32,
    start: u64,
    end: u64,
    seed: u64,
    mut rpi: impl FnMut(u32) -> Option<(Rpi, Aem)>,
    out: &mut Vec<Rec>,
) {
    let both = gateways(p, venue) == 2 && seed.is_multiple_of(2);
    let mut minute = start;
    while minute < end {
        let window = (minute / 10) as u32;
        let to = end.min(u64::from(window) * 10 + 10);
        if let Some((r, aem)) = rpi(window) {
            for g in 0..if both { 2 } else { 1 } {
                out.push(Rec {
                    window,
                    gateway: venue * 2 + g,
                    rpi: r,
                    aem,
                    from: (minute % 10) as u8,
                    to: (to - u64::from(window) * 10) as u8,
                    seed: (mix(seed ^ u64::from(window) ^ u64::from(g) << 40)) as u32,
                });
            }
        }
        minute = to;
    }
}

/// Minutes of a visit: 1 + exponential of mean 20, at most 180.
fn duration(h: u64) -> u64 {
    1 + ((-(1.0 - unit(h)).ln() * 20.0) as u64).min(179)
}

fn make_keys(p: &Params) -> Vec<MatchKey> {
    let first_key_day = FIRST_DAY + p.days - p.key_days;
    (0..p.keys)
        .map(|k| {
            let h = mix(p.seed ^ k.wrapping_mul(0x51ED));
            let day = first_key_day + (k % u64::from(p.key_days)) as u32;
            let kind = h % 100;
            let (start, period) = match kind {
                0..90 => (day * 144, 144),
                90..97 => (day * 144, 1 + (h >> 8) % 143),
                _ => (day * 144 + ((h >> 8) % 144) as u32, 144),
            };
            let mut tek = [0x3Cu8; 16];
            tek[..8].copy_from_slice(&k.to_le_bytes());
            MatchKey {
                id: k + 1,
                key: DiagnosisKey {
                    tek: Tek::from_bytes(tek),
                    transmission_risk_level: None,
                    rolling_start: Enin(start),
                    rolling_period: RollingPeriod::new(period as i64).expect("1..=144 intervals"),
                    report_type: Some(if (h >> 20).is_multiple_of(10) {
                        ReportType::SelfReport
                    } else {
                        ReportType::ConfirmedTest
                    }),
                    days_since_onset_of_symptoms: Some(-3 + ((h >> 24) % 14) as i32),
                },
            }
        })
        .collect()
}

/// The cases' visits (real RPIs and AEMs), by day index.
fn planted(p: &Params, keys: &[MatchKey]) -> Vec<Vec<Rec>> {
    let mut by_day: Vec<Vec<Rec>> = vec![Vec::new(); p.days as usize];
    for k in keys {
        let h = mix(p.seed ^ 0x7157 ^ k.id);
        if unit(h) >= p.visit_rate {
            continue;
        }
        let (s, period) = (k.key.rolling_start.0, k.key.rolling_period.get());
        let h2 = mix(h);
        // A visit inside the key's validity, during opening hours.
        let interval = s + (h2 % u64::from(period)) as u32;
        let day_minute = (u64::from(interval) % 144) * 10 + (h2 >> 20) % 10;
        let day_minute = day_minute.clamp(OPEN_MINUTE, CLOSE_MINUTE - 1);
        let start = u64::from(interval / 144) * 1440 + day_minute;
        let end = (start + duration(mix(h2 ^ 0xD0))).min(u64::from(s + period) * 10);
        if end <= start {
            continue;
        }
        let venue = ((h2 >> 40) % u64::from(p.venues)) as u32;
        let (rpik, aemk) = k.key.tek.keys();
        let cipher = rpik.cipher();
        let metadata = Metadata::v1_0(-5 - ((h >> 50) % 20) as i8).to_bytes();
        let mut recs = Vec::new();
        visit_recs(
            p,
            venue,
            start,
            end,
            h2,
            |w| {
                let rpi = cipher.rpi(Enin(w));
                Some((rpi, aemk.encrypt(&rpi, metadata)))
            },
            &mut recs,
        );
        for r in recs {
            let d = r.window / 144;
            if let Some(day) = d
                .checked_sub(FIRST_DAY)
                .and_then(|i| by_day.get_mut(i as usize))
            {
                day.push(r);
            }
        }
    }
    by_day
}

/// Day `index`'s sightings: the planted ones plus other phones' visits up to the day's share,
/// in store order (window, gateway, RPI).
fn day_recs(p: &Params, index: u32, mut recs: Vec<Rec>) -> Vec<Rec> {
    let quota = (p.sightings * u64::from(index + 1) / u64::from(p.days)
        - p.sightings * u64::from(index) / u64::from(p.days)) as usize;
    let day = FIRST_DAY + index;
    recs.reserve(quota.saturating_sub(recs.len()) + 16);
    let mut n = 0u64;
    while recs.len() < quota {
        n += 1;
        let h = mix(p.seed ^ (u64::from(day) << 40) ^ n);
        let start = u64::from(day) * 1440 + OPEN_MINUTE + h % (CLOSE_MINUTE - OPEN_MINUTE);
        let end = (start + duration(mix(h))).min(u64::from(day) * 1440 + 1440);
        let venue = ((h >> 32) % u64::from(p.venues)) as u32;
        let phone = mix(h ^ 0xF11E);
        visit_recs(
            p,
            venue,
            start,
            end,
            h,
            |w| {
                let a = mix(phone ^ u64::from(w));
                let b = mix(a);
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&a.to_le_bytes());
                bytes[8..].copy_from_slice(&b.to_le_bytes());
                Some((
                    Rpi::from_bytes(bytes),
                    Aem::from_bytes(((b >> 32) as u32).to_le_bytes()),
                ))
            },
            &mut recs,
        );
    }
    recs.truncate(quota);
    recs.sort_unstable_by(|a, b| {
        (a.window, a.gateway, a.rpi.as_bytes()).cmp(&(b.window, b.gateway, b.rpi.as_bytes()))
    });
    recs
}

fn table_of(recs: &[Rec]) -> SightingTable {
    let minutes: usize = recs.iter().map(|r| usize::from(r.to - r.from)).sum();
    let mut table = SightingTable::with_capacity(recs.len(), minutes);
    for r in recs {
        table.push(
            SightingHeader {
                venue: r.gateway / 2,
                window_start: Enin(r.window),
                window_minutes: 10,
                rpi: r.rpi,
                aem: r.aem,
                rssi_calibration_db: calibration(r.gateway),
            },
            r.minutes(),
        );
    }
    table
}

/// `f` over `items` on `threads` threads, results in item order.
fn parallel<T: Send, R: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let slots: Vec<std::sync::Mutex<Option<T>>> = items
        .into_iter()
        .map(|t| std::sync::Mutex::new(Some(t)))
        .collect();
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(slot) = slots.get(i) else { break };
                        let item = slot.lock().expect("slot").take().expect("once");
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

fn absent(keys: &[MatchKey]) -> Vec<MatchKey> {
    keys.iter()
        .map(|k| {
            let mut tek = *k.key.tek.as_bytes();
            tek[15] ^= 0xFF;
            MatchKey {
                id: k.id,
                key: DiagnosisKey {
                    tek: Tek::from_bytes(tek),
                    ..k.key.clone()
                },
            }
        })
        .collect()
}

fn describe(report: &MatchReport, keys: usize, seconds: f64) -> String {
    let s = &report.stats;
    format!(
        "{seconds:.2} s ({:.0} k keys/s): {} probes, {} matched sightings ({:.3} % of probes, \
         {:.2} per key), {} events, {} venue-hours, out of tolerance {}, replay cuts {}",
        keys as f64 / seconds / 1e3,
        s.probes,
        s.matched_sightings,
        s.matched_sightings as f64 / s.probes.max(1) as f64 * 100.0,
        s.matched_sightings as f64 / keys as f64,
        report.events.len(),
        report.venue_hours.len(),
        s.out_of_tolerance,
        s.replay_cut
    )
}

fn memory(p: &Params) {
    let t = Instant::now();
    let keys = make_keys(p);
    let planted = planted(p, &keys);
    let planted_n: usize = planted.iter().map(Vec::len).sum();
    eprintln!(
        "match_scale: {} keys, {planted_n} planted sightings in {:.1} s",
        keys.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let days: Vec<(u32, Vec<Rec>)> = (0..p.days).zip(planted).collect();
    let tables: Vec<(u32, SightingTable)> = parallel(days, p.threads, |(i, recs)| {
        let recs = day_recs(p, i, recs);
        (FIRST_DAY + i, table_of(&recs))
    });
    let rows: usize = tables.iter().map(|(_, t)| t.len()).sum();
    let minutes: usize = tables.iter().map(|(_, t)| t.minutes_len()).sum();
    let table_bytes: usize = tables.iter().map(|(_, t)| t.memory_bytes()).sum();
    eprintln!(
        "match_scale: {rows} sightings over {} days ({:.2} minutes each; tables {} MiB, \
         {:.1} bytes a sighting) generated in {:.1} s; RSS {} MiB",
        p.days,
        minutes as f64 / rows as f64,
        table_bytes >> 20,
        table_bytes as f64 / rows as f64,
        t.elapsed().as_secs_f64(),
        rss_mib()
    );

    let (t, cpu) = (Instant::now(), cpu_s());
    let parts = parallel(tables, p.threads, |(day, table)| {
        Arc::new(DayPart::build(day, table).expect("one day"))
    });
    let index = SightingIndex::from_parts(parts).expect("index");
    let build_s = t.elapsed().as_secs_f64();
    let build_cpu = cpu_s() - cpu;
    let bytes = index.memory_bytes();
    eprintln!(
        "match_scale: index built in {build_s:.1} s on {} threads ({:.2} M sightings/s; cpu \
         {build_cpu:.1} s; load {}): {} parts, {} MiB with the sightings ({:.1} bytes a \
         sighting, {:.1} for the index); RSS {} MiB",
        p.threads,
        rows as f64 / build_s / 1e6,
        load(),
        index.parts(),
        bytes >> 20,
        bytes as f64 / rows as f64,
        (bytes - table_bytes) as f64 / rows as f64,
        rss_mib()
    );

    let config = RiskConfig::default();
    let others = absent(&keys);
    let _ = load();
    let (mut whole, mut join) = (Vec::new(), Vec::new());
    let mut last = None;
    for round in 0..p.rounds {
        let (t, cpu) = (Instant::now(), cpu_s());
        let report = index.match_keys(&keys, &config, p.threads);
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "match_scale: round {round}: whole match {} [cpu {:.2} s; load {}]",
            describe(&report, keys.len(), s),
            cpu_s() - cpu,
            load()
        );
        whole.push(s);
        last = Some(report);
        if std::env::args().any(|a| a == "--no-join") {
            continue;
        }
        let (t, cpu) = (Instant::now(), cpu_s());
        let report = index.match_keys(&others, &config, p.threads);
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "match_scale: round {round}: join only {} ({:.0} M lookups/s) [cpu {:.2} s; load {}]",
            describe(&report, keys.len(), s),
            report.stats.probes as f64 / s / 1e6,
            cpu_s() - cpu,
            load()
        );
        join.push(s);
    }
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::MAX, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    };
    join.push(f64::NAN);
    let ((w_lo, w_hi), (j_lo, j_hi)) = (range(&whole), range(&join));
    if let Some(report) = last {
        let s = report.stats;
        eprintln!(
            "match_scale: RESULT {} keys x {rows} sightings, {} threads: whole match {w_lo:.2}–\
             {w_hi:.2} s (target 10 s: {}), join {j_lo:.2}–{j_hi:.2} s, index build {build_s:.1} \
             s; matched {} sightings = {:.3} % of {} probes; peak RSS {} MiB",
            keys.len(),
            p.threads,
            if w_hi <= 10.0 { "met" } else { "NOT met" },
            s.matched_sightings,
            s.matched_sightings as f64 / s.probes.max(1) as f64 * 100.0,
            s.probes,
            peak_rss_mib()
        );
    }
}

/// The store under test: the SQLite file `path`, or the PostgreSQL database `database`.
#[derive(Clone, Copy)]
enum Target<'a> {
    Sqlite(&'a std::path::Path),
    Postgres(&'a str),
}

impl Target<'_> {
    /// A new connection.
    fn open(self) -> DynStore {
        match self {
            Target::Sqlite(path) => Box::new(SqliteStore::open(path).expect("store")),
            Target::Postgres(url) => Box::new(PgStore::connect(url).expect("store")),
        }
    }

    /// Bytes on disk: the SQLite file, or `pg_database_size`.
    fn size(self) -> u64 {
        match self {
            Target::Sqlite(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
            Target::Postgres(url) => {
                let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
                let size: i64 = client
                    .query_one("SELECT pg_database_size(current_database())", &[])
                    .expect("size")
                    .get(0);
                size as u64
            }
        }
    }
}

/// Writes the scenario's store through the store's API.
fn write_store(p: &Params, target: Target<'_>) {
    if let Target::Sqlite(path) = target {
        let _ = std::fs::remove_file(path);
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(path.with_file_name(format!(
                "{}{suffix}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("db")
            )));
        }
    }
    let mut store = target.open();
    assert_eq!(
        store.batch_count().expect("count"),
        0,
        "match_scale store wants an empty store (or --reuse)"
    );
    let t = Instant::now();
    let mut gateway_rows = BTreeMap::new();
    for venue in 0..p.venues {
        for g in 0..gateways(p, venue) {
            let id = format!("gw-{}", venue * 2 + g);
            store
                .add_gateway(
                    &id,
                    &format!("venue-{venue}"),
                    "market",
                    [7; 32],
                    None,
                    calibration(venue * 2 + g),
                    0,
                )
                .expect("enroll");
            gateway_rows.insert(
                venue * 2 + g,
                store.gateway(&id).expect("read").expect("gw"),
            );
        }
    }
    // The keys of these days (the full scale's keys per day), all key days being store days.
    let keys = make_keys(p);
    let planted = planted(p, &keys);
    let (mut batches, mut rows) = (0u64, 0u64);
    let mut sequence: BTreeMap<u32, u64> = BTreeMap::new();
    for (i, recs) in planted.into_iter().enumerate() {
        let recs = day_recs(p, i as u32, recs);
        for chunk in recs.chunk_by(|a, b| (a.window, a.gateway) == (b.window, b.gateway)) {
            let g = chunk[0].gateway;
            let seq = sequence.entry(g).or_insert(0);
            *seq += 1;
            let batch = Batch {
                id: BatchId {
                    gateway: GatewayId::new(&format!("gw-{g}")).expect("id"),
                    sequence: *seq,
                },
                venue: format!("venue-{}", g / 2),
                window_start: Enin(chunk[0].window),
                window_minutes: 10,
                closed_early: false,
                rssi_calibration_db: calibration(g),
                counters: Counters::default(),
                tempids: Vec::new(),
                sightings: chunk
                    .iter()
                    .map(|r| {
                        let minutes: Vec<MinuteRssi> = r.minutes().collect();
                        Sighting {
                            rpi: r.rpi,
                            aem: r.aem,
                            first_minute: r.from,
                            last_minute: r.to - 1,
                            reports: minutes.iter().map(|m| m.count).sum(),
                            minutes,
                        }
                    })
                    .collect(),
            };
            store
                .store_batch(&batch, &gateway_rows[&g], 0)
                .expect("store batch");
            batches += 1;
            rows += chunk.len() as u64;
        }
    }
    let diagnosis: Vec<DiagnosisKey> = keys.iter().map(|k| k.key.clone()).collect();
    store
        .import_keys(&diagnosis, "match_scale", 0)
        .expect("import");
    let write_s = t.elapsed().as_secs_f64();
    let size = target.size();
    eprintln!(
        "match_scale: store written in {write_s:.1} s: {batches} batches, {rows} sightings \
         ({:.0} sightings/s through store_batch), {} keys; on disk {} MiB ({:.0} bytes a sighting)",
        rows as f64 / write_s,
        keys.len(),
        size >> 20,
        size as f64 / rows as f64
    );
}

fn store(p: &Params, target: Target<'_>) {
    let reuse = std::env::args().any(|a| a == "--reuse")
        && match target {
            Target::Sqlite(path) => path.exists(),
            Target::Postgres(_) => target.open().batch_count().expect("count") > 0,
        };
    if !reuse {
        write_store(p, target);
    }
    // Reading: a fresh connection (cold SQLite cache; the file is in the OS page cache, as on
    // a server with the memory for it).
    let mut store = target.open();
    let days: Vec<u32> = store
        .day_counts()
        .expect("counts")
        .iter()
        .map(|c| c.day)
        .collect();
    let upto = store.sighting_watermark().expect("watermark");
    for round in 0..p.rounds.min(2) {
        let t = Instant::now();
        let mut read = 0;
        let mut cache = DayCache::new(usize::MAX);
        for &day in &days {
            let mut table = SightingTable::new();
            read += store
                .read_sightings(
                    SightingSelection::Windows {
                        from: Enin(day * 144),
                        to: Enin(day * 144 + 144),
                        upto,
                    },
                    &mut |row| table.push(row.header, row.minutes()),
                )
                .expect("read");
            std::hint::black_box(&table);
        }
        let read_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let loaded = load_days(&*store, &mut cache, &days, upto).expect("load");
        let load_s = t.elapsed().as_secs_f64();
        eprintln!(
            "match_scale: round {round}: read {read} sightings into tables in {read_s:.2} s \
             ({:.2} M rows/s; 1e8 would take {:.0} s); read + index (overlapped on 2 threads) \
             {loaded} in {load_s:.2} s ({:.2} M rows/s; 1e8: {:.0} s)",
            read as f64 / read_s / 1e6,
            1e8 / (read as f64 / read_s),
            loaded as f64 / load_s / 1e6,
            1e8 / (loaded as f64 / load_s),
        );
    }

    // The same reads as before this change, and variants considered (SQLite only).
    let sqlite_variants: &[(&str, &str)] = match target {
        Target::Sqlite(_) => &[("", ""), (" (mmap)", "PRAGMA mmap_size = 68719476736;")],
        Target::Postgres(_) => &[],
    };
    for &(name, pragma) in sqlite_variants {
        let Target::Sqlite(path) = target else {
            unreachable!()
        };
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.execute_batch(pragma).expect("pragma");
        for (variant, read) in [
            (
                "before (fbec090)",
                read_day_before as fn(&rusqlite::Connection, u32) -> usize,
            ),
            ("no JOIN", read_day_no_join),
        ] {
            let t = Instant::now();
            let n: usize = days.iter().map(|&d| read(&conn, d)).sum();
            let s = t.elapsed().as_secs_f64();
            eprintln!(
                "match_scale: read {variant}{name}: {n} sightings in {s:.2} s ({:.2} M rows/s)",
                n as f64 / s / 1e6
            );
        }
    }

    let risk = RiskConfig::default();
    let mut cache = MatchCache::new(usize::MAX);
    let t = Instant::now();
    let summary =
        match_store_cached(&mut *store, &risk, true, &mut cache, &mut |_, _, _| {}).expect("match");
    eprintln!(
        "match_scale: match --full (cold cache): {:.2} s: {summary:?}",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let summary =
        match_store_cached(&mut *store, &risk, true, &mut cache, &mut |_, _, _| {}).expect("match");
    eprintln!(
        "match_scale: match --full (warm cache, the daemon's): {:.2} s: {} days, {} events, {} \
         venue-hours, {} sightings read",
        t.elapsed().as_secs_f64(),
        summary.days,
        summary.events,
        summary.venue_hours,
        summary.sightings
    );

    // One minute of new batches on the last day (its share of ~3,300 sightings a minute at
    // full scale), then the daemon's rematch with its cache.
    let last_day = FIRST_DAY + p.days - 1;
    let gateway_rows: BTreeMap<u32, _> = (0..p.venues)
        .map(|v| {
            let gw = store
                .gateway(&format!("gw-{}", v * 2))
                .expect("read")
                .expect("enrolled");
            (v * 2, gw)
        })
        .collect();
    let minute_rows = (p.sightings / u64::from(p.days) / 1440).max(1) as usize;
    let window = last_day * 144 + 100;
    // Fresh sequence numbers on every run of a reused store.
    let sequence = 1_000_000 + store.sighting_watermark().expect("watermark") as u64;
    let mut added = 0;
    let mut g = 0u32;
    while added < minute_rows {
        let gw = &gateway_rows[&(g * 2)];
        let batch = Batch {
            id: BatchId {
                gateway: GatewayId::new(&format!("gw-{}", g * 2)).expect("id"),
                sequence,
            },
            venue: format!("venue-{g}"),
            window_start: Enin(window),
            window_minutes: 10,
            closed_early: false,
            rssi_calibration_db: 0,
            counters: Counters::default(),
            tempids: Vec::new(),
            sightings: (0..20u64)
                .map(|i| {
                    let a = mix(u64::from(g) << 20 ^ i ^ 0xBEEF);
                    let mut bytes = [0u8; 16];
                    bytes[..8].copy_from_slice(&a.to_le_bytes());
                    bytes[8..].copy_from_slice(&mix(a).to_le_bytes());
                    Sighting {
                        rpi: Rpi::from_bytes(bytes),
                        aem: Aem::from_bytes([1, 2, 3, 4]),
                        first_minute: 0,
                        last_minute: 9,
                        reports: 10,
                        minutes: (0..10)
                            .map(|minute| MinuteRssi {
                                minute,
                                count: 1,
                                min: -70,
                                mean: -70,
                                max: -70,
                            })
                            .collect(),
                    }
                })
                .collect(),
        };
        store.store_batch(&batch, gw, 0).expect("store");
        added += 20;
        g += 1;
    }
    let t = Instant::now();
    let summary = match_store_cached(&mut *store, &risk, false, &mut cache, &mut |_, _, _| {})
        .expect("match");
    eprintln!(
        "match_scale: daemon rematch after one minute of batches ({added} sightings): {:.2} s: \
         {} days, {} keys, {} sightings read; cache {} days, {} MiB; peak RSS {} MiB",
        t.elapsed().as_secs_f64(),
        summary.days,
        summary.keys,
        summary.sightings,
        cache.days(),
        cache.memory_bytes() >> 20,
        peak_rss_mib()
    );
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "memory".into());
    let store_mode = mode == "store";
    let days = arg("--days", if store_mode { 2 } else { 21 });
    let p = Params {
        // The store mode keeps the full scale's density: 1e8 / 21 sightings a day.
        sightings: arg(
            "--sightings",
            if store_mode {
                100_000_000 * u64::from(days) / 21
            } else {
                100_000_000
            },
        ),
        days,
        key_days: arg("--key-days", if store_mode { days } else { 14 }),
        // Keys: the full scale's 3 M over 14 days, per key day.
        keys: arg(
            "--keys",
            if store_mode {
                3_000_000 * u64::from(days) / 14
            } else {
                3_000_000
            },
        ),
        venues: arg("--venues", 2000),
        visit_rate: arg("--visit-rate", 0.1),
        threads: arg("--threads", 2),
        rounds: arg("--rounds", 3),
        seed: arg("--seed", 1),
    };
    eprintln!("match_scale: {mode} {p:?}");
    match mode.as_str() {
        "memory" => memory(&p),
        "store" => {
            let db = arg("--db", "/tmp/vt-match-scale.sqlite".to_owned());
            let database = arg("--database", String::new());
            store(
                &p,
                if database.is_empty() {
                    Target::Sqlite(std::path::Path::new(&db))
                } else {
                    Target::Postgres(&database)
                },
            )
        }
        "read" => read_variants(std::path::Path::new(&arg(
            "--db",
            "/tmp/vt-match-scale.sqlite".to_owned(),
        ))),
        other => eprintln!("match_scale: unknown mode {other:?}: memory, store or read"),
    }
}

/// Reading one day of sightings as the authority did before the compact tables (the code of
/// `SqliteStore::sightings` and the matching driver at commit fbec090, replayed on a
/// connection of its own): a statement prepared per call, a `Vec` per BLOB and per row's
/// minutes, then a `VenueSighting` per row. Returns the rows read.
fn read_day_before(conn: &rusqlite::Connection, day: u32) -> usize {
    let mut stmt = conn
        .prepare(
            "SELECT s.venue_id, s.window_start_enin, b.window_minutes, s.rpi, s.aem, b.calibration_db, s.minutes
             FROM sighting s JOIN batch b ON b.id = s.batch
             WHERE s.window_start_enin >= ?1 AND s.window_start_enin < ?2",
        )
        .expect("prepare");
    let rows: Vec<venuetrace::matching::VenueSighting> = stmt
        .query_map([day * 144, day * 144 + 144], |r| {
            let rpi: Vec<u8> = r.get(3)?;
            let aem: Vec<u8> = r.get(4)?;
            let minutes: Vec<u8> = r.get(6)?;
            Ok(venuetrace::matching::VenueSighting {
                venue: r.get(0)?,
                window_start: Enin(r.get(1)?),
                window_minutes: r.get(2)?,
                rpi: Rpi::from_slice(&rpi).unwrap_or(Rpi::from_bytes([0; 16])),
                aem: Aem::from_slice(&aem).unwrap_or(Aem::from_bytes([0; 4])),
                rssi_calibration_db: r.get(5)?,
                minutes: minutes
                    .chunks_exact(8)
                    .map(|c| MinuteRssi {
                        minute: c[0],
                        count: u32::from_le_bytes([c[1], c[2], c[3], c[4]]),
                        min: c[5] as i8,
                        mean: c[6] as i8,
                        max: c[7] as i8,
                    })
                    .collect(),
            })
        })
        .and_then(Iterator::collect)
        .expect("read");
    std::hint::black_box(&rows);
    rows.len()
}

/// The same day without the JOIN: the batches' window length and calibration first (a few
/// thousand rows), then the sightings alone. Returns the rows read.
fn read_day_no_join(conn: &rusqlite::Connection, day: u32) -> usize {
    let mut batches = std::collections::HashMap::new();
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, window_minutes, calibration_db FROM batch
             WHERE window_start_enin >= ?1 AND window_start_enin < ?2",
        )
        .expect("prepare");
    let mut rows = stmt.query([day * 144, day * 144 + 144]).expect("query");
    while let Some(r) = rows.next().expect("row") {
        let id: i64 = r.get(0).expect("id");
        batches.insert(
            id,
            (
                r.get::<_, u32>(1).expect("w"),
                r.get::<_, i32>(2).expect("c"),
            ),
        );
    }
    let mut table = SightingTable::new();
    let mut stmt = conn
        .prepare_cached(
            "SELECT batch, venue_id, window_start_enin, rpi, aem, minutes FROM sighting
             WHERE window_start_enin >= ?1 AND window_start_enin < ?2",
        )
        .expect("prepare");
    let mut rows = stmt.query([day * 144, day * 144 + 144]).expect("query");
    let blob = |r: &rusqlite::Row<'_>, i: usize| -> Vec<u8> {
        match r.get_ref(i).expect("col") {
            rusqlite::types::ValueRef::Blob(b) => b.to_vec(),
            _ => Vec::new(),
        }
    };
    while let Some(r) = rows.next().expect("row") {
        let (window_minutes, cal) = batches[&r.get::<_, i64>(0).expect("batch")];
        let minutes = match r.get_ref(5).expect("col") {
            rusqlite::types::ValueRef::Blob(b) => b,
            _ => &[],
        };
        table.push(
            SightingHeader {
                venue: r.get(1).expect("venue"),
                window_start: Enin(r.get(2).expect("start")),
                window_minutes,
                rpi: Rpi::from_slice(&blob(r, 3)).unwrap_or(Rpi::from_bytes([0; 16])),
                aem: Aem::from_slice(&blob(r, 4)).unwrap_or(Aem::from_bytes([0; 4])),
                rssi_calibration_db: cal,
            },
            minutes.chunks_exact(8).map(|c| MinuteRssi {
                minute: c[0],
                count: u32::from_le_bytes([c[1], c[2], c[3], c[4]]),
                min: c[5] as i8,
                mean: c[6] as i8,
                max: c[7] as i8,
            }),
        );
    }
    table.len()
}

/// Reads with `sql` (parameters: first and end window; columns: batch, venue, window start,
/// RPI, AEM, minutes, then window length and calibration when `joined`) into a table, without
/// allocating per row. Returns the rows read.
fn read_variant(conn: &rusqlite::Connection, sql: &str, joined: bool, from: u32, to: u32) -> usize {
    let mut batches = std::collections::HashMap::new();
    if !joined {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, window_minutes, calibration_db FROM batch
                 WHERE window_start_enin >= ?1 AND window_start_enin < ?2",
            )
            .expect("prepare");
        let mut rows = stmt.query([from, to]).expect("query");
        while let Some(r) = rows.next().expect("row") {
            let id: i64 = r.get(0).expect("id");
            batches.insert(
                id,
                (
                    r.get::<_, u32>(1).expect("w"),
                    r.get::<_, i32>(2).expect("c"),
                ),
            );
        }
    }
    let mut table = SightingTable::new();
    let mut stmt = conn.prepare_cached(sql).expect("prepare");
    let mut rows = stmt.query([from, to]).expect("query");
    fn blob<'a>(r: &'a rusqlite::Row<'_>, i: usize) -> &'a [u8] {
        match r.get_ref(i).expect("col") {
            rusqlite::types::ValueRef::Blob(b) => b,
            _ => &[],
        }
    }
    let (mut last, mut info) = (0i64, (0u32, 0i32));
    while let Some(r) = rows.next().expect("row") {
        let batch: i64 = r.get(0).expect("batch");
        if joined {
            info = (r.get(6).expect("w"), r.get(7).expect("c"));
        } else if batch != last {
            info = batches[&batch];
            last = batch;
        }
        table.push(
            SightingHeader {
                venue: r.get(1).expect("venue"),
                window_start: Enin(r.get(2).expect("start")),
                window_minutes: info.0,
                rpi: Rpi::from_slice(blob(r, 3)).unwrap_or(Rpi::from_bytes([0; 16])),
                aem: Aem::from_slice(blob(r, 4)).unwrap_or(Aem::from_bytes([0; 4])),
                rssi_calibration_db: info.1,
            },
            blob(r, 5).chunks_exact(8).map(|c| MinuteRssi {
                minute: c[0],
                count: u32::from_le_bytes([c[1], c[2], c[3], c[4]]),
                min: c[5] as i8,
                mean: c[6] as i8,
                max: c[7] as i8,
            }),
        );
    }
    table.len()
}

/// `read` mode: the read variants alone, on an existing store.
fn read_variants(path: &std::path::Path) {
    let store = SqliteStore::open(path).expect("store");
    let days: Vec<u32> = store
        .day_counts()
        .expect("counts")
        .iter()
        .map(|c| c.day)
        .collect();
    drop(store);
    const J: &str = "SELECT s.batch, s.venue_id, s.window_start_enin, s.rpi, s.aem, s.minutes,
        b.window_minutes, b.calibration_db FROM sighting s JOIN batch b ON b.id = s.batch";
    const S: &str = "SELECT batch, venue_id, window_start_enin, rpi, aem, minutes FROM sighting";
    let variants: [(&str, String, bool, bool); 5] = [
        (
            "index + join (as read_sightings)",
            format!("{J} WHERE s.window_start_enin >= ?1 AND s.window_start_enin < ?2"),
            true,
            false,
        ),
        (
            "index, no join",
            format!("{S} WHERE window_start_enin >= ?1 AND window_start_enin < ?2"),
            false,
            false,
        ),
        (
            "table scan + join, all days at once",
            format!(
                "{} WHERE s.window_start_enin >= ?1 AND s.window_start_enin < ?2",
                J.replace("sighting s", "sighting s NOT INDEXED")
            ),
            true,
            true,
        ),
        (
            "table scan, no join, all days at once",
            format!("{S} NOT INDEXED WHERE window_start_enin >= ?1 AND window_start_enin < ?2"),
            false,
            true,
        ),
        (
            "index + join, batch-major (rowid order)",
            format!(
                "{J} WHERE s.window_start_enin >= ?1 AND s.window_start_enin < ?2 ORDER BY s.rowid"
            ),
            true,
            false,
        ),
    ];
    for pragma in ["", "PRAGMA mmap_size = 68719476736;"] {
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.execute_batch(pragma).expect("pragma");
        for (name, sql, joined, all) in &variants {
            let t = Instant::now();
            let n: usize = if *all {
                read_variant(
                    &conn,
                    sql,
                    *joined,
                    days[0] * 144,
                    (days[days.len() - 1] + 1) * 144,
                )
            } else {
                days.iter()
                    .map(|&d| read_variant(&conn, sql, *joined, d * 144, d * 144 + 144))
                    .sum()
            };
            let s = t.elapsed().as_secs_f64();
            eprintln!(
                "match_scale: read {name}{}: {n} in {s:.2} s ({:.2} M rows/s) [load {}]",
                if pragma.is_empty() { "" } else { ", mmap" },
                n as f64 / s / 1e6,
                load()
            );
        }
    }
}
