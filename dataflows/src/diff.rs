//! Abelian sum types used as differential "diffs".
//!
//! Windowed aggregates are kept *in the diff*: a reading enters differential as the record
//! `(window key)` with the difference `FlowSum { count: 12, … }`, and [`crate::totals::totals`] yields the
//! exact per-key sum. Sums of integers are associative and commutative, so the result does not
//! depend on arrival order, pre-aggregation, or the number of workers — the reason every
//! quantity here is a fixed-point integer and never an `f64`.

/// Implements differential's `IsZero`, `Semigroup`, `Monoid`, `Abelian` and `Multiply<isize>`
/// for a struct of `i64` fields, field by field.
macro_rules! abelian_struct {
    ($name:ident { $($field:ident),+ $(,)? }) => {
        impl differential_dataflow::difference::IsZero for $name {
            #[inline]
            fn is_zero(&self) -> bool {
                $(self.$field == 0)&&+
            }
        }
        impl differential_dataflow::difference::Semigroup for $name {
            #[inline]
            fn plus_equals(&mut self, rhs: &Self) {
                $(self.$field += rhs.$field;)+
            }
        }
        impl differential_dataflow::difference::Monoid for $name {
            #[inline]
            fn zero() -> Self {
                Self::default()
            }
        }
        impl differential_dataflow::difference::Abelian for $name {
            #[inline]
            fn negate(&mut self) {
                $(self.$field = -self.$field;)+
            }
        }
        impl differential_dataflow::difference::Multiply<isize> for $name {
            type Output = $name;
            #[inline]
            fn multiply(self, rhs: &isize) -> Self {
                let k = *rhs as i64;
                $name { $($field: self.$field * k),+ }
            }
        }
    };
}

pub(crate) use abelian_struct;
