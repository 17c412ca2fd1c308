//! Append-only, size-rotated files in one directory.
//!
//! A [`RotatingFile`] writes to `{prefix}-{seq:06}.{ext}` (`dead-letters-000001.jsonl`, …), the
//! sequence number increasing by one per file. Opening a directory that already holds such files
//! continues after the highest sequence number found, so earlier files are never written to again
//! and never overwritten (each file is created with `create_new`). A write is never split across
//! files: when it would take the current file past the size limit, a new file is started first,
//! and a single write larger than the limit gets a file of its own. Files are created lazily, on
//! the first write that goes into them, so opening and closing without writing leaves no empty
//! files behind.
//!
//! With a file limit (`max_files = Some(n)`) the store is bounded: whenever a new file is
//! started the oldest files are deleted so that at most `n` remain (the dead-letter store). With
//! `None` nothing is ever deleted (line protocol must never be lost).
//!
//! **Writes are kept until they are on disk.** [`RotatingFile::write`] only queues the bytes in
//! memory; [`RotatingFile::flush`] opens the current file *by name*, appends every queued write
//! in order and closes it. A flush that fails (disk full, the directory replaced by a file, the
//! file replaced by `/dev/full`) keeps every write it could not complete, truncating a partly
//! appended one back off the file, so the next flush retries them whole — nothing is lost and no
//! line is torn (were even the truncation to fail, the torn file is left as it is, named in the
//! log, and the write goes whole into the next file). Because every flush opens the file by its
//! name, a file moved away (log rotation) is simply created again, and a repaired directory is
//! used at once. [`RotatingFile::pending_bytes`] is what waits in memory, for the caller to bound.

use anyhow::{Context, Result};
use citybrain_dataflows::Ms;
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// An append-only file in a directory, rotated by size, optionally bounded in number of files.
#[derive(Debug)]
pub struct RotatingFile {
    /// The directory holding the files.
    dir: PathBuf,
    /// File name prefix (before `-{seq}`).
    prefix: String,
    /// File name extension (after the dot).
    ext: String,
    /// Size limit of one file, bytes (a single larger write still gets a file of its own).
    max_bytes: u64,
    /// At most this many files are kept (never fewer than 1); `None` keeps all.
    max_files: Option<usize>,
    /// Sequence number of the current file.
    seq: u64,
    /// Path of the current file.
    path: PathBuf,
    /// Whether the current file has been created (later flushes append to it by name).
    created: bool,
    /// Writes not yet on disk, in order.
    pending: VecDeque<Vec<u8>>,
    /// Their total size.
    pending_bytes: u64,
    /// Bytes in the current file so far.
    current_bytes: u64,
    /// Bytes written to disk through this value since it was opened, over all files.
    total_bytes: u64,
}

