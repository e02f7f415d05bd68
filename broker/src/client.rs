//! A small blocking HTTP client for the broker's API, used by the `sluice` CLI and the demo.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};

/// A client bound to one broker and one bearer token.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

/// A job submission.
#[derive(Clone, Debug, Default)]
pub struct Submission<'a> {
    /// The wasm.
    pub wasm: &'a [u8],
    /// Why the job runs.
    pub purpose: &'a str,
    /// Parameters for `run`.
    pub params: &'a str,
    /// Datasets it will use.
    pub datasets: &'a [String],
    /// A per-dataset ε cap below the grant's.
    pub max_epsilon: Option<f64>,
    /// The scenario it runs under (needed when the operator holds several on a dataset).
    pub scenario: Option<&'a str>,
}

/// The most bytes of purpose and parameters a submission carries in its query string (percent
/// encoding may triple them); beyond, it goes as JSON.
const QUERY_STRING_BYTES: usize = 16 << 10;

impl Client {
    /// A client for the broker at `base` (e.g. `http://127.0.0.1:7878`).
    pub fn new(base: &str, token: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            agent,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    fn finish(mut resp: ureq::http::Response<ureq::Body>) -> Result<(u16, String)> {
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .context("while reading the broker's response")?;
        Ok((status, text))
    }

    fn check(status: u16, text: String) -> Result<String> {
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                Some(format!(
                    "{} ({})",
                    v["error"]["message"].as_str()?,
                    v["error"]["code"].as_str()?
                ))
            })
            .unwrap_or(text);
        bail!("the broker answered {status}: {msg}")
    }

    /// GET `path`; the body as text.
    pub fn get_text(&self, path: &str) -> Result<String> {
        let resp = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth())
            .call()
            .with_context(|| format!("cannot reach the broker at {}", self.base))?;
        let (s, t) = Self::finish(resp)?;
        Self::check(s, t)
    }

    /// GET `path` as bytes (at most 64 MiB).
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let mut resp = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth())
            .call()
            .with_context(|| format!("cannot reach the broker at {}", self.base))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .context("while reading the broker's response")?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        Self::check(status, String::from_utf8_lossy(&bytes).into_owned()).map(String::into_bytes)
    }

    /// GET `path` as JSON.
    pub fn get_json(&self, path: &str) -> Result<Value> {
        Ok(serde_json::from_str(&self.get_text(path)?)?)
    }

    /// POST a JSON body to `path`.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let resp = self
            .agent
            .post(self.url(path))
            .header("Authorization", self.auth())
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .with_context(|| format!("cannot reach the broker at {}", self.base))?;
        let (s, t) = Self::finish(resp)?;
        Ok(serde_json::from_str(&Self::check(s, t)?)?)
    }

    /// Submits a job; returns the broker's answer (`id`, `state`, `wasm_sha256`).
    pub fn submit(&self, job: &Submission<'_>) -> Result<Value> {
        self.post_job("/v1/jobs", job)
    }

    /// Asks the broker for the job's plan (`POST /v1/plan`): a dry run on mock data against
    /// what the operator's grants have left. Nothing is charged.
    pub fn plan(&self, job: &Submission<'_>) -> Result<Value> {
        self.post_job("/v1/plan", job)
    }

    /// POSTs a job to `path` as `application/wasm`, its declarations in the query string: the
    /// component's bytes as they are, without the third more (and the encoding and decoding)
    /// that base64 in JSON costs. Long parameters would not fit a request line (the broker's
    /// HTTP server takes URIs up to 64 KiB), so with them the job goes as JSON.
    fn post_job(&self, path: &str, job: &Submission<'_>) -> Result<Value> {
        // Refused here rather than by the broker mid-upload (which a client sees as a broken
        // pipe).
        let cap = crate::server::MAX_WASM_BYTES;
        if job.wasm.len() > cap {
            bail!(
                "the job is {} bytes; the broker accepts at most {cap} bytes (40 MiB) of wasm",
                job.wasm.len()
            );
        }
        if job.params.len() + job.purpose.len() > QUERY_STRING_BYTES {
            return self.post_json(path, &Self::submission_json(job));
        }
        let mut req = self
            .agent
            .post(self.url(path))
            .header("Authorization", self.auth())
            .header("Content-Type", "application/wasm")
            .query("purpose", job.purpose)
            .query("params", job.params)
            .query("datasets", job.datasets.join(","));
        if let Some(m) = job.max_epsilon {
            req = req.query("max_epsilon", m.to_string());
        }
        if let Some(s) = job.scenario {
            req = req.query("scenario", s);
        }
        let resp = req
            .send(job.wasm)
            .with_context(|| format!("cannot reach the broker at {}", self.base))?;
        let (s, t) = Self::finish(resp)?;
        Ok(serde_json::from_str(&Self::check(s, t)?)?)
    }

    /// The JSON body of a submission (and of a plan request), the component in base64.
    fn submission_json(job: &Submission<'_>) -> Value {
        json!({
            "purpose": job.purpose,
            "params": job.params,
            "datasets": job.datasets,
            "max_epsilon": job.max_epsilon,
            "scenario": job.scenario,
            "wasm_base64": base64::engine::general_purpose::STANDARD.encode(job.wasm),
        })
    }

    /// Follows a job's event stream until it ends, calling `on` for each `(kind, data)`.
    pub fn follow(&self, id: &str, mut on: impl FnMut(&str, &Value)) -> Result<()> {
        self.stream(&format!("/v1/jobs/{id}/events"), |kind, v| {
            on(kind, v);
            true
        })
    }

    /// Reads the server-sent events at `path`, calling `on(kind, data)` for each until it
    /// returns `false` or the stream ends.
    pub fn stream(&self, path: &str, mut on: impl FnMut(&str, &Value) -> bool) -> Result<()> {
        let mut resp = self
            .agent
            .get(self.url(path))
            .header("Authorization", self.auth())
            .header("Accept", "text/event-stream")
            .call()
            .with_context(|| format!("cannot reach the broker at {}", self.base))?;
        if resp.status().as_u16() != 200 {
            let (s, t) = Self::finish(resp)?;
            Self::check(s, t)?;
            bail!("unexpected answer to the event stream");
        }
        let reader = BufReader::new(resp.body_mut().as_reader());
        let mut kind = String::new();
        for line in reader.lines() {
            let line = line.context("the event stream broke")?;
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                let v: Value = serde_json::from_str(d.trim()).unwrap_or(Value::Null);
                if !on(&kind, &v) {
                    break;
                }
            }
        }
        Ok(())
    }
}
