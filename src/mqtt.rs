//! MQTT ingestion: city topics from a broker into the live dataflow.
//!
//! One rumqttc client with a persistent session (`clean_session = false`) subscribes to the
//! input families `{prefix}traffic/#`, `{prefix}emergency/#`, `{prefix}grid/#` and
//! `{prefix}health/#` at QoS 1 (not `{prefix}#`: the alert outlet publishes under
//! `{prefix}alerts/`, which is output, not input), and subscribes again on *every* ConnAck (a
//! broker that restarted has forgotten the subscription; rumqtt issue #250).
//!
//! Two tasks, so that backpressure never silences the connection:
//! - the **poller** polls the event loop continuously — keep-alive pings, PubAcks and reconnects
//!   go on whatever the dataflow does — and hands each publish over to the feeder through a
//!   bounded queue ([`HANDOFF`] messages). After an error it waits with jittered exponential
//!   backoff (100 ms doubling to 5 s) before polling again, which reconnects.
//! - the **feeder** hands the messages to the live driver in order and acknowledges each one
//!   only once the driver has taken it into its queue (manual acknowledgement), so a crash before
//!   that makes the broker redeliver it. It never waits for the client to take an
//!   acknowledgement (the poller drains the client's requests and may be waiting for the feeder):
//!   due acknowledgements queue in order and go out as the client takes them. While the driver's queue is full, or while an output is
//!   failing (the *gate* is closed, see [`crate::sink::health`]), the feeder holds its message
//!   and takes no more; the messages not acknowledged then fill the broker's in-flight window
//!   (mosquitto `max_inflight_messages`, rumqttd `max_inflight_count`), and the broker stops
//!   sending and keeps the rest (configure mosquitto with `max_queued_messages 0` so it never
//!   drops them). The connection stays up: no reconnect, no redelivery storm.
//!
//! The hand-off queue is larger than any sane in-flight window, so for QoS 1 the poller never
//! waits on it. (QoS 0 publishes have no window: a broker flooding those past the queue makes
//! the poller wait, which is TCP backpressure, as before.) An acknowledgement that cannot be
//! sent — the connection dropped since the message arrived (rumqttc discards the PubAcks queued
//! for the old connection and the broker redelivers), or the client stopped — is counted
//! (`ack_failures`) and logged once per episode; the redelivery is harmless because ingestion
//! is idempotent (a duplicate changes nothing).

use crate::live::{LiveSender, Message, Refused};
use anyhow::Result;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Messages the poller hands to the feeder before it waits (above any in-flight window).
pub const HANDOFF: usize = 1024;

/// Whether input may be taken now (closed while an output is failing).
pub type Gate = Arc<dyn Fn() -> bool + Send + Sync>;

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
    /// Acknowledgements not sent (connection lost since, or client stopped): the broker
    /// redelivers those messages.
    pub ack_failures: AtomicU64,
    /// Messages received and not yet taken by the live driver (held while it is backpressured or
    /// an output is failing).
    pub held: AtomicU64,
    /// Connection generation: bumped on every ConnAck and every connection error, so the feeder
    /// never sends an old connection's PubAck on a new one.
    epoch: AtomicU64,
}

/// A running ingestion client.
pub struct MqttIngest {
    client: AsyncClient,
    metrics: Arc<MqttMetrics>,
    poller: JoinHandle<()>,
    feeder: JoinHandle<()>,
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
        Self::start_gated(cfg, topic_prefix, sender, Arc::new(|| true))
    }

    /// [`MqttIngest::start`], taking (and acknowledging) input only while `gate` is open.
    pub fn start_gated(
        cfg: &MqttConfig,
        topic_prefix: &str,
        sender: LiveSender,
        gate: Gate,
    ) -> Result<MqttIngest> {
        if cfg.host.is_empty() {
            anyhow::bail!("config key `mqtt.host`: must not be empty");
        }
        let mut opts = cfg.options(cfg.client_id.clone());
        opts.set_clean_session(false).set_manual_acks(true);
        let (client, eventloop) = AsyncClient::new(opts, 1024);
        let metrics = Arc::new(MqttMetrics::default());
        let (hand_tx, hand_rx) = mpsc::channel::<(u64, Publish)>(HANDOFF);
        let poller =
            tokio::spawn(poll(eventloop, client.clone(), metrics.clone(), topic_prefix.to_string(), hand_tx));
        let feeder = tokio::spawn(feed(hand_rx, client.clone(), metrics.clone(), sender, gate));
        Ok(MqttIngest { client, metrics, poller, feeder })
    }

    /// The client's counters.
    pub fn metrics(&self) -> Arc<MqttMetrics> {
        self.metrics.clone()
    }

    /// Lets the messages already received reach the live driver (up to 2 s), then disconnects
    /// and stops both tasks (unacknowledged messages stay with the broker).
    ///
    /// When the broker cannot be reached the disconnect never completes: after 5 s the poller
    /// is stopped anyway, which also lets the feeder end and release its handle on the live
    /// driver's queue (the driver's shutdown waits for every sender to be gone).
    pub async fn shutdown(mut self) {
        for _ in 0..100 {
            if self.metrics.held.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.client.try_disconnect();
        if tokio::time::timeout(Duration::from_secs(5), &mut self.poller).await.is_err() {
            tracing::warn!("MQTT client did not stop within 5 s (broker unreachable?); stopping it");
            self.poller.abort();
            let _ = (&mut self.poller).await;
        }
        // The poller is gone: the feeder ends once it has handed over what it holds (a closed
        // gate or a stopped driver ends it at once: those messages stay with the broker).
        if tokio::time::timeout(Duration::from_secs(2), &mut self.feeder).await.is_err() {
            self.feeder.abort();
            let _ = (&mut self.feeder).await;
        }
    }
}

