//! The MQTT outlet: every alert transition is published so existing systems can subscribe.
//!
//! - `{prefix}alerts/{domain}/{cell}` (`city` in place of the cell when the alert has none):
//!   every transition, the alert object of §7, QoS 1, not retained.
//! - `{prefix}alerts/{domain}/{cell}/active`: the *retained* active set of that domain and cell,
//!   a JSON array of alert objects (sorted by id), republished at most once a second when it
//!   changes and after every reconnect; an empty set removes the retained message. A subscriber
//!   to `{prefix}alerts/#` therefore gets the current state at once and the changes after.
//!
//! The outlet never slows the hub: it publishes with `try_publish`, and while the broker is
//! unreachable the transitions it cannot hand over are counted (`dropped`) rather than queued
//! without bound; the retained sets are complete again after the reconnect. The alert store and
//! the websockets keep every transition regardless.

use super::Published;
use crate::alerts::Alert;
use crate::mqtt::MqttConfig;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Counters of the outlet.
#[derive(Debug, Default)]
pub struct OutletMetrics {
    /// Transitions handed to the MQTT client.
    pub published: AtomicU64,
    /// Transitions not handed over (client queue full or broker unreachable).
    pub dropped: AtomicU64,
}

/// The topic of an alert's transitions.
pub fn topic(prefix: &str, a: &Alert) -> String {
    format!("{prefix}alerts/{}/{}", a.domain, a.cell.as_deref().unwrap_or("city"))
}

/// Starts the outlet task: `active` is the hub's active set when `rx` was taken.
pub fn start(
    cfg: &MqttConfig,
    prefix: &str,
    active: Vec<Alert>,
    mut rx: mpsc::UnboundedReceiver<Arc<Published>>,
) -> (Arc<OutletMetrics>, tokio::task::JoinHandle<()>) {
    let opts = cfg.options(format!("{}-alerts", cfg.client_id));
    let (client, mut eventloop) = AsyncClient::new(opts, 4096);
    let metrics = Arc::new(OutletMetrics::default());
    let m = metrics.clone();
    let prefix = prefix.to_string();
    // The event loop runs in its own task (its `poll` is not documented as cancel-safe, so it
    // never sits in a `select!`); it reports each (re)connection.
    let connected = Arc::new(tokio::sync::Notify::new());
    let poller = {
        let connected = connected.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = Duration::from_millis(100);
                        tracing::info!("MQTT alert outlet connected");
                        connected.notify_one();
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "MQTT alert outlet: connection error");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    };
    let task = tokio::spawn(async move {
        // topic → (id → alert): the retained sets.
        let mut sets: BTreeMap<String, BTreeMap<String, Alert>> = BTreeMap::new();
        for a in active {
            sets.entry(topic(&prefix, &a)).or_default().insert(a.id.clone(), a);
        }
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(p) = msg else { break };
                    let t = topic(&prefix, &p.alert);
                    let set = sets.entry(t.clone()).or_default();
                    if p.alert.is_active() {
                        set.insert(p.alert.id.clone(), p.alert.clone());
                    } else {
                        set.remove(&p.alert.id);
                    }
                    let body = serde_json::to_vec(&p.alert).unwrap_or_default();
                    if client.try_publish(t.clone(), QoS::AtLeastOnce, false, body).is_ok() {
                        m.published.fetch_add(1, Ordering::Relaxed);
                    } else {
                        m.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    dirty.insert(t);
                }
                _ = tick.tick() => {
                    for t in std::mem::take(&mut dirty) {
                        retain(&client, &t, sets.get(&t));
                    }
                    sets.retain(|_, s| !s.is_empty());
                }
                _ = connected.notified() => dirty.extend(sets.keys().cloned()),
            }
        }
        // Final retained sets, then a clean disconnect (bounded in time).
        for t in std::mem::take(&mut dirty) {
            retain(&client, &t, sets.get(&t));
        }
        let _ = client.try_disconnect();
        let mut poller = poller;
        if tokio::time::timeout(Duration::from_secs(3), &mut poller).await.is_err() {
            poller.abort();
        }
    });
    (metrics, task)
}

fn retain(client: &AsyncClient, topic: &str, set: Option<&BTreeMap<String, Alert>>) {
    let body = match set.filter(|s| !s.is_empty()) {
        Some(s) => serde_json::to_vec(&s.values().collect::<Vec<_>>()).unwrap_or_default(),
        None => Vec::new(), // an empty retained message deletes the retained one
    };
    let _ = client.try_publish(format!("{topic}/active"), QoS::AtLeastOnce, true, body);
}