impl RotatingFile {
    /// Opens a rotating file set in `dir` (created if missing), continuing after the highest
    /// existing `{prefix}-{seq}.{ext}`. `max_bytes` is the size at which a file is rotated;
    /// `max_files = Some(n)` keeps at most `n` files (at least one), deleting the oldest; `None`
    /// never deletes anything. The first file is created by the first flush.
    pub fn open(
        dir: &Path,
        prefix: &str,
        ext: &str,
        max_bytes: u64,
        max_files: Option<usize>,
    ) -> Result<RotatingFile> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
        let mut rf = RotatingFile {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            ext: ext.to_string(),
            max_bytes,
            max_files: max_files.map(|n| n.max(1)),
            seq: 0,
            path: PathBuf::new(),
            created: false,
            pending: VecDeque::new(),
            pending_bytes: 0,
            current_bytes: 0,
            total_bytes: 0,
        };
        let highest = rf.existing()?.into_iter().map(|(seq, _)| seq).max().unwrap_or(0);
        rf.seq = highest + 1;
        rf.path = rf.path_of(rf.seq);
        Ok(rf)
    }

    /// Queues `bytes` for the next [`flush`](Self::flush) (one write: never split across files).
    pub fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.pending_bytes += bytes.len() as u64;
        self.pending.push_back(bytes.to_vec());
    }

    /// Appends every queued write to disk, in order, rotating by size. On an error the writes
    /// not completed stay queued (a partly appended one is truncated off again) for the next
    /// flush to retry; the error names the path.
    pub fn flush(&mut self) -> Result<()> {
        let mut file: Option<File> = None;
        while let Some(len) = self.pending.front().map(|c| c.len() as u64) {
            if self.current_bytes > 0 && self.current_bytes.saturating_add(len) > self.max_bytes {
                file = None;
                self.rotate();
            }
            if file.is_none() {
                file = Some(self.open_current()?);
            }
            let Some(f) = file.as_mut() else { unreachable!("opened above") };
            let meta =
                f.metadata().with_context(|| format!("reading the size of {}", self.path.display()))?;
            let before = meta.len();
            if let Err(e) = f.write_all(&self.pending[0]) {
                // Take back what was appended, so the retry does not tear a line.
                if meta.is_file()
                    && let Err(t) = f.set_len(before)
                {
                    tracing::error!(path = %self.path.display(), error = %t,
                        "cannot truncate a partly written file; its last line may be torn, the write goes to the next file");
                    self.rotate();
                }
                return Err(e).with_context(|| format!("writing to {}", self.path.display()));
            }
            self.current_bytes = if meta.is_file() { before + len } else { self.current_bytes + len };
            self.total_bytes += len;
            self.pending_bytes -= len;
            self.pending.pop_front();
        }
        Ok(())
    }

    /// Bytes queued and not yet on disk.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// The file the next write goes to (it may not exist yet: files are created by their first
    /// write, and a write may rotate to the next file first).
    pub fn current_path(&self) -> &Path {
        &self.path
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes written to disk through this value since it was opened, over all its files.
    pub fn bytes_written(&self) -> u64 {
        self.total_bytes
    }

    /// The path of file number `seq`.
    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{}-{seq:06}.{}", self.prefix, self.ext))
    }

    /// The sequence number of a file name of this set, if it is one.
    fn seq_of(&self, name: &str) -> Option<u64> {
        let digits = name.strip_prefix(self.prefix.as_str())?.strip_prefix('-')?;
        let digits = digits.strip_suffix(self.ext.as_str())?.strip_suffix('.')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// The files of this set in the directory, with their sequence numbers, oldest first.
    fn existing(&self) -> Result<Vec<(u64, PathBuf)>> {
        let entries =
            std::fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", self.dir.display()))?;
            if let Some(seq) = entry.file_name().to_str().and_then(|n| self.seq_of(n)) {
                files.push((seq, entry.path()));
            }
        }
        files.sort();
        Ok(files)
    }

    /// Moves to the next sequence number (the next flush creates that file).
    fn rotate(&mut self) {
        self.seq += 1;
        self.path = self.path_of(self.seq);
        self.created = false;
        self.current_bytes = 0;
    }

    /// Opens the current file for appending: by name once it exists, otherwise creating it
    /// (never overwriting: a name taken meanwhile moves on to the next sequence number) and then
    /// deleting the oldest files beyond the file limit.
    fn open_current(&mut self) -> Result<File> {
        if self.created {
            return OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.path)
                .with_context(|| format!("opening {}", self.path.display()));
        }
        let file = loop {
            match OpenOptions::new().append(true).create_new(true).open(&self.path) {
                Ok(f) => break f,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => self.rotate(),
                Err(e) => return Err(e).with_context(|| format!("creating {}", self.path.display())),
            }
        };
        self.created = true;
        self.current_bytes = 0;
        self.prune()?;
        Ok(file)
    }

    /// Deletes the oldest files so that at most `max_files` remain (never the current one).
    /// A file that cannot be deleted is reported and kept: losing the write would be worse.
    fn prune(&self) -> Result<()> {
        let Some(max) = self.max_files else { return Ok(()) };
        let files = self.existing()?;
        let excess = files.len().saturating_sub(max);
        for (seq, path) in files.into_iter().take(excess) {
            if seq == self.seq {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete an old rotated file")
                }
            }
        }
        Ok(())
    }
}

