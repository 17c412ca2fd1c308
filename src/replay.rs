//! `citybrain replay`: a recording through the same dataflows as the live service, as fast as
//! possible, event time taken from the records.
//!
//! # Shape
//! ```text
//!                ┌─▶ parser 0 ─┐  readings by detector  ┌─▶ worker 0 ─┐            ┌─▶ writer thread:
//! reader thread ─┤   decode,   ├────────────────────────┤    ingest   ├─ dataflow ─┤   line protocol,
//!  (gzip, blocks)└─▶ parser 1 ─┘  (det mod workers)     └─▶ worker 1 ─┘  (timely)  │   alert transitions
//!                     check ids                                                    └─ dead letters
//! ```
//! The input is cut into blocks of about 1 MiB at line ends, and blocks into *rounds* of
//! [`BLOCKS_PER_ROUND`]. Both cuts depend only on the file, never on the worker count.
//!
//! * The reader deals each round's blocks round-robin to the **parsers** (one per core by
//!   default, independent of the worker count: parsing is the larger share of the work). A
//!   parser decodes its lines and checks each detector reading against the city model
//!   ([`CheckedReading::check`]) — the costly, stateless part of ingestion — and hands each
//!   worker the round's readings of the detectors it owns (detector index mod workers), so all
//!   readings of a detector meet on one worker and its windows reach the dataflow fully summed.
//!   Parsers run up to two rounds ahead of the workers, so parsing overlaps with the dataflow.
//! * A **worker** offers its readings of the round to its [`Ingest`](citybrain_dataflows::ingest::Ingest)
//!   (which decides `too_late` against the watermark of the end of the previous round), then the
//!   workers agree on the largest event time seen (a barrier) and every input advances to the
//!   new watermark. Readings carry their line number, and a detector's readings are applied in
//!   line order, so every record meets the same watermark, lands at the same timely time and
//!   updates the same state on 1 or N workers; the output — delivered per completed event time,
//!   sorted — is byte-identical.
//!
//! The clock is the city's (CONTRACT §1): only readings that passed validation move it, and one
//! source far ahead of every other one does not (`time::SourceClock`); its readings wait, and
//! those still more than `ingest.max_future_s` ahead at the end are dead-lettered `future_ts`
//! (after the other dead letters). A copy of a reading already accepted (same detector and `ts`,
//! same content) changes nothing and is counted as a duplicate; other content replaces it.
//!
//! At end of input every window holding data closes (the clock advances to the end of the
//! 5-minute window holding the last event time seen), but timers fire only up to that last
//! event time: a recording that simply ends reports no detector offline, and a run of windows
//! broken only because no more windows came clears nothing (`runtime::EndOfInput`). Alerts still
//! active stay active.

use crate::alerts::{AlertBook, AlertState};
use crate::config::Settings;
use crate::runtime::{EndOfInput, RoundControl, SharedClock, WorkerRounds};
use anyhow::{Context, Result};
use citybrain_dataflows::event::{Decoder, Event, Reason, Rejected, TopicKind};
use citybrain_dataflows::ingest::{CheckedReading, Held, Record};
use citybrain_dataflows::pipeline::Out;
use citybrain_dataflows::pseudonym::Pseudonymizer;
use citybrain_dataflows::time::Ms;
use citybrain_dataflows::{CityModel, Config, lp};
use serde::Serialize;
use std::borrow::Cow;
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
    /// Parser threads (decoding and id checks, ahead of the workers). The output does not
    /// depend on it.
    pub parsers: usize,
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
    /// Copies of readings already accepted, with the same content: they changed nothing.
    pub duplicates: u64,
    /// Copies of readings already accepted, with other content: they replaced the first.
    pub corrections: u64,
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
            s += &format!("; also accepted: {}", others.join(", "));
        }
        if self.duplicates > 0 || self.corrections > 0 {
            s += &format!("; {} duplicates ignored, {} corrections", self.duplicates, self.corrections);
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

/// Where a line is: its number in the file, and its bytes in a block of the round.
#[derive(Clone, Copy)]
struct LineRef {
    number: u64,
    /// The element of a batch line (0 for an object).
    element: u32,
    block: u32,
    start: u32,
    end: u32,
}

/// What a parser hands a worker for one line (or one element of a batch line).
enum Item {
    /// A detector reading, checked against the city model.
    Reading(LineRef, CheckedReading),
    /// A record of another domain, checked once by the parser.
    Record(LineRef, Record),
}

/// One parser's output for one worker and round.
struct Parsed {
    /// The parser's blocks of the round, which the items point into.
    blocks: Arc<Vec<Block>>,
    items: Vec<Item>,
}

/// A rejected line or element, as written to `--dead-letter-out`.
#[derive(Debug, Serialize)]
struct DeadLetter<'a> {
    line: u64,
    topic: Option<&'a str>,
    reason: &'static str,
    detail: String,
}

