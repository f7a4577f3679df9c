//! HCI events that carry LE advertising reports, as a controller sends them to the host and a
//! capture (btsnoop, see [`crate::btsnoop`]) records them: decoding them into [`Advert`]
//! values, and encoding them (for the simulator, fixtures, tests and benchmarks).
//!
//! Pure: bytes in, adverts or a typed error out; no I/O, no clock (the caller passes the time
//! the event was received). What the advertising data *means* is [`crate::advert`]'s and
//! [`crate::beacon`]'s job; which file or socket the bytes came from is the caller's.
//!
//! Events handled (Bluetooth Core Specification, Vol 4 Part E): the LE Meta event (0x3E) with
//! subevent 0x02, LE Advertising Report (§7.7.65.2), and 0x0D, LE Extended Advertising Report
//! (§7.7.65.13). Every other event is [`EventKind::Other`]: ignored, not an error.
//!
//! # Layout of events with several reports
//!
//! Both events may carry several reports (`Num_Reports`, 1 to 25 for legacy reports). The
//! parameter tables of §7.7.65.2 list every field with an `[i]` suffix, and the Core 4.x text
//! has been read two ways: "arrays" (all `Event_Type`s, then all `Address_Type`s, ..., then all
//! `RSSI`s; some vendor examples, e.g. Espressif's, parse it so) or "one report after the
//! other" (`Event_Type[0]`, `Address_Type[0]`, `Address[0]`, `Data_Length[0]`, `Data[0]`,
//! `RSSI[0]`, then report 1). The general rule for array parameters in Vol 4 Part E §5.2 of
//! Core 5.x is quoted (linux-bluetooth list, libpax issue #32) as grouping the fields of one
//! index together, i.e. the second reading; we could not read the specification text itself.
//! What settles it in practice is that hosts parse the per-report layout, so controllers that
//! work with them send it:
//!
//! - the Linux kernel (`hci_le_adv_report_evt` advances `sizeof(info) + length + 1` per report);
//! - BlueZ's btmon (`monitor/packet.c`: `le_adv_report_evt` steps `data_len + 1` past each
//!   report's fixed fields, and `le_ext_adv_report_evt` likewise);
//! - Apache NimBLE (`struct adv_report reports[]` with the RSSI after each report's data; its
//!   2017 change MYNEWT-738, "Fix parameter arrays", corrected its reading of array parameters
//!   in advertising reports);
//! - Nordic's SoftDevice Controller headers (`reports[]` of per-report structs) and scapy.
//!
//! A controller sending the array layout would be misread by Linux itself. So we implement the
//! per-report layout only: an array-layout event with several reports almost always fails the
//! framing checks (a test shows one) and is counted as malformed. With one report, what nearly
//! every controller sends, both readings are the same bytes.
//!
//! # Throughput
//!
//! [`parse_event`] appends to a caller-owned `Vec`: reuse it across events and the only
//! allocations are each advert's own UUID, service data and manufacturer data vectors. The
//! encoders make input events (for the simulator, fixtures and benchmarks):
//!
//! ```
//! use venuetrace::advert::DeviceAddress;
//! use venuetrace::hci::{EventKind, Report, encode_advertising_report, parse_event};
//!
//! // A GAEN advert's data: the 0xFD6F UUID list, then 0xFD6F service data (RPI ‖ AEM).
//! let mut ad = vec![0x03, 0x03, 0x6F, 0xFD, 0x17, 0x16, 0x6F, 0xFD];
//! ad.extend([0xA5; 20]);
//! let report = Report::nonconnectable(DeviceAddress([1; 6]), -60, &ad);
//! let event = encode_advertising_report(&[report])?;
//!
//! let mut adverts = Vec::with_capacity(64);
//! for time_ms in 0..1000 {
//!     adverts.clear();
//!     let kind = parse_event(&event, time_ms, &mut adverts)?;
//!     assert!(matches!(kind, EventKind::AdvertisingReports(c) if c.adverts == 1));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Device addresses
//!
//! On the wire an address is 6 bytes, least significant first. [`DeviceAddress`] holds it in
//! display order (most significant byte first, as `aa:bb:cc:dd:ee:ff` prints), so the decoder
//! reverses it. It stays in memory (DESIGN.md §3 rule 1): no error or log line here carries an
//! address or payload byte.

