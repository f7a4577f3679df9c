//! G1: raw HCI advertising-report bytes → decoded adverts → aggregated into a window, the
//! gateway's per-advert hot path (issue 4: ≥ 1 M adverts/s per core; one radio delivers at
//! most ~500 clean reports/s).
//!
//! The input: 2,000 phones' GAEN adverts (real RPIs and AEMs) spread over one 10-minute window,
//! as LE Advertising Report events of one report each (what controllers send for GAEN
//! traffic), plus 10 % unrelated adverts. Each iteration parses every event and feeds every
//! advert to a fresh aggregator, then closes the window.
//!
//! Run: `cargo bench --bench gateway_ingest`. Results: docs/performance.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use venuetrace::advert::{Advert, DeviceAddress, ServiceUuid, build_ad};
use venuetrace::aggregate::{Aggregator, AggregatorConfig};
use venuetrace::crypto::{Enin, Metadata, Tek};
use venuetrace::hci::{Report, encode_advertising_report, parse_event};

const EVENTS: usize = 100_000;
const PHONES: usize = 2_000;
const ENIN: u32 = 2_950_000;

fn events() -> Vec<(u64, Vec<u8>)> {
    let gaen = ServiceUuid::from_u16(0xFD6F);
    let payloads: Vec<Vec<u8>> = (0..PHONES)
        .map(|p| {
            let tek = Tek::from_bytes([
                (p % 251) as u8,
                (p / 251) as u8,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
            ]);
            let rpi = tek.rpik().cipher().rpi(Enin(ENIN));
            let aem = tek.aemk().encrypt(&rpi, Metadata::v1_0(-12).to_bytes());
            let mut data = rpi.as_bytes().to_vec();
            data.extend_from_slice(aem.as_bytes());
            let mut ad = vec![0x02, 0x01, 0x1A];
            ad.extend(build_ad(&Advert {
                service_uuids: vec![gaen],
                service_data: vec![(gaen, data)],
                ..Advert::default()
            }));
            ad
        })
        .collect();
    let other = build_ad(&Advert {
        manufacturer_data: vec![(0x004C, vec![0x10, 0x05, 0x01, 0x18, 0x44, 0x22, 0x11])],
        ..Advert::default()
    });
    let t0 = u64::from(ENIN) * 600_000;
    (0..EVENTS)
        .map(|i| {
            let time = t0 + (i as u64 * 599_000) / EVENTS as u64;
            let phone = (i * 7919) % PHONES;
            let data = if i % 10 == 9 {
                &other
            } else {
                &payloads[phone]
            };
            let address = DeviceAddress([0xC0, (phone >> 8) as u8, phone as u8, 1, 2, 3]);
            let report = Report::nonconnectable(address, -40 - (i % 50) as i8, data);
            (
                time,
                encode_advertising_report(&[report]).expect("one report fits"),
            )
        })
        .collect()
}

fn gateway_ingest(c: &mut Criterion) {
    let events = events();
    // Distinct phones among the GAEN events (every tenth event is an unrelated advert).
    let phones: std::collections::HashSet<usize> = (0..EVENTS)
        .filter(|i| i % 10 != 9)
        .map(|i| (i * 7919) % PHONES)
        .collect();
    let mut group = c.benchmark_group("gateway_ingest");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("hci_to_window", |b| {
        let mut adverts = Vec::with_capacity(4);
        b.iter(|| {
            let mut agg = Aggregator::new(AggregatorConfig::default());
            for (time, event) in &events {
                adverts.clear();
                let _ = parse_event(event, *time, &mut adverts);
                for advert in &adverts {
                    black_box(agg.observe(advert));
                }
            }
            let window = agg.close_early().expect("a window");
            assert_eq!(window.sightings.len(), phones.len());
            black_box(window)
        })
    });
    group.bench_function("hci_parse_only", |b| {
        let mut adverts = Vec::with_capacity(4);
        b.iter(|| {
            let mut n = 0;
            for (time, event) in &events {
                adverts.clear();
                let _ = parse_event(event, *time, &mut adverts);
                n += adverts.len();
            }
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, gateway_ingest);
criterion_main!(benches);
