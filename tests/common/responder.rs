//! A test stand-in for the authority's ingest: subscribes to every gateway's batch topic on a
//! private broker, opens each envelope with the authority key and the sending gateway's
//! registered key, records it (deduplicated by batch id, as the authority stores batches), and
//! publishes the receipt the gateway expects.

#![allow(dead_code)]

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use venuetrace::batch::Batch;
use venuetrace::seal::{self, KeyPair, PublicKey};

/// What the responder has seen.
#[derive(Default, Debug)]
pub struct Received {
    /// Distinct batches by id, as opened.
    pub batches: BTreeMap<String, Batch>,
    /// Envelopes received, duplicates included.
    pub envelopes: u64,
    /// Envelopes that did not open (forged, unknown gateway, corrupt).
    pub rejected: u64,
}

/// A running responder.
pub struct Responder {
    /// Shared view of what arrived.
    pub received: Arc<Mutex<Received>>,
    /// Set to false to stop sending receipts (batches still recorded).
    pub send_receipts: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Responder {
    /// Starts on `port` with the authority key and the registered gateways' public keys.
    pub async fn start(
        port: u16,
        authority: KeyPair,
        gateways: HashMap<String, PublicKey>,
    ) -> Self {
        let mut options = MqttOptions::new(format!("responder-{port}"), "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false)
            .set_max_packet_size(32 << 20, 32 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let received = Arc::new(Mutex::new(Received::default()));
        let send_receipts = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (rx, send) = (Arc::clone(&received), Arc::clone(&send_receipts));
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .subscribe("venuetrace/v1/gw/+/batch", QoS::AtLeastOnce)
                            .await
                            .expect("subscribe");
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let outcome = seal::read_header(&p.payload).ok().and_then(|(h, _)| {
                            let key = gateways.get(h.batch_id.gateway.as_str())?;
                            seal::open(&p.payload, &authority, key).ok()
                        });
                        let mut r = rx.lock().expect("lock");
                        r.envelopes += 1;
                        match outcome {
                            Some(opened) => {
                                let id = opened.batch.id.to_string();
                                let topic =
                                    format!("venuetrace/v1/gw/{}/receipt", opened.batch.id.gateway);
                                r.batches.entry(id.clone()).or_insert(opened.batch);
                                drop(r);
                                if send.load(std::sync::atomic::Ordering::SeqCst) {
                                    let body = serde_json::json!({"batch_id": id, "tag": hex::encode(opened.receipt_tag)});
                                    let _ = client.try_publish(
                                        topic,
                                        QoS::AtLeastOnce,
                                        false,
                                        body.to_string(),
                                    );
                                }
                            }
                            None => r.rejected += 1,
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Self {
            received,
            send_receipts,
            task,
        }
    }
}