use crate::advert::{Advert, DeviceAddress, parse_ad};

/// Event code of the LE Meta event.
pub const EVENT_LE_META: u8 = 0x3E;
/// LE Meta subevent: LE Advertising Report (legacy advertising PDUs).
pub const SUBEVENT_ADVERTISING_REPORT: u8 = 0x02;
/// LE Meta subevent: LE Extended Advertising Report.
pub const SUBEVENT_EXTENDED_ADVERTISING_REPORT: u8 = 0x0D;
/// RSSI value meaning "not available" in both report events.
pub const RSSI_UNAVAILABLE: i8 = 127;
/// Largest advertising data of a legacy report (a legacy PDU carries at most 31 bytes).
pub const LEGACY_MAX_DATA_LEN: usize = 31;
/// Bytes of one legacy report besides its data (type, address type, address, length, RSSI).
pub const LEGACY_REPORT_FIXED_LEN: usize = 10;
/// Bytes of one extended report before its data.
pub const EXTENDED_REPORT_FIXED_LEN: usize = 24;
/// Extended report event type bit: the report is of a legacy advertising PDU.
pub const EXT_EVENT_TYPE_LEGACY: u16 = 1 << 4;
/// Extended report event type bits 5–6: data status (0 = complete).
pub const EXT_EVENT_TYPE_DATA_STATUS_MASK: u16 = 0b11 << 5;

/// What one advertising report event held, report by report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportCounts {
    /// Reports in the event (`Num_Reports`).
    pub reports: usize,
    /// Adverts appended to the output.
    pub adverts: usize,
    /// Reports skipped because their RSSI was 127, "not available".
    pub rssi_unavailable: usize,
    /// Reports skipped because their advertising data is not well-formed AD structures.
    pub bad_ad_data: usize,
    /// Extended reports skipped because the controller marked their data incomplete (a
    /// fragment with more to come, or truncated). GAEN adverts are legacy PDUs and always
    /// complete; reassembling long extended adverts across events is not done here.
    pub incomplete_data: usize,
}

/// What kind of event [`parse_event`] was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An LE (Extended) Advertising Report event; its adverts were appended to the output.
    AdvertisingReports(ReportCounts),
    /// Any other event: nothing appended.
    Other,
}

/// Why an HCI event could not be decoded. Offsets count from the event code (byte 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HciError {
    /// The packet is shorter than the event header (event code, parameter length).
    #[error("HCI event is {len} bytes, shorter than its 2-byte header")]
    ShortHeader {
        /// The packet's length.
        len: usize,
    },
    /// The header's parameter length disagrees with the bytes that follow it.
    #[error("HCI event {event_code:#04x} declares {declared} parameter bytes but carries {actual}")]
    LengthMismatch {
        /// The event code.
        event_code: u8,
        /// The parameter length in the header.
        declared: usize,
        /// The bytes after the header.
        actual: usize,
    },
    /// A field runs past the end of the event.
    #[error(
        "LE advertising report event: {field} at byte {offset} needs {needed} bytes, the event \
         ends at byte {len}"
    )]
    Truncated {
        /// The field, as the specification names it.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// Its size.
        needed: usize,
        /// The packet's length.
        len: usize,
    },
    /// A legacy report claims more advertising data than a legacy PDU can carry.
    #[error(
        "LE advertising report {report} at byte {offset} has Data_Length {len}, over the \
         31-byte maximum of a legacy PDU"
    )]
    DataTooLong {
        /// The report's index in the event.
        report: usize,
        /// Offset of its `Data_Length` byte.
        offset: usize,
        /// The claimed length.
        len: usize,
    },
    /// Bytes are left over after the last report.
    #[error(
        "LE advertising report event has {count} bytes after its last report, at byte {offset}"
    )]
    TrailingBytes {
        /// Where the leftover bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
}

