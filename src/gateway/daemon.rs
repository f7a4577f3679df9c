//! `venuetrace-gateway run`: the daemon's main loop, wiring a source, the aggregator, sealing,
//! the outbox and the publisher (DESIGN.md §4).
//!
//! One visible `select!` over every wake-up source: adverts from the source channel, events
//! from the publisher, a one-second tick, and shutdown. Sealing and every outbox call run on
//! blocking threads (`spawn_blocking`), never on the async workers: SQLite with
//! `synchronous=FULL` waits for the disk, and sealing a full window takes milliseconds.
//!
//! Window clock: a live radio's windows close on the wall clock (the tick); a replay or a
//! simulation closes them on the adverts' own timestamps, so a recorded day replayed in a
//! minute still yields one batch per recorded window, and the last window closes when the
//! stream ends.
//!
//! Stop order on shutdown (SIGTERM/SIGINT via the `shutdown` token): `STOPPING=1` → stop the
//! source (BlueZ discovery is stopped) → close the current window early → seal and commit it
//! → publish what is due and wait for receipts until the outbox is empty or the flush deadline
//! passes → stop the publisher (it publishes `offline`). Whatever is unreceipted stays in the
//! outbox for the next start.
//!
//! systemd (`Type=notify`): `READY=1` once the outbox is open and the source is producing
//! (for BlueZ: the adapter is scanning); every second a health check — the outbox answers, the
//! publisher and source tasks are alive — and only if it passes, `WATCHDOG=1` (at half of
//! `WATCHDOG_USEC`); `STATUS=` with adverts/s, window, outbox depth and broker state whenever
//! it changes. The same [`Status`] is served on D-Bus when a system bus is there.
//!
//! Reload (SIGHUP, through [`Control::Reload`]): the resend schedule, outbox retention and
//! quota and the flush deadline apply at once; the caller reports keys that need a restart.

use super::bluez::{BluezOptions, ScanHealth};
use super::outbox::{
    Backoff, NewBatch, Outbox, OutboxError, OutboxOptions, ReceiptOutcome, WindowCounters,
};
use super::publisher::{self, MqttSettings, PublisherCommand, PublisherEvent};
use super::status::{Status, StatusService};
use crate::advert::Advert;
use crate::aggregate::{Aggregator, AggregatorConfig, Counters, Window};
use crate::batch::{Batch, GatewayId};
use crate::seal::{self, KeyPair, PublicKey};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Where adverts come from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// A recorded capture (btsnoop or JSON Lines).
    Replay(super::replay::ReplayOptions),
    /// Simulated phones.
    Sim(super::sim::SimOptions),
    /// Adverts pushed by the caller on a channel (tests, embedding); windows on advert time.
    Channel,
    /// The Bluetooth adapter through BlueZ; windows close on the wall clock.
    Bluez(BluezOptions),
}

impl SourceSpec {
    /// The source's name in status output.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Replay(_) => "replay",
            Self::Sim(_) => "sim",
            Self::Channel => "channel",
            Self::Bluez(_) => "bluez",
        }
    }
}

/// Settings a configuration reload changes without a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloadable {
    /// Resend schedule of unreceipted batches.
    pub backoff: Backoff,
    /// Outbox retention and quota.
    pub outbox_options: OutboxOptions,
    /// How long shutdown waits for receipts.
    pub flush_deadline: Duration,
}

/// Messages to the running daemon.
#[derive(Debug, Clone)]
pub enum Control {
    /// A reloaded configuration's run-time settings.
    Reload(Reloadable),
    /// A reload was refused (the new configuration is invalid): counted, nothing changes.
    ReloadFailed,
}

/// Everything the daemon needs, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// This gateway's enrolled id.
    pub gateway_id: GatewayId,
    /// The venue it is installed at.
    pub venue: String,
    /// Receiver calibration reported in every batch.
    pub rssi_calibration_db: i32,
    /// The gateway's key pair.
    pub keys: KeyPair,
    /// The authority's public key.
    pub authority: PublicKey,
    /// Window length, cap, BlueTrace UUIDs.
    pub aggregator: AggregatorConfig,
    /// The outbox database file.
    pub outbox_path: PathBuf,
    /// Retention and quota.
    pub outbox_options: OutboxOptions,
    /// Resend schedule of unreceipted batches.
    pub backoff: Backoff,
    /// The broker.
    pub mqtt: MqttSettings,
    /// The source.
    pub source: SourceSpec,
    /// Exit once the source has ended and every batch is receipted (replays, demo, tests).
    pub exit_when_delivered: bool,
    /// How long shutdown waits for receipts.
    pub flush_deadline: Duration,
    /// Serve the status on the system bus (`org.venuetrace.Gateway1`).
    pub dbus_status: bool,
}

