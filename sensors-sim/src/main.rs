//! The `citybrain-sim` command line: `city` generates a city model, `run` simulates its loop
//! detectors into a recording. Progress and summaries go to stderr.

use anyhow::{Context, Result};
use citybrain_dataflows::CityModel;
use citybrain_dataflows::time::{Ms, format_ms};
use citybrain_sim::city::CityOptions;
use citybrain_sim::feed::{
    DEFAULT_DURATION_MIN, DEFAULT_INTERVAL_S, DEFAULT_SEED, DEFAULT_START, DEFAULT_TOPIC_PREFIX,
};
use citybrain_sim::{
    FeedOptions, IncidentSpec, Recording, Simulator, generate_city, geojson_text, parse_start,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const DEFAULT_CITY: CityOptions = CityOptions::DEFAULT;

const EXAMPLES: &str = "Examples:
  citybrain-sim city --out city.geojson
  citybrain-sim run --city city.geojson --out feed.jsonl.gz --duration-min 120 \\
      --incident seg-h3e-2:1:10:20";

/// citybrain's sensor simulator: synthetic city models and detector recordings, deterministic
/// for a seed.
#[derive(Parser)]
#[command(name = "citybrain-sim", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a city model (GeoJSON)
    ///
    /// One FeatureCollection (WGS84) of districts, grid cells with their officers, directed road
    /// segments, loop detectors (one per lane, near each segment's downstream end) and fire, EMS
    /// and police stations. The same seed and options always give the same file.
    City(CityArgs),
    /// Simulate the loop detectors of a city model into a recording
    ///
    /// Every detector reports every interval. The recording is JSON Lines,
    /// `{"topic": "city/traffic/detector/{id}", "payload": {…}}` in arrival order (interval start
    /// plus a delivery delay under 2 s), gzip-compressed when the output ends in .gz. The same
    /// seed, city and options always give a byte-identical file.
    Run(RunArgs),
}

#[derive(Args)]
struct CityArgs {
    /// Where to write the GeoJSON.
    #[arg(long, value_name = "CITY.geojson")]
    out: PathBuf,
    /// Random seed: the same seed and options always give the same file.
    #[arg(long, default_value_t = DEFAULT_CITY.seed)]
    seed: u64,
    /// Districts from west to east.
    #[arg(long, default_value_t = DEFAULT_CITY.districts_x)]
    districts_x: u32,
    /// Districts from south to north.
    #[arg(long, default_value_t = DEFAULT_CITY.districts_y)]
    districts_y: u32,
    /// Grid cells along each side of a district (one east–west and one north–south road per row
    /// and column of cells).
    #[arg(long, default_value_t = DEFAULT_CITY.cells_per_district_side)]
    cells_per_district_side: u32,
    /// Side of a square grid cell, metres (200–5000).
    #[arg(long, default_value_t = DEFAULT_CITY.cell_size_m)]
    cell_size_m: f64,
    /// Longitude of the city centre (WGS84).
    #[arg(long, default_value_t = DEFAULT_CITY.center_lon, allow_negative_numbers = true)]
    center_lon: f64,
    /// Latitude of the city centre (WGS84).
    #[arg(long, default_value_t = DEFAULT_CITY.center_lat, allow_negative_numbers = true)]
    center_lat: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Args)]
