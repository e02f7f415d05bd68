//! Registration (产权登记、分权登记) and signed certificates (登记证书).
//!
//! Three kinds of record: a **resource** (a dataset: its holder, grade, the sha256 of its public
//! schema and of its current version), a **licence** (许可凭证: a scenario's grant, holder →
//! operator, with its datasets, purpose, caps and expiry) and a **product** (released reports
//! of one operator, with the receipts that vouch for them). Each record has a number
//! (`DR-<year>-<n>`) and a life cycle (initial, change, transfer, objection, cancel); every step
//! is an audit entry in the same transaction. A certificate is the record as it stands, with its
//! history, in canonical JSON signed by the broker and naming it as issuer; it verifies offline,
//! and `GET /v1/registry/{number}` (or `/public/registry/{number}`) says whether it still
//! stands. Core data (核心数据) is never registered.

use anyhow::{Result, bail};
use ed25519_dalek::VerifyingKey;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::audit::{NewEntry, now_ms};
use crate::store::{StateError, Store};

/// A record's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A dataset.
    Resource,
    /// A scenario's licence.
    Licence,
    /// Released reports.
    Product,
}

impl RecordKind {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resource => "resource",
            Self::Licence => "licence",
            Self::Product => "product",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "licence" => Self::Licence,
            "product" => Self::Product,
            _ => Self::Resource,
        }
    }
}

/// A step in a record's life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordEvent {
    /// `initial`, `change`, `transfer`, `objection` or `cancel`.
    pub kind: String,
    /// When (Unix ms).
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Its audit entry.
    pub audit_seq: i64,
}

/// A registered record as it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record {
    /// Its number, `DR-<year>-<n>`.
    pub number: String,
    /// Its kind.
    pub kind: RecordKind,
    /// `active`, `objected` (an objection stands until a change) or `cancelled`.
    pub status: String,
    /// Its version: 1, then one more for each change or transfer.
    pub version: i64,
    /// Whose it is: the holder (resources, licences) or the operator (products).
    pub owner: String,
    /// What it records (see the module docs for each kind).
    pub record: Value,
    /// Its history, oldest first.
    pub events: Vec<RecordEvent>,
}

/// A signed certificate of a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Certificate {
    /// Format version (1).
    pub version: u32,
    /// Who issued it: this broker, by its public key.
    pub issuer: Issuer,
    /// The record, with its history, at issue.
    pub registration: Record,
    /// When it was issued (Unix ms).
    pub issued_ms: i64,
    /// The broker's signature over everything else (hex ed25519).
    pub signature: String,
}

/// A certificate's issuer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Issuer {
    /// Its name.
    pub name: String,
    /// Its public key (hex ed25519).
    pub public_key: String,
}

impl Certificate {
    fn signed_bytes(&self) -> Vec<u8> {
        crate::keys::signed_bytes("sluice-certificate-v1", self)
    }

    /// Checks the signature with `key` (not whether the record still stands: ask the registry).
    pub fn verify(&self, key: &VerifyingKey) -> Result<()> {
        if hex::encode(key.to_bytes()) != self.issuer.public_key {
            bail!("the certificate was issued by a different key than the one given");
        }
        if !crate::keys::verify(key, &self.signed_bytes(), &self.signature) {
            bail!("the certificate's signature is invalid (it was altered or forged)");
        }
        Ok(())
    }
}

/// A step a record may take after it is registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Its content refreshed from the broker's current state (a new dataset version, new grant
    /// terms); lifts a standing objection.
    Change,
    /// It passes to another owner.
    Transfer,
    /// Someone disputes it: it stands as `objected` until a change (or a cancel).
    Objection,
    /// It no longer stands: its certificates are revoked.
    Cancel,
}

impl Step {
    /// Its name, as events and URLs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Change => "change",
            Self::Transfer => "transfer",
            Self::Objection => "objection",
            Self::Cancel => "cancel",
        }
    }

    /// Its audit entry's kind.
    fn audit_kind(self) -> &'static str {
        match self {
            Self::Change => "registry.change",
            Self::Transfer => "registry.transfer",
            Self::Objection => "registry.objection",
            Self::Cancel => "registry.cancel",
        }
    }

    /// The step named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "change" => Self::Change,
            "transfer" => Self::Transfer,
            "objection" => Self::Objection,
            "cancel" => Self::Cancel,
            _ => return None,
        })
    }
}

