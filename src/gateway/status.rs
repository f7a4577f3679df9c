//! The gateway's live status: one [`Status`] value the daemon refreshes every second, served
//! read-only on the system bus as `org.venuetrace.Gateway1` (object `/org/venuetrace/Gateway1`,
//! `PropertiesChanged` on every change), summarised in systemd's `STATUS=` line, and read back
//! by `venuetrace-gateway status`.
//!
//! Nothing here identifies a phone: counts, rates, times and states only.

use crate::output::iso_utc;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// The well-known name the daemon owns on the system bus.
pub const BUS_NAME: &str = "org.venuetrace.Gateway1";
/// The status object.
pub const OBJECT_PATH: &str = "/org/venuetrace/Gateway1";

/// What the daemon is doing now.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Status {
    /// This gateway's enrolled id.
    pub gateway_id: String,
    /// Its venue.
    pub venue: String,
    /// The advert source: `bluez`, `replay`, `sim` or `channel`.
    pub source: String,
    /// The Bluetooth adapter in use (empty for other sources).
    pub adapter: String,
    /// Whether the source is producing adverts now (BlueZ discovery running).
    pub scanning: bool,
    /// Adverts taken from the source over the last second.
    pub adverts_per_second: f64,
    /// Start of the open aggregation window, Unix seconds (0 = none open).
    pub window_start_unix_s: u64,
    /// Its end, Unix seconds (0 = none open).
    pub window_end_unix_s: u64,
    /// Distinct RPIs in the open window.
    pub sightings_in_window: u64,
    /// Sealed batches waiting for the authority's receipt.
    pub outbox_depth: u64,
    /// Age of the oldest of them, seconds (0 = none).
    pub oldest_unreceipted_age_s: u64,
    /// Whether the MQTT broker connection is up.
    pub broker_connected: bool,
    /// When the last receipt came, Unix seconds (0 = none since start).
    pub last_receipt_unix_s: u64,
    /// Counters since start, by name.
    pub counters: BTreeMap<String, u64>,
}

impl Status {
    /// The one-line summary for systemd's `STATUS=`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if self.source == "bluez" {
            let _ = write!(
                s,
                "{} {}",
                if self.scanning {
                    "scanning"
                } else {
                    "NOT scanning"
                },
                if self.adapter.is_empty() {
                    "(no adapter)"
                } else {
                    &self.adapter
                }
            );
        } else {
            let _ = write!(s, "source {}", self.source);
        }
        let _ = write!(s, ", {:.1} adverts/s", self.adverts_per_second);
        if self.window_start_unix_s > 0 {
            let _ = write!(
                s,
                ", window {}–{} UTC with {} RPIs",
                hhmm(self.window_start_unix_s),
                hhmm(self.window_end_unix_s),
                self.sightings_in_window
            );
        }
        let _ = write!(s, ", outbox {}", self.outbox_depth);
        if self.outbox_depth > 0 {
            let _ = write!(s, " (oldest {} s)", self.oldest_unreceipted_age_s);
        }
        let _ = write!(
            s,
            ", broker {}",
            if self.broker_connected {
                "connected"
            } else {
                "disconnected"
            }
        );
        s
    }

    /// Name/value rows for the `status` table.
    pub fn rows(&self) -> Vec<(String, String)> {
        let time = |t: u64| {
            if t == 0 { "-".to_owned() } else { iso_utc(t) }
        };
        let mut rows = vec![
            ("gateway".to_owned(), self.gateway_id.clone()),
            ("venue".to_owned(), self.venue.clone()),
            ("source".to_owned(), self.source.clone()),
            ("adapter".to_owned(), or_dash(&self.adapter)),
            ("scanning".to_owned(), yes_no(self.scanning)),
            (
                "adverts per second".to_owned(),
                format!("{:.1}", self.adverts_per_second),
            ),
            (
                "current window".to_owned(),
                if self.window_start_unix_s == 0 {
                    "-".to_owned()
                } else {
                    format!(
                        "{} – {}",
                        time(self.window_start_unix_s),
                        time(self.window_end_unix_s)
                    )
                },
            ),
            (
                "sightings in window".to_owned(),
                self.sightings_in_window.to_string(),
            ),
            ("outbox depth".to_owned(), self.outbox_depth.to_string()),
            (
                "oldest unreceipted".to_owned(),
                if self.outbox_depth == 0 {
                    "-".to_owned()
                } else {
                    format!("{} s", self.oldest_unreceipted_age_s)
                },
            ),
            ("broker connected".to_owned(), yes_no(self.broker_connected)),
            ("last receipt".to_owned(), time(self.last_receipt_unix_s)),
        ];
        rows.extend(
            self.counters
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string())),
        );
        rows
    }
}

