//! MQTT ingestion: city topics from a broker into the live dataflow.
//!
//! One rumqttc client with a persistent session (`clean_session = false`) subscribes to the
//! input families `{prefix}traffic/#`, `{prefix}emergency/#`, `{prefix}grid/#` and
//! `{prefix}health/#` at QoS 1 (not `{prefix}#`: the alert outlet publishes under
//! `{prefix}alerts/`, which is output, not input), and subscribes again on *every* ConnAck (a broker that restarted has
//! forgotten the subscription; rumqtt issue #250). The event loop is polled continuously in its
//! own task; after an error it waits with jittered exponential backoff (100 ms doubling to 5 s)
//! before polling again, which reconnects.
//!
//! Acknowledgement is manual: a QoS 1 message is acknowledged only after the live driver has
//! taken it into its queue, so a crash before that makes the broker redeliver it. When the
//! driver's queue is full the task stops polling, TCP backpressure reaches the broker, and the
//! broker buffers (configure mosquitto with `max_queued_messages 0` so it never drops them).

use crate::live::{LiveSender, Message, Refused};
use anyhow::Result;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// `[mqtt]` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host. Default `127.0.0.1`.
    pub host: String,
    /// Broker port. Default 1883.
    pub port: u16,
    /// Client id; with a persistent session it must be unique per processor. Default `citybrain`.
    pub client_id: String,
    /// User name (optional).
    pub username: Option<String>,
    /// Password (optional; prefer the environment variable `CITYBRAIN_MQTT_PASSWORD`).
    pub password: Option<String>,
    /// Keep-alive interval, s. Default 30.
    pub keep_alive_s: u64,
    /// Largest accepted packet (a batch payload), bytes. Default 16 MiB.
    pub max_packet_bytes: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "citybrain".into(),
            username: None,
            password: None,
            keep_alive_s: 30,
            max_packet_bytes: 16 << 20,
        }
    }
}

/// Counters of the ingestion client.
#[derive(Debug, Default)]
pub struct MqttMetrics {
    /// Publishes received.
    pub messages: AtomicU64,
    /// Bytes of payload received.
    pub bytes: AtomicU64,
    /// Connections established (ConnAcks).
    pub connects: AtomicU64,
    /// Subscriptions requested (one per ConnAck).
    pub subscriptions: AtomicU64,
    /// Connection errors.
    pub errors: AtomicU64,
    /// Whether the client is connected now.
    pub connected: AtomicBool,
    /// Whether the broker has acknowledged the subscriptions of the current connection (what
    /// `/readyz` reports: before that, the broker would not route input to us).
    pub subscribed: AtomicBool,
}

/// A running ingestion client.
pub struct MqttIngest {
    client: AsyncClient,
    metrics: Arc<MqttMetrics>,
    task: JoinHandle<()>,
}

/// The topic filters ingestion subscribes to: the contract's input families under the prefix
/// (never `{prefix}#`, which would include the alert outlet's own `{prefix}alerts/…`).
pub fn input_filters(topic_prefix: &str) -> Vec<String> {
    ["traffic", "emergency", "grid", "health"]
        .iter()
        .map(|family| format!("{topic_prefix}{family}/#"))
        .collect()
}

impl MqttConfig {
    /// Client options for this broker under `client_id`: keep-alive, packet size and
    /// credentials (the password from `CITYBRAIN_MQTT_PASSWORD` when set).
    pub fn options(&self, client_id: String) -> MqttOptions {
        let mut opts = MqttOptions::new(client_id, self.host.clone(), self.port);
        opts.set_keep_alive(Duration::from_secs(self.keep_alive_s.max(5)))
            .set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes);
        let password = std::env::var("CITYBRAIN_MQTT_PASSWORD").ok().or_else(|| self.password.clone());
        if let Some(user) = self.username.clone() {
            opts.set_credentials(user, password.unwrap_or_default());
        }
        opts
    }
}

impl MqttIngest {
    /// Connects (in the background) and starts feeding `sender` with every message under
    /// `topic_prefix` (e.g. `city/`).
    pub fn start(cfg: &MqttConfig, topic_prefix: &str, sender: LiveSender) -> Result<MqttIngest> {
        if cfg.host.is_empty() {
            anyhow::bail!("config key `mqtt.host`: must not be empty");
        }
        let mut opts = cfg.options(cfg.client_id.clone());
        opts.set_clean_session(false).set_manual_acks(true);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let metrics = Arc::new(MqttMetrics::default());
        let filters: Vec<rumqttc::SubscribeFilter> = input_filters(topic_prefix)
            .into_iter()
            .map(|path| rumqttc::SubscribeFilter::new(path, QoS::AtLeastOnce))
            .collect();
        let filter = input_filters(topic_prefix).join(" ");
        let (c, m) = (client.clone(), metrics.clone());
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = Duration::from_millis(100);
                        m.connects.fetch_add(1, Ordering::Relaxed);
                        m.connected.store(true, Ordering::Relaxed);
                        m.subscribed.store(false, Ordering::Relaxed);
                        tracing::info!(filter, "MQTT connected; subscribing");
                        if c.try_subscribe_many(filters.clone()).is_ok() {
                            m.subscriptions.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => m.subscribed.store(true, Ordering::Relaxed),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        m.messages.fetch_add(1, Ordering::Relaxed);
                        m.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                        let mut msg = Message { topic: p.topic.clone(), payload: p.payload.to_vec() };
                        // Backpressure: wait (not polling) until the dataflow takes it.
                        loop {
                            match sender.try_send(msg) {
                                Ok(()) => break,
                                Err(Refused::Full(back)) => {
                                    msg = back;
                                    tokio::time::sleep(Duration::from_millis(2)).await;
                                }
                                Err(Refused::Stopped) => {
                                    tracing::info!("live dataflow stopped; MQTT ingestion ends");
                                    return;
                                }
                            }
                        }
                        // Taken by the dataflow: only now may the broker forget it.
                        let _ = c.try_ack(&p);
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                        m.connected.store(false, Ordering::Relaxed);
                        m.subscribed.store(false, Ordering::Relaxed);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let was = m.connected.swap(false, Ordering::Relaxed);
                        m.subscribed.store(false, Ordering::Relaxed);
                        let n = m.errors.fetch_add(1, Ordering::Relaxed);
                        if was || n.is_power_of_two() {
                            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT connection error");
                        }
                        let jitter = 0.75 + rand::random::<f64>() * 0.5;
                        tokio::time::sleep(backoff.mul_f64(jitter)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Ok(MqttIngest { client, metrics, task })
    }

    /// The client's counters.
    pub fn metrics(&self) -> Arc<MqttMetrics> {
        self.metrics.clone()
    }

    /// Disconnects and stops the task (unacknowledged messages stay with the broker).
    ///
    /// When the broker cannot be reached the disconnect never completes: after 5 s the task is
    /// stopped anyway, which also releases its handle on the live driver's queue (the driver's
    /// shutdown waits for every sender to be gone).
    pub async fn shutdown(mut self) {
        let _ = self.client.try_disconnect();
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task).await.is_err() {
            tracing::warn!("MQTT client did not stop within 5 s (broker unreachable?); stopping it");
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}
