//! BlueTrace / OpenTrace v2 (Wiqaytna): the GATT read payload and the TempID.
//!
//! A BlueTrace phone's advert carries no identifier; a central connects and reads the v2
//! characteristic, whose value is a small JSON object: `{"v":2,"id":TEMPID,"o":ORG,"mp":MODEL}`.
//! The TempID is `base64(ciphertext ‖ IV ‖ tag)`: AES-256-GCM with a 16-byte IV and no associated
//! data over `UID (21 bytes) ‖ start ‖ expiry` (big-endian signed 32-bit Unix seconds), as the
//! OpenTrace backend issues them (`../shared/testdata/bluetrace.md`).
//!
//! Pure: parsing ([`parse_read_payload`], used by the gateway, which keeps only the TempID and
//! the organisation code and drops the phone model) and the cipher ([`TempIdKey::decrypt`], used
//! by the authority; [`TempIdKey::encrypt`] for the simulator and tests). No clock: callers say
//! when a TempID was seen and [`Decrypted::validity`] says whether that is inside its window.
//!
//! Privacy: TempIDs, UIDs and keys have redacted `Debug` output; deliberate output (the
//! authority's identified-contacts answer, tests) uses `to_base64`.

use crate::advert::ServiceUuid;
use aes::Aes256;
use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;

/// The OpenTrace v2 characteristic (read + write) that carries the payload.
pub const V2_CHARACTERISTIC_UUID: ServiceUuid =
    ServiceUuid(0x117B_DD58_57CE_4E7A_8E87_7CCC_DDA2_A804);
/// The protocol version this code reads.
pub const PROTOCOL_VERSION: u64 = 2;
/// Longest read payload accepted: the largest attribute value ATT allows (Core 5.3 Vol 3 Part F
/// §3.2.9). A real one is ~130 bytes.
pub const MAX_PAYLOAD_BYTES: usize = 512;
/// Bytes of a UID.
pub const UID_LEN: usize = 21;
/// Bytes of the plaintext: UID, start, expiry.
pub const PLAINTEXT_LEN: usize = UID_LEN + 8;
/// Bytes of the IV (OpenTrace uses 16, not GCM's usual 12).
pub const IV_LEN: usize = 16;
/// Bytes of the GCM tag.
pub const TAG_LEN: usize = 16;

/// How a GATT read payload is not one this gateway can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Longer than [`MAX_PAYLOAD_BYTES`].
    #[error("payload is {0} bytes, more than the {max} an attribute can hold", max = MAX_PAYLOAD_BYTES)]
    TooLong(usize),
    /// Not a JSON object.
    #[error("payload is not a JSON object")]
    NotJson,
    /// `v` missing or not 2.
    #[error("payload protocol version is {0}, expected 2")]
    Version(String),
    /// `id` missing, not base64, or not the TempID length.
    #[error("payload TempID is malformed: {0}")]
    TempId(String),
    /// `o` missing or not an organisation code.
    #[error("payload organisation code is missing or malformed")]
    Org,
    /// An organisation this deployment does not collect.
    #[error("payload organisation {found:?} is not one of the configured organisations")]
    WrongOrg {
        /// The code found (at most 16 characters).
        found: String,
    },
}

/// An encrypted TempID as a phone presents it (`ciphertext ‖ IV ‖ tag`, 61 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TempId([u8; TempId::LEN]);

impl TempId {
    /// Length in bytes.
    pub const LEN: usize = PLAINTEXT_LEN + IV_LEN + TAG_LEN;
    /// Length of its base64 form.
    pub const BASE64_LEN: usize = Self::LEN.div_ceil(3) * 4;

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// Takes a slice that must be exactly [`Self::LEN`] bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; Self::LEN]>::try_from(bytes).ok().map(Self)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Parses the base64 text a phone sends (standard alphabet, padded).
    pub fn from_base64(text: &str) -> Result<Self, PayloadError> {
        let bytes = STANDARD
            .decode(text)
            .map_err(|_| PayloadError::TempId("not base64".into()))?;
        Self::from_slice(&bytes).ok_or_else(|| {
            PayloadError::TempId(format!("{} bytes, expected {}", bytes.len(), Self::LEN))
        })
    }