/// The daemon cannot start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The source failed.
    #[error("source failed: {0}")]
    Source(String),
    /// The Bluetooth scanner could not start.
    #[error("cannot scan: {0}")]
    Scanner(String),
    /// Sealing failed.
    #[error("cannot seal batch")]
    Seal(#[source] seal::SealError),
    /// The publisher could not be set up.
    #[error(transparent)]
    Publisher(#[from] publisher::PublisherError),
    /// A blocking task panicked (a bug).
    #[error("internal task failed: {0}")]
    Internal(String),
}

/// What a run did, for the exit summary and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Adverts taken from the source.
    pub adverts: u64,
    /// Windows sealed into the outbox.
    pub batches_sealed: u64,
    /// Batches removed from the outbox on a valid receipt.
    pub batches_receipted: u64,
    /// Receipts for batches no longer in the outbox (duplicates after a resend).
    pub receipts_duplicate: u64,
    /// Receipts whose tag did not match (forged or corrupted): the batch is kept.
    pub receipts_forged: u64,
    /// Messages on the receipt topic that were not receipts.
    pub receipts_bad: u64,
    /// Batches still in the outbox at exit.
    pub outbox_left: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs an outbox call on a blocking thread.
async fn with_outbox<T: Send + 'static>(
    outbox: &Arc<Mutex<Outbox>>,
    f: impl FnOnce(&mut Outbox) -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, DaemonError> {
    let outbox = Arc::clone(outbox);
    tokio::task::spawn_blocking(move || {
        // A poisoned lock means a panic inside an earlier call: the connection itself is
        // still consistent (SQLite rolled back), so carry on with it.
        let mut guard = outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    })
    .await
    .map_err(|e| DaemonError::Internal(e.to_string()))?
    .map_err(DaemonError::Outbox)
}

struct Daemon {
    settings: DaemonSettings,
    outbox: Arc<Mutex<Outbox>>,
    publish: mpsc::Sender<PublisherCommand>,
    connected: bool,
    report: RunReport,
    /// Counters of every closed window since start.
    totals: Counters,
    last_receipt_unix_s: u64,
    reloads: u64,
    reload_failures: u64,
}

/// systemd notifications: READY once, WATCHDOG when healthy and due, STATUS on change.
struct Notifier {
    ready: bool,
    watchdog_every: Option<Duration>,
    last_watchdog: tokio::time::Instant,
    last_status: String,
}

impl Notifier {
    fn from_env() -> Self {
        // WATCHDOG_PID, when set, names the process the watchdog is for (systemd.exec(5)).
        let ours = std::env::var("WATCHDOG_PID")
            .map_or(true, |pid| pid.trim() == std::process::id().to_string());
        let every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&usec| usec > 0 && ours)
            .map(|usec| Duration::from_micros(usec / 2));
        if let Some(every) = every {
            info!(every_s = every.as_secs_f64(), "systemd watchdog enabled");
        }
        Self {
            ready: false,
            watchdog_every: every,
            last_watchdog: tokio::time::Instant::now(),
            last_status: String::new(),
        }
    }
}

