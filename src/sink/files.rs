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
//! Writes are buffered; [`RotatingFile::flush`] hands them to the operating system (dropping
//! the value flushes too, but ignores errors).

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
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
    /// The open current file; `None` until the first write into it.
    writer: Option<BufWriter<File>>,
    /// Bytes written into the current file so far.
    current_bytes: u64,
    /// Bytes written through this value since it was opened, over all files.
    total_bytes: u64,
}

impl RotatingFile {
    /// Opens a rotating file set in `dir` (created if missing), continuing after the highest
    /// existing `{prefix}-{seq}.{ext}`. `max_bytes` is the size at which a file is rotated;
    /// `max_files = Some(n)` keeps at most `n` files (at least one), deleting the oldest; `None`
    /// never deletes anything. The first file is created by the first write.
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
            writer: None,
            current_bytes: 0,
            total_bytes: 0,
        };
        let highest = rf.existing()?.into_iter().map(|(seq, _)| seq).max().unwrap_or(0);
        rf.seq = highest + 1;
        rf.path = rf.path_of(rf.seq);
        Ok(rf)
    }

    /// Appends `bytes` (buffered). Starts a new file first when the current one already holds
    /// data and would grow past the size limit; a write is never split across files.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let len = bytes.len() as u64;
        if self.current_bytes > 0 && self.current_bytes.saturating_add(len) > self.max_bytes {
            self.rotate()?;
        }
        if self.writer.is_none() {
            self.create_current()?;
        }
        let path = &self.path;
        let writer = self.writer.as_mut().unwrap_or_else(|| unreachable!("created above"));
        writer.write_all(bytes).with_context(|| format!("writing to {}", path.display()))?;
        self.current_bytes += len;
        self.total_bytes += len;
        Ok(())
    }

    /// Hands buffered bytes to the operating system.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.flush().with_context(|| format!("flushing {}", self.path.display()))?;
        }
        Ok(())
    }

    /// The file the next write goes to (it may not exist yet: files are created by their first
    /// write, and a write may rotate to the next file first).
    pub fn current_path(&self) -> &Path {
        &self.path
    }

    /// Bytes written through this value since it was opened, over all its files.
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

    /// Closes the current file (flushing it) and moves to the next sequence number.
    fn rotate(&mut self) -> Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.flush().with_context(|| format!("flushing {}", self.path.display()))?;
        }
        self.seq += 1;
        self.path = self.path_of(self.seq);
        self.current_bytes = 0;
        Ok(())
    }

    /// Creates the current file (never overwriting: a name taken meanwhile moves on to the next
    /// sequence number), then deletes the oldest files beyond the file limit.
    fn create_current(&mut self) -> Result<()> {
        let file = loop {
            match OpenOptions::new().append(true).create_new(true).open(&self.path) {
                Ok(f) => break f,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    self.seq += 1;
                    self.path = self.path_of(self.seq);
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", self.path.display())),
            }
        };
        self.writer = Some(BufWriter::new(file));
        self.current_bytes = 0;
        self.prune()
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
        f.write(b"aaaa\n").unwrap();
        f.write(b"bbbb\n").unwrap(); // exactly 10: fits
        f.write(b"cc\n").unwrap(); // would be 13: new file
        f.write(b"dddddddd\n").unwrap(); // 3 + 9 > 10: new file, whole
        f.write(b"this line is longer than ten\n").unwrap(); // oversized: a file of its own
        f.write(b"e\n").unwrap();
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
            f.write(b"first\n").unwrap();
        } // dropped: flushed
        let f = RotatingFile::open(&dir, "lp", "lp", 100, None).unwrap();
        assert_eq!(f.current_path(), dir.join("lp-000002.lp"));
        drop(f); // no write: no empty file
        let mut f = RotatingFile::open(&dir, "lp", "lp", 100, None).unwrap();
        f.write(b"second\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("lp-000001.lp")).unwrap(), "first\n");
        assert_eq!(std::fs::read_to_string(dir.join("lp-000002.lp")).unwrap(), "second\n");
        assert_eq!(contents(&dir).len(), 5);
        // A name taken behind our back is skipped, not overwritten.
        std::fs::write(dir.join("lp-000003.lp"), "foreign\n").unwrap();
        let mut g = RotatingFile::open(&dir, "lp", "lp", 1, None).unwrap();
        std::fs::write(dir.join("lp-000004.lp"), "foreign\n").unwrap();
        g.write(b"third\n").unwrap();
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
            f.write(format!("{i:03}\n").as_bytes()).unwrap();
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
        f.write(b"new\n").unwrap();
        f.flush().unwrap();
        assert_eq!(contents(&dir), vec![("dl-000011.jsonl".to_string(), "new\n".to_string())]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unbounded_set_keeps_everything() {
        let dir = temp_dir("unbounded");
        let mut f = RotatingFile::open(&dir, "lp", "lp", 1, None).unwrap();
        for _ in 0..20 {
            f.write(b"x\n").unwrap();
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
}
