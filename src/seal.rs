//! Sealing batches to the authority (HPKE, RFC 9180) and the receipts that prove the authority
//! stored them.
//!
//! Pure: keys and bytes in, envelopes and tags out; reading key files is [`KeyPair::load`] /
//! [`KeyPair::save`]'s only I/O. Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305, in **auth mode**: the gateway's static X25519 key authenticates the
//! sender, so the authority knows which enrolled gateway sealed a batch and nobody can forge
//! one without that gateway's private key (DESIGN.md §3 rule 2).
//!
//! Envelope (all integers big-endian):
//!
//! ```text
//! "VTSB" | version u8 = 1 | id_len u8 | gateway id | sequence u64 | window_start_enin u32
//!        | enc (32 bytes, the HPKE encapsulated key) | ciphertext (batch protobuf + 16-byte tag)
//! ```
//!
//! Everything before `enc` is the header: readable without the key (so the authority can pick
//! the gateway's public key) and bound to the ciphertext as HPKE associated data, so it cannot
//! be altered. After opening, the header must agree with the batch inside.
//!
//! Receipt: both sides derive `tag = HPKE-Export("venuetrace/v1 receipt " ‖ batch id, 32)` from
//! the batch's own HPKE context. Only the authority (holder of its private key) and the gateway
//! that sealed the batch can compute it, so a receipt carrying it cannot be forged by other
//! broker clients; the gateway keeps only the tag, not the secret.

use crate::batch::{Batch, BatchError, BatchId, GatewayId};
use crate::crypto::Enin;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use std::path::Path;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

const MAGIC: &[u8; 4] = b"VTSB";
/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;
const INFO: &[u8] = b"venuetrace/v1 batch";
const ENC_LEN: usize = 32;
/// Largest envelope accepted: the largest batch plus header and overhead.
pub const MAX_ENVELOPE_BYTES: usize = crate::batch::MAX_BATCH_BYTES + 256;

/// An X25519 public key (a gateway's or the authority's), 32 bytes, written as base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// A public key from its 32 raw bytes (checked when used).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses base64 of 32 bytes (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes = B64.decode(text.trim()).map_err(|_| KeyError::NotBase64)?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| KeyError::Length(b.len()))?;
        Ok(Self(bytes))
    }

    /// Base64 text.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    fn hpke(&self) -> Result<<Kem as hpke::Kem>::PublicKey, KeyError> {
        <Kem as hpke::Kem>::PublicKey::from_bytes(&self.0).map_err(|_| KeyError::Invalid)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// An X25519 key pair. The private half never appears in `Debug` output.
#[derive(Clone)]
pub struct KeyPair {
    private: <Kem as hpke::Kem>::PrivateKey,
    public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .field("private", &"<redacted>")
            .finish()
    }
}

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64.
    #[error("key is not base64")]
    NotBase64,
    /// Not 32 bytes.
    #[error("key is {0} bytes, expected 32 (X25519)")]
    Length(usize),
    /// Rejected by X25519.
    #[error("key is not a valid X25519 key")]
    Invalid,
}

/// Reading or writing a key file failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error("cannot read key file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable key.
    #[error("key file {path} does not hold an X25519 private key")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The file cannot be written.
    #[error("cannot write key file {path}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Refusing to overwrite an existing key.
    #[error(
        "key file {0} exists already; move it away first to replace the key (a new key must be enrolled again)"
    )]
    Exists(String),
}

const KEY_FILE_LABEL: &str = "venuetrace-x25519-private-key";

