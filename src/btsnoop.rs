//! btsnoop capture files, as `btmon -w` and Android's "Bluetooth HCI snoop log" write them:
//! the reader (records, with corrupt ones reported and skipped where the file allows), the
//! writer (for tests, fixtures and the simulator), and the adverts a capture holds (its HCI
//! LE advertising report events, decoded by [`crate::hci`]).
//!
//! Pure: works on any `std::io::Read`/`Write` (a file, a byte slice); no async, no clock.
//! Opening files, pacing and sending adverts to the gateway pipeline is
//! `crate::gateway::replay`'s job.
//!
//! # Format (RFC 1761 "snoop", as BlueZ `src/shared/btsnoop.c` reads and writes it)
//!
//! A 16-byte header: the magic `"btsnoop\0"`, the version (u32 big-endian, 1), the datalink
//! (u32 BE). Then records: original length, included length, flags, cumulative drops (each
//! u32 BE), a timestamp (i64 BE, microseconds since 0000-01-01 00:00 AD, i.e. Unix time plus
//! [`UNIX_EPOCH_US`]), and the included bytes. Datalinks read here:
//!
//! - 1001 ([`Datalink::Hci`], unencapsulated HCI): the packet type is in the flags: bit 0 is
//!   the direction (1 = received by the host), bit 1 says command/event (1) or data (0).
//! - 1002 ([`Datalink::H4`], HCI UART, Android's snoop log): the first byte of each packet is
//!   the H4 packet type (0x01 command, 0x02 ACL, 0x03 SCO, 0x04 event, 0x05 ISO); the flags
//!   are as for 1001.
//! - 2001 ([`Datalink::Monitor`], Linux monitor, `btmon -w`): flags = adapter index << 16 |
//!   opcode (2 command, 3 event, 4/5 ACL TX/RX, ...; 0 "new index" and others are monitor
//!   notes, not HCI packets).
//!
//! # Corrupt records
//!
//! A record whose included length exceeds its original length is reported as an error and
//! skipped; reading continues after it (its included length still frames the next record).
//! A record longer than [`MAX_RECORD_LEN`] cannot be framed with any confidence, and a record
//! cut short by the end of the file has nothing after it: both end the capture after the
//! error. [`BtsnoopReader::next_record`] then returns `Ok(None)`, so callers simply count
//! errors and keep calling.

use crate::advert::Advert;
use crate::hci::{self, EventKind, HciError, ReportCounts};
use std::io::{self, Read, Write};

/// The identification pattern a btsnoop file starts with.
pub const MAGIC: [u8; 8] = *b"btsnoop\0";
/// The only btsnoop version there is.
pub const VERSION: u32 = 1;
/// Length of the file header.
pub const HEADER_LEN: usize = 16;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 24;
/// Largest included length accepted for one record (64 KiB; HCI packets are far smaller).
pub const MAX_RECORD_LEN: u32 = 64 * 1024;
/// The Unix epoch in btsnoop time: microseconds from 0000-01-01 to 1970-01-01.
pub const UNIX_EPOCH_US: i64 = 0x00dc_ddb3_0f2f_8000;

/// Record flag bit 0: the packet was received by the host (1001 and 1002).
pub const FLAG_RECEIVED: u32 = 1 << 0;
/// Record flag bit 1: a command or event, not data (1001 and 1002).
pub const FLAG_COMMAND_OR_EVENT: u32 = 1 << 1;

/// H4 packet types (first byte of each packet with datalink 1002).
pub mod h4_type {
    /// HCI command.
    pub const COMMAND: u8 = 0x01;
    /// ACL data.
    pub const ACL: u8 = 0x02;
    /// Synchronous (SCO) data.
    pub const SCO: u8 = 0x03;
    /// HCI event.
    pub const EVENT: u8 = 0x04;
    /// Isochronous data.
    pub const ISO: u8 = 0x05;
}

/// Linux monitor opcodes (low 16 bits of the flags with datalink 2001), as in BlueZ's
/// `btsnoop.h`.
pub mod monitor_opcode {
    /// A controller appeared (payload: type, bus, address, name).
    pub const NEW_INDEX: u16 = 0;
    /// A controller went away.
    pub const DEL_INDEX: u16 = 1;
    /// HCI command (host to controller).
    pub const COMMAND: u16 = 2;
    /// HCI event (controller to host).
    pub const EVENT: u16 = 3;
    /// ACL data, host to controller.
    pub const ACL_TX: u16 = 4;
    /// ACL data, controller to host.
    pub const ACL_RX: u16 = 5;
    /// SCO data, host to controller.
    pub const SCO_TX: u16 = 6;
    /// SCO data, controller to host.
    pub const SCO_RX: u16 = 7;
    /// A text note from the system.
    pub const SYSTEM_NOTE: u16 = 12;
    /// ISO data, host to controller.
    pub const ISO_TX: u16 = 18;
    /// ISO data, controller to host.
    pub const ISO_RX: u16 = 19;
}

/// The datalink type of a btsnoop file: how each record says what packet it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datalink {
    /// 1001: unencapsulated HCI; the type is in the flags.
    Hci,
    /// 1002: HCI UART (H4); the first packet byte is the type. Android's snoop log.
    H4,
    /// 2001: Linux monitor (`btmon -w`); the flags hold adapter index and opcode.
    Monitor,
}

