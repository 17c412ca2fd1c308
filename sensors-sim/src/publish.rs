//! Publishing recording lines to an MQTT broker (CONTRACT §4–5): `citybrain-sim run --mqtt` and
//! `citybrain-sim replay`.
//!
//! [`publish_lines`] sends the payload of every line (its JSON text exactly as in the line) to the
//! line's topic, over plain TCP with rumqttc, at QoS 0 or 1, either as fast as the broker takes
//! them or paced by the payloads' event time (`ts`) at a speed factor. Nothing is lost silently:
//!
//! * the event loop is polled continuously in its own task, and publishing starts only after the
//!   broker's ConnAck;
//! * on a connection error it reconnects with exponential backoff (0.1 s doubling to 5 s). rumqttc
//!   drops every unacknowledged publish when the new session is a clean one; those are set aside at
//!   the error and handed back to it once connected again, so they are sent again (QoS 1 is
//!   at-least-once: a message the broker got but did not acknowledge in time may arrive twice);
//! * before disconnecting it waits until every QoS 1 publish has its PubAck, or every QoS 0 publish
//!   has been written to the connection. When stopped early it waits for that at most
//!   [`STOP_DRAIN_TIMEOUT`], then reports how many are unconfirmed as an error.
//!
//! Connection problems are reported on stderr (one line per attempt, at most every 5 s).

use anyhow::{Context, Result, anyhow, bail, ensure};
use citybrain_dataflows::time::{Ms, Ts};
use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, Incoming, MqttOptions, NetworkOptions,
    Outgoing, QoS, Request,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest MQTT packet sent or received, bytes (16 MiB).
pub const MAX_PACKET_SIZE: usize = 16 << 20;
/// Capacity of the channel between the publisher and the event loop, in requests.
pub const REQUEST_CHANNEL_CAPACITY: usize = 16_384;
/// The MQTT port when a target names none.
pub const DEFAULT_PORT: u16 = 1883;
/// After a stop, how long [`publish_lines`] still waits for outstanding acknowledgements.
pub const STOP_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// QoS 1 publishes awaiting their PubAck at a time.
const INFLIGHT: u16 = 100;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a publisher blocked on a full request channel tries again (and looks at `stop`).
const FULL_CHANNEL_RETRY: Duration = Duration::from_millis(1);
/// Fixed header (at most 5 bytes) + topic length (2) + packet id (2).
const PUBLISH_OVERHEAD: usize = 9;
/// Longest wait for the event loop to write the Disconnect.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to publish: an MQTT broker over plain TCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttTarget {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// MQTT client id; it must be unique among the broker's clients.
    pub client_id: String,
    /// QoS of every publish: 0 (at most once) or 1 (at least once).
    pub qos: u8,
}

impl MqttTarget {
    /// A target at `host:port` with a client id unique to this process ([`default_client_id`])
    /// and QoS 1.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        MqttTarget { host: host.into(), port, client_id: default_client_id(), qos: 1 }
    }

    /// `mqtt://host:port` (IPv6 addresses in brackets).
    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.bracketed_host(), self.port)
    }

    fn bracketed_host(&self) -> Cow<'_, str> {
        if self.host.contains(':') {
            Cow::Owned(format!("[{}]", self.host))
        } else {
            Cow::Borrowed(&self.host)
        }
    }

    /// The rumqttc QoS of [`MqttTarget::qos`].
    pub fn qos_level(&self) -> Result<QoS> {
        match self.qos {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            q => bail!("QoS must be 0 or 1, not {q}"),
        }
    }

    /// rumqttc options: clean session, 16 MiB packets both ways.
    fn options(&self) -> MqttOptions {
        // rumqttc resolves "host:port" as one string: IPv6 needs its brackets there.
        let mut o = MqttOptions::new(self.client_id.clone(), self.bracketed_host(), self.port);
        o.set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
            .set_request_channel_capacity(REQUEST_CHANNEL_CAPACITY)
            .set_inflight(INFLIGHT)
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30));
        o
    }
}

