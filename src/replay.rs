//! `citybrain replay`: a recording through the same dataflows as the live service, as fast as
//! possible, event time taken from the records.
//!
//! # Shape
//! ```text
//! reader thread ──blocks──▶ worker 0: parse, decode, ingest ─┐            ┌─▶ writer thread:
//!  (gzip, split at   ──▶   worker 1: parse, decode, ingest ──┼─ dataflow ─┤   line protocol,
//!   line ends)        …                                      ┘ (timely)   │   alert transitions
//!                                                                         └─ dead letters
//! ```
//! The input is cut into blocks of about 1 MiB at line ends, and blocks into *rounds* of
//! [`BLOCKS_PER_ROUND`]. Both cuts depend only on the file, never on the worker count. In a round
//! every worker parses its share of the blocks against the watermark of the end of the previous
//! round; the workers then agree on the largest event time seen (a barrier), and every input
//! advances to the new watermark. So every record meets the same watermark and lands at the same
//! timely time on 1 or N workers, and the output — delivered per completed event time, sorted —
//! is byte-identical.
//!
//! At end of input the clock advances to the end of the last 5-minute window holding data:
//! every window closes and every timer due by then fires; nothing later is written, so alerts
//! still active stay active.

use crate::alerts::{AlertBook, AlertState};
use crate::config::Settings;
use crate::runtime::{RoundControl, SharedClock, WorkerRounds};
use anyhow::{Context, Result};
use citybrain_dataflows::event::{Decoder, Reason, TopicKind};
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::time::{Ms, window_end};
use citybrain_dataflows::traffic::Win;
use citybrain_dataflows::{CityModel, Config, lp};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes per input block (cut at the next line end).
pub const BLOCK_BYTES: usize = 1 << 20;
/// Blocks per round: the granularity at which the replay watermark advances (~8 MiB of input).
pub const BLOCKS_PER_ROUND: usize = 8;

/// What to replay, and where to write.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// City model (GeoJSON).
    pub city: PathBuf,
    /// Recording (JSON Lines, optionally gzip).
    pub input: PathBuf,
    /// Line-protocol output file.
    pub out_lp: PathBuf,
    /// Alert transitions output (JSON Lines).
    pub alerts_out: Option<PathBuf>,
    /// Dead-letter output (JSON Lines).
    pub dead_letter_out: Option<PathBuf>,
    /// Timely worker threads.
    pub workers: usize,
    /// Print a progress line to stderr every few seconds.
    pub progress: bool,
    /// Bytes per input block ([`BLOCK_BYTES`] by default); the watermark advances once per
    /// [`BLOCKS_PER_ROUND`] blocks.
    pub block_bytes: usize,
}

/// Counts of a finished replay.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReplaySummary {
    /// Lines read (blank lines included).
    pub lines: u64,
    /// Accepted elements by topic family.
    pub accepted: BTreeMap<String, u64>,
    /// Rejected elements by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Line-protocol points written.
    pub points: u64,
    /// Alerts raised.
    pub alerts_raised: u64,
    /// Alerts cleared.
    pub alerts_cleared: u64,
    /// Alerts still active at the end.
    pub alerts_active: u64,
    /// The most window sums live in the dataflow at once (summed over workers): the logical
    /// size of the windowed state, bounded by the retention whatever the length of the input.
    pub max_live_windows: u64,
    /// Peak resident memory of the process, MB (Linux; `None` elsewhere).
    pub peak_rss_mb: Option<f64>,
    /// Event time the clock ended at (epoch ms), if there was any input.
    pub end_ts: Option<Ms>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl ReplaySummary {
    /// Accepted detector readings.
    pub fn readings(&self) -> u64 {
        self.accepted.get("traffic/detector").copied().unwrap_or(0)
    }

    /// The human summary printed to stderr.
    pub fn render(&self) -> String {
        let rejected: u64 = self.rejected.values().sum();
        let mut s = format!(
            "replay: {} lines in {:.2} s ({:.0} lines/s); {} readings accepted; {} rejected",
            self.lines,
            self.seconds,
            self.lines as f64 / self.seconds.max(1e-9),
            self.readings(),
            rejected
        );
        if rejected > 0 {
            let parts: Vec<String> = self.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
            s += &format!(" ({})", parts.join(", "));
        }
        let others: Vec<String> = self
            .accepted
            .iter()
            .filter(|(k, _)| k.as_str() != "traffic/detector")
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if !others.is_empty() {
            s += &format!("; other records accepted: {}", others.join(", "));
        }
        s += &format!(
            "\nreplay: {} points written; alerts raised {}, cleared {}, still active {}",
            self.points, self.alerts_raised, self.alerts_cleared, self.alerts_active
        );
        if let Some(t) = self.end_ts {
            s += &format!("; clock ended at {}", citybrain_dataflows::time::format_ms(t));
        }
        s += &format!("\nreplay: at most {} window sums live", self.max_live_windows);
        if let Some(mb) = self.peak_rss_mb {
            s += &format!("; peak RSS {mb:.0} MB");
        }
        s
    }
}

