//! The BlueZ source: LE discovery through bluetoothd's D-Bus API (crate `bluer`), every
//! ServiceData/RSSI change of a device turned into an [`Advert`] on the channel every source
//! uses.
//!
//! Discovery runs with `Transport=le`, `DuplicateData=true` and **no UUID filter** (several
//! BlueZ versions refuse or crash on UUID filters); which adverts matter — service data under
//! 0xFD6F, or a configured BlueTrace service UUID — is decided here, and only those go down
//! the channel.
//!
//! Lifecycle: the source arms (session, adapter, power, filter, discovery) and pumps events
//! until one of these ends the scan, each logged once with its cause and counted in
//! [`ScanHealth`]: bluetoothd leaves the bus (`NameOwnerChanged` of `org.bluez`), the adapter
//! is removed, or `Discovering` turns false. It then re-arms, retrying every
//! [`BluezOptions::retry`] (and at once when `org.bluez` gets an owner again) until the
//! adapter is back. A failure on the *first* arming is an error: the daemon exits with a
//! message naming the adapter, and systemd restarts it. Per-device state is dropped when
//! BlueZ removes the device (it forgets a phone ~30 s after its last advert, so rotating
//! addresses do not accumulate); at most [`BluezOptions::max_devices`] are tracked.
//! Shutdown stops discovery. Losing the system bus itself ends the source with an error (the
//! daemon exits and systemd restarts it).
//!
//! BlueTrace TempIDs (`bluetrace.collect_tempids`, [`BluezOptions::gatt`]): every BlueTrace
//! advert is offered to the [`gatt`](super::gatt) reader, which may connect to the phone and
//! read its TempID; a read comes back into this loop and goes down the same channel as an
//! [`Advert`] with `tempid_read` set. Whenever a scan ends (shutdown included) the reads in
//! flight are cancelled and their phones disconnected *before* discovery is stopped.
//!
//! Privacy: device addresses stay in memory (in the [`Advert`] and the device map) and are
//! never logged.

use super::gatt::{GattHealth, GattOptions, GattReader};
use crate::advert::{Advert, DeviceAddress, ServiceUuid};
use crate::beacon::{Beacon, classify};
use bluer::{
    AdapterEvent, AdapterProperty, Address, DeviceEvent, DeviceProperty, DiscoveryFilter,
    DiscoveryTransport, Session,
};
use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// BlueZ's well-known name on the system bus.
pub const BLUEZ_NAME: &str = "org.bluez";

/// What to scan with.
#[derive(Debug, Clone, PartialEq)]
pub struct BluezOptions {
    /// The adapter (`hci0`...); `None` for BlueZ's default one.
    pub adapter: Option<String>,
    /// Power the adapter on when it is off.
    pub power_on: bool,
    /// Most devices tracked at once.
    pub max_devices: usize,
    /// BlueTrace service UUIDs (GAEN's 0xFD6F is always included).
    pub bluetrace_uuids: Vec<ServiceUuid>,
    /// Pause between two arming attempts after the scan was lost.
    pub retry: Duration,
    /// Read BlueTrace TempIDs over GATT (`bluetrace.collect_tempids`); `None`: BlueTrace
    /// phones are only counted from their adverts, and no connection is ever made.
    pub gatt: Option<GattOptions>,
}