impl Daemon {
    /// Seals a closed window and commits it to the outbox in one transaction.
    async fn commit(&mut self, window: Window) -> Result<(), DaemonError> {
        let s = &self.settings;
        let (gateway, venue, calibration) =
            (s.gateway_id.clone(), s.venue.clone(), s.rssi_calibration_db);
        let (keys, authority) = (s.keys.clone(), s.authority);
        let counters = WindowCounters {
            adverts: window.counters.adverts,
            malformed: window.counters.malformed,
            dropped: window.counters.dropped,
            bluetrace: window.counters.bluetrace_adverts,
            sightings: window.sightings.len() as u64,
        };
        let sightings = window.sightings.len();
        self.totals.add(&window.counters);
        let outbox = Arc::clone(&self.outbox);
        let batch_id = tokio::task::spawn_blocking(move || -> Result<String, DaemonError> {
            let mut outbox = outbox
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let sequence = outbox.next_sequence()?;
            let batch = Batch::from_window(gateway, sequence, &venue, calibration, window);
            let sealed = seal::seal(&batch, &keys, &authority).map_err(DaemonError::Seal)?;
            let new = NewBatch {
                sequence,
                batch_id: batch.id.to_string(),
                window_start_unix_s: batch.window_start_unix_s(),
                created_unix_ms: now_ms(),
                envelope: sealed.envelope,
                receipt_tag: sealed.receipt_tag,
            };
            outbox.commit_window(&new, &counters)?;
            Ok(new.batch_id)
        })
        .await
        .map_err(|e| DaemonError::Internal(e.to_string()))??;
        self.report.batches_sealed += 1;
        info!(batch_id = %batch_id, sightings, "sealed batch");
        Ok(())
    }

    /// Hands every due batch to the publisher.
    async fn send_due(&mut self) -> Result<(), DaemonError> {
        if !self.connected {
            return Ok(());
        }
        let backoff = self.settings.backoff;
        let due = with_outbox(&self.outbox, move |o| o.due(now_ms(), &backoff, 32)).await?;
        for entry in due {
            let sequence = entry.sequence;
            debug!(batch_id = %entry.batch_id, attempt = entry.attempts + 1, "publishing batch");
            let command = PublisherCommand::Publish {
                batch_id: entry.batch_id,
                envelope: entry.envelope,
            };
            if self.publish.send(command).await.is_err() {
                return Ok(()); // publisher stopped (shutdown)
            }
            with_outbox(&self.outbox, move |o| o.mark_sent(sequence, now_ms())).await?;
        }
        Ok(())
    }

    async fn on_publisher(&mut self, event: PublisherEvent) -> Result<(), DaemonError> {
        match event {
            PublisherEvent::Connected => {
                self.connected = true;
                let n = with_outbox(&self.outbox, |o| o.mark_all_unsent()).await?;
                if n > 0 {
                    info!(
                        batches = n,
                        "resending unreceipted batches after (re)connect"
                    );
                }
                self.send_due().await?;
            }
            PublisherEvent::Disconnected { .. } => self.connected = false,
            PublisherEvent::Queued { .. } => {}
            PublisherEvent::NotQueued { batch_id } => debug!(%batch_id, "batch will be retried"),
            PublisherEvent::Receipt { batch_id, tag } => {
                let id = batch_id.clone();
                match with_outbox(&self.outbox, move |o| o.receipt(&id, &tag)).await? {
                    ReceiptOutcome::Removed => {
                        self.report.batches_receipted += 1;
                        self.last_receipt_unix_s = u64::try_from(now_ms() / 1000).unwrap_or(0);
                        info!(%batch_id, "batch receipted by the authority");
                    }
                    ReceiptOutcome::Unknown => {
                        self.report.receipts_duplicate += 1;
                        debug!(%batch_id, "receipt for a batch not in the outbox (duplicate)");
                    }
                    ReceiptOutcome::Forged => {
                        self.report.receipts_forged += 1;
                        warn!(%batch_id, "receipt with a wrong tag ignored; the batch stays in the outbox");
                    }
                }
            }
            PublisherEvent::BadReceipt { reason } => {
                self.report.receipts_bad += 1;
                warn!(%reason, "message on the receipt topic ignored");
            }
        }
        Ok(())
    }

    async fn depth(&self) -> Result<u64, DaemonError> {
        Ok(with_outbox(&self.outbox, |o| o.depth()).await?.batches)
    }

    /// Commits a window closed by the aggregator, then the empty windows between it and the
    /// one open now (a quiet spell: "nobody there", not "gateway down"), then publishes.
    async fn commit_closed(
        &mut self,
        window: Window,
        aggregator: &Aggregator,
    ) -> Result<(), DaemonError> {
        let end = window.start.0 + window.intervals;
        self.commit(window).await?;
        let step = self.settings.aggregator.window_intervals;
        let open = aggregator.open_window().map_or(end, |e| e.0);
        for start in (end..open).step_by(step as usize) {
            self.commit(Window::empty(crate::crypto::Enin(start), step))
                .await?;
        }
        self.send_due().await
    }