/// The poller: keeps the connection alive and hands publishes to the feeder.
async fn poll(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    m: Arc<MqttMetrics>,
    topic_prefix: String,
    hand_tx: mpsc::Sender<(u64, Publish)>,
) {
    let filters: Vec<rumqttc::SubscribeFilter> = input_filters(&topic_prefix)
        .into_iter()
        .map(|path| rumqttc::SubscribeFilter::new(path, QoS::AtLeastOnce))
        .collect();
    let filter = input_filters(&topic_prefix).join(" ");
    let mut backoff = Duration::from_millis(100);
    let mut warned_full = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                m.epoch.fetch_add(1, Ordering::AcqRel);
                m.connects.fetch_add(1, Ordering::Relaxed);
                m.connected.store(true, Ordering::Relaxed);
                m.subscribed.store(false, Ordering::Relaxed);
                tracing::info!(filter, "MQTT connected; subscribing");
                // Never awaited here: this task is the one that drains the request queue.
                match client.try_subscribe_many(filters.clone()) {
                    Ok(()) => {
                        m.subscriptions.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot request the MQTT subscription"),
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => m.subscribed.store(true, Ordering::Relaxed),
            Ok(Event::Incoming(Packet::Publish(p))) => {
                m.messages.fetch_add(1, Ordering::Relaxed);
                m.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                m.held.fetch_add(1, Ordering::AcqRel);
                let epoch = m.epoch.load(Ordering::Acquire);
                match hand_tx.try_send((epoch, p)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(item)) => {
                        if !warned_full {
                            warned_full = true;
                            tracing::warn!(
                                handoff = HANDOFF,
                                "the broker sends more unacknowledged messages than the hand-off holds \
                                 (QoS 0, or a large in-flight window): polling waits"
                            );
                        }
                        if hand_tx.send(item).await.is_err() {
                            return;
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return, // the feeder has ended
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                m.connected.store(false, Ordering::Relaxed);
                m.subscribed.store(false, Ordering::Relaxed);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                m.epoch.fetch_add(1, Ordering::AcqRel);
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
}

/// The feeder: hands messages to the live driver in order, waiting while the gate is closed or
/// the driver's queue is full, and acknowledges each once taken.
///
/// Acknowledgements never wait for the client: they go through the client's request queue,
/// which only the poller drains, and the poller may itself be waiting for this task (a full
/// hand-off queue). Awaiting an acknowledgement there deadlocked both tasks; so they wait here,
/// in order, and are sent as the client takes them.
async fn feed(
    mut hand_rx: mpsc::Receiver<(u64, Publish)>,
    client: AsyncClient,
    m: Arc<MqttMetrics>,
    sender: LiveSender,
    gate: Gate,
) {
    let mut acks = Acks { unsent: VecDeque::new(), failing: false };
    loop {
        acks.send(&client, &m);
        let next = if acks.unsent.is_empty() {
            hand_rx.recv().await
        } else {
            match tokio::time::timeout(Duration::from_millis(5), hand_rx.recv()).await {
                Ok(next) => next,
                Err(_) => continue, // try the acknowledgements again
            }
        };
        let Some((epoch, p)) = next else { break };
        let mut msg = Message { topic: p.topic.clone(), payload: p.payload.to_vec() };
        loop {
            if !gate() {
                // An output is failing: take nothing (the broker keeps it) until it recovers.
                if hand_rx.is_closed() {
                    return; // shutting down: leave it with the broker
                }
                acks.send(&client, &m);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            match sender.try_send(msg) {
                Ok(()) => break,
                Err(Refused::Full(back)) => {
                    msg = back;
                    acks.send(&client, &m);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(Refused::Stopped) => {
                    tracing::info!("live dataflow stopped; MQTT ingestion ends");
                    return;
                }
            }
        }
        m.held.fetch_sub(1, Ordering::AcqRel);
        // Taken by the dataflow: only now may the broker forget it.
        if p.qos != QoS::AtMostOnce {
            acks.unsent.push_back((epoch, p));
        }
    }
    acks.send(&client, &m);
}

/// Acknowledgements due (messages the dataflow took), in the order the messages came.
struct Acks {
    unsent: VecDeque<(u64, Publish)>,
    /// Whether the last one failed (a failure is logged once per episode).
    failing: bool,
}

impl Acks {
    /// Sends the due acknowledgements the client takes now, in order; the rest wait.
    fn send(&mut self, client: &AsyncClient, m: &MqttMetrics) {
        while let Some((epoch, p)) = self.unsent.front() {
            // Only on the connection it came by: a PubAck on a later connection could
            // acknowledge another message (the broker redelivers this one).
            if m.epoch.load(Ordering::Acquire) != *epoch {
                m.ack_failures.fetch_add(1, Ordering::Relaxed);
                if !self.failing {
                    self.failing = true;
                    // No topic in the log: a personal topic's id could be a clear identifier.
                    tracing::warn!(
                        "MQTT acknowledgement not sent: the connection it arrived on is gone; \
                         the broker will redeliver (ingestion is idempotent)"
                    );
                }
                self.unsent.pop_front();
                continue;
            }
            if client.try_ack(p).is_err() {
                return; // the client's request queue is full (or closing): later
            }
            self.failing = false;
            self.unsent.pop_front();
        }
    }
}
