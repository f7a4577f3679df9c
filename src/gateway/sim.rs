//! The `sim` beacon source: builds the simulated city ([`crate::sim::City`]), optionally
//! writes its ground truth, and sends one venue's adverts down the gateway's source channel,
//! as fast as possible or paced `speed`× faster than real time, until the simulated day ends,
//! the receiver goes away or the source is cancelled.
//!
//! Owns the task: threads, pacing, the ground-truth file and the summary. The model itself
//! (phones, keys, rotation, radio) is [`crate::sim`]'s; what happens to the adverts is the
//! receiver's. Advert times stay in simulated time (the aggregator windows on advert time).
//!
//! # Threads
//!
//! Building the city (milliseconds) and writing the ground truth (a file of about a megabyte)
//! run on a blocking thread (`spawn_blocking`) that ends before the first advert is sent, so
//! nothing runs behind the task's back and paused-clock tests auto-advance through the
//! pacing sleeps. Adverts are then generated lazily on the async task itself: one costs well
//! under a microsecond (≈ 80 ns in release builds, less than the channel send), and the task
//! yields at every full channel and every tokio cooperative-budget boundary of `send`, so
//! it does not starve other tasks.
//!
//! # Stop order
//!
//! On cancellation the task stops waiting for a deadline or for room in the channel at once
//! and returns its summary; adverts not yet sent are simply not generated. A ground-truth
//! file being written when cancellation comes is finished (bounded work), so the file on disk
//! is always whole: it is written to a temporary file beside it and renamed into place.
//!
//! Privacy: only counts are logged at `info`; addresses, RPIs and TEKs never appear in logs
//! (the TEKs go only to the ground-truth file the operator asked for).

use crate::advert::Advert;
use crate::sim::{City, GroundTruth, SimConfig, SimError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What to simulate and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// The simulated city (the same config and seed in every gateway of a demo).
    pub config: SimConfig,
    /// The venue whose gateway this is: one of `config.venues`' ids.
    pub venue: String,
    /// Speed factor against the wall clock: 0 sends as fast as the receiver takes adverts;
    /// 60 plays a simulated hour in a minute. Finite and ≥ 0.
    pub speed: f64,
    /// Where to write the ground truth (JSON), if anywhere.
    pub ground_truth: Option<PathBuf>,
}

/// Why the simulation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimStop {
    /// Every advert of the simulated window was sent.
    Finished,
    /// The cancellation token fired.
    Cancelled,
    /// The receiver was dropped.
    ReceiverClosed,
}

/// What a simulation run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSummary {
    /// The venue simulated.
    pub venue: String,
    /// Visits to the venue in the whole simulated window.
    pub visits: usize,
    /// Adverts sent on the channel.
    pub sent: u64,
    /// Of those, GAEN adverts (service data under 0xFD6F).
    pub gaen: u64,
    /// Of those, BlueTrace adverts.
    pub bluetrace: u64,
    /// Of those, BlueTrace TempID reads (the simulated gateway's GATT reads, when the config
    /// asks for them).
    pub tempid_reads: u64,
    /// Simulated time of the first and last advert sent, Unix ms.
    pub sim_span_ms: Option<(u64, u64)>,
    /// Why it stopped.
    pub stop: SimStop,
}

