//! One received BLE advertisement, whatever produced it (BlueZ, a replayed capture, the
//! simulator): the value every gateway source sends down the same channel, and the parser of
//! the advertising-data (AD) structures that carry its contents.
//!
//! Pure. Deciding what an advert *is* (a GAEN beacon, a BlueTrace phone, something else) is
//! [`crate::beacon`]'s job; counting and aggregating it is [`crate::aggregate`]'s.
//!
//! The device address lives here only so that in-memory state (e.g. counting distinct
//! BlueTrace devices in a window) can key on it; it never reaches a batch, a file or a log
//! (DESIGN.md §3 rule 1), and its `Debug` output is redacted.

use std::fmt;

/// A Bluetooth service UUID in its 128-bit form; 16- and 32-bit UUIDs are expanded onto the
/// Bluetooth base UUID `0000xxxx-0000-1000-8000-00805f9b34fb`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceUuid(pub u128);

impl ServiceUuid {
    /// The Bluetooth base UUID, with zero in the 32 bits that short UUIDs occupy.
    pub const BASE: u128 = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;

    /// A 16-bit UUID expanded onto the base UUID.
    pub const fn from_u16(short: u16) -> Self {
        Self(Self::BASE | ((short as u128) << 96))
    }

    /// A 32-bit UUID expanded onto the base UUID.
    pub const fn from_u32(short: u32) -> Self {
        Self(Self::BASE | ((short as u128) << 96))
    }

    /// The 16-bit form, if this UUID is a 16-bit one on the base UUID.
    pub fn as_u16(self) -> Option<u16> {
        let short = (self.0 >> 96) as u32;
        (self.0 & ((1u128 << 96) - 1) == Self::BASE && short <= 0xFFFF).then_some(short as u16)
    }

    /// Parses the canonical text form (`0000fd6f-0000-1000-8000-00805f9b34fb`, any case), or a
    /// bare 4-digit 16-bit UUID (`fd6f`, optionally `0x`-prefixed).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let short = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        if short.len() == 4 {
            return u16::from_str_radix(short, 16).ok().map(Self::from_u16);
        }
        let groups: Vec<&str> = text.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12]
            || !groups
                .iter()
                .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return None;
        }
        u128::from_str_radix(&groups.concat(), 16).ok().map(Self)
    }

    /// The UUID as it appears little-endian in AD structures (16 bytes).
    pub fn to_le_bytes(self) -> [u8; 16] {
        self.0.to_le_bytes()
    }
}

impl fmt::Display for ServiceUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
}

impl fmt::Debug for ServiceUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A device address as the radio reported it. In memory only; redacted in `Debug`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DeviceAddress(pub [u8; 6]);

impl fmt::Debug for DeviceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceAddress(<redacted>)")
    }
}

/// One received advertisement (or scan response), with the AD structures already parsed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Advert {
    /// When it was received, Unix milliseconds (from the source's clock).
    pub time_ms: u64,
    /// The sender's address (random and rotating for GAEN phones). In memory only.
    pub address: DeviceAddress,
    /// Received signal strength, dBm.
    pub rssi: i8,
    /// TX Power Level AD structure, if present (dBm).
    pub tx_power: Option<i8>,
    /// Service UUIDs listed (complete or incomplete lists, 16/32/128-bit), in order.
    pub service_uuids: Vec<ServiceUuid>,
    /// Service data, by UUID, in order of appearance.
    pub service_data: Vec<(ServiceUuid, Vec<u8>)>,
    /// Manufacturer-specific data, by company identifier, in order of appearance.
    pub manufacturer_data: Vec<(u16, Vec<u8>)>,
    /// A BlueTrace TempID read over GATT from this device (the BlueZ source with
    /// `bluetrace.collect_tempids`, or the simulator), at `time_ms` with `rssi`. Such a value is
    /// a read, not an advert: the AD fields are empty and the aggregator counts it apart.
    pub tempid_read: Option<crate::bluetrace::TempIdRead>,
}

impl Advert {
    /// The service data for `uuid`, if any (the first occurrence).
    pub fn service_data_for(&self, uuid: ServiceUuid) -> Option<&[u8]> {
        self.service_data
            .iter()
            .find(|(u, _)| *u == uuid)
            .map(|(_, d)| d.as_slice())
    }
}

/// Why advertising data could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdError {
    /// An AD structure's length byte runs past the end of the data.
    #[error("AD structure at byte {offset} claims {len} bytes, only {available} remain")]
    Truncated {
        /// Offset of the length byte.
        offset: usize,
        /// The claimed length (type byte + data).
        len: usize,
        /// Bytes left after the length byte.
        available: usize,
    },
    /// A structure whose type fixes its size (UUID lists, service data, TX power...) has a
    /// size that does not fit it.
    #[error("AD structure type {ad_type:#04x} at byte {offset} has a bad length {len}")]
    BadLength {
        /// The AD type.
        ad_type: u8,
        /// Offset of the length byte.
        offset: usize,
        /// The data length (without the type byte).
        len: usize,
    },
}