impl fmt::Display for MqttTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// Parses `mqtt://host:port` or `host:port` (also `tcp://`; the port defaults to 1883; IPv6 in
/// brackets). The client id is [`default_client_id`], the QoS 1.
impl FromStr for MqttTarget {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let rest = match s.trim().split_once("://") {
            Some((scheme, rest)) => {
                ensure!(
                    scheme.eq_ignore_ascii_case("mqtt") || scheme.eq_ignore_ascii_case("tcp"),
                    "unsupported scheme {scheme}:// in {s:?}: only plain TCP, mqtt://HOST:PORT"
                );
                rest
            }
            None => s.trim(),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        ensure!(
            !rest.contains(['/', '@', '?', '#']),
            "{s:?} is not mqtt://HOST:PORT (no path, user or query)"
        );
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').with_context(|| format!("{s:?}: missing ]"))?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').with_context(|| format!("{s:?}: expected :PORT"))?)),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    bail!("{s:?}: write an IPv6 address in brackets, mqtt://[ADDR]:PORT")
                }
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        ensure!(!host.is_empty(), "{s:?}: missing host");
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => bail!("{s:?}: invalid port {p:?}"),
            },
        };
        Ok(MqttTarget::new(host, port))
    }
}

/// A client id unique to this process and call: `citybrain-sim-{pid}-{n}`.
pub fn default_client_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("citybrain-sim-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// How fast to publish.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the broker acknowledges.
    AsFastAsPossible,
    /// Simulated seconds per wall-clock second: a line is published when the wall-clock time since
    /// the start equals its event time (`payload.ts`, the latest `ts` of a batch) minus the first
    /// line's, divided by the factor. Lines without a `ts`, or earlier than the first, go at once.
    Speed(f64),
}

/// What [`publish_lines`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishReport {
    /// Messages published and confirmed (PubAck at QoS 1, written at QoS 0).
    pub messages: u64,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// Wall-clock seconds from the connection to the last confirmation.
    pub seconds: f64,
}

impl PublishReport {
    /// Messages per wall-clock second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 { self.messages as f64 / self.seconds } else { 0.0 }
    }
}

/// Live counters of a [`publish_lines_with_progress`] call, for a progress display.
#[derive(Debug, Default)]
pub struct PublishProgress {
    published: AtomicU64,
    confirmed: AtomicU64,
    bytes: AtomicU64,
    event_ts: AtomicU64,
}