impl KeyPair {
    /// A fresh key pair from the operating system's random generator.
    pub fn generate() -> Self {
        let (private, public) = Kem::gen_keypair();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&public.to_bytes());
        Self {
            private,
            public: PublicKey(bytes),
        }
    }

    /// The key pair of a 32-byte private key.
    pub fn from_private_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != 32 {
            return Err(KeyError::Length(bytes.len()));
        }
        let private =
            <Kem as hpke::Kem>::PrivateKey::from_bytes(bytes).map_err(|_| KeyError::Invalid)?;
        let public = <Kem as hpke::Kem>::sk_to_pk(&private);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&public.to_bytes());
        Ok(Self {
            private,
            public: PublicKey(pk),
        })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The key file text: a label line and the base64 private key.
    pub fn to_file_text(&self) -> String {
        format!(
            "{KEY_FILE_LABEL}\n{}\n",
            B64.encode(self.private.to_bytes())
        )
    }

    /// Parses key file text (the label line is optional).
    pub fn from_file_text(text: &str) -> Result<Self, KeyError> {
        let body: String = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != KEY_FILE_LABEL)
            .collect();
        let bytes = B64.decode(body).map_err(|_| KeyError::NotBase64)?;
        Self::from_private_bytes(&bytes)
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_file_text(&text).map_err(|source| KeyFileError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Writes a new key file, readable by its owner only (mode 0600); never overwrites.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let display = path.display().to_string();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyFileError::Exists(display.clone())
                } else {
                    KeyFileError::Write {
                        path: display.clone(),
                        source,
                    }
                }
            })?;
        file.write_all(self.to_file_text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| KeyFileError::Write {
                path: display,
                source,
            })
    }
}

/// A sealed batch and the receipt tag the authority's receipt must carry.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The envelope bytes (header ‖ enc ‖ ciphertext).
    pub envelope: Vec<u8>,
    /// The expected receipt tag.
    pub receipt_tag: [u8; 32],
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("envelope_bytes", &self.envelope.len())
            .finish()
    }
}

/// The readable header of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// The batch's id (gateway and sequence).
    pub batch_id: BatchId,
    /// First ENIN of the batch's window.
    pub window_start: Enin,
}

/// Why an envelope cannot be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Larger than [`MAX_ENVELOPE_BYTES`].
    #[error("envelope is {0} bytes, more than the {max} accepted", max = MAX_ENVELOPE_BYTES)]
    TooLarge(usize),
    /// Not a venuetrace envelope.
    #[error("not a venuetrace batch envelope (bad magic)")]
    Magic,
    /// An envelope version this code does not read.
    #[error("envelope version {0} is not supported (this build reads version {ENVELOPE_VERSION})")]
    Version(u8),
    /// Shorter than its header says.
    #[error("envelope is truncated ({0} bytes)")]
    Truncated(usize),
    /// The header's gateway id is not valid.
    #[error("envelope header has an invalid gateway id")]
    Header(#[source] BatchError),
    /// A key is unusable.
    #[error("unusable key")]
    Key(#[source] KeyError),
    /// HPKE failed: wrong authority key, wrong gateway key (not the sender), or tampering.
    #[error(
        "envelope does not open with the authority key and this gateway's key (wrong key or tampered)"
    )]
    Open,
    /// Sealing failed inside HPKE.
    #[error("HPKE sealing failed: {0}")]
    Seal(String),
    /// The plaintext is not a valid batch.
    #[error("opened envelope holds an invalid batch")]
    Batch(#[source] BatchError),
    /// The header disagrees with the batch inside.
    #[error("envelope header says {header}, the batch inside says {inside}")]
    Mismatch {
        /// From the header.
        header: String,
        /// From the batch.
        inside: String,
    },
}

fn header_bytes(batch_id: &BatchId, window_start: Enin) -> Vec<u8> {
    let id = batch_id.gateway.as_str().as_bytes();
    let mut h = Vec::with_capacity(4 + 2 + id.len() + 12);
    h.extend_from_slice(MAGIC);
    h.push(ENVELOPE_VERSION);
    h.push(id.len() as u8); // ids are at most 64 bytes (GatewayId)
    h.extend_from_slice(id);
    h.extend_from_slice(&batch_id.sequence.to_be_bytes());
    h.extend_from_slice(&window_start.0.to_be_bytes());
    h
}

fn receipt_context(batch_id: &BatchId) -> Vec<u8> {
    format!("venuetrace/v1 receipt {batch_id}").into_bytes()
}

/// Seals a batch from `gateway` to `authority`.
pub fn seal(batch: &Batch, gateway: &KeyPair, authority: &PublicKey) -> Result<Sealed, SealError> {
    seal_raw(
        &batch.id,
        batch.window_start,
        &batch.encode(),
        gateway,
        authority,
    )
}

