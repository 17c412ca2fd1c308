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
        /// Worker threads for parsing and the dataflow.
        #[arg(long, default_value_t = default_workers(), value_name = "N")]
        workers: usize,
        /// No progress lines on stderr.
        #[arg(long)]
        quiet: bool,
        /// Input read per batch, KiB. The replay's watermark advances once per 8 batches, so
        /// smaller batches follow arrival order more closely and larger ones run faster.
        #[arg(long, default_value_t = (citybrain::replay::BLOCK_BYTES / 1024) as u64, value_name = "KIB")]
        batch_kib: u64,
    },
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay {
            city,
            input,
            out_lp,
            alerts_out,
            dead_letter_out,
            config,
            workers,
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
                progress: !quiet,
                block_bytes: (batch_kib.max(1) * 1024) as usize,
            };
            let summary = replay(&opts, &settings)?;
            eprintln!("{}", summary.render());
            Ok(())
        }
    }
}
