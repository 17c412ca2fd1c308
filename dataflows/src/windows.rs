//! Temporal helpers shared by every domain: validity intervals and persistence.
//!
//! Differential has no window operator; time-bounded facts are expressed by *when* a record is
//! present. [`during`] makes a record present only over `[from, until)` of event time (the
//! temporal filter of Materialize): a record inserted at `t` becomes an insertion at
//! `max(t, from)` and a retraction at `max(t, until)`. A retraction of the source maps the same
//! way with opposite sign, so the two always cancel: the operator is linear and needs no state.
//!
//! [`persisted`] turns a per-window condition into "held for `n` consecutive windows": each
//! window where the condition holds votes for itself and the `n − 1` windows after it; a window
//! with `n` votes ends a run of `n`. The result is present from the close of that window until
//! the close of the next one, so consecutive runs join seamlessly and a broken run clears the
//! condition exactly when the window that broke it closes. Both are deterministic for any worker
//! count because they are pure functions of each record plus exact integer counts.

use crate::time::Ms;
use crate::totals::totals;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use timely::dataflow::operators::vec::Map;

/// Keeps each record present only during the event-time interval `interval(record)`.
pub fn during<'s, D>(
    c: VecCollection<'s, Ms, D>,
    interval: impl Fn(&D) -> (Ms, Ms) + 'static,
) -> VecCollection<'s, Ms, D>
where
    D: ExchangeData,
{
    c.inner
        .flat_map(move |(d, t, r): (D, Ms, isize)| {
            let (from, until) = interval(&d);
            let (a, b) = (t.max(from), t.max(until));
            if a < b { vec![(d.clone(), a, r), (d, b, -r)] } else { Vec::new() }
        })
        .as_collection()
}

/// The keys whose condition held in `n` consecutive windows of length `len` (see module docs).
///
/// `cond` must be a set of `(key, window start)` (each present at most once).
pub fn persisted<'s, K>(cond: VecCollection<'s, Ms, (K, Ms)>, len: Ms, n: u32) -> VecCollection<'s, Ms, K>
where
    K: ExchangeData + std::hash::Hash,
{
    let n64 = n as Ms;
    let runs = totals(cond.flat_map(move |(k, start)| (0..n64).map(move |i| (k.clone(), start + i * len))))
        .filter(move |(_, votes)| *votes == n as isize)
        .map(|(key_start, _)| key_start);
    during(runs, move |(_, start)| (start + len, start + 2 * len)).map(|(k, _)| k)
}