/// Why the sim source could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimSourceError {
    /// The speed factor is negative or not finite.
    #[error("simulation speed {speed} is not a finite number ≥ 0")]
    InvalidSpeed {
        /// The speed given.
        speed: f64,
    },
    /// The config is invalid or the venue is not in it.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// The ground truth could not be written.
    #[error("cannot write simulation ground truth {}", .path.display())]
    WriteGroundTruth {
        /// The ground-truth file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The thread building the city panicked or was aborted (a bug).
    #[error("the thread building the simulated city for venue {venue:?} stopped abnormally")]
    Builder {
        /// The venue.
        venue: String,
        /// The join failure.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Runs the sim source: builds the city, writes the ground truth if asked, then sends the
/// venue's adverts on `tx` (waiting when it is full), paced by `opts.speed`, until the
/// simulated window ends, `cancel` fires or the receiver is dropped. Returns what it did.
pub async fn run_sim(
    opts: SimOptions,
    tx: mpsc::Sender<Advert>,
    cancel: CancellationToken,
) -> Result<SimSummary, SimSourceError> {
    let span = tracing::info_span!("sim", venue = %opts.venue);
    simulate(opts, tx, cancel).instrument(span).await
}

async fn simulate(
    opts: SimOptions,
    tx: mpsc::Sender<Advert>,
    cancel: CancellationToken,
) -> Result<SimSummary, SimSourceError> {
    let SimOptions {
        config,
        venue,
        speed,
        ground_truth,
    } = opts;
    if !(speed.is_finite() && speed >= 0.0) {
        return Err(SimSourceError::InvalidSpeed { speed });
    }
    let span = tracing::Span::current();
    let build_venue = venue.clone();
    let adverts = tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            let city = City::new(&config)?;
            // Checked before the ground truth is written: a typo in the venue writes nothing.
            let adverts = city.adverts(&build_venue)?;
            if let Some(path) = ground_truth {
                write_ground_truth(&path, &city.ground_truth())
                    .map_err(|source| SimSourceError::WriteGroundTruth { path, source })?;
            }
            tracing::debug!(
                phones = config.phones,
                visits = adverts.visits(),
                "simulated city built"
            );
            Ok::<_, SimSourceError>(adverts)
        })
    })
    .await
    .map_err(|source| SimSourceError::Builder {
        venue: venue.clone(),
        source,
    })??;

    let visits = adverts.visits();
    let (mut sent, mut gaen, mut bluetrace, mut tempid_reads) = (0u64, 0u64, 0u64, 0u64);
    // (wall instant of the first advert, its simulated time)
    let mut origin: Option<(Instant, u64)> = None;
    let mut last_ms = None;
    let mut adverts = adverts;
    let stop = loop {
        if cancel.is_cancelled() {
            break SimStop::Cancelled;
        }
        let Some(advert) = adverts.next() else {
            break SimStop::Finished;
        };
        let (start, first_ms) = *origin.get_or_insert_with(|| (Instant::now(), advert.time_ms));
        if speed > 0.0 {
            // A deadline past what an Instant can hold (absurdly slow speeds) is not waited for.
            let offset_s = advert.time_ms.saturating_sub(first_ms) as f64 / 1000.0 / speed;
            let deadline = Duration::try_from_secs_f64(offset_s)
                .ok()
                .and_then(|offset| start.checked_add(offset));
            if let Some(deadline) = deadline
                && deadline > Instant::now()
            {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break SimStop::Cancelled,
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
        }
        let (time_ms, is_gaen, is_read) = (
            advert.time_ms,
            !advert.service_data.is_empty(),
            advert.tempid_read.is_some(),
        );
        tokio::select! {
            biased;
            () = cancel.cancelled() => break SimStop::Cancelled,
            result = tx.send(advert) => if result.is_err() {
                break SimStop::ReceiverClosed;
            },
        }
        sent += 1;
        if is_read {
            tempid_reads += 1;
        } else if is_gaen {
            gaen += 1;
        } else {
            bluetrace += 1;
        }
        last_ms = Some(time_ms);
    };
    let sim_span_ms = origin.zip(last_ms).map(|((_, first), last)| (first, last));
    tracing::info!(visits, sent, gaen, bluetrace, tempid_reads, stop = ?stop, "simulation finished");
    Ok(SimSummary {
        venue,
        visits,
        sent,
        gaen,
        bluetrace,
        tempid_reads,
        sim_span_ms,
        stop,
    })
}

/// Writes `truth` as JSON to `path` atomically: a temporary file beside it, synced, then
/// renamed over it, so readers see the old file or the whole new one.
fn write_ground_truth(path: &Path, truth: &GroundTruth) -> io::Result<()> {
    let mut tmp_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?
        .to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut out = io::BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut out, truth)?;
        out.write_all(b"\n")?;
        out.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: the error that matters is the write's.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
