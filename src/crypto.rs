//! Exposure Notification cryptography (Cryptography Specification v1.2), as a phone does it.
//!
//! Owns the key and identifier newtypes (`Tek`, `Rpik`, `Aemk`, `Rpi`, `Aem`, `Enin`,
//! `RollingPeriod`, `Metadata`) and the derivations between them: RPIK and AEMK by HKDF-SHA256,
//! RPIs by AES-128 over the padded interval number, AEM by AES-128-CTR with the RPI as IV.
//! Pure: no I/O, no clock (callers pass interval numbers). Where keys come from (export files,
//! simulated phones) and where RPIs go (batches, the matching index) is for other modules.
//!
//! Privacy: the `Debug` output of every secret or identifier here is redacted, so a stray
//! `?value` in a log line cannot leak it. Deliberate output (the CLI, tests) uses `to_hex`.

use aes::Aes128Enc;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit, KeyIvInit, StreamCipher};
use std::fmt;

/// Length in seconds of one Exposure Notification interval.
pub const INTERVAL_SECONDS: u64 = 600;
/// Intervals in a day, and the default (and maximum) rolling period of a TEK.
pub const INTERVALS_PER_DAY: u32 = 144;

const RPIK_INFO: &[u8; 7] = b"EN-RPIK";
const AEMK_INFO: &[u8; 7] = b"EN-AEMK";
/// "EN-RPI" followed by six zero bytes: the first 12 bytes of every padded RPI block.
const RPI_PAD: [u8; 12] = *b"EN-RPI\0\0\0\0\0\0";

macro_rules! redacted_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(transparent)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lower-case hex, for deliberate output only (CLI results, tests), never logs.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses exactly `2 * LEN` hex digits.
            pub fn from_hex(text: &str) -> Result<Self, HexError> {
                let mut bytes = [0u8; $len];
                hex::decode_to_slice(text.trim(), &mut bytes).map_err(|source| HexError {
                    what: stringify!($name),
                    expected_len: $len,
                    source,
                })?;
                Ok(Self(bytes))
            }

            /// Takes a slice that must be exactly `LEN` bytes long.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(bytes).ok().map(Self)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

redacted_bytes!(
    /// Temporary Exposure Key: the 16-byte daily secret a phone publishes once diagnosed.
    Tek, 16
);
redacted_bytes!(
    /// Rolling Proximity Identifier Key, derived from a TEK.
    Rpik, 16
);
redacted_bytes!(
    /// Associated Encrypted Metadata Key, derived from a TEK.
    Aemk, 16
);
redacted_bytes!(
    /// Rolling Proximity Identifier: what a phone broadcasts for one interval.
    Rpi, 16
);
redacted_bytes!(
    /// Associated Encrypted Metadata: 4 encrypted bytes broadcast beside the RPI.
    Aem, 4
);

/// A hex string that is not the expected number of bytes.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what}: expected {expected_len} bytes as {} hex digits", expected_len * 2)]
pub struct HexError {
    what: &'static str,
    expected_len: usize,
    #[source]
    source: hex::FromHexError,
}

/// ENIntervalNumber: the number of 10-minute intervals since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Enin(pub u32);

impl Enin {
    /// The interval containing `unix_seconds`; `None` past the year 83,000 (u32 overflow).
    pub fn from_unix_seconds(unix_seconds: u64) -> Option<Self> {
        u32::try_from(unix_seconds / INTERVAL_SECONDS)
            .ok()
            .map(Self)
    }

    /// Unix time of the interval's first second.
    pub fn start_unix_seconds(self) -> u64 {
        u64::from(self.0) * INTERVAL_SECONDS
    }

    /// This interval plus `n` intervals, or `None` on overflow.
    pub fn checked_add(self, n: u32) -> Option<Self> {
        self.0.checked_add(n).map(Self)
    }

    /// The 16-byte AES input for this interval's RPI: "EN-RPI", 6 zero bytes, ENIN (u32 LE).
    fn padded_data(self) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[..12].copy_from_slice(&RPI_PAD);
        block[12..].copy_from_slice(&self.0.to_le_bytes());
        block
    }
}

/// How many intervals a TEK is valid for: 1..=144 (a TEK never spans more than a day).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollingPeriod(u8);

/// A rolling period outside 1..=144.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rolling period {0} is outside 1..=144")]
pub struct RollingPeriodError(pub i64);

impl RollingPeriod {
    /// The protocol default and maximum: one day.
    pub const DAY: Self = Self(144);

    /// Validates `intervals` against 1..=144.
    pub fn new(intervals: i64) -> Result<Self, RollingPeriodError> {
        match u8::try_from(intervals) {
            Ok(n @ 1..=144) => Ok(Self(n)),
            _ => Err(RollingPeriodError(intervals)),
        }
    }

