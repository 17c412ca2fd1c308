//! The `citybrain` command line. See `citybrain --help`.

use anyhow::Result;
use citybrain::config::Settings;
use citybrain::replay::{ReplayOptions, replay};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// citybrain — real-time monitoring and dispatch stream processor for a city operations centre.
///
/// Ingests city sensor feeds (traffic loop detectors, emergency incidents and units, grid cases and
/// sensors, public-health records), computes indicators incrementally in timely/differential
/// dataflows, and raises alerts.
#[derive(Parser, Debug)]
#[command(name = "citybrain", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Everything in one command, no outside services: an embedded MQTT broker, the simulator
    /// publishing a generated city's detectors, the processor and the API.
    ///
    /// Line protocol goes to DATA_DIR/lp/*.lp, alert transitions to DATA_DIR/alerts/, rejected
    /// input to DATA_DIR/dead-letters/. Ctrl-C or the end of --duration shuts everything down
    /// cleanly: open windows are closed and every file is flushed.
    Demo {
        /// Address of the HTTP API.
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        http: String,
        /// Port of the embedded MQTT broker (127.0.0.1).
        #[arg(long, default_value_t = 1883, value_name = "PORT")]
        mqtt_port: u16,
        /// Where the city, line protocol, alerts and dead letters go.
        #[arg(long, default_value = "data/demo", value_name = "DIR")]
        data_dir: PathBuf,
        /// Stop after this many wall-clock seconds (flushing); default: run until Ctrl-C.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
        /// Simulated seconds per wall-clock second.
        #[arg(long, default_value_t = 60.0, value_name = "X")]
        speed: f64,
    },
    /// Production: an outside MQTT broker, InfluxDB, the API — all from the config file.
    ///
    /// The config names the city model (`city = "…"`), `data_dir`, `[mqtt]`, `[influxdb]`
    /// (optional), `[http]`, `[live]` and the dataflow settings; see README.md.
    Run {
        /// Configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Stop after this many wall-clock seconds (flushing); default: run until Ctrl-C.
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
    },
    /// Process a recording offline through the same dataflows as the live service.
    ///
    /// Reads JSON Lines (`{"topic": …, "payload": …}` per line, optionally gzip), uses event time
    /// from the records, writes every indicator as InfluxDB line protocol to one file. At end of
    /// input the clock advances to the end of the last 5-minute window holding data, so every
    /// window closes and every due timer fires. Rejected lines go to --dead-letter-out and
    /// processing continues; the exit code is 0 unless the input cannot be read.
    Replay {
        /// City model (GeoJSON FeatureCollection).
        #[arg(long, value_name = "CITY.geojson")]
        city: PathBuf,
        /// Recording to process (JSON Lines, optionally gzip-compressed).
        #[arg(long, value_name = "FEED.jsonl[.gz]")]
        input: PathBuf,
        /// Line-protocol output file.
        #[arg(long, value_name = "OUT.lp")]
        out_lp: PathBuf,
        /// Write one JSON alert object per alert transition here.
        #[arg(long, value_name = "ALERTS.jsonl")]
        alerts_out: Option<PathBuf>,
        /// Write one JSON object per rejected line or element here (line, topic, reason, detail).
        #[arg(long, value_name = "DL.jsonl")]
        dead_letter_out: Option<PathBuf>,
        /// Configuration file (defaults, and a random pseudonym key for this run, without it).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Timely worker threads for the dataflow. The output is the same for any number; on
        /// two cores one worker is fastest (the parsers take the other core).
        #[arg(long, default_value_t = 1, value_name = "N")]
        workers: usize,
        /// Parser threads: decoding and id checks, ahead of the dataflow (default: one per core).
        #[arg(long, default_value_t = default_workers(), value_name = "N")]
        parsers: usize,
        /// No progress lines on stderr.
        #[arg(long)]
        quiet: bool,
        /// Input read per batch, KiB. The replay's watermark advances once per 8 batches, so
        /// smaller batches follow arrival order more closely and larger ones run faster.
        #[arg(long, default_value_t = (citybrain::replay::BLOCK_BYTES / 1024) as u64, value_name = "KIB")]
        batch_kib: u64,
    },
    /// Make an API access token: prints the token (give it to its user; it is shown once) and
    /// the `[[auth.tokens]]` entry for citybrain.toml, which holds only its SHA-256.
    ///
    /// Roles: `ops` (everything), `officer` (the alerts of the officer's cells; needs
    /// --officer, an id from the city model's `cell.officers`), `ingest` (only
    /// `POST /api/ingest/{topic…}`).
    Token {
        /// The token's role.
        #[arg(long, value_enum)]
        role: citybrain::auth::Role,
        /// The officer id (role officer).
        #[arg(long, value_name = "ID")]
        officer: Option<String>,
        /// A name for logs and `acked_by` (default: the officer id or the role).
        #[arg(long)]
        name: Option<String>,
    },
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8)
}

