//! Decoding app beacons from BLE advertising data, as received: Exposure Notification (GAEN)
//! service data under the 16-bit UUID 0xFD6F is an RPI followed by an AEM; BlueTrace
//! (OpenTrace, Wiqaytna) phones advertise a configured 128-bit service UUID and manufacturer
//! data of company 0x03FF, with no identifier (that is read over GATT).
//!
//! Pure: bytes in, a decoded beacon or the reason it is malformed out. Which radio or capture
//! the bytes came from, and counting what was dropped, are for the callers.

use crate::advert::{Advert, ServiceUuid};
use crate::crypto::{Aem, Rpi};

/// The 16-bit service UUID of Exposure Notification.
pub const GAEN_SERVICE_UUID16: u16 = 0xFD6F;
/// The same UUID in the 128-bit form BlueZ uses as a ServiceData key.
pub const GAEN_SERVICE_UUID: &str = "0000fd6f-0000-1000-8000-00805f9b34fb";
/// Length of GAEN service data: RPI (16) ‖ AEM (4).
pub const GAEN_SERVICE_DATA_LEN: usize = Rpi::LEN + Aem::LEN;

/// One decoded Exposure Notification advertisement payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaenBeacon {
    /// Rolling Proximity Identifier.
    pub rpi: Rpi,
    /// Associated Encrypted Metadata.
    pub aem: Aem,
}

/// Service data under 0xFD6F that is not RPI ‖ AEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("GAEN service data is {0} bytes, expected 20 (RPI 16 + AEM 4)")]
pub struct MalformedGaen(pub usize);

impl GaenBeacon {
    /// Decodes the service data of UUID 0xFD6F; anything but exactly 20 bytes is malformed.
    pub fn decode(service_data: &[u8]) -> Result<Self, MalformedGaen> {
        if service_data.len() != GAEN_SERVICE_DATA_LEN {
            return Err(MalformedGaen(service_data.len()));
        }
        let (rpi, aem) = service_data.split_at(Rpi::LEN);
        Ok(Self {
            rpi: Rpi::from_slice(rpi).ok_or(MalformedGaen(service_data.len()))?,
            aem: Aem::from_slice(aem).ok_or(MalformedGaen(service_data.len()))?,
        })
    }
}

/// The company identifier OpenTrace/BlueTrace phones put in manufacturer data (1023).
pub const BLUETRACE_MANUFACTURER_ID: u16 = 0x03FF;

/// What an advert is, for the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beacon {
    /// A well-formed Exposure Notification beacon.
    Gaen(GaenBeacon),
    /// A BlueTrace/OpenTrace phone (counted, not identified).
    BlueTrace,
    /// Service data under 0xFD6F that is not a beacon: counted and dropped.
    MalformedGaen(MalformedGaen),
    /// Anything else (headphones, watches, beacons of other apps): ignored.
    Unrelated,
}

/// Classifies an advert. `bluetrace_uuids` are the BlueTrace service UUIDs configured for this
/// deployment (the production ones are not public); an advert listing one of them, or carrying
/// manufacturer data of company 0x03FF, is a BlueTrace phone. GAEN service data wins when an
/// advert somehow has both.
pub fn classify(advert: &Advert, bluetrace_uuids: &[ServiceUuid]) -> Beacon {
    const GAEN: ServiceUuid = ServiceUuid::from_u16(GAEN_SERVICE_UUID16);
    if let Some(data) = advert.service_data_for(GAEN) {
        return match GaenBeacon::decode(data) {
            Ok(beacon) => Beacon::Gaen(beacon),
            Err(malformed) => Beacon::MalformedGaen(malformed),
        };
    }
    let listed = advert
        .service_uuids
        .iter()
        .any(|u| bluetrace_uuids.contains(u));
    let manufacturer = advert
        .manufacturer_data
        .iter()
        .any(|(company, _)| *company == BLUETRACE_MANUFACTURER_ID);
    if listed || manufacturer {
        Beacon::BlueTrace
    } else {
        Beacon::Unrelated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GAEN service data decides first; BlueTrace by UUID or manufacturer id; the rest unrelated.
    #[test]
    fn classifies_adverts() {
        let gaen = ServiceUuid::from_u16(GAEN_SERVICE_UUID16);
        let bt = ServiceUuid::parse("b82ab3fc-1595-4f6a-80f0-fe094cc218f9").expect("uuid");
        let mut advert = Advert {
            service_data: vec![(gaen, vec![1; 20])],
            ..Advert::default()
        };
        assert!(matches!(classify(&advert, &[bt]), Beacon::Gaen(_)));
        advert.service_data[0].1.push(0);
        assert_eq!(
            classify(&advert, &[bt]),
            Beacon::MalformedGaen(MalformedGaen(21))
        );
        let by_uuid = Advert {
            service_uuids: vec![bt],
            ..Advert::default()
        };
        assert_eq!(classify(&by_uuid, &[bt]), Beacon::BlueTrace);
        assert_eq!(classify(&by_uuid, &[]), Beacon::Unrelated);
        let by_company = Advert {
            manufacturer_data: vec![(0x03FF, b"abc".to_vec())],
            ..Advert::default()
        };
        assert_eq!(classify(&by_company, &[]), Beacon::BlueTrace);
        assert_eq!(classify(&Advert::default(), &[bt]), Beacon::Unrelated);
    }

    /// 20 bytes split into RPI and AEM; every other length is malformed with its length.
    #[test]
    fn decodes_exactly_twenty_bytes() {
        let data: Vec<u8> = (0..20).collect();
        let beacon = GaenBeacon::decode(&data).expect("20 bytes decode");
        assert_eq!(beacon.rpi.as_bytes()[..], data[..16]);
        assert_eq!(beacon.aem.as_bytes()[..], data[16..]);
        for len in (0..64).filter(|&n| n != 20) {
            assert_eq!(GaenBeacon::decode(&vec![0; len]), Err(MalformedGaen(len)));
        }
    }
}
