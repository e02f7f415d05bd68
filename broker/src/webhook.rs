//! Alerts posted to a webhook (`alert_webhook` in the broker's `config.json`).
//!
//! The alerts table is the outbox: an alert is written in the transaction that raises it, and a
//! delivery thread posts each one raised in the last [`REDELIVER_WITHIN`] that has not reached
//! the webhook yet, oldest first, marking it delivered on a 2xx answer. So a crash or an
//! unreachable receiver delays an alert, never loses it; a receiver may see one twice (after a
//! crash between its answer and the mark) and should key on `alert.id`.
//!
//! Each POST carries the alert as JSON and `X-Sluice-Signature`, the broker's ed25519 signature
//! (hex) over the exact body, which a receiver checks against the broker's public key (printed
//! by `sluice init`, the key receipts verify with): a forged alert cannot pass for the broker's.
//! Only `http://` URLs are accepted (the broker is built without TLS); put a relay that speaks
//! TLS on the same host when the receiver is remote.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::json;

use crate::server::Shared;
use crate::store::Alert;

/// How far back undelivered alerts are still sent (older ones are only listed).
pub const REDELIVER_WITHIN: Duration = Duration::from_secs(24 * 3600);
/// The longest wait between attempts while the receiver fails.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one POST may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Checks a configured webhook URL: `http://host[:port]/path`.
pub fn check_url(url: &str) -> Result<()> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!(
            "alert_webhook `{url}` must start with http:// (the broker is built without TLS; relay through a local TLS client for https)"
        );
    };
    if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace) {
        bail!("alert_webhook `{url}` names no host");
    }
    Ok(())
}

/// The body posted for `alert`: the alert and the broker that raised it.
pub fn body(alert: &Alert, broker_key: &str) -> String {
    json!({ "alert": alert, "broker_public_key": broker_key }).to_string()
}

/// Posts undelivered alerts to `url` until the broker stops.
pub(crate) fn deliver(shared: Arc<Shared>, url: String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let key = shared.store.public_key();
    let mut backoff = Duration::from_secs(1);
    while !shared.stop.load(Ordering::SeqCst) {
        let pending = shared
            .store
            .undelivered_alerts(REDELIVER_WITHIN)
            .unwrap_or_else(|e| {
                tracing::error!("cannot read alerts to deliver: {e:#}");
                vec![]
            });
        let mut failed = false;
        for alert in &pending {
            let body = body(alert, &key);
            let sent = agent
                .post(&url)
                .header("content-type", "application/json")
                .header("x-sluice-signature", &shared.store.sign(body.as_bytes()))
                .send(&body);
            match sent {
                Ok(r) if r.status().is_success() => {
                    if let Err(e) = shared.store.alert_delivered(alert.id) {
                        tracing::error!("cannot mark alert #{} delivered: {e:#}", alert.id);
                    }
                }
                Ok(r) => {
                    tracing::warn!(
                        "alert webhook answered {} for alert #{}",
                        r.status(),
                        alert.id
                    );
                    failed = true;
                }
                Err(e) => {
                    tracing::warn!("alert webhook unreachable for alert #{}: {e}", alert.id);
                    failed = true;
                }
            }
            if failed {
                break;
            }
        }
        let wait = if failed {
            backoff = (backoff * 2).min(MAX_BACKOFF);
            backoff
        } else {
            backoff = Duration::from_secs(1);
            Duration::from_millis(500)
        };
        sleep_unless_stopped(&shared, wait);
    }
}

/// Sleeps `wait`, waking early when the broker stops.
fn sleep_unless_stopped(shared: &Shared, wait: Duration) {
    let step = Duration::from_millis(100);
    let mut slept = Duration::ZERO;
    while slept < wait && !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(step);
        slept += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host_are_accepted() {
        check_url("http://127.0.0.1:9000/alerts").unwrap();
        check_url("http://alerts.internal/hook").unwrap();
        for bad in [
            "https://x/y",
            "ftp://x",
            "http://",
            "http:///path",
            "http://a b/",
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