impl Store {
    /// Registers a record: its number, its `registry.initial` audit entry and its row, in one
    /// transaction.
    pub fn register(
        &self,
        kind: RecordKind,
        owner: &str,
        record: &Value,
        actor: &str,
        reason: &str,
    ) -> Result<Record> {
        let now = now_ms();
        let year = &sluice_policy::Date::at(now / 1000, 0).to_string()[..4];
        let number = self.write(|tx| -> Result<String> {
            let n: i64 = tx.query_row(
                "SELECT COUNT(*) + 1 FROM registry WHERE number LIKE ?1",
                [format!("DR-{year}-%")],
                |r| r.get(0),
            )?;
            let number = format!("DR-{year}-{n:06}");
            let seq = crate::audit::append(
                tx,
                NewEntry::new("registry.initial", actor).detail(json!({
                    "number": number,
                    "kind": kind.as_str(),
                    "owner": owner,
                    "record": record,
                    "reason": reason,
                })),
            )?;
            tx.execute(
                "INSERT INTO registry (number, kind, owner, version, status, body, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, 1, 'active', ?4, ?5, ?5)",
                params![number, kind.as_str(), owner, record.to_string(), now],
            )?;
            tx.execute(
                "INSERT INTO registry_events (number, n, kind, at_ms, actor, reason, audit_seq)
                 VALUES (?1, 1, 'initial', ?2, ?3, ?4, ?5)",
                params![number, now, actor, reason, seq],
            )?;
            Ok(number)
        })?;
        self.registration(&number)?
            .ok_or_else(|| anyhow::anyhow!("record {number} vanished"))
    }

    /// Record `number` with its history, if there is one.
    pub fn registration(&self, number: &str) -> Result<Option<Record>> {
        let conn = self.lock();
        let row: Option<(String, String, i64, String, String)> = conn
            .query_row(
                "SELECT kind, owner, version, status, body FROM registry WHERE number = ?1",
                [number],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((kind, owner, version, status, body)) = row else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(
            "SELECT kind, at_ms, actor, reason, audit_seq FROM registry_events
             WHERE number = ?1 ORDER BY n",
        )?;
        let events = stmt
            .query_map([number], |r| {
                Ok(RecordEvent {
                    kind: r.get(0)?,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    reason: r.get(3)?,
                    audit_seq: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(Record {
            number: number.to_string(),
            kind: RecordKind::parse(&kind),
            status,
            version,
            owner,
            record: serde_json::from_str(&body)?,
            events,
        }))
    }

    /// Every record (without history), newest first.
    pub fn registrations(&self) -> Result<Vec<Record>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT number, kind, owner, version, status, body FROM registry ORDER BY created_ms DESC, number DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Record {
                number: r.get(0)?,
                kind: RecordKind::parse(&r.get::<_, String>(1)?),
                owner: r.get(2)?,
                version: r.get(3)?,
                status: r.get(4)?,
                record: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or(Value::Null),
                events: vec![],
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Takes `step` on record `number`: `record` is the new content (a change), `owner` the new
    /// owner (a transfer). A cancelled record takes no step.
    pub fn registry_step(
        &self,
        number: &str,
        step: Step,
        record: Option<&Value>,
        owner: Option<&str>,
        actor: &str,
        reason: &str,
    ) -> Result<Record, StateError> {
        let now = now_ms();
        self.write(|tx| -> Result<(), StateError> {
            let status: Option<String> = tx
                .query_row(
                    "SELECT status FROM registry WHERE number = ?1",
                    [number],
                    |r| r.get(0),
                )
                .optional()?;
            match status.as_deref() {
                None => return Err(StateError::NoRecord(number.to_string())),
                Some("cancelled") => {
                    return Err(StateError::RecordCancelled(number.to_string()));
                }
                Some(_) => {}
            }
            let seq = crate::audit::append(
                tx,
                NewEntry::new(step.audit_kind(), actor).detail(json!({
                    "number": number,
                    "reason": reason,
                    "record": record,
                    "owner": owner,
                })),
            )?;
            let (status, bump) = match step {
                Step::Change | Step::Transfer => ("active", 1),
                Step::Objection => ("objected", 0),
                Step::Cancel => ("cancelled", 0),
            };
            tx.execute(
                "UPDATE registry SET status = ?2, version = version + ?3, updated_ms = ?4,
                        body = COALESCE(?5, body), owner = COALESCE(?6, owner)
                 WHERE number = ?1",
                params![
                    number,
                    status,
                    bump,
                    now,
                    record.map(Value::to_string),
                    owner
                ],
            )?;
            tx.execute(
                "INSERT INTO registry_events (number, n, kind, at_ms, actor, reason, audit_seq)
                 VALUES (?1, (SELECT COUNT(*) + 1 FROM registry_events WHERE number = ?1),
                         ?2, ?3, ?4, ?5, ?6)",
                params![number, step.as_str(), now, actor, reason, seq],
            )?;
            Ok(())
        })?;
        self.registration(number)?
            .ok_or_else(|| StateError::NoRecord(number.to_string()))
    }

    /// A signed certificate of `record` as it stands.
    pub fn certificate(&self, record: Record) -> Certificate {
        let mut c = Certificate {
            version: 1,
            issuer: Issuer {
                name: "Sluice broker".into(),
                public_key: self.public_key(),
            },
            registration: record,
            issued_ms: now_ms(),
            signature: String::new(),
        };
        c.signature = self.sign(&c.signed_bytes());
        c
    }
}