/// AD types this parser reads (Bluetooth Assigned Numbers, "Common Data Types").
pub mod ad_type {
    /// Incomplete list of 16-bit service UUIDs.
    pub const UUID16_INCOMPLETE: u8 = 0x02;
    /// Complete list of 16-bit service UUIDs.
    pub const UUID16_COMPLETE: u8 = 0x03;
    /// Incomplete list of 32-bit service UUIDs.
    pub const UUID32_INCOMPLETE: u8 = 0x04;
    /// Complete list of 32-bit service UUIDs.
    pub const UUID32_COMPLETE: u8 = 0x05;
    /// Incomplete list of 128-bit service UUIDs.
    pub const UUID128_INCOMPLETE: u8 = 0x06;
    /// Complete list of 128-bit service UUIDs.
    pub const UUID128_COMPLETE: u8 = 0x07;
    /// TX power level (1 signed byte, dBm).
    pub const TX_POWER: u8 = 0x0A;
    /// Service data, 16-bit UUID.
    pub const SERVICE_DATA16: u8 = 0x16;
    /// Service data, 32-bit UUID.
    pub const SERVICE_DATA32: u8 = 0x20;
    /// Service data, 128-bit UUID.
    pub const SERVICE_DATA128: u8 = 0x21;
    /// Manufacturer-specific data (2-byte company identifier, little-endian, then data).
    pub const MANUFACTURER: u8 = 0xFF;
}

/// Parses advertising data (a sequence of `len ‖ type ‖ data` structures) into `advert`'s
/// fields, appending to what is there (so an advert and its scan response can be merged).
/// A zero length byte ends the data (the rest is padding, as controllers send it). Unknown
/// types are skipped. On error, the structures before the bad one have been applied.
pub fn parse_ad(data: &[u8], advert: &mut Advert) -> Result<(), AdError> {
    use ad_type::*;
    let mut offset = 0;
    while offset < data.len() {
        let len = data[offset] as usize;
        if len == 0 {
            break;
        }
        let available = data.len() - offset - 1;
        if len > available {
            return Err(AdError::Truncated {
                offset,
                len,
                available,
            });
        }
        let ad = data[offset + 1];
        let body = &data[offset + 2..offset + 1 + len];
        let bad = || AdError::BadLength {
            ad_type: ad,
            offset,
            len: body.len(),
        };
        match ad {
            UUID16_INCOMPLETE | UUID16_COMPLETE => {
                if !body.len().is_multiple_of(2) {
                    return Err(bad());
                }
                advert.service_uuids.extend(
                    body.chunks_exact(2)
                        .map(|c| ServiceUuid::from_u16(u16::from_le_bytes([c[0], c[1]]))),
                );
            }
            UUID32_INCOMPLETE | UUID32_COMPLETE => {
                if !body.len().is_multiple_of(4) {
                    return Err(bad());
                }
                advert.service_uuids.extend(
                    body.chunks_exact(4).map(|c| {
                        ServiceUuid::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    }),
                );
            }
            UUID128_INCOMPLETE | UUID128_COMPLETE => {
                if !body.len().is_multiple_of(16) {
                    return Err(bad());
                }
                advert.service_uuids.extend(body.chunks_exact(16).map(|c| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(c);
                    ServiceUuid(u128::from_le_bytes(b))
                }));
            }
            TX_POWER => {
                if body.len() != 1 {
                    return Err(bad());
                }
                advert.tx_power = Some(body[0] as i8);
            }
            SERVICE_DATA16 => {
                if body.len() < 2 {
                    return Err(bad());
                }
                let uuid = ServiceUuid::from_u16(u16::from_le_bytes([body[0], body[1]]));
                advert.service_data.push((uuid, body[2..].to_vec()));
            }
            SERVICE_DATA32 => {
                if body.len() < 4 {
                    return Err(bad());
                }
                let uuid =
                    ServiceUuid::from_u32(u32::from_le_bytes([body[0], body[1], body[2], body[3]]));
                advert.service_data.push((uuid, body[4..].to_vec()));
            }
            SERVICE_DATA128 => {
                if body.len() < 16 {
                    return Err(bad());
                }
                let mut b = [0u8; 16];
                b.copy_from_slice(&body[..16]);
                advert
                    .service_data
                    .push((ServiceUuid(u128::from_le_bytes(b)), body[16..].to_vec()));
            }
            MANUFACTURER => {
                if body.len() < 2 {
                    return Err(bad());
                }
                advert
                    .manufacturer_data
                    .push((u16::from_le_bytes([body[0], body[1]]), body[2..].to_vec()));
            }
            _ => {}
        }
        offset += 1 + len;
    }
    Ok(())
}

