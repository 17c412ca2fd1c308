//! The embedded MQTT broker of `citybrain demo` (rumqttd), so the demo needs no outside service.
//!
//! rumqttd's defaults admit no client at all (every router limit is zero), so every limit is set
//! here. `Broker::start` blocks forever and has no shutdown: it runs on its own thread and ends
//! with the process. Production uses an outside broker (`citybrain run`, `[mqtt]`).

use anyhow::{Context, Result, bail};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Largest payload the embedded broker accepts (a batch of readings), bytes.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// Starts a broker listening on `127.0.0.1:port` and waits until it accepts connections.
pub fn start_embedded(port: u16) -> Result<()> {
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    // A clear error if the port is taken (rumqttd would only log it on its own thread).
    drop(std::net::TcpListener::bind(listen).with_context(|| format!("MQTT port {port} is not free"))?);
    let server = ServerSettings {
        name: "citybrain-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1_000,
            max_outgoing_packet_count: 200_000,
            max_segment_size: 64 << 20,
            max_segment_count: 10,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Config::default()
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .context("cannot start the broker thread")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(listen).is_err() {
        if Instant::now() > deadline {
            bail!("the embedded MQTT broker did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
