//! The authority's matching driver over a real SQLite store: incremental runs (new keys, then
//! new batches, revised keys) end with exactly the results of a full recompute.

use venuetrace::advert::{Advert, DeviceAddress, ServiceUuid};
use venuetrace::aggregate::{Aggregator, AggregatorConfig};
use venuetrace::authority::service::match_store;
use venuetrace::authority::store::{ExposureFilter, SqliteStore, VenueHourView};
use venuetrace::batch::{Batch, GatewayId};
use venuetrace::crypto::{Enin, Metadata, RollingPeriod, Tek};
use venuetrace::export::{DiagnosisKey, ReportType};
use venuetrace::matching::RiskConfig;

const DAY_ENIN: u32 = 2_950_128; // a UTC midnight (multiple of 144)

/// Batches of one gateway for windows `enins`: phones 0..5 present, phone 0 is the case.
fn store_windows(store: &mut SqliteStore, enins: std::ops::Range<u32>, first_sequence: u64) {
    let gateway = store.gateway("gw-m").expect("read").expect("enrolled");
    let mut agg = Aggregator::new(AggregatorConfig::default());
    let mut sequence = first_sequence;
    let gaen = ServiceUuid::from_u16(0xFD6F);
    let mut commit = |window, sequence: &mut u64| {
        let batch = Batch::from_window(
            GatewayId::new("gw-m").expect("id"),
            *sequence,
            "souk-1",
            0,
            window,
        );
        store.store_batch(&batch, &gateway, 0).expect("store");
        *sequence += 1;
    };
    for enin in enins {
        for step in 0..20u64 {
            for phone in 0..5u8 {
                let tek = Tek::from_bytes([phone; 16]);
                let rpi = tek.rpik().cipher().rpi(Enin(enin));
                let aem = tek.aemk().encrypt(&rpi, Metadata::v1_0(-10).to_bytes());
                let mut data = rpi.as_bytes().to_vec();
                data.extend_from_slice(aem.as_bytes());
                let advert = Advert {
                    time_ms: u64::from(enin) * 600_000 + step * 30_000,
                    address: DeviceAddress([phone; 6]),
                    rssi: -55 - phone as i8,
                    service_data: vec![(gaen, data)],
                    ..Advert::default()
                };
                if let Some(window) = agg.observe(&advert) {
                    commit(window, &mut sequence);
                }
            }
        }
    }
    if let Some(window) = agg.close_early() {
        commit(window, &mut sequence);
    }
}

fn case_key(report_type: ReportType) -> DiagnosisKey {
    DiagnosisKey {
        tek: Tek::from_bytes([0; 16]),
        transmission_risk_level: None,
        rolling_start: Enin(DAY_ENIN),
        rolling_period: RollingPeriod::DAY,
        report_type: Some(report_type),
        days_since_onset_of_symptoms: Some(0),
    }
}

fn results(store: &SqliteStore) -> Vec<VenueHourView> {
    store
        .venue_hours(&ExposureFilter::default())
        .expect("query")
}

/// Keys first, then batches arriving over two days, then a revised key: after each
/// incremental run the stored results equal a full recompute of the same store.
#[test]
fn incremental_matching_equals_full_recompute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(&dir.path().join("a.sqlite")).expect("store");
    store
        .add_gateway("gw-m", "souk-1", "market", [9; 32], None, 0, 0)
        .expect("enroll");
    let risk = RiskConfig::default();
    let check = |store: &mut SqliteStore| {
        let incremental = results(store);
        match_store(store, &risk, true).expect("full");
        assert_eq!(results(store), incremental, "incremental differs from full");
    };

    // The morning's batches, then the key: the key's days are matched.
    store_windows(&mut store, DAY_ENIN + 50..DAY_ENIN + 56, 1);
    store
        .import_keys(&[case_key(ReportType::ConfirmedTest)], "test", 1)
        .expect("import");
    let summary = match_store(&mut store, &risk, false).expect("match");
    assert!(summary.days >= 1 && summary.events > 0, "{summary:?}");
    let morning = results(&store);
    assert!(!morning.is_empty());
    check(&mut store);

    // Afternoon batches, and some just after midnight (inside the ±2 h tolerance): only those
    // days are rematched, and the new hours appear.
    store_windows(&mut store, DAY_ENIN + 100..DAY_ENIN + 104, 100);
    store_windows(&mut store, DAY_ENIN + 144..DAY_ENIN + 146, 200);
    let summary = match_store(&mut store, &risk, false).expect("match");
    assert!(summary.days >= 1);
    let later = results(&store);
    assert!(later.len() > morning.len(), "afternoon hours added");
    check(&mut store);

    // A revised key (withdrawn diagnosis) removes its exposures on the next run.
    store
        .import_keys(&[case_key(ReportType::Revoked)], "test", 2)
        .expect("revise");
    match_store(&mut store, &risk, false).expect("match");
    assert!(
        results(&store).is_empty(),
        "a revoked key's exposures are gone"
    );
    check(&mut store);

    // Nothing new: nothing to do.
    assert_eq!(
        match_store(&mut store, &risk, false).expect("match").days,
        0
    );
}