/// Builds advertising data from an advert's fields (the inverse of [`parse_ad`] for what it
/// reads; 16-bit UUIDs are written in their short form). For the simulator, fixtures and tests.
pub fn build_ad(advert: &Advert) -> Vec<u8> {
    let mut out = Vec::new();
    let (short, long): (Vec<ServiceUuid>, Vec<ServiceUuid>) = advert
        .service_uuids
        .iter()
        .partition(|u| u.as_u16().is_some());
    if !short.is_empty() {
        out.push(1 + 2 * short.len() as u8);
        out.push(ad_type::UUID16_COMPLETE);
        for u in &short {
            out.extend_from_slice(&u.as_u16().unwrap_or_default().to_le_bytes());
        }
    }
    if !long.is_empty() {
        out.push(1 + 16 * long.len() as u8);
        out.push(ad_type::UUID128_COMPLETE);
        for u in &long {
            out.extend_from_slice(&u.to_le_bytes());
        }
    }
    for (uuid, data) in &advert.service_data {
        match uuid.as_u16() {
            Some(short) => {
                out.push((3 + data.len()) as u8);
                out.push(ad_type::SERVICE_DATA16);
                out.extend_from_slice(&short.to_le_bytes());
            }
            None => {
                out.push((17 + data.len()) as u8);
                out.push(ad_type::SERVICE_DATA128);
                out.extend_from_slice(&uuid.to_le_bytes());
            }
        }
        out.extend_from_slice(data);
    }
    for (company, data) in &advert.manufacturer_data {
        out.push((3 + data.len()) as u8);
        out.push(ad_type::MANUFACTURER);
        out.extend_from_slice(&company.to_le_bytes());
        out.extend_from_slice(data);
    }
    if let Some(tx) = advert.tx_power {
        out.extend_from_slice(&[2, ad_type::TX_POWER, tx as u8]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GAEN advert as phones send it: flags, the 0xFD6F UUID list, 0xFD6F service data.
    #[test]
    fn parses_a_gaen_advert() {
        let mut data = vec![
            0x02, 0x01, 0x1A, 0x03, 0x03, 0x6F, 0xFD, 0x17, 0x16, 0x6F, 0xFD,
        ];
        data.extend(0..20u8);
        let mut advert = Advert::default();
        parse_ad(&data, &mut advert).expect("valid AD");
        let uuid = ServiceUuid::from_u16(0xFD6F);
        assert_eq!(advert.service_uuids, [uuid]);
        assert_eq!(
            advert.service_data_for(uuid),
            Some(&(0..20u8).collect::<Vec<_>>()[..])
        );
        assert_eq!(uuid.to_string(), "0000fd6f-0000-1000-8000-00805f9b34fb");
        assert_eq!(
            ServiceUuid::parse("0000FD6F-0000-1000-8000-00805f9b34fb"),
            Some(uuid)
        );
        assert_eq!(ServiceUuid::parse("fd6f"), Some(uuid));
        assert_eq!(uuid.as_u16(), Some(0xFD6F));
    }

    /// build_ad is parse_ad's inverse, and every truncation of valid data is an error or a
    /// prefix of the structures, never a panic.
    #[test]
    fn build_parse_round_trip_and_truncations() {
        let advert = Advert {
            tx_power: Some(-8),
            service_uuids: vec![
                ServiceUuid::from_u16(0xFD6F),
                ServiceUuid::parse("b82ab3fc-1595-4f6a-80f0-fe094cc218f9").expect("uuid"),
            ],
            service_data: vec![(ServiceUuid::from_u16(0xFD6F), vec![7; 20])],
            manufacturer_data: vec![(0x03FF, vec![1, 2, 3])],
            ..Advert::default()
        };
        let data = build_ad(&advert);
        let mut parsed = Advert::default();
        parse_ad(&data, &mut parsed).expect("round trip");
        assert_eq!(parsed, advert);
        for cut in 0..data.len() {
            let _ = parse_ad(&data[..cut], &mut Advert::default());
        }
        assert!(matches!(
            parse_ad(&[0x05, 0x16, 0x6F], &mut Advert::default()),
            Err(AdError::Truncated {
                offset: 0,
                len: 5,
                available: 2
            })
        ));
        assert!(matches!(
            parse_ad(
                &[0x02, 0x0A, 0x01, 0x02, 0x16, 0x6F],
                &mut Advert::default()
            ),
            Err(AdError::BadLength {
                ad_type: 0x16,
                offset: 3,
                len: 1
            })
        ));
    }
}