/// A bounds-checked reader over one event, naming the field and offset of any overrun.
struct Fields<'a> {
    packet: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn take(&mut self, needed: usize, field: &'static str) -> Result<&'a [u8], HciError> {
        let end = self.pos.checked_add(needed);
        match end.and_then(|end| self.packet.get(self.pos..end)) {
            Some(bytes) => {
                self.pos += needed;
                Ok(bytes)
            }
            None => Err(HciError::Truncated {
                field,
                offset: self.pos,
                needed,
                len: self.packet.len(),
            }),
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, HciError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, HciError> {
        let b = self.take(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn address(&mut self, field: &'static str) -> Result<DeviceAddress, HciError> {
        let b = self.take(6, field)?;
        Ok(DeviceAddress([b[5], b[4], b[3], b[2], b[1], b[0]]))
    }
}

/// Decodes one HCI event packet (`event code ‖ parameter length ‖ parameters`, without the
/// H4 packet-type byte) received at `time_ms` (Unix milliseconds). For an LE (Extended)
/// Advertising Report event, appends one [`Advert`] per usable report to `out`, in the
/// event's order, and says what was skipped; any other event is [`EventKind::Other`].
///
/// All or nothing: on error, `out` is left as it was. Never panics, whatever the bytes. Adds
/// no allocation of its own beyond the adverts' fields (reuse `out` across calls).
pub fn parse_event(
    packet: &[u8],
    time_ms: u64,
    out: &mut Vec<Advert>,
) -> Result<EventKind, HciError> {
    let start = out.len();
    let result = parse_event_inner(packet, time_ms, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn parse_event_inner(
    packet: &[u8],
    time_ms: u64,
    out: &mut Vec<Advert>,
) -> Result<EventKind, HciError> {
    let [event_code, declared, params @ ..] = packet else {
        return Err(HciError::ShortHeader { len: packet.len() });
    };
    if params.len() != usize::from(*declared) {
        return Err(HciError::LengthMismatch {
            event_code: *event_code,
            declared: usize::from(*declared),
            actual: params.len(),
        });
    }
    if *event_code != EVENT_LE_META {
        return Ok(EventKind::Other);
    }
    let mut fields = Fields { packet, pos: 2 };
    let extended = match fields.u8("Subevent_Code")? {
        SUBEVENT_ADVERTISING_REPORT => false,
        SUBEVENT_EXTENDED_ADVERTISING_REPORT => true,
        _ => return Ok(EventKind::Other),
    };
    let reports = usize::from(fields.u8("Num_Reports")?);
    let mut counts = ReportCounts {
        reports,
        ..ReportCounts::default()
    };
    for report in 0..reports {
        // Per-report layout: see the module documentation.
        let (event_type, address, rssi, data) = if extended {
            let event_type = fields.u16("Event_Type")?;
            fields.u8("Address_Type")?;
            let address = fields.address("Address")?;
            // Primary_PHY, Secondary_PHY, Advertising_SID, TX_Power.
            fields.take(4, "Primary_PHY..TX_Power")?;
            let rssi = fields.u8("RSSI")? as i8;
            fields.u16("Periodic_Advertising_Interval")?;
            fields.u8("Direct_Address_Type")?;
            fields.address("Direct_Address")?;
            let len = usize::from(fields.u8("Data_Length")?);
            let data = fields.take(len, "Data")?;
            (event_type, address, rssi, data)
        } else {
            let event_type = u16::from(fields.u8("Event_Type")?);
            fields.u8("Address_Type")?;
            let address = fields.address("Address")?;
            let len_offset = fields.pos;
            let len = usize::from(fields.u8("Data_Length")?);
            if len > LEGACY_MAX_DATA_LEN {
                return Err(HciError::DataTooLong {
                    report,
                    offset: len_offset,
                    len,
                });
            }
            let data = fields.take(len, "Data")?;
            let rssi = fields.u8("RSSI")? as i8;
            (event_type, address, rssi, data)
        };
        if extended && event_type & EXT_EVENT_TYPE_DATA_STATUS_MASK != 0 {
            counts.incomplete_data += 1;
            continue;
        }
        if rssi == RSSI_UNAVAILABLE {
            counts.rssi_unavailable += 1;
            continue;
        }
        let mut advert = Advert {
            time_ms,
            address,
            rssi,
            ..Advert::default()
        };
        match parse_ad(data, &mut advert) {
            Ok(()) => {
                out.push(advert);
                counts.adverts += 1;
            }
            Err(_) => counts.bad_ad_data += 1,
        }
    }
    if fields.pos != packet.len() {
        return Err(HciError::TrailingBytes {
            offset: fields.pos,
            count: packet.len() - fields.pos,
        });
    }
    Ok(EventKind::AdvertisingReports(counts))
}

/// Legacy report event types (§7.7.65.2).
pub mod legacy_event_type {
    /// Connectable and scannable undirected advertising (ADV_IND).
    pub const ADV_IND: u8 = 0x00;
    /// Connectable directed advertising (ADV_DIRECT_IND).
    pub const ADV_DIRECT_IND: u8 = 0x01;
    /// Scannable undirected advertising (ADV_SCAN_IND).
    pub const ADV_SCAN_IND: u8 = 0x02;
    /// Non-connectable undirected advertising (ADV_NONCONN_IND): what GAEN phones send.
    pub const ADV_NONCONN_IND: u8 = 0x03;
    /// Scan response (SCAN_RSP).
    pub const SCAN_RSP: u8 = 0x04;
}

/// One report to encode into an event: for the simulator, fixtures, tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report<'a> {
    /// Event type: a [`legacy_event_type`] for legacy events, the 16-bit field of extended ones.
    pub event_type: u16,
    /// Address type (0 public, 1 random, ...).
    pub address_type: u8,
    /// The advertiser's address, display order (reversed on the wire).
    pub address: DeviceAddress,
    /// RSSI, dBm ([`RSSI_UNAVAILABLE`] for "not available").
    pub rssi: i8,
    /// The advertising data (AD structures), e.g. from [`crate::advert::build_ad`].
    pub data: &'a [u8],
}

impl<'a> Report<'a> {
    /// A non-connectable undirected advert from a random address, as GAEN phones send:
    /// event type ADV_NONCONN_IND for legacy events; for extended events use
    /// [`Report::extended_legacy`].
    pub fn nonconnectable(address: DeviceAddress, rssi: i8, data: &'a [u8]) -> Self {
        Self {
            event_type: u16::from(legacy_event_type::ADV_NONCONN_IND),
            address_type: 1,
            address,
            rssi,
            data,
        }
    }

    /// The same advert as reported in an extended event: a legacy ADV_NONCONN_IND PDU is
    /// event type 0b0010000 (legacy bit, complete data).
    pub fn extended_legacy(self) -> Self {
        Self {
            event_type: EXT_EVENT_TYPE_LEGACY,
            ..self
        }
    }
}

/// Why reports cannot be encoded into one event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The parameters would exceed the 255 bytes an event can carry.
    #[error(
        "{reports} advertising reports need {len} parameter bytes, over the 255 an HCI \
         event carries"
    )]
    TooLong {
        /// Reports given.
        reports: usize,
        /// Parameter bytes they need.
        len: usize,
    },
    /// A legacy report has more than 31 data bytes or an event type over 8 bits.
    #[error(
        "legacy advertising report {report} does not fit a legacy event (data {len} bytes, \
         event type {event_type:#06x})"
    )]
    NotLegacy {
        /// The report's index.
        report: usize,
        /// Its data length.
        len: usize,
        /// Its event type.
        event_type: u16,
    },
}

