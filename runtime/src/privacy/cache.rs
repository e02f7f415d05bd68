//! The identical-query cache: the same query on the same dataset version, asked again with the
//! same ε (or ρ) under the same release terms, gets the stored noisy answer at no charge, whoever
//! asks.
//!
//! Without it an operator could ask one query N times and average the noise away (each answer
//! costs ε, but a careless grant may allow many), and N operators granted on one dataset could
//! each ask once and average their answers. With it, asking again reveals nothing new, so it is
//! free: the promise is to the people in the data, and a repeat of a release is no new release of
//! their data. The operator is not part of the key; the release terms of the grant (its minimum
//! group count and its δ per query, which change what a release shows) are.
//!
//! The key is the sha256 of (dataset, dataset version, normalized plan, amount, terms): the
//! normalized plan is DataFusion's canonical logical plan text, so whitespace, case and alias
//! spelling do not make a "different" query. An answer is stored only after its charge was
//! committed; two identical queries racing are each charged, and the first stored answer wins.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use sluice_policy::PrivacyMeasure;

use super::amount::Amount;
use crate::report::NoisyTable;

/// What identifies an answer.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheKey {
    /// The operator who asked (for the audit log; not part of the key).
    pub operator: String,
    /// The dataset.
    pub dataset: String,
    /// sha256 of the dataset version.
    pub dataset_hash: String,
    /// The normalized query.
    pub normalized: String,
    /// The amount asked for, in the dataset's measure.
    pub amount: Amount,
    /// The grant's terms that change what a release shows (suppression, partition selection's
    /// δ), canonical text.
    pub terms: String,
}

impl CacheKey {
    /// Hex sha256 of the key's parts (length-prefixed, so no two keys collide by concatenation).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let value = self.amount.value.to_bits().to_be_bytes();
        let mut parts = vec![
            self.dataset.as_bytes(),
            self.dataset_hash.as_bytes(),
            self.normalized.as_bytes(),
            &value,
        ];
        // A zCDP answer's key names its measure, so a ρ never matches an equal ε.
        if self.amount.measure == PrivacyMeasure::Zcdp {
            parts.push(b"zcdp");
        }
        parts.push(self.terms.as_bytes());
        for part in parts {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        hex::encode(h.finalize())
    }
}

/// Stores released answers. The broker keeps them in its database; [`InMemoryAnswerCache`] keeps
/// them for the life of a sandbox.
pub trait AnswerCache: Send + Sync {
    /// The stored answer for `key`, if any. `job` is the job asking now (for the audit log).
    fn lookup(&self, key: &CacheKey, job: &str) -> Option<NoisyTable>;
    /// Stores `table` as the answer for `key` unless one is stored already.
    fn store(&self, key: &CacheKey, table: &NoisyTable);
}

/// An in-memory cache, forgotten when the sandbox stops.
#[derive(Debug, Default)]
pub struct InMemoryAnswerCache {
    answers: Mutex<HashMap<String, NoisyTable>>,
}

impl InMemoryAnswerCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

impl AnswerCache for InMemoryAnswerCache {
    fn lookup(&self, key: &CacheKey, _job: &str) -> Option<NoisyTable> {
        self.answers.lock().ok()?.get(&key.digest()).cloned()
    }

    fn store(&self, key: &CacheKey, table: &NoisyTable) {
        if let Ok(mut m) = self.answers.lock() {
            m.entry(key.digest()).or_insert_with(|| table.clone());
        }
    }
}