/// Why the BlueZ source could not start.
#[derive(Debug, thiserror::Error)]
pub enum BluezError {
    /// No system bus.
    #[error("cannot connect to the D-Bus system bus{}", address_hint())]
    Bus(#[source] zbus::Error),
    /// bluetoothd is not on the bus.
    #[error(
        "BlueZ ({BLUEZ_NAME}) is not running on the system bus: start bluetoothd \
         (systemctl start bluetooth)"
    )]
    NoBluez,
    /// No adapter at all.
    #[error("no Bluetooth adapter found by BlueZ (is the radio attached and enabled?)")]
    NoAdapter,
    /// The configured adapter does not exist.
    #[error("Bluetooth adapter {name} not found (scan.adapter); BlueZ has: {present}")]
    AdapterNotFound {
        /// The configured name.
        name: String,
        /// What exists, comma-separated.
        present: String,
    },
    /// Powered off and not allowed to power it on.
    #[error(
        "Bluetooth adapter {name} is powered off and scan.power_on = false \
         (power it on: bluetoothctl power on)"
    )]
    PoweredOff {
        /// The adapter.
        name: String,
    },
    /// The system bus connection closed under a running scan (dbus-daemon stopped).
    #[error("lost the D-Bus system bus connection")]
    BusLost,
    /// A BlueZ call failed.
    #[error("Bluetooth adapter {name}: cannot {action}")]
    Call {
        /// The adapter.
        name: String,
        /// What was being done.
        action: &'static str,
        /// BlueZ's answer.
        #[source]
        source: bluer::Error,
    },
}

fn address_hint() -> String {
    match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
        Ok(a) if !a.is_empty() => format!(" ({a})"),
        _ => " (/run/dbus/system_bus_socket)".to_owned(),
    }
}

/// Live health of the scan, shared with the daemon (status, watchdog, READY).
#[derive(Debug, Default)]
pub struct ScanHealth {
    scanning: AtomicBool,
    armed_once: AtomicBool,
    adapter: Mutex<String>,
    /// Times bluetoothd left the bus.
    pub bluez_lost: AtomicU64,
    /// Times the adapter was removed.
    pub adapter_lost: AtomicU64,
    /// Times discovery stopped under us (`Discovering` false).
    pub discovery_stopped: AtomicU64,
    /// Times scanning was (re-)armed.
    pub armed: AtomicU64,
    /// Devices whose state was dropped because BlueZ removed them.
    pub devices_removed: AtomicU64,
    /// Devices ignored because `max_devices` were tracked.
    pub devices_ignored: AtomicU64,
    /// Relevant adverts sent down the channel.
    pub adverts: AtomicU64,
    /// Devices tracked now (a gauge).
    pub devices: AtomicU64,
    /// Device updates without anything of interest (other BLE devices).
    pub unrelated: AtomicU64,
    /// BlueZ calls about one device that failed (the device went away meanwhile, mostly).
    pub device_errors: AtomicU64,
    /// BlueTrace TempID collection over GATT.
    pub gatt: GattHealth,
}

impl ScanHealth {
    /// Whether discovery is running now.
    pub fn scanning(&self) -> bool {
        self.scanning.load(Ordering::Relaxed)
    }

    /// Whether discovery has run at least once (READY=1 waits for it).
    pub fn armed_once(&self) -> bool {
        self.armed_once.load(Ordering::Relaxed)
    }

    /// The adapter in use (empty before the first arming).
    pub fn adapter(&self) -> String {
        self.adapter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_scanning(&self, adapter: Option<&str>) {
        if let Some(name) = adapter {
            *self
                .adapter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = name.to_owned();
            self.armed_once.store(true, Ordering::Relaxed);
        }
        self.scanning.store(adapter.is_some(), Ordering::Relaxed);
    }

    /// The counters by name, for status and logs.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counters = vec![
            ("scan_armed", get(&self.armed)),
            ("scan_devices_tracked", get(&self.devices)),
            ("scan_bluez_lost", get(&self.bluez_lost)),
            ("scan_adapter_lost", get(&self.adapter_lost)),
            ("scan_discovery_stopped", get(&self.discovery_stopped)),
            ("scan_devices_removed", get(&self.devices_removed)),
            ("scan_devices_ignored", get(&self.devices_ignored)),
            ("scan_device_errors", get(&self.device_errors)),
            ("scan_unrelated_updates", get(&self.unrelated)),
        ];
        if self.gatt.enabled() {
            counters.extend(self.gatt.counters());
        }
        counters
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Why one armed scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Cancelled,
    BusLost,
    ReceiverClosed,
    BluezLost,
    AdapterRemoved,
    DiscoveryStopped,
}

