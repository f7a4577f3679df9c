//! The window aggregator: turns the stream of adverts one gateway hears into one summary per
//! time window, per RPI, with no device address (DESIGN.md §3, §4).
//!
//! Pure: adverts and times in, closed windows out. Which clock drives it (the wall clock for a
//! live radio, the capture's timestamps for a replay), sealing and storing the result are the
//! caller's.
//!
//! Per window (aligned to ENIN boundaries, default 10 min) and per RPI it keeps the AEM, the
//! first and last minute offset it was heard, the report count, and RSSI min/mean/max per
//! minute, so the authority can rebuild the phone's scan instances. Memory is bounded by a cap
//! on distinct RPIs per window; what the cap turns away is counted. BlueTrace phones carry no
//! identifier in their adverts: they are counted, and their distinct (rotating) addresses are
//! counted in memory only, as an estimate of devices present. When the gateway reads their
//! TempIDs over GATT (opt-in), each distinct encrypted TempID gets a sighting like an RPI's.

use crate::advert::{Advert, DeviceAddress, ServiceUuid};
use crate::beacon::{Beacon, classify};
use crate::bluetrace::{TempId, TempIdRead};
use crate::crypto::{Aem, Enin, Rpi};
use std::collections::{HashMap, HashSet};

/// Seconds in one ENIN interval.
const INTERVAL_MS: u64 = 600_000;

/// How windows are cut and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregatorConfig {
    /// Window length in ENIN intervals (1 = 10 min).
    pub window_intervals: u32,
    /// Distinct RPIs kept per window; more are dropped and counted.
    pub max_rpis: usize,
    /// BlueTrace service UUIDs of this deployment.
    pub bluetrace_uuids: Vec<ServiceUuid>,
    /// Distinct TempIDs kept per window; more are dropped and counted.
    pub max_tempids: usize,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            window_intervals: 1,
            max_rpis: 50_000,
            bluetrace_uuids: Vec::new(),
            max_tempids: 10_000,
        }
    }
}

/// What happened to the adverts of a window, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every advert received in the window.
    pub adverts: u64,
    /// Well-formed GAEN beacons (reports, not distinct RPIs).
    pub gaen: u64,
    /// 0xFD6F service data that was not a beacon.
    pub malformed: u64,
    /// GAEN reports of new RPIs turned away by the per-window cap.
    pub dropped: u64,
    /// Adverts older than the open window (a capture out of order, a clock step): dropped.
    pub late: u64,
    /// BlueTrace adverts.
    pub bluetrace_adverts: u64,
    /// Distinct BlueTrace device addresses (an estimate of phones: addresses rotate).
    pub bluetrace_devices: u64,
    /// BlueTrace TempIDs read over GATT and kept (reads, not distinct TempIDs). Reads are not
    /// adverts: they are not in `adverts`.
    pub bluetrace_reads: u64,
    /// TempID reads turned away: new TempIDs over the per-window cap, or older than the open
    /// window.
    pub bluetrace_reads_dropped: u64,
    /// Adverts of anything else.
    pub unrelated: u64,
}

impl Counters {
    /// Adds `other`'s counts to these (totals over several windows).
    pub fn add(&mut self, other: &Counters) {
        self.adverts += other.adverts;
        self.gaen += other.gaen;
        self.malformed += other.malformed;
        self.dropped += other.dropped;
        self.late += other.late;
        self.bluetrace_adverts += other.bluetrace_adverts;
        self.bluetrace_devices += other.bluetrace_devices;
        self.bluetrace_reads += other.bluetrace_reads;
        self.bluetrace_reads_dropped += other.bluetrace_reads_dropped;
        self.unrelated += other.unrelated;
    }
}

/// RSSI statistics of one RPI over one minute of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteRssi {
    /// Minute offset from the window start.
    pub minute: u8,
    /// Reports in that minute.
    pub count: u32,
    /// Lowest RSSI, dBm.
    pub min: i8,
    /// Mean RSSI, dBm, rounded to nearest.
    pub mean: i8,
    /// Highest RSSI, dBm.
    pub max: i8,
}

/// One RPI heard in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// The identifier.
    pub rpi: Rpi,
    /// Its metadata, as first heard (a phone does not change it within one RPI).
    pub aem: Aem,
    /// First minute offset heard.
    pub first_minute: u8,
    /// Last minute offset heard.
    pub last_minute: u8,
    /// Reports.
    pub reports: u32,
    /// Per-minute RSSI, by minute, ascending.
    pub minutes: Vec<MinuteRssi>,
}