    /// Number of intervals.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl Default for RollingPeriod {
    fn default() -> Self {
        Self::DAY
    }
}

/// Version of the metadata format, from the top nibble of metadata byte 0
/// (bits 7–6 major, bits 5–4 minor: 0x40 is 1.0, 0x50 is 1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MetadataVersion {
    /// Major version; only 1 exists.
    pub major: u8,
    /// Minor version: 0 or 1 today.
    pub minor: u8,
}

impl fmt::Display for MetadataVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The decrypted 4 metadata bytes a phone broadcasts (inside the AEM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Metadata {
    /// Format version.
    pub version: MetadataVersion,
    /// Calibrated transmit power in dBm, used to compute attenuation.
    pub tx_power_dbm: i8,
}

/// Metadata bytes whose version is not a 1.x format, e.g. an AEM decrypted with the wrong key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported metadata version byte {0:#04x} (expected 0x40 for 1.0 or 0x50 for 1.1)")]
pub struct MetadataError(pub u8);

impl Metadata {
    /// Metadata version 1.0 with the given TX power.
    pub fn v1_0(tx_power_dbm: i8) -> Self {
        Self {
            version: MetadataVersion { major: 1, minor: 0 },
            tx_power_dbm,
        }
    }

    /// Parses decrypted metadata bytes; bytes 2 and 3 are reserved and ignored.
    pub fn parse(bytes: [u8; 4]) -> Result<Self, MetadataError> {
        let major = bytes[0] >> 6;
        let minor = (bytes[0] >> 4) & 0b11;
        if major != 1 {
            return Err(MetadataError(bytes[0]));
        }
        Ok(Self {
            version: MetadataVersion { major, minor },
            tx_power_dbm: bytes[1] as i8,
        })
    }

    /// Encodes as the 4 plaintext metadata bytes (reserved bytes zero).
    pub fn to_bytes(self) -> [u8; 4] {
        let version = (self.version.major << 6) | ((self.version.minor & 0b11) << 4);
        [version, self.tx_power_dbm as u8, 0, 0]
    }
}

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// HKDF-SHA256 specialised to what Exposure Notification asks of it: IKM = a 16-byte TEK, no
/// salt, a short info string, 16 bytes out. Built on the SHA-256 compression function so that
/// each derived key costs the minimum number of compressions:
///
/// - Extract is HMAC(salt = 32 zero bytes, TEK). Its key is the same for every TEK, so the two
///   compressions that absorb `key ⊕ ipad` and `key ⊕ opad` are done once per process; what
///   is left per TEK is one inner and one outer compression.
/// - Expand is T(1) = HMAC(PRK, info ‖ 0x01): two compressions to key the HMAC with the PRK,
///   one inner, one outer. RPIK and AEMK share the first two.
///
/// That is 6 compressions per RPIK where the generic `hkdf` crate path needs 8 plus buffering;
/// HKDF is over half the cost of deriving a key's RPIs. Tests check this against the official
/// vectors and, for random keys, against the `hkdf` crate.
mod hkdf16 {
    use super::SHA256_IV;
    use sha2::block_api::compress256;
    use std::sync::OnceLock;

    const IPAD: u8 = 0x36;
    const OPAD: u8 = 0x5c;

    fn compress(state: &[u32; 8], block: &[u8; 64]) -> [u32; 8] {
        let mut state = *state;
        compress256(&mut state, std::slice::from_ref(block));
        state
    }

    fn digest_bytes(state: [u32; 8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The last block of a message whose first 64 bytes (the HMAC key block) are already
    /// absorbed: `msg`, the 0x80 terminator, zeros, and the total length in bits.
    fn final_block(msg: &[u8]) -> [u8; 64] {
        debug_assert!(
            msg.len() <= 55,
            "message must fit one block with its padding"
        );
        let mut block = [0u8; 64];
        block[..msg.len()].copy_from_slice(msg);
        block[msg.len()] = 0x80;
        let bits = ((64 + msg.len()) as u64) * 8;
        block[56..].copy_from_slice(&bits.to_be_bytes());
        block
    }

    /// Hash states after absorbing `key ⊕ ipad` and `key ⊕ opad` for a key of ≤ 64 bytes.
    fn keyed(key: &[u8]) -> ([u32; 8], [u32; 8]) {
        let mut inner = [IPAD; 64];
        let mut outer = [OPAD; 64];
        for (i, k) in key.iter().enumerate() {
            inner[i] ^= k;
            outer[i] ^= k;
        }
        (compress(&SHA256_IV, &inner), compress(&SHA256_IV, &outer))
    }

    fn hmac_finish(keyed: &([u32; 8], [u32; 8]), msg: &[u8]) -> [u8; 32] {
        let inner = digest_bytes(compress(&keyed.0, &final_block(msg)));
        digest_bytes(compress(&keyed.1, &final_block(&inner)))
    }

    /// HKDF-Extract(salt = none, ikm), keyed as HMAC states for the Expand step.
    pub(super) fn extract(ikm: &[u8; 16]) -> ([u32; 8], [u32; 8]) {
        static ZERO_SALT: OnceLock<([u32; 8], [u32; 8])> = OnceLock::new();
        let prk = hmac_finish(ZERO_SALT.get_or_init(|| keyed(&[0u8; 32])), ikm);
        keyed(&prk)
    }

    /// The first 16 bytes of HKDF-Expand(PRK, info) (T(1) truncated).
    pub(super) fn expand(prk: &([u32; 8], [u32; 8]), info: &[u8; 7]) -> [u8; 16] {
        let mut msg = [1u8; 8];
        msg[..7].copy_from_slice(info);
        let t1 = hmac_finish(prk, &msg);
        let mut okm = [0u8; 16];
        okm.copy_from_slice(&t1[..16]);
        okm
    }
}

impl Tek {
    /// Derives both keys of this TEK from one HKDF-Extract.
    pub fn keys(&self) -> (Rpik, Aemk) {
        let prk = hkdf16::extract(&self.0);
        (
            Rpik(hkdf16::expand(&prk, RPIK_INFO)),
            Aemk(hkdf16::expand(&prk, AEMK_INFO)),
        )
    }

    /// RPIK = HKDF-SHA256(TEK, salt = none, info = "EN-RPIK", 16 bytes).
    pub fn rpik(&self) -> Rpik {
        Rpik(hkdf16::expand(&hkdf16::extract(&self.0), RPIK_INFO))
    }

    /// AEMK = HKDF-SHA256(TEK, salt = none, info = "EN-AEMK", 16 bytes).
    pub fn aemk(&self) -> Aemk {
        Aemk(hkdf16::expand(&hkdf16::extract(&self.0), AEMK_INFO))
    }
}

/// An RPIK with its AES-128 key schedule expanded once, to derive many RPIs cheaply.
/// Encryption-only (`Aes128Enc`): RPIs are never decrypted, so the inverse schedule is not built.
#[derive(Clone)]
pub struct RpiCipher(Aes128Enc);

impl fmt::Debug for RpiCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RpiCipher(<redacted>)")
    }
}

impl RpiCipher {
    /// Expands the AES key schedule of `rpik`.
    pub fn new(rpik: &Rpik) -> Self {
        Self(Aes128Enc::new(&Array::from(rpik.0)))
    }

    /// RPI for one interval: AES-128(RPIK, "EN-RPI" ‖ 0x00×6 ‖ ENIN as u32 LE).
    pub fn rpi(&self, enin: Enin) -> Rpi {
        let mut block = Array::from(enin.padded_data());
        self.0.encrypt_block(&mut block);
        Rpi(block.into())
    }

    /// Fills `out[i]` with the RPI of interval `first + i`, for consecutive intervals.
    /// Interval numbers wrap at `u32::MAX`; real ENINs are 1e6 times smaller.
    ///
    /// One `encrypt_blocks` call over the caller's buffer, in place: the AES backend pipelines
    /// it (8 blocks at a time with AES-NI or ARMv8, 64 with VAES-512) and nothing is copied.
    pub fn derive_into(&self, first: Enin, out: &mut [Rpi]) {
        for (i, rpi) in out.iter_mut().enumerate() {
            rpi.0 = Enin(first.0.wrapping_add(i as u32)).padded_data();
        }
        // SAFETY: `Rpi` is `#[repr(transparent)]` over `[u8; 16]`, so `[Rpi]` and `[[u8; 16]]`
        // have the same layout; the new slice borrows `out` exclusively for its lifetime.
        let raw: &mut [[u8; 16]] =
            unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast(), out.len()) };
        self.0.encrypt_blocks(Array::cast_slice_from_core_mut(raw));
    }

    /// The RPIs of `count` consecutive intervals from `first`.
    pub fn derive(&self, first: Enin, count: usize) -> Vec<Rpi> {
        let mut out = vec![Rpi([0; 16]); count];
        self.derive_into(first, &mut out);
        out
    }
}

