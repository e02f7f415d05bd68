//! The identical-query cache: the same query on the same dataset version, asked again by the same
//! operator with the same ε (or ρ), gets the stored noisy answer at no charge.
//!
//! Without it an operator could ask one query N times and average the noise away (each answer
//! costs ε, but a careless grant may allow many). With it, asking again reveals nothing new, so it
//! is free, and the operator's best strategy is to ask once with the ε they need.
//!
//! The key is the sha256 of (operator, dataset, dataset version, normalized plan, amount): the
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
    /// The operator who asked.
    pub operator: String,
    /// The dataset.
    pub dataset: String,
    /// sha256 of the dataset version.
    pub dataset_hash: String,
    /// The normalized query.
    pub normalized: String,
    /// The amount asked for, in the dataset's measure.
    pub amount: Amount,
}

impl CacheKey {
    /// Hex sha256 of the key's parts (length-prefixed, so no two keys collide by concatenation).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let value = self.amount.value.to_bits().to_be_bytes();
        let mut parts = vec![
            self.operator.as_bytes(),
            self.dataset.as_bytes(),
            self.dataset_hash.as_bytes(),
            self.normalized.as_bytes(),
            &value,
        ];
        // Keys of pure-DP answers keep the digest they had before amounts carried their measure;
        // a zCDP answer's key also names its measure, so a ρ never matches an equal ε.
        if self.amount.measure == PrivacyMeasure::Zcdp {
            parts.push(b"zcdp");
        }
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
