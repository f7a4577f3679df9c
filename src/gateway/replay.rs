//! The `replay` beacon source: reads a recorded capture file and sends its adverts down the
//! gateway's source channel, as fast as possible or paced as recorded (optionally faster),
//! until the capture ends, the receiver goes away or the source is cancelled.
//!
//! Owns the JSON Lines capture format (one advert per line, below; pure functions, no tokio),
//! format detection, pacing and the source task. Decoding btsnoop captures is
//! [`crate::btsnoop`]'s and HCI events [`crate::hci`]'s; what happens to the adverts is the
//! receiver's.
//!
//! # Threads
//!
//! File reads and decoding are blocking: the open capture moves to a blocking thread
//! (`spawn_blocking`) to read a chunk of adverts (at most 256, from at most 4096 records or
//! lines) and comes back; the async task then paces and sends them, and fetches the next
//! chunk. Memory stays flat whatever the capture's size; a slow receiver (back-pressure on the
//! bounded source channel) slows reading down instead of anything being dropped. No blocking
//! task outlives a chunk, so nothing runs behind the task's back after it returns, and tests
//! on tokio's paused clock can auto-advance through the pacing sleeps (a running blocking
//! task inhibits that).
//!
//! # Stop order
//!
//! On cancellation the task stops waiting for a deadline or the receiver at once and returns
//! its summary. A chunk being read is not interrupted: it is bounded work (milliseconds), and
//! finishing it keeps the counters whole. Adverts read but not yet sent are dropped (counted in
//! `adverts`, not in `sent`).
//!
//! # JSON Lines captures
//!
//! One advert per line, e.g.
//! `{"t_ms": 1700000000000, "addr": "aa:bb:cc:dd:ee:ff", "rssi": -60, "tx_power": null,
//! "service_uuids": ["fd6f"], "service_data": {"fd6f": "<hex>"}, "manufacturer_data":
//! {"1023": "<hex>"}}`. Only `t_ms` (Unix ms) and `rssi` (dBm) are required; UUIDs are 4 hex
//! digits or the canonical 128-bit form; manufacturer keys are company identifiers, decimal
//! or `0x`-hex. Unknown keys are errors (a typo must not silently drop a field). Blank lines
//! and lines starting with `#` are skipped; a bad line is counted and reported with its line
//! number, never fatal. RSSI 127 means "not available": skipped and counted, as for HCI.
//!
//! Privacy: captures hold device addresses. Nothing here logs one, nor payload bytes; error
//! messages name lines, records, fields and offsets only.

use crate::advert::{Advert, DeviceAddress, ServiceUuid};
use crate::btsnoop::{
    BtsnoopAdverts, BtsnoopError, BtsnoopReader, CaptureProblem, Datalink, MAGIC, ReplayCounters,
};
use crate::hci::RSSI_UNAVAILABLE;
use serde_json::Value;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Longest JSON Lines line accepted (a real advert line is a few hundred bytes).
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// Problems logged at `warn` per replay; the rest go to `debug` so a garbage file cannot flood
/// the log (all are counted either way).
const WARN_LIMIT: u64 = 10;

/// How fast adverts are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// No waiting: each advert as soon as the receiver takes it.
    AsFastAsPossible,
    /// As recorded, relative to the first advert, `speed` times faster (1.0 = as recorded,
    /// 60.0 = an hour in a minute). Must be positive and finite.
    RealTime {
        /// The speed-up factor.
        speed: f64,
    },
}

impl Pacing {
    /// The configuration convention: speed 0 is as fast as possible, anything else real time
    /// at that speed.
    pub fn from_speed(speed: f64) -> Self {
        if speed == 0.0 {
            Pacing::AsFastAsPossible
        } else {
            Pacing::RealTime { speed }
        }
    }
}