impl Datalink {
    /// The datalink number in the file header.
    pub const fn code(self) -> u32 {
        match self {
            Datalink::Hci => 1001,
            Datalink::H4 => 1002,
            Datalink::Monitor => 2001,
        }
    }

    /// The datalink with this header number, if it is one this module reads.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            1001 => Some(Datalink::Hci),
            1002 => Some(Datalink::H4),
            2001 => Some(Datalink::Monitor),
            _ => None,
        }
    }
}

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// An HCI command.
    Command,
    /// An HCI event.
    Event,
    /// ACL data sent by the host (with datalink 1001, also SCO, which it cannot tell apart).
    AclTx,
    /// ACL data received by the host.
    AclRx,
    /// SCO data sent by the host.
    ScoTx,
    /// SCO data received by the host.
    ScoRx,
    /// ISO data sent by the host.
    IsoTx,
    /// ISO data received by the host.
    IsoRx,
    /// A Linux monitor record that is not an HCI packet (new index, system note, ...): its
    /// opcode. Datalink 2001 only.
    MonitorNote(u16),
    /// A packet type this reader does not know (or an empty H4 record).
    Unknown,
}

/// Why a btsnoop file or one of its records cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BtsnoopError {
    /// The file ends inside its 16-byte header.
    #[error("btsnoop header is truncated: {len} of 16 bytes")]
    TruncatedHeader {
        /// Bytes present.
        len: usize,
    },
    /// The file does not start with `"btsnoop\0"`.
    #[error("not a btsnoop file: it starts with {found:02x?}, not \"btsnoop\\0\"")]
    BadMagic {
        /// The first 8 bytes (zero-padded if the file is shorter).
        found: [u8; 8],
    },
    /// The header's version is not 1.
    #[error("btsnoop version {0} is not supported (only version 1 exists)")]
    UnsupportedVersion(u32),
    /// The header's datalink is not one this reader decodes.
    #[error(
        "btsnoop datalink {0} is not supported (1001 HCI, 1002 HCI UART/H4 and 2001 Linux \
         monitor are)"
    )]
    UnsupportedDatalink(u32),
    /// A record includes more bytes than the packet had. Skipped; reading continues.
    #[error(
        "btsnoop record {record} at byte {offset}: included length {included} exceeds the \
         original length {original}"
    )]
    IncludedExceedsOriginal {
        /// Record number, from 1.
        record: u64,
        /// Offset of its header in the file.
        offset: u64,
        /// Included length.
        included: u32,
        /// Original length.
        original: u32,
    },
    /// A record claims more than [`MAX_RECORD_LEN`] bytes. Ends the capture.
    #[error(
        "btsnoop record {record} at byte {offset}: included length {included} exceeds the \
         65536-byte limit"
    )]
    RecordTooLong {
        /// Record number, from 1.
        record: u64,
        /// Offset of its header in the file.
        offset: u64,
        /// Included length.
        included: u32,
    },
    /// The file ends inside a record. Ends the capture.
    #[error(
        "btsnoop record {record} at byte {offset} is truncated: {needed} bytes needed, \
         {available} present"
    )]
    TruncatedRecord {
        /// Record number, from 1.
        record: u64,
        /// Offset of its header in the file.
        offset: u64,
        /// Header and included bytes the record needs.
        needed: u64,
        /// Bytes the file still had.
        available: u64,
    },
    /// Reading failed (not a format problem). Ends the capture.
    #[error("reading btsnoop data failed at byte {offset}")]
    Io {
        /// Where the read started.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl BtsnoopError {
    /// True for errors about one record's contents (counted as corrupt records), false for
    /// header errors and I/O failures.
    pub fn is_corrupt_record(&self) -> bool {
        matches!(
            self,
            BtsnoopError::IncludedExceedsOriginal { .. }
                | BtsnoopError::RecordTooLong { .. }
                | BtsnoopError::TruncatedRecord { .. }
        )
    }
}

/// One record of a btsnoop file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Record number, from 1 (as Wireshark numbers frames).
    pub number: u64,
    /// Offset of the record header in the file.
    pub offset: u64,
    /// The file's datalink, which says how to read `flags` and `data`.
    pub datalink: Datalink,
    /// Original length of the packet.
    pub original_len: u32,
    /// Packet flags (see [`Datalink`]).
    pub flags: u32,
    /// Cumulative drops.
    pub drops: u32,
    /// Timestamp, Unix microseconds (negative before 1970).
    pub timestamp_us: i64,
    /// The included bytes, as stored (with the H4 type byte for datalink 1002).
    pub data: Vec<u8>,
}

impl Record {
    /// The timestamp in Unix milliseconds (0 for times before 1970).
    pub fn time_ms(&self) -> u64 {
        u64::try_from(self.timestamp_us.div_euclid(1000)).unwrap_or(0)
    }

    /// The adapter index (datalink 2001 only).
    pub fn adapter_index(&self) -> Option<u16> {
        (self.datalink == Datalink::Monitor).then_some((self.flags >> 16) as u16)
    }

