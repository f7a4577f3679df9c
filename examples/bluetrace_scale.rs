//! The cost of BlueTrace venue-hours and contacts, measured on a real store: writes a store of
//! TempID sightings through [`SqliteStore::store_batch`], registers cases, then times the full
//! recompute of the venue-hours ([`recompute_hours`], what `match`, `bluetrace cases
//! add|remove` and the daemon do) and one `bluetrace contacts` computation
//! ([`load_presences`] + [`Presences::contacts`]), then the same case with an uploaded
//! encounter list (parsed, decided, placed: [`Presences::case_contacts`]) and the recompute
//! once that list is stored with the case, and prints the peak RSS.
//!
//! The scenario (every number is a flag): `--days` days (default 21, the retention) at
//! `--venues` venues (200) open 06:00–22:00 UTC, one gateway each; `--phones` BlueTrace phones
//! (20,000) each visiting one venue a day with probability `--visit-rate` (0.5), for 1 + an
//! exponential of mean 20 minutes (capped at 3 h), read every 2 minutes; a phone's TempID
//! changes every 15 minutes (as OpenTrace issues them), so a visit gives one sighting per
//! 10-minute window and TempID. `--cases` cases (50), each a phone with an infectious period
//! of the last 14 days. The case's encounter list holds a record a minute of every overlap of
//! its visits with another phone's at the same venue, plus `--encounters` (50,000) records of
//! random phones at random times of its period (met in the street, at home, on a bus without a
//! gateway: most of a real list), as OpenTrace JSON.
//!
//! Run: `cargo run --release --example bluetrace_scale -- --db /tmp/vt-bt.sqlite` (delete the
//! file afterwards; ~600 MiB with `--phones 100000 --venues 500`). Figures:
//! docs/performance.md, "BlueTrace venue-hours and contacts".

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Instant;
use venuetrace::aggregate::{Counters, MinuteRssi, TempIdSighting};
use venuetrace::authority::bluetrace::{load_presences, presence_settings, recompute_hours};
use venuetrace::authority::config;
use venuetrace::authority::store::{BluetraceCase, SqliteStore, Store};
use venuetrace::batch::{Batch, BatchId, GatewayId};
use venuetrace::bluetrace::{TempId, TempIdKey, Uid, parse_encounter_list};
use venuetrace::crypto::Enin;
use venuetrace::presence::{Case, Presences, decide_encounters};

/// 2026-11-09T00:00Z, the first day.
const FIRST_DAY_S: i64 = 1_794_182_400;

struct Args {
    db: std::path::PathBuf,
    days: i64,
    venues: u32,
    phones: u32,
    visit_rate: f64,
    cases: usize,
    encounters: usize,
}