/// What to replay and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// The capture file (btsnoop or JSON Lines, detected by content).
    pub path: PathBuf,
    /// How fast to send.
    pub pacing: Pacing,
    /// Shift advert times so that the first advert is "now" (the wall clock when it is sent),
    /// keeping the recorded spacing; otherwise times are kept as recorded.
    pub rebase_time_to_now: bool,
}

/// The format of a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// btsnoop, with its datalink.
    Btsnoop(Datalink),
    /// JSON Lines, one advert per line.
    JsonLines,
}

impl fmt::Display for CaptureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureFormat::Btsnoop(datalink) => write!(f, "btsnoop/{}", datalink.code()),
            CaptureFormat::JsonLines => f.write_str("jsonl"),
        }
    }
}

/// Why the replay stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Every advert of the capture was sent.
    EndOfCapture,
    /// The cancellation token fired.
    Cancelled,
    /// The receiver was dropped.
    ReceiverClosed,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    /// The capture's format.
    pub format: CaptureFormat,
    /// What was read from it (adverts read ahead but not sent are counted in `adverts`).
    pub counters: ReplayCounters,
    /// Adverts sent on the channel.
    pub sent: u64,
    /// Why it stopped.
    pub stop: StopReason,
}

/// Why a replay could not run (problems inside the capture are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The pacing speed is zero, negative or not finite.
    #[error("replay speed {speed} is not a positive finite number")]
    InvalidSpeed {
        /// The speed given.
        speed: f64,
    },
    /// The file cannot be opened (missing, permissions...).
    #[error("cannot open capture {}", .path.display())]
    Open {
        /// The capture file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading the file failed.
    #[error("cannot read capture {}", .path.display())]
    Read {
        /// The capture file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is neither btsnoop nor JSON Lines.
    #[error("capture {} is neither a btsnoop file nor JSON Lines", .path.display())]
    UnknownFormat {
        /// The capture file.
        path: PathBuf,
    },
    /// The file starts like btsnoop but its header is unusable, or reading it failed.
    #[error("capture {} is not a readable btsnoop file", .path.display())]
    Btsnoop {
        /// The capture file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: BtsnoopError,
    },
    /// The reader thread panicked or was aborted.
    #[error("the reader of capture {} stopped abnormally", .path.display())]
    Reader {
        /// The capture file.
        path: PathBuf,
        /// The join failure.
        #[source]
        source: tokio::task::JoinError,
    },
}

// ---------------------------------------------------------------------------------------------
// JSON Lines (pure)

/// What is wrong with one JSON Lines line.
#[derive(Debug, thiserror::Error)]
pub enum JsonlErrorKind {
    /// The line is not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// The line exceeds [`MAX_LINE_LEN`].
    #[error("longer than {MAX_LINE_LEN} bytes")]
    TooLong,
    /// The line is not JSON (serde_json's syntax errors quote no input).
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The line is JSON but not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// A required field is missing.
    #[error("missing field {0:?}")]
    MissingField(&'static str),
    /// A field this format does not have (its name, when it looks like a field name).
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// A field's value is not what the format says.
    #[error("field {field:?}: {problem}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong, without the value (it may be an address).
        problem: &'static str,
    },
}

/// A bad line of a JSON Lines capture: its number (from 1) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct JsonlError {
    /// Line number, from 1.
    pub line: u64,
    /// What is wrong.
    pub kind: JsonlErrorKind,
}

fn bad(field: &'static str, problem: &'static str) -> JsonlErrorKind {
    JsonlErrorKind::BadField { field, problem }
}