/// Peak resident set size of this process in MB, from `/proc/self/status` (Linux only).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// One block of input lines.
struct Block {
    first_line: u64,
    data: Vec<u8>,
}

/// A rejected line or element, as written to `--dead-letter-out`.
#[derive(Debug, Serialize)]
struct DeadLetter<'a> {
    line: u64,
    topic: Option<&'a str>,
    reason: &'static str,
    detail: String,
}

/// Per-worker counters, summed at the end.
#[derive(Default)]
struct WorkerStats {
    lines: u64,
    accepted: [u64; TopicKind::ALL.len()],
    rejected: BTreeMap<Reason, u64>,
    /// The most window sums held live at once (see `Ingest::live_windows`).
    max_live_windows: u64,
}

struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a recording, transparently decompressing gzip (detected by its magic bytes).
pub fn open_recording(path: &Path, counter: Arc<AtomicU64>) -> Result<Box<dyn Read + Send>> {
    let mut f = File::open(path).with_context(|| format!("cannot open input {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).with_context(|| format!("cannot read input {}", path.display()))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let raw = CountingReader { inner: head.chain(f), count: counter };
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 16, raw))))
    } else {
        Ok(Box::new(raw))
    }
}

/// Reads `input` into blocks, deals them to workers round by round. Returns lines read.
fn read_blocks(
    mut input: Box<dyn Read + Send>,
    senders: Vec<SyncSender<Vec<Block>>>,
    block_bytes: usize,
) -> Result<u64> {
    let workers = senders.len();
    let mut carry: Vec<u8> = Vec::new();
    let mut index = 0u64;
    let mut line = 1u64;
    let mut eof = false;
    while !eof {
        let mut round: Vec<Vec<Block>> = (0..workers).map(|_| Vec::new()).collect();
        for _ in 0..BLOCKS_PER_ROUND {
            let mut buf = std::mem::take(&mut carry);
            buf.reserve(block_bytes + (64 << 10));
            // Fill the block; a line longer than a block makes it grow until a line end.
            loop {
                let old = buf.len();
                let want = if old < block_bytes { block_bytes - old } else { 64 << 10 };
                let n = (&mut input).take(want as u64).read_to_end(&mut buf).context("cannot read input")?;
                if n == 0 {
                    eof = true;
                    break;
                }
                if buf.len() >= block_bytes && buf[old..].contains(&b'\n') {
                    break;
                }
            }
            if !eof {
                let cut = buf.iter().rposition(|&b| b == b'\n').map(|p| p + 1).unwrap_or(buf.len());
                carry = buf.split_off(cut);
            }
            if buf.is_empty() {
                break;
            }
            let lines =
                memchr::memchr_iter(b'\n', &buf).count() as u64 + u64::from(buf.last() != Some(&b'\n'));
            let block = Block { first_line: line, data: buf };
            round[(index % workers as u64) as usize].push(block);
            index += 1;
            line += lines;
            if eof {
                break;
            }
        }
        for (w, blocks) in round.into_iter().enumerate() {
            if senders[w].send(blocks).is_err() {
                anyhow::bail!("a worker stopped early");
            }
        }
    }
    Ok(line - 1)
}

/// Messages from the dataflow and the workers to the writer thread.
enum ToWriter {
    /// A completed event time's output.
    Batch(Ms, Vec<(Out, isize)>),
    /// A round's dead letters from one worker (sent every round, possibly empty).
    DeadLetters(u64, Vec<(u64, String)>),
}

struct WriterTotals {
    points: u64,
    raised: u64,
    cleared: u64,
    active: u64,
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(BufWriter::with_capacity(1 << 20, f))
}