/// Seals arbitrary plaintext under a batch header: what [`seal`] does with an encoded batch.
/// Public for tools and tests that must produce hostile envelopes (e.g. a batch of another
/// schema version); gateways use [`seal`].
pub fn seal_raw(
    batch_id: &BatchId,
    window_start: Enin,
    plaintext: &[u8],
    gateway: &KeyPair,
    authority: &PublicKey,
) -> Result<Sealed, SealError> {
    let header = header_bytes(batch_id, window_start);
    let mode = OpModeS::Auth((
        gateway.private.clone(),
        gateway.public.hpke().map_err(SealError::Key)?,
    ));
    let (enc, mut ctx) = hpke::setup_sender::<Aead, Kdf, Kem>(
        &mode,
        &authority.hpke().map_err(SealError::Key)?,
        INFO,
    )
    .map_err(|e| SealError::Seal(e.to_string()))?;
    let ciphertext = ctx
        .seal(plaintext, &header)
        .map_err(|e| SealError::Seal(e.to_string()))?;
    let mut receipt_tag = [0u8; 32];
    ctx.export(&receipt_context(batch_id), &mut receipt_tag)
        .map_err(|e| SealError::Seal(e.to_string()))?;
    let mut envelope = header;
    envelope.extend_from_slice(&enc.to_bytes());
    envelope.extend_from_slice(&ciphertext);
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(SealError::TooLarge(envelope.len()));
    }
    Ok(Sealed {
        envelope,
        receipt_tag,
    })
}

/// Reads an envelope's header without opening it (to find the gateway's key), returning the
/// header and its length in bytes.
pub fn read_header(envelope: &[u8]) -> Result<(EnvelopeHeader, usize), SealError> {
    if envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(SealError::TooLarge(envelope.len()));
    }
    if envelope.len() < 6 || &envelope[..4] != MAGIC {
        return Err(if envelope.len() < 6 && MAGIC.starts_with(envelope) {
            SealError::Truncated(envelope.len())
        } else {
            SealError::Magic
        });
    }
    if envelope[4] != ENVELOPE_VERSION {
        return Err(SealError::Version(envelope[4]));
    }
    let id_len = usize::from(envelope[5]);
    let header_len = 6 + id_len + 12;
    if envelope.len() < header_len + ENC_LEN + 16 {
        return Err(SealError::Truncated(envelope.len()));
    }
    let id = std::str::from_utf8(&envelope[6..6 + id_len])
        .map_err(|_| SealError::Header(BatchError::BadId("<not UTF-8>".into())))?;
    let gateway = GatewayId::new(id).map_err(SealError::Header)?;
    let at = 6 + id_len;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&envelope[at..at + 8]);
    let mut start = [0u8; 4];
    start.copy_from_slice(&envelope[at + 8..at + 12]);
    Ok((
        EnvelopeHeader {
            batch_id: BatchId {
                gateway,
                sequence: u64::from_be_bytes(seq),
            },
            window_start: Enin(u32::from_be_bytes(start)),
        },
        header_len,
    ))
}

/// An opened envelope.
#[derive(Debug)]
pub struct Opened {
    /// The validated batch.
    pub batch: Batch,
    /// The receipt tag to send back.
    pub receipt_tag: [u8; 32],
}