    /// The base64 text form, for deliberate output only (never logs).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    fn parts(&self) -> (&[u8], &[u8], &[u8]) {
        let (ciphertext, rest) = self.0.split_at(PLAINTEXT_LEN);
        let (iv, tag) = rest.split_at(IV_LEN);
        (ciphertext, iv, tag)
    }
}

impl fmt::Debug for TempId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TempId(<redacted>)")
    }
}

/// A BlueTrace user id: 21 bytes, written as 28 base64 characters (as the OpenTrace backend
/// stores it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid([u8; UID_LEN]);

impl Uid {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; UID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; UID_LEN] {
        &self.0
    }

    /// Parses the 28-character base64 form.
    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes = STANDARD.decode(text.trim()).ok()?;
        <[u8; UID_LEN]>::try_from(bytes.as_slice()).ok().map(Self)
    }

    /// The base64 form, for deliberate output only (the identified-contacts answer, tests).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Uid(<redacted>)")
    }
}

/// What the gateway keeps of one GATT read: the TempID and the organisation code. The phone
/// model and anything else in the payload is dropped here.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TempIdRead {
    /// The encrypted TempID.
    pub tempid: TempId,
    /// The issuing organisation (`MAR` for Wiqaytna).
    pub org: String,
}

/// Whether `org` looks like an organisation code: 1–16 characters of `[A-Za-z0-9_]`.
pub fn valid_org(org: &str) -> bool {
    (1..=16).contains(&org.len()) && org.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses the value read from the v2 characteristic. `orgs` are the organisation codes this
/// deployment collects; empty accepts any well-formed code.
pub fn parse_read_payload(bytes: &[u8], orgs: &[String]) -> Result<TempIdRead, PayloadError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLong(bytes.len()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| PayloadError::NotJson)?;
    let object = value.as_object().ok_or(PayloadError::NotJson)?;
    match object.get("v") {
        Some(v) if v.as_u64() == Some(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(PayloadError::Version(
                v.to_string().chars().take(16).collect(),
            ));
        }
        None => return Err(PayloadError::Version("missing".into())),
    }
    let id = object
        .get("id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| PayloadError::TempId("missing".into()))?;
    let tempid = TempId::from_base64(id)?;
    let org = object
        .get("o")
        .and_then(|v| v.as_str())
        .filter(|o| valid_org(o))
        .ok_or(PayloadError::Org)?;
    if !orgs.is_empty() && !orgs.iter().any(|o| o == org) {
        return Err(PayloadError::WrongOrg {
            found: org.to_owned(),
        });
    }
    Ok(TempIdRead {
        tempid,
        org: org.to_owned(),
    })
}

/// The payload a BlueTrace peripheral answers a read with (the simulator's and tests' side).
pub fn read_payload(tempid: &TempId, org: &str, model: &str) -> Vec<u8> {
    serde_json::json!({ "v": PROTOCOL_VERSION, "id": tempid.to_base64(), "o": org, "mp": model })
        .to_string()
        .into_bytes()
}

/// Why a TempID could not be decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TempIdError {
    /// The tag does not verify under this key: another key, or the bytes were altered.
    #[error("TempID does not authenticate under the configured key (another key, or altered)")]
    Authentication,
}

/// An AES-256-GCM key the backend encrypts TempIDs with. Redacted `Debug`.
#[derive(Clone)]
pub struct TempIdKey(AesGcm<Aes256, U16>);

impl TempIdKey {
    /// A key from its 32 bytes.
    pub fn new(key: &[u8; 32]) -> Self {
        Self(AesGcm::new(key.into()))
    }