fn parse_address(text: &str) -> Option<DeviceAddress> {
    let mut address = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut address {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(DeviceAddress(address))
}

fn parse_i8(value: &Value, field: &'static str) -> Result<i8, JsonlErrorKind> {
    let n = value.as_i64().ok_or(bad(field, "not an integer"))?;
    i8::try_from(n).map_err(|_| bad(field, "out of range -128..=127"))
}

fn parse_uuid(text: &str, field: &'static str) -> Result<ServiceUuid, JsonlErrorKind> {
    ServiceUuid::parse(text).ok_or(bad(
        field,
        "not a UUID (4 hex digits or the canonical 128-bit form)",
    ))
}

fn parse_hex(value: &Value, field: &'static str) -> Result<Vec<u8>, JsonlErrorKind> {
    let text = value
        .as_str()
        .ok_or(bad(field, "value is not a hex string"))?;
    hex::decode(text).map_err(|_| bad(field, "value is not hex"))
}

fn parse_company(text: &str) -> Option<u16> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Parses one line of a JSON Lines capture: `Ok(None)` for a blank or `#` comment line.
pub fn parse_jsonl_line(line: &str) -> Result<Option<Advert>, JsonlErrorKind> {
    let line = line.trim_start_matches('\u{feff}').trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(line).map_err(JsonlErrorKind::NotJson)?;
    let Value::Object(fields) = value else {
        return Err(JsonlErrorKind::NotAnObject);
    };
    let mut advert = Advert::default();
    let mut seen_time = false;
    let mut seen_rssi = false;
    for (key, value) in &fields {
        match key.as_str() {
            "t_ms" => {
                advert.time_ms = value
                    .as_u64()
                    .ok_or(bad("t_ms", "not a non-negative integer"))?;
                seen_time = true;
            }
            "rssi" => {
                advert.rssi = parse_i8(value, "rssi")?;
                seen_rssi = true;
            }
            "addr" => {
                let text = value.as_str().ok_or(bad("addr", "not a string"))?;
                advert.address =
                    parse_address(text).ok_or(bad("addr", "not of the form aa:bb:cc:dd:ee:ff"))?;
            }
            "tx_power" => {
                advert.tx_power = match value {
                    Value::Null => None,
                    v => Some(parse_i8(v, "tx_power")?),
                };
            }
            "service_uuids" => {
                let list = value
                    .as_array()
                    .ok_or(bad("service_uuids", "not an array"))?;
                for item in list {
                    let text = item
                        .as_str()
                        .ok_or(bad("service_uuids", "an item is not a string"))?;
                    advert
                        .service_uuids
                        .push(parse_uuid(text, "service_uuids")?);
                }
            }
            "service_data" => {
                let map = value
                    .as_object()
                    .ok_or(bad("service_data", "not an object"))?;
                for (uuid, data) in map {
                    advert.service_data.push((
                        parse_uuid(uuid, "service_data")?,
                        parse_hex(data, "service_data")?,
                    ));
                }
            }
            "manufacturer_data" => {
                let map = value
                    .as_object()
                    .ok_or(bad("manufacturer_data", "not an object"))?;
                for (company, data) in map {
                    let company = parse_company(company).ok_or(bad(
                        "manufacturer_data",
                        "key is not a company identifier (0-65535, decimal or 0x-hex)",
                    ))?;
                    advert
                        .manufacturer_data
                        .push((company, parse_hex(data, "manufacturer_data")?));
                }
            }
            other => {
                let shown = if other.len() <= 32
                    && other
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    other.to_owned()
                } else {
                    "<not a field name>".to_owned()
                };
                return Err(JsonlErrorKind::UnknownField(shown));
            }
        }
    }
    if !seen_time {
        return Err(JsonlErrorKind::MissingField("t_ms"));
    }
    if !seen_rssi {
        return Err(JsonlErrorKind::MissingField("rssi"));
    }
    Ok(Some(advert))
}