    /// What the record holds, and the packet bytes (without the H4 type byte).
    pub fn packet(&self) -> (PacketKind, &[u8]) {
        let received = self.flags & FLAG_RECEIVED != 0;
        let by_direction = |tx, rx| if received { rx } else { tx };
        match self.datalink {
            Datalink::Hci => {
                let kind = match (self.flags & FLAG_COMMAND_OR_EVENT != 0, received) {
                    (true, true) => PacketKind::Event,
                    (true, false) => PacketKind::Command,
                    (false, _) => by_direction(PacketKind::AclTx, PacketKind::AclRx),
                };
                (kind, &self.data)
            }
            Datalink::H4 => {
                let Some((&h4, packet)) = self.data.split_first() else {
                    return (PacketKind::Unknown, &[]);
                };
                let kind = match h4 {
                    h4_type::COMMAND => PacketKind::Command,
                    h4_type::EVENT => PacketKind::Event,
                    h4_type::ACL => by_direction(PacketKind::AclTx, PacketKind::AclRx),
                    h4_type::SCO => by_direction(PacketKind::ScoTx, PacketKind::ScoRx),
                    h4_type::ISO => by_direction(PacketKind::IsoTx, PacketKind::IsoRx),
                    _ => PacketKind::Unknown,
                };
                (kind, packet)
            }
            Datalink::Monitor => {
                let kind = match (self.flags & 0xFFFF) as u16 {
                    monitor_opcode::COMMAND => PacketKind::Command,
                    monitor_opcode::EVENT => PacketKind::Event,
                    monitor_opcode::ACL_TX => PacketKind::AclTx,
                    monitor_opcode::ACL_RX => PacketKind::AclRx,
                    monitor_opcode::SCO_TX => PacketKind::ScoTx,
                    monitor_opcode::SCO_RX => PacketKind::ScoRx,
                    monitor_opcode::ISO_TX => PacketKind::IsoTx,
                    monitor_opcode::ISO_RX => PacketKind::IsoRx,
                    other => PacketKind::MonitorNote(other),
                };
                (kind, &self.data)
            }
        }
    }

    /// The HCI event packet (event code, length, parameters), if this record holds one.
    pub fn hci_event(&self) -> Option<&[u8]> {
        match self.packet() {
            (PacketKind::Event, packet) => Some(packet),
            _ => None,
        }
    }
}

/// Reads as many bytes as `buf` holds, stopping early only at the end of the input.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(word)
}

/// Reads the records of a btsnoop file, one at a time (also an iterator of them).
#[derive(Debug)]
pub struct BtsnoopReader<R> {
    inner: R,
    datalink: Datalink,
    /// Offset of the next record header.
    offset: u64,
    /// Number of the next record.
    next_number: u64,
    finished: bool,
}

impl<R: Read> BtsnoopReader<R> {
    /// Reads and checks the file header.
    pub fn new(mut inner: R) -> Result<Self, BtsnoopError> {
        let mut header = [0u8; HEADER_LEN];
        let len = read_full(&mut inner, &mut header)
            .map_err(|source| BtsnoopError::Io { offset: 0, source })?;
        let magic_len = len.min(MAGIC.len());
        if header[..magic_len] != MAGIC[..magic_len] {
            let mut found = [0u8; 8];
            found[..magic_len].copy_from_slice(&header[..magic_len]);
            return Err(BtsnoopError::BadMagic { found });
        }
        if len < HEADER_LEN {
            return Err(BtsnoopError::TruncatedHeader { len });
        }
        let version = be32(&header, 8);
        if version != VERSION {
            return Err(BtsnoopError::UnsupportedVersion(version));
        }
        let code = be32(&header, 12);
        let datalink = Datalink::from_code(code).ok_or(BtsnoopError::UnsupportedDatalink(code))?;
        Ok(Self {
            inner,
            datalink,
            offset: HEADER_LEN as u64,
            next_number: 1,
            finished: false,
        })
    }

    /// The file's datalink.
    pub fn datalink(&self) -> Datalink {
        self.datalink
    }

    /// True once the file has ended (cleanly, or after an error that leaves nothing to read).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next record, `Ok(None)` at the end of the file. After an error, calling again
    /// continues with the next record when the file allows it (see the module documentation),
    /// or returns `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<Record>, BtsnoopError> {
        if self.finished {
            return Ok(None);
        }
        let result = self.read_record();
        if matches!(
            result,
            Ok(None)
                | Err(BtsnoopError::Io { .. }
                    | BtsnoopError::RecordTooLong { .. }
                    | BtsnoopError::TruncatedRecord { .. })
        ) {
            self.finished = true;
        }
        result
    }

    fn read_record(&mut self) -> Result<Option<Record>, BtsnoopError> {
        let offset = self.offset;
        let record = self.next_number;
        let mut header = [0u8; RECORD_HEADER_LEN];
        let got = read_full(&mut self.inner, &mut header)
            .map_err(|source| BtsnoopError::Io { offset, source })?;
        if got == 0 {
            return Ok(None);
        }
        self.next_number += 1;
        if got < RECORD_HEADER_LEN {
            return Err(BtsnoopError::TruncatedRecord {
                record,
                offset,
                needed: RECORD_HEADER_LEN as u64,
                available: got as u64,
            });
        }
        let original_len = be32(&header, 0);
        let included = be32(&header, 4);
        let flags = be32(&header, 8);
        let drops = be32(&header, 12);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&header[16..24]);
        let timestamp_us = i64::from_be_bytes(ts).saturating_sub(UNIX_EPOCH_US);
        if included > MAX_RECORD_LEN {
            return Err(BtsnoopError::RecordTooLong {
                record,
                offset,
                included,
            });
        }
        let mut data = vec![0u8; included as usize];
        let data_offset = offset + RECORD_HEADER_LEN as u64;
        let got = read_full(&mut self.inner, &mut data).map_err(|source| BtsnoopError::Io {
            offset: data_offset,
            source,
        })?;
        if got < data.len() {
            return Err(BtsnoopError::TruncatedRecord {
                record,
                offset,
                needed: (RECORD_HEADER_LEN + data.len()) as u64,
                available: (RECORD_HEADER_LEN + got) as u64,
            });
        }
        self.offset = data_offset + u64::from(included);
        if included > original_len {
            return Err(BtsnoopError::IncludedExceedsOriginal {
                record,
                offset,
                included,
                original: original_len,
            });
        }
        Ok(Some(Record {
            number: record,
            offset,
            datalink: self.datalink,
            original_len,
            flags,
            drops,
            timestamp_us,
            data,
        }))
    }
}