/// The topic of an input line as a dead letter or a log line may show it: the id of a
/// `health/case` or `health/trip` topic, which may be a person's clear id, replaced by its
/// pseudonym (see [`crate::deadletter::personal_topic`]); any other topic as it is.
fn input_topic<'t>(decoder: &Decoder, topic: Option<&'t str>) -> Option<Cow<'t, str>> {
    let topic = topic?;
    Some(match crate::deadletter::personal_topic(decoder.prefix(), topic, decoder.pseudonyms()) {
        Some(safe) => Cow::Owned(safe),
        None => Cow::Borrowed(topic),
    })
}

/// A dead letter's JSON, keyed by (line, element) for its place in the output.
type DeadLine = ((u64, u32), String);

/// Per-thread counters (parsers and workers), summed at the end.
#[derive(Default)]
struct Stats {
    lines: u64,
    accepted: [u64; TopicKind::ALL.len()],
    rejected: BTreeMap<Reason, u64>,
    /// The most window sums held live at once (see `Ingest::live_windows`).
    max_live_windows: u64,
    duplicates: u64,
    corrections: u64,
}

impl Stats {
    /// [`Stats::reject`] for a record handed back by the ingest after its line is gone: the
    /// topic is rebuilt from the entity it names (the contract's topic for it).
    fn reject_held(
        &mut self,
        dead: &mut Vec<DeadLine>,
        h: &Held,
        city: &CityModel,
        decoder: &Decoder,
        rej: Rejected,
    ) {
        let at = LineRef { number: h.seq, element: 0, block: 0, start: 0, end: 0 };
        let topic = format!("{}{}", decoder.prefix(), h.record.topic(city));
        self.reject(dead, &at, Some(&topic), rej);
    }

    /// Counts a rejection and appends its dead letter; the first of each reason is logged (every
    /// case is in the dead letters).
    fn reject(&mut self, dead: &mut Vec<DeadLine>, at: &LineRef, topic: Option<&str>, rej: Rejected) {
        let line = at.number;
        let seen = self.rejected.entry(rej.reason).or_default();
        if *seen == 0 {
            tracing::warn!(line, topic, reason = rej.reason.as_str(), detail = %rej.detail, "rejected input (first of its kind)");
        }
        *seen += 1;
        let dl = DeadLetter { line, topic, reason: rej.reason.as_str(), detail: rej.detail };
        dead.push(((line, at.element), serde_json::to_string(&dl).unwrap_or_default()));
    }

