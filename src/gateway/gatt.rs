//! BlueTrace TempID collection over GATT, for the BlueZ source (`bluetrace.collect_tempids`).
//!
//! A BlueTrace (OpenTrace v2, Wiqaytna) phone's advert carries no identifier: a central has to
//! connect and read the v2 characteristic ([`V2_CHARACTERISTIC_UUID`]) under the phone's
//! BlueTrace service. The BlueZ source offers every BlueTrace advert here ([`GattReader::offer`]);
//! what happens next is decided by a pure [`Scheduler`]:
//!
//! - a device (by address) is attempted at most once per [`GattOptions::reread_after`],
//!   whether the attempt worked or not — the time is taken when the attempt *starts*, so a
//!   phone that never answers is not hammered;
//! - at most [`GattOptions::max_connections`] attempts run at once (else `skipped_busy`; a
//!   later advert of the phone retries);
//! - at most [`GattOptions::max_reads_per_minute`] attempts start in any 60 s, over all
//!   phones (else `skipped_rate`).
//!
//! One attempt is one task: `Connect` → wait for `ServicesResolved` → find a service whose
//! UUID is a configured BlueTrace service UUID and, under it, the v2 characteristic → `ReadValue`
//! → **always** `Disconnect` (best effort, bounded by [`DISCONNECT_TIMEOUT`], also after an
//! error, a timeout or cancellation: a phone left connected stops being reachable for others).
//! Everything before the disconnect is bounded by [`GattOptions::attempt_timeout`]. The value
//! read is parsed by [`parse_read_payload`] (only the TempID and the organisation code survive)
//! and handed back to the source's loop, which sends it down the advert channel as an
//! [`Advert`](crate::advert::Advert) with `tempid_read` set, the device's latest RSSI and the
//! time of the read.
//!
//! Every outcome is counted in [`GattHealth`] (shown in the gateway's status). Shutdown:
//! [`GattReader::stop`] cancels the attempts in flight, each of which still disconnects its
//! phone, and waits for them (bounded).
//!
//! Privacy: the map of attempt times is keyed by device address, in memory only, expired
//! after `reread_after` and never persisted. Nothing here logs an address, a TempID or a
//! payload: failures are logged at debug level with their kind only (a bluer error's *message*
//! may quote an object path, which holds the address, so it is never logged).

use crate::advert::ServiceUuid;
use crate::bluetrace::{PayloadError, TempIdRead, V2_CHARACTERISTIC_UUID, parse_read_payload};
use bluer::{Address, DeviceEvent, DeviceProperty};
use futures::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How long the disconnect at the end of an attempt may take. BlueZ answers at once when the
/// link is up or gone; a hung bluetoothd must not hold shutdown.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// bluetoothd's configuration file, where `[GATT] Cache` decides whether it writes the GATT
/// database of the phones the gateway connects to (named by their address) to disk.
pub const BLUEZ_MAIN_CONF: &str = "/etc/bluetooth/main.conf";

/// bluetoothd's `[GATT] Cache` setting in `main_conf` (the text of `main.conf`): `"always"`
/// (BlueZ's default, also when the key or the file is absent), `"yes"` or `"no"`, as written.
pub fn bluez_gatt_cache(main_conf: Option<&str>) -> String {
    let mut section = "";
    let mut value = None;
    for line in main_conf.unwrap_or("").lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim();
        } else if section == "GATT"
            && let Some((key, v)) = line.split_once('=')
            && key.trim() == "Cache"
        {
            value = Some(v.trim().to_owned());
        }
    }
    value.unwrap_or_else(|| "always".to_owned())
}

/// Whether bluetoothd, configured by `main_conf`, writes the GATT database of unpaired devices
/// it connects to (under `/var/lib/bluetooth/ADAPTER/cache/ADDRESS`): with `Cache = always`.
pub fn bluez_caches_unpaired_devices(main_conf: Option<&str>) -> bool {
    bluez_gatt_cache(main_conf).eq_ignore_ascii_case("always")
}

/// The rate cap's window.
const MINUTE: Duration = Duration::from_secs(60);