impl Drop for RotatingFile {
    /// A last flush (errors are ignored here: callers that care flush themselves).
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Milliseconds in a day.
const DAY_MS: Ms = 86_400_000;

/// Files that hold personal data and must be deleted after a retention: one [`RotatingFile`]
/// set a day, `{prefix}-{YYYYMMDD}-{seq:06}.{ext}` (the UTC day of what they hold), and
/// [`DailyFiles::expire`] deletes every day's files once the whole day is older than the
/// retention. A day is therefore on disk for at most the retention plus one day.
#[derive(Debug)]
pub struct DailyFiles {
    dir: PathBuf,
    prefix: String,
    ext: String,
    max_bytes: u64,
    /// At most this many files a day (the oldest are deleted); `None` keeps all.
    max_files: Option<usize>,
    /// The open sets, by day number (days since the epoch, UTC).
    days: BTreeMap<i64, RotatingFile>,
}

impl DailyFiles {
    /// Daily file sets in `dir` (created if missing); files rotate at `max_bytes`, and a day
    /// keeps at most `max_files` of them (`None`: all, for what must never be lost).
    pub fn open(
        dir: &Path,
        prefix: &str,
        ext: &str,
        max_bytes: u64,
        max_files: Option<usize>,
    ) -> Result<DailyFiles> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
        Ok(DailyFiles {
            dir: dir.to_path_buf(),
            prefix: prefix.into(),
            ext: ext.into(),
            max_bytes,
            max_files,
            days: BTreeMap::new(),
        })
    }

    /// The day number of an instant (epoch ms, UTC).
    fn day(ms: Ms) -> i64 {
        (ms / DAY_MS) as i64
    }

    /// `YYYYMMDD` of a day number.
    fn date(day: i64) -> String {
        chrono::DateTime::from_timestamp(day * 86_400, 0)
            .map(|d| d.format("%Y%m%d").to_string())
            .unwrap_or_else(|| format!("day{day}"))
    }

    /// Queues `bytes` into the files of the day of `at` (epoch ms).
    pub fn write(&mut self, at: Ms, bytes: &[u8]) -> Result<()> {
        let day = Self::day(at);
        if !self.days.contains_key(&day) {
            let prefix = format!("{}-{}", self.prefix, Self::date(day));
            let set = RotatingFile::open(&self.dir, &prefix, &self.ext, self.max_bytes, self.max_files)?;
            self.days.insert(day, set);
        }
        if let Some(set) = self.days.get_mut(&day) {
            set.write(bytes);
        }
        Ok(())
    }