fn write_outputs(
    rx: Receiver<ToWriter>,
    opts: &ReplayOptions,
    city: &CityModel,
    cfg: &Config,
) -> Result<WriterTotals> {
    let mut lp_out = create(&opts.out_lp)?;
    let mut alerts_out = opts.alerts_out.as_deref().map(create).transpose()?;
    let mut dl_out = opts.dead_letter_out.as_deref().map(create).transpose()?;
    let mut book = AlertBook::default();
    let mut totals = WriterTotals { points: 0, raised: 0, cleared: 0, active: 0 };
    let mut buf = String::with_capacity(1 << 16);
    let workers = opts.workers.max(1);
    let mut dl_rounds: BTreeMap<u64, (usize, Vec<(u64, String)>)> = BTreeMap::new();
    for msg in rx {
        match msg {
            ToWriter::Batch(t, mut records) => {
                let (points, transitions) = book.render(t, &mut records, city, cfg, &mut buf);
                totals.points += points + transitions.len() as u64;
                for alert in transitions {
                    lp::alert_line(&alert, t, &mut buf);
                    if alert.state == AlertState::Raised {
                        totals.raised += 1;
                    } else {
                        totals.cleared += 1;
                    }
                    if let Some(w) = alerts_out.as_mut() {
                        serde_json::to_writer(&mut *w, &alert)?;
                        w.write_all(b"\n")?;
                    }
                }
                if buf.len() > 1 << 16 {
                    lp_out.write_all(buf.as_bytes())?;
                    buf.clear();
                }
            }
            ToWriter::DeadLetters(round, lines) => {
                // Merge the workers' shares of a round by line number once all have reported.
                let entry = dl_rounds.entry(round).or_insert((0, Vec::new()));
                entry.0 += 1;
                entry.1.extend(lines);
                while let Some(first) = dl_rounds.first_entry().filter(|e| e.get().0 == workers) {
                    let (_, mut lines) = first.remove();
                    lines.sort_unstable_by_key(|(line, _)| *line);
                    if let Some(w) = dl_out.as_mut() {
                        for (_, json) in lines {
                            w.write_all(json.as_bytes())?;
                            w.write_all(b"\n")?;
                        }
                    }
                }
            }
        }
    }
    lp_out.write_all(buf.as_bytes())?;
    lp_out.flush().with_context(|| format!("cannot write {}", opts.out_lp.display()))?;
    if let Some(mut w) = alerts_out {
        w.flush()?;
    }
    if let Some(mut w) = dl_out {
        w.flush()?;
    }
    totals.active = book.active() as u64;
    Ok(totals)
}