impl Rpik {
    /// Expands this key's AES schedule for repeated RPI derivation.
    pub fn cipher(&self) -> RpiCipher {
        RpiCipher::new(self)
    }
}

type Aes128Ctr = ctr::Ctr128BE<Aes128Enc>;

impl Aemk {
    /// AEM = AES-128-CTR(AEMK, IV = RPI, metadata bytes).
    pub fn encrypt(&self, rpi: &Rpi, metadata: [u8; 4]) -> Aem {
        Aem(self.apply(rpi, metadata))
    }

    /// The plaintext metadata bytes of an AEM broadcast with `rpi`. CTR mode has no
    /// integrity: a wrong key yields garbage, which [`Metadata::parse`] usually rejects.
    pub fn decrypt(&self, rpi: &Rpi, aem: &Aem) -> [u8; 4] {
        self.apply(rpi, aem.0)
    }

    /// Decrypts and parses the metadata of `aem`.
    pub fn decrypt_metadata(&self, rpi: &Rpi, aem: &Aem) -> Result<Metadata, MetadataError> {
        Metadata::parse(self.decrypt(rpi, aem))
    }

    fn apply(&self, rpi: &Rpi, mut data: [u8; 4]) -> [u8; 4] {
        let mut cipher = Aes128Ctr::new(&Array::from(self.0), &Array::from(rpi.0));
        cipher.apply_keystream(&mut data);
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interval numbers follow the 10-minute grid and round down.
    #[test]
    fn enin_is_floor_of_ten_minutes() {
        assert_eq!(
            Enin::from_unix_seconds(1_585_785_600),
            Some(Enin(2_642_976))
        );
        assert_eq!(
            Enin::from_unix_seconds(1_585_785_600 + 599),
            Some(Enin(2_642_976))
        );
        assert_eq!(
            Enin::from_unix_seconds(1_585_785_600 + 600),
            Some(Enin(2_642_977))
        );
        assert_eq!(Enin(2_642_976).start_unix_seconds(), 1_585_785_600);
        assert_eq!(Enin::from_unix_seconds(u64::MAX), None);
    }

    /// Rolling periods are 1..=144, default 144.
    #[test]
    fn rolling_period_bounds() {
        assert!(RollingPeriod::new(0).is_err());
        assert_eq!(RollingPeriod::new(1).map(RollingPeriod::get), Ok(1));
        assert_eq!(RollingPeriod::new(144).map(RollingPeriod::get), Ok(144));
        assert!(RollingPeriod::new(145).is_err());
        assert!(RollingPeriod::new(-1).is_err());
        assert_eq!(RollingPeriod::default().get(), 144);
    }

    /// Metadata 1.0 and 1.1 parse with signed TX power; other major versions are rejected.
    #[test]
    fn metadata_versions_and_signed_tx_power() {
        let m = Metadata::parse([0x40, 0x08, 0, 0]).expect("1.0 parses");
        assert_eq!(
            (m.version.major, m.version.minor, m.tx_power_dbm),
            (1, 0, 8)
        );
        let m = Metadata::parse([0x50, 0xF4, 0xAA, 0xBB]).expect("1.1 parses");
        assert_eq!(
            (m.version.to_string(), m.tx_power_dbm),
            ("1.1".to_string(), -12)
        );
        assert_eq!(m.to_bytes(), [0x50, 0xF4, 0, 0]);
        assert_eq!(Metadata::parse([0x80, 0, 0, 0]), Err(MetadataError(0x80)));
        assert_eq!(Metadata::parse([0x00, 0, 0, 0]), Err(MetadataError(0x00)));
    }

    /// Secrets never show in Debug output.
    #[test]
    fn debug_output_is_redacted() {
        let tek = Tek::from_bytes([0xAB; 16]);
        let text = format!("{tek:?} {:?} {:?}", tek.rpik(), tek.rpik().cipher());
        assert!(!text.to_lowercase().contains("ab"), "{text}");
        assert!(text.contains("redacted"));
    }

    /// Hex parsing checks the length and names the type.
    #[test]
    fn hex_parsing_names_the_type() {
        let err = Tek::from_hex("abcd").expect_err("too short");
        assert_eq!(
            err.to_string(),
            "invalid Tek: expected 16 bytes as 32 hex digits"
        );
        assert!(Rpi::from_hex(&"0f".repeat(16)).is_ok());
    }

    /// Deriving in bulk equals deriving one by one, for lengths around the AES backends'
    /// parallel group sizes (8, 30, 64).
    #[test]
    fn bulk_derivation_matches_single() {
        let cipher = Tek::from_bytes([7; 16]).rpik().cipher();
        let single: Vec<Rpi> = (0..400).map(|i| cipher.rpi(Enin(1000 + i))).collect();
        for len in (0..=70).chain([127, 128, 129, 143, 144, 168, 191, 192, 193, 385, 400]) {
            assert_eq!(
                cipher.derive(Enin(1000), len),
                single[..len],
                "length {len}"
            );
        }
    }
}
