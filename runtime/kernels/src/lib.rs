//! The per-row loops of the scalar functions that Sluice's DP rewrite puts into plans.
//!
//! They live in a crate of their own so that a build profile can optimise them apart from the
//! rest of `sluice-runtime`. The workspace's `release` profile compiles most of the runtime at
//! opt-level 0, because its code runs once per query; these loops run once per row and stay at
//! opt-level 3. Every function here is concrete, never generic: a generic function is compiled in
//! the crate that instantiates it, with that crate's optimisation level.
//!
//! None of these functions fails or panics on any input value. A DP query must not be able to
//! open an error channel that depends on the data.
//!
//! ```
//! use arrow_array::{Array, Float64Array, Int64Array};
//!
//! let ages = Int64Array::from(vec![Some(17), None, Some(130)]);
//! let x = sluice_kernels::to_f64(&ages).expect("integers convert");
//! // Clamped to [0, 100], centred on 50 and scaled by 4: round((x - 50) * 4).
//! let fixed = sluice_kernels::fixed_point(&x, 0.0, 100.0, 50.0, 1, 4.0);
//! assert_eq!(fixed, Int64Array::from(vec![Some(-132), None, Some(200)]));
//!
//! let candidates = [0.0, 10.0, 20.0];
//! let codes = sluice_kernels::rank_codes(&Float64Array::from(vec![10.0, 15.0]), &candidates);
//! assert_eq!(codes, Int64Array::from(vec![Some(3), Some(4)]));
//!
//! assert_eq!(sluice_kernels::random_keys(5).len(), 5);
//! ```

use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, BooleanArray, Date32Array, Float64Array, Int64Array, PrimitiveArray, StringArray,
    StringViewArray, UInt64Array,
};
use rand::RngCore;

pub mod rows;

/// `array` as `Float64` when it is a primitive number column (integers become the nearest
/// float), or `None` for any other type, which the caller casts with Arrow's general cast.
pub fn to_f64(array: &dyn Array) -> Option<Float64Array> {
    let any = array.as_any();
    macro_rules! convert {
        ($($t:ty),*) => {$(
            if let Some(a) = any.downcast_ref::<PrimitiveArray<$t>>() {
                return Some(a.unary::<_, Float64Type>(|v| v as f64));
            }
        )*};
    }
    if let Some(a) = any.downcast_ref::<Float64Array>() {
        return Some(a.clone());
    }
    convert!(
        Float32Type,
        Int64Type,
        Int32Type,
        Int16Type,
        Int8Type,
        UInt64Type,
        UInt32Type,
        UInt16Type,
        UInt8Type
    );
    None
}

/// `sluice_fixed`: each value clamped to `[lo, hi]` and encoded as the integer
/// `round((x - center)^power * scale)`. NULL and NaN become NULL.
pub fn fixed_point(
    input: &Float64Array,
    lo: f64,
    hi: f64,
    center: f64,
    power: i32,
    scale: f64,
) -> Int64Array {
    input
        .iter()
        .map(|v| {
            v.filter(|x| !x.is_nan())
                .map(|x| ((x.clamp(lo, hi) - center).powi(power) * scale).round() as i64)
        })
        .collect()
}

/// Where `x` falls among strictly increasing `candidates`: `2·#(candidates < x) + [x is a
/// candidate]`, or `None` for NaN. The quantile mechanism's scores need only the histogram of these
/// codes.
pub fn rank_code(candidates: &[f64], x: f64) -> Option<i64> {
    if x.is_nan() {
        return None;
    }
    let lt = candidates.partition_point(|c| *c < x);
    let eq = usize::from(candidates.get(lt) == Some(&x));
    Some((2 * lt + eq) as i64)
}

/// `sluice_rank`: the [`rank_code`] of every value; NULL and NaN become NULL.
pub fn rank_codes(input: &Float64Array, candidates: &[f64]) -> Int64Array {
    input
        .iter()
        .map(|v| v.and_then(|x| rank_code(candidates, x)))
        .collect()
}

/// `sluice_random`: `rows` fresh uniformly random `u64`s from the thread's generator. They decide
/// which rows of a privacy unit are kept; noise never comes from here.
pub fn random_keys(rows: usize) -> UInt64Array {
    let mut rng = rand::rng();
    (0..rows).map(|_| rng.next_u64()).collect()
}

/// `sluice_date_key`: the label of every date (days since 1970-01-01); NULL stays NULL.
pub fn date_labels(days: &Date32Array, label: &dyn Fn(i64) -> String) -> StringArray {
    days.iter()
        .map(|d| d.map(|d| label(i64::from(d))))
        .collect()
}

