//! Batch ingest (`venuetrace-authority run`): takes sealed batches from the broker, opens and
//! validates them, stores each once, and only then sends the receipt and acknowledges the
//! MQTT message (DESIGN.md §5).
//!
//! [`process`] is the decision for one message (blocking: it writes to the store); [`run`]
//! is the MQTT loop around it. The loop subscribes through a shared subscription
//! (`$share/GROUP/venuetrace/v1/gw/+/batch`), so several authority processes can split the
//! load, with manual acknowledgements: a message is acknowledged after its batch is committed
//! (or quarantined) and its receipt handed to the client. If the process dies in between, the
//! broker redelivers it, and storing it again is a no-op that sends the receipt again.
//!
//! A message that cannot be opened or validated is quarantined with its reason (hash and size
//! only) and acknowledged without a receipt: never retried forever, never a crash.

use super::store::{DynStore, Store, StoreError, Stored};
use crate::gateway::publisher::{MqttSettings, ReceiptMessage};
use crate::seal::{self, KeyPair, PublicKey};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Validation limits.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// How far in the future a window may start (gateway clock skew).
    pub max_future: Duration,
    /// How old a window may be (older ones would be purged at once).
    pub retention: Duration,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_future: Duration::from_secs(15 * 60),
            retention: Duration::from_secs(21 * 86_400),
        }
    }
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (or already stored): send this receipt.
    Receipt {
        /// The batch.
        batch_id: String,
        /// Whether it was new (false: a resend, stored before).
        new: bool,
        /// Sightings stored (0 for a resend).
        sightings: usize,
        /// Where the receipt goes.
        topic: String,
        /// The receipt JSON.
        payload: String,
    },
    /// Refused and quarantined.
    Quarantined {
        /// The batch id from the header, if it could be read.
        batch_id: Option<String>,
        /// Why.
        reason: String,
    },
}

/// The gateway id in a batch topic `venuetrace/v1/gw/{id}/batch`.
pub fn topic_gateway(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("venuetrace/v1/gw/")?
        .strip_suffix("/batch")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// Decides about one message and records the decision in the store. Errors are only store
/// failures (the message is then not acknowledged, and the broker redelivers it later).
pub fn process(
    store: &mut dyn Store,
    authority: &KeyPair,
    topic: &str,
    payload: &[u8],
    now_ms: i64,
    limits: &IngestLimits,
) -> Result<Outcome, StoreError> {
    let quarantine = |store: &mut dyn Store, batch_id: Option<String>, reason: String| {
        store.quarantine(topic, batch_id.as_deref(), &reason, payload, now_ms)?;
        Ok(Outcome::Quarantined { batch_id, reason })
    };
    let header = match seal::read_header(payload) {
        Ok((header, _)) => header,
        Err(e) => return quarantine(store, None, crate::exit::describe(&e)),
    };
    let batch_id = header.batch_id.to_string();
    if topic_gateway(topic) != Some(header.batch_id.gateway.as_str()) {
        let reason = format!(
            "published on {topic} but sealed as gateway {}",
            header.batch_id.gateway
        );
        return quarantine(store, Some(batch_id), reason);
    }
    let gateway = match store.gateway(header.batch_id.gateway.as_str())? {
        None => {
            let reason = format!("unknown gateway {}", header.batch_id.gateway);
            return quarantine(store, Some(batch_id), reason);
        }
        Some(g) if g.revoked_ms.is_some() => {
            let reason = format!("gateway {} is revoked", header.batch_id.gateway);
            return quarantine(store, Some(batch_id), reason);
        }
        Some(g) => g,
    };
    let opened = match seal::open(
        payload,
        authority,
        &PublicKey::from_bytes(gateway.public_key),
    ) {
        Ok(opened) => opened,
        Err(e) => return quarantine(store, Some(batch_id), crate::exit::describe(&e)),
    };
    let start_s = opened.batch.window_start_unix_s();
    let now_s = now_ms.div_euclid(1000);
    if start_s > now_s + limits.max_future.as_secs() as i64 {
        let reason = format!("window starts {} s in the future", start_s - now_s);
        return quarantine(store, Some(batch_id), reason);
    }
    let end_s = start_s + i64::from(opened.batch.window_minutes) * 60;
    if end_s < now_s - limits.retention.as_secs() as i64 {
        let reason = format!(
            "window ended {} days ago, past retention",
            (now_s - end_s) / 86_400
        );
        return quarantine(store, Some(batch_id), reason);
    }
    let stored = store.store_batch(&opened.batch, &gateway, now_ms)?;
    let receipt = ReceiptMessage {
        batch_id: batch_id.clone(),
        tag: hex::encode(opened.receipt_tag),
    };
    Ok(Outcome::Receipt {
        batch_id,
        new: matches!(stored, Stored::New(_)),
        sightings: match stored {
            Stored::New(n) => n,
            Stored::Duplicate => 0,
        },
        topic: format!("venuetrace/v1/gw/{}/receipt", gateway.id),
        payload: serde_json::to_string(&receipt).unwrap_or_default(),
    })
}

/// Counts of one ingest run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Batches stored for the first time.
    pub stored: u64,
    /// Resends of stored batches (receipted again).
    pub duplicates: u64,
    /// Messages quarantined.
    pub quarantined: u64,
    /// Store failures retried (each pauses ingest a moment).
    pub store_failures: u64,
    /// Batches the store refused while answering otherwise: acknowledged without a receipt,
    /// so their gateways resend them.
    pub store_refused: u64,
}

