//! The row functions of the tourism-per-person sample. Each runs inside the sandbox over the
//! trips of one visitor at a time; only its clamped output reaches an aggregate.

use std::sync::atomic::{AtomicU32, Ordering};

// What one member of a travelling group spent on a trip: the trip's spend over its group size.
// Public bounds: 0 to 2,000 CNY per person (above that is clamped).
sluice_guest::row_function!(per_person(spend, group_size) in [0.0, 2000.0] default 0.0 => {
    if spend.is_nan() || group_size.is_nan() {
        return 0.0;
    }
    spend / group_size.max(1.0)
});

/// Trips of this visitor seen so far by its instance: state within one visitor's rows.
static SEEN: AtomicU32 = AtomicU32::new(0);

// 1 for a visitor's trips after their first (a returning visitor's), else 0: state carried across
// one visitor's rows, which a fresh instance per visitor keeps from leaking to the next.
sluice_guest::row_function!(repeat_trip(spend) in [0.0, 1.0] default 0.0 => {
    let _ = spend;
    let n = SEEN.fetch_add(1, Ordering::Relaxed);
    if n == 0 { 0.0 } else { 1.0 }
});