/// Opens an envelope with the authority's key pair and the sending gateway's public key, and
/// validates the batch inside (including that it agrees with the header).
pub fn open(
    envelope: &[u8],
    authority: &KeyPair,
    gateway: &PublicKey,
) -> Result<Opened, SealError> {
    let (header, header_len) = read_header(envelope)?;
    let enc =
        <Kem as hpke::Kem>::EncappedKey::from_bytes(&envelope[header_len..header_len + ENC_LEN])
            .map_err(|_| SealError::Open)?;
    let mode = OpModeR::Auth(gateway.hpke().map_err(SealError::Key)?);
    let mut ctx = hpke::setup_receiver::<Aead, Kdf, Kem>(&mode, &authority.private, &enc, INFO)
        .map_err(|_| SealError::Open)?;
    let plaintext = ctx
        .open(&envelope[header_len + ENC_LEN..], &envelope[..header_len])
        .map_err(|_| SealError::Open)?;
    let batch = Batch::decode(&plaintext).map_err(SealError::Batch)?;
    if batch.id != header.batch_id || batch.window_start != header.window_start {
        return Err(SealError::Mismatch {
            header: format!("{} window {}", header.batch_id, header.window_start.0),
            inside: format!("{} window {}", batch.id, batch.window_start.0),
        });
    }
    let mut receipt_tag = [0u8; 32];
    ctx.export(&receipt_context(&batch.id), &mut receipt_tag)
        .map_err(|_| SealError::Open)?;
    Ok(Opened { batch, receipt_tag })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Window;
    use crate::crypto::{Aem, Rpi};

    fn batch() -> Batch {
        let sighting = crate::aggregate::Sighting {
            rpi: Rpi::from_bytes([7; 16]),
            aem: Aem::from_bytes([1, 2, 3, 4]),
            first_minute: 1,
            last_minute: 1,
            reports: 1,
            minutes: vec![crate::aggregate::MinuteRssi {
                minute: 1,
                count: 1,
                min: -60,
                mean: -60,
                max: -60,
            }],
        };
        let counters = crate::aggregate::Counters {
            adverts: 1,
            gaen: 1,
            ..Default::default()
        };
        let window = Window {
            start: Enin(2_650_000),
            intervals: 1,
            closed_early: false,
            counters,
            sightings: vec![sighting],
            tempids: Vec::new(),
        };
        Batch::from_window(GatewayId::new("gw-1").expect("id"), 42, "souk", 0, window)
    }

    /// Sealed by a gateway, opened by the authority with that gateway's public key: same
    /// batch, same receipt tag on both sides; the envelope holds no plaintext RPI.
    #[test]
    fn seal_open_round_trip() {
        let (gw, auth) = (KeyPair::generate(), KeyPair::generate());
        let b = batch();
        let sealed = seal(&b, &gw, &auth.public()).expect("seals");
        assert!(
            !sealed.envelope.windows(16).any(|w| w == [7; 16]),
            "RPI in clear"
        );
        let (header, _) = read_header(&sealed.envelope).expect("header");
        assert_eq!(header.batch_id.to_string(), "gw-1:42");
        let opened = open(&sealed.envelope, &auth, &gw.public()).expect("opens");
        assert_eq!(opened.batch, b);
        assert_eq!(opened.receipt_tag, sealed.receipt_tag);
        // A second seal of the same batch gets a fresh ephemeral key: another tag.
        assert_ne!(
            seal(&b, &gw, &auth.public()).expect("seals").receipt_tag,
            sealed.receipt_tag
        );
    }

    /// Wrong authority key, another gateway's key, any flipped byte, truncation: refused.
    #[test]
    fn refuses_wrong_keys_and_tampering() {
        let (gw, auth, other) = (
            KeyPair::generate(),
            KeyPair::generate(),
            KeyPair::generate(),
        );
        let sealed = seal(&batch(), &gw, &auth.public()).expect("seals");
        assert!(matches!(
            open(&sealed.envelope, &other, &gw.public()),
            Err(SealError::Open)
        ));
        assert!(matches!(
            open(&sealed.envelope, &auth, &other.public()),
            Err(SealError::Open)
        ));
        for i in 0..sealed.envelope.len() {
            let mut bad = sealed.envelope.clone();
            bad[i] ^= 0x01;
            assert!(
                open(&bad, &auth, &gw.public()).is_err(),
                "flip at {i} accepted"
            );
        }
        for cut in 0..sealed.envelope.len() {
            assert!(open(&sealed.envelope[..cut], &auth, &gw.public()).is_err());
        }
    }

    /// Key files: round trip, mode 0600, never overwritten; bad keys are clear errors; Debug
    /// never shows the private key.
    #[test]
    fn key_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gateway.key");
        let kp = KeyPair::generate();
        kp.save(&path).expect("saves");
        assert_eq!(
            std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(KeyPair::load(&path).expect("loads").public(), kp.public());
        assert!(matches!(kp.save(&path), Err(KeyFileError::Exists(_))));
        assert!(
            !format!("{kp:?}").contains(&kp.to_file_text().lines().nth(1).expect("line")[..20])
        );
        assert_eq!(
            PublicKey::parse(&kp.public().to_base64()).expect("parses"),
            kp.public()
        );
        assert_eq!(PublicKey::parse("AAAA"), Err(KeyError::Length(3)));
        assert_eq!(PublicKey::parse("!!"), Err(KeyError::NotBase64));
    }
}