/// How one message's processing ended.
enum Step {
    /// Stored, duplicate or quarantined: receipt and/or acknowledge.
    Done(Outcome),
    /// The store refused it twice while answering otherwise.
    Refused(StoreError),
    /// Shutdown while the store was failing.
    Stop,
}

/// Ingest failed for good.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task failed (a bug).
    #[error("internal task failed: {0}")]
    Internal(String),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs ingest until `shutdown`, then finishes the message in hand and disconnects.
pub async fn run(
    mqtt: &MqttSettings,
    share_group: &str,
    authority: KeyPair,
    store: Arc<Mutex<DynStore>>,
    limits: IngestLimits,
    shutdown: CancellationToken,
) -> Result<IngestReport, IngestError> {
    let mut options = MqttOptions::new(&mqtt.client_id, &mqtt.host, mqtt.port);
    options
        .set_keep_alive(mqtt.keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(mqtt.max_packet_bytes, mqtt.max_packet_bytes);
    if let Some((user, password)) = &mqtt.credentials {
        options.set_credentials(user, password);
    }
    if let Some(tls) = &mqtt.tls {
        let _ = rustls::crypto::ring::default_provider().install_default();
        options.set_transport(match &tls.ca_pem {
            Some(ca) => Transport::tls(ca.clone(), tls.client_auth.clone(), None),
            None => Transport::tls_with_default_config(),
        });
    }
    let (client, eventloop) = AsyncClient::new(options, 256);
    let filter = format!("$share/{share_group}/venuetrace/v1/gw/+/batch");
    // The event loop runs in its own task and hands publishes over an unbounded channel, so it
    // never stops polling: rumqttc services our requests (receipts, acks) only between the
    // packets it reads, and a poller blocked on a full channel while we wait for request-queue
    // space deadlocks (measured: a 2,000-batch burst stalled after ~130 batches). What can pile
    // up is bounded by the broker's inflight window for this client (Mosquitto's
    // max_inflight_messages, default 20): keep it bounded in production brokers.
    let (incoming, mut publishes) = tokio::sync::mpsc::unbounded_channel();
    let poller_stop = CancellationToken::new();
    let poller = tokio::spawn(poll_events(
        eventloop,
        client.clone(),
        filter,
        format!("{}:{}", mqtt.host, mqtt.port),
        incoming,
        poller_stop.clone(),
    ));
    let mut report = IngestReport::default();
    let authority = Arc::new(authority);
    loop {
        // A batch in hand is finished (stored, receipted, acknowledged) before shutdown is
        // looked at again.
        let publish = tokio::select! {
            () = shutdown.cancelled() => break,
            publish = publishes.recv() => match publish {
                Some(publish) => publish,
                None => break,
            },
        };
        // A store failure (the database restarting, a full disk) pauses ingest on this batch:
        // it is retried, backing off to 5 s, until it is stored or quarantined, so nothing is
        // skipped and the broker's window of unacknowledged messages never fills with failures.
        // Shutdown during the pause leaves it unacknowledged: redelivered after a reconnect
        // (and resent by its gateway until receipted). A batch the store refuses twice while
        // answering otherwise (a bug, a constraint) is acknowledged without a receipt instead:
        // ingest goes on, and its gateway keeps it and resends it later.
        let mut retry = Duration::from_millis(250);
        let (mut failures, mut refused) = (0u32, 0u32);
        let step = loop {
            let (store, authority) = (Arc::clone(&store), Arc::clone(&authority));
            let topic = publish.topic.clone();
            let payload = publish.payload.clone();
            let (outcome, answers) = tokio::task::spawn_blocking(move || {
                let mut store = store
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let outcome = process(
                    &mut **store,
                    &authority,
                    &topic,
                    &payload,
                    now_ms(),
                    &limits,
                );
                // Whether the store answers at all (reconnecting if it must).
                let answers = outcome.is_err() && store.batch_count().is_ok();
                (outcome, answers)
            })
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))?;
            let e = match outcome {
                Ok(outcome) => {
                    if failures > 0 {
                        info!(failures, "store answering again; ingest resumed");
                    }
                    break Step::Done(outcome);
                }
                Err(e) => e,
            };
            report.store_failures += 1;
            if answers {
                refused += 1;
                if refused >= 2 {
                    break Step::Refused(e);
                }
                // Once more at once: the failure may have been a connection just replaced.
                continue;
            }
            refused = 0;
            if failures == 0 {
                warn!(error = %crate::exit::describe(&e), "store failed; ingest paused, retrying the batch");
            } else {
                debug!(error = %crate::exit::describe(&e), failures, "store still failing");
            }
            failures += 1;
            tokio::select! {
                () = shutdown.cancelled() => break Step::Stop,
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(Duration::from_secs(5));
        };
        let outcome = match step {
            Step::Done(outcome) => outcome,
            // Shutting down with the store still failing: not acknowledged.
            Step::Stop => break,
            Step::Refused(e) => {
                report.store_refused += 1;
                warn!(topic = %publish.topic, error = %crate::exit::describe(&e), "store refused this batch although it answers: acknowledged without a receipt (its gateway keeps it and resends it)");
                let _ = client.ack(&publish).await;
                continue;
            }
        };
        match outcome {
            Outcome::Receipt {
                batch_id,
                new,
                sightings,
                topic,
                payload,
            } => {
                if new {
                    report.stored += 1;
                    info!(%batch_id, sightings, "stored batch");
                } else {
                    report.duplicates += 1;
                    debug!(%batch_id, "batch already stored; receipting again");
                }
                // Receipt first, then the ack: if we die between them the broker redelivers
                // and the gateway gets a duplicate receipt, never none.
                if client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .is_ok()
                {
                    let _ = client.ack(&publish).await;
                }
            }
            Outcome::Quarantined { batch_id, reason } => {
                report.quarantined += 1;
                warn!(batch_id = batch_id.as_deref().unwrap_or("?"), topic = %publish.topic, %reason, "batch quarantined");
                let _ = client.ack(&publish).await;
            }
        }
    }
    let _ = client.try_disconnect();
    // Let the poller send the disconnect, briefly.
    tokio::time::sleep(Duration::from_millis(100)).await;
    poller_stop.cancel();
    let _ = poller.await;
    Ok(report)
}

/// Polls the MQTT event loop until `stop`: subscribes on every (re)connection, forwards batch
/// publishes, backs off while the broker is unreachable.
async fn poll_events(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    filter: String,
    broker: String,
    publishes: tokio::sync::mpsc::UnboundedSender<rumqttc::Publish>,
    stop: CancellationToken,
) {
    let mut retry = Duration::from_millis(250);
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                retry = Duration::from_millis(250);
                info!(%broker, subscription = %filter, "ingest connected");
                let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if publishes.send(publish).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(%broker, error = %e, "MQTT broker unreachable; retrying");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batch topics name their gateway; anything else does not.
    #[test]
    fn topics() {
        assert_eq!(topic_gateway("venuetrace/v1/gw/gw-1/batch"), Some("gw-1"));
        assert_eq!(topic_gateway("venuetrace/v1/gw//batch"), None);
        assert_eq!(topic_gateway("venuetrace/v1/gw/a/b/batch"), None);
        assert_eq!(topic_gateway("other/gw-1/batch"), None);
    }
}