fn hhmm(unix_s: u64) -> String {
    let day = unix_s % 86_400;
    format!("{:02}:{:02}", day / 3600, day % 3600 / 60)
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-" } else { s }.to_owned()
}

/// The D-Bus object: read-only properties mirroring [`Status`].
struct Gateway1 {
    status: Status,
}

#[zbus::interface(name = "org.venuetrace.Gateway1")]
impl Gateway1 {
    #[zbus(property)]
    fn gateway_id(&self) -> String {
        self.status.gateway_id.clone()
    }
    #[zbus(property)]
    fn venue(&self) -> String {
        self.status.venue.clone()
    }
    #[zbus(property)]
    fn source(&self) -> String {
        self.status.source.clone()
    }
    #[zbus(property)]
    fn adapter(&self) -> String {
        self.status.adapter.clone()
    }
    #[zbus(property)]
    fn scanning(&self) -> bool {
        self.status.scanning
    }
    #[zbus(property)]
    fn adverts_per_second(&self) -> f64 {
        self.status.adverts_per_second
    }
    #[zbus(property)]
    fn window_start(&self) -> u64 {
        self.status.window_start_unix_s
    }
    #[zbus(property)]
    fn window_end(&self) -> u64 {
        self.status.window_end_unix_s
    }
    #[zbus(property)]
    fn sightings_in_window(&self) -> u64 {
        self.status.sightings_in_window
    }
    #[zbus(property)]
    fn outbox_depth(&self) -> u64 {
        self.status.outbox_depth
    }
    #[zbus(property)]
    fn oldest_unreceipted_age(&self) -> u64 {
        self.status.oldest_unreceipted_age_s
    }
    #[zbus(property)]
    fn broker_connected(&self) -> bool {
        self.status.broker_connected
    }
    #[zbus(property)]
    fn last_receipt(&self) -> u64 {
        self.status.last_receipt_unix_s
    }
    #[zbus(property)]
    fn counters(&self) -> HashMap<String, u64> {
        self.status
            .counters
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// The status served on the system bus.
pub struct StatusService {
    connection: zbus::Connection,
}

impl StatusService {
    /// Connects to the system bus, serves the object and takes the well-known name.
    pub async fn start(initial: Status) -> zbus::Result<Self> {
        let connection = zbus::connection::Builder::system()
            .serve_at(OBJECT_PATH, Gateway1 { status: initial })
            .name(BUS_NAME)
            .build()
            .await?;
        Ok(Self { connection })
    }

    /// Publishes a new status: every property that changed gets its `PropertiesChanged`.
    pub async fn update(&self, new: &Status) -> zbus::Result<()> {
        let iface = self
            .connection
            .object_server()
            .interface::<_, Gateway1>(OBJECT_PATH)
            .await?;
        let mut g = iface.get_mut().await;
        let old = std::mem::replace(&mut g.status, new.clone());
        let e = iface.signal_emitter();
        macro_rules! changed {
            ($($field:ident => $signal:ident),* $(,)?) => {
                $( if old.$field != new.$field { g.$signal(e).await?; } )*
            };
        }
        changed!(
            gateway_id => gateway_id_changed,
            venue => venue_changed,
            source => source_changed,
            adapter => adapter_changed,
            scanning => scanning_changed,
            adverts_per_second => adverts_per_second_changed,
            window_start_unix_s => window_start_changed,
            window_end_unix_s => window_end_changed,
            sightings_in_window => sightings_in_window_changed,
            outbox_depth => outbox_depth_changed,
            oldest_unreceipted_age_s => oldest_unreceipted_age_changed,
            broker_connected => broker_connected_changed,
            last_receipt_unix_s => last_receipt_changed,
            counters => counters_changed,
        );
        Ok(())
    }
}

/// Client side of the status object, for `venuetrace-gateway status`.
#[zbus::proxy(
    interface = "org.venuetrace.Gateway1",
    default_service = "org.venuetrace.Gateway1",
    default_path = "/org/venuetrace/Gateway1"
)]
trait Gateway1Client {
    #[zbus(property)]
    fn gateway_id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn venue(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn source(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn adapter(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn scanning(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn adverts_per_second(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn window_start(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn window_end(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn sightings_in_window(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn outbox_depth(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn oldest_unreceipted_age(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn broker_connected(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn last_receipt(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn counters(&self) -> zbus::Result<HashMap<String, u64>>;
}

/// Why `status` could not read the daemon.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No system bus.
    #[error("cannot connect to the D-Bus system bus")]
    Bus(#[source] zbus::Error),
    /// The daemon is not on the bus.
    #[error(
        "the gateway daemon is not running: {BUS_NAME} is not on the system bus \
         (systemctl status venuetrace-gateway)"
    )]
    NotRunning,
    /// It answered with something unexpected.
    #[error("cannot read {BUS_NAME}'s properties")]
    Read(#[source] zbus::Error),
}

/// Reads the running daemon's status over the system bus.
pub async fn read() -> Result<Status, StatusError> {
    let connection = zbus::Connection::system().await.map_err(StatusError::Bus)?;
    let dbus = zbus::fdo::DBusProxy::new(&connection)
        .await
        .map_err(StatusError::Bus)?;
    let name = zbus::names::BusName::try_from(BUS_NAME).map_err(StatusError::Read)?;
    if !dbus
        .name_has_owner(name)
        .await
        .map_err(|e| StatusError::Read(e.into()))?
    {
        return Err(StatusError::NotRunning);
    }
    let p = Gateway1ClientProxy::new(&connection)
        .await
        .map_err(StatusError::Read)?;
    let r = StatusError::Read;
    Ok(Status {
        gateway_id: p.gateway_id().await.map_err(r)?,
        venue: p.venue().await.map_err(r)?,
        source: p.source().await.map_err(r)?,
        adapter: p.adapter().await.map_err(r)?,
        scanning: p.scanning().await.map_err(r)?,
        adverts_per_second: p.adverts_per_second().await.map_err(r)?,
        window_start_unix_s: p.window_start().await.map_err(r)?,
        window_end_unix_s: p.window_end().await.map_err(r)?,
        sightings_in_window: p.sightings_in_window().await.map_err(r)?,
        outbox_depth: p.outbox_depth().await.map_err(r)?,
        oldest_unreceipted_age_s: p.oldest_unreceipted_age().await.map_err(r)?,
        broker_connected: p.broker_connected().await.map_err(r)?,
        last_receipt_unix_s: p.last_receipt().await.map_err(r)?,
        counters: p.counters().await.map_err(r)?.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_like_a_status_line() {
        let mut s = Status {
            source: "bluez".into(),
            adapter: "hci0".into(),
            scanning: true,
            adverts_per_second: 12.34,
            window_start_unix_s: 1_748_844_000,
            window_end_unix_s: 1_748_844_600,
            sightings_in_window: 7,
            outbox_depth: 2,
            oldest_unreceipted_age_s: 30,
            broker_connected: true,
            ..Status::default()
        };
        assert_eq!(
            s.summary(),
            "scanning hci0, 12.3 adverts/s, window 06:00–06:10 UTC with 7 RPIs, outbox 2 (oldest 30 s), broker connected"
        );
        s.scanning = false;
        s.window_start_unix_s = 0;
        s.outbox_depth = 0;
        s.broker_connected = false;
        assert_eq!(
            s.summary(),
            "NOT scanning hci0, 12.3 adverts/s, outbox 0, broker disconnected"
        );
        s.source = "sim".into();
        assert!(s.summary().starts_with("source sim, "));
        assert!(
            s.rows()
                .iter()
                .any(|(k, v)| k == "last receipt" && v == "-")
        );
    }
}