/// One BlueTrace TempID read in a window (a phone answers every read within the TempID's
/// 15 minutes with the same one, so a phone staying a while is read several times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempIdSighting {
    /// The encrypted TempID, as read.
    pub tempid: TempId,
    /// The organisation code that came with it.
    pub org: String,
    /// First minute offset read.
    pub first_minute: u8,
    /// Last minute offset read.
    pub last_minute: u8,
    /// Reads.
    pub reads: u32,
    /// Per-minute RSSI of the reads, by minute, ascending.
    pub minutes: Vec<MinuteRssi>,
}

/// A closed window: what goes into one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// First ENIN of the window.
    pub start: Enin,
    /// Length in ENIN intervals.
    pub intervals: u32,
    /// Closed before its end (shutdown): it covers less time than its length.
    pub closed_early: bool,
    /// Counters.
    pub counters: Counters,
    /// One entry per distinct RPI, in RPI order (so a batch reveals nothing of arrival order).
    pub sightings: Vec<Sighting>,
    /// One entry per distinct TempID read, in TempID order.
    pub tempids: Vec<TempIdSighting>,
}

impl Window {
    /// A window in which nothing was heard.
    pub fn empty(start: Enin, intervals: u32) -> Self {
        Self {
            start,
            intervals,
            closed_early: false,
            counters: Counters::default(),
            sightings: Vec::new(),
            tempids: Vec::new(),
        }
    }

    /// Window length in minutes.
    pub fn minutes(&self) -> u32 {
        self.intervals * 10
    }
}

/// When and how loud one identifier (RPI or TempID) was heard within a window.
#[derive(Debug)]
struct Heard {
    first_minute: u8,
    last_minute: u8,
    reports: u32,
    /// (minute, count, min, max, sum)
    minutes: Vec<(u8, u32, i8, i8, i32)>,
}

impl Heard {
    fn new(minute: u8, rssi: i8) -> Self {
        Self {
            first_minute: minute,
            last_minute: minute,
            reports: 1,
            minutes: vec![(minute, 1, rssi, rssi, i32::from(rssi))],
        }
    }

    fn hear(&mut self, minute: u8, rssi: i8) {
        self.reports += 1;
        self.first_minute = self.first_minute.min(minute);
        self.last_minute = self.last_minute.max(minute);
        match self.minutes.iter_mut().rev().find(|m| m.0 == minute) {
            Some(m) => {
                m.1 += 1;
                m.2 = m.2.min(rssi);
                m.3 = m.3.max(rssi);
                m.4 += i32::from(rssi);
            }
            None => self.minutes.push((minute, 1, rssi, rssi, i32::from(rssi))),
        }
    }

    /// The per-minute statistics, ascending by minute.
    fn minute_rssi(&self) -> Vec<MinuteRssi> {
        let mut minutes: Vec<MinuteRssi> = self
            .minutes
            .iter()
            .map(|&(minute, count, min, max, sum)| MinuteRssi {
                minute,
                count,
                min,
                max,
                mean: (f64::from(sum) / f64::from(count)).round() as i8,
            })
            .collect();
        minutes.sort_by_key(|m| m.minute);
        minutes
    }
}

#[derive(Debug)]
struct OpenWindow {
    start: Enin,
    start_ms: u64,
    counters: Counters,
    rpis: HashMap<Rpi, (Aem, Heard)>,
    bluetrace: HashSet<DeviceAddress>,
    tempids: HashMap<TempId, (String, Heard)>,
}

/// Aggregates adverts into windows. See the module documentation.
#[derive(Debug)]
pub struct Aggregator {
    config: AggregatorConfig,
    open: Option<OpenWindow>,
}

impl Aggregator {
    /// An aggregator with no window open yet (the first advert or tick opens one).
    pub fn new(config: AggregatorConfig) -> Self {
        assert!(
            config.window_intervals >= 1,
            "window of at least one interval"
        );
        Self { config, open: None }
    }

    fn window_ms(&self) -> u64 {
        INTERVAL_MS * u64::from(self.config.window_intervals)
    }

    /// The window start (ms) containing `time_ms`, aligned to whole windows since the epoch
    /// (so gateways agree on window boundaries).
    fn align(&self, time_ms: u64) -> u64 {
        time_ms - time_ms % self.window_ms()
    }

    fn open_at(&mut self, time_ms: u64) {
        let start_ms = self.align(time_ms);
        self.open = Some(OpenWindow {
            start: Enin((start_ms / INTERVAL_MS) as u32),
            start_ms,
            counters: Counters::default(),
            rpis: HashMap::new(),
            bluetrace: HashSet::new(),
            tempids: HashMap::new(),
        });
    }

