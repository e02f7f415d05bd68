//! The broker's signing key (ed25519), signed audit checkpoints and release receipts.
//!
//! The key is made by `sluice init` and kept in `<data-dir>/broker.key` (hex, owner-only), or
//! where `init --key-file` put it, away from the database it signs for: then
//! `<data-dir>/broker.key.location` names that file (and `SLUICE_SIGNING_KEY`, when set, names it
//! for every command). `<data-dir>/broker.pub` is the public key a reviewer verifies
//! checkpoints and receipts with; reviewers should keep their own copy of it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

/// The broker's key pair.
pub struct Keys {
    signing: SigningKey,
}

impl Keys {
    /// A new random key pair.
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::from_bytes(&random_bytes::<32>()),
        }
    }

    /// Writes `broker.key` (mode 0600) and `broker.pub` into `dir`; refuses to overwrite a key.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_at(dir, &dir.join("broker.key"))
    }

    /// Writes the private key to `key` (mode 0600), and `broker.pub` into `dir` with, when `key`
    /// is elsewhere, `broker.key.location` naming it; refuses to overwrite a key.
    pub fn save_at(&self, dir: &Path, key: &Path) -> Result<()> {
        if key.exists() {
            bail!(
                "{} already exists; refusing to replace a signing key",
                key.display()
            );
        }
        write_private(key, &hex::encode(self.signing.to_bytes()))?;
        if key != dir.join("broker.key") {
            let abs = std::fs::canonicalize(key).unwrap_or_else(|_| key.to_path_buf());
            std::fs::write(
                dir.join("broker.key.location"),
                abs.display().to_string() + "\n",
            )
            .context("while writing broker.key.location")?;
        }
        std::fs::write(dir.join("broker.pub"), self.public_hex() + "\n")
            .context("while writing broker.pub")?;
        Ok(())
    }

    /// Where the signing key of data directory `dir` is: `SLUICE_SIGNING_KEY`, else the file
    /// `broker.key.location` names, else `<dir>/broker.key`.
    pub fn path(dir: &Path) -> Result<std::path::PathBuf> {
        if let Some(p) = std::env::var_os("SLUICE_SIGNING_KEY") {
            return Ok(p.into());
        }
        let pointer = dir.join("broker.key.location");
        if pointer.is_file() {
            let text = std::fs::read_to_string(&pointer)
                .with_context(|| format!("while reading {}", pointer.display()))?;
            return Ok(text.trim().into());
        }
        Ok(dir.join("broker.key"))
    }

    /// Reads the signing key of data directory `dir` (see [`Keys::path`]).
    pub fn load(dir: &Path) -> Result<Self> {
        let path = Self::path(dir)?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("while reading {}", path.display()))?;
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("{} is not a hex ed25519 key", path.display()))?;
        Ok(Self {
            signing: SigningKey::from_bytes(&bytes),
        })
    }

    /// The public key, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    /// Signs `msg`; hex signature.
    pub fn sign(&self, msg: &[u8]) -> String {
        hex::encode(self.signing.sign(msg).to_bytes())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("while creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("while writing {}", path.display()))
}

/// Parses a hex public key.
pub fn public_key(hex_key: &str) -> Result<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("not a hex ed25519 public key (64 hex digits)")?;
    VerifyingKey::from_bytes(&bytes).context("not a valid ed25519 public key")
}

/// Whether `sig_hex` is `key`'s signature of `msg`.
pub fn verify(key: &VerifyingKey, msg: &[u8], sig_hex: &str) -> bool {
    let Some(bytes) = hex::decode(sig_hex)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    else {
        return false;
    };
    key.verify(msg, &Signature::from_bytes(&bytes)).is_ok()
}

/// One dataset version a job read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetVersion {
    /// The dataset.
    pub name: String,
    /// sha256 of its source.
    pub sha256: String,
}

