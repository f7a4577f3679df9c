//! Decoding app beacons from BLE advertising data, as received: Exposure Notification (GAEN)
//! service data under the 16-bit UUID 0xFD6F is an RPI followed by an AEM.
//!
//! Pure: bytes in, a decoded beacon or the reason it is malformed out. Which radio or capture
//! the bytes came from, and counting what was dropped, are for the callers.

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

#[cfg(test)]
mod tests {
    use super::*;

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