/// Reads one line (without its `\n`) into `buf`, at most `max` bytes of it: `Ok(None)` at the
/// end of the input, `Ok(Some(true))` when the line was longer (it is consumed, `buf` empty).
fn read_line_bounded(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let mut any = false;
    let mut too_long = false;
    loop {
        let (used, done) = {
            let available = match reader.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(any.then_some(too_long));
            }
            any = true;
            let newline = available.iter().position(|&b| b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            if !too_long {
                if buf.len() + chunk.len() > max {
                    too_long = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            (
                chunk.len() + usize::from(newline.is_some()),
                newline.is_some(),
            )
        };
        reader.consume(used);
        if done {
            return Ok(Some(too_long));
        }
    }
}

/// A problem while reading a JSON Lines capture: a bad line (skipped, counted) or an I/O
/// error (which ends the iteration).
#[derive(Debug, thiserror::Error)]
pub enum JsonlProblem {
    /// A line is not a valid advert.
    #[error(transparent)]
    BadLine(#[from] JsonlError),
    /// Reading failed.
    #[error("reading the JSON Lines capture failed after line {line}")]
    Io {
        /// The last line read.
        line: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// The adverts of a JSON Lines capture, in file order; bad lines come in between as `Err`
/// items (iteration continues after them), and [`counters`](Self::counters) says what was read.
#[derive(Debug)]
pub struct JsonlAdverts<R> {
    reader: R,
    line: u64,
    buf: Vec<u8>,
    counters: ReplayCounters,
    finished: bool,
}

impl<R: BufRead> JsonlAdverts<R> {
    /// Reads `reader` line by line.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            line: 0,
            buf: Vec::new(),
            counters: ReplayCounters::default(),
            finished: false,
        }
    }

    /// What has been read so far.
    pub fn counters(&self) -> ReplayCounters {
        self.counters
    }
}

impl<R: BufRead> JsonlAdverts<R> {
    /// Reads one line: `None` at the end of the input, `Some(Ok(None))` for a line that holds
    /// no advert to send (blank, comment, RSSI not available), the advert, or the problem.
    /// Bounded work per call, for callers that must stay responsive (cancellation).
    pub fn read_next_line(&mut self) -> Option<Result<Option<Advert>, JsonlProblem>> {
        if self.finished {
            return None;
        }
        let too_long = match read_line_bounded(&mut self.reader, &mut self.buf, MAX_LINE_LEN) {
            Ok(Some(too_long)) => too_long,
            Ok(None) => {
                self.finished = true;
                return None;
            }
            Err(source) => {
                self.finished = true;
                return Some(Err(JsonlProblem::Io {
                    line: self.line,
                    source,
                }));
            }
        };
        self.line += 1;
        let parsed = if too_long {
            Err(JsonlErrorKind::TooLong)
        } else {
            std::str::from_utf8(&self.buf)
                .map_err(|_| JsonlErrorKind::NotUtf8)
                .and_then(parse_jsonl_line)
        };
        Some(match parsed {
            Ok(None) => Ok(None),
            Ok(Some(advert)) => {
                self.counters.records += 1;
                if advert.rssi == RSSI_UNAVAILABLE {
                    self.counters.rssi_unavailable += 1;
                    Ok(None)
                } else {
                    self.counters.adverts += 1;
                    Ok(Some(advert))
                }
            }
            Err(kind) => {
                self.counters.records += 1;
                self.counters.corrupt_records += 1;
                Err(JsonlError {
                    line: self.line,
                    kind,
                }
                .into())
            }
        })
    }
}

impl<R: BufRead> Iterator for JsonlAdverts<R> {
    type Item = Result<Advert, JsonlProblem>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.read_next_line()? {
                Ok(None) => continue,
                Ok(Some(advert)) => return Some(Ok(advert)),
                Err(problem) => return Some(Err(problem)),
            }
        }
    }
}

/// All adverts of a JSON Lines capture, and what was read; bad lines are counted (in
/// `corrupt_records`), an I/O error is an error.
pub fn adverts_from_jsonl<R: BufRead>(
    reader: R,
) -> Result<(Vec<Advert>, ReplayCounters), io::Error> {
    let mut stream = JsonlAdverts::new(reader);
    let mut adverts = Vec::new();
    for item in stream.by_ref() {
        match item {
            Ok(advert) => adverts.push(advert),
            Err(JsonlProblem::Io { source, .. }) => return Err(source),
            Err(JsonlProblem::BadLine(_)) => {}
        }
    }
    Ok((adverts, stream.counters()))
}

/// A format as told by a file's first bytes (a btsnoop datalink is known from its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detected {
    Btsnoop,
    JsonLines,
}

