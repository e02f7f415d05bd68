//! Row functions that try what a hostile job would: carry state from one privacy unit to the
//! next, spin forever, eat memory, trap on rows it picks, return NaN or huge numbers. The engine
//! must turn each into the declared default or a clamped value, and keep units apart.

use std::sync::atomic::{AtomicU64, Ordering};

/// Calls this instance has seen.
static CALLS: AtomicU64 = AtomicU64::new(0);
/// The argument of the previous call in this instance (bits), 0 at first.
static LAST: AtomicU64 = AtomicU64::new(0);

// How many calls this instance saw before this one: within a unit 0, 1, 2, …; an instance
// shared across units would keep counting.
sluice_guest::row_function!(carry(x) in [0.0, 10.0] default 9.0 => {
    let _ = x;
    CALLS.fetch_add(1, Ordering::Relaxed) as f64
});

// The previous row's argument: tries to pass one unit's value to the next unit.
sluice_guest::row_function!(last(x) in [0.0, 100.0] default 0.0 => {
    f64::from_bits(LAST.swap(x.to_bits(), Ordering::Relaxed))
});

// Traps on rows it picks (x above 50), else returns x.
sluice_guest::row_function!(trap_above(x) in [0.0, 100.0] default 7.0 => {
    if x > 50.0 {
        std::process::abort()
    }
    x
});

// The same outputs without trapping: the default where `trap_above` traps.
sluice_guest::row_function!(default_above(x) in [0.0, 100.0] default 7.0 => {
    if x > 50.0 { 7.0 } else { x }
});

// Never returns.
sluice_guest::row_function!(spin(x) in [0.0, 100.0] default 3.0 => {
    let mut v = x;
    loop {
        v = core::hint::black_box(v + 1.0);
    }
});

// Spins only on rows above 50: the unit's fuel runs out after enough of them.
sluice_guest::row_function!(spin_above(x) in [0.0, 100.0] default 3.0 => {
    let mut v = x;
    while v > 50.0 {
        v = core::hint::black_box(v + 1.0);
    }
    v
});

// Allocates until memory runs out (the instance's cap), which aborts.
sluice_guest::row_function!(grow(x) in [0.0, 100.0] default 5.0 => {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1 << 20]);
        if hoard.len() > 1 << 20 {
            return x + hoard.len() as f64;
        }
    }
});

// NaN, then an infinity, then a huge finite number, by argument.
sluice_guest::row_function!(wild(x) in [0.0, 100.0] default 1.0 => {
    if x < 1.0 { f64::NAN } else if x < 2.0 { f64::INFINITY } else { 1e300 }
});