impl<R: Read> Iterator for BtsnoopReader<R> {
    type Item = Result<Record, BtsnoopError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// What replaying a capture found, whatever its format.
///
/// For JSON Lines captures (see `crate::gateway::replay`), `records` counts lines that are
/// neither blank nor comments, `corrupt_records` the bad ones, and `events`,
/// `malformed_events`, `non_advert_packets`, `bad_ad_data` and `incomplete_data` stay 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayCounters {
    /// Records read, corrupt ones included.
    pub records: u64,
    /// HCI event packets among them (malformed ones included).
    pub events: u64,
    /// Adverts decoded.
    pub adverts: u64,
    /// Records that could not be read (see [`BtsnoopError::is_corrupt_record`]).
    pub corrupt_records: u64,
    /// Events that are not well-formed HCI events ([`HciError`]).
    pub malformed_events: u64,
    /// Records that are not LE advertising report events (commands, data, other events,
    /// monitor notes).
    pub non_advert_packets: u64,
    /// Reports skipped because the RSSI was not available (127).
    pub rssi_unavailable: u64,
    /// Reports skipped because their advertising data was malformed.
    pub bad_ad_data: u64,
    /// Extended reports skipped because their data was incomplete.
    pub incomplete_data: u64,
}

impl ReplayCounters {
    /// Adds what one advertising report event held.
    pub fn add_reports(&mut self, counts: &ReportCounts) {
        self.adverts += counts.adverts as u64;
        self.rssi_unavailable += counts.rssi_unavailable as u64;
        self.bad_ad_data += counts.bad_ad_data as u64;
        self.incomplete_data += counts.incomplete_data as u64;
    }
}

/// A problem found while reading the adverts of a capture. Skipped and counted; only a
/// [`BtsnoopError::Io`] ends the capture (and the iteration) early.
#[derive(Debug, thiserror::Error)]
pub enum CaptureProblem {
    /// A record could not be read.
    #[error(transparent)]
    Record(#[from] BtsnoopError),
    /// A record holds an event that is not a well-formed HCI event.
    #[error("btsnoop record {record}: malformed HCI event")]
    MalformedEvent {
        /// Record number, from 1.
        record: u64,
        /// What is wrong with it.
        #[source]
        source: HciError,
    },
}

/// The adverts of a btsnoop capture, in file order, each stamped with its record's time;
/// problems come in between as `Err` items (iteration continues after them), and
/// [`counters`](Self::counters) says what was read and skipped.
#[derive(Debug)]
pub struct BtsnoopAdverts<R> {
    reader: BtsnoopReader<R>,
    counters: ReplayCounters,
    /// Adverts of the current event, handed out from `next_advert`; reused across events.
    pending: Vec<Advert>,
    next_advert: usize,
}

impl<R: Read> BtsnoopAdverts<R> {
    /// Reads the file header of `reader`.
    pub fn new(reader: R) -> Result<Self, BtsnoopError> {
        Ok(Self::from_reader(BtsnoopReader::new(reader)?))
    }

    /// Continues from a reader whose header has been read.
    pub fn from_reader(reader: BtsnoopReader<R>) -> Self {
        Self {
            reader,
            counters: ReplayCounters::default(),
            pending: Vec::new(),
            next_advert: 0,
        }
    }

    /// The file's datalink.
    pub fn datalink(&self) -> Datalink {
        self.reader.datalink()
    }

    /// What has been read so far.
    pub fn counters(&self) -> ReplayCounters {
        self.counters
    }
}

impl<R: Read> BtsnoopAdverts<R> {
    /// Reads one record and appends its adverts to `out`: `None` at the end of the capture,
    /// otherwise how many were appended (0 for records that are not advertising reports) or
    /// the problem with the record. Bounded work per call, for callers that must stay
    /// responsive (cancellation) however many non-advert records a capture holds.
    pub fn read_next_record(
        &mut self,
        out: &mut Vec<Advert>,
    ) -> Option<Result<usize, CaptureProblem>> {
        let record = match self.reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => return None,
            Err(e) => {
                if e.is_corrupt_record() {
                    self.counters.records += 1;
                    self.counters.corrupt_records += 1;
                }
                return Some(Err(e.into()));
            }
        };
        self.counters.records += 1;
        let Some(event) = record.hci_event() else {
            self.counters.non_advert_packets += 1;
            return Some(Ok(0));
        };
        self.counters.events += 1;
        match hci::parse_event(event, record.time_ms(), out) {
            Ok(EventKind::AdvertisingReports(counts)) => {
                self.counters.add_reports(&counts);
                Some(Ok(counts.adverts))
            }
            Ok(EventKind::Other) => {
                self.counters.non_advert_packets += 1;
                Some(Ok(0))
            }
            Err(source) => {
                self.counters.malformed_events += 1;
                Some(Err(CaptureProblem::MalformedEvent {
                    record: record.number,
                    source,
                }))
            }
        }
    }
}