    fn add(&mut self, other: Stats) {
        self.lines += other.lines;
        for (a, b) in self.accepted.iter_mut().zip(other.accepted) {
            *a += b;
        }
        for (r, n) in other.rejected {
            *self.rejected.entry(r).or_default() += n;
        }
        self.max_live_windows += other.max_live_windows;
        self.duplicates += other.duplicates;
        self.corrections += other.corrections;
    }
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

/// Reads `input` into blocks and deals each round's blocks round-robin to the parsers (every
/// parser gets a message per round, possibly empty). Returns lines read.
fn read_blocks(
    mut input: Box<dyn Read + Send>,
    senders: Vec<SyncSender<Vec<Block>>>,
    block_bytes: usize,
) -> Result<u64> {
    let parsers = senders.len();
    let mut carry: Vec<u8> = Vec::new();
    let mut line = 1u64;
    let mut eof = false;
    while !eof {
        let mut round: Vec<Vec<Block>> = (0..parsers).map(|_| Vec::new()).collect();
        for index in 0..BLOCKS_PER_ROUND {
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
            round[index % parsers].push(Block { first_line: line, data: buf });
            line += lines;
            if eof {
                break;
            }
        }
        for (p, blocks) in round.into_iter().enumerate() {
            if senders[p].send(blocks).is_err() {
                anyhow::bail!("a parser stopped early");
            }
        }
    }
    Ok(line - 1)
}

/// A parser: decodes each round's blocks, checks detector readings against the city model, and
/// sends every worker its items of the round (see the module docs). Rejections go to the writer
/// as the round's dead letters. Returns its counters.
fn parse_rounds(
    rx: Receiver<Vec<Block>>,
    to_workers: Vec<SyncSender<Parsed>>,
    to_writer: SyncSender<ToWriter>,
    decoder: Decoder,
    city: Arc<CityModel>,
) -> Stats {
    let workers = to_workers.len();
    let mut stats = Stats::default();
    let mut round = 0u64;
    for blocks in rx {
        // Sized up front (recordings run at 150–250 bytes a line): growing by doubling would
        // copy every item about once more.
        let bytes: usize = blocks.iter().map(|b| b.data.len()).sum();
        let expect = bytes / 128 / workers + 16;
        let mut items: Vec<Vec<Item>> = (0..workers).map(|_| Vec::with_capacity(expect)).collect();
        let mut dead = Vec::new();
        for (b, block) in blocks.iter().enumerate() {
            let data = &block.data;
            let ends = memchr::memchr_iter(b'\n', data).chain(std::iter::once(data.len()));
            let mut start = 0;
            for (number, end) in (block.first_line..).zip(ends) {
                let text = &data[start..end];
                let mut at =
                    LineRef { number, element: 0, block: b as u32, start: start as u32, end: end as u32 };
                start = end + 1;
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue; // blank lines (and the piece after a final newline) are not records
                }
                stats.lines += 1;
                decoder.decode_line(text, |topic, res| {
                    let res = res.and_then(|ev| match &ev {
                        Event::Detector(r) => CheckedReading::check(&city, r)
                            .map(|c| items[c.det as usize % workers].push(Item::Reading(at, c))),
                        other => Record::check(&city, other)
                            .map(|rec| items[rec.owner(workers)].push(Item::Record(at, rec))),
                    });
                    if let Err(rej) = res {
                        let topic = input_topic(&decoder, topic);
                        stats.reject(&mut dead, &at, topic.as_deref(), rej);
                    }
                    at.element += 1;
                });
            }
        }
        let blocks = Arc::new(blocks);
        for (tx, items) in to_workers.iter().zip(items) {
            if tx.send(Parsed { blocks: blocks.clone(), items }).is_err() {
                return stats;
            }
        }
        let _ = to_writer.send(ToWriter::DeadLetters(round, dead));
        round += 1;
    }
    stats
}

/// Line protocol is written in chunks of about this many bytes.
const LP_CHUNK: usize = 1 << 20;

/// Messages from the dataflow and the workers to the writer thread.
enum ToWriter {
    /// A completed event time's output.
    Batch(Ms, Vec<(Out, isize)>),
    /// A round's dead letters from one parser or worker (each sends one every round, possibly
    /// empty).
    DeadLetters(u64, Vec<DeadLine>),
    /// Dead letters decided at the end of input (readings still far ahead of the clock),
    /// written after all others.
    FinalDeadLetters(Vec<DeadLine>),
}