    /// Flushes every day's queued writes; the first error, after trying them all.
    pub fn flush(&mut self) -> Result<()> {
        let mut first = Ok(());
        for set in self.days.values_mut() {
            if let Err(e) = set.flush()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes queued and not yet on disk, over every day.
    pub fn pending_bytes(&self) -> u64 {
        self.days.values().map(RotatingFile::pending_bytes).sum()
    }

    /// Deletes the files of every day that ended at or before `before` (epoch ms), also those
    /// written by an earlier run; returns how many files were deleted. Queued writes of such a
    /// day are dropped with it: they are past their retention.
    pub fn expire(&mut self, before: Ms) -> Result<usize> {
        let last_gone = Self::day(before) - 1; // days ending at or before `before`
        self.days.retain(|day, set| {
            if *day <= last_gone {
                set.pending.clear();
                set.pending_bytes = 0;
                false
            } else {
                true
            }
        });
        let entries =
            std::fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))?;
        let mut deleted = 0;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", self.dir.display()))?;
            let name = entry.file_name();
            let Some(date) = name
                .to_str()
                .and_then(|n| n.strip_prefix(self.prefix.as_str())?.strip_prefix('-'))
                .filter(|rest| rest.ends_with(&format!(".{}", self.ext)))
                .and_then(|rest| rest.get(..8))
                .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y%m%d").ok())
            else {
                continue;
            };
            let day = date.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp() / 86_400);
            if day.is_some_and(|d| d <= last_gone) {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("deleting {}", entry.path().display()))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory for one test.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cb-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// The names and contents of the files in `dir`, sorted by name.
    fn contents(dir: &Path) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap())
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn rotates_by_size_and_never_splits_a_write() {
        let dir = temp_dir("rotate");
        let mut f = RotatingFile::open(&dir, "lp", "lp", 10, None).unwrap();
        assert_eq!(f.current_path(), dir.join("lp-000001.lp"));
        f.write(b"aaaa\n");
        f.write(b"bbbb\n"); // exactly 10: fits
        f.write(b"cc\n"); // would be 13: new file
        f.write(b"dddddddd\n"); // 3 + 9 > 10: new file, whole
        f.write(b"this line is longer than ten\n"); // oversized: a file of its own
        f.write(b"e\n");
        f.flush().unwrap();
        assert_eq!(f.bytes_written(), 5 + 5 + 3 + 9 + 29 + 2);
        assert_eq!(f.current_path(), dir.join("lp-000005.lp"));
        assert_eq!(
            contents(&dir),
            vec![
                ("lp-000001.lp".to_string(), "aaaa\nbbbb\n".to_string()),
                ("lp-000002.lp".to_string(), "cc\n".to_string()),
                ("lp-000003.lp".to_string(), "dddddddd\n".to_string()),
                ("lp-000004.lp".to_string(), "this line is longer than ten\n".to_string()),
                ("lp-000005.lp".to_string(), "e\n".to_string()),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reopen_continues_after_the_highest_file_and_never_overwrites() {
        let dir = temp_dir("reopen");
        std::fs::create_dir_all(&dir).unwrap();
        // Files of other sets and odd names are ignored.
        std::fs::write(dir.join("other-000009.lp"), "x").unwrap();
        std::fs::write(dir.join("lp-abc.lp"), "x").unwrap();
        std::fs::write(dir.join("lp-000007.txt"), "x").unwrap();
        {
            let mut f = RotatingFile::open(&dir, "lp", "lp", 100, None).unwrap();
            f.write(b"first\n");
        } // dropped: flushed
        let f = RotatingFile::open(&dir, "lp", "lp", 100, None).unwrap();
        assert_eq!(f.current_path(), dir.join("lp-000002.lp"));
        drop(f); // no write: no empty file
        let mut f = RotatingFile::open(&dir, "lp", "lp", 100, None).unwrap();
        f.write(b"second\n");
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("lp-000001.lp")).unwrap(), "first\n");
        assert_eq!(std::fs::read_to_string(dir.join("lp-000002.lp")).unwrap(), "second\n");
        assert_eq!(contents(&dir).len(), 5);
        // A name taken behind our back is skipped, not overwritten.
        std::fs::write(dir.join("lp-000003.lp"), "foreign\n").unwrap();
        let mut g = RotatingFile::open(&dir, "lp", "lp", 1, None).unwrap();
        std::fs::write(dir.join("lp-000004.lp"), "foreign\n").unwrap();
        g.write(b"third\n");
        g.flush().unwrap();
        assert_eq!(g.current_path(), dir.join("lp-000005.lp"));
        assert_eq!(std::fs::read_to_string(dir.join("lp-000004.lp")).unwrap(), "foreign\n");
        assert_eq!(std::fs::read_to_string(dir.join("lp-000005.lp")).unwrap(), "third\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bounded_set_deletes_the_oldest_files() {
        let dir = temp_dir("bounded");
        let mut f = RotatingFile::open(&dir, "dl", "jsonl", 4, Some(3)).unwrap();
        for i in 0..10 {
            f.write(format!("{i:03}\n").as_bytes());
        }
        f.flush().unwrap();
        let names: Vec<(String, String)> = contents(&dir);
        assert_eq!(
            names,
            vec![
                ("dl-000008.jsonl".to_string(), "007\n".to_string()),
                ("dl-000009.jsonl".to_string(), "008\n".to_string()),
                ("dl-000010.jsonl".to_string(), "009\n".to_string()),
            ]
        );
        // Reopened with a smaller bound, the first new file trims the old ones.
        let mut f = RotatingFile::open(&dir, "dl", "jsonl", 4, Some(1)).unwrap();
        f.write(b"new\n");
        f.flush().unwrap();
        assert_eq!(contents(&dir), vec![("dl-000011.jsonl".to_string(), "new\n".to_string())]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unbounded_set_keeps_everything() {
        let dir = temp_dir("unbounded");
        let mut f = RotatingFile::open(&dir, "lp", "lp", 1, None).unwrap();
        for _ in 0..20 {
            f.write(b"x\n");
        }
        f.flush().unwrap();
        assert_eq!(contents(&dir).len(), 20);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_path() {
        let dir = temp_dir("errors");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let err = RotatingFile::open(&file.join("sub"), "lp", "lp", 10, None).unwrap_err();
        assert!(format!("{err:#}").contains("plain-file"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_flush_keeps_every_write_and_a_retry_loses_nothing() {
        let dir = temp_dir("full");
        let mut f = RotatingFile::open(&dir, "lp", "lp", 1 << 20, None).unwrap();
        f.write(b"one\n");
        f.flush().unwrap();
        // The disk fills up: the file becomes /dev/full (ENOSPC on every write).
        let real = dir.join("lp-000001.lp");
        std::fs::rename(&real, dir.join("saved")).unwrap();
        std::os::unix::fs::symlink("/dev/full", &real).unwrap();
        f.write(b"two\n");
        f.write(b"three\n");
        let err = f.flush().unwrap_err();
        assert!(format!("{err:#}").contains("lp-000001.lp"), "{err:#}");
        assert_eq!(f.pending_bytes(), 10);
        assert!(f.flush().is_err(), "still full");
        // Space again: the retry appends both writes, whole and in order.
        std::fs::remove_file(&real).unwrap();
        std::fs::rename(dir.join("saved"), &real).unwrap();
        f.flush().unwrap();
        assert_eq!(f.pending_bytes(), 0);
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "one\ntwo\nthree\n");

        // The directory replaced by a regular file: every flush fails until it is back.
        std::fs::rename(&dir, dir.with_extension("moved")).unwrap();
        std::fs::write(&dir, "not a directory").unwrap();
        f.write(b"four\n");
        let err = f.flush().unwrap_err();
        assert!(format!("{err:#}").contains("lp-000001.lp"), "{err:#}");
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(dir.with_extension("moved"), &dir).unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "one\ntwo\nthree\nfour\n");
        // A file moved away (log rotation) is created again by the next flush.
        std::fs::rename(&real, dir.join("rotated")).unwrap();
        f.write(b"five\n");
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "five\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn daily_files_are_deleted_once_their_day_is_past_the_retention() {
        let dir = temp_dir("daily");
        let day = 86_400_000;
        let t0 = 1_767_225_600_000; // 2026-01-01T00:00Z
        let mut f = DailyFiles::open(&dir, "alerts", "jsonl", 1 << 20, None).unwrap();
        f.write(t0 + 5, b"one\n").unwrap();
        f.write(t0 + day + 5, b"two\n").unwrap();
        f.flush().unwrap();
        let names = || {
            let mut v: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(), ["alerts-20260101-000001.jsonl", "alerts-20260102-000001.jsonl"]);
        // The first day ends at t0 + day: not yet gone a millisecond before.
        assert_eq!(f.expire(t0 + day - 1).unwrap(), 0);
        assert_eq!(f.expire(t0 + day).unwrap(), 1);
        assert_eq!(names(), ["alerts-20260102-000001.jsonl"]);
        // A later run finds and deletes what an earlier one left.
        drop(f);
        let mut g = DailyFiles::open(&dir, "alerts", "jsonl", 1 << 20, None).unwrap();
        assert_eq!(g.expire(t0 + 2 * day).unwrap(), 1);
        assert!(names().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