fn args() -> Args {
    let mut a = Args {
        db: "/tmp/vt-bluetrace-scale.sqlite".into(),
        days: 21,
        venues: 200,
        phones: 20_000,
        visit_rate: 0.5,
        cases: 50,
        encounters: 50_000,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--db" => a.db = value.into(),
            "--days" => a.days = value.parse().expect("--days"),
            "--venues" => a.venues = value.parse().expect("--venues"),
            "--phones" => a.phones = value.parse().expect("--phones"),
            "--visit-rate" => a.visit_rate = value.parse().expect("--visit-rate"),
            "--cases" => a.cases = value.parse().expect("--cases"),
            "--encounters" => a.encounters = value.parse().expect("--encounters"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn uid(phone: u32) -> Uid {
    let mut bytes = [0u8; 21];
    bytes[..4].copy_from_slice(&phone.to_le_bytes());
    bytes[20] = 0xB7;
    Uid::from_bytes(bytes)
}

/// `phone`'s TempID in Unix minute `minute`: OpenTrace issues them for 15 minutes each, from
/// midnight.
fn tempid_at(key: &TempIdKey, phone: u32, minute: i64) -> TempId {
    let block = minute / 15;
    let iv_seed = (u64::from(phone) << 24) ^ block as u64;
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&iv_seed.to_le_bytes());
    key.encrypt(
        &uid(phone),
        (block * 900 - 60) as i32,
        (block * 900 + 900) as i32,
        &iv,
    )
}

fn main() {
    let a = args();
    let _ = std::fs::remove_file(&a.db);
    let key = TempIdKey::new(&[0x42; 32]);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut store = SqliteStore::open(&a.db).expect("store");
    for v in 0..a.venues {
        store
            .add_gateway(
                &format!("gw-{v}"),
                &format!("venue-{v}"),
                "market",
                [1; 32],
                None,
                0,
                0,
            )
            .expect("enroll");
    }
    let gateways: Vec<_> = (0..a.venues)
        .map(|v| {
            store
                .gateway(&format!("gw-{v}"))
                .expect("read")
                .expect("enrolled")
        })
        .collect();

    // Per day: (venue, window) → TempID → minutes.
    let started = Instant::now();
    let (mut sightings, mut batches_stored, mut visitors) = (0u64, 0u64, Vec::new());
    // (phone, venue, first minute, end minute), Unix minutes.
    let mut visits: Vec<(u32, u32, i64, i64)> = Vec::new();
    let mut sequence = vec![0u64; a.venues as usize];
    for day in 0..a.days {
        let day_s = FIRST_DAY_S + day * 86_400;
        let mut windows: BTreeMap<(u32, u32), BTreeMap<TempId, Vec<MinuteRssi>>> = BTreeMap::new();
        for phone in 0..a.phones {
            if rng.random::<f64>() >= a.visit_rate {
                continue;
            }
            let venue = rng.random_range(0..a.venues);
            let start = day_s / 60 + rng.random_range(6 * 60..22 * 60);
            let length = (1.0 - 20.0 * (1.0 - rng.random::<f64>()).ln()).min(180.0) as i64;
            if day == a.days - 1 {
                visitors.push(phone);
            }
            visits.push((phone, venue, start, start + length));
            for minute in (start..start + length).step_by(2) {
                let tempid = tempid_at(&key, phone, minute);
                let rssi = -60 - rng.random_range(0..30) as i8;
                windows
                    .entry((venue, (minute / 10) as u32))
                    .or_default()
                    .entry(tempid)
                    .or_default()
                    .push(MinuteRssi {
                        minute: (minute % 10) as u8,
                        count: 1,
                        min: rssi,
                        mean: rssi,
                        max: rssi,
                    });
            }
        }
        for ((venue, window), tempids) in windows {
            sequence[venue as usize] += 1;
            let tempids: Vec<TempIdSighting> = tempids
                .into_iter()
                .map(|(tempid, minutes)| TempIdSighting {
                    tempid,
                    org: "MAR".into(),
                    first_minute: minutes[0].minute,
                    last_minute: minutes[minutes.len() - 1].minute,
                    reads: minutes.len() as u32,
                    minutes,
                })
                .collect();
            sightings += tempids.len() as u64;
            let batch = Batch {
                id: BatchId {
                    gateway: GatewayId::new(&format!("gw-{venue}")).expect("id"),
                    sequence: sequence[venue as usize],
                },
                venue: format!("venue-{venue}"),
                window_start: Enin(window),
                window_minutes: 10,
                closed_early: false,
                rssi_calibration_db: 0,
                counters: Counters {
                    bluetrace_reads: tempids.iter().map(|t| u64::from(t.reads)).sum(),
                    ..Counters::default()
                },
                sightings: Vec::new(),
                tempids,
            };
            store
                .store_batch(&batch, &gateways[venue as usize], 0)
                .expect("store");
            batches_stored += 1;
        }
    }
    let store_s = started.elapsed().as_secs_f64();
    println!(
        "stored {sightings} TempID sightings in {batches_stored} batches over {} days in {store_s:.1} s",
        a.days
    );

    let end_s = FIRST_DAY_S + a.days * 86_400;
    for phone in visitors.iter().take(a.cases) {
        store
            .upsert_case(&BluetraceCase {
                uid: uid(*phone),
                from_s: end_s - 14 * 86_400,
                to_s: end_s,
                label: None,
                added_ms: 0,
            })
            .expect("case");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("tempid.key"),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [0x42u8; 32]),
    )
    .expect("key file");
    std::fs::write(
        dir.path().join("authority.toml"),
        "[bluetrace]\nkey_files = [\"tempid.key\"]\n",
    )
    .expect("config");
    let settings = config::load(&dir.path().join("authority.toml"), &[])
        .expect("config")
        .bluetrace;

    let started = Instant::now();
    let summary = recompute_hours(&mut store, &settings).expect("recompute");
    let recompute_s = started.elapsed().as_secs_f64();
    println!(
        "recompute_hours: {} cases, {} sightings read ({} used), {} venue-hours, in {recompute_s:.2} s \
         ({:.2} µs per sighting); peak RSS {} MiB",
        summary.cases,
        summary.sightings,
        summary.outcomes.used,
        summary.venue_hours,
        recompute_s * 1e6 / summary.sightings.max(1) as f64,
        peak_rss_mib()
    );

    let case = Case {
        uid: uid(visitors[0]),
        from_s: end_s - 14 * 86_400,
        to_s: end_s,
    };
    let started = Instant::now();
    let (presences, read): (Presences, u64) =
        load_presences(&store, &[case], &settings).expect("load");
    let load_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let contacts = presences.contacts(&case, &presence_settings(&settings));
    let contacts_s = started.elapsed().as_secs_f64();
    println!(
        "contacts of one case over 14 days: {read} sightings read and decided in {load_s:.2} s, \
         {} reads of {} UIDs; {} contacts in {:.1} ms; peak RSS {} MiB",
        presences.reads(),
        presences.uids(),
        contacts.len(),
        contacts_s * 1e3,
        peak_rss_mib()
    );
    // The same case with its encounter list.
    let (from_min, to_min) = (case.from_s / 60, case.to_s / 60);
    // (phone, second) of each record, then the upload's text written record by record (a JSON
    // tree of it would dwarf what is measured).
    let mut by_venue: BTreeMap<u32, Vec<&(u32, u32, i64, i64)>> = BTreeMap::new();
    for v in &visits {
        by_venue.entry(v.1).or_default().push(v);
    }
    let mut met: Vec<(u32, i64)> = Vec::new();
    for own in visits
        .iter()
        .filter(|v| v.0 == visitors[0] && v.2 >= from_min && v.3 <= to_min)
    {
        for other in by_venue[&own.1].iter().filter(|o| o.0 != own.0) {
            for minute in own.2.max(other.2)..own.3.min(other.3) {
                met.push((other.0, minute * 60 + 30));
            }
        }
    }
    let co_present = met.len();
    for _ in 0..a.encounters {
        met.push((
            rng.random_range(0..a.phones),
            rng.random_range(case.from_s..case.to_s),
        ));
    }
    let mut upload = String::from("{\"token\":\"t\",\"events\":[],\"records\":[");
    for (i, (phone, second)) in met.iter().enumerate() {
        upload.push_str(if i == 0 { "" } else { "," });
        upload.push_str(&format!(
            "{{\"timestamp\":{},\"msg\":\"{}\",\"org\":\"MAR\",\"modelC\":\"SM-A125F\",\
             \"modelP\":\"Redmi Note 8\",\"rssi\":-70,\"txPower\":7,\"v\":2}}",
            second * 1000,
            tempid_at(&key, *phone, second / 60).to_base64()
        ));
    }
    upload.push_str("]}");
    let started = Instant::now();
    let list = parse_encounter_list(upload.as_bytes()).expect("parses");
    let parse_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (met, outcomes) = decide_encounters(
        &list.records,
        &case,
        &settings.tempid_keys(),
        &presence_settings(&settings),
    );
    let decide_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (with_list, placed) = presences.case_contacts(&case, &met, &presence_settings(&settings));
    let place_s = started.elapsed().as_secs_f64();
    println!(
        "with an encounter list of {} records ({} MiB of JSON; {co_present} at its venues): \
         parsed in {:.2} s, decided in {:.2} s ({} used), placed in {:.1} ms ({placed} placed); \
         {} contacts (was {}); peak RSS {} MiB",
        list.records.len(),
        upload.len() >> 20,
        parse_s,
        decide_s,
        outcomes.decided.used,
        place_s * 1e3,
        with_list.len(),
        contacts.len(),
        peak_rss_mib()
    );
    // The venue-hours again, that case registered with its list (the reads above released
    // first: the recompute reads its own).
    drop(presences);
    let started = Instant::now();
    store
        .set_case_encounters(&case.uid, &list.records)
        .expect("store the list");
    let stored_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let summary = recompute_hours(&mut store, &settings).expect("recompute");
    let recompute_s = started.elapsed().as_secs_f64();
    println!(
        "that list stored with its case in {stored_s:.2} s; recompute_hours then: {} venue-hours \
         ({} encounters used, {} placed) in {recompute_s:.2} s; peak RSS {} MiB",
        summary.venue_hours,
        summary.encounters.decided.used,
        summary.encounters.placed,
        peak_rss_mib()
    );
    let db_bytes = std::fs::metadata(&a.db).map_or(0, |m| m.len());
    println!("store file: {} MiB", db_bytes >> 20);
}
