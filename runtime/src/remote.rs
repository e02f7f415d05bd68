//! Executing plans on another engine: a cluster (Apache Ballista, through `sluice-scale`) that
//! runs the bounded, clamped aggregation plans of large datasets, while validation, design, the
//! charge and the noise stay in this process.
//!
//! The runtime does not know Ballista: a [`RemoteEngine`] is a DataFusion [`SessionContext`] whose
//! query planner ships physical planning and execution elsewhere (Ballista's client state). The
//! catalog registers each dataset that is scanned from its file (not held in memory) in that
//! context too, by its absolute path, which every executor must be able to read; the engine then
//! plans those datasets' queries there. What the other engine must provide is here: the scalar
//! functions the DP rewrite inserts ([`execution_udfs`], stateless, found by name) and the one
//! that carries state, `sluice_heavy` with its set of heavy units ([`encode_udf`],
//! [`decode_udf`]), which a plan codec ships inside the plan.
//!
//! What stays local, always: queries that join a public lookup (lookups are held in this process's
//! memory) and queries with row functions (their modules run in this process's sandbox). Both
//! read the same file, so their answers are those of the same dataset version.

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

use crate::privacy::udf::{FixedPoint, InUnits, RandomKey, RankCode};

/// A context whose plans execute on another engine.
#[derive(Clone)]
pub struct RemoteEngine {
    /// How audit entries and receipts name the engine that answered, e.g.
    /// `ballista http://10.0.0.5:50050`.
    pub name: String,
    /// The context: datasets and the DP rewrite's functions are registered in it by the catalog.
    pub context: SessionContext,
    /// An address (`host:port`) that must accept a TCP connection before a query is charged:
    /// the scheduler. A query it would run while that is down is refused before its charge.
    pub probe: Option<String>,
}

impl RemoteEngine {
    /// Whether the probe address accepts a connection within 2 s (true without one).
    pub(crate) async fn reachable(&self) -> bool {
        let Some(addr) = &self.probe else {
            return true;
        };
        let connect = tokio::net::TcpStream::connect(addr.as_str());
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(2), connect).await,
            Ok(Ok(_))
        )
    }
}

impl std::fmt::Debug for RemoteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEngine")
            .field("name", &self.name)
            .finish()
    }
}

/// The name audit entries and receipts give the engine in this process.
pub const LOCAL: &str = "local";

/// The stateless scalar functions the DP rewrite inserts into execution plans: every process
/// that plans or executes them (a scheduler, an executor) registers these under their names.
pub fn execution_udfs() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(FixedPoint::udf()),
        Arc::new(RandomKey::udf()),
        Arc::new(RankCode::udf()),
        Arc::new(crate::privacy::dates::DateKey::udf()),
    ]
}

/// The state a plan must carry for `udf`, or `None` when the function is found by name alone.
/// Only `sluice_heavy` has any: its set of heavy units, which never appears in a plan's text.
pub fn encode_udf(udf: &ScalarUDF) -> Option<Vec<u8>> {
    let any: &dyn std::any::Any = udf.inner().as_ref();
    any.downcast_ref::<InUnits>().map(|f| f.set().to_bytes())
}

/// The function `name` with the state [`encode_udf`] wrote, `Ok(None)` for a name that is not
/// a function with state, or why the bytes are not its state.
pub fn decode_udf(name: &str, bytes: &[u8]) -> Result<Option<ScalarUDF>, String> {
    if name != InUnits::NAME {
        return Ok(None);
    }
    let set = sluice_kernels::UnitSet::from_bytes(bytes)?;
    Ok(Some(InUnits::udf(Arc::new(set))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{BooleanArray, Int64Array};

    #[test]
    fn the_heavy_units_function_crosses_a_process_boundary_with_its_set() {
        let set = sluice_kernels::UnitSet::ints(&Int64Array::from(vec![3, 9]), true);
        let udf = InUnits::udf(Arc::new(set));
        let bytes = encode_udf(&udf).expect("sluice_heavy carries its set");
        let back = decode_udf(InUnits::NAME, &bytes).unwrap().unwrap();
        let any: &dyn std::any::Any = back.inner().as_ref();
        let back = any.downcast_ref::<InUnits>().unwrap();
        let marks = back
            .set()
            .mark_ints(&Int64Array::from(vec![Some(3), Some(4), None]));
        assert_eq!(marks, BooleanArray::from(vec![true, false, true]));
        // Stateless functions travel by name; other names are not ours to decode.
        assert!(execution_udfs().iter().all(|f| encode_udf(f).is_none()));
        assert!(decode_udf("sluice_fixed", &[]).unwrap().is_none());
        assert!(decode_udf(InUnits::NAME, b"junk").is_err());
    }
}