/// Log levels no `RUST_LOG` can raise (see `main`).
const PRIVATE_LOGS: [&str; 2] = ["rumqttd=info", "rumqttc=info"];

fn main() -> ExitCode {
    // The MQTT libraries log message topics at debug and trace, and a personal topic's id may be
    // a clear identifier (CONTRACT §1): whatever RUST_LOG says, they log at info at most.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off"))
        .add_directive(PRIVATE_LOGS[0].parse().expect("a valid directive"))
        .add_directive(PRIVATE_LOGS[1].parse().expect("a valid directive"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(opts: citybrain::service::ServiceOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = runtime.block_on(citybrain::service::serve(opts))?;
    eprintln!(
        "citybrain: {} messages, {} accepted, {} dead-lettered; {} points written; {} alert transitions",
        report.messages, report.accepted, report.rejected, report.points, report.alert_transitions
    );
    Ok(())
}

fn seconds(d: Option<f64>) -> Result<Option<std::time::Duration>> {
    d.map(|s| {
        std::time::Duration::try_from_secs_f64(s)
            .map_err(|_| anyhow::anyhow!("--duration must be a positive number of seconds"))
    })
    .transpose()
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo { http, mqtt_port, data_dir, duration, speed } => {
            if !(speed > 0.0 && speed.is_finite()) {
                anyhow::bail!("--speed must be a positive number");
            }
            let mut settings = Settings::load(None)?;
            settings.data_dir = data_dir.clone();
            settings.http.listen = http;
            settings.mqtt.port = mqtt_port;
            settings.mqtt.client_id = "citybrain-demo".into();
            let city_path = citybrain::demo::write_city(&data_dir)?;
            eprintln!("citybrain demo: city model in {}", city_path.display());
            serve(citybrain::service::ServiceOptions {
                settings,
                city_path,
                duration: seconds(duration)?,
                demo: Some(citybrain::service::DemoOptions { speed }),
            })
        }
        Command::Token { role, officer, name } => {
            use citybrain::auth::Role;
            if (role == Role::Officer) != officer.is_some() {
                anyhow::bail!("--officer ID is required for role officer, and only allowed there");
            }
            let token = citybrain::auth::generate();
            println!("token: {token}\n");
            println!("[[auth.tokens]]");
            if let Some(n) = name {
                println!("name = {n:?}");
            }
            println!("role = \"{}\"", role.as_str());
            if let Some(o) = officer {
                println!("officer = {o:?}");
            }
            println!("sha256 = \"{}\"", citybrain::auth::hash(&token));
            Ok(())
        }
        Command::Run { config, duration } => {
            let settings = Settings::load(Some(&config))?;
            if settings.ephemeral_key {
                tracing::warn!(
                    "no pseudonym key configured (`privacy.pseudonym_key` or CITYBRAIN_PSEUDONYM_KEY): using a random key"
                );
            }
            let city_path = settings.city.clone().ok_or_else(|| {
                anyhow::anyhow!("config {}: key `city` (the city model file) is required", config.display())
            })?;
            serve(citybrain::service::ServiceOptions {
                settings,
                city_path,
                duration: seconds(duration)?,
                demo: None,
            })
        }
        Command::Replay {
            city,
            input,
            out_lp,
            alerts_out,
            dead_letter_out,
            config,
            workers,
            parsers,
            quiet,
            batch_kib,
        } => {
            let settings = Settings::load(config.as_deref())?;
            if settings.ephemeral_key {
                tracing::warn!(
                    "no pseudonym key configured: using a random key for this run; pseudonyms will not match other runs"
                );
            }
            let opts = ReplayOptions {
                city,
                input,
                out_lp,
                alerts_out,
                dead_letter_out,
                workers,
                parsers,
                progress: !quiet,
                block_bytes: (batch_kib.max(1) * 1024) as usize,
            };
            let summary = replay(&opts, &settings)?;
            eprintln!("{}", summary.render());
            Ok(())
        }
    }
}
