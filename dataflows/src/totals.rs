//! Per-key totals of a collection over a totally ordered time: the window operator every
//! indicator is built on.
//!
//! [`totals`] turns a collection of keys with *summable* differences (a window key whose
//! difference is the window's sum) into the collection of `(key, total)` records, exactly as
//! differential's `count_total` does: when a key's total changes at time `t`, the old
//! `(key, total)` is retracted at `t` and the new one inserted at `t`; a total that sums to zero
//! is absent.
//!
//! # Why a dedicated operator, and why it is correct
//! `count_total` keeps an arrangement (a log-structured trace of every update, merged and
//! compacted as the frontier moves) so that it can answer for partially ordered times. Our time
//! is event time, totally ordered, so a key's total at `t` is simply its total before `t` plus
//! the updates at `t`. This operator therefore keeps one ordered map from key to current total
//! and nothing else:
//!
//! * updates are exchanged by key, so each key's updates meet on one worker;
//! * they are held per time (the record's own time, which may lie beyond its message's) until
//!   the input frontier has passed that time (the time is *complete*: no further update at or
//!   before it can arrive), then applied in increasing time;
//! * the updates of one time are sorted by key and the updates of each key summed first, so
//!   each key changes at most once per time: its old total is retracted and the new one
//!   inserted (a zero total is absent and removed), and a change that sums to zero yields
//!   nothing, as with `count_total`.
//!
//! The output therefore depends only on the multiset of updates per time — not on their arrival
//! order, their batching or the number of workers — and sums of fixed-point integers are exact.
//! State is exactly the live keys: a key whose total returns to zero (a window retracted at the
//! end of its retention) is removed.
//!
//! The map is a `BTreeMap`, not a hash map, on purpose: window keys order by (length, start, id),
//! so the keys of one time — the windows that close together, or expire together — are
//! neighbours in the map, and applying them in key order walks a few adjacent leaves. A hash
//! map scatters them, and with a large city every update is a cache miss.

use crate::time::Ms;
use differential_dataflow::difference::Semigroup;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use rustc_hash::FxHasher;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::hash::{Hash, Hasher};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Operator};

/// The updates held for one time, with the capability to send at that time.
type Held<K, R> = (Capability<Ms>, Vec<(K, R)>);

/// The current total of each key of `c` (see the module docs): `(key, total)` records, +1 while
/// current, retracted (−1) when the total changes or returns to zero.
pub fn totals<'s, K, R>(c: VecCollection<'s, Ms, K, R>) -> VecCollection<'s, Ms, (K, R), isize>
where
    K: ExchangeData + Hash,
    R: ExchangeData + Semigroup,
{
    let route = Exchange::new(|(k, _t, _r): &(K, Ms, R)| {
        let mut h = FxHasher::default();
        k.hash(&mut h);
        // The high bits of Fx are the well-mixed ones.
        h.finish().rotate_left(32)
    });
    c.inner
        .unary_frontier(route, "Totals", |_cap, _info| {
            let mut pending: BTreeMap<Ms, Held<K, R>> = BTreeMap::new();
            // Each live key's total.
            let mut current: BTreeMap<K, R> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, batches| {
                    let Some(cap) = cap.retain_least(output.output_index()) else { return };
                    // A record's time may lie beyond its message's (a differential input, or
                    // a temporal filter, sends future updates early): stash by the record's.
                    for batch in batches {
                        for (k, t, r) in batch.drain(..) {
                            let at = pending.entry(t).or_insert_with(|| (cap.delayed(&t), Vec::new()));
                            at.1.push((k, r));
                        }
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (t, (cap, mut updates)) = entry.remove_entry();
                    updates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    let mut session = output.session(&cap);
                    let mut updates = updates.into_iter().peekable();
                    while let Some((key, mut delta)) = updates.next() {
                        // Sum this key's updates at `t`.
                        while let Some((_, more)) = updates.next_if(|(k, _)| *k == key) {
                            delta.plus_equals(&more);
                        }
                        if delta.is_zero() {
                            continue;
                        }
                        match current.entry(key) {
                            Entry::Occupied(mut e) => {
                                session.give(((e.key().clone(), e.get().clone()), t, -1));
                                e.get_mut().plus_equals(&delta);
                                if e.get().is_zero() {
                                    e.remove();
                                } else {
                                    session.give(((e.key().clone(), e.get().clone()), t, 1));
                                }
                            }
                            Entry::Vacant(e) => {
                                session.give(((e.key().clone(), delta.clone()), t, 1));
                                e.insert(delta);
                            }
                        }
                    }
                }
            }
        })
        .as_collection()
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::input::Input;
    use std::sync::{Arc, Mutex};
    use timely::dataflow::operators::Inspect;

    type Change = ((u32, isize), Ms, isize);

    /// `totals` over `updates` on `workers` workers, fed in input order split round-robin.
    fn run(updates: &[(u32, Ms, isize)], workers: usize) -> Vec<Change> {
        let updates = Arc::new(updates.to_vec());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        timely::execute(timely::Config::process(workers), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let sink = sink.clone();
            let mut input = worker.dataflow::<Ms, _, _>(|scope| {
                let (input, c) = scope.new_collection::<u32, isize>();
                totals(c).inner.inspect(move |x: &Change| sink.lock().unwrap().push(*x));
                input
            });
            for &(k, t, r) in updates.iter().skip(index).step_by(peers) {
                input.update_at(k, t, r);
            }
            input.close();
            while worker.step() {}
        })
        .unwrap();
        let mut out = seen.lock().unwrap().clone();
        differential_dataflow::consolidation::consolidate_updates(&mut out);
        out
    }

    /// The definition: at each time in order, every key whose total changed retracts the old
    /// total and inserts the new one; zero totals are absent.
    fn model(updates: &[(u32, Ms, isize)]) -> Vec<Change> {
        let mut by_time: BTreeMap<Ms, Vec<(u32, isize)>> = BTreeMap::new();
        for &(k, t, r) in updates {
            by_time.entry(t).or_default().push((k, r));
        }
        let mut totals: BTreeMap<u32, isize> = BTreeMap::new();
        let mut out = Vec::new();
        for (t, ups) in by_time {
            let before = totals.clone();
            for (k, r) in ups {
                *totals.entry(k).or_default() += r;
            }
            totals.retain(|_, v| *v != 0);
            let keys: std::collections::BTreeSet<u32> = before.keys().chain(totals.keys()).copied().collect();
            for k in &keys {
                let (old, new) = (before.get(k), totals.get(k));
                if old != new {
                    out.extend(old.map(|&o| ((*k, o), t, -1)));
                    out.extend(new.map(|&n| ((*k, n), t, 1)));
                }
            }
        }
        differential_dataflow::consolidation::consolidate_updates(&mut out);
        out
    }

    #[test]
    fn matches_the_definition_on_one_and_several_workers() {
        // A small LCG: many collisions of keys and times, updates that cancel, zero totals.
        let mut x: u64 = 7;
        let mut next = |m: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        let updates: Vec<(u32, Ms, isize)> =
            (0..3000).map(|_| (next(40) as u32, 1 + next(60), next(5) as isize - 2)).collect();
        let expected = model(&updates);
        assert!(expected.iter().any(|(_, _, d)| *d < 0), "the scenario retracts");
        assert_eq!(run(&updates, 1), expected);
        assert_eq!(run(&updates, 2), expected);
        assert_eq!(run(&updates, 3), expected);
    }
}