    /// A key from base64 (standard alphabet) of 32 bytes, as the OpenTrace backend keeps it.
    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes = STANDARD.decode(text.trim()).ok()?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .ok()
            .map(|k| Self::new(&k))
    }

    /// Encrypts a TempID for `uid` valid from `start` to `expiry` (Unix seconds) with `iv`
    /// (the backend draws it at random).
    pub fn encrypt(&self, uid: &Uid, start: i32, expiry: i32, iv: &[u8; IV_LEN]) -> TempId {
        let mut out = [0u8; TempId::LEN];
        let (body, rest) = out.split_at_mut(PLAINTEXT_LEN);
        body[..UID_LEN].copy_from_slice(&uid.0);
        body[UID_LEN..UID_LEN + 4].copy_from_slice(&start.to_be_bytes());
        body[UID_LEN + 4..].copy_from_slice(&expiry.to_be_bytes());
        let nonce: &Nonce<AesGcm<Aes256, U16>> = iv.into();
        let tag = self
            .0
            .encrypt_inout_detached(nonce, &[], body.into())
            .expect("29 bytes are within GCM's length limit");
        rest[..IV_LEN].copy_from_slice(iv);
        rest[IV_LEN..].copy_from_slice(&tag);
        TempId(out)
    }

    /// Decrypts and authenticates a TempID.
    pub fn decrypt(&self, tempid: &TempId) -> Result<Decrypted, TempIdError> {
        let (ciphertext, iv, tag) = tempid.parts();
        let mut body = [0u8; PLAINTEXT_LEN];
        body.copy_from_slice(ciphertext);
        let nonce =
            Nonce::<AesGcm<Aes256, U16>>::try_from(iv).map_err(|_| TempIdError::Authentication)?;
        let tag =
            Tag::<AesGcm<Aes256, U16>>::try_from(tag).map_err(|_| TempIdError::Authentication)?;
        self.0
            .decrypt_inout_detached(&nonce, &[], (&mut body[..]).into(), &tag)
            .map_err(|_| TempIdError::Authentication)?;
        let mut uid = [0u8; UID_LEN];
        uid.copy_from_slice(&body[..UID_LEN]);
        let be =
            |at: usize| i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        Ok(Decrypted {
            uid: Uid(uid),
            start: be(UID_LEN),
            expiry: be(UID_LEN + 4),
        })
    }
}

impl fmt::Debug for TempIdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TempIdKey(<redacted>)")
    }
}

/// A decrypted TempID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decrypted {
    /// Whose it is.
    pub uid: Uid,
    /// Valid from, Unix seconds.
    pub start: i32,
    /// Valid until (exclusive), Unix seconds.
    pub expiry: i32,
}

/// Where a sighting's time falls against a TempID's validity window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Inside the window (with the tolerance).
    Valid,
    /// Before its start: a clock far off, or a forged/replayed TempID.
    Early,
    /// After its expiry: replayed.
    Expired,
}

impl Decrypted {
    /// Whether a sighting in `[seen_from, seen_until)` (Unix seconds; a gateway reports whole
    /// minutes) overlaps the validity window widened by `tolerance_s` on each side (clock
    /// skew between the backend, the phone and the gateway).
    pub fn validity(&self, seen_from: i64, seen_until: i64, tolerance_s: i64) -> Validity {
        if seen_until <= i64::from(self.start) - tolerance_s {
            Validity::Early
        } else if seen_from >= i64::from(self.expiry) + tolerance_s {
            Validity::Expired
        } else {
            Validity::Valid
        }
    }
}

/// One record of a case's uploaded encounter list (OpenTrace's `StreetPassRecord`): when the
/// case's phone exchanged TempIDs with another phone, and what that phone presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncounterRecord {
    /// When, Unix seconds (the phone records milliseconds; OpenTrace's backend takes values
    /// above 10^10 as milliseconds, and so does this parser).
    pub at_s: i64,
    /// The other phone's encrypted TempID (`msg`).
    pub tempid: TempId,
    /// Its organisation code (`org`).
    pub org: String,
}

/// A parsed encounter list: the usable records, and how many were not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncounterList {
    /// Records with a time, a TempID and an organisation code.
    pub records: Vec<EncounterRecord>,
    /// Records that are not: not an object, no or a bad `timestamp`, `msg` or `org`.
    pub malformed: u64,
    /// The first malformed record: its 0-based index in the file's `records` array and what is
    /// wrong with it.
    pub first_malformed: Option<(usize, String)>,
}

/// Why an encounter list file cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncounterListError {
    /// Not JSON (serde's message names the line and column).
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but neither an object with a `records` array nor an array.
    #[error(
        "expected the phone's upload (an object with a \"records\" array) or an array of \
         records"
    )]
    Shape,
}