/// An armed scan: the session and adapter it runs on and its discovery stream.
struct Armed {
    session: Session,
    adapter: bluer::Adapter,
    discovery: BoxStream<'static, AdapterEvent>,
}

/// What the source knows of one device: its latest properties.
#[derive(Debug, Default)]
struct DeviceState {
    rssi: Option<i16>,
    tx_power: Option<i16>,
    uuids: Vec<ServiceUuid>,
    service_data: Vec<(ServiceUuid, Vec<u8>)>,
    manufacturer_data: Vec<(u16, Vec<u8>)>,
}

fn uuid(u: &bluer::Uuid) -> ServiceUuid {
    ServiceUuid(u.as_u128())
}

impl DeviceState {
    /// Applies one property change; true if it is an advert (service or manufacturer data
    /// heard again, or a new RSSI).
    fn apply(&mut self, property: DeviceProperty) -> bool {
        match property {
            DeviceProperty::Rssi(rssi) => {
                self.rssi = Some(rssi);
                true
            }
            DeviceProperty::TxPower(p) => {
                self.tx_power = Some(p);
                false
            }
            DeviceProperty::Uuids(uuids) => {
                let mut list: Vec<ServiceUuid> = uuids.iter().map(uuid).collect();
                list.sort();
                self.uuids = list;
                false
            }
            DeviceProperty::ServiceData(data) => {
                let mut list: Vec<(ServiceUuid, Vec<u8>)> =
                    data.into_iter().map(|(u, d)| (uuid(&u), d)).collect();
                list.sort();
                self.service_data = list;
                true
            }
            DeviceProperty::ManufacturerData(data) => {
                let mut list: Vec<(u16, Vec<u8>)> = data.into_iter().collect();
                list.sort();
                self.manufacturer_data = list;
                true
            }
            _ => false,
        }
    }

    fn advert(&self, address: Address, time_ms: u64) -> Option<Advert> {
        let rssi = self.rssi?;
        Some(Advert {
            time_ms,
            address: DeviceAddress(address.0),
            rssi: to_i8(rssi),
            tx_power: self.tx_power.map(to_i8),
            service_uuids: self.uuids.clone(),
            service_data: self.service_data.clone(),
            manufacturer_data: self.manufacturer_data.clone(),
            tempid_read: None,
        })
    }
}

/// dBm as BlueZ gives them (i16), clamped to the advert's i8.
fn to_i8(dbm: i16) -> i8 {
    dbm.clamp(i16::from(i8::MIN), i16::from(i8::MAX)) as i8
}