/// How often expired attempt times are dropped from the map.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// How to collect TempIDs (`[bluetrace]` with `collect_tempids = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GattOptions {
    /// Organisation codes whose TempIDs are kept (`bluetrace.orgs`).
    pub orgs: Vec<String>,
    /// Most attempts in flight at once (`bluetrace.max_connections`).
    pub max_connections: usize,
    /// Bound on connect + resolve + read (`bluetrace.connect_timeout_s`).
    pub attempt_timeout: Duration,
    /// A device is not attempted again within this long (`bluetrace.reread_after_s`).
    pub reread_after: Duration,
    /// Most attempts started in any 60 s (`bluetrace.max_reads_per_minute`).
    pub max_reads_per_minute: usize,
}

/// Counters of TempID collection, shared with the daemon's status.
#[derive(Debug, Default)]
pub struct GattHealth {
    enabled: AtomicBool,
    /// Attempts started (a connection tried).
    pub attempts: AtomicU64,
    /// TempIDs read, parsed and sent on.
    pub reads: AtomicU64,
    /// Attempts that ran out of time (the phone never connected, never resolved its services,
    /// or never answered the read).
    pub timeouts: AtomicU64,
    /// Connections refused, dropped, or the device gone.
    pub connect_failures: AtomicU64,
    /// Service discovery or the read itself failed.
    pub read_failures: AtomicU64,
    /// Connected, but no BlueTrace service with the v2 characteristic.
    pub no_characteristic: AtomicU64,
    /// Values that are not a v2 payload (too long, not JSON, wrong version, bad TempID or
    /// organisation code).
    pub malformed: AtomicU64,
    /// Well-formed payloads of an organisation not configured.
    pub wrong_org: AtomicU64,
    /// BlueTrace adverts not attempted because every connection slot was taken.
    pub skipped_busy: AtomicU64,
    /// BlueTrace adverts not attempted because the per-minute budget was spent.
    pub skipped_rate: AtomicU64,
}

impl GattHealth {
    /// Whether TempID collection is on (its counters are shown only then).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(super) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// The counters by name, for status and logs.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("tempid_attempts", get(&self.attempts)),
            ("tempid_reads", get(&self.reads)),
            ("tempid_timeouts", get(&self.timeouts)),
            ("tempid_connect_failures", get(&self.connect_failures)),
            ("tempid_read_failures", get(&self.read_failures)),
            ("tempid_no_characteristic", get(&self.no_characteristic)),
            ("tempid_malformed", get(&self.malformed)),
            ("tempid_wrong_org", get(&self.wrong_org)),
            ("tempid_skipped_busy", get(&self.skipped_busy)),
            ("tempid_skipped_rate", get(&self.skipped_rate)),
        ]
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What to do with one BlueTrace advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Attempted recently, or an attempt is in flight: nothing to do, nothing to count.
    Wait,
    /// Every connection slot is taken.
    Busy,
    /// The per-minute budget is spent.
    Rate,
    /// Attempt it now (recorded as started).
    Go,
}

/// The pure part: when to attempt which device. Bounded: an entry of `attempted` is made only
/// by an attempt, at most `per_minute` a minute, and dropped once older than `reread_after`
/// (checked every [`PRUNE_EVERY`]), so it holds at most
/// `per_minute × (reread_after + 10 s) / 60 s` devices (36,600 at the largest settings).
#[derive(Debug)]
pub(super) struct Scheduler {
    reread_after: Duration,
    max_connections: usize,
    per_minute: usize,
    attempted: HashMap<Address, Instant>,
    in_flight: HashSet<Address>,
    recent: VecDeque<Instant>,
    last_prune: Option<Instant>,
}

impl Scheduler {
    pub(super) fn new(opts: &GattOptions) -> Self {
        Self {
            reread_after: opts.reread_after,
            max_connections: opts.max_connections.max(1),
            per_minute: opts.max_reads_per_minute.max(1),
            attempted: HashMap::new(),
            in_flight: HashSet::new(),
            recent: VecDeque::new(),
            last_prune: None,
        }
    }