    /// Start of the open window, if any.
    pub fn open_window(&self) -> Option<Enin> {
        self.open.as_ref().map(|w| w.start)
    }

    /// Counters of the open window so far.
    pub fn open_counters(&self) -> Option<&Counters> {
        self.open.as_ref().map(|w| &w.counters)
    }

    /// Distinct RPIs in the open window.
    pub fn open_sightings(&self) -> usize {
        self.open.as_ref().map_or(0, |w| w.rpis.len())
    }

    /// Advances time to `now_ms`: closes the open window if it has ended (returned) and opens
    /// the one containing `now_ms`. For a live radio, call it from a timer; for a replay the
    /// adverts' own times advance it (through [`observe`](Self::observe)).
    pub fn tick(&mut self, now_ms: u64) -> Option<Window> {
        let closed = match &self.open {
            Some(w) if now_ms >= w.start_ms + self.window_ms() => self.close(false),
            Some(_) => return None,
            None => None,
        };
        self.open_at(now_ms);
        closed
    }

    /// Takes one advert. If its time is past the open window, that window is closed and
    /// returned first; an advert older than the open window is counted as late and dropped.
    pub fn observe(&mut self, advert: &Advert) -> Option<Window> {
        let closed = self.tick(advert.time_ms);
        if let Some(read) = &advert.tempid_read {
            self.observe_read(advert.time_ms, advert.rssi, read);
            return closed;
        }
        let max_rpis = self.config.max_rpis;
        let beacon = classify(advert, &self.config.bluetrace_uuids);
        let Some(w) = self.open.as_mut() else {
            return closed; // unreachable: tick always leaves a window open
        };
        w.counters.adverts += 1;
        if advert.time_ms < w.start_ms {
            w.counters.late += 1;
            return closed;
        }
        let minute = ((advert.time_ms - w.start_ms) / 60_000) as u8;
        match beacon {
            Beacon::Gaen(b) => {
                w.counters.gaen += 1;
                let at_cap = w.rpis.len() >= max_rpis;
                match w.rpis.get_mut(&b.rpi) {
                    Some((_, heard)) => heard.hear(minute, advert.rssi),
                    None if at_cap => w.counters.dropped += 1,
                    None => {
                        w.rpis
                            .insert(b.rpi, (b.aem, Heard::new(minute, advert.rssi)));
                    }
                }
            }
            Beacon::MalformedGaen(_) => w.counters.malformed += 1,
            Beacon::BlueTrace => {
                w.counters.bluetrace_adverts += 1;
                w.bluetrace.insert(advert.address);
            }
            Beacon::Unrelated => w.counters.unrelated += 1,
        }
        closed
    }

    /// A TempID read (the window is already the one containing `time_ms`, or later).
    fn observe_read(&mut self, time_ms: u64, rssi: i8, read: &TempIdRead) {
        let max_tempids = self.config.max_tempids;
        let Some(w) = self.open.as_mut() else {
            return; // unreachable: tick always leaves a window open
        };
        if time_ms < w.start_ms {
            w.counters.bluetrace_reads_dropped += 1;
            return;
        }
        let minute = ((time_ms - w.start_ms) / 60_000) as u8;
        let at_cap = w.tempids.len() >= max_tempids;
        match w.tempids.get_mut(&read.tempid) {
            Some((_, heard)) => heard.hear(minute, rssi),
            None if at_cap => {
                w.counters.bluetrace_reads_dropped += 1;
                return;
            }
            None => {
                w.tempids
                    .insert(read.tempid, (read.org.clone(), Heard::new(minute, rssi)));
            }
        }
        w.counters.bluetrace_reads += 1;
    }

    /// Closes the open window now, before its end (shutdown), if one is open and heard
    /// anything; an empty window closed early is simply discarded.
    pub fn close_early(&mut self) -> Option<Window> {
        match &self.open {
            Some(w) if w.counters.adverts > 0 || w.counters.bluetrace_reads > 0 => self.close(true),
            _ => {
                self.open = None;
                None
            }
        }
    }

