//! The MQTT publisher: one task owns the rumqttc event loop, publishes sealed batches and
//! hands the authority's receipts back to the daemon (DESIGN.md §4).
//!
//! It decides nothing about delivery: the outbox decides what is due and removes a batch only
//! on a valid receipt. PUBACK only means the broker has a batch, so a batch is published again
//! (by the outbox's schedule) until its receipt arrives; the authority stores it once.
//!
//! Topics (`{id}` = gateway id):
//! - `venuetrace/v1/gw/{id}/batch`: sealed envelopes, QoS 1, not retained;
//! - `venuetrace/v1/gw/{id}/receipt`: receipts from the authority, JSON
//!   `{"batch_id": "ID:SEQ", "tag": "<64 hex>"}`, subscribed at QoS 1;
//! - `venuetrace/v1/gw/{id}/status`: retained `online` on connect, `offline` as the last will
//!   and on clean shutdown.
//!
//! The session is persistent (clean session off), so receipts published while the gateway is
//! offline wait at the broker.

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, Transport};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Topic names of one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Where batches go.
    pub batch: String,
    /// Where receipts come from.
    pub receipt: String,
    /// Retained online/offline status.
    pub status: String,
}

impl Topics {
    /// The topics of gateway `id`.
    pub fn for_gateway(id: &str) -> Self {
        Self {
            batch: format!("venuetrace/v1/gw/{id}/batch"),
            receipt: format!("venuetrace/v1/gw/{id}/receipt"),
            status: format!("venuetrace/v1/gw/{id}/status"),
        }
    }
}

/// A receipt as sent by the authority.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptMessage {
    /// `GATEWAY:SEQUENCE`.
    pub batch_id: String,
    /// The receipt tag, 64 hex digits.
    pub tag: String,
}

/// TLS settings.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// CA certificates (PEM); `None` = the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and key (PEM), for mutual TLS.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field(
                "client_auth",
                &self.client_auth.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How to reach the broker.
#[derive(Clone)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id (stable, so the persistent session is found again).
    pub client_id: String,
    /// TLS, if used.
    pub tls: Option<TlsSettings>,
    /// Username and password, if used.
    pub credentials: Option<(String, String)>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Largest packet sent or accepted (sized for the largest envelope).
    pub max_packet_bytes: usize,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("tls", &self.tls)
            .field("username", &self.credentials.as_ref().map(|c| &c.0))
            .finish()
    }
}

/// What the daemon asks of the publisher.
#[derive(Debug)]
pub enum PublisherCommand {
    /// Publish one sealed batch.
    Publish {
        /// Its id, for logs and the `Queued` event.
        batch_id: String,
        /// The envelope.
        envelope: Vec<u8>,
    },
}

/// What the publisher tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublisherEvent {
    /// Connected (or reconnected): everything unreceipted should be sent again.
    Connected,
    /// The connection is down (reported once per outage).
    Disconnected {
        /// Why, as rumqttc says it.
        reason: String,
    },
    /// A batch was handed to the MQTT client for sending.
    Queued {
        /// The batch.
        batch_id: String,
    },
    /// A batch could not be handed over (client queue full or closed): try again later.
    NotQueued {
        /// The batch.
        batch_id: String,
    },
    /// A receipt arrived.
    Receipt {
        /// `GATEWAY:SEQUENCE`.
        batch_id: String,
        /// The tag bytes.
        tag: Vec<u8>,
    },
    /// Something arrived on the receipt topic that is not a receipt (counted, dropped).
    BadReceipt {
        /// Why.
        reason: String,
    },
}

