//! `cargo bench --bench incidents` — `traffic.incident` against independent truth.
//!
//! Replays every SUMO fixture of `tests/fixtures/sumo/` (written by
//! `scripts/sumo/generate.py`: signalised grids and a spider net, an unsignalised random net,
//! rush-hour demand, cars stalled over a lane's loop for 8–15 minutes, and runs without any
//! stall) through `citybrain::replay::replay` — the same dataflows as `run` — with the default
//! configuration, and prints per stall the detection delay (raise − stall start) and the clear
//! delay (clear − stall end), then the other incidents per run and per simulated hour, and the
//! targets: every stall of ≥ 8 minutes detected within 5 minutes and cleared within 5 minutes,
//! at most one incident per two simulated rush hours on the runs without a stall. The figures
//! are event time, so they do not depend on the machine; `tests/incidents.rs` asserts them.
//! It also checks that 2 dataflow workers raise exactly the same alerts as 1.

#[path = "../tests/incidents/eval.rs"]
mod eval;

use std::time::Instant;

fn main() {
    let dir = std::env::temp_dir().join(format!("citybrain-bench-incidents-{}", std::process::id()));
    let started = Instant::now();
    let runs: Vec<eval::Scored> = eval::scenarios().iter().map(|n| eval::score(n, 1, &dir)).collect();
    let secs = started.elapsed().as_secs_f64();
    let two: Vec<eval::Scored> = eval::scenarios().iter().map(|n| eval::score(n, 2, &dir)).collect();
    let same_on_two = runs.iter().zip(&two).all(|(a, b)| a.alerts == b.alerts);

    println!("traffic.incident on the SUMO fixtures ({} runs replayed in {secs:.1} s)\n", runs.len());
    print!("{}", eval::table(&runs));
    for r in &runs {
        for (seg, lane, at, explained) in &r.others {
            let why = if *explained { "SUMO reports a car standing 300 s there" } else { "unexplained" };
            println!("  other incident: {} {seg}/{lane} raised at min {at:.1} ({why})", r.name);
        }
    }
    let all: Vec<&eval::Stall> = runs.iter().flat_map(|r| &r.stalls).collect();
    let det: Vec<f64> = all.iter().filter_map(|s| s.detect_min).collect();
    let clr: Vec<f64> = all.iter().filter_map(|s| s.clear_min).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max = |v: &[f64]| v.iter().cloned().fold(f64::NAN, f64::max);
    let (detected, cleared, alarms, bound) = eval::targets(&runs);
    let quiet_h: f64 = runs.iter().filter(|r| r.stalls.is_empty()).map(|r| r.hours).sum();
    println!(
        "\nstalls: {} of {} detected, delay mean {:.2} min, max {:.2} min; cleared after end: mean {:.2} min, max {:.2} min",
        det.len(),
        all.len(),
        mean(&det),
        max(&det),
        mean(&clr),
        max(&clr)
    );
    println!(
        "no-incident runs: {alarms} incidents in {quiet_h:.1} simulated hours ({:.2} per hour; {bound} allowed for {} rush hours)",
        alarms as f64 / quiet_h,
        bound * 2.0
    );
    let ok = |b: bool| if b { "met" } else { "NOT MET" };
    println!("target detection ≤ 5 min for every stall ≥ 8 min: {}", ok(detected));
    println!("target clear ≤ 5 min after the end: {}", ok(cleared));
    println!("target ≤ 1 incident per 2 rush hours without stalls: {}", ok(alarms as f64 <= bound));
    println!("2 workers raise the same alerts as 1: {}", if same_on_two { "yes" } else { "NO" });
    let _ = std::fs::remove_dir_all(&dir);
}