impl<R: Read> Iterator for BtsnoopAdverts<R> {
    type Item = Result<Advert, CaptureProblem>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(slot) = self.pending.get_mut(self.next_advert) {
                self.next_advert += 1;
                return Some(Ok(std::mem::take(slot)));
            }
            let mut pending = std::mem::take(&mut self.pending);
            pending.clear();
            self.next_advert = 0;
            let result = self.read_next_record(&mut pending);
            self.pending = pending;
            match result? {
                Ok(_) => {}
                Err(problem) => return Some(Err(problem)),
            }
        }
    }
}

/// All adverts of a btsnoop capture, and what was read and skipped. Corrupt records and
/// malformed events are counted, not fatal; a bad file header or an I/O error is an error.
pub fn adverts_from_btsnoop<R: Read>(
    reader: R,
) -> Result<(Vec<Advert>, ReplayCounters), BtsnoopError> {
    let mut stream = BtsnoopAdverts::new(reader)?;
    let mut adverts = Vec::new();
    for item in stream.by_ref() {
        match item {
            Ok(advert) => adverts.push(advert),
            Err(CaptureProblem::Record(e @ BtsnoopError::Io { .. })) => return Err(e),
            Err(_) => {}
        }
    }
    Ok((adverts, stream.counters()))
}

/// Why a record cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum BtsnoopWriteError {
    /// Writing failed.
    #[error("writing btsnoop data failed")]
    Io(#[from] io::Error),
    /// The packet kind has no encoding in this file's datalink.
    #[error(
        "a {kind:?} packet cannot be written to a btsnoop file with datalink {}",
        .datalink.code()
    )]
    Unrepresentable {
        /// The packet kind.
        kind: PacketKind,
        /// The file's datalink.
        datalink: Datalink,
    },
    /// The packet is longer than a record may be.
    #[error("a {len}-byte packet exceeds the {MAX_RECORD_LEN}-byte btsnoop record limit")]
    TooLong {
        /// The packet's length.
        len: usize,
    },
}

/// A record header written as given, for crafting hostile files (tests, fixtures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecordHeader {
    /// Original length (the included length is the data's).
    pub original_len: u32,
    /// Flags.
    pub flags: u32,
    /// Cumulative drops.
    pub drops: u32,
    /// Timestamp, Unix microseconds.
    pub timestamp_us: i64,
}

/// Writes btsnoop files: for tests, fixtures and the simulator. Captures may hold device
/// addresses: write synthetic data only (DESIGN.md §3 rule 1).
#[derive(Debug)]
pub struct BtsnoopWriter<W: Write> {
    inner: W,
    datalink: Datalink,
}