fn finish_event(subevent: u8, reports: usize, params: Vec<u8>) -> Result<Vec<u8>, EncodeError> {
    let len = params.len() - 2;
    let declared = u8::try_from(len).map_err(|_| EncodeError::TooLong { reports, len })?;
    let mut event = params;
    event[0] = EVENT_LE_META;
    event[1] = declared;
    debug_assert_eq!(event[2], subevent);
    Ok(event)
}

/// Encodes an LE Advertising Report event (with its 2-byte header, without an H4 type byte).
pub fn encode_advertising_report(reports: &[Report<'_>]) -> Result<Vec<u8>, EncodeError> {
    // More than 255 reports cannot fit 255 bytes: `finish_event` refuses the length.
    let count = reports.len().min(255) as u8;
    let mut event = vec![0, 0, SUBEVENT_ADVERTISING_REPORT, count];
    for (i, r) in reports.iter().enumerate() {
        let (Ok(event_type), Ok(len)) = (u8::try_from(r.event_type), u8::try_from(r.data.len()))
        else {
            return Err(EncodeError::NotLegacy {
                report: i,
                len: r.data.len(),
                event_type: r.event_type,
            });
        };
        if usize::from(len) > LEGACY_MAX_DATA_LEN {
            return Err(EncodeError::NotLegacy {
                report: i,
                len: r.data.len(),
                event_type: r.event_type,
            });
        }
        event.extend_from_slice(&[event_type, r.address_type]);
        event.extend(r.address.0.iter().rev());
        event.push(len);
        event.extend_from_slice(r.data);
        event.push(r.rssi as u8);
    }
    finish_event(SUBEVENT_ADVERTISING_REPORT, reports.len(), event)
}

/// Encodes an LE Extended Advertising Report event. The fields this crate does not read are
/// fixed: primary PHY LE 1M, no secondary PHY, no SID (0xFF), TX power not available (127),
/// no periodic advertising, no direct address.
pub fn encode_extended_advertising_report(reports: &[Report<'_>]) -> Result<Vec<u8>, EncodeError> {
    let too_long = || EncodeError::TooLong {
        reports: reports.len(),
        len: 2 + reports
            .iter()
            .map(|r| EXTENDED_REPORT_FIXED_LEN + r.data.len())
            .sum::<usize>(),
    };
    // More than 255 reports cannot fit 255 bytes: `finish_event` refuses the length.
    let count = reports.len().min(255) as u8;
    let mut event = vec![0, 0, SUBEVENT_EXTENDED_ADVERTISING_REPORT, count];
    for r in reports {
        let len = u8::try_from(r.data.len()).map_err(|_| too_long())?;
        event.extend_from_slice(&r.event_type.to_le_bytes());
        event.push(r.address_type);
        event.extend(r.address.0.iter().rev());
        // Primary PHY LE 1M, no secondary PHY, no SID, TX power n/a, RSSI.
        event.extend_from_slice(&[0x01, 0x00, 0xFF, 0x7F, r.rssi as u8]);
        // No periodic advertising, direct address type and address.
        event.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0]);
        event.push(len);
        event.extend_from_slice(r.data);
    }
    finish_event(SUBEVENT_EXTENDED_ADVERTISING_REPORT, reports.len(), event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::{ServiceUuid, build_ad};

    const GAEN: ServiceUuid = ServiceUuid::from_u16(0xFD6F);

    /// The AD data of a GAEN advert as phones send it: flags, the 0xFD6F 16-bit UUID list,
    /// 0xFD6F service data of 20 bytes (RPI ‖ AEM).
    fn gaen_ad(fill: u8) -> Vec<u8> {
        let mut data = vec![
            0x02, 0x01, 0x1A, 0x03, 0x03, 0x6F, 0xFD, 0x17, 0x16, 0x6F, 0xFD,
        ];
        data.extend(std::iter::repeat_n(fill, 20));
        data
    }

    fn addr(last: u8) -> DeviceAddress {
        DeviceAddress([0xC0, 0x11, 0x22, 0x33, 0x44, last])
    }

    fn parse(packet: &[u8]) -> Result<(EventKind, Vec<Advert>), HciError> {
        let mut out = Vec::new();
        parse_event(packet, 1_700_000_000_000, &mut out).map(|k| (k, out))
    }

    fn counts(kind: EventKind) -> ReportCounts {
        match kind {
            EventKind::AdvertisingReports(c) => c,
            EventKind::Other => panic!("expected an advertising report event"),
        }
    }

    /// A single-report legacy event, written out byte by byte as a controller sends it,
    /// decodes to one advert: address reversed into display order, RSSI, GAEN service data.
    #[test]
    fn decodes_a_handwritten_gaen_report() {
        let ad = gaen_ad(0xAB);
        let mut packet = vec![0x3E, 0, 0x02, 0x01, 0x03, 0x01, 6, 5, 4, 3, 2, 1];
        packet.push(ad.len() as u8);
        packet.extend_from_slice(&ad);
        packet.push((-67i8) as u8);
        packet[1] = (packet.len() - 2) as u8;
        let (kind, adverts) = parse(&packet).expect("valid event");
        assert_eq!(
            counts(kind),
            ReportCounts {
                reports: 1,
                adverts: 1,
                ..ReportCounts::default()
            }
        );
        let advert = &adverts[0];
        assert_eq!(advert.time_ms, 1_700_000_000_000);
        assert_eq!(advert.address, DeviceAddress([1, 2, 3, 4, 5, 6]));
        assert_eq!(advert.rssi, -67);
        assert_eq!(advert.service_uuids, [GAEN]);
        assert_eq!(advert.service_data_for(GAEN), Some(&[0xAB; 20][..]));
        // Flags are not kept: there is nothing else.
        assert_eq!(advert.manufacturer_data, []);
        assert_eq!(advert.tx_power, None);
    }

    /// Several reports in one legacy event are laid out report after report, and all of
    /// them are returned in order; the encoder and decoder agree.
    #[test]
    fn decodes_multiple_legacy_reports_in_order() {
        let gaen = gaen_ad(1);
        let other = build_ad(&Advert {
            manufacturer_data: vec![(0x004C, vec![0x10, 0x05, 0x01])],
            tx_power: Some(-4),
            ..Advert::default()
        });
        let event = encode_advertising_report(&[
            Report::nonconnectable(addr(1), -50, &gaen),
            Report::nonconnectable(addr(2), -70, &other),
            Report::nonconnectable(addr(3), -90, &[]),
        ])
        .expect("fits");
        // Per-report layout: report 1's event type follows report 0's RSSI.
        let first_rssi = 4 + 9 + gaen.len();
        assert_eq!(event[first_rssi] as i8, -50);
        assert_eq!(event[first_rssi + 1], legacy_event_type::ADV_NONCONN_IND);
        let (kind, adverts) = parse(&event).expect("valid event");
        assert_eq!(counts(kind).adverts, 3);
        let rssis: Vec<i8> = adverts.iter().map(|a| a.rssi).collect();
        assert_eq!(rssis, [-50, -70, -90]);
        assert_eq!(adverts[0].address, addr(1));
        assert_eq!(adverts[1].address, addr(2));
        assert_eq!(
            adverts[1].manufacturer_data,
            [(0x004C, vec![0x10, 0x05, 0x01])]
        );
        assert_eq!(adverts[1].tx_power, Some(-4));
        assert_eq!(
            adverts[2],
            Advert {
                time_ms: 1_700_000_000_000,
                address: addr(3),
                rssi: -90,
                ..Advert::default()
            }
        );
    }

    /// Extended reports (including a legacy PDU reported through the extended event, as
    /// controllers do when extended scanning is on) decode like legacy ones.
    #[test]
    fn decodes_extended_reports() {
        let gaen = gaen_ad(7);
        let long: Vec<u8> = {
            // A 60-byte manufacturer data structure: only possible in extended advertising.
            let mut d = vec![61, 0xFF, 0xFF, 0x03];
            d.extend(0..58u8);
            d
        };
        let event = encode_extended_advertising_report(&[
            Report::nonconnectable(addr(9), -61, &gaen).extended_legacy(),
            Report {
                event_type: 0x0000,
                ..Report::nonconnectable(addr(8), -80, &long)
            },
        ])
        .expect("fits");
        assert_eq!(event[2], SUBEVENT_EXTENDED_ADVERTISING_REPORT);
        let (kind, adverts) = parse(&event).expect("valid event");
        assert_eq!(counts(kind).adverts, 2);
        assert_eq!(adverts[0].address, addr(9));
        assert_eq!(adverts[0].rssi, -61);
        assert_eq!(adverts[0].service_data_for(GAEN), Some(&[7; 20][..]));
        assert_eq!(adverts[1].manufacturer_data[0].0, 0x03FF);
        assert_eq!(adverts[1].manufacturer_data[0].1.len(), 58);
    }

    /// Reports with RSSI 127 ("not available"), malformed AD data, or (extended) incomplete
    /// data are skipped and counted; the other reports of the event are kept.
    #[test]
    fn skips_and_counts_unusable_reports() {
        let gaen = gaen_ad(2);
        let bad_ad = [0x05, 0x16, 0x6F];
        let event = encode_advertising_report(&[
            Report::nonconnectable(addr(1), RSSI_UNAVAILABLE, &gaen),
            Report::nonconnectable(addr(2), -40, &bad_ad),
            Report::nonconnectable(addr(3), -41, &gaen),
        ])
        .expect("fits");
        let (kind, adverts) = parse(&event).expect("framing is valid");
        assert_eq!(
            counts(kind),
            ReportCounts {
                reports: 3,
                adverts: 1,
                rssi_unavailable: 1,
                bad_ad_data: 1,
                incomplete_data: 0,
            }
        );
        assert_eq!(adverts[0].address, addr(3));

        let fragment = Report {
            event_type: 0b01 << 5,
            ..Report::nonconnectable(addr(4), -50, &gaen)
        };
        let truncated = Report {
            event_type: 0b10 << 5,
            ..fragment
        };
        let event = encode_extended_advertising_report(&[fragment, truncated]).expect("fits");
        let (kind, adverts) = parse(&event).expect("framing is valid");
        assert_eq!(counts(kind).incomplete_data, 2);
        assert!(adverts.is_empty());
    }

    /// Events other than advertising reports (a Command Complete, other LE subevents) are
    /// `Other`, not errors, and append nothing.
    #[test]
    fn other_events_are_ignored() {
        // Command Complete for LE Set Scan Enable, status success.
        assert_eq!(
            parse(&[0x0E, 0x04, 0x01, 0x0C, 0x20, 0x00]).expect("valid"),
            (EventKind::Other, vec![])
        );
        // LE Connection Complete (subevent 0x01), contents irrelevant.
        let mut conn = vec![0x3E, 19, 0x01];
        conn.extend([0; 18]);
        assert_eq!(parse(&conn).expect("valid"), (EventKind::Other, vec![]));
    }

    /// Every truncation of every valid event is an error (never a panic), and a failed
    /// event leaves the output untouched.
    #[test]
    fn every_truncation_is_an_error() {
        let gaen = gaen_ad(3);
        let events = [
            encode_advertising_report(&[Report::nonconnectable(addr(1), -50, &gaen)]),
            encode_advertising_report(&[
                Report::nonconnectable(addr(1), -50, &gaen),
                Report::nonconnectable(addr(2), -51, &gaen[..7]),
            ]),
            encode_extended_advertising_report(&[
                Report::nonconnectable(addr(1), -50, &gaen).extended_legacy(),
                Report::nonconnectable(addr(2), -51, &[]).extended_legacy(),
            ]),
        ];
        for event in events {
            let event = event.expect("fits");
            parse(&event).expect("the whole event is valid");
            for cut in 0..event.len() {
                let mut out = vec![Advert::default()];
                let err = parse_event(&event[..cut], 0, &mut out);
                assert!(err.is_err(), "cut at {cut} of {} was accepted", event.len());
                assert_eq!(out, [Advert::default()]);
                // And with the header patched to match the cut, the reports themselves are
                // found truncated, again as an error.
                if cut >= 3 {
                    let mut patched = event[..cut].to_vec();
                    patched[1] = (cut - 2) as u8;
                    assert!(
                        parse_event(&patched, 0, &mut out).is_err(),
                        "patched cut {cut}"
                    );
                    assert_eq!(out, [Advert::default()]);
                }
            }
        }
    }

    /// Errors name the problem and where it is.
    #[test]
    fn errors_name_field_and_offset() {
        assert_eq!(parse(&[0x3E]), Err(HciError::ShortHeader { len: 1 }));
        assert_eq!(
            parse(&[0x3E, 5, 0x02]),
            Err(HciError::LengthMismatch {
                event_code: 0x3E,
                declared: 5,
                actual: 1
            })
        );
        assert_eq!(
            parse(&[0x3E, 3, 0x02, 1, 0x03]),
            Err(HciError::Truncated {
                field: "Address_Type",
                offset: 5,
                needed: 1,
                len: 5
            })
        );
        let mut long = vec![0x3E, 0, 0x02, 1, 0x03, 0x01, 1, 2, 3, 4, 5, 6, 32];
        long.extend([0; 33]);
        long[1] = (long.len() - 2) as u8;
        assert_eq!(
            parse(&long),
            Err(HciError::DataTooLong {
                report: 0,
                offset: 12,
                len: 32
            })
        );
        let mut trailing =
            encode_advertising_report(&[Report::nonconnectable(addr(1), -5, &[])]).expect("fits");
        trailing.push(0);
        trailing[1] += 1;
        assert_eq!(
            parse(&trailing),
            Err(HciError::TrailingBytes {
                offset: 14,
                count: 1
            })
        );
        let msg = HciError::Truncated {
            field: "Data",
            offset: 13,
            needed: 31,
            len: 20,
        }
        .to_string();
        assert!(msg.contains("Data at byte 13"), "{msg}");
    }

    /// The array layout some read into the Core 4.x text (all event types, then all address
    /// types, ...) is not accepted for two reports: the per-report reading fails on it.
    #[test]
    fn array_layout_is_rejected() {
        let d0 = gaen_ad(1);
        let d1 = [0x02, 0x01, 0x06];
        let mut p = vec![0x3E, 0, 0x02, 2];
        p.extend([0x03, 0x03]); // event types
        p.extend([0x01, 0x01]); // address types
        p.extend([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]); // addresses
        p.extend([d0.len() as u8, d1.len() as u8]); // lengths
        p.extend_from_slice(&d0);
        p.extend_from_slice(&d1);
        p.extend([(-50i8) as u8, (-60i8) as u8]); // RSSIs
        p[1] = (p.len() - 2) as u8;
        assert!(parse(&p).is_err());
    }

    /// Arbitrary bytes never panic, and the all-or-nothing contract holds.
    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 4 {
                p[0] = EVENT_LE_META;
                p[1] = (len - 2) as u8;
                p[2] = if next() % 2 == 0 { 0x02 } else { 0x0D };
                p[3] = (next() % 4) as u8;
            }
            let mut out = Vec::new();
            if parse_event(&p, 0, &mut out).is_err() {
                assert!(out.is_empty());
            }
        }
    }

    /// Encoding refuses what an event cannot carry.
    #[test]
    fn encoder_limits() {
        let big = [0u8; 32];
        assert!(matches!(
            encode_advertising_report(&[Report::nonconnectable(addr(1), -1, &big)]),
            Err(EncodeError::NotLegacy {
                report: 0,
                len: 32,
                ..
            })
        ));
        let data = [0u8; 200];
        let r = Report::nonconnectable(addr(1), -1, &data);
        assert!(matches!(
            encode_extended_advertising_report(&[r, r]),
            Err(EncodeError::TooLong { reports: 2, .. })
        ));
    }
}