/// A set of privacy units (the units with more rows than a bound), and whether the rows with no
/// unit count as one of them. Integer units are kept as `i64`, every other kind as text: the
/// caller normalises a unit column the same way when it builds the set and when it probes it.
#[derive(Debug, Default)]
pub struct UnitSet {
    ints: std::collections::HashSet<i64, foldhash::fast::RandomState>,
    texts: std::collections::HashSet<String, foldhash::fast::RandomState>,
    /// Whether a NULL unit is in the set.
    pub nulls: bool,
}

impl UnitSet {
    /// A set of integer units.
    pub fn ints(units: &Int64Array, nulls: bool) -> Self {
        Self {
            ints: units.iter().flatten().collect(),
            nulls,
            ..Self::default()
        }
    }

    /// A set of text units.
    pub fn texts(units: &StringArray, nulls: bool) -> Self {
        Self {
            texts: units.iter().flatten().map(str::to_string).collect(),
            nulls,
            ..Self::default()
        }
    }

    /// How many units (not counting the missing unit).
    pub fn len(&self) -> usize {
        self.ints.len() + self.texts.len()
    }

    /// Whether no unit, not even the missing one, is in the set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && !self.nulls
    }

    /// The set as bytes, for a plan that ships it to another process (a cluster's executors):
    /// `b"SLUS1"`, a byte for the missing unit, the integer count and each integer (8 bytes
    /// little-endian), the text count and each text (its length, 4 bytes, then its UTF-8).
    pub fn to_bytes(&self) -> Vec<u8> {
        let texts: usize = self.texts.iter().map(|t| 4 + t.len()).sum();
        let mut out = Vec::with_capacity(22 + 8 * self.ints.len() + texts);
        out.extend_from_slice(Self::MAGIC);
        out.push(u8::from(self.nulls));
        out.extend_from_slice(&(self.ints.len() as u64).to_le_bytes());
        for i in &self.ints {
            out.extend_from_slice(&i.to_le_bytes());
        }
        out.extend_from_slice(&(self.texts.len() as u64).to_le_bytes());
        for t in &self.texts {
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        }
        out
    }

    /// The set [`Self::to_bytes`] wrote, or why `bytes` is not one (truncated, trailing bytes,
    /// text that is not UTF-8). Never panics on any input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        struct Reader<'a>(&'a [u8]);
        impl<'a> Reader<'a> {
            fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
                if self.0.len() < n {
                    return Err("a unit set's bytes end early".into());
                }
                let (head, rest) = self.0.split_at(n);
                self.0 = rest;
                Ok(head)
            }
            fn u64(&mut self) -> Result<u64, String> {
                Ok(u64::from_le_bytes(
                    self.take(8)?.try_into().unwrap_or_default(),
                ))
            }
        }
        let mut r = Reader(bytes);
        if r.take(Self::MAGIC.len())? != Self::MAGIC {
            return Err("not a unit set".into());
        }
        let mut set = Self {
            nulls: r.take(1)?[0] != 0,
            ..Self::default()
        };
        let ints = r.u64()?;
        for _ in 0..ints {
            set.ints.insert(r.u64()? as i64);
        }
        let texts = r.u64()?;
        for _ in 0..texts {
            let len = u32::from_le_bytes(r.take(4)?.try_into().unwrap_or_default()) as usize;
            let text = std::str::from_utf8(r.take(len)?)
                .map_err(|_| "a unit set's text is not UTF-8".to_string())?;
            set.texts.insert(text.to_string());
        }
        if !r.0.is_empty() {
            return Err("a unit set's bytes go on after its last unit".into());
        }
        Ok(set)
    }

    const MAGIC: &'static [u8] = b"SLUS1";

    /// Per row, whether its unit is in the set (never NULL).
    pub fn mark_ints(&self, units: &Int64Array) -> BooleanArray {
        units
            .iter()
            .map(|u| Some(u.map_or(self.nulls, |u| self.ints.contains(&u))))
            .collect()
    }

    /// Per row, whether its unit is in the set (never NULL).
    pub fn mark_texts(&self, units: &StringArray) -> BooleanArray {
        units
            .iter()
            .map(|u| Some(u.map_or(self.nulls, |u| self.texts.contains(u))))
            .collect()
    }

    /// Per row, whether its unit is in the set (never NULL).
    pub fn mark_text_views(&self, units: &StringViewArray) -> BooleanArray {
        units
            .iter()
            .map(|u| Some(u.map_or(self.nulls, |u| self.texts.contains(u))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_sets_mark_members_and_the_missing_unit_as_declared() {
        let heavy = UnitSet::ints(&Int64Array::from(vec![Some(2), None, Some(9)]), false);
        assert_eq!((heavy.len(), heavy.is_empty()), (2, false));
        let rows = Int64Array::from(vec![Some(1), Some(2), None, Some(9)]);
        assert_eq!(
            heavy.mark_ints(&rows),
            BooleanArray::from(vec![false, true, false, true])
        );
        let texts = UnitSet::texts(&StringArray::from(vec!["a"]), true);
        assert_eq!(
            texts.mark_texts(&StringArray::from(vec![Some("a"), Some("b"), None])),
            BooleanArray::from(vec![true, false, true])
        );
        assert_eq!(
            texts.mark_text_views(&StringViewArray::from(vec![Some("b"), None, Some("a")])),
            BooleanArray::from(vec![false, true, true])
        );
        let both = UnitSet {
            nulls: true,
            ..UnitSet::texts(&StringArray::from(vec!["a", "é", ""]), true)
        };
        let ints = UnitSet::ints(&Int64Array::from(vec![i64::MIN, 0, 7]), false);
        for set in [&both, &ints, &UnitSet::default()] {
            let back = UnitSet::from_bytes(&set.to_bytes()).unwrap();
            assert_eq!(
                (back.ints.clone(), back.texts.clone(), back.nulls),
                (set.ints.clone(), set.texts.clone(), set.nulls)
            );
            let bytes = set.to_bytes();
            for cut in 0..bytes.len() {
                assert!(UnitSet::from_bytes(&bytes[..cut]).is_err(), "{cut}");
            }
            assert!(UnitSet::from_bytes(&[bytes.as_slice(), &[0]].concat()).is_err());
        }
        assert!(UnitSet::default().is_empty());
        assert!(
            !UnitSet {
                nulls: true,
                ..UnitSet::default()
            }
            .is_empty()
        );
    }

    #[test]
    fn numbers_convert_and_other_types_are_left_to_the_caller() {
        let ints = arrow_array::Int32Array::from(vec![Some(-3), None, Some(7)]);
        assert_eq!(
            to_f64(&ints),
            Some(Float64Array::from(vec![Some(-3.0), None, Some(7.0)]))
        );
        let unsigned = arrow_array::UInt8Array::from(vec![255]);
        assert_eq!(to_f64(&unsigned), Some(Float64Array::from(vec![255.0])));
        assert_eq!(to_f64(&StringArray::from(vec!["1.5"])), None);
    }

    #[test]
    fn fixed_point_clamps_squares_and_never_fails() {
        let x = Float64Array::from(vec![
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            Some(2.5),
            None,
        ]);
        // Bounds [0, 10], centre 5, squared, scale 2: (clamp(x) - 5)^2 * 2.
        let out = fixed_point(&x, 0.0, 10.0, 5.0, 2, 2.0);
        assert_eq!(
            out,
            Int64Array::from(vec![None, Some(50), Some(50), Some(13), None])
        );
    }

    #[test]
    fn rank_codes_count_candidates_below_and_equal() {
        let candidates = [1.0, 2.0, 3.0];
        let x = Float64Array::from(vec![
            Some(0.5),
            Some(1.0),
            Some(2.5),
            Some(3.0),
            Some(9.0),
            Some(f64::NAN),
            None,
        ]);
        assert_eq!(
            rank_codes(&x, &candidates),
            Int64Array::from(vec![
                Some(0),
                Some(1),
                Some(4),
                Some(5),
                Some(6),
                None,
                None
            ])
        );
    }

    #[test]
    fn random_keys_are_fresh_and_use_every_bit() {
        let a = random_keys(4096);
        let b = random_keys(4096);
        assert_eq!((a.len(), a.null_count()), (4096, 0));
        // Two batches of 4096 independent uniform u64s share a value with probability < 2^-39.
        let mut seen: Vec<u64> = a
            .values()
            .iter()
            .chain(b.values().iter())
            .copied()
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 8192);
        // Each bit is set in about half of 8192 draws: outside [3800, 4392] (6.5 standard
        // deviations) with probability < 1e-9 per bit, < 1e-7 for all 64.
        for bit in 0..64 {
            let ones = seen.iter().filter(|v| *v >> bit & 1 == 1).count();
            assert!((3800..=4392).contains(&ones), "bit {bit}: {ones}");
        }
    }

    #[test]
    fn date_labels_keep_nulls() {
        let days = Date32Array::from(vec![Some(0), None, Some(-1)]);
        let out = date_labels(&days, &|d| format!("day {d}"));
        assert_eq!(
            out,
            StringArray::from(vec![Some("day 0"), None, Some("day -1")])
        );
    }
}