    /// Decides about an advert of `address` at `now`; [`Decision::Go`] records the attempt.
    pub(super) fn decide(&mut self, address: Address, now: Instant) -> Decision {
        self.prune(now);
        if self.in_flight.contains(&address)
            || self
                .attempted
                .get(&address)
                .is_some_and(|&t| now.saturating_duration_since(t) < self.reread_after)
        {
            return Decision::Wait;
        }
        if self.in_flight.len() >= self.max_connections {
            return Decision::Busy;
        }
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= MINUTE)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.per_minute {
            return Decision::Rate;
        }
        self.recent.push_back(now);
        self.attempted.insert(address, now);
        self.in_flight.insert(address);
        Decision::Go
    }

    /// An attempt of `address` ended (its slot is free again).
    pub(super) fn finished(&mut self, address: Address) {
        self.in_flight.remove(&address);
    }

    /// Attempts in flight (tests).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Devices remembered (tests).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.attempted.len()
    }

    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|t| now.saturating_duration_since(t) < PRUNE_EVERY)
        {
            return;
        }
        self.last_prune = Some(now);
        let keep = self.reread_after;
        self.attempted
            .retain(|_, t| now.saturating_duration_since(*t) < keep);
    }
}

/// Why an attempt yielded no TempID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// The whole attempt outlasted its bound.
    Timeout,
    /// Connecting failed (BlueZ's error kind), or the link dropped before the services were
    /// resolved.
    Connect(String),
    /// Service discovery or the read failed (BlueZ's error kind).
    Read(String),
    /// No configured BlueTrace service with the v2 characteristic.
    NoCharacteristic,
    /// The value is not one this gateway keeps.
    Payload(PayloadError),
}

/// How one attempt ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// A TempID, read at `time_ms` (Unix milliseconds).
    Read {
        /// What was read.
        read: TempIdRead,
        /// When.
        time_ms: u64,
    },
    /// No TempID.
    Failed(Failure),
    /// Cancelled by shutdown (the phone was still disconnected).
    Cancelled,
}

/// A finished attempt.
#[derive(Debug)]
pub(super) struct Done {
    /// The device.
    pub(super) address: Address,
    /// Its RSSI when the attempt started (used if the device is no longer tracked).
    pub(super) rssi: i8,
    /// How it ended.
    pub(super) outcome: Outcome,
}

/// The GATT side of the BlueZ source: schedules attempts and runs them as tasks. Lives as long
/// as the source (across re-armings); its attempts do not outlive a scan (see
/// [`GattReader::stop`]).
pub(super) struct GattReader {
    opts: GattOptions,
    uuids: Arc<[ServiceUuid]>,
    scheduler: Scheduler,
    tasks: JoinSet<Done>,
    addresses: HashMap<tokio::task::Id, Address>,
    cancel: CancellationToken,
}