/// A file the MQTT settings name cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {what} {path}")]
pub struct SettingsFileError {
    /// What the file is for.
    pub what: &'static str,
    /// The file.
    pub path: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

fn read_settings_file(
    what: &'static str,
    path: &std::path::Path,
) -> Result<Vec<u8>, SettingsFileError> {
    std::fs::read(path).map_err(|source| SettingsFileError {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Reads the TLS files a configuration names (CA, client certificate and key).
pub fn load_tls(
    tls: Option<&crate::config_schema::TlsSettings>,
) -> Result<Option<TlsSettings>, SettingsFileError> {
    let Some(t) = tls else { return Ok(None) };
    Ok(Some(TlsSettings {
        ca_pem: t
            .ca_file
            .as_deref()
            .map(|p| read_settings_file("MQTT CA file", p))
            .transpose()?,
        client_auth: match &t.client_auth {
            None => None,
            Some(c) => Some((
                read_settings_file("MQTT client certificate", &c.cert)?,
                read_settings_file("MQTT client key", &c.key)?,
            )),
        },
    }))
}

/// Username and password of a configuration (the password read from its file if so given).
pub fn load_credentials(
    username: Option<&String>,
    password: Option<&crate::config_schema::MqttPassword>,
) -> Result<Option<(String, String)>, SettingsFileError> {
    let password = match password {
        None => None,
        Some(crate::config_schema::MqttPassword::Inline(secret)) => {
            Some(secret.expose().to_owned())
        }
        Some(crate::config_schema::MqttPassword::File(path)) => {
            let bytes = read_settings_file("MQTT password file", path)?;
            Some(
                String::from_utf8_lossy(&bytes)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            )
        }
    };
    Ok(username.cloned().map(|u| (u, password.unwrap_or_default())))
}

/// Setting up the client failed.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    /// The TLS configuration is unusable.
    #[error("MQTT TLS configuration: {0}")]
    Tls(String),
}

/// Requests the MQTT client may queue: a window's batch plus resends after an outage.
const CLIENT_QUEUE: usize = 64;

fn mqtt_options(settings: &MqttSettings, topics: &Topics) -> Result<MqttOptions, PublisherError> {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    options
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes)
        .set_request_channel_capacity(CLIENT_QUEUE)
        .set_last_will(LastWill::new(
            &topics.status,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((user, password)) = &settings.credentials {
        options.set_credentials(user, password);
    }
    if let Some(tls) = &settings.tls {
        // rustls needs a process-wide crypto provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let transport = match &tls.ca_pem {
            Some(ca) => Transport::tls(ca.clone(), tls.client_auth.clone(), None),
            None if tls.client_auth.is_none() => Transport::tls_with_default_config(),
            None => {
                return Err(PublisherError::Tls(
                    "a client certificate needs a CA file (mqtt.ca_file)".into(),
                ));
            }
        };
        options.set_transport(transport);
    }
    Ok(options)
}

/// The running publisher: commands in, events out, and its task.
pub type Publisher = (
    mpsc::Sender<PublisherCommand>,
    mpsc::UnboundedReceiver<PublisherEvent>,
    tokio::task::JoinHandle<()>,
);

/// Starts the publisher task. It runs until `cancel`, then publishes `offline` and
/// disconnects (with a short deadline).
pub fn spawn(
    settings: &MqttSettings,
    gateway_id: &str,
    cancel: CancellationToken,
) -> Result<Publisher, PublisherError> {
    let topics = Topics::for_gateway(gateway_id);
    let options = mqtt_options(settings, &topics)?;
    let (client, eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
    // Commands: a window's batch at a time plus resend bursts; the daemon awaits capacity.
    let (cmd_tx, cmd_rx) = mpsc::channel(CLIENT_QUEUE);
    // Events: unbounded, so this task never blocks on the daemon while the daemon waits for
    // room in the command channel (a cycle that would deadlock when a long outage ends with
    // thousands of receipts). Each event is a few dozen bytes.
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let endpoint = format!("{}:{}", settings.host, settings.port);
    let handle = tokio::spawn(run(
        client, eventloop, topics, endpoint, cmd_rx, event_tx, cancel,
    ));
    Ok((cmd_tx, event_rx, handle))
}

async fn run(
    client: AsyncClient,
    mut eventloop: EventLoop,
    topics: Topics,
    endpoint: String,
    mut commands: mpsc::Receiver<PublisherCommand>,
    events: mpsc::UnboundedSender<PublisherEvent>,
    cancel: CancellationToken,
) {
    // Commands are handed to the client by their own task, so the event loop below is only
    // ever interrupted by shutdown: a `poll` dropped half-way through reading a packet would
    // lose it (rumqttc does not document `poll` as cancel-safe).
    let command_task = {
        let (client, events, topic) = (client.clone(), events.clone(), topics.batch.clone());
        tokio::spawn(async move {
            while let Some(PublisherCommand::Publish { batch_id, envelope }) = commands.recv().await
            {
                let event = match client.try_publish(&topic, QoS::AtLeastOnce, false, envelope) {
                    Ok(()) => PublisherEvent::Queued { batch_id },
                    Err(e) => {
                        debug!(%batch_id, error = %e, "batch not queued");
                        PublisherEvent::NotQueued { batch_id }
                    }
                };
                let _ = events.send(event);
            }
        })
    };
    let mut connected = false;
    let mut retry = Duration::from_millis(250);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            polled = eventloop.poll() => match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    connected = true;
                    retry = Duration::from_millis(250);
                    info!(broker = %endpoint, session_present = ack.session_present, "connected to MQTT broker");
                    // Subscribing again on a present session is harmless and covers a broker
                    // that lost its state.
                    let _ = client.try_subscribe(&topics.receipt, QoS::AtLeastOnce);
                    let _ = client.try_publish(&topics.status, QoS::AtLeastOnce, true, "online");
                    let _ = events.send(PublisherEvent::Connected);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == topics.receipt => {
                    let _ = events.send(parse_receipt(&publish.payload));
                }
                Ok(_) => {}
                Err(e) => {
                    if connected || retry == Duration::from_millis(250) {
                        warn!(broker = %endpoint, error = %e, "MQTT broker unreachable; batches wait in the outbox");
                        let _ = events.send(PublisherEvent::Disconnected { reason: e.to_string() });
                    }
                    connected = false;
                    // Polling again reconnects; back off so a dead broker costs nothing.
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(30));
                }
            },
        }
    }
    command_task.abort();
    if connected {
        let _ = client.try_publish(&topics.status, QoS::AtLeastOnce, true, "offline");
        let _ = client.try_disconnect();
        // Let the event loop send the status and the disconnect, briefly.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(event) = eventloop.poll().await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    debug!("publisher stopped");
}

/// Parses a receipt payload.
pub fn parse_receipt(payload: &[u8]) -> PublisherEvent {
    let message: ReceiptMessage = match serde_json::from_slice(payload) {
        Ok(m) => m,
        Err(e) => {
            return PublisherEvent::BadReceipt {
                reason: format!("not a receipt: {e}"),
            };
        }
    };
    match hex::decode(&message.tag) {
        Ok(tag) if tag.len() == 32 => PublisherEvent::Receipt {
            batch_id: message.batch_id,
            tag,
        },
        _ => PublisherEvent::BadReceipt {
            reason: format!(
                "receipt for {:?} has a tag that is not 64 hex digits",
                message.batch_id
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Receipts parse; anything else on the topic is a counted bad receipt, not a crash.
    #[test]
    fn receipts() {
        let tag = "ab".repeat(32);
        let ok = format!(r#"{{"batch_id":"gw-1:3","tag":"{tag}"}}"#);
        assert_eq!(
            parse_receipt(ok.as_bytes()),
            PublisherEvent::Receipt {
                batch_id: "gw-1:3".into(),
                tag: vec![0xab; 32]
            }
        );
        for bad in [
            &b"{}"[..],
            b"\xff",
            br#"{"batch_id":"x","tag":"00"}"#,
            br#"{"batch_id":"x","tag":"00","more":1}"#,
        ] {
            assert!(matches!(
                parse_receipt(bad),
                PublisherEvent::BadReceipt { .. }
            ));
        }
        assert_eq!(
            Topics::for_gateway("gw-1").batch,
            "venuetrace/v1/gw/gw-1/batch"
        );
    }
}