/// The device's advert now, if it has an RSSI and is a GAEN or BlueTrace phone; with whether
/// it is a BlueTrace one.
fn phone_advert(
    state: &DeviceState,
    address: Address,
    time_ms: u64,
    bluetrace: &[ServiceUuid],
    health: &ScanHealth,
) -> Option<(Advert, bool)> {
    let advert = state.advert(address, time_ms)?;
    match classify(&advert, bluetrace) {
        Beacon::Unrelated => {
            bump(&health.unrelated);
            None
        }
        Beacon::BlueTrace => Some((advert, true)),
        _ => Some((advert, false)),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the BlueZ source until `cancel` fires or the receiver is dropped; see the module
/// documentation. Errors only when the first arming fails.
pub async fn run_bluez(
    opts: BluezOptions,
    tx: mpsc::Sender<Advert>,
    cancel: CancellationToken,
    health: std::sync::Arc<ScanHealth>,
) -> Result<(), BluezError> {
    let bus = zbus::Connection::system().await.map_err(BluezError::Bus)?;
    let dbus = zbus::fdo::DBusProxy::new(&bus)
        .await
        .map_err(BluezError::Bus)?;
    let mut owners = dbus
        .receive_name_owner_changed_with_args(&[(0, BLUEZ_NAME)])
        .await
        .map_err(BluezError::Bus)?;
    let has_owner = |dbus: &zbus::fdo::DBusProxy<'static>| {
        let dbus = dbus.clone();
        async move {
            match zbus::names::BusName::try_from(BLUEZ_NAME) {
                Ok(name) => dbus.name_has_owner(name).await.unwrap_or(false),
                Err(_) => false,
            }
        }
    };
    if !has_owner(&dbus).await {
        return Err(BluezError::NoBluez);
    }

    let mut gatt = opts
        .gatt
        .clone()
        .map(|g| GattReader::new(g, &opts.bluetrace_uuids));
    if gatt.is_some() {
        let main_conf = std::fs::read_to_string(super::gatt::BLUEZ_MAIN_CONF).ok();
        if super::gatt::bluez_caches_unpaired_devices(main_conf.as_deref()) {
            warn!(
                file = super::gatt::BLUEZ_MAIN_CONF,
                "bluetoothd caches the GATT database of every phone the gateway reads, on disk \
                 under its address (/var/lib/bluetooth/*/cache/): set [GATT] Cache = yes there \
                 and restart bluetooth (docs/operations.md, BlueTrace TempID collection)"
            );
        }
    }
    health.gatt.set_enabled(gatt.is_some());
    let mut first = true;
    let mut last_failure: Option<String> = None;
    loop {
        match arm(&opts).await {
            Ok(mut armed) => {
                let name = armed.adapter.name().to_owned();
                health.set_scanning(Some(&name));
                bump(&health.armed);
                if first {
                    info!(adapter = %name, "scanning for Exposure Notification and BlueTrace adverts");
                } else {
                    info!(adapter = %name, "scanning again");
                }
                first = false;
                last_failure = None;
                let ended = pump(
                    &mut armed,
                    &opts,
                    &tx,
                    &cancel,
                    &mut owners,
                    &health,
                    &mut gatt,
                )
                .await;
                // Reads first: their phones are disconnected while BlueZ is still there.
                if let Some(reader) = gatt.as_mut() {
                    reader.stop().await;
                }
                health.set_scanning(None);
                health.devices.store(0, Ordering::Relaxed);
                match ended {
                    Ended::Cancelled | Ended::ReceiverClosed => {
                        stop_discovery(armed).await;
                        return Ok(());
                    }
                    Ended::BusLost => return Err(BluezError::BusLost),
                    Ended::BluezLost => {
                        bump(&health.bluez_lost);
                        warn!(
                            adapter = %name,
                            "BlueZ left the system bus (bluetoothd stopped or restarted): \
                             scanning paused until it is back"
                        );
                    }
                    Ended::AdapterRemoved => {
                        bump(&health.adapter_lost);
                        warn!(adapter = %name, "Bluetooth adapter removed: scanning paused until it is back");
                    }
                    Ended::DiscoveryStopped => {
                        bump(&health.discovery_stopped);
                        warn!(
                            adapter = %name,
                            "discovery stopped (Discovering turned false: adapter powered off, \
                             or stopped by another program): re-arming"
                        );
                    }
                }
                drop(armed);
            }
            Err(e) if first => return Err(e),
            Err(e) => {
                let text = crate::exit::describe(&e);
                if last_failure.as_deref() != Some(text.as_str()) {
                    warn!(error = %text, retry_s = opts.retry.as_secs_f64(), "cannot scan yet; retrying");
                    last_failure = Some(text);
                }
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    change = owners.next() => {
                        if change.is_none() {
                            return Err(BluezError::BusLost);
                        }
                        // BlueZ (re)appeared: give it a moment to export its adapters.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    () = tokio::time::sleep(opts.retry) => {}
                }
            }
        }
    }
}

/// Connects a session, finds and powers the adapter, sets the filter, starts discovery.
async fn arm(opts: &BluezOptions) -> Result<Armed, BluezError> {
    let session = Session::new().await.map_err(|source| BluezError::Call {
        name: opts.adapter.clone().unwrap_or_default(),
        action: "connect to BlueZ",
        source,
    })?;
    let names = session.adapter_names().await.map_err(|e| match e.kind {
        bluer::ErrorKind::Internal(_) | bluer::ErrorKind::ServicesUnresolved => BluezError::NoBluez,
        _ => BluezError::NoBluez,
    })?;
    let adapter = match &opts.adapter {
        Some(name) if !names.contains(name) => {
            return Err(BluezError::AdapterNotFound {
                name: name.clone(),
                present: if names.is_empty() {
                    "no adapter".to_owned()
                } else {
                    names.join(", ")
                },
            });
        }
        Some(name) => session.adapter(name),
        None if names.is_empty() => return Err(BluezError::NoAdapter),
        None => session.default_adapter().await,
    };
    let adapter = adapter.map_err(|source| BluezError::Call {
        name: opts.adapter.clone().unwrap_or_default(),
        action: "open the adapter",
        source,
    })?;
    let name = adapter.name().to_owned();
    let call = |action: &'static str| {
        let name = name.clone();
        move |source| BluezError::Call {
            name,
            action,
            source,
        }
    };
    if !adapter
        .is_powered()
        .await
        .map_err(call("read its Powered property"))?
    {
        if !opts.power_on {
            return Err(BluezError::PoweredOff { name });
        }
        adapter
            .set_powered(true)
            .await
            .map_err(call("power it on"))?;
        info!(adapter = %name, "powered the Bluetooth adapter on");
    }
    adapter
        .set_discovery_filter(DiscoveryFilter {
            transport: DiscoveryTransport::Le,
            duplicate_data: true,
            ..DiscoveryFilter::default()
        })
        .await
        .map_err(call("set the LE discovery filter"))?;
    let discovery = adapter
        .discover_devices()
        .await
        .map_err(call("start LE discovery"))?
        .boxed();
    Ok(Armed {
        session,
        adapter,
        discovery,
    })
}