/// A signed statement of what was released, under which policy, at what privacy cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    /// Format version: 2 when it names the purpose and reviewers, 1 before they existed (such
    /// receipts still verify).
    pub version: u32,
    /// The job.
    pub job: String,
    /// The operator it was released to.
    pub operator: String,
    /// sha256 of the job's wasm.
    pub wasm_sha256: String,
    /// sha256 of the policy in force.
    pub policy_sha256: String,
    /// The dataset versions the job could read.
    pub datasets: Vec<DatasetVersion>,
    /// Total ε charged to the job.
    pub epsilon: f64,
    /// Total δ charged to the job.
    pub delta: f64,
    /// Total ρ charged to the job on zCDP datasets (absent, and not signed, when 0, so that
    /// receipts issued before zCDP existed still verify).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rho: f64,
    /// The scenario the job ran under, if it named one (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// The purpose the job was submitted for (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The reviewers who approved the job or released its held report, in order (version 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviewers: Vec<String>,
    /// Who besides the operator may fetch the report: the scenario's recipients (version 2;
    /// absent, and not signed, when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// sha256 of the risk report the job was approved on (version 2; absent, and not signed,
    /// when the job needed no review or its approval named no report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_report_sha256: Option<String>,
    /// The job's row functions its queries aggregated: code that read rows inside the sandbox,
    /// each with its declared bounds and its module's sha256 (absent, and not signed, when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_functions: Vec<String>,
    /// The engines other than the broker itself that computed the report's answers (a Ballista
    /// cluster, by its scheduler's address; absent, and not signed, when the broker computed
    /// every answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<String>,
    /// Sequence number of the audit entry recording the release.
    pub audit_seq: i64,
    /// sha256 of the report as JSON (the exact bytes `result` serves).
    pub report_sha256: String,
    /// sha256 of the report as CSV.
    pub report_csv_sha256: String,
    /// When it was issued (Unix ms).
    pub issued_at_ms: i64,
    /// The broker's public key (hex). Verify against a key you trust, not this field alone.
    pub public_key: String,
    /// ed25519 signature (hex) over the receipt's canonical JSON without this field.
    #[serde(default)]
    pub signature: String,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// What the broker signs of a signed document (a receipt, a filings export, a statement, a
/// certificate): `format`, a newline, and the document's canonical JSON (keys sorted) without
/// its `signature` field.
pub fn signed_bytes(format: &str, document: &impl Serialize) -> Vec<u8> {
    let mut v = serde_json::to_value(document).expect("a signed document serializes");
    if let Some(m) = v.as_object_mut() {
        m.remove("signature");
    }
    format!("{format}\n{v}").into_bytes()
}