/// Parses a case's uploaded encounter list: the JSON a BlueTrace phone uploads
/// (`{"token":…, "records":[…], "events":[…]}`, as OpenTrace's `processUploadedData` reads it)
/// or a bare array of its records. Of each record only `timestamp`, `msg` (the other phone's
/// TempID) and `org` are kept; the phone models, RSSI and TX power are dropped. A record
/// that is not usable is counted, not fatal: one bad line in a phone's 21 days must not hide
/// the rest. The records are read one at a time as the text is scanned: memory holds the
/// usable records, not a tree of the whole file (which a hostile file could make ~20 times
/// its size).
pub fn parse_encounter_list(bytes: &[u8]) -> Result<EncounterList, EncounterListError> {
    use serde::Deserializer as _;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        EncounterListError::NotJson(format!("not UTF-8 text (byte {})", e.valid_up_to()))
    })?;
    let mut list = EncounterList::default();
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_any(ListVisitor(&mut list))
        .and_then(|()| de.end())
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => EncounterListError::Shape,
            _ => EncounterListError::NotJson(e.to_string()),
        })?;
    Ok(list)
}

impl EncounterList {
    /// Takes one record (its JSON text) into the list, or counts it as malformed.
    fn take(&mut self, index: usize, raw: &str) {
        let record = serde_json::from_str::<serde_json::Value>(raw)
            .map_err(|e| format!("not valid JSON: {e}"))
            .and_then(|value| encounter_record(&value));
        match record {
            Ok(r) => self.records.push(r),
            Err(why) => {
                self.malformed += 1;
                self.first_malformed.get_or_insert((index, why));
            }
        }
    }
}

/// The top level of an encounter list: the upload object (its `records` taken, the rest
/// skipped) or a bare array of records.
struct ListVisitor<'l>(&'l mut EncounterList);

impl<'de> serde::de::Visitor<'de> for ListVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an upload object or an array of records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Records(self.0).visit_seq(seq)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "records" && !found {
                map.next_value_seed(Records(&mut *self.0))?;
                found = true;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        if found {
            Ok(())
        } else {
            Err(serde::de::Error::missing_field("records"))
        }
    }
}

/// The `records` array, each element taken as it is scanned.
struct Records<'l>(&'l mut EncounterList);

impl<'de> serde::de::DeserializeSeed<'de> for Records<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Records<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(raw) = seq.next_element::<&'de serde_json::value::RawValue>()? {
            self.0.take(index, raw.get());
            index += 1;
        }
        Ok(())
    }
}

/// Largest timestamp accepted, seconds: the end of `i32` time, as TempIDs carry it.
const MAX_ENCOUNTER_S: f64 = i32::MAX as f64;

