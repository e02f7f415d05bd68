//! Filings (备案): releases from data graded `important` (GB/T 43697-2024), in a form a
//! regulator reads and checks offline.
//!
//! When a job whose declared datasets include an `important` one releases its report (at once,
//! or when a reviewer releases it from hold), the broker files it in the same transaction: a
//! numbered filing with the datasets' holders and grades, the scenario's legal basis and use,
//! and the release's signed receipt, recorded as a `filing` audit entry. `GET /v1/filings`
//! (`sluice filings`) exports them as a [`FilingExport`] signed by the broker's key, and
//! `sluice filings verify` checks an export and every receipt in it with nothing but the
//! broker's public key.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::keys::{self, Keys, Receipt};

/// The format an export names.
pub const FORMAT: &str = "sluice-filings-v1";

/// What a filing (备案) says about a release beside its receipt: the terms it was made under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilingTerms {
    /// The datasets the job declared, with their holders and grades.
    pub datasets: Vec<FiledDataset>,
    /// The scenario's legal basis, as the holder states it.
    pub legal_basis: Option<String>,
    /// `public-interest` or `commercial`.
    pub usage: String,
}

/// A dataset as a filing names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FiledDataset {
    /// The dataset.
    pub name: String,
    /// Its holder.
    pub holder: String,
    /// Its grade (`important`, `general`, …).
    pub classification: String,
}

/// One filing as `GET /v1/filings` serves it: its number, when it was filed, its terms and the
/// release's signed receipt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Filing {
    /// Its number, in filing order.
    pub number: i64,
    /// When the report was released (Unix ms).
    pub filed_ms: i64,
    /// The `filing` audit entry.
    pub audit_seq: i64,
    /// The terms.
    #[serde(flatten)]
    pub terms: FilingTerms,
    /// The release's receipt (verifiable on its own).
    pub receipt: Receipt,
}

/// A signed export of filings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilingExport {
    /// [`FORMAT`].
    pub format: String,
    /// When it was made (Unix ms).
    pub generated_at_ms: i64,
    /// The filings made since this moment (Unix ms) are in it.
    pub since_ms: i64,
    /// Whose: `all`, or the holder whose datasets it covers.
    pub scope: String,
    /// The filings, oldest first.
    pub filings: Vec<Filing>,
    /// The broker's public key (hex). Verify against a key you trust, not this field alone.
    pub public_key: String,
    /// ed25519 signature (hex) over the export's canonical JSON without this field.
    #[serde(default)]
    pub signature: String,
}

impl FilingExport {
    /// A signed export of `filings`.
    pub fn new(keys: &Keys, since_ms: i64, scope: String, filings: Vec<Filing>) -> Self {
        let mut e = Self {
            format: FORMAT.into(),
            generated_at_ms: crate::audit::now_ms(),
            since_ms,
            scope,
            filings,
            public_key: keys.public_hex(),
            signature: String::new(),
        };
        e.signature = keys.sign(&e.signed_bytes());
        e
    }

    fn signed_bytes(&self) -> Vec<u8> {
        crate::keys::signed_bytes(FORMAT, self)
    }

    /// Checks the export's signature with `key`, and each filing's receipt: signed by the same
    /// key, for the filing's job. Returns how many filings it holds.
    pub fn verify(&self, key: &ed25519_dalek::VerifyingKey) -> Result<usize> {
        if self.format != FORMAT {
            bail!("not a filings export (format `{}`)", self.format);
        }
        if hex::encode(key.to_bytes()) != self.public_key {
            bail!("the export was signed by a different key than the one given");
        }
        if !keys::verify(key, &self.signed_bytes(), &self.signature) {
            bail!("the export's signature is invalid (it was altered or forged)");
        }
        for f in &self.filings {
            f.receipt
                .verify_signature(key)
                .map_err(|e| anyhow::anyhow!("filing {} (job {}): {e}", f.number, f.receipt.job))?;
        }
        Ok(self.filings.len())
    }
}
