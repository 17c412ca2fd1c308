//! `cargo bench --bench replay` — the standard replay benchmark of issue 2.
//!
//! Generates the standard workload with `../shared/bench/workload.py` (2,000,000 detector
//! readings, 10,000 detectors, 100 minutes; set `CITYBRAIN_BENCH_N` for another size) into
//! `target/bench-data/`, then runs the release `citybrain replay` with its default
//! configuration (1 dataflow worker, a parser per core; all traffic outputs, line protocol and
//! alerts written) several times and prints wall time including start-up, readings per second
//! and peak RSS, against the targets (≥ 1,000,000 readings/s, ≤ 300 MB). It also checks that
//! 2 workers write identical bytes. It prints figures; it does not fail on a slow machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let n: u64 = std::env::var("CITYBRAIN_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let runs: usize = std::env::var("CITYBRAIN_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let data = root.join("target/bench-data").join(n.to_string());
    let feed = data.join("feed.jsonl");
    if !feed.exists() {
        let script = root.join("../shared/bench/workload.py");
        eprintln!("bench: generating the standard workload ({n} readings) with {} …", script.display());
        let ok =
            Command::new("python3").arg(&script).arg(n.to_string()).arg(&data).status().map(|s| s.success());
        if !matches!(ok, Ok(true)) {
            eprintln!("bench: cannot generate the workload (needs python3 and {})", script.display());
            std::process::exit(1);
        }
    }
    let exe = env!("CARGO_BIN_EXE_citybrain");
    let run = |workers: Option<usize>, out: &Path| -> (f64, Option<f64>, String) {
        let started = Instant::now();
        let mut cmd = Command::new(exe);
        cmd.args(["replay", "--quiet"]);
        if let Some(w) = workers {
            cmd.args(["--workers", &w.to_string()]);
        }
        let output = cmd
            .arg("--city")
            .arg(data.join("city.geojson"))
            .arg("--input")
            .arg(&feed)
            .arg("--out-lp")
            .arg(out)
            .arg("--alerts-out")
            .arg(out.with_extension("alerts.jsonl"))
            .env("RUST_LOG", "error")
            .output()
            .expect("run citybrain replay");
        let secs = started.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "replay failed: {stderr}");
        let rss = stderr
            .split("peak RSS ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok());
        (secs, rss, stderr)
    };

    println!(
        "citybrain replay benchmark: {n} readings, {} cores",
        std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1)
    );
    let mut best = f64::MAX;
    let mut worst_rss: f64 = 0.0;
    let out2 = data.join("out-default.lp");
    for i in 0..runs {
        let (secs, rss, stderr) = run(None, &out2);
        best = best.min(secs);
        worst_rss = worst_rss.max(rss.unwrap_or(0.0));
        println!(
            "  run {}: {secs:.2} s wall, {:.2} M readings/s, peak RSS {} MB",
            i + 1,
            n as f64 / secs / 1e6,
            rss.map(|r| format!("{r:.0}")).unwrap_or("?".into())
        );
        if i == 0 {
            for line in stderr.lines().filter(|l| l.starts_with("replay:")) {
                println!("    {line}");
            }
        }
    }
    let rate = n as f64 / best / 1e6;
    println!(
        "best: {best:.2} s = {rate:.2} M readings/s (target ≥ 1.00: {}); peak RSS {worst_rss:.0} MB (target ≤ 300: {})",
        if rate >= 1.0 { "met" } else { "NOT met" },
        if worst_rss <= 300.0 { "met" } else { "NOT met" }
    );
    let out1 = data.join("out-2workers.lp");
    let (secs1, rss1, _) = run(Some(2), &out1);
    let same = std::fs::read(&out1).ok() == std::fs::read(&out2).ok();
    println!(
        "2 workers: {secs1:.2} s, {:.2} M readings/s, peak RSS {} MB; output identical to the default (1 worker): {same}",
        n as f64 / secs1 / 1e6,
        rss1.map(|r| format!("{r:.0}")).unwrap_or("?".into())
    );
}
