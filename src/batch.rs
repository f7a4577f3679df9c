//! The batch: what a gateway reports for one window, before sealing (schema version 1,
//! `proto/venuetrace_batch.proto`, explained in `docs/batch-schema.md`).
//!
//! Pure: [`Batch::from_window`] builds it from an aggregator window, [`Batch::encode`] gives the
//! protobuf bytes that get sealed, and [`Batch::decode`] turns opened bytes back into a batch,
//! validating every field (the authority's side: a batch may be hostile even when its seal is
//! good, e.g. from a compromised gateway). Sealing is [`crate::seal`]'s job.

use crate::aggregate::{Counters, MinuteRssi, Sighting, TempIdSighting, Window};
use crate::bluetrace::{TempId, valid_org};
use crate::crypto::{Aem, Enin, Rpi};
use prost::Message;
use std::fmt;

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Largest encoded batch accepted (a full window at the 50,000-RPI default cap is ~3 MB).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// A gateway identifier: 1–64 characters of `[A-Za-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct GatewayId(String);

impl GatewayId {
    /// Checks the charset and length.
    pub fn new(id: &str) -> Result<Self, BatchError> {
        if valid_id(id) {
            Ok(Self(id.to_owned()))
        } else {
            Err(BatchError::BadId(id.chars().take(80).collect()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `id` is a valid gateway or venue id: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A batch's identity: gateway id and sequence number, written `GATEWAY:SEQUENCE`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct BatchId {
    /// The gateway that sealed it.
    pub gateway: GatewayId,
    /// Its sequence number at that gateway (from 1).
    pub sequence: u64,
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.gateway, self.sequence)
    }
}

impl std::str::FromStr for BatchId {
    type Err = BatchError;
    fn from_str(s: &str) -> Result<Self, BatchError> {
        let (gateway, sequence) = s
            .rsplit_once(':')
            .ok_or_else(|| BatchError::BadBatchId(s.chars().take(80).collect()))?;
        let sequence = sequence
            .parse()
            .map_err(|_| BatchError::BadBatchId(s.chars().take(80).collect()))?;
        Ok(Self {
            gateway: GatewayId::new(gateway)?,
            sequence,
        })
    }
}

/// A batch, as the gateway built it or the authority decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Who sealed it and its sequence.
    pub id: BatchId,
    /// The venue the gateway is installed at.
    pub venue: String,
    /// First ENIN of the window.
    pub window_start: Enin,
    /// Window length, minutes (multiple of 10).
    pub window_minutes: u32,
    /// Closed before the window's end.
    pub closed_early: bool,
    /// Receiver calibration, dB, added to RSSI by the authority.
    pub rssi_calibration_db: i32,
    /// Counters of the window.
    pub counters: Counters,
    /// One per distinct RPI, sorted by RPI.
    pub sightings: Vec<Sighting>,
    /// One per distinct BlueTrace TempID read, sorted by TempID (empty unless the gateway
    /// collects TempIDs).
    pub tempids: Vec<TempIdSighting>,
}

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Larger than [`MAX_BATCH_BYTES`].
    #[error("batch is {0} bytes, more than the {max} accepted", max = MAX_BATCH_BYTES)]
    TooLarge(usize),
    /// Not protobuf of the batch schema.
    #[error("batch is not a valid protobuf Batch message")]
    Protobuf(#[source] prost::DecodeError),
    /// A schema version this code does not read.
    #[error(
        "batch schema version {0} is not supported (this build reads version {SCHEMA_VERSION})"
    )]
    Version(u32),
    /// A gateway or venue id outside `[A-Za-z0-9._-]{{1,64}}`.
    #[error("id {0:?} is not 1-64 characters of [A-Za-z0-9._-]")]
    BadId(String),
    /// A batch id not of the form `GATEWAY:SEQUENCE`.
    #[error("batch id {0:?} is not GATEWAY:SEQUENCE")]
    BadBatchId(String),
    /// Sequence 0.
    #[error("batch sequence 0 is not valid (sequences start at 1)")]
    ZeroSequence,
    /// Window length not 10..=60 in whole intervals.
    #[error("window of {0} minutes is not 10 to 60 minutes in whole 10-minute intervals")]
    WindowLength(u32),
    /// Calibration outside ±30 dB.
    #[error("RSSI calibration {0} dB is outside -30..=30")]
    Calibration(i32),
    /// A sighting field is out of its range.
    #[error("sighting {index}: {problem}")]
    Sighting {
        /// Position in the batch.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// Sightings are not sorted by RPI, or an RPI appears twice.
    #[error("sightings are not sorted by RPI without duplicates (at {0})")]
    Order(usize),
    /// A TempID sighting field is out of its range.
    #[error("TempID sighting {index}: {problem}")]
    TempId {
        /// Position in the batch.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// TempID sightings are not sorted by TempID, or a TempID appears twice.
    #[error("TempID sightings are not sorted by TempID without duplicates (at {0})")]
    TempIdOrder(usize),
    /// Counters contradict the sightings.
    #[error("counters contradict the sightings: {0}")]
    Counters(String),
}

mod wire {
    //! The prost messages of `proto/venuetrace_batch.proto`.
    #![allow(missing_docs)]

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Batch {
        #[prost(uint32, tag = "1")]
        pub schema_version: u32,
        #[prost(string, tag = "2")]
        pub gateway_id: String,
        #[prost(string, tag = "3")]
        pub venue_id: String,
        #[prost(uint64, tag = "4")]
        pub sequence: u64,
        #[prost(uint32, tag = "5")]
        pub window_start_enin: u32,
        #[prost(uint32, tag = "6")]
        pub window_minutes: u32,
        #[prost(bool, tag = "7")]
        pub closed_early: bool,
        #[prost(sint32, tag = "8")]
        pub rssi_calibration_db: i32,
        #[prost(message, optional, tag = "9")]
        pub counters: Option<Counters>,
        #[prost(message, repeated, tag = "10")]
        pub sightings: Vec<Sighting>,
        #[prost(message, repeated, tag = "11")]
        pub tempids: Vec<TempIdSighting>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Counters {
        #[prost(uint64, tag = "1")]
        pub adverts: u64,
        #[prost(uint64, tag = "2")]
        pub gaen: u64,
        #[prost(uint64, tag = "3")]
        pub malformed: u64,
        #[prost(uint64, tag = "4")]
        pub dropped: u64,
        #[prost(uint64, tag = "5")]
        pub late: u64,
        #[prost(uint64, tag = "6")]
        pub bluetrace_adverts: u64,
        #[prost(uint64, tag = "7")]
        pub bluetrace_devices: u64,
        #[prost(uint64, tag = "8")]
        pub unrelated: u64,
        #[prost(uint64, tag = "9")]
        pub bluetrace_reads: u64,
        #[prost(uint64, tag = "10")]
        pub bluetrace_reads_dropped: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TempIdSighting {
        #[prost(bytes = "vec", tag = "1")]
        pub tempid: Vec<u8>,
        #[prost(string, tag = "2")]
        pub org: String,
        #[prost(uint32, tag = "3")]
        pub first_minute: u32,
        #[prost(uint32, tag = "4")]
        pub last_minute: u32,
        #[prost(uint32, tag = "5")]
        pub reads: u32,
        #[prost(message, repeated, tag = "6")]
        pub minutes: Vec<MinuteRssi>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sighting {
        #[prost(bytes = "vec", tag = "1")]
        pub rpi: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub aem: Vec<u8>,
        #[prost(uint32, tag = "3")]
        pub first_minute: u32,
        #[prost(uint32, tag = "4")]
        pub last_minute: u32,
        #[prost(uint32, tag = "5")]
        pub reports: u32,
        #[prost(message, repeated, tag = "6")]
        pub minutes: Vec<MinuteRssi>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MinuteRssi {
        #[prost(uint32, tag = "1")]
        pub minute: u32,
        #[prost(uint32, tag = "2")]
        pub count: u32,
        #[prost(sint32, tag = "3")]
        pub rssi_min: i32,
        #[prost(sint32, tag = "4")]
        pub rssi_mean: i32,
        #[prost(sint32, tag = "5")]
        pub rssi_max: i32,
    }
}

impl Batch {
    /// The batch for a closed window.
    pub fn from_window(
        gateway: GatewayId,
        sequence: u64,
        venue: &str,
        rssi_calibration_db: i32,
        window: Window,
    ) -> Self {
        Self {
            id: BatchId { gateway, sequence },
            venue: venue.to_owned(),
            window_start: window.start,
            window_minutes: window.minutes(),
            closed_early: window.closed_early,
            rssi_calibration_db,
            counters: window.counters,
            sightings: window.sightings,
            tempids: window.tempids,
        }
    }

    /// Window start, Unix seconds.
    pub fn window_start_unix_s(&self) -> i64 {
        i64::from(self.window_start.0) * 600
    }

    /// The protobuf bytes (what gets sealed).
    pub fn encode(&self) -> Vec<u8> {
        let c = &self.counters;
        wire::Batch {
            schema_version: SCHEMA_VERSION,
            gateway_id: self.id.gateway.as_str().to_owned(),
            venue_id: self.venue.clone(),
            sequence: self.id.sequence,
            window_start_enin: self.window_start.0,
            window_minutes: self.window_minutes,
            closed_early: self.closed_early,
            rssi_calibration_db: self.rssi_calibration_db,
            counters: Some(wire::Counters {
                adverts: c.adverts,
                gaen: c.gaen,
                malformed: c.malformed,
                dropped: c.dropped,
                late: c.late,
                bluetrace_adverts: c.bluetrace_adverts,
                bluetrace_devices: c.bluetrace_devices,
                unrelated: c.unrelated,
                bluetrace_reads: c.bluetrace_reads,
                bluetrace_reads_dropped: c.bluetrace_reads_dropped,
            }),
            sightings: self
                .sightings
                .iter()
                .map(|s| wire::Sighting {
                    rpi: s.rpi.as_bytes().to_vec(),
                    aem: s.aem.as_bytes().to_vec(),
                    first_minute: u32::from(s.first_minute),
                    last_minute: u32::from(s.last_minute),
                    reports: s.reports,
                    minutes: encode_minutes(&s.minutes),
                })
                .collect(),
            tempids: self
                .tempids
                .iter()
                .map(|t| wire::TempIdSighting {
                    tempid: t.tempid.as_bytes().to_vec(),
                    org: t.org.clone(),
                    first_minute: u32::from(t.first_minute),
                    last_minute: u32::from(t.last_minute),
                    reads: t.reads,
                    minutes: encode_minutes(&t.minutes),
                })
                .collect(),
        }
        .encode_to_vec()
    }

    /// Decodes and validates batch bytes: every field in range, sightings sorted and unique,
    /// per-minute counts adding up to the reports, counters consistent with the sightings.
    pub fn decode(bytes: &[u8]) -> Result<Self, BatchError> {
        if bytes.len() > MAX_BATCH_BYTES {
            return Err(BatchError::TooLarge(bytes.len()));
        }
        let w = wire::Batch::decode(bytes).map_err(BatchError::Protobuf)?;
        if w.schema_version != SCHEMA_VERSION {
            return Err(BatchError::Version(w.schema_version));
        }
        let gateway = GatewayId::new(&w.gateway_id)?;
        if !valid_id(&w.venue_id) {
            return Err(BatchError::BadId(w.venue_id.chars().take(80).collect()));
        }
        if w.sequence == 0 {
            return Err(BatchError::ZeroSequence);
        }
        if !(10..=60).contains(&w.window_minutes) || w.window_minutes % 10 != 0 {
            return Err(BatchError::WindowLength(w.window_minutes));
        }
        if !(-30..=30).contains(&w.rssi_calibration_db) {
            return Err(BatchError::Calibration(w.rssi_calibration_db));
        }
        let wc = w.counters.unwrap_or_default();
        let counters = Counters {
            adverts: wc.adverts,
            gaen: wc.gaen,
            malformed: wc.malformed,
            dropped: wc.dropped,
            late: wc.late,
            bluetrace_adverts: wc.bluetrace_adverts,
            bluetrace_devices: wc.bluetrace_devices,
            unrelated: wc.unrelated,
            bluetrace_reads: wc.bluetrace_reads,
            bluetrace_reads_dropped: wc.bluetrace_reads_dropped,
        };
        let mut sightings = Vec::with_capacity(w.sightings.len());
        let mut reports_total = 0u64;
        for (index, s) in w.sightings.into_iter().enumerate() {
            let sighting = decode_sighting(s, w.window_minutes)
                .map_err(|problem| BatchError::Sighting { index, problem })?;
            if let Some(prev) = sightings.last().map(|p: &Sighting| p.rpi)
                && prev >= sighting.rpi
            {
                return Err(BatchError::Order(index));
            }
            reports_total += u64::from(sighting.reports);
            sightings.push(sighting);
        }
        if reports_total > counters.gaen {
            return Err(BatchError::Counters(format!(
                "{reports_total} reports in sightings, but {} GAEN adverts counted",
                counters.gaen
            )));
        }
        let mut tempids = Vec::with_capacity(w.tempids.len());
        let mut reads_total = 0u64;
        for (index, t) in w.tempids.into_iter().enumerate() {
            let sighting = decode_tempid(t, w.window_minutes)
                .map_err(|problem| BatchError::TempId { index, problem })?;
            if let Some(prev) = tempids.last().map(|p: &TempIdSighting| p.tempid)
                && prev >= sighting.tempid
            {
                return Err(BatchError::TempIdOrder(index));
            }
            reads_total += u64::from(sighting.reads);
            tempids.push(sighting);
        }
        if reads_total != counters.bluetrace_reads {
            return Err(BatchError::Counters(format!(
                "{reads_total} reads in TempID sightings, but {} TempID reads counted",
                counters.bluetrace_reads
            )));
        }
        let kinds =
            counters.gaen + counters.malformed + counters.bluetrace_adverts + counters.unrelated;
        if kinds + counters.late != counters.adverts {
            return Err(BatchError::Counters(format!(
                "{} adverts counted, but the kinds and late adverts add up to {}",
                counters.adverts,
                kinds + counters.late
            )));
        }
        Ok(Self {
            id: BatchId {
                gateway,
                sequence: w.sequence,
            },
            venue: w.venue_id,
            window_start: Enin(w.window_start_enin),
            window_minutes: w.window_minutes,
            closed_early: w.closed_early,
            rssi_calibration_db: w.rssi_calibration_db,
            counters,
            sightings,
            tempids,
        })
    }
}

fn decode_sighting(s: wire::Sighting, window_minutes: u32) -> Result<Sighting, String> {
    let rpi = Rpi::from_slice(&s.rpi)
        .ok_or_else(|| format!("RPI is {} bytes, expected 16", s.rpi.len()))?;
    let aem = Aem::from_slice(&s.aem)
        .ok_or_else(|| format!("AEM is {} bytes, expected 4", s.aem.len()))?;
    let minutes = decode_minutes(
        (s.first_minute, s.last_minute),
        s.reports,
        &s.minutes,
        window_minutes,
        "reports",
    )?;
    Ok(Sighting {
        rpi,
        aem,
        first_minute: s.first_minute as u8,
        last_minute: s.last_minute as u8,
        reports: s.reports,
        minutes,
    })
}

fn decode_tempid(t: wire::TempIdSighting, window_minutes: u32) -> Result<TempIdSighting, String> {
    let tempid = TempId::from_slice(&t.tempid).ok_or_else(|| {
        format!(
            "TempID is {} bytes, expected {}",
            t.tempid.len(),
            TempId::LEN
        )
    })?;
    if !valid_org(&t.org) {
        return Err("organisation code is not 1-16 characters of [A-Za-z0-9_]".into());
    }
    let minutes = decode_minutes(
        (t.first_minute, t.last_minute),
        t.reads,
        &t.minutes,
        window_minutes,
        "reads",
    )?;
    Ok(TempIdSighting {
        tempid,
        org: t.org,
        first_minute: t.first_minute as u8,
        last_minute: t.last_minute as u8,
        reads: t.reads,
        minutes,
    })
}

/// Checks one identifier's minutes: inside the window and its first..last range, ascending,
/// RSSI statistics in range and ordered, counts adding up to `total` (`what`: reports/reads).
fn decode_minutes(
    (first, last): (u32, u32),
    total: u32,
    wire_minutes: &[wire::MinuteRssi],
    window_minutes: u32,
    what: &str,
) -> Result<Vec<MinuteRssi>, String> {
    if first > last || last >= window_minutes {
        return Err(format!(
            "minutes {first}..={last} do not fit a {window_minutes}-minute window"
        ));
    }
    if total == 0 || wire_minutes.is_empty() {
        return Err(format!("no {what}"));
    }
    let mut minutes = Vec::with_capacity(wire_minutes.len());
    let mut counted = 0u64;
    for m in wire_minutes {
        let rssi = |v: i32| i8::try_from(v).ok().filter(|r| (-127..=20).contains(r));
        let (Some(min), Some(mean), Some(max)) =
            (rssi(m.rssi_min), rssi(m.rssi_mean), rssi(m.rssi_max))
        else {
            return Err(format!("minute {}: RSSI outside -127..=20 dBm", m.minute));
        };
        if !(min <= mean && mean <= max) || m.count == 0 {
            return Err(format!("minute {}: inconsistent RSSI statistics", m.minute));
        }
        if m.minute < first || m.minute > last {
            return Err(format!(
                "minute {} outside the sighting's first..last minutes",
                m.minute
            ));
        }
        if minutes
            .last()
            .is_some_and(|p: &MinuteRssi| u32::from(p.minute) >= m.minute)
        {
            return Err("per-minute RSSI not in ascending minute order".into());
        }
        counted += u64::from(m.count);
        minutes.push(MinuteRssi {
            minute: m.minute as u8,
            count: m.count,
            min,
            mean,
            max,
        });
    }
    if counted != u64::from(total) {
        return Err(format!(
            "{total} {what}, but per-minute counts add up to {counted}"
        ));
    }
    Ok(minutes)
}

fn encode_minutes(minutes: &[MinuteRssi]) -> Vec<wire::MinuteRssi> {
    minutes
        .iter()
        .map(|m| wire::MinuteRssi {
            minute: u32::from(m.minute),
            count: m.count,
            rssi_min: i32::from(m.min),
            rssi_mean: i32::from(m.mean),
            rssi_max: i32::from(m.max),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::{Advert, ServiceUuid};
    use crate::aggregate::{Aggregator, AggregatorConfig};
    use crate::bluetrace::{TempIdKey, TempIdRead, Uid};

    pub(crate) fn sample_batch() -> Batch {
        let mut agg = Aggregator::new(AggregatorConfig::default());
        let t0 = 2_650_000u64 * 600_000;
        for (i, rpi) in [3u8, 1, 2, 1].into_iter().enumerate() {
            let mut data = vec![rpi; 16];
            data.extend([1, 2, 3, 4]);
            agg.observe(&Advert {
                time_ms: t0 + i as u64 * 70_000,
                rssi: -60 - i as i8,
                service_data: vec![(ServiceUuid::from_u16(0xFD6F), data)],
                ..Advert::default()
            });
        }
        agg.observe(&Advert {
            time_ms: t0 + 1,
            ..Advert::default()
        });
        let key = TempIdKey::new(&[5; 32]);
        for (i, uid) in [9u8, 4, 9].into_iter().enumerate() {
            let tempid = key.encrypt(&Uid::from_bytes([uid; 21]), 0, 900, &[uid; 16]);
            agg.observe(&Advert {
                time_ms: t0 + 60_000 + i as u64 * 100_000,
                rssi: -70,
                tempid_read: Some(TempIdRead {
                    tempid,
                    org: "MAR".into(),
                }),
                ..Advert::default()
            });
        }
        let window = agg.tick(t0 + 600_000).expect("closed");
        Batch::from_window(GatewayId::new("gw-1").expect("id"), 7, "souk-1", -3, window)
    }

    /// encode → decode is the identity, and the id prints as GATEWAY:SEQUENCE.
    #[test]
    fn round_trip() {
        let batch = sample_batch();
        assert_eq!(batch.id.to_string(), "gw-1:7");
        assert_eq!("gw-1:7".parse::<BatchId>().expect("parses"), batch.id);
        let decoded = Batch::decode(&batch.encode()).expect("valid");
        assert_eq!(decoded, batch);
        assert_eq!(decoded.sightings.len(), 3);
        assert_eq!(
            decoded.tempids.len(),
            2,
            "two distinct TempIDs, one read twice"
        );
        assert_eq!(decoded.counters.bluetrace_reads, 3);
        assert_eq!(decoded.counters.adverts, 5, "reads are not adverts");
    }

    /// The reference .proto file and the prost structs agree: every `name = N;` line of the
    /// .proto is a field of the same number in the wire module's source.
    #[test]
    fn proto_file_matches_structs() {
        let proto = include_str!("../proto/venuetrace_batch.proto");
        let source = include_str!("batch.rs");
        let mut fields = 0;
        for line in proto.lines().map(str::trim) {
            let Some((decl, rest)) = line.split_once(" = ") else {
                continue;
            };
            let Some(name) = decl.split_whitespace().last() else {
                continue;
            };
            let Some(number) = rest.split(';').next() else {
                continue;
            };
            if decl.starts_with("syntax") {
                continue;
            }
            let needle = format!("tag = \"{number}\")]\n        pub {name}:");
            assert!(
                source.contains(&needle),
                "field {name} = {number} missing from the structs"
            );
            fields += 1;
        }
        assert_eq!(fields, 38);
    }

    /// Hostile batches are rejected with the reason, never a panic: each field out of range,
    /// truncations, garbage.
    #[test]
    fn rejects_invalid_batches() {
        let good = sample_batch();
        let bytes = good.encode();
        for cut in 0..bytes.len() {
            let _ = Batch::decode(&bytes[..cut]);
        }
        let mut w = wire::Batch::decode(&bytes[..]).expect("decodes");
        let check = |w: &wire::Batch, want: &str| {
            let err = Batch::decode(&w.encode_to_vec())
                .expect_err(want)
                .to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        };
        let orig = w.clone();
        w.schema_version = 2;
        check(&w, "schema version 2");
        w = orig.clone();
        w.gateway_id = "gw 1".into();
        check(&w, "not 1-64 characters");
        w = orig.clone();
        w.sequence = 0;
        check(&w, "sequence 0");
        w = orig.clone();
        w.window_minutes = 15;
        check(&w, "15 minutes");
        w = orig.clone();
        w.sightings[0].rpi.pop();
        check(&w, "sighting 0: RPI is 15 bytes");
        w = orig.clone();
        w.sightings.swap(0, 1);
        check(&w, "not sorted");
        w = orig.clone();
        w.sightings[1].minutes[0].count += 1;
        check(&w, "per-minute counts add up");
        w = orig.clone();
        w.sightings[1].last_minute = 10;
        check(&w, "do not fit");
        w = orig.clone();
        w.counters.as_mut().expect("counters").gaen = 1;
        check(&w, "GAEN adverts counted");
        w = orig.clone();
        w.counters.as_mut().expect("counters").adverts += 1;
        check(&w, "add up to");
        w = orig.clone();
        w.tempids[0].tempid.pop();
        check(&w, "TempID sighting 0: TempID is 60 bytes");
        w = orig.clone();
        w.tempids[1].org = "M A R".into();
        check(&w, "TempID sighting 1: organisation code");
        w = orig.clone();
        w.tempids.swap(0, 1);
        check(&w, "TempID sightings are not sorted");
        w = orig.clone();
        w.tempids[1].reads += 1;
        check(&w, "per-minute counts add up");
        w = orig.clone();
        w.counters.as_mut().expect("counters").bluetrace_reads += 1;
        check(&w, "TempID reads counted");
        w = orig;
        w.tempids[0].minutes[0].rssi_max = 40;
        check(&w, "RSSI outside");
        assert!(matches!(
            Batch::decode(&[0xFF; 40]),
            Err(BatchError::Protobuf(_))
        ));
    }
}