    fn close(&mut self, early: bool) -> Option<Window> {
        let w = self.open.take()?;
        let mut counters = w.counters;
        counters.bluetrace_devices = w.bluetrace.len() as u64;
        let mut sightings: Vec<Sighting> = w
            .rpis
            .into_iter()
            .map(|(rpi, (aem, heard))| Sighting {
                rpi,
                aem,
                first_minute: heard.first_minute,
                last_minute: heard.last_minute,
                reports: heard.reports,
                minutes: heard.minute_rssi(),
            })
            .collect();
        sightings.sort_by_key(|s| s.rpi);
        let mut tempids: Vec<TempIdSighting> = w
            .tempids
            .into_iter()
            .map(|(tempid, (org, heard))| TempIdSighting {
                tempid,
                org,
                first_minute: heard.first_minute,
                last_minute: heard.last_minute,
                reads: heard.reports,
                minutes: heard.minute_rssi(),
            })
            .collect();
        tempids.sort_by_key(|t| t.tempid);
        Some(Window {
            start: w.start,
            intervals: self.config.window_intervals,
            closed_early: early,
            counters,
            sightings,
            tempids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::ServiceUuid;

    const T0: u64 = 2_650_000 * INTERVAL_MS; // an ENIN boundary

    fn gaen(time_ms: u64, rpi: u8, rssi: i8) -> Advert {
        let mut data = vec![rpi; 16];
        data.extend([0xA0, 0xA1, 0xA2, 0xA3]);
        Advert {
            time_ms,
            rssi,
            address: DeviceAddress([rpi; 6]),
            service_data: vec![(ServiceUuid::from_u16(0xFD6F), data)],
            ..Advert::default()
        }
    }

    /// Adverts inside one window are grouped per RPI with minute offsets, report counts and
    /// per-minute RSSI; the window closes when time passes its end, in RPI order.
    #[test]
    fn groups_by_rpi_and_minute() {
        let mut agg = Aggregator::new(AggregatorConfig::default());
        assert!(agg.observe(&gaen(T0 + 5_000, 2, -70)).is_none());
        assert!(agg.observe(&gaen(T0 + 30_000, 2, -60)).is_none());
        assert!(agg.observe(&gaen(T0 + 125_000, 2, -80)).is_none());
        assert!(agg.observe(&gaen(T0 + 599_999, 1, -50)).is_none());
        assert_eq!(agg.open_sightings(), 2);
        let w = agg.tick(T0 + 600_000).expect("window closed at its end");
        assert_eq!(w.start, Enin(2_650_000));
        assert_eq!(w.minutes(), 10);
        assert!(!w.closed_early);
        assert_eq!(w.counters.adverts, 4);
        assert_eq!(w.counters.gaen, 4);
        assert_eq!(w.sightings.len(), 2);
        let s1 = &w.sightings[0];
        assert_eq!(s1.rpi.as_bytes(), &[1; 16]);
        assert_eq!((s1.first_minute, s1.last_minute, s1.reports), (9, 9, 1));
        let s2 = &w.sightings[1];
        assert_eq!((s2.first_minute, s2.last_minute, s2.reports), (0, 2, 3));
        assert_eq!(
            s2.minutes,
            [
                MinuteRssi {
                    minute: 0,
                    count: 2,
                    min: -70,
                    mean: -65,
                    max: -60
                },
                MinuteRssi {
                    minute: 2,
                    count: 1,
                    min: -80,
                    mean: -80,
                    max: -80
                },
            ]
        );
        assert_eq!(s2.aem.as_bytes(), &[0xA0, 0xA1, 0xA2, 0xA3]);
        // The next window is open and empty.
        assert_eq!(agg.open_window(), Some(Enin(2_650_001)));
        assert_eq!(agg.open_sightings(), 0);
    }

    /// A later advert closes the window it leaves; windows of several intervals align to
    /// multiples of their length; late adverts are counted and dropped.
    #[test]
    fn boundaries_alignment_and_late_adverts() {
        let config = AggregatorConfig {
            window_intervals: 3,
            ..AggregatorConfig::default()
        };
        let mut agg = Aggregator::new(config);
        let start = T0 - T0 % (3 * INTERVAL_MS);
        assert!(agg.observe(&gaen(start + 1_000, 1, -60)).is_none());
        assert!(
            agg.observe(&gaen(start + 3 * INTERVAL_MS - 1, 1, -60))
                .is_none()
        );
        let w = agg
            .observe(&gaen(start + 3 * INTERVAL_MS, 2, -60))
            .expect("closed");
        assert_eq!(w.minutes(), 30);
        assert_eq!(w.sightings[0].last_minute, 29);
        assert_eq!(w.counters.adverts, 2);
        assert!(agg.observe(&gaen(start + 5_000, 3, -60)).is_none());
        let w = agg.close_early().expect("closed early");
        assert!(w.closed_early);
        assert_eq!(w.counters.late, 1);
        assert_eq!(w.counters.adverts, 2);
        assert_eq!(w.sightings.len(), 1);
        assert!(agg.close_early().is_none(), "nothing open any more");
    }

    /// The per-window cap keeps the first RPIs, still aggregates them, and counts what it
    /// turned away; malformed, BlueTrace and unrelated adverts are counted, never stored.
    #[test]
    fn cap_and_counters() {
        let bt = ServiceUuid::parse("b82ab3fc-1595-4f6a-80f0-fe094cc218f9").expect("uuid");
        let config = AggregatorConfig {
            max_rpis: 2,
            bluetrace_uuids: vec![bt],
            ..AggregatorConfig::default()
        };
        let mut agg = Aggregator::new(config);
        for rpi in 1..=4 {
            agg.observe(&gaen(T0 + u64::from(rpi), rpi, -60));
        }
        agg.observe(&gaen(T0 + 10, 1, -61));
        let mut malformed = gaen(T0 + 11, 9, -60);
        malformed.service_data[0].1.pop();
        agg.observe(&malformed);
        for device in [1u8, 2, 1] {
            agg.observe(&Advert {
                time_ms: T0 + 12,
                address: DeviceAddress([device; 6]),
                service_uuids: vec![bt],
                ..Advert::default()
            });
        }
        agg.observe(&Advert {
            time_ms: T0 + 13,
            ..Advert::default()
        });
        let w = agg.tick(T0 + INTERVAL_MS).expect("closed");
        assert_eq!(w.sightings.len(), 2);
        assert_eq!(w.sightings[0].reports, 2);
        let c = w.counters;
        assert_eq!(
            (
                c.adverts,
                c.gaen,
                c.dropped,
                c.malformed,
                c.bluetrace_adverts,
                c.bluetrace_devices,
                c.unrelated
            ),
            (10, 5, 2, 1, 3, 2, 1)
        );
    }

    fn read(time_ms: u64, tempid: u8, rssi: i8) -> Advert {
        Advert {
            time_ms,
            rssi,
            tempid_read: Some(TempIdRead {
                tempid: TempId::from_bytes([tempid; TempId::LEN]),
                org: "MAR".into(),
            }),
            ..Advert::default()
        }
    }

    /// TempID reads become one sighting per TempID with per-minute RSSI; they are not counted
    /// as adverts; past the cap and before the window they are dropped and counted; a window
    /// with only reads is still delivered when closed early.
    #[test]
    fn tempid_reads() {
        let mut agg = Aggregator::new(AggregatorConfig {
            max_tempids: 2,
            ..AggregatorConfig::default()
        });
        agg.observe(&gaen(T0 + 1_000, 1, -60));
        agg.observe(&read(T0 + 10_000, 5, -70));
        agg.observe(&read(T0 + 110_000, 5, -66));
        agg.observe(&read(T0 + 130_000, 3, -80));
        agg.observe(&read(T0 + 140_000, 4, -80)); // third distinct: over the cap
        agg.observe(&read(T0 - 1, 3, -80)); // before the window
        let w = agg.tick(T0 + 600_000).expect("closed");
        assert_eq!(w.counters.adverts, 1);
        assert_eq!(w.counters.bluetrace_reads, 3);
        assert_eq!(w.counters.bluetrace_reads_dropped, 2);
        assert_eq!(w.tempids.len(), 2);
        let t5 = &w.tempids[1];
        assert_eq!(t5.tempid, TempId::from_bytes([5; TempId::LEN]));
        assert_eq!(t5.org, "MAR");
        assert_eq!((t5.first_minute, t5.last_minute, t5.reads), (0, 1, 2));
        assert_eq!(t5.minutes.len(), 2);
        assert_eq!((t5.minutes[1].min, t5.minutes[1].max), (-66, -66));

        agg.observe(&read(T0 + 700_000, 5, -70));
        let w = agg
            .close_early()
            .expect("a window with only reads is delivered");
        assert!(w.closed_early);
        assert_eq!(w.tempids.len(), 1);
    }

    /// A window with no advert at all still closes (it tells the authority the gateway was
    /// listening and heard nobody); closing early with nothing heard yields nothing.
    #[test]
    fn empty_windows() {
        let mut agg = Aggregator::new(AggregatorConfig::default());
        assert!(agg.tick(T0).is_none());
        let w = agg.tick(T0 + INTERVAL_MS).expect("empty window closes");
        assert_eq!(w.counters, Counters::default());
        assert!(w.sightings.is_empty());
        assert!(agg.close_early().is_none());
    }
}