impl Receipt {
    fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes("sluice-receipt-v1", self)
    }

    /// Signs the receipt in place.
    pub fn sign(&mut self, keys: &Keys) {
        self.public_key = keys.public_hex();
        self.signature = keys.sign(&self.signed_bytes());
    }

    /// Checks the signature with `key` (not the report it covers).
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<()> {
        if hex::encode(key.to_bytes()) != self.public_key {
            bail!("the receipt was signed by a different key than the one given");
        }
        if !verify(key, &self.signed_bytes(), &self.signature) {
            bail!("the receipt's signature is invalid (the receipt was altered or forged)");
        }
        Ok(())
    }

    /// Checks the signature with `key` and that `report` (JSON or CSV bytes) is the report it
    /// covers.
    pub fn verify(&self, key: &VerifyingKey, report: &[u8]) -> Result<()> {
        self.verify_signature(key)?;
        let h = sha256_hex(report);
        if h != self.report_sha256 && h != self.report_csv_sha256 {
            bail!(
                "the report does not match the receipt: its sha256 is {h}, the receipt covers {} (JSON) or {} (CSV)",
                self.report_sha256,
                self.report_csv_sha256
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(keys: &Keys) -> Receipt {
        let mut r = Receipt {
            version: 1,
            job: "job-1".into(),
            operator: "op".into(),
            wasm_sha256: sha256_hex(b"wasm"),
            policy_sha256: sha256_hex(b"policy"),
            datasets: vec![],
            epsilon: 0.5,
            delta: 0.0,
            rho: 0.0,
            scenario: None,
            purpose: None,
            reviewers: vec![],
            recipients: vec![],
            risk_report_sha256: None,
            row_functions: vec![],
            engines: vec![],
            audit_seq: 7,
            report_sha256: sha256_hex(b"{}"),
            report_csv_sha256: sha256_hex(b"csv"),
            issued_at_ms: 1,
            public_key: String::new(),
            signature: String::new(),
        };
        r.sign(keys);
        r
    }

    /// Finite amounts at the edges of f64 (subnormals, huge exponents, 17 significant digits,
    /// values an attack run saw break verification), then seeded random bit patterns.
    fn extreme_floats() -> Vec<f64> {
        let mut v = vec![
            7.888609052210118e-29,
            0.400_001_201_000_000_03,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            0.1 + 0.2,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        while v.len() < 3000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for x in [f64::from_bits(state), f64::from_bits(state >> 12)] {
                if x.is_finite() {
                    v.push(x.abs());
                }
            }
        }
        v
    }

    #[test]
    fn receipts_with_extreme_amounts_verify_after_a_round_trip_through_their_json() {
        let keys = Keys::generate();
        let key = public_key(&keys.public_hex()).unwrap();
        for x in extreme_floats() {
            let mut r = receipt(&keys);
            (r.epsilon, r.delta, r.rho) = (x, x / 3.0, x * 0.7);
            r.sign(&keys);
            // As served, then as read back by `sluice receipt verify`.
            let read: Receipt = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            read.verify(&key, b"{}")
                .unwrap_or_else(|e| panic!("a receipt with ε {x:e}: {e}"));
            let mut forged = read.clone();
            forged.epsilon = if x == 0.0 { 1.0 } else { x / 2.0 };
            assert!(forged.verify(&key, b"{}").is_err(), "ε {x:e}");
        }
    }

    #[test]
    fn version_2_signs_purpose_and_reviewers_and_version_1_still_verifies() {
        let keys = Keys::generate();
        let key = public_key(&keys.public_hex()).unwrap();
        // A version-1 receipt as issued before purpose and reviewers existed: no such fields.
        let v1 = receipt(&keys);
        let text = serde_json::to_string(&v1).unwrap();
        assert!(
            !text.contains("purpose") && !text.contains("reviewers"),
            "{text}"
        );
        let read: Receipt = serde_json::from_str(&text).unwrap();
        read.verify(&key, b"{}").unwrap();
        let mut v2 = Receipt {
            version: 2,
            purpose: Some("public health planning".into()),
            reviewers: vec!["rita".into()],
            ..receipt(&keys)
        };
        v2.sign(&keys);
        let read: Receipt = serde_json::from_str(&serde_json::to_string(&v2).unwrap()).unwrap();
        read.verify(&key, b"{}").unwrap();
        let mut forged = read.clone();
        forged.reviewers.push("mallory".into());
        assert!(forged.verify(&key, b"{}").is_err());
        let mut forged = read.clone();
        forged.purpose = Some("marketing".into());
        assert!(forged.verify(&key, b"{}").is_err());
        // The risk report's hash is signed too, once present.
        let mut with_risk = Receipt {
            risk_report_sha256: Some(sha256_hex(b"report")),
            ..read
        };
        with_risk.sign(&keys);
        with_risk.verify(&key, b"{}").unwrap();
        with_risk.risk_report_sha256 = Some(sha256_hex(b"another report"));
        assert!(with_risk.verify(&key, b"{}").is_err());
    }

    #[test]
    fn a_receipt_verifies_and_any_change_is_caught() {
        let keys = Keys::generate();
        let key = public_key(&keys.public_hex()).unwrap();
        let r = receipt(&keys);
        r.verify(&key, b"{}").unwrap();
        r.verify(&key, b"csv").unwrap();
        assert!(r.verify(&key, b"{ }").is_err());
        let mut forged = r.clone();
        forged.epsilon = 0.1;
        assert!(forged.verify(&key, b"{}").is_err());
        // ρ is signed when present: a receipt cannot gain or lose it.
        let mut forged = r.clone();
        forged.rho = 0.2;
        assert!(forged.verify(&key, b"{}").is_err());
        let mut zcdp = receipt(&keys);
        zcdp.rho = 0.25;
        zcdp.sign(&keys);
        zcdp.verify(&key, b"{}").unwrap();
        let mut stripped = zcdp.clone();
        stripped.rho = 0.0;
        assert!(stripped.verify(&key, b"{}").is_err());
        let other = Keys::generate();
        assert!(
            r.verify(&public_key(&other.public_hex()).unwrap(), b"{}")
                .is_err()
        );
    }
}