/// Stops discovery: dropping bluer's discovery stream calls StopDiscovery; wait (briefly)
/// until the adapter says so, so the call is not lost when the process exits right after.
async fn stop_discovery(armed: Armed) {
    let Armed {
        session,
        adapter,
        discovery,
    } = armed;
    drop(discovery);
    for _ in 0..20 {
        match adapter.is_discovering().await {
            Ok(true) => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => break,
        }
    }
    info!(adapter = %adapter.name(), "discovery stopped");
    drop(session);
}

/// The next finished TempID read, if a reader has one in flight.
async fn next_read(gatt: &mut Option<GattReader>) -> Option<super::gatt::Done> {
    match gatt {
        Some(reader) => reader.next_done().await,
        None => None,
    }
}

/// Offers a BlueTrace phone's advert to the TempID reader, if collection is on.
fn offer(
    gatt: &mut Option<GattReader>,
    adapter: &bluer::Adapter,
    address: Address,
    advert: &Advert,
    health: &ScanHealth,
) {
    if let Some(reader) = gatt.as_mut() {
        reader.offer(adapter, address, advert.rssi, &health.gatt);
    }
}

/// Pumps one armed scan's events into adverts (and TempID reads) until it ends.
async fn pump(
    armed: &mut Armed,
    opts: &BluezOptions,
    tx: &mpsc::Sender<Advert>,
    cancel: &CancellationToken,
    owners: &mut zbus::fdo::NameOwnerChangedStream,
    health: &ScanHealth,
    gatt: &mut Option<GattReader>,
) -> Ended {
    let mut devices: HashMap<Address, DeviceState> = HashMap::new();
    let mut changes: SelectAll<BoxStream<'static, (Address, DeviceEvent)>> = SelectAll::new();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Ended::Cancelled,
            () = tx.closed() => return Ended::ReceiverClosed,
            change = owners.next() => {
                // Any owner change of org.bluez means the bluetoothd we armed is gone (a
                // restart shows as old owner → "" → new owner, or one direct swap). The
                // stream ends only with the bus connection.
                return if change.is_some() { Ended::BluezLost } else { Ended::BusLost };
            }
            // Before the device changes: under a busy radio they are always ready, and a
            // finished read must still free its connection slot (reads are rare: at most
            // bluetrace.max_reads_per_minute).
            Some(done) = next_read(gatt), if gatt.as_ref().is_some_and(GattReader::busy) => {
                if let Some((read, time_ms)) = GattReader::account(done.outcome, &health.gatt) {
                    // The device's latest RSSI (its adverts go on during the read), else the
                    // one it had when the attempt started.
                    let rssi = devices
                        .get(&done.address)
                        .and_then(|s| s.rssi)
                        .map_or(done.rssi, to_i8);
                    let read = Advert {
                        time_ms,
                        address: DeviceAddress(done.address.0),
                        rssi,
                        tempid_read: Some(read),
                        ..Advert::default()
                    };
                    if tx.send(read).await.is_err() {
                        return Ended::ReceiverClosed;
                    }
                }
            }
            event = armed.discovery.next() => match event {
                None => {
                    let name = armed.adapter.name().to_owned();
                    let present = armed.session.adapter_names().await.unwrap_or_default();
                    return if present.contains(&name) {
                        Ended::DiscoveryStopped
                    } else {
                        Ended::AdapterRemoved
                    };
                }
                Some(AdapterEvent::DeviceAdded(address)) => {
                    if devices.contains_key(&address) {
                        continue;
                    }
                    if devices.len() >= opts.max_devices {
                        bump(&health.devices_ignored);
                        continue;
                    }
                    match track(&armed.adapter, address).await {
                        Ok((state, events)) => {
                            changes.push(events);
                            let send = phone_advert(&state, address, now_ms(), &opts.bluetrace_uuids, health);
                            devices.insert(address, state);
                            health.devices.store(devices.len() as u64, Ordering::Relaxed);
                            if let Some((advert, bluetrace)) = send {
                                if bluetrace {
                                    offer(gatt, &armed.adapter, address, &advert, health);
                                }
                                if !deliver(tx, advert, health).await {
                                    return Ended::ReceiverClosed;
                                }
                            }
                        }
                        Err(e) => {
                            bump(&health.device_errors);
                            // The message can name the device's object path, which holds its address.
                            debug!(kind = %e.kind, "cannot read a new device's properties");
                        }
                    }
                }
                Some(AdapterEvent::DeviceRemoved(address)) => {
                    if devices.remove(&address).is_some() {
                        bump(&health.devices_removed);
                        health.devices.store(devices.len() as u64, Ordering::Relaxed);
                    }
                }
                Some(AdapterEvent::PropertyChanged(AdapterProperty::Powered(false))) => {
                    debug!(adapter = %armed.adapter.name(), "adapter powered off");
                }
                Some(_) => {}
            },
            Some((address, event)) = changes.next(), if !changes.is_empty() => {
                // One PropertiesChanged signal arrives as several events (RSSI, ServiceData...):
                // take all that are ready, then make one advert per device touched.
                let mut touched: Vec<Address> = Vec::new();
                let mut pending = Some((address, event));
                while let Some((address, DeviceEvent::PropertyChanged(property))) = pending.take() {
                    if let Some(state) = devices.get_mut(&address)
                        && state.apply(property)
                        && !touched.contains(&address)
                    {
                        touched.push(address);
                    }
                    pending = changes.next().now_or_never().flatten();
                }
                let time_ms = now_ms();
                for address in touched {
                    let Some(state) = devices.get(&address) else { continue };
                    if let Some((advert, bluetrace)) = phone_advert(state, address, time_ms, &opts.bluetrace_uuids, health) {
                        if bluetrace {
                            offer(gatt, &armed.adapter, address, &advert, health);
                        }
                        if !deliver(tx, advert, health).await {
                            return Ended::ReceiverClosed;
                        }
                    }
                }
            }
        }
    }
}