    fn apply(&mut self, control: Control) -> Option<OutboxOptions> {
        match control {
            Control::Reload(r) => {
                self.reloads += 1;
                self.settings.backoff = r.backoff;
                self.settings.flush_deadline = r.flush_deadline;
                self.settings.outbox_options = r.outbox_options.clone();
                info!("configuration reloaded");
                Some(r.outbox_options)
            }
            Control::ReloadFailed => {
                self.reload_failures += 1;
                None
            }
        }
    }

    /// The status now.
    async fn status(
        &self,
        aggregator: &Aggregator,
        health: Option<&ScanHealth>,
        adverts_per_second: f64,
    ) -> Result<Status, DaemonError> {
        let depth = with_outbox(&self.outbox, |o| o.depth()).await?;
        let now = now_ms();
        let mut totals = self.totals;
        if let Some(open) = aggregator.open_counters() {
            totals.add(open);
        }
        let window_s = u64::from(self.settings.aggregator.window_intervals) * 600;
        let start = aggregator.open_window().map_or(0, |e| u64::from(e.0) * 600);
        let mut counters: std::collections::BTreeMap<String, u64> = [
            ("adverts", totals.adverts),
            ("gaen_reports", totals.gaen),
            ("malformed", totals.malformed),
            ("dropped_over_cap", totals.dropped),
            ("late", totals.late),
            ("bluetrace_adverts", totals.bluetrace_adverts),
            ("bluetrace_reads", totals.bluetrace_reads),
            ("bluetrace_reads_dropped", totals.bluetrace_reads_dropped),
            ("unrelated", totals.unrelated),
            ("batches_sealed", self.report.batches_sealed),
            ("batches_receipted", self.report.batches_receipted),
            ("receipts_duplicate", self.report.receipts_duplicate),
            ("receipts_forged", self.report.receipts_forged),
            ("receipts_bad", self.report.receipts_bad),
            ("reloads", self.reloads),
            ("reload_failures", self.reload_failures),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(h) = health {
            counters.extend(h.counters().into_iter().map(|(k, v)| (k.to_owned(), v)));
        }
        Ok(Status {
            gateway_id: self.settings.gateway_id.to_string(),
            venue: self.settings.venue.clone(),
            source: self.settings.source.name().to_owned(),
            adapter: health.map(ScanHealth::adapter).unwrap_or_default(),
            scanning: health.is_none_or(ScanHealth::scanning),
            adverts_per_second,
            window_start_unix_s: start,
            window_end_unix_s: if start == 0 { 0 } else { start + window_s },
            sightings_in_window: aggregator.open_sightings() as u64,
            outbox_depth: depth.batches,
            oldest_unreceipted_age_s: depth
                .oldest_created_unix_ms
                .map_or(0, |t| u64::try_from((now - t).max(0) / 1000).unwrap_or(0)),
            broker_connected: self.connected,
            last_receipt_unix_s: self.last_receipt_unix_s,
            counters,
        })
    }
}

/// Runs the gateway until `shutdown` (or, with `exit_when_delivered`, until the source has
/// ended and the outbox is empty). `channel` is the source channel's receiving side when the
/// source is [`SourceSpec::Channel`]; other sources get their own.
pub async fn run(
    settings: DaemonSettings,
    shutdown: CancellationToken,
    channel: Option<mpsc::Receiver<Advert>>,
) -> Result<RunReport, DaemonError> {
    run_with(settings, shutdown, channel, None).await
}

/// [`run`], taking [`Control`] messages (configuration reloads) on `control`.
pub async fn run_with(
    settings: DaemonSettings,
    shutdown: CancellationToken,
    channel: Option<mpsc::Receiver<Advert>>,
    control: Option<mpsc::UnboundedReceiver<Control>>,
) -> Result<RunReport, DaemonError> {
    let outbox_path = settings.outbox_path.clone();
    let outbox_options = settings.outbox_options.clone();
    let outbox = tokio::task::spawn_blocking(move || Outbox::open(&outbox_path, outbox_options))
        .await
        .map_err(|e| DaemonError::Internal(e.to_string()))??;
    let outbox = Arc::new(Mutex::new(outbox));
    let depth = with_outbox(&outbox, |o| o.depth()).await?;
    info!(
        gateway = %settings.gateway_id,
        venue = %settings.venue,
        outbox = %settings.outbox_path.display(),
        unreceipted = depth.batches,
        "gateway starting"
    );

    // The source channel is the test seam. 4096 adverts is ~8 s of a saturated radio: enough to
    // ride out an outbox commit, small enough to keep memory flat; a full channel slows a
    // replay down instead of dropping.
    let source_cancel = shutdown.child_token();
    let scan_health = Arc::new(ScanHealth::default());
    let (mut adverts, source_task) = match (&settings.source, channel) {
        (SourceSpec::Channel, Some(rx)) => (rx, None),
        (SourceSpec::Channel, None) => {
            return Err(DaemonError::Source(
                "channel source without a channel".into(),
            ));
        }
        (SourceSpec::Replay(options), _) => {
            let (tx, rx) = mpsc::channel(4096);
            let (options, cancel) = (options.clone(), source_cancel.clone());
            let task = tokio::spawn(async move {
                super::replay::run_replay(options, tx, cancel)
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::exit::describe(&e))
            });
            (rx, Some(task))
        }
        (SourceSpec::Sim(options), _) => {
            let (tx, rx) = mpsc::channel(4096);
            let (options, cancel) = (options.clone(), source_cancel.clone());
            let task = tokio::spawn(async move {
                super::sim::run_sim(options, tx, cancel)
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::exit::describe(&e))
            });
            (rx, Some(task))
        }
        (SourceSpec::Bluez(options), _) => {
            let (tx, rx) = mpsc::channel(4096);
            let (options, cancel) = (options.clone(), source_cancel.clone());
            let health = Arc::clone(&scan_health);
            let task = tokio::spawn(async move {
                super::bluez::run_bluez(options, tx, cancel, health)
                    .await
                    .map_err(|e| crate::exit::describe(&e))
            });
            (rx, Some(task))
        }
    };
    let live = matches!(settings.source, SourceSpec::Bluez(_));
    let health = live.then_some(scan_health);

    let publisher_cancel = CancellationToken::new();
    let (publish, mut events, publisher_task) = publisher::spawn(
        &settings.mqtt,
        settings.gateway_id.as_str(),
        publisher_cancel.clone(),
    )?;

    let mut aggregator = Aggregator::new(settings.aggregator.clone());
    let dbus_status = settings.dbus_status;
    let mut daemon = Daemon {
        settings,
        outbox,
        publish,
        connected: false,
        report: RunReport::default(),
        totals: Counters::default(),
        last_receipt_unix_s: 0,
        reloads: 0,
        reload_failures: 0,
    };
    let mut notifier = Notifier::from_env();
    let mut adverts_at_last_tick = 0u64;
    let mut scan_gap = false;
    let status_service = if dbus_status {
        let initial = daemon.status(&aggregator, health.as_deref(), 0.0).await?;
        match StatusService::start(initial).await {
            Ok(service) => {
                info!(
                    name = super::status::BUS_NAME,
                    "status served on the system bus"
                );
                Some(service)
            }
            Err(e) => {
                warn!(
                    error = %e,
                    "no status on D-Bus (no system bus, or the name is taken or not allowed): \
                     the gateway runs without it"
                );
                None
            }
        }
    } else {
        None
    };
    let mut control = control;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge = tokio::time::Instant::now();
    let mut source_done = false;
    let mut source_task = source_task;

    let result: Result<(), DaemonError> = async {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                advert = adverts.recv(), if !source_done => match advert {
                    Some(advert) => {
                        daemon.report.adverts += 1;
                        if let Some(window) = aggregator.observe(&advert) {
                            daemon.commit_closed(window, &aggregator).await?;
                        }
                    }
                    None => {
                        source_done = true;
                        if let Some(task) = source_task.take() {
                            match task.await {
                                Ok(Ok(())) => info!(adverts = daemon.report.adverts, "source ended"),
                                Ok(Err(e)) if live => return Err(DaemonError::Scanner(e)),
                                Ok(Err(e)) => return Err(DaemonError::Source(e)),
                                Err(e) => return Err(DaemonError::Internal(e.to_string())),
                            }
                        }
                        // A recorded stream's last window ends with the stream.
                        if let Some(window) = aggregator.close_early() {
                            daemon.commit(window).await?;
                        }
                        daemon.send_due().await?;
                        if daemon.settings.exit_when_delivered && daemon.depth().await? == 0 {
                            break;
                        }
                    }
                },
                Some(event) = events.recv() => {
                    daemon.on_publisher(event).await?;
                    if source_done && daemon.settings.exit_when_delivered && daemon.depth().await? == 0 {
                        info!("source ended and every batch is receipted: exiting");
                        break;
                    }
                }
                Some(message) = async { match control.as_mut() { Some(c) => c.recv().await, None => None } } => {
                    if let Some(options) = daemon.apply(message) {
                        with_outbox(&daemon.outbox, move |o| { o.set_options(options); Ok(()) }).await?;
                    }
                }
                _ = tick.tick() => {
                    // Live radio: windows close on the wall clock. An empty window is reported
                    // only if the adapter scanned all through it: "nobody there" must not be
                    // claimed for a time the gateway could not hear (the gap shows instead).
                    let scanning_now = health.as_ref().is_none_or(|h| h.scanning());
                    scan_gap |= !scanning_now;
                    if live && let Some(window) = aggregator.tick(now_ms() as u64) {
                        if window.counters.adverts == 0 && scan_gap {
                            warn!(
                                window_start = %crate::output::iso_utc(u64::from(window.start.0) * 600),
                                "window not reported: the Bluetooth adapter was not scanning through it"
                            );
                        } else {
                            daemon.commit_closed(window, &aggregator).await?;
                        }
                        scan_gap = !scanning_now;
                    }
                    daemon.send_due().await?;
                    // Health check, then systemd and D-Bus: the status read below is the
                    // outbox answering; the publisher and source must still be running.
                    let rate = (daemon.report.adverts - adverts_at_last_tick) as f64;
                    adverts_at_last_tick = daemon.report.adverts;
                    let status = daemon.status(&aggregator, health.as_deref(), rate).await?;
                    let healthy = !publisher_task.is_finished()
                        && (source_done || source_task.as_ref().is_none_or(|t| !t.is_finished()));
                    let producing = health.as_ref().is_none_or(|h| h.armed_once());
                    if !notifier.ready && producing {
                        notifier.ready = true;
                        crate::notify::notify(&format!("READY=1\nSTATUS={}", status.summary()));
                        info!("ready");
                    }
                    if let Some(every) = notifier.watchdog_every
                        && healthy
                        && notifier.last_watchdog.elapsed() >= every
                    {
                        notifier.last_watchdog = tokio::time::Instant::now();
                        crate::notify::notify("WATCHDOG=1");
                    }
                    let line = status.summary();
                    if notifier.ready && line != notifier.last_status {
                        crate::notify::notify(&format!("STATUS={line}"));
                        notifier.last_status = line;
                    }
                    if let Some(service) = &status_service
                        && let Err(e) = service.update(&status).await
                    {
                        debug!(error = %e, "cannot update the D-Bus status");
                    }
                    if last_purge.elapsed() >= Duration::from_secs(3600) {
                        last_purge = tokio::time::Instant::now();
                        let report = with_outbox(&daemon.outbox, |o| o.purge(now_ms())).await?;
                        info!(?report, "outbox retention purge");
                    }
                }
            }
        }
        Ok(())
    }
    .await;

    // Stop order: source, window, seal, flush, publisher (module documentation).
    crate::notify::notify(
        "STOPPING=1\nSTATUS=stopping: sealing the open window and flushing the outbox",
    );
    source_cancel.cancel();
    if let Some(task) = source_task.take() {
        let _ = task.await;
    }
    if result.is_ok()
        && let Some(window) = aggregator.close_early()
    {
        daemon.commit(window).await?;
    }
    if result.is_ok() && daemon.depth().await? > 0 {
        let deadline = tokio::time::Instant::now() + daemon.settings.flush_deadline;
        let _ = daemon.send_due().await;
        while daemon.depth().await? > 0 {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                Some(event) = events.recv() => daemon.on_publisher(event).await?,
            }
        }
    }
    publisher_cancel.cancel();
    let _ = publisher_task.await;
    daemon.report.outbox_left = daemon.depth().await?;
    info!(
        adverts = daemon.report.adverts,
        sealed = daemon.report.batches_sealed,
        receipted = daemon.report.batches_receipted,
        unreceipted = daemon.report.outbox_left,
        "gateway stopped"
    );
    result.map(|()| daemon.report)
}