impl PublishProgress {
    /// Messages handed to the MQTT client so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Messages confirmed so far (PubAck at QoS 1, written at QoS 0).
    pub fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    /// Payload bytes handed to the MQTT client so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Event time (`ts`) of the last published message that had one.
    pub fn event_ts(&self) -> Option<Ms> {
        Some(self.event_ts.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }
}

#[derive(Deserialize)]
struct LineRef<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// Splits a recording line `{"topic": …, "payload": …}` (CONTRACT §4) into its topic and the JSON
/// text of its payload, exactly as written in the line. The topic must be a valid MQTT topic name
/// (not empty, no `+` or `#` wildcard, no NUL, at most 65535 bytes).
pub fn parse_line(line: &str) -> Result<(String, String)> {
    let l: LineRef = serde_json::from_str(line)
        .map_err(|e| anyhow!("not a recording line {{\"topic\": …, \"payload\": …}}: {e}"))?;
    let topic = l.topic;
    ensure!(!topic.is_empty(), "empty topic");
    ensure!(!topic.contains(['+', '#']), "topic {topic:?} contains an MQTT wildcard (+ or #)");
    ensure!(!topic.contains('\0'), "topic {topic:?} contains a NUL character");
    ensure!(topic.len() <= u16::MAX as usize, "topic longer than 65535 bytes");
    Ok((topic.into_owned(), l.payload.get().to_string()))
}

#[derive(Deserialize)]
struct Stamped {
    #[serde(default)]
    ts: Option<Ts>,
}

/// The event time of a payload: its `ts` (epoch ms or RFC 3339), the latest `ts` of a batch
/// (array); `None` when there is none or it is invalid.
pub fn event_ts(payload: &str) -> Option<Ms> {
    match payload.trim_start().as_bytes().first()? {
        b'{' => serde_json::from_str::<Stamped>(payload).ok()?.ts.map(|t| t.0),
        b'[' => serde_json::from_str::<Vec<Stamped>>(payload)
            .ok()?
            .into_iter()
            .filter_map(|s| s.ts)
            .max()
            .map(|t| t.0),
        _ => None,
    }
}

/// Publishes every line (see the module documentation) and returns once all are confirmed and the
/// client has disconnected. Blank lines are skipped; a malformed line (see [`parse_line`]) or one
/// too large for a 16 MiB packet is an error naming its line number. When `stop` turns true it
/// publishes nothing more and returns the report of what was published. Must run inside a tokio
/// runtime with time and I/O enabled (a multi-threaded one: the event loop is its own task).
pub async fn publish_lines<I: IntoIterator<Item = String>>(
    target: &MqttTarget,
    lines: I,
    pace: Pace,
    stop: Option<watch::Receiver<bool>>,
) -> Result<PublishReport> {
    publish_lines_with_progress(target, lines, pace, stop, Arc::default()).await
}

/// The event-loop task; aborted when dropped, so an early return never leaves it running.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the event loop tells the publisher.
#[derive(Clone, Copy, Debug, Default)]
struct LoopStatus {
    connacks: u64,
    confirmed: u64,
}

/// [`publish_lines`], updating `progress` as it goes (read it from another task).
pub async fn publish_lines_with_progress<I: IntoIterator<Item = String>>(
    target: &MqttTarget,
    lines: I,
    pace: Pace,
    mut stop: Option<watch::Receiver<bool>>,
    progress: Arc<PublishProgress>,
) -> Result<PublishReport> {
    let qos = target.qos_level()?;
    if let Pace::Speed(speed) = pace {
        ensure!(speed.is_finite() && speed >= 1e-6, "the speed must be a positive number, not {speed}");
    }
    let url = target.url();
    let (client, mut eventloop) = AsyncClient::new(target.options(), REQUEST_CHANNEL_CAPACITY);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (status_tx, mut status) = watch::channel(LoopStatus::default());
    let mut driver = Driver(tokio::spawn(drive(eventloop, qos, url.clone(), status_tx, progress.clone())));

    tokio::select! {
        connected = status.wait_for(|s| s.connacks > 0) => {
            connected.map_err(|_| anyhow!("the MQTT event loop ended"))?;
        }
        () = stop_requested(&mut stop) => return Ok(PublishReport::default()),
    }

    let start = Instant::now();
    let (mut sent, mut bytes) = (0u64, 0u64);
    let mut first_ts = None;
    let mut stopped = false;
    for (i, line) in lines.into_iter().enumerate() {
        if is_stopped(&stop) {
            stopped = true;
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (topic, payload) = parse_line(&line).with_context(|| format!("line {}", i + 1))?;
        let size = topic.len() + payload.len() + PUBLISH_OVERHEAD;
        ensure!(
            size <= MAX_PACKET_SIZE,
            "line {}: a {size}-byte message exceeds the {MAX_PACKET_SIZE}-byte MQTT packet limit",
            i + 1
        );
        if let Some(ts) = event_ts(&payload) {
            if let Pace::Speed(speed) = pace {
                let base = *first_ts.get_or_insert(ts);
                // At most ~100 years ahead, so the arithmetic cannot overflow.
                let delay = (ts.saturating_sub(base) as f64 / 1000.0 / speed).min(3.2e9);
                let due = start + Duration::from_secs_f64(delay);
                if due > Instant::now() {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = stop_requested(&mut stop) => {
                            stopped = true;
                            break;
                        }
                    }
                }
            }
            progress.event_ts.store(ts, Ordering::Relaxed);
        }
        let len = payload.len() as u64;
        if !send(&client, topic, qos, payload, &mut stop, &driver).await? {
            stopped = true;
            break;
        }
        sent += 1;
        bytes += len;
        progress.published.fetch_add(1, Ordering::Relaxed);
        progress.bytes.fetch_add(len, Ordering::Relaxed);
    }

    // Every publish handed over must be confirmed before disconnecting.
    {
        let all_confirmed = async {
            status
                .wait_for(|s| s.confirmed >= sent)
                .await
                .map(|_| ())
                .map_err(|_| anyhow!("the MQTT event loop ended with messages unconfirmed"))
        };
        tokio::pin!(all_confirmed);
        let mut done = false;
        if !stopped {
            tokio::select! {
                r = &mut all_confirmed => {
                    r?;
                    done = true;
                }
                () = stop_requested(&mut stop) => {}
            }
        }
        if !done {
            match tokio::time::timeout(STOP_DRAIN_TIMEOUT, &mut all_confirmed).await {
                Ok(r) => r?,
                Err(_) => bail!(
                    "stopped with {} of {sent} messages unconfirmed by {url} after waiting {} s",
                    sent.saturating_sub(progress.confirmed()),
                    STOP_DRAIN_TIMEOUT.as_secs()
                ),
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();

    // Everything is confirmed: a failed disconnect loses nothing.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(DISCONNECT_TIMEOUT, &mut driver.0).await;
    }
    Ok(PublishReport { messages: sent, bytes, seconds })
}

fn is_stopped(stop: &Option<watch::Receiver<bool>>) -> bool {
    stop.as_ref().is_some_and(|rx| *rx.borrow())
}

/// Resolves when `stop` is (or turns) true; never without one, or once its sender is gone.
async fn stop_requested(stop: &mut Option<watch::Receiver<bool>>) {
    if let Some(rx) = stop
        && rx.wait_for(|&v| v).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// Hands one publish to the event loop, waiting while the request channel is full. `false` when
/// stopped before it could be handed over (then it was not: the count stays exact).
async fn send(
    client: &AsyncClient,
    topic: String,
    qos: QoS,
    payload: String,
    stop: &mut Option<watch::Receiver<bool>>,
    driver: &Driver,
) -> Result<bool> {
    let mut sent = client.try_publish(topic, qos, false, payload);
    loop {
        match sent {
            Ok(()) => return Ok(true),
            Err(ClientError::TryRequest(Request::Publish(p))) => {
                ensure!(!driver.0.is_finished(), "the MQTT event loop ended");
                tokio::select! {
                    () = tokio::time::sleep(FULL_CHANNEL_RETRY) => {}
                    () = stop_requested(stop) => return Ok(false),
                }
                sent = client.try_publish(p.topic, qos, false, Vec::from(p.payload));
            }
            Err(e) => bail!("publishing: {e}"),
        }
    }
}

/// Polls the event loop until the Disconnect is written: counts confirmations, reconnects with
/// backoff, and carries unacknowledged publishes over to the next connection.
async fn drive(
    mut eventloop: EventLoop,
    qos: QoS,
    url: String,
    status: watch::Sender<LoopStatus>,
    progress: Arc<PublishProgress>,
) {
    // Publishes not acknowledged when the connection failed, plus requests still in the channel:
    // rumqttc clears them on a ConnAck without a session, so they wait here meanwhile.
    let mut carried: VecDeque<Request> = VecDeque::new();
    let mut backoff = BACKOFF_MIN;
    let mut failing = false;
    loop {
        let confirmed = match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                let newer = std::mem::take(&mut eventloop.pending);
                eventloop.pending = std::mem::take(&mut carried);
                eventloop.pending.extend(newer);
                if failing {
                    eprintln!(
                        "citybrain-sim: mqtt: reconnected to {url}; sending {} requests again",
                        eventloop.pending.len()
                    );
                }
                failing = false;
                backoff = BACKOFF_MIN;
                status.send_modify(|s| s.connacks += 1);
                false
            }
            Ok(Event::Incoming(Incoming::PubAck(_))) => qos == QoS::AtLeastOnce,
            Ok(Event::Outgoing(Outgoing::Publish(_))) => qos == QoS::AtMostOnce,
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(ConnectionError::RequestsDone) => return,
            Ok(_) => false,
            Err(e) => {
                carried.extend(eventloop.pending.drain(..));
                let kept = match carried.len() {
                    0 => String::new(),
                    n => format!("; {n} unconfirmed requests kept"),
                };
                eprintln!(
                    "citybrain-sim: mqtt: {url}: {e}{kept}; retrying in {:.1} s",
                    backoff.as_secs_f64()
                );
                failing = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                false
            }
        };
        if confirmed {
            progress.confirmed.fetch_add(1, Ordering::Relaxed);
            status.send_modify(|s| s.confirmed += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t: MqttTarget = "mqtt://127.0.0.1:1883".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port, t.qos), ("127.0.0.1", 1883, 1));
        assert!(t.client_id.starts_with("citybrain-sim-"));
        let t: MqttTarget = "broker.local:11883".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("broker.local", 11883));
        let t: MqttTarget = "tcp://localhost/".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("localhost", 1883));
        let t: MqttTarget = "mqtt://[::1]:1884".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 1884));
        assert_eq!(t.url(), "mqtt://[::1]:1884");
        let a: MqttTarget = "h:1".parse().unwrap();
        let b: MqttTarget = "h:1".parse().unwrap();
        assert_ne!(a.client_id, b.client_id, "client ids are unique");
        for bad in
            ["mqtts://h:8883", "ws://h:1", "mqtt://:1883", "h:0", "h:70000", "h:x", "::1:1883", "h:1/x"]
        {
            assert!(bad.parse::<MqttTarget>().is_err(), "{bad} should not parse");
        }
        assert!(MqttTarget { qos: 2, ..t }.qos_level().is_err());
    }

    #[test]
    fn lines_parse() {
        let line = r#"{"topic":"city/a/b","payload":{ "ts": 1772406000000, "x":[1, 2.50] }}"#;
        let (topic, payload) = parse_line(line).unwrap();
        assert_eq!(topic, "city/a/b");
        assert_eq!(payload, r#"{ "ts": 1772406000000, "x":[1, 2.50] }"#, "payload text kept exactly");
        let (topic, _) = parse_line(r#"{"payload":[],"topic":"c\/d\u0065"}"#).unwrap();
        assert_eq!(topic, "c/de");
        for (bad, why) in [
            ("", "not a recording line"),
            ("not json", "not a recording line"),
            (r#"{"topic":"a"}"#, "missing field `payload`"),
            (r#"{"payload":{}}"#, "missing field `topic`"),
            (r#"{"topic":1,"payload":{}}"#, "not a recording line"),
            (r#"{"topic":"a","payload":{}} x"#, "trailing"),
            (r#"{"topic":"a","payload":{"#, "not a recording line"),
            (r#"{"topic":"","payload":{}}"#, "empty topic"),
            (r#"{"topic":"city/#","payload":{}}"#, "wildcard"),
            (r#"{"topic":"city/+/x","payload":{}}"#, "wildcard"),
            (r#"{"topic":"a\u0000","payload":{}}"#, "NUL"),
            ("[1,2]", "not a recording line"),
        ] {
            let err = format!("{:#}", parse_line(bad).unwrap_err());
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn event_times() {
        assert_eq!(event_ts(r#"{"ts":1772406000000,"a":{"ts":1}}"#), Some(1_772_406_000_000));
        assert_eq!(event_ts(r#"{"a":1,"ts":"2026-03-02T07:00:00+08:00"}"#), Some(1_772_406_000_000));
        assert_eq!(
            event_ts(r#"[{"ts":1772406000000},{"ts":1772406030000},{"x":1}]"#),
            Some(1_772_406_030_000)
        );
        for none in [r#"{"a":1}"#, r#"{"ts":null}"#, r#"{"ts":"yesterday"}"#, r#"{"ts":5}"#, "[]", "3", "x"] {
            assert_eq!(event_ts(none), None, "{none}");
        }
    }
}