struct RunArgs {
    /// The city model (GeoJSON, e.g. from `citybrain-sim city`).
    #[arg(long, value_name = "CITY.geojson")]
    city: PathBuf,
    /// Where to write the recording; gzip-compressed when it ends in .gz.
    #[arg(long, value_name = "FEED.jsonl[.gz]")]
    out: PathBuf,
    /// Random seed: the same seed, city and options always give a byte-identical recording.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Start of the run: RFC 3339 or epoch milliseconds (rounded down to a multiple of the
    /// interval). Times of day are read in the city time zone, Asia/Shanghai (UTC+8).
    #[arg(long, value_parser = parse_start, default_value = DEFAULT_START, value_name = "RFC3339|EPOCH_MS")]
    start: Ms,
    /// Length of the run, simulated minutes.
    #[arg(long, default_value_t = DEFAULT_DURATION_MIN, value_name = "M")]
    duration_min: u32,
    /// Reporting interval of every detector, seconds (2–3600).
    #[arg(long, default_value_t = DEFAULT_INTERVAL_S, value_name = "S")]
    interval_s: u32,
    /// Block one lane: SEGMENT:LANE:START_MIN:DURATION_MIN, minutes from the start of the run
    /// (e.g. seg-h3e-2:1:10:20). That lane's detector reads occupancy ≈ 1 and no vehicles, the
    /// other lanes keep flowing, the downstream segments get less traffic. Repeatable.
    #[arg(long = "incident", value_name = "SEG:LANE:START_MIN:DURATION_MIN")]
    incidents: Vec<IncidentSpec>,
    /// Morning (≈08:00) and evening (≈17:30) rush hours, or a flat daytime profile.
    #[arg(long, value_enum, default_value = "on")]
    rush_hours: OnOff,
    /// Topic prefix, as configured in citybrain.
    #[arg(long, default_value = DEFAULT_TOPIC_PREFIX)]
    topic_prefix: String,
}

fn city(a: CityArgs) -> Result<()> {
    let opts = CityOptions {
        seed: a.seed,
        districts_x: a.districts_x,
        districts_y: a.districts_y,
        cells_per_district_side: a.cells_per_district_side,
        cell_size_m: a.cell_size_m,
        center_lon: a.center_lon,
        center_lat: a.center_lat,
    };
    let geojson = generate_city(&opts).context("invalid city options")?;
    let text = geojson_text(&geojson);
    // Loading it back proves the file is a valid city model, and gives the summary.
    let model = CityModel::from_geojson_str(&text).context("the generated city does not load (a bug)")?;
    std::fs::write(&a.out, text).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "citybrain-sim: wrote {} — {} districts, {} cells, {} segments, {} detectors, {} stations",
        a.out.display(),
        model.districts.len(),
        model.cells.len(),
        model.segments.len(),
        model.detectors.len(),
        model.stations.len()
    );
    Ok(())
}

fn run(a: RunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.city)
        .with_context(|| format!("reading city model {}", a.city.display()))?;
    let model = CityModel::from_geojson_str(&text)
        .with_context(|| format!("loading city model {}", a.city.display()))?;
    let opts = FeedOptions {
        seed: a.seed,
        start_ms: a.start,
        duration_min: a.duration_min,
        interval_s: a.interval_s,
        incidents: a.incidents,
        rush_hours: matches!(a.rush_hours, OnOff::On),
        topic_prefix: a.topic_prefix,
    };
    let sim = Simulator::new(&model, &opts).context("invalid run options")?;
    let (start, total) = (sim.start_ms(), sim.interval_count());
    eprintln!(
        "citybrain-sim: {} detectors every {} s for {} min from {} → {}",
        model.detectors.len(),
        opts.interval_s,
        opts.duration_min,
        format_ms(start),
        a.out.display()
    );
    let long_run = total * model.detectors.len() as u64 >= 100_000;
    let mut rec = Recording::create(&a.out)?;
    for (i, batch) in (1..).zip(sim) {
        let batch = batch?;
        for line in &batch.lines {
            rec.write_line(line)?;
        }
        // Progress at every tenth of a long run (about 100 000 readings or more).
        if long_run && i * 10 / total > (i - 1) * 10 / total {
            eprintln!(
                "citybrain-sim: {:3}% simulated up to {} ({} readings)",
                i * 100 / total,
                format_ms(batch.ts),
                rec.lines()
            );
        }
    }
    let lines = rec.finish()?;
    eprintln!("citybrain-sim: wrote {lines} readings to {}", a.out.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::City(a) => city(a),
        Command::Run(a) => run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain of causes on one line, without a backtrace.
            eprintln!("citybrain-sim: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