/// Says what a capture is from its first bytes (up to 8): btsnoop if they are (a prefix of)
/// the btsnoop magic (a short one then fails as a truncated header, which says more than
/// "unknown format"), JSON Lines if the first non-blank byte opens an object or a comment
/// (or there is none: an empty capture), otherwise `None`.
fn detect_format(head: &[u8]) -> Option<Detected> {
    let magic_len = head.len().min(MAGIC.len());
    if !head.is_empty() && head[..magic_len] == MAGIC[..magic_len] {
        return Some(Detected::Btsnoop);
    }
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'{') | Some(b'#') => Some(Detected::JsonLines),
        Some(_) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The source task

/// Runs the replay source: sends the capture's adverts on `tx` (waiting when it is full)
/// until the capture ends, `cancel` fires or the receiver is dropped, and returns what it did.
/// Errors are about the file as a whole (missing, unreadable, unknown format, bad btsnoop
/// header) or a bad speed; problems inside it are counted and logged (no addresses or payload).
pub async fn run_replay(
    opts: ReplayOptions,
    tx: mpsc::Sender<Advert>,
    cancel: CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    let span = tracing::info_span!("replay", path = %opts.path.display());
    replay(opts, tx, cancel).instrument(span).await
}

/// Runs `work` on a blocking thread, in the current span.
async fn blocking<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ReplayError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|source| ReplayError::Reader {
            path: path.to_owned(),
            source,
        })
}

async fn replay(
    opts: ReplayOptions,
    tx: mpsc::Sender<Advert>,
    cancel: CancellationToken,
) -> Result<ReplaySummary, ReplayError> {
    if let Pacing::RealTime { speed } = opts.pacing
        && !(speed.is_finite() && speed > 0.0)
    {
        return Err(ReplayError::InvalidSpeed { speed });
    }
    let path = opts.path.clone();
    let mut capture = blocking(&opts.path, move || Capture::open(path)).await??;
    let mut chunk: Vec<Advert> = Vec::with_capacity(CHUNK_ADVERTS);

    // (tokio instant of the first advert, its recorded time, rebase shift in ms)
    let mut first: Option<(tokio::time::Instant, u64, i128)> = None;
    let mut sent = 0u64;
    let stop = 'replay: loop {
        if capture.ended {
            break StopReason::EndOfCapture;
        }
        // Not raced against `cancel`: a chunk is bounded work (see `Capture::read_chunk`),
        // and finishing it keeps the capture, and its counters, in hand.
        let (returned, result) = blocking(&opts.path, move || {
            let mut capture = capture;
            let result = capture.read_chunk(&mut chunk);
            (capture, (chunk, result))
        })
        .await?;
        capture = returned;
        let (read, result) = result;
        chunk = read;
        result?;
        for mut advert in chunk.drain(..) {
            let recorded = advert.time_ms;
            let (start, first_ms, shift) = *first.get_or_insert_with(|| {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i128);
                (
                    tokio::time::Instant::now(),
                    recorded,
                    now_ms - i128::from(recorded),
                )
            });
            if let Pacing::RealTime { speed } = opts.pacing {
                // Records out of order are sent at once; a deadline past what an Instant can
                // hold (a corrupt timestamp centuries ahead) is not waited for.
                let offset_ms = recorded.saturating_sub(first_ms);
                let deadline = Duration::try_from_secs_f64(offset_ms as f64 / 1000.0 / speed)
                    .ok()
                    .and_then(|offset| start.checked_add(offset));
                if let Some(deadline) = deadline {
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => break 'replay StopReason::Cancelled,
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
            }
            if opts.rebase_time_to_now {
                advert.time_ms =
                    (i128::from(recorded) + shift).clamp(0, i128::from(u64::MAX)) as u64;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => break 'replay StopReason::Cancelled,
                result = tx.send(advert) => if result.is_err() {
                    break 'replay StopReason::ReceiverClosed;
                },
            }
            sent += 1;
        }
        if cancel.is_cancelled() {
            break StopReason::Cancelled;
        }
    };
    let counters = capture.counters();
    let format = capture.format;
    tracing::info!(
        %format,
        records = counters.records,
        adverts = counters.adverts,
        sent,
        corrupt_records = counters.corrupt_records,
        malformed_events = counters.malformed_events,
        non_advert_packets = counters.non_advert_packets,
        rssi_unavailable = counters.rssi_unavailable,
        bad_ad_data = counters.bad_ad_data,
        incomplete_data = counters.incomplete_data,
        stop = ?stop,
        "replay finished"
    );
    Ok(ReplaySummary {
        format,
        counters,
        sent,
        stop,
    })
}