impl GattReader {
    /// A reader looking for the v2 characteristic under the services `uuids`.
    pub(super) fn new(opts: GattOptions, uuids: &[ServiceUuid]) -> Self {
        Self {
            scheduler: Scheduler::new(&opts),
            opts,
            uuids: uuids.into(),
            tasks: JoinSet::new(),
            addresses: HashMap::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Whether an attempt is in flight (so [`next_done`](Self::next_done) has something to
    /// wait for).
    pub(super) fn busy(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// A BlueTrace advert of `address` was heard with `rssi`: start an attempt if the
    /// scheduler allows.
    pub(super) fn offer(
        &mut self,
        adapter: &bluer::Adapter,
        address: Address,
        rssi: i8,
        health: &GattHealth,
    ) {
        match self.scheduler.decide(address, Instant::now()) {
            Decision::Wait => {}
            Decision::Busy => bump(&health.skipped_busy),
            Decision::Rate => bump(&health.skipped_rate),
            Decision::Go => {
                bump(&health.attempts);
                let device = match adapter.device(address) {
                    Ok(device) => device,
                    Err(e) => {
                        // Only an invalid adapter name gets here; count it as a failed connect.
                        self.scheduler.finished(address);
                        bump(&health.connect_failures);
                        debug!(kind = %e.kind, "BlueTrace TempID read: cannot address the device");
                        return;
                    }
                };
                let task = attempt(
                    device,
                    Arc::clone(&self.uuids),
                    self.opts.orgs.clone(),
                    self.opts.attempt_timeout,
                    self.cancel.child_token(),
                );
                let handle = self.tasks.spawn(async move {
                    Done {
                        address,
                        rssi,
                        outcome: task.await,
                    }
                });
                self.addresses.insert(handle.id(), address);
            }
        }
    }

    /// The next finished attempt; `None` when none is in flight.
    pub(super) async fn next_done(&mut self) -> Option<Done> {
        let joined = self.tasks.join_next_with_id().await?;
        let done = match joined {
            Ok((id, done)) => {
                self.addresses.remove(&id);
                done
            }
            Err(e) => {
                // A panic in an attempt (a bug) or an abort by `stop`: free the slot.
                let address = self.addresses.remove(&e.id()).unwrap_or(Address::any());
                Done {
                    address,
                    rssi: 0,
                    outcome: if e.is_cancelled() {
                        Outcome::Cancelled
                    } else {
                        Outcome::Failed(Failure::Read("internal error".into()))
                    },
                }
            }
        };
        self.scheduler.finished(done.address);
        Some(done)
    }

    /// Counts a finished attempt and logs a failure (debug, kind only); the TempID if one was
    /// read.
    pub(super) fn account(outcome: Outcome, health: &GattHealth) -> Option<(TempIdRead, u64)> {
        let failure = match outcome {
            Outcome::Read { read, time_ms } => {
                bump(&health.reads);
                return Some((read, time_ms));
            }
            Outcome::Cancelled => return None,
            Outcome::Failed(failure) => failure,
        };
        match &failure {
            Failure::Timeout => {
                bump(&health.timeouts);
                debug!("BlueTrace TempID read timed out");
            }
            Failure::Connect(kind) => {
                bump(&health.connect_failures);
                debug!(kind = %kind, "BlueTrace TempID read: cannot connect");
            }
            Failure::Read(kind) => {
                bump(&health.read_failures);
                debug!(kind = %kind, "BlueTrace TempID read failed");
            }
            Failure::NoCharacteristic => {
                bump(&health.no_characteristic);
                debug!("BlueTrace TempID read: no BlueTrace v2 characteristic on the device");
            }
            Failure::Payload(PayloadError::WrongOrg { found }) => {
                bump(&health.wrong_org);
                debug!(org = %found, "BlueTrace TempID of an organisation not configured: dropped");
            }
            Failure::Payload(e) => {
                bump(&health.malformed);
                // The error names the kind of problem and sizes, never the payload itself.
                debug!(error = %e, "BlueTrace TempID read: malformed payload dropped");
            }
        }
        None
    }

    /// Cancels the attempts in flight and waits until they have disconnected their phones
    /// (bounded: an attempt that does not end within [`DISCONNECT_TIMEOUT`] and a second is
    /// aborted). The reader can be used again afterwards.
    pub(super) async fn stop(&mut self) {
        self.cancel.cancel();
        let deadline = Instant::now() + DISCONNECT_TIMEOUT + Duration::from_secs(1);
        while self.busy() {
            if tokio::time::timeout_at(deadline, self.next_done())
                .await
                .is_err()
            {
                self.tasks.abort_all();
                while self.next_done().await.is_some() {}
            }
        }
        self.cancel = CancellationToken::new();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One attempt: read (bounded by `timeout`, or cut short by `cancel`), then always disconnect,
/// then parse.
async fn attempt(
    device: bluer::Device,
    uuids: Arc<[ServiceUuid]>,
    orgs: Vec<String>,
    timeout: Duration,
    cancel: CancellationToken,
) -> Outcome {
    let result = tokio::select! {
        () = cancel.cancelled() => None,
        r = tokio::time::timeout(timeout, read_value(&device, &uuids)) => {
            Some(r.unwrap_or(Err(Failure::Timeout)))
        }
    };
    // Always, whatever happened: Disconnect also cancels a Connect still pending in BlueZ.
    // Its errors (NotConnected after a failed connect, mostly) change nothing.
    let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, device.disconnect()).await;
    match result {
        None => Outcome::Cancelled,
        Some(Err(failure)) => Outcome::Failed(failure),
        Some(Ok((bytes, time_ms))) => match parse_read_payload(&bytes, &orgs) {
            Ok(read) => Outcome::Read { read, time_ms },
            Err(e) => Outcome::Failed(Failure::Payload(e)),
        },
    }
}

fn kind(e: &bluer::Error) -> String {
    e.kind.to_string()
}

/// Connects, waits for the services, finds the v2 characteristic and reads it: the value and
/// when it was read.
async fn read_value(
    device: &bluer::Device,
    uuids: &[ServiceUuid],
) -> Result<(Vec<u8>, u64), Failure> {
    let connect = |e: bluer::Error| Failure::Connect(kind(&e));
    let read = |e: bluer::Error| Failure::Read(kind(&e));
    // Subscribe before connecting, so ServicesResolved cannot be missed in between.
    let mut events = device.events().await.map_err(connect)?;
    device.connect().await.map_err(connect)?;
    if !device.is_services_resolved().await.map_err(connect)? {
        loop {
            match events.next().await {
                Some(DeviceEvent::PropertyChanged(DeviceProperty::ServicesResolved(true))) => break,
                Some(DeviceEvent::PropertyChanged(DeviceProperty::Connected(false))) => {
                    return Err(Failure::Connect("disconnected by the phone".into()));
                }
                Some(_) => {}
                None => return Err(Failure::Connect("device removed".into())),
            }
        }
    }
    // Two object-tree listings at most (services, then one service's characteristics): the
    // UUID of each service is checked before its characteristics are listed.
    for service in device.services().await.map_err(read)? {
        let Ok(uuid) = service.uuid().await else {
            continue;
        };
        if !uuids.contains(&ServiceUuid(uuid.as_u128())) {
            continue;
        }
        for characteristic in service.characteristics().await.map_err(read)? {
            if characteristic
                .uuid()
                .await
                .is_ok_and(|u| ServiceUuid(u.as_u128()) == V2_CHARACTERISTIC_UUID)
            {
                let value = characteristic.read().await.map_err(read)?;
                return Ok((value, now_ms()));
            }
        }
    }
    Err(Failure::NoCharacteristic)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BlueZ caches every device unless `[GATT] Cache` says otherwise; other sections,
    /// comments and spacing are handled.
    #[test]
    fn bluez_gatt_cache_setting() {
        assert!(bluez_caches_unpaired_devices(None));
        assert!(bluez_caches_unpaired_devices(Some(
            "[General]\nName = gw\n"
        )));
        assert!(bluez_caches_unpaired_devices(Some(
            "[GATT]\n#Cache = always\n# Cache = yes\n"
        )));
        assert!(!bluez_caches_unpaired_devices(Some(
            "[General]\nCache = always\n[GATT]\n  Cache=yes  \n[LE]\n"
        )));
        assert!(!bluez_caches_unpaired_devices(Some("[GATT]\nCache = no\n")));
        assert!(bluez_caches_unpaired_devices(Some(
            "[GATT]\nCache = always\n"
        )));
        assert_eq!(bluez_gatt_cache(Some("[ GATT ]\nCache = yes")), "yes");
    }

    fn opts(max_connections: usize, per_minute: usize) -> GattOptions {
        GattOptions {
            orgs: vec!["MAR".into()],
            max_connections,
            attempt_timeout: Duration::from_secs(6),
            reread_after: Duration::from_secs(100),
            max_reads_per_minute: per_minute,
        }
    }

    fn addr(n: u8) -> Address {
        Address([0x4E, 0, 0, 0, 0, n])
    }

    /// A device is attempted once per `reread_after`, counted from the start of the attempt,
    /// whether it worked or not; an attempt in flight is never doubled.
    #[test]
    fn rereads_wait_for_reread_after() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&opts(2, 100));
        assert_eq!(s.decide(addr(1), t0), Decision::Go);
        assert_eq!(
            s.decide(addr(1), t0 + Duration::from_secs(1)),
            Decision::Wait
        );
        s.finished(addr(1));
        assert_eq!(
            s.decide(addr(1), t0 + Duration::from_secs(99)),
            Decision::Wait
        );
        assert_eq!(
            s.decide(addr(1), t0 + Duration::from_secs(100)),
            Decision::Go
        );
        // Still in flight after reread_after (a long timeout): not started twice.
        assert_eq!(
            s.decide(addr(1), t0 + Duration::from_secs(250)),
            Decision::Wait
        );
    }

    /// At most `max_connections` in flight; a freed slot is used by the next advert.
    #[test]
    fn connection_slots_are_bounded() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&opts(2, 100));
        assert_eq!(s.decide(addr(1), t0), Decision::Go);
        assert_eq!(s.decide(addr(2), t0), Decision::Go);
        assert_eq!(s.decide(addr(3), t0), Decision::Busy);
        assert_eq!(s.in_flight(), 2);
        s.finished(addr(1));
        assert_eq!(s.decide(addr(3), t0), Decision::Go);
        assert_eq!(s.decide(addr(4), t0), Decision::Busy);
    }

    /// At most `max_reads_per_minute` attempts start in any 60 s; a device refused for the
    /// rate is not remembered, so its next advert after the minute is attempted.
    #[test]
    fn rate_cap_is_a_sliding_minute() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&opts(4, 2));
        assert_eq!(s.decide(addr(1), t0), Decision::Go);
        s.finished(addr(1));
        assert_eq!(
            s.decide(addr(2), t0 + Duration::from_secs(30)),
            Decision::Go
        );
        s.finished(addr(2));
        assert_eq!(
            s.decide(addr(3), t0 + Duration::from_secs(59)),
            Decision::Rate
        );
        assert_eq!(
            s.decide(addr(3), t0 + Duration::from_secs(60)),
            Decision::Go
        );
        s.finished(addr(3));
        assert_eq!(
            s.decide(addr(4), t0 + Duration::from_secs(61)),
            Decision::Rate
        );
        assert_eq!(
            s.decide(addr(4), t0 + Duration::from_secs(90)),
            Decision::Go
        );
    }

    /// Attempt times expire: the map does not grow with every address ever seen.
    #[test]
    fn attempt_times_expire() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(&opts(4, 600));
        for n in 0..50 {
            assert_eq!(s.decide(addr(n), t0), Decision::Go);
            s.finished(addr(n));
        }
        assert_eq!(s.remembered(), 50);
        assert_eq!(
            s.decide(addr(200), t0 + Duration::from_secs(101)),
            Decision::Go
        );
        assert_eq!(s.remembered(), 1, "expired entries dropped");
    }

    /// Every outcome lands in exactly one counter; a TempID comes back with its time.
    #[test]
    fn outcomes_are_counted() {
        let health = GattHealth::default();
        let tempid = crate::bluetrace::TempId::from_bytes([1; crate::bluetrace::TempId::LEN]);
        let read = TempIdRead {
            tempid,
            org: "MAR".into(),
        };
        assert_eq!(
            GattReader::account(
                Outcome::Read {
                    read: read.clone(),
                    time_ms: 7
                },
                &health
            ),
            Some((read, 7))
        );
        for failure in [
            Failure::Timeout,
            Failure::Connect("Failed".into()),
            Failure::Read("NotPermitted".into()),
            Failure::NoCharacteristic,
            Failure::Payload(PayloadError::NotJson),
            Failure::Payload(PayloadError::TooLong(600)),
            Failure::Payload(PayloadError::WrongOrg { found: "SG".into() }),
        ] {
            assert_eq!(GattReader::account(Outcome::Failed(failure), &health), None);
        }
        assert_eq!(GattReader::account(Outcome::Cancelled, &health), None);
        let counters: HashMap<_, _> = health.counters().into_iter().collect();
        assert_eq!(counters["tempid_reads"], 1);
        assert_eq!(counters["tempid_timeouts"], 1);
        assert_eq!(counters["tempid_connect_failures"], 1);
        assert_eq!(counters["tempid_read_failures"], 1);
        assert_eq!(counters["tempid_no_characteristic"], 1);
        assert_eq!(counters["tempid_malformed"], 2);
        assert_eq!(counters["tempid_wrong_org"], 1);
    }
}