fn encounter_record(record: &serde_json::Value) -> Result<EncounterRecord, String> {
    let object = record.as_object().ok_or("not an object")?;
    let at = object
        .get("timestamp")
        .and_then(|t| t.as_f64())
        .ok_or("no numeric \"timestamp\"")?;
    let at_s = if at > 1e10 { at / 1000.0 } else { at };
    if !(0.0..=MAX_ENCOUNTER_S).contains(&at_s) {
        return Err(format!("\"timestamp\" {at} is out of range"));
    }
    let msg = object
        .get("msg")
        .and_then(|m| m.as_str())
        .ok_or("no \"msg\" (the other phone's TempID)")?;
    let tempid = TempId::from_base64(msg)
        .map_err(|_| "\"msg\" is not a TempID (84 characters of base64)")?;
    let org = object
        .get("org")
        .and_then(|o| o.as_str())
        .filter(|o| valid_org(o))
        .ok_or("no or a malformed \"org\"")?;
    Ok(EncounterRecord {
        at_s: at_s.floor() as i64,
        tempid,
        org: org.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TempIdKey {
        TempIdKey::new(&[7u8; 32])
    }

    #[test]
    fn round_trip_and_layout() {
        let uid = Uid::from_bytes(*b"abcdefghijklmnopqrstu");
        let iv = [9u8; 16];
        let t = key().encrypt(&uid, 1_700_000_000, 1_700_000_900, &iv);
        assert_eq!(&t.as_bytes()[29..45], &iv, "IV sits after the ciphertext");
        assert_eq!(t.to_base64().len(), TempId::BASE64_LEN);
        assert_eq!(TempId::BASE64_LEN, 84);
        let d = key().decrypt(&t).expect("decrypts");
        assert_eq!(d.uid, uid);
        assert_eq!((d.start, d.expiry), (1_700_000_000, 1_700_000_900));
        assert_eq!(TempId::from_base64(&t.to_base64()), Ok(t));
    }

    /// The same TempID computed by OpenSSL (Python `cryptography`'s AESGCM, 16-byte nonce):
    /// `AESGCM(bytes([7]*32)).encrypt(bytes([9]*16), b"abcdefghijklmnopqrstu" + start + expiry,
    /// None)`, rearranged as ciphertext ‖ IV ‖ tag.
    #[test]
    fn matches_openssl() {
        const OPENSSL: &str =
            "o+juUQoQUx8+UiLV3kxBHK0kxbqjVW75331iMRsJCQkJCQkJCQkJCQkJCQkJnLORO2tWx1AWtTuIg5pI0Q==";
        let uid = Uid::from_bytes(*b"abcdefghijklmnopqrstu");
        let t = key().encrypt(&uid, 1_700_000_000, 1_700_000_900, &[9; 16]);
        assert_eq!(t.to_base64(), OPENSSL);
        let d = key()
            .decrypt(&TempId::from_base64(OPENSSL).expect("base64"))
            .expect("decrypts");
        assert_eq!(d.uid.to_base64(), "YWJjZGVmZ2hpamtsbW5vcHFyc3R1");
    }

    #[test]
    fn wrong_key_and_every_altered_byte_fail() {
        let uid = Uid::from_bytes([1; 21]);
        let t = key().encrypt(&uid, 0, 900, &[3; 16]);
        assert_eq!(
            TempIdKey::new(&[8; 32]).decrypt(&t),
            Err(TempIdError::Authentication)
        );
        for i in 0..TempId::LEN {
            let mut bytes = *t.as_bytes();
            bytes[i] ^= 0x01;
            assert_eq!(
                key().decrypt(&TempId::from_bytes(bytes)),
                Err(TempIdError::Authentication),
                "byte {i} altered"
            );
        }
    }

    #[test]
    fn validity_window() {
        let d = Decrypted {
            uid: Uid::from_bytes([0; 21]),
            start: 1000,
            expiry: 1900,
        };
        assert_eq!(d.validity(940, 1000, 0), Validity::Early);
        assert_eq!(d.validity(960, 1020, 0), Validity::Valid);
        assert_eq!(d.validity(1860, 1920, 0), Validity::Valid);
        assert_eq!(d.validity(1900, 1960, 0), Validity::Expired);
        assert_eq!(d.validity(1900, 1960, 60), Validity::Valid);
        assert_eq!(d.validity(880, 940, 60), Validity::Early);
    }

    #[test]
    fn payloads() {
        let t = key().encrypt(&Uid::from_bytes([2; 21]), 0, 900, &[4; 16]);
        let orgs = vec!["MAR".to_owned()];
        let good = read_payload(&t, "MAR", "Pixel 7");
        let read = parse_read_payload(&good, &orgs).expect("parses");
        assert_eq!(read.tempid, t);
        assert_eq!(read.org, "MAR");
        assert_eq!(
            parse_read_payload(&good, &[]).map(|r| r.org),
            Ok("MAR".into())
        );
        assert_eq!(
            parse_read_payload(&read_payload(&t, "SG_MOH", "x"), &orgs),
            Err(PayloadError::WrongOrg {
                found: "SG_MOH".into()
            })
        );
        assert_eq!(
            parse_read_payload(b"{\"v\":2", &orgs),
            Err(PayloadError::NotJson)
        );
        assert_eq!(
            parse_read_payload(b"[2]", &orgs),
            Err(PayloadError::NotJson)
        );
        assert!(matches!(
            parse_read_payload(br#"{"v":1,"id":"","o":"MAR"}"#, &orgs),
            Err(PayloadError::Version(_))
        ));
        assert!(matches!(
            parse_read_payload(br#"{"v":2,"id":"AAAA","o":"MAR"}"#, &orgs),
            Err(PayloadError::TempId(_))
        ));
        assert!(matches!(
            parse_read_payload(br#"{"v":2,"id":"!!","o":"MAR"}"#, &orgs),
            Err(PayloadError::TempId(_))
        ));
        let no_org = format!(r#"{{"v":2,"id":"{}"}}"#, t.to_base64());
        assert_eq!(
            parse_read_payload(no_org.as_bytes(), &orgs),
            Err(PayloadError::Org)
        );
        let mut long = good.clone();
        long.resize(MAX_PAYLOAD_BYTES + 1, b' ');
        assert_eq!(
            parse_read_payload(&long, &orgs),
            Err(PayloadError::TooLong(MAX_PAYLOAD_BYTES + 1))
        );
    }

    #[test]
    fn debug_is_redacted() {
        let t = key().encrypt(&Uid::from_bytes([2; 21]), 0, 900, &[4; 16]);
        let text = format!("{t:?} {:?} {:?}", Uid::from_bytes([2; 21]), key());
        assert!(!text.contains(&t.to_base64()[..8]));
        assert!(text.contains("redacted"));
    }

    /// An OpenTrace upload: records kept with their time (milliseconds taken as such, as the
    /// backend does), TempID and organisation; the models, RSSI and TX power dropped; bad
    /// records counted with the first one named; a bare array read too; a file that is not a
    /// list refused.
    #[test]
    fn encounter_list() {
        let t = key().encrypt(
            &Uid::from_bytes([5; 21]),
            1_700_000_000,
            1_700_000_900,
            &[1; 16],
        );
        let msg = t.to_base64();
        let upload = serde_json::json!({
            "token": "opaque",
            "events": [{"msg": "Scanning started", "timestamp": 1_700_000_100_000u64}],
            "records": [
                {"timestamp": 1_700_000_123_456u64, "msg": msg, "org": "MAR", "modelC": "Pixel",
                 "modelP": "SM-G973F", "rssi": -67, "txPower": 7, "v": 2},
                {"timestamp": 1_700_000_200, "msg": msg, "org": "MAR"},
                {"timestamp": 1_700_000_300.5, "msg": msg, "org": "SG_MOH"},
                {"msg": msg, "org": "MAR"},
                {"timestamp": 1_700_000_300, "msg": "not-a-tempid", "org": "MAR"},
                {"timestamp": 1_700_000_300, "org": "MAR"},
                {"timestamp": 1_700_000_300, "msg": msg, "org": "M A R"},
                {"timestamp": -5, "msg": msg, "org": "MAR"},
                {"timestamp": 1e300, "msg": msg, "org": "MAR"},
                "text"
            ]
        });
        // A number no f64 holds spoils its record only.
        let text = upload
            .to_string()
            .replacen("\"text\"", "\"text\",{\"timestamp\":1e400}", 1);
        let list = parse_encounter_list(text.as_bytes()).expect("parses");
        let kept: Vec<(i64, &str)> = list
            .records
            .iter()
            .map(|r| (r.at_s, r.org.as_str()))
            .collect();
        assert_eq!(
            kept,
            [
                (1_700_000_123, "MAR"),
                (1_700_000_200, "MAR"),
                (1_700_000_300, "SG_MOH")
            ]
        );
        assert!(list.records.iter().all(|r| r.tempid == t));
        assert_eq!(list.malformed, 8);
        assert_eq!(
            list.first_malformed,
            Some((3, "no numeric \"timestamp\"".to_owned()))
        );

        let bare = serde_json::json!([{"timestamp": 1_700_000_200, "msg": msg, "org": "MAR"}]);
        let list = parse_encounter_list(bare.to_string().as_bytes()).expect("parses");
        assert_eq!((list.records.len(), list.malformed), (1, 0));

        for shape in [
            r#"{"token":"x"}"#,
            r#"{"records":{}}"#,
            "42",
            r#""records""#,
        ] {
            assert_eq!(
                parse_encounter_list(shape.as_bytes()),
                Err(EncounterListError::Shape),
                "{shape}"
            );
        }
        for (bad, says) in [
            (
                &b"{\"records\": ["[..],
                "EOF while parsing a list at line 1",
            ),
            (b"[] []", "trailing characters at line 1 column 4"),
            (b"[\xff]", "not UTF-8 text (byte 1)"),
        ] {
            let Err(EncounterListError::NotJson(why)) = parse_encounter_list(bad) else {
                panic!("{bad:?} is refused");
            };
            assert!(why.contains(says), "{why}");
        }
    }
}
