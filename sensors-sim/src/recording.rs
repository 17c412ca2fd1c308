//! Recordings (CONTRACT §4): JSON Lines files, one message per line, gzip-compressed when the
//! path ends in `.gz`. [`Recording`] writes one line by line (so long runs stream to disk);
//! [`read_lines`] reads one back, plain or gzip, and [`open_lines`] streams it line by line.

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Whether a path names a gzip file (ends in `.gz`, any case).
pub fn is_gzip(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

enum Sink {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
}

/// A recording being written. Call [`Recording::finish`] at the end: it flushes (and completes
/// the gzip stream), reporting any error that dropping the writer would hide.
pub struct Recording {
    path: PathBuf,
    sink: Sink,
    lines: u64,
}

impl Recording {
    /// Creates (or truncates) the file at `path`; gzip when it ends in `.gz`.
    pub fn create(path: &Path) -> Result<Recording> {
        let file = File::create(path).with_context(|| format!("creating recording {}", path.display()))?;
        let file = BufWriter::with_capacity(1 << 16, file);
        let sink = if is_gzip(path) {
            Sink::Gzip(GzEncoder::new(file, Compression::default()))
        } else {
            Sink::Plain(file)
        };
        Ok(Recording { path: path.to_path_buf(), sink, lines: 0 })
    }

    /// Appends one line (a newline is added).
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        let w: &mut dyn Write = match &mut self.sink {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w,
        };
        w.write_all(line.as_bytes())
            .and_then(|()| w.write_all(b"\n"))
            .with_context(|| format!("writing recording {}", self.path.display()))?;
        self.lines += 1;
        Ok(())
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Flushes and closes the file; returns the number of lines written.
    pub fn finish(self) -> Result<u64> {
        let flushed = match self.sink {
            Sink::Plain(mut w) => w.flush(),
            Sink::Gzip(w) => w.finish().and_then(|mut w| w.flush()),
        };
        flushed.with_context(|| format!("finishing recording {}", self.path.display()))?;
        Ok(self.lines)
    }
}

/// Writes `lines` to a new recording at `path`; returns the number of lines written.
pub fn write_lines<S: AsRef<str>>(path: &Path, lines: impl IntoIterator<Item = S>) -> Result<u64> {
    let mut rec = Recording::create(path)?;
    for line in lines {
        rec.write_line(line.as_ref())?;
    }
    rec.finish()
}

/// Reads every line of a recording (plain, or gzip when the path ends in `.gz`).
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let file = File::open(path).with_context(|| format!("opening recording {}", path.display()))?;
    let reader: Box<dyn Read> =
        if is_gzip(path) { Box::new(MultiGzDecoder::new(file)) } else { Box::new(file) };
    BufReader::new(reader)
        .lines()
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading recording {}", path.display()))
}

/// A recording being read line by line; see [`open_lines`].
pub struct LineReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<Box<dyn Read + Send>>>,
}

impl Iterator for LineReader {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        let line = self.lines.next()?;
        Some(line.with_context(|| format!("reading recording {}", self.path.display())))
    }
}

/// Opens a recording (plain, or gzip when the path ends in `.gz`) to read it line by line,
/// without holding it all in memory.
pub fn open_lines(path: &Path) -> Result<LineReader> {
    let file = File::open(path).with_context(|| format!("opening recording {}", path.display()))?;
    let reader: Box<dyn Read + Send> =
        if is_gzip(path) { Box::new(MultiGzDecoder::new(file)) } else { Box::new(file) };
    Ok(LineReader { path: path.to_path_buf(), lines: BufReader::with_capacity(1 << 16, reader).lines() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_gzip_round_trip() {
        let dir = std::env::temp_dir().join(format!("citybrain-sim-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines =
            vec![r#"{"topic":"a","payload":{}}"#.to_string(), r#"{"topic":"b","payload":{}}"#.to_string()];
        for name in ["feed.jsonl", "feed.jsonl.gz"] {
            let path = dir.join(name);
            assert_eq!(write_lines(&path, &lines).unwrap(), 2);
            assert_eq!(read_lines(&path).unwrap(), lines);
            assert_eq!(open_lines(&path).unwrap().collect::<Result<Vec<_>>>().unwrap(), lines);
        }
        let raw = std::fs::read(dir.join("feed.jsonl.gz")).unwrap();
        assert_eq!(&raw[..2], &[0x1f, 0x8b], "gzip magic");
        assert!(read_lines(&dir.join("missing.jsonl")).unwrap_err().to_string().contains("missing.jsonl"));
        assert!(open_lines(&dir.join("missing.jsonl")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