/// Writes chunks of line protocol to a file on a thread of its own, so that the kernel's copy
/// into the page cache (a large share of the writer's time: the output is about 110 bytes a
/// point) overlaps with formatting. Chunk buffers go back and forth, so none is allocated after
/// the first few.
struct ChunkWriter {
    chunks: SyncSender<String>,
    free: Receiver<String>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl ChunkWriter {
    fn spawn(mut out: BufWriter<File>) -> Result<ChunkWriter> {
        let (chunks, full) = sync_channel::<String>(4);
        let (give_back, free) = std::sync::mpsc::channel::<String>();
        let thread = std::thread::Builder::new().name("replay-lp-io".into()).spawn(move || {
            for mut chunk in full {
                // Large writes go past the BufWriter's buffer, uncopied.
                out.write_all(chunk.as_bytes())?;
                chunk.clear();
                let _ = give_back.send(chunk);
            }
            out.flush()
        })?;
        Ok(ChunkWriter { chunks, free, thread })
    }

    /// Hands `buf` over for writing and leaves an empty buffer in its place. Fails (with the
    /// write error) as soon as the output thread has stopped on one.
    fn send(self, buf: &mut String) -> Result<Self> {
        let next = self.free.try_recv().unwrap_or_else(|_| String::with_capacity(buf.capacity()));
        let chunk = std::mem::replace(buf, next);
        if self.chunks.send(chunk).is_err() {
            self.finish()?;
            anyhow::bail!("the output thread stopped");
        }
        Ok(self)
    }

    /// Waits until everything is written; the first write error, if any.
    fn finish(self) -> Result<()> {
        drop(self.chunks);
        self.thread.join().map_err(|_| anyhow::anyhow!("the output thread panicked"))??;
        Ok(())
    }
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
    let mut lp_out = ChunkWriter::spawn(create(&opts.out_lp)?)?;
    let lp_context = || format!("cannot write {}", opts.out_lp.display());
    let mut alerts_out = opts.alerts_out.as_deref().map(create).transpose()?;
    let mut dl_out = opts.dead_letter_out.as_deref().map(create).transpose()?;
    let mut book = AlertBook::default();
    let mut totals = WriterTotals { points: 0, raised: 0, cleared: 0, active: 0 };
    let mut buf = String::with_capacity(LP_CHUNK + (1 << 16));
    // Every parser and every worker reports each round.
    let reporters = opts.parsers.max(1) + opts.workers.max(1);
    let mut dl_rounds: BTreeMap<u64, (usize, Vec<DeadLine>)> = BTreeMap::new();
    let mut dl_final: Vec<DeadLine> = Vec::new();
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
                if buf.len() >= LP_CHUNK {
                    lp_out = lp_out.send(&mut buf).with_context(lp_context)?;
                }
            }
            ToWriter::FinalDeadLetters(lines) => dl_final.extend(lines),
            ToWriter::DeadLetters(round, lines) => {
                // Merge the shares of a round in input order once all have reported.
                let entry = dl_rounds.entry(round).or_insert((0, Vec::new()));
                entry.0 += 1;
                entry.1.extend(lines);
                while let Some(first) = dl_rounds.first_entry().filter(|e| e.get().0 == reporters) {
                    let (_, mut lines) = first.remove();
                    lines.sort_unstable_by_key(|(at, _)| *at);
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
    lp_out.send(&mut buf).and_then(ChunkWriter::finish).with_context(lp_context)?;
    if let Some(mut w) = alerts_out {
        w.flush()?;
    }
    if let Some(mut w) = dl_out {
        dl_final.sort_unstable_by_key(|(at, _)| *at);
        for (_, json) in dl_final {
            w.write_all(json.as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    totals.active = book.active() as u64;
    Ok(totals)
}

/// Runs a replay to completion.
pub fn replay(opts: &ReplayOptions, settings: &Settings) -> Result<ReplaySummary> {
    let started = Instant::now();
    // The city model loads on a thread of its own while the reader starts on the input.
    let loading = {
        let path = opts.city.clone();
        std::thread::Builder::new().name("replay-city".into()).spawn(move || -> Result<CityModel> {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read city model {}", path.display()))?;
            Ok(CityModel::from_geojson_str(&text)?)
        })?
    };
    let city_model = || loading.join().map_err(|_| anyhow::anyhow!("loading the city model panicked"))?;
    let cfg = Arc::new(settings.dataflow.clone());
    let workers = opts.workers.max(1);
    let input_size = std::fs::metadata(&opts.input).map(|m| m.len()).unwrap_or(0);
    let read_bytes = Arc::new(AtomicU64::new(0));
    let input = match open_recording(&opts.input, read_bytes.clone()) {
        Ok(input) => input,
        // A bad city model is reported first, as it is the first argument.
        Err(e) => return Err(city_model().err().unwrap_or(e)),
    };
    let block_bytes = opts.block_bytes.max(1);

    // Reader → parsers → workers, each channel two rounds deep.
    let parsers = opts.parsers.max(1);
    let mut to_parsers = Vec::new();
    let mut parser_inputs = Vec::new();
    for _ in 0..parsers {
        let (tx, rx) = sync_channel::<Vec<Block>>(2);
        to_parsers.push(tx);
        parser_inputs.push(rx);
    }
    // to_worker[p][w] sends parser p's items for worker w; from_parser[w][p] receives them.
    let mut to_worker: Vec<Vec<SyncSender<Parsed>>> = (0..parsers).map(|_| Vec::new()).collect();
    let mut from_parser: Vec<Option<Vec<Receiver<Parsed>>>> =
        (0..workers).map(|_| Some(Vec::new())).collect();
    for txs in to_worker.iter_mut() {
        for rxs in from_parser.iter_mut().flatten() {
            let (tx, rx) = sync_channel::<Parsed>(2);
            txs.push(tx);
            rxs.push(rx);
        }
    }
    let from_parser = Arc::new(Mutex::new(from_parser));
    let reader = std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || read_blocks(input, to_parsers, block_bytes))?;
    let decoder =
        Decoder::new(settings.topic_prefix.clone(), Pseudonymizer::new(settings.pseudonym_key.clone()));

    let city = Arc::new(city_model()?);

    // Dataflow → writer.
    let (to_writer, from_workers) = sync_channel::<ToWriter>(64);
    let writer = {
        let (opts, city, cfg) = (opts.clone(), city.clone(), cfg.clone());
        std::thread::Builder::new()
            .name("replay-writer".into())
            .spawn(move || write_outputs(from_workers, &opts, &city, &cfg))?
    };
    let mut parser_threads = Vec::new();
    for (p, (rx, txs)) in parser_inputs.into_iter().zip(to_worker).enumerate() {
        let (to_writer, decoder, city) = (to_writer.clone(), decoder.clone(), city.clone());
        parser_threads.push(
            std::thread::Builder::new()
                .name(format!("replay-parser-{p}"))
                .spawn(move || parse_rounds(rx, txs, to_writer, decoder, city))?,
        );
    }

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
    let clock = SharedClock::new(workers, &cfg);
    let ended = Arc::new(EndOfInput::default());
    let to_writer = Mutex::new(to_writer);

    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let rxs = from_parser.lock().ok().and_then(|mut r| r[index].take()).unwrap_or_default();
        let tx = to_writer.lock().map(|t| t.clone()).ok();
        let mut stats = Stats::default();
        let (deliver_tx, deliver_ended) = (tx.clone(), ended.clone());
        let mut rounds =
            WorkerRounds::new(worker, city.clone(), cfg.clone(), clock.clone(), move |t, mut records| {
                // Replay has no timers outside the dataflow: progress markers (empty) are skipped.
                if !records.is_empty()
                    && deliver_ended.admit(t, &mut records)
                    && let Some(tx) = deliver_tx.as_ref()
                {
                    let _ = tx.send(ToWriter::Batch(t, records));
                }
            });
        let mut round = 0u64;
        let (mut t_wait, mut t_offer, mut t_round) = (0f64, 0f64, 0f64);
        'rounds: loop {
            let mut dead: Vec<DeadLine> = Vec::new();
            for rx in &rxs {
                let i0 = Instant::now();
                // Every parser sends every round; one that has stopped ends the input.
                let Ok(parsed) = rx.recv() else { break 'rounds };
                let i1 = Instant::now();
                t_wait += (i1 - i0).as_secs_f64();
                offer_parsed(&parsed, &decoder, &city, &mut rounds, &mut stats, &mut dead);
                t_offer += i1.elapsed().as_secs_f64();
            }
            let i2 = Instant::now();
            rounds.end_round(worker, RoundControl::default());
            t_round += i2.elapsed().as_secs_f64();
            if let Some(tx) = tx.as_ref() {
                let _ = tx.send(ToWriter::DeadLetters(round, dead));
            }
            round += 1;
            stats.max_live_windows = stats.max_live_windows.max(rounds.ingest.live_windows() as u64);
        }
        tracing::debug!(
            worker = index,
            waiting_s = t_wait,
            offering_s = t_offer,
            dataflow_s = t_round,
            "input done"
        );
        // End of input: close every window holding data, fire timers only up to the last event
        // time seen, write nothing later (see the module docs).
        let (end, last) = rounds.finish(worker, &ended);
        let mut dead = Vec::new();
        for held in rounds.ingest.take_held() {
            let rej = Rejected::new(
                Reason::FutureTs,
                format!(
                    "{} ahead of every other source at the end of input",
                    citybrain_dataflows::time::format_ms(held.record.ts())
                ),
            );
            stats.reject_held(&mut dead, &held, &city, &decoder, rej);
        }
        let _ = tx.as_ref().map(|tx| tx.send(ToWriter::FinalDeadLetters(dead)));
        stats.duplicates = rounds.ingest.duplicates();
        stats.corrections = rounds.ingest.corrections();
        for kind in TopicKind::ALL {
            stats.accepted[kind as usize] -= rounds.ingest.duplicates_of(kind);
        }
        drop(rounds);
        (stats, last.map(|_| end))
    })
    .map_err(|e| anyhow::anyhow!("cannot start workers: {e}"))?;

    let mut all = Stats::default();
    let mut end_ts = None;
    for result in guards.join() {
        let (stats, end) = result.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?;
        all.add(stats);
        end_ts = end_ts.max(end);
    }
    for p in parser_threads {
        all.add(p.join().map_err(|_| anyhow::anyhow!("a parser thread panicked"))?);
    }
    let mut summary = ReplaySummary {
        lines: all.lines,
        duplicates: all.duplicates,
        corrections: all.corrections,
        max_live_windows: all.max_live_windows,
        end_ts,
        ..Default::default()
    };
    for (k, n) in TopicKind::ALL.iter().zip(all.accepted) {
        if n > 0 {
            summary.accepted.insert(k.path().to_string(), n);
        }
    }
    for (r, n) in all.rejected {
        summary.rejected.insert(r.as_str().to_string(), n);
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

/// Offers one parser's items of a round to this worker's ingest; too-late readings become dead
/// letters.
fn offer_parsed(
    parsed: &Parsed,
    decoder: &Decoder,
    city: &CityModel,
    rounds: &mut WorkerRounds,
    stats: &mut Stats,
    dead: &mut Vec<DeadLine>,
) {
    let line = |at: &LineRef| {
        let block = &parsed.blocks[at.block as usize];
        &block.data[at.start as usize..at.end as usize]
    };
    for item in &parsed.items {
        match item {
            Item::Reading(at, reading) => match rounds.ingest.offer_checked(*reading, at.number) {
                Ok(()) => stats.accepted[TopicKind::Detector as usize] += 1,
                Err(rej) => {
                    // Rare: decode the line again for the dead letter's topic.
                    let mut topic = None;
                    decoder.decode_line(line(at), |t, _| topic = topic.take().or(t.map(str::to_string)));
                    let topic = input_topic(decoder, topic.as_deref());
                    stats.reject(dead, at, topic.as_deref(), rej);
                }
            },
            Item::Record(at, record) => {
                let kind = record.kind();
                match rounds.ingest.offer_record(record.clone(), at.number) {
                    Ok(()) => stats.accepted[kind as usize] += 1,
                    Err(rej) => {
                        let topic = format!("{}{}", decoder.prefix(), record.topic(city));
                        stats.reject(dead, at, Some(&topic), rej)
                    }
                }
            }
        }
    }
}
