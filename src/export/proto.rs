//! The protobuf wire format of `export.bin` and `export.sig`, as hand-written prost messages
//! (there is no `protoc` in the build), and the infallible conversions from domain values.
//!
//! These structs accept anything the wire allows; they are public for tools and tests that must
//! write malformed files on purpose. Turning wire values into domain values is validation and is
//! left to `reader`; checking signatures is left to `signature`.
//!
//! ```text
//! message TemporaryExposureKeyExport {
//!   optional fixed64 start_timestamp = 1;  optional fixed64 end_timestamp = 2;
//!   optional string region = 3;  optional int32 batch_num = 4;  optional int32 batch_size = 5;
//!   repeated SignatureInfo signature_infos = 6;
//!   repeated TemporaryExposureKey keys = 7;  repeated TemporaryExposureKey revised_keys = 8; }
//! message SignatureInfo {
//!   reserved 1, 2;  // app_bundle_id, android_package: legacy, still present in old files
//!   optional string verification_key_version = 3;  optional string verification_key_id = 4;
//!   optional string signature_algorithm = 5; }
//! message TemporaryExposureKey {
//!   optional bytes key_data = 1;  optional int32 transmission_risk_level = 2;
//!   optional int32 rolling_start_interval_number = 3;
//!   optional int32 rolling_period = 4 [default = 144];
//!   optional ReportType report_type = 5;  optional sint32 days_since_onset_of_symptoms = 6; }
//! message TEKSignatureList { repeated TEKSignature signatures = 1; }
//! message TEKSignature {
//!   optional SignatureInfo signature_info = 1;  optional int32 batch_num = 2;
//!   optional int32 batch_size = 3;  optional bytes signature = 4; }
//! ```

use super::{DiagnosisKey, ExportContents};

/// `TemporaryExposureKeyExport`: the body of `export.bin` after its 16-byte header.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TemporaryExposureKeyExport {
    /// Field 1.
    #[prost(fixed64, optional, tag = "1")]
    pub start_timestamp: Option<u64>,
    /// Field 2.
    #[prost(fixed64, optional, tag = "2")]
    pub end_timestamp: Option<u64>,
    /// Field 3.
    #[prost(string, optional, tag = "3")]
    pub region: Option<String>,
    /// Field 4.
    #[prost(int32, optional, tag = "4")]
    pub batch_num: Option<i32>,
    /// Field 5.
    #[prost(int32, optional, tag = "5")]
    pub batch_size: Option<i32>,
    /// Field 6.
    #[prost(message, repeated, tag = "6")]
    pub signature_infos: Vec<SignatureInfo>,
    /// Field 7.
    #[prost(message, repeated, tag = "7")]
    pub keys: Vec<TemporaryExposureKey>,
    /// Field 8.
    #[prost(message, repeated, tag = "8")]
    pub revised_keys: Vec<TemporaryExposureKey>,
}

/// `SignatureInfo`. Fields 1 (`app_bundle_id`) and 2 (`android_package`) are deliberately not
/// declared: prost skips unknown fields, so old files that carry them still decode, and nothing
/// here can write them again.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignatureInfo {
    /// Field 3.
    #[prost(string, optional, tag = "3")]
    pub verification_key_version: Option<String>,
    /// Field 4.
    #[prost(string, optional, tag = "4")]
    pub verification_key_id: Option<String>,
    /// Field 5.
    #[prost(string, optional, tag = "5")]
    pub signature_algorithm: Option<String>,
}

/// `TemporaryExposureKey`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TemporaryExposureKey {
    /// Field 1: must be 16 bytes.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub key_data: Option<Vec<u8>>,
    /// Field 2.
    #[prost(int32, optional, tag = "2")]
    pub transmission_risk_level: Option<i32>,
    /// Field 3.
    #[prost(int32, optional, tag = "3")]
    pub rolling_start_interval_number: Option<i32>,
    /// Field 4: 144 when absent.
    #[prost(int32, optional, tag = "4")]
    pub rolling_period: Option<i32>,
    /// Field 5, the `ReportType` enum. Declared as int32 (same varint encoding) so that values
    /// this version does not know are kept rather than rejected.
    #[prost(int32, optional, tag = "5")]
    pub report_type: Option<i32>,
    /// Field 6 (zig-zag encoded).
    #[prost(sint32, optional, tag = "6")]
    pub days_since_onset_of_symptoms: Option<i32>,
}

/// `TEKSignatureList`: the whole of `export.sig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TekSignatureList {
    /// Field 1.
    #[prost(message, repeated, tag = "1")]
    pub signatures: Vec<TekSignature>,
}

/// `TEKSignature`: one signature over the whole `export.bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TekSignature {
    /// Field 1.
    #[prost(message, optional, tag = "1")]
    pub signature_info: Option<SignatureInfo>,
    /// Field 2.
    #[prost(int32, optional, tag = "2")]
    pub batch_num: Option<i32>,
    /// Field 3.
    #[prost(int32, optional, tag = "3")]
    pub batch_size: Option<i32>,
    /// Field 4: ASN.1 DER ECDSA signature.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub signature: Option<Vec<u8>>,
}

impl From<&super::SignatureInfo> for SignatureInfo {
    fn from(info: &super::SignatureInfo) -> Self {
        Self {
            verification_key_version: info.verification_key_version.clone(),
            verification_key_id: info.verification_key_id.clone(),
            signature_algorithm: info.signature_algorithm.clone(),
        }
    }
}