/// Runs a replay to completion.
pub fn replay(opts: &ReplayOptions, settings: &Settings) -> Result<ReplaySummary> {
    let started = Instant::now();
    let city_text = std::fs::read_to_string(&opts.city)
        .with_context(|| format!("cannot read city model {}", opts.city.display()))?;
    let city = Arc::new(CityModel::from_geojson_str(&city_text)?);
    drop(city_text);
    let cfg = Arc::new(settings.dataflow.clone());
    let workers = opts.workers.max(1);
    let input_size = std::fs::metadata(&opts.input).map(|m| m.len()).unwrap_or(0);
    let read_bytes = Arc::new(AtomicU64::new(0));
    let input = open_recording(&opts.input, read_bytes.clone())?;
    let block_bytes = opts.block_bytes.max(1);

    // Reader → workers.
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..workers {
        let (tx, rx) = sync_channel::<Vec<Block>>(2);
        senders.push(tx);
        receivers.push(Some(rx));
    }
    let receivers = Arc::new(Mutex::new(receivers));
    let reader = std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || read_blocks(input, senders, block_bytes))?;

    // Dataflow → writer.
    let (to_writer, from_workers) = sync_channel::<ToWriter>(64);
    let writer = {
        let (opts, city, cfg) = (opts.clone(), city.clone(), cfg.clone());
        std::thread::Builder::new()
            .name("replay-writer".into())
            .spawn(move || write_outputs(from_workers, &opts, &city, &cfg))?
    };

    // Progress.
    let done = Arc::new(AtomicU64::new(0));
    let progress = opts.progress.then(|| {
        let (done, read_bytes) = (done.clone(), read_bytes.clone());
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while done.load(Ordering::Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= Duration::from_secs(2) {
                    last = Instant::now();
                    let b = read_bytes.load(Ordering::Relaxed);
                    let pct = if input_size > 0 { b as f64 * 100.0 / input_size as f64 } else { 0.0 };
                    eprintln!(
                        "replay: {:.0} of {:.0} MB read ({pct:.0}%), {:.1} s",
                        b as f64 / 1e6,
                        input_size as f64 / 1e6,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        })
    });

    // The clock the workers agree on each round, and the last event time to write.
    let clock = SharedClock::new(workers, cfg.time.lateness_ms());
    let cutoff = Arc::new(AtomicU64::new(u64::MAX));
    let decoder =
        Decoder::new(settings.topic_prefix.clone(), Pseudonymizer::new(settings.pseudonym_key.clone()));
    let to_writer = Mutex::new(to_writer);

    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let rx = receivers.lock().ok().and_then(|mut r| r[index].take());
        let tx = to_writer.lock().map(|t| t.clone()).ok();
        let mut stats = WorkerStats::default();
        let (deliver_tx, deliver_cutoff) = (tx.clone(), cutoff.clone());
        let mut rounds =
            WorkerRounds::new(worker, city.clone(), cfg.clone(), clock.clone(), move |t, records| {
                // Replay has no timers outside the dataflow: progress markers (empty) are skipped.
                if t <= deliver_cutoff.load(Ordering::Acquire)
                    && !records.is_empty()
                    && let Some(tx) = deliver_tx.as_ref()
                {
                    let _ = tx.send(ToWriter::Batch(t, records));
                }
            });
        let mut dead: Vec<(u64, String)> = Vec::new();
        let mut round = 0u64;
        while let Some(blocks) = rx.as_ref().and_then(|rx| rx.recv().ok()) {
            for block in &blocks {
                process_block(block, &decoder, &mut rounds, &mut stats, &mut dead);
            }
            if let Some(tx) = tx.as_ref() {
                let _ = tx.send(ToWriter::DeadLetters(round, std::mem::take(&mut dead)));
            }
            round += 1;
            rounds.end_round(worker, RoundControl::default());
            stats.max_live_windows = stats.max_live_windows.max(rounds.ingest.live_windows() as u64);
        }
        // End of input: close every window and fire every timer due by the end of the last
        // 5-minute window holding data; write nothing later.
        let global = clock.max_ts();
        let end = if global > 0 { window_end(global, Win::M5.ms()).max(rounds.now()) } else { rounds.now() };
        cutoff.store(end, Ordering::Release);
        rounds.finish(worker, end);
        drop(rounds);
        (stats, (global > 0).then_some(end))
    })
    .map_err(|e| anyhow::anyhow!("cannot start workers: {e}"))?;

    let mut summary = ReplaySummary::default();
    for result in guards.join() {
        let (stats, end) = result.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?;
        summary.lines += stats.lines;
        for (k, n) in TopicKind::ALL.iter().zip(stats.accepted) {
            if n > 0 {
                *summary.accepted.entry(k.path().to_string()).or_default() += n;
            }
        }
        summary.max_live_windows += stats.max_live_windows;
        for (r, n) in stats.rejected {
            *summary.rejected.entry(r.as_str().to_string()).or_default() += n;
        }
        summary.end_ts = summary.end_ts.max(end);
    }
    let lines_read = reader.join().map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    debug_assert!(lines_read >= summary.lines);
    let totals = writer.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    done.store(1, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.join();
    }
    summary.points = totals.points;
    summary.alerts_raised = totals.raised;
    summary.alerts_cleared = totals.cleared;
    summary.alerts_active = totals.active;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.peak_rss_mb = peak_rss_mb();
    Ok(summary)
}

/// Parses, decodes and ingests one block; rejected lines become dead letters.
fn process_block(
    block: &Block,
    decoder: &Decoder,
    rounds: &mut WorkerRounds,
    stats: &mut WorkerStats,
    dead: &mut Vec<(u64, String)>,
) {
    for (this, line) in (block.first_line..).zip(block.data.split(|&b| b == b'\n')) {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue; // blank lines (and the piece after a final newline) are not records
        }
        stats.lines += 1;
        let mut reject = |topic: Option<&str>, reason: Reason, detail: String| {
            let seen = stats.rejected.entry(reason).or_default();
            if *seen == 0 {
                // Logged once per reason (per worker); every case is in the dead letters.
                tracing::warn!(line = this, topic, reason = reason.as_str(), %detail, "rejected input (first of its kind)");
            }
            *seen += 1;
            let dl = DeadLetter { line: this, topic, reason: reason.as_str(), detail };
            dead.push((this, serde_json::to_string(&dl).unwrap_or_default()));
        };
        let Ok(line) = std::str::from_utf8(line) else {
            reject(None, Reason::MalformedJson, "line is not UTF-8".into());
            continue;
        };
        decoder.decode_line(line, |topic, res| {
            let res = res.and_then(|ev| {
                rounds.saw(ev.ts().0);
                rounds.ingest.offer(&ev).map(|()| ev.kind())
            });
            match res {
                Ok(kind) => stats.accepted[kind as usize] += 1,
                Err(rej) => reject(topic, rej.reason, rej.detail),
            }
        });
    }
}