async fn deliver(tx: &mpsc::Sender<Advert>, advert: Advert, health: &ScanHealth) -> bool {
    bump(&health.adverts);
    tx.send(advert).await.is_ok()
}

/// Subscribes to a new device's changes, then reads its current properties (in that order,
/// so no change is missed between the two).
async fn track(
    adapter: &bluer::Adapter,
    address: Address,
) -> bluer::Result<(DeviceState, BoxStream<'static, (Address, DeviceEvent)>)> {
    let device = adapter.device(address)?;
    let events = device.events().await?.map(move |e| (address, e)).boxed();
    let mut state = DeviceState::default();
    // Each read may fail on its own (a property BlueZ does not have for this device, a
    // value of an unexpected type): keep what can be read.
    if let Ok(Some(rssi)) = device.rssi().await {
        state.rssi = Some(rssi);
    }
    if let Ok(Some(p)) = device.tx_power().await {
        state.tx_power = Some(p);
    }
    if let Ok(Some(uuids)) = device.uuids().await {
        state.apply(DeviceProperty::Uuids(uuids));
    }
    if let Ok(Some(data)) = device.service_data().await {
        state.apply(DeviceProperty::ServiceData(data));
    }
    if let Ok(Some(data)) = device.manufacturer_data().await {
        state.apply(DeviceProperty::ManufacturerData(data));
    }
    Ok((state, events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn bt() -> ServiceUuid {
        ServiceUuid(0xB82AB3FC_1595_4F6A_80F0_FE094CC218F9)
    }

    #[test]
    fn only_gaen_and_bluetrace_devices_make_adverts() {
        let health = ScanHealth::default();
        let address = Address([1, 2, 3, 4, 5, 6]);
        let mut s = DeviceState::default();
        s.apply(DeviceProperty::Rssi(-60));
        s.apply(DeviceProperty::ServiceData(HashMap::from([(
            bluer::Uuid::from_u128(0x0000_180f_0000_1000_8000_0080_5f9b_34fb),
            vec![1],
        )])));
        assert_eq!(
            phone_advert(&s, address, 1, &[bt()], &health),
            None,
            "battery service"
        );
        assert_eq!(health.unrelated.load(Ordering::Relaxed), 1);
        s.apply(DeviceProperty::ServiceData(HashMap::from([(
            bluer::Uuid::from_u128(ServiceUuid::from_u16(0xFD6F).0),
            vec![0; 21],
        )])));
        assert!(
            phone_advert(&s, address, 1, &[], &health).is_some(),
            "malformed GAEN data still goes to the aggregator, which counts it"
        );
        let mut b = DeviceState::default();
        b.apply(DeviceProperty::Rssi(-70));
        b.apply(DeviceProperty::Uuids(
            [bluer::Uuid::from_u128(bt().0)].into_iter().collect(),
        ));
        assert!(phone_advert(&b, address, 1, &[bt()], &health).is_some());
        assert!(phone_advert(&b, address, 1, &[], &health).is_none());
    }

    #[test]
    fn advert_needs_rssi_and_carries_the_latest_properties() {
        let mut s = DeviceState::default();
        assert!(s.apply(DeviceProperty::ServiceData(HashMap::from([(
            bluer::Uuid::from_u128(ServiceUuid::from_u16(0xFD6F).0),
            vec![7; 20],
        )]))));
        let address = Address([1, 2, 3, 4, 5, 6]);
        assert_eq!(s.advert(address, 5), None, "no RSSI yet: not an advert");
        assert!(s.apply(DeviceProperty::Rssi(-200)));
        assert!(!s.apply(DeviceProperty::TxPower(-12)));
        let a = s.advert(address, 5).expect("advert");
        assert_eq!(a.rssi, -128, "clamped to i8");
        assert_eq!(a.tx_power, Some(-12));
        assert_eq!(a.time_ms, 5);
        assert_eq!(a.address, DeviceAddress([1, 2, 3, 4, 5, 6]));
        assert_eq!(
            a.service_data_for(ServiceUuid::from_u16(0xFD6F)),
            Some(&[7u8; 20][..])
        );
        assert!(!format!("{a:?}").contains("01:02"), "address redacted");
    }
}
