//! The per-unit loop of a job's row function: a fresh instance, one call per row, fuel per row
//! and per unit, and every failure turned into the declared default. It lives here, at
//! opt-level 3 in every profile, because wasmtime's store, instantiation and call paths are
//! generic and are compiled into the crate that calls them.

use arrow_array::{Array, Float64Array};
use wasmtime::{Engine, InstancePre, ModuleExport, Store, Trap, Val};

/// One row function, ready to run over units.
pub struct RowCall<'a> {
    /// The engine its module was compiled on.
    pub engine: &'a Engine,
    /// Its module, linked (it imports nothing).
    pub pre: &'a InstancePre<()>,
    /// Its export.
    pub export: &'a ModuleExport,
    /// Clamp bounds of the output.
    pub lo: f64,
    /// Clamp bounds of the output.
    pub hi: f64,
    /// What a row gets when the call fails or returns a non-finite number.
    pub default: f64,
    /// Fuel per call.
    pub fuel_per_row: u64,
    /// Fuel per unit (instantiation included).
    pub fuel_per_unit: u64,
}

impl RowCall<'_> {
    /// The function over one unit's rows (`args[a]`: argument `a` of each row, NULL as NaN) in a
    /// fresh instance: one output per row, clamped; a trap, fuel running out (the row's or the
    /// unit's) or a non-finite result gives the default. An instance that cannot be created
    /// for a reason other than the module's own start trapping (the pool is full) is an error.
    pub fn run_unit(&self, args: &[Float64Array], rows: usize) -> Result<Vec<f64>, String> {
        let mut out = vec![self.default; rows];
        let mut store = Store::new(self.engine, ());
        store
            .set_fuel(self.fuel_per_unit)
            .map_err(|e| e.to_string())?;
        let instance = match self.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) if e.downcast_ref::<Trap>().is_some() => return Ok(out),
            Err(e) => return Err(format!("cannot instantiate the row function: {e}")),
        };
        let mut unit_left = store.get_fuel().unwrap_or(0);
        let Some(func) = instance
            .get_module_export(&mut store, self.export)
            .and_then(|e| e.into_func())
        else {
            return Err("the row function is not a function".into());
        };
        let mut params = vec![Val::F64(0); args.len()];
        let mut result = [Val::F64(0)];
        for (r, slot) in out.iter_mut().enumerate() {
            if unit_left == 0 {
                break;
            }
            for (p, a) in params.iter_mut().zip(args) {
                let v = if a.is_null(r) { f64::NAN } else { a.value(r) };
                *p = Val::F64(v.to_bits());
            }
            let budget = unit_left.min(self.fuel_per_row);
            if store.set_fuel(budget).is_err() {
                break;
            }
            let called = func.call(&mut store, &params, &mut result);
            let left = store.get_fuel().unwrap_or(0);
            unit_left -= budget - left.min(budget);
            if called.is_ok()
                && let Val::F64(bits) = result[0]
            {
                let v = f64::from_bits(bits);
                if v.is_finite() {
                    *slot = v.clamp(self.lo, self.hi);
                }
            }
        }
        Ok(out)
    }
}