impl<W: Write> BtsnoopWriter<W> {
    /// Writes the file header.
    pub fn new(mut inner: W, datalink: Datalink) -> Result<Self, BtsnoopWriteError> {
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_be_bytes());
        header[12..].copy_from_slice(&datalink.code().to_be_bytes());
        inner.write_all(&header)?;
        Ok(Self { inner, datalink })
    }

    /// The file's datalink.
    pub fn datalink(&self) -> Datalink {
        self.datalink
    }

    /// Writes one packet (without an H4 type byte: it is added for datalink 1002) received or
    /// sent at `timestamp_us` (Unix microseconds). `adapter` is the controller index, stored
    /// with datalink 2001 only.
    pub fn write_packet(
        &mut self,
        timestamp_us: i64,
        adapter: u16,
        kind: PacketKind,
        packet: &[u8],
    ) -> Result<(), BtsnoopWriteError> {
        let unrepresentable = BtsnoopWriteError::Unrepresentable {
            kind,
            datalink: self.datalink,
        };
        let (h4, flags) = match self.datalink {
            Datalink::Hci | Datalink::H4 => {
                let (h4, flags) = match kind {
                    PacketKind::Command => (h4_type::COMMAND, FLAG_COMMAND_OR_EVENT),
                    PacketKind::Event => (h4_type::EVENT, FLAG_COMMAND_OR_EVENT | FLAG_RECEIVED),
                    PacketKind::AclTx => (h4_type::ACL, 0),
                    PacketKind::AclRx => (h4_type::ACL, FLAG_RECEIVED),
                    PacketKind::ScoTx if self.datalink == Datalink::H4 => (h4_type::SCO, 0),
                    PacketKind::ScoRx if self.datalink == Datalink::H4 => {
                        (h4_type::SCO, FLAG_RECEIVED)
                    }
                    PacketKind::IsoTx if self.datalink == Datalink::H4 => (h4_type::ISO, 0),
                    PacketKind::IsoRx if self.datalink == Datalink::H4 => {
                        (h4_type::ISO, FLAG_RECEIVED)
                    }
                    _ => return Err(unrepresentable),
                };
                ((self.datalink == Datalink::H4).then_some(h4), flags)
            }
            Datalink::Monitor => {
                let opcode = match kind {
                    PacketKind::Command => monitor_opcode::COMMAND,
                    PacketKind::Event => monitor_opcode::EVENT,
                    PacketKind::AclTx => monitor_opcode::ACL_TX,
                    PacketKind::AclRx => monitor_opcode::ACL_RX,
                    PacketKind::ScoTx => monitor_opcode::SCO_TX,
                    PacketKind::ScoRx => monitor_opcode::SCO_RX,
                    PacketKind::IsoTx => monitor_opcode::ISO_TX,
                    PacketKind::IsoRx => monitor_opcode::ISO_RX,
                    PacketKind::MonitorNote(opcode) => opcode,
                    PacketKind::Unknown => return Err(unrepresentable),
                };
                (None, (u32::from(adapter) << 16) | u32::from(opcode))
            }
        };
        let len = packet.len() + usize::from(h4.is_some());
        let included = u32::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_RECORD_LEN)
            .ok_or(BtsnoopWriteError::TooLong { len })?;
        self.write_header(
            RawRecordHeader {
                original_len: included,
                flags,
                drops: 0,
                timestamp_us,
            },
            included,
        )?;
        if let Some(h4) = h4 {
            self.inner.write_all(&[h4])?;
        }
        self.inner.write_all(packet)?;
        Ok(())
    }

    /// Writes one HCI event packet received at `time_ms` (Unix milliseconds), adapter 0.
    pub fn write_event(&mut self, time_ms: u64, event: &[u8]) -> Result<(), BtsnoopWriteError> {
        let timestamp_us = i64::try_from(time_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        self.write_packet(timestamp_us, 0, PacketKind::Event, event)
    }

    /// Writes a record exactly as given (included length = `data.len()`, not checked against
    /// the original length or the limit): for crafting corrupt files.
    pub fn write_raw(
        &mut self,
        header: RawRecordHeader,
        data: &[u8],
    ) -> Result<(), BtsnoopWriteError> {
        let included = u32::try_from(data.len())
            .map_err(|_| BtsnoopWriteError::TooLong { len: data.len() })?;
        self.write_header(header, included)?;
        self.inner.write_all(data)?;
        Ok(())
    }

    fn write_header(&mut self, h: RawRecordHeader, included: u32) -> io::Result<()> {
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0..4].copy_from_slice(&h.original_len.to_be_bytes());
        header[4..8].copy_from_slice(&included.to_be_bytes());
        header[8..12].copy_from_slice(&h.flags.to_be_bytes());
        header[12..16].copy_from_slice(&h.drops.to_be_bytes());
        let ts = h.timestamp_us.saturating_add(UNIX_EPOCH_US);
        header[16..24].copy_from_slice(&ts.to_be_bytes());
        self.inner.write_all(&header)
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W, BtsnoopWriteError> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advert::{DeviceAddress, ServiceUuid};
    use crate::hci::{Report, encode_advertising_report};

    const T0_US: i64 = 1_700_000_000_000_000;

    fn gaen_ad(fill: u8) -> Vec<u8> {
        let mut data = vec![
            0x02, 0x01, 0x1A, 0x03, 0x03, 0x6F, 0xFD, 0x17, 0x16, 0x6F, 0xFD,
        ];
        data.extend(std::iter::repeat_n(fill, 20));
        data
    }

    fn event(fill: u8, rssi: i8) -> Vec<u8> {
        let ad = gaen_ad(fill);
        encode_advertising_report(&[Report::nonconnectable(DeviceAddress([fill; 6]), rssi, &ad)])
            .expect("fits")
    }

    /// A 3-record file: a command, then two advertising report events.
    fn three_records(datalink: Datalink) -> Vec<u8> {
        let mut w = BtsnoopWriter::new(Vec::new(), datalink).expect("header");
        w.write_packet(
            T0_US,
            0,
            PacketKind::Command,
            &[0x0C, 0x20, 0x02, 0x01, 0x00],
        )
        .expect("command");
        w.write_packet(T0_US + 1_500, 0, PacketKind::Event, &event(1, -40))
            .expect("event 1");
        w.write_event(1_700_000_000_002, &event(2, -50))
            .expect("event 2");
        w.into_inner().expect("flush")
    }

    /// The writer's output reads back, for each datalink: kinds, packets, times, adapter.
    #[test]
    fn writer_and_reader_round_trip() {
        for datalink in [Datalink::Hci, Datalink::H4, Datalink::Monitor] {
            let file = three_records(datalink);
            assert_eq!(&file[..8], b"btsnoop\0");
            let mut reader = BtsnoopReader::new(&file[..]).expect("header");
            assert_eq!(reader.datalink(), datalink);
            let records: Vec<Record> = reader
                .by_ref()
                .collect::<Result<_, _>>()
                .expect("all records valid");
            assert!(reader.is_finished());
            assert_eq!(records.len(), 3);
            assert_eq!(
                records[0].packet(),
                (PacketKind::Command, &[0x0C, 0x20, 0x02, 0x01, 0x00][..])
            );
            assert_eq!(records[0].hci_event(), None);
            assert_eq!(records[1].hci_event(), Some(&event(1, -40)[..]));
            assert_eq!(records[1].timestamp_us, T0_US + 1_500);
            assert_eq!(records[1].time_ms(), 1_700_000_000_001);
            assert_eq!(records[2].time_ms(), 1_700_000_000_002);
            assert_eq!(records[2].number, 3);
            let expected_index = (datalink == Datalink::Monitor).then_some(0);
            assert_eq!(records[2].adapter_index(), expected_index);

            let (adverts, counters) = adverts_from_btsnoop(&file[..]).expect("valid file");
            assert_eq!(adverts.len(), 2);
            assert_eq!(adverts[0].rssi, -40);
            assert_eq!(adverts[1].address, DeviceAddress([2; 6]));
            assert_eq!(
                adverts[1].service_data_for(ServiceUuid::from_u16(0xFD6F)),
                Some(&[2; 20][..])
            );
            assert_eq!(
                counters,
                ReplayCounters {
                    records: 3,
                    events: 2,
                    adverts: 2,
                    non_advert_packets: 1,
                    ..ReplayCounters::default()
                }
            );
        }
    }

    /// The timestamp epoch is 0000-01-01: the stored value for the Unix epoch is
    /// 0x00dcddb30f2f8000, and BlueZ's constant (2000-01-01 = 0x00E03AB44A676000) agrees.
    #[test]
    fn timestamps_use_the_year_zero_epoch() {
        let mut w = BtsnoopWriter::new(Vec::new(), Datalink::H4).expect("header");
        w.write_event(0, &[0x0E, 0]).expect("event");
        w.write_event(946_684_800_000, &[0x0E, 0]).expect("event");
        let file = w.into_inner().expect("flush");
        assert_eq!(
            file[16 + 16..16 + 24],
            0x00dc_ddb3_0f2f_8000_i64.to_be_bytes()
        );
        let second = 16 + 24 + 3 + 16;
        assert_eq!(
            file[second..second + 8],
            0x00E0_3AB4_4A67_6000_i64.to_be_bytes()
        );
        assert_eq!(
            file[16 + 11],
            0x03,
            "H4 event flags: received, command/event"
        );
    }

    /// Bad headers are refused with an error naming the problem.
    #[test]
    fn bad_headers_are_refused() {
        let good = three_records(Datalink::H4);
        let err = |bytes: &[u8]| BtsnoopReader::new(bytes).expect_err("refused");

        assert!(
            matches!(err(b"GIF89a\0\0\0\0\0\0\0\0\0\0"), BtsnoopError::BadMagic { found }
                if &found[..6] == b"GIF89a")
        );
        assert!(matches!(err(b"{\"t_ms\""), BtsnoopError::BadMagic { .. }));
        assert!(matches!(err(b""), BtsnoopError::TruncatedHeader { len: 0 }));
        assert!(matches!(
            err(&good[..12]),
            BtsnoopError::TruncatedHeader { len: 12 }
        ));

        let mut v2 = good.clone();
        v2[11] = 2;
        let e = err(&v2);
        assert!(matches!(e, BtsnoopError::UnsupportedVersion(2)));
        assert!(e.to_string().contains("version 2"));

        let mut pcap = good.clone();
        pcap[12..16].copy_from_slice(&1003u32.to_be_bytes());
        let e = err(&pcap);
        assert!(matches!(e, BtsnoopError::UnsupportedDatalink(1003)));
        assert!(e.to_string().contains("datalink 1003"), "{e}");
    }

    /// Every truncation of a 3-record file: the header errors, whole records read, and a cut
    /// inside a record is one corrupt record that ends the file, counted, no panic.
    #[test]
    fn every_truncation_of_a_three_record_file() {
        for datalink in [Datalink::H4, Datalink::Monitor] {
            let file = three_records(datalink);
            let boundaries: Vec<usize> = {
                let mut b = vec![HEADER_LEN];
                let mut reader = BtsnoopReader::new(&file[..]).expect("header");
                while let Some(r) = reader.next_record().expect("valid") {
                    b.push(r.offset as usize + RECORD_HEADER_LEN + r.data.len());
                }
                b
            };
            for cut in 0..file.len() {
                let bytes = &file[..cut];
                let Ok(reader) = BtsnoopReader::new(bytes) else {
                    assert!(cut < HEADER_LEN, "header refused at cut {cut}");
                    continue;
                };
                let results: Vec<_> = reader.collect();
                let whole = boundaries.iter().filter(|&&b| b <= cut).count() - 1;
                let oks = results.iter().filter(|r| r.is_ok()).count();
                assert_eq!(oks, whole, "cut {cut}");
                let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
                if boundaries.contains(&cut) {
                    assert!(errors.is_empty(), "cut {cut} is a record boundary");
                } else {
                    assert_eq!(errors.len(), 1, "cut {cut}");
                    assert!(matches!(errors[0], BtsnoopError::TruncatedRecord { .. }));
                    assert!(errors[0].is_corrupt_record());
                }
                let (adverts, counters) = adverts_from_btsnoop(bytes).expect("header is whole");
                assert_eq!(
                    counters.corrupt_records,
                    u64::from(!boundaries.contains(&cut))
                );
                assert_eq!(adverts.len() as u64, counters.adverts);
            }
        }
    }

    /// A record that includes more than its original length is skipped and counted, and
    /// reading continues; a record over 64 KiB ends the file.
    #[test]
    fn corrupt_records_are_skipped_or_end_the_file() {
        let mut w = BtsnoopWriter::new(Vec::new(), Datalink::H4).expect("header");
        w.write_packet(T0_US, 0, PacketKind::Event, &event(1, -40))
            .expect("ok");
        let mut bad = vec![h4_type::EVENT];
        bad.extend(event(9, -1));
        w.write_raw(
            RawRecordHeader {
                original_len: 3,
                flags: 3,
                drops: 0,
                timestamp_us: T0_US,
            },
            &bad,
        )
        .expect("raw");
        w.write_packet(T0_US, 0, PacketKind::Event, &event(2, -41))
            .expect("ok");
        let file = w.into_inner().expect("flush");

        let (adverts, counters) = adverts_from_btsnoop(&file[..]).expect("valid header");
        let rssis: Vec<i8> = adverts.iter().map(|a| a.rssi).collect();
        assert_eq!(rssis, [-40, -41]);
        assert_eq!(counters.records, 3);
        assert_eq!(counters.corrupt_records, 1);
        let mut reader = BtsnoopReader::new(&file[..]).expect("header");
        reader.next_record().expect("first is fine");
        let e = reader.next_record().expect_err("second is corrupt");
        assert!(
            e.to_string().contains("record 2 at byte")
                && e.to_string().contains("exceeds the original length 3"),
            "{e}"
        );

        let mut huge = file[..HEADER_LEN].to_vec();
        huge.extend(0u32.to_be_bytes());
        huge.extend((MAX_RECORD_LEN + 1).to_be_bytes());
        huge.extend([0; 16]);
        huge.extend(file[HEADER_LEN..].iter());
        let mut reader = BtsnoopReader::new(&huge[..]).expect("header");
        assert!(matches!(
            reader.next_record(),
            Err(BtsnoopError::RecordTooLong {
                record: 1,
                offset: 16,
                ..
            })
        ));
        assert!(matches!(reader.next_record(), Ok(None)));
    }

    /// Malformed events and other packets are counted and skipped; empty H4 records and
    /// unknown H4 types are not events.
    #[test]
    fn malformed_events_and_other_packets_are_counted() {
        let mut w = BtsnoopWriter::new(Vec::new(), Datalink::H4).expect("header");
        w.write_packet(T0_US, 0, PacketKind::Event, &[0x3E, 9, 0x02])
            .expect("event");
        w.write_packet(T0_US, 0, PacketKind::AclRx, &[1, 2, 3, 4])
            .expect("acl");
        w.write_raw(
            RawRecordHeader {
                original_len: 0,
                flags: 3,
                drops: 0,
                timestamp_us: T0_US,
            },
            &[],
        )
        .expect("empty");
        w.write_raw(
            RawRecordHeader {
                original_len: 2,
                flags: 3,
                drops: 0,
                timestamp_us: T0_US,
            },
            &[0x09, 0x00],
        )
        .expect("unknown type");
        w.write_packet(T0_US, 0, PacketKind::Event, &event(4, -44))
            .expect("event");
        let file = w.into_inner().expect("flush");
        let items: Vec<_> = BtsnoopAdverts::new(&file[..]).expect("header").collect();
        assert!(matches!(
            &items[0],
            Err(CaptureProblem::MalformedEvent {
                record: 1,
                source: HciError::LengthMismatch { .. }
            })
        ));
        let (adverts, counters) = adverts_from_btsnoop(&file[..]).expect("header");
        assert_eq!(adverts.len(), 1);
        assert_eq!(
            counters,
            ReplayCounters {
                records: 5,
                events: 2,
                adverts: 1,
                malformed_events: 1,
                non_advert_packets: 3,
                ..ReplayCounters::default()
            }
        );
    }

    /// The writer refuses what the datalink cannot say.
    #[test]
    fn writer_refuses_unrepresentable_packets() {
        let mut w = BtsnoopWriter::new(Vec::new(), Datalink::Hci).expect("header");
        assert!(matches!(
            w.write_packet(0, 0, PacketKind::ScoRx, &[]),
            Err(BtsnoopWriteError::Unrepresentable { .. })
        ));
        let mut w = BtsnoopWriter::new(Vec::new(), Datalink::H4).expect("header");
        assert!(matches!(
            w.write_packet(0, 0, PacketKind::MonitorNote(0), &[]),
            Err(BtsnoopWriteError::Unrepresentable { .. })
        ));
        assert!(matches!(
            w.write_packet(0, 0, PacketKind::AclRx, &vec![0; MAX_RECORD_LEN as usize]),
            Err(BtsnoopWriteError::TooLong { .. })
        ));
        let mut w = BtsnoopWriter::new(Vec::new(), Datalink::Monitor).expect("header");
        w.write_packet(
            0,
            7,
            PacketKind::MonitorNote(monitor_opcode::NEW_INDEX),
            &[0; 16],
        )
        .expect("monitor note");
        let file = w.into_inner().expect("flush");
        let record = BtsnoopReader::new(&file[..])
            .expect("header")
            .next_record()
            .expect("valid")
            .expect("one record");
        assert_eq!(record.adapter_index(), Some(7));
        assert_eq!(record.packet().0, PacketKind::MonitorNote(0));
    }

    /// Garbage after a valid header, and garbage headers, never panic; the iteration ends.
    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9E37_79B9_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let header = &three_records(Datalink::H4)[..HEADER_LEN];
        for round in 0..3000 {
            let len = (next() % 300) as usize;
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                header.to_vec()
            } else {
                Vec::new()
            };
            bytes.extend((0..len).map(|_| next() as u8));
            // Small lengths in record headers now and then, so records frame.
            if round % 3 == 0 && bytes.len() >= HEADER_LEN + 8 {
                let l = next() % 40;
                bytes[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&l.to_be_bytes());
                bytes[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&l.to_be_bytes());
            }
            if let Ok(stream) = BtsnoopAdverts::new(&bytes[..]) {
                let n = stream.count();
                assert!(n <= bytes.len());
            }
        }
    }
}
