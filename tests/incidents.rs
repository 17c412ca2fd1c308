//! `traffic.incident` against independent truth: every SUMO fixture of `tests/fixtures/sumo/`
//! (written by `scripts/sumo/generate.py`; CI needs no SUMO) replayed through `citybrain
//! replay`, scored against the stalls the generator planted (see `incidents/eval.rs`).
//!
//! The figures are event-time (deterministic), so the targets are asserted here: every stall
//! of ≥ 8 minutes detected within 5 minutes of its start and cleared within 5 minutes of its
//! end, and at most one incident per two simulated rush hours across the runs without a stall.
//! `cargo bench --bench incidents` prints the same table in release.

#[path = "incidents/eval.rs"]
mod eval;

#[test]
fn sumo_runs_meet_the_incident_targets() {
    let dir = std::env::temp_dir().join(format!("citybrain-incidents-{}", std::process::id()));
    let runs: Vec<eval::Scored> = eval::scenarios().iter().map(|n| eval::score(n, 1, &dir)).collect();
    assert!(runs.iter().filter(|r| r.stalls.is_empty()).count() >= 2, "no-incident runs");
    assert!(runs.iter().map(|r| r.stalls.len()).sum::<usize>() >= 8, "stalls");
    let table = eval::table(&runs);
    println!("{table}");
    let (detected, cleared, alarms, bound) = eval::targets(&runs);
    assert!(detected, "a stall of ≥ 8 min was not detected within 5 min:\n{table}");
    assert!(cleared, "a stall's incident was not cleared within 5 min of its end:\n{table}");
    assert!(bound >= 2.0, "at least 2 simulated rush hours without incident");
    assert!(alarms as f64 <= bound, "{alarms} incidents on the no-incident runs (bound {bound}):\n{table}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_workers_raise_the_same_incidents() {
    let dir = std::env::temp_dir().join(format!("citybrain-incidents-w-{}", std::process::id()));
    let one = eval::score("grid2-stalls", 1, &dir);
    let two = eval::score("grid2-stalls", 2, &dir);
    assert!(one.alerts.contains("traffic.incident"));
    assert_eq!(one.alerts, two.alerts);
    let _ = std::fs::remove_dir_all(&dir);
}