impl From<SignatureInfo> for super::SignatureInfo {
    fn from(info: SignatureInfo) -> Self {
        Self {
            verification_key_version: info.verification_key_version,
            verification_key_id: info.verification_key_id,
            signature_algorithm: info.signature_algorithm,
        }
    }
}

/// `value` as a protobuf int32. Domain values that came from a file always fit; larger ones can
/// only be built in code and are written as `i32::MAX` rather than wrapping to a negative number.
pub(crate) fn saturating_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl From<&DiagnosisKey> for TemporaryExposureKey {
    fn from(key: &DiagnosisKey) -> Self {
        Self {
            key_data: Some(key.tek.as_bytes().to_vec()),
            transmission_risk_level: key.transmission_risk_level,
            rolling_start_interval_number: Some(saturating_i32(key.rolling_start.0)),
            // Always written, although 144 is the default: readers that predate the field (and
            // people reading hex dumps) should not have to know the default.
            rolling_period: Some(saturating_i32(key.rolling_period.get())),
            report_type: key.report_type.map(super::ReportType::to_i32),
            days_since_onset_of_symptoms: key.days_since_onset_of_symptoms,
        }
    }
}

impl From<&ExportContents> for TemporaryExposureKeyExport {
    fn from(contents: &ExportContents) -> Self {
        Self {
            start_timestamp: Some(contents.start_timestamp),
            end_timestamp: Some(contents.end_timestamp),
            region: Some(contents.region.clone()),
            batch_num: Some(saturating_i32(contents.batch_num)),
            batch_size: Some(saturating_i32(contents.batch_size)),
            signature_infos: contents.signature_infos.iter().map(Into::into).collect(),
            keys: contents.keys.iter().map(Into::into).collect(),
            revised_keys: contents.revised_keys.iter().map(Into::into).collect(),
        }
    }
}

/// Counts the top-level length-delimited occurrences of each field number in `fields` in
/// protobuf `bytes`, without decoding or allocating, stopping quietly at the first malformed
/// byte (the real decoder reports that).
///
/// This exists because decoding is not proportional to input: an empty repeated message costs 2
/// bytes on the wire but about 100 bytes in memory, so a 64 MiB file could ask for gigabytes.
/// Counting first lets callers refuse before `prost` allocates.
pub(crate) fn count_length_delimited<const N: usize>(
    mut bytes: &[u8],
    fields: [u64; N],
) -> [usize; N] {
    let mut counts = [0usize; N];
    while !bytes.is_empty() {
        let Some(key) = read_varint(&mut bytes) else {
            break;
        };
        let skipped = match key & 0b111 {
            0 => read_varint(&mut bytes).map(|_| ()),
            1 => skip(&mut bytes, 8),
            2 => read_varint(&mut bytes)
                .and_then(|len| usize::try_from(len).ok())
                .and_then(|len| skip(&mut bytes, len))
                .map(|()| {
                    let field = key >> 3;
                    for (count, _) in counts.iter_mut().zip(fields).filter(|(_, f)| *f == field) {
                        *count = count.saturating_add(1);
                    }
                }),
            5 => skip(&mut bytes, 4),
            // Groups (3, 4) and invalid wire types: not part of this format.
            _ => None,
        };
        if skipped.is_none() {
            break;
        }
    }
    counts
}

fn skip(bytes: &mut &[u8], len: usize) -> Option<()> {
    *bytes = bytes.get(len..)?;
    Some(())
}

/// Reads a base-128 varint of at most 10 bytes, advancing `bytes`.
fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Legacy SignatureInfo fields 1 and 2 are skipped on read and never written back.
    #[test]
    fn legacy_signature_info_fields_are_ignored() {
        // field 2 (android_package) = "gov.x", field 4 (verification_key_id) = "310".
        let wire = [
            0x12, 5, b'g', b'o', b'v', b'.', b'x', 0x22, 3, b'3', b'1', b'0',
        ];
        let info = SignatureInfo::decode(&wire[..]).expect("legacy field 2 is accepted");
        assert_eq!(info.verification_key_id.as_deref(), Some("310"));
        assert_eq!(info.encode_to_vec(), [0x22, 3, b'3', b'1', b'0']);
    }

    /// The pre-count sees exactly the repeated entries prost would decode, and never reads past
    /// a malformed length.
    #[test]
    fn counting_length_delimited_fields() {
        let export = TemporaryExposureKeyExport {
            region: Some("US".into()),
            batch_num: Some(1),
            start_timestamp: Some(7),
            keys: vec![TemporaryExposureKey::default(); 3],
            revised_keys: vec![TemporaryExposureKey::default(); 2],
            signature_infos: vec![SignatureInfo::default()],
            ..Default::default()
        };
        let wire = export.encode_to_vec();
        assert_eq!(count_length_delimited(&wire, [7, 8, 6]), [3, 2, 1]);
        // A length that runs past the end stops the count.
        assert_eq!(count_length_delimited(&[0x3a, 0x05, 0x00], [7]), [0]);
        // An endless varint stops it too.
        assert_eq!(count_length_delimited(&[0xff; 20], [7]), [0]);
    }

    /// Negative int32 values and zig-zag sint32 values survive the wire.
    #[test]
    fn signed_fields_round_trip() {
        let key = TemporaryExposureKey {
            transmission_risk_level: Some(-1),
            days_since_onset_of_symptoms: Some(-14),
            ..Default::default()
        };
        let wire = key.encode_to_vec();
        // sint32 -14 zig-zags to 27: tag 0x30, one byte.
        assert!(wire.ends_with(&[0x30, 27]), "{wire:02x?}");
        assert_eq!(TemporaryExposureKey::decode(&wire[..]), Ok(key));
    }
}
