//! Interned ids: string ids ↔ dense indices, kept compact for the hot path.
//!
//! Every reading looks up its detector and checks its segment. With tens of thousands of ids, a
//! map of `String` keys scatters the bytes it must compare over the heap and each lookup misses
//! the cache. [`Names`] keeps all ids of a table in one contiguous arena and the hash index maps
//! a 64-bit hash of the id to its index; the id is then confirmed against the arena. Two ids whose
//! hashes collide are kept in a small overflow map, so lookups stay exact.

use rustc_hash::{FxHashMap, FxHasher};
use std::hash::Hasher;

/// One table of ids (detectors, segments, …): insertion order gives the index.
#[derive(Debug, Default)]
pub struct Names {
    arena: String,
    ends: Vec<u32>,
    index: FxHashMap<u64, u32>,
    overflow: FxHashMap<String, u32>,
}

/// Marks a hash shared by several ids: look them up in the overflow map.
const SHARED: u32 = u32::MAX;

fn hash(id: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(id.as_bytes());
    h.write_u8(0xff);
    h.finish()
}

impl Names {
    /// Adds an id; returns its index, or `None` if it is already present.
    pub fn insert(&mut self, id: &str) -> Option<u32> {
        if self.get(id).is_some() {
            return None;
        }
        let idx = self.ends.len() as u32;
        self.arena.push_str(id);
        self.ends.push(self.arena.len() as u32);
        let h = hash(id);
        match self.index.get(&h).copied() {
            None => {
                self.index.insert(h, idx);
            }
            Some(SHARED) => {
                self.overflow.insert(id.to_string(), idx);
            }
            Some(other) => {
                let other_name = self.name(other).to_string();
                self.overflow.insert(other_name, other);
                self.overflow.insert(id.to_string(), idx);
                self.index.insert(h, SHARED);
            }
        }
        Some(idx)
    }

    /// The index of an id.
    #[inline]
    pub fn get(&self, id: &str) -> Option<u32> {
        match self.index.get(&hash(id)).copied()? {
            SHARED => self.overflow.get(id).copied(),
            idx => (self.name(idx) == id).then_some(idx),
        }
    }

    /// The id at an index.
    #[inline]
    pub fn name(&self, idx: u32) -> &str {
        let end = self.ends[idx as usize] as usize;
        let start = if idx == 0 { 0 } else { self.ends[idx as usize - 1] as usize };
        &self.arena[start..end]
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_duplicates() {
        let mut n = Names::default();
        assert_eq!(n.insert("a"), Some(0));
        assert_eq!(n.insert("bb"), Some(1));
        assert_eq!(n.insert("a"), None);
        assert_eq!(n.get("bb"), Some(1));
        assert_eq!(n.get("b"), None);
        assert_eq!(n.name(0), "a");
        assert_eq!(n.len(), 2);
    }

    #[test]
    fn colliding_hashes_stay_exact() {
        let mut n = Names::default();
        n.insert("x");
        // Force a collision on the hash of "x".
        let h = hash("x");
        n.index.insert(h, SHARED);
        n.overflow.insert("x".into(), 0);
        assert_eq!(n.get("x"), Some(0));
        assert_eq!(n.insert("y"), Some(1));
        assert_eq!(n.get("y"), Some(1));
    }
}