/// Adverts read per trip to a blocking thread.
const CHUNK_ADVERTS: usize = 256;
/// Records or lines read per trip at most, so that a capture of mostly other packets still
/// comes back to the async side (and its cancellation check) often.
const CHUNK_ITEMS: usize = 4096;

/// The buffered file behind a capture (its first bytes, read for detection, put back).
type Input = BufReader<io::Chain<io::Cursor<Vec<u8>>, File>>;

#[derive(Debug)]
enum Stream {
    Btsnoop(BtsnoopAdverts<Input>),
    Jsonl(JsonlAdverts<Input>),
}

/// An open capture. Blocking I/O: it moves to a blocking thread for each chunk and back, so
/// no blocking task outlives a chunk (and paused-clock tests can auto-advance while pacing).
#[derive(Debug)]
struct Capture {
    path: PathBuf,
    format: CaptureFormat,
    stream: Stream,
    problems: u64,
    ended: bool,
}

impl Capture {
    /// Opens the file and detects its format (reading the header of a btsnoop file).
    fn open(path: PathBuf) -> Result<Self, ReplayError> {
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(source) => return Err(ReplayError::Open { path, source }),
        };
        let mut head = Vec::with_capacity(MAGIC.len());
        if let Err(source) = file
            .by_ref()
            .take(MAGIC.len() as u64)
            .read_to_end(&mut head)
        {
            return Err(ReplayError::Read { path, source });
        }
        let Some(format) = detect_format(&head) else {
            return Err(ReplayError::UnknownFormat { path });
        };
        let input = BufReader::with_capacity(64 * 1024, io::Cursor::new(head).chain(file));
        let (format, stream) = match format {
            Detected::Btsnoop => match BtsnoopReader::new(input) {
                Ok(reader) => (
                    CaptureFormat::Btsnoop(reader.datalink()),
                    Stream::Btsnoop(BtsnoopAdverts::from_reader(reader)),
                ),
                Err(source) => return Err(ReplayError::Btsnoop { path, source }),
            },
            Detected::JsonLines => (
                CaptureFormat::JsonLines,
                Stream::Jsonl(JsonlAdverts::new(input)),
            ),
        };
        Ok(Self {
            path,
            format,
            stream,
            problems: 0,
            ended: false,
        })
    }

    fn counters(&self) -> ReplayCounters {
        match &self.stream {
            Stream::Btsnoop(stream) => stream.counters(),
            Stream::Jsonl(stream) => stream.counters(),
        }
    }

    /// Appends up to [`CHUNK_ADVERTS`] adverts to `out`, reading at most [`CHUNK_ITEMS`]
    /// records or lines; sets `ended` at the end of the file. Problems inside the capture are
    /// logged and skipped; an I/O error is returned.
    fn read_chunk(&mut self, out: &mut Vec<Advert>) -> Result<(), ReplayError> {
        for _ in 0..CHUNK_ITEMS {
            if out.len() >= CHUNK_ADVERTS {
                return Ok(());
            }
            let problem: Box<dyn std::error::Error> = match &mut self.stream {
                Stream::Btsnoop(stream) => match stream.read_next_record(out) {
                    None => {
                        self.ended = true;
                        return Ok(());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(CaptureProblem::Record(source @ BtsnoopError::Io { .. }))) => {
                        self.ended = true;
                        return Err(ReplayError::Btsnoop {
                            path: self.path.clone(),
                            source,
                        });
                    }
                    Some(Err(problem)) => Box::new(problem),
                },
                Stream::Jsonl(stream) => match stream.read_next_line() {
                    None => {
                        self.ended = true;
                        return Ok(());
                    }
                    Some(Ok(advert)) => {
                        out.extend(advert);
                        continue;
                    }
                    Some(Err(JsonlProblem::Io { source, .. })) => {
                        self.ended = true;
                        return Err(ReplayError::Read {
                            path: self.path.clone(),
                            source,
                        });
                    }
                    Some(Err(problem)) => Box::new(problem),
                },
            };
            self.problems += 1;
            // The first few at warn, the rest at debug: a garbage file must not flood the log
            // (every problem is counted either way). Messages carry no address or payload.
            let error = crate::exit::describe(problem.as_ref());
            if self.problems <= WARN_LIMIT {
                tracing::warn!(%error, "skipping part of the capture");
            } else {
                tracing::debug!(%error, "skipping part of the capture");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAEN: ServiceUuid = ServiceUuid::from_u16(0xFD6F);

    /// A full line parses into every field; the optional ones may be left out.
    #[test]
    fn parses_a_full_line_and_a_minimal_one() {
        let rpi_aem = "00112233445566778899aabbccddeeff01020304";
        let line = format!(
            r#"{{"t_ms": 1700000000000, "addr": "AA:bb:cc:dd:ee:0f", "rssi": -60,
                "tx_power": null, "service_data": {{"fd6f": "{rpi_aem}"}},
                "service_uuids": ["fd6f", "b82ab3fc-1595-4f6a-80f0-fe094cc218f9"],
                "manufacturer_data": {{"1023": "0102", "0x004c": ""}}}}"#
        )
        .replace('\n', " ");
        let advert = parse_jsonl_line(&line).expect("valid").expect("not blank");
        assert_eq!(advert.time_ms, 1_700_000_000_000);
        assert_eq!(
            advert.address,
            DeviceAddress([0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0x0F])
        );
        assert_eq!(advert.rssi, -60);
        assert_eq!(advert.tx_power, None);
        assert_eq!(
            advert.service_data_for(GAEN),
            Some(&hex::decode(rpi_aem).expect("hex")[..])
        );
        assert_eq!(advert.service_uuids.len(), 2);
        assert_eq!(advert.service_uuids[0], GAEN);
        assert_eq!(
            advert.manufacturer_data,
            [(0x03FF, vec![1, 2]), (0x004C, vec![])]
        );

        let minimal = parse_jsonl_line(r#"{"rssi": -1, "t_ms": 5, "tx_power": -8}"#)
            .expect("valid")
            .expect("not blank");
        assert_eq!(
            minimal,
            Advert {
                time_ms: 5,
                rssi: -1,
                tx_power: Some(-8),
                ..Advert::default()
            }
        );
        assert!(matches!(parse_jsonl_line("   "), Ok(None)));
        assert!(matches!(parse_jsonl_line("# comment {"), Ok(None)));
    }

    /// Bad lines are errors naming the field and the problem, never the value.
    #[test]
    fn bad_lines_name_the_problem_not_the_value() {
        let cases: &[(&str, &str)] = &[
            (r#"{"rssi": -1}"#, "missing field \"t_ms\""),
            (r#"{"t_ms": 1}"#, "missing field \"rssi\""),
            (r#"{"t_ms": -1, "rssi": 0}"#, "\"t_ms\""),
            (r#"{"t_ms": 1, "rssi": -200}"#, "out of range"),
            (
                r#"{"t_ms": 1, "rssi": 0, "rsi": 0}"#,
                "unknown field \"rsi\"",
            ),
            (
                r#"{"t_ms": 1, "rssi": 0, "addr": "12:34:56:78:9a"}"#,
                "\"addr\"",
            ),
            (
                r#"{"t_ms": 1, "rssi": 0, "addr": "12:34:56:78:9a:bc:de"}"#,
                "\"addr\"",
            ),
            (
                r#"{"t_ms": 1, "rssi": 0, "service_data": {"fd6": "00"}}"#,
                "not a UUID",
            ),
            (
                r#"{"t_ms": 1, "rssi": 0, "service_data": {"fd6f": "0g"}}"#,
                "not hex",
            ),
            (
                r#"{"t_ms": 1, "rssi": 0, "manufacturer_data": {"65536": ""}}"#,
                "company",
            ),
            (r#"[1, 2]"#, "not a JSON object"),
            (r#"{"t_ms": 1, "rssi": 0"#, "not JSON"),
        ];
        for (line, expected) in cases {
            let message = parse_jsonl_line(line).expect_err(line).to_string();
            assert!(message.contains(expected), "{line}: {message}");
            assert!(!message.contains("12:34"), "{message}");
        }
    }

    /// Blank and comment lines are skipped, bad lines counted with their number, RSSI 127
    /// skipped and counted, non-UTF-8 and over-long lines are bad lines, and reading goes on.
    #[test]
    fn reads_a_capture_counting_bad_lines() {
        let mut text = b"# a capture\n\n{\"t_ms\": 1, \"rssi\": -50}\r\nnot json\n".to_vec();
        text.extend(b"{\"t_ms\": 2, \"rssi\": 127}\n\xff\xfe\n");
        text.extend(
            format!(
                "{{\"t_ms\": 3, \"rssi\": -51, \"x\": \"{}\"}}\n",
                "a".repeat(MAX_LINE_LEN)
            )
            .bytes(),
        );
        text.extend(b"{\"t_ms\": 4, \"rssi\": -52}");
        let items: Vec<_> = JsonlAdverts::new(&text[..]).collect();
        let lines: Vec<u64> = items
            .iter()
            .filter_map(|i| match i {
                Err(JsonlProblem::BadLine(e)) => Some(e.line),
                _ => None,
            })
            .collect();
        assert_eq!(lines, [4, 6, 7]);
        let (adverts, counters) = adverts_from_jsonl(&text[..]).expect("no I/O error");
        let times: Vec<u64> = adverts.iter().map(|a| a.time_ms).collect();
        assert_eq!(times, [1, 4]);
        assert_eq!(
            counters,
            ReplayCounters {
                records: 6,
                adverts: 2,
                corrupt_records: 3,
                rssi_unavailable: 1,
                ..ReplayCounters::default()
            }
        );
    }

    /// Format detection by content: btsnoop magic (or a prefix of it), JSON Lines, or neither.
    #[test]
    fn detects_formats_by_content() {
        assert_eq!(detect_format(b"btsnoop\0"), Some(Detected::Btsnoop));
        assert_eq!(detect_format(b"btsn"), Some(Detected::Btsnoop));
        assert_eq!(detect_format(b"{\"t_ms\""), Some(Detected::JsonLines));
        assert_eq!(detect_format(b"\n\n  # x"), Some(Detected::JsonLines));
        assert_eq!(detect_format(b"\xEF\xBB\xBF{"), Some(Detected::JsonLines));
        assert_eq!(detect_format(b""), Some(Detected::JsonLines));
        assert_eq!(detect_format(b"PK\x03\x04"), None);
        assert_eq!(detect_format(b"\xa1\xb2\xc3\xd4"), None);
    }

    /// Speed 0 in configuration means as fast as possible.
    #[test]
    fn pacing_from_speed() {
        assert_eq!(Pacing::from_speed(0.0), Pacing::AsFastAsPossible);
        assert_eq!(Pacing::from_speed(60.0), Pacing::RealTime { speed: 60.0 });
    }
}
