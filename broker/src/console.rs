//! The web console: three static files built into the binary and served at `/`, and the
//! security headers every response of the broker carries.
//!
//! The console is a client of the API like any other: it holds the token a person signs in
//! with (in the tab's `sessionStorage`, sent only as `Authorization: Bearer`) and calls the
//! same endpoints, so it can do nothing the token could not do with `curl`. Nothing here reads
//! a token or serves data.
//!
//! What keeps a hostile job's text inert on its pages:
//! - the script builds every node with `textContent` or `setAttribute` from its own code, and
//!   no link address comes from the API (a test greps the script for the markup sinks);
//! - [`CONSOLE_CSP`]: scripts only from the broker's own origin, no inline script or style
//!   attribute handlers, no frames, no form posts, no other origin to talk to;
//! - API responses carry [`API_CSP`] (`sandbox`): a report opened directly in a browser runs
//!   nothing, whatever its bytes;
//! - `X-Content-Type-Options: nosniff` on everything, so a CSV is never sniffed into HTML.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The console's page.
pub const INDEX_HTML: &str = include_str!("../console/index.html");
/// Its script.
pub const APP_JS: &str = include_str!("../console/app.js");
/// Its style sheet.
pub const APP_CSS: &str = include_str!("../console/app.css");

/// The console's Content-Security-Policy: its own script and style only, data: images (the
/// empty favicon) and calls back to the broker.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";
/// Every other response's: nothing may run or load, even when opened as a page.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// The console's routes: `/` and its two assets.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console/app.js", get(script))
        .route("/console/app.css", get(style))
}

/// What the console's routes serve, as [`crate::api`] lists its own.
pub(crate) const SERVED: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/console/app.js"),
    ("get", "/console/app.css"),
];

/// `GET /`: the console.
#[utoipa::path(get, path = "/", tag = "console",
    responses((status = 200, description = "The console's page", content((String = "text/html")))))]
pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/app.js`: its script.
#[utoipa::path(get, path = "/console/app.js", tag = "console",
    responses((status = 200, description = "The console's script", content((String = "text/javascript")))))]
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /console/app.css`: its style sheet.
#[utoipa::path(get, path = "/console/app.css", tag = "console",
    responses((status = 200, description = "The console's style sheet", content((String = "text/css")))))]
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONSOLE_CSP),
            // Always asked again (a new broker serves its own console), answered from memory.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Adds the security headers to every response (the console's own CSP is kept).
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_CSP),
        );
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script never turns a string into markup: every sink that parses HTML is absent.
    #[test]
    fn the_console_script_has_no_markup_sink() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setTimeout('",
            "javascript:",
        ] {
            assert!(
                !APP_JS.contains(sink),
                "console/app.js uses `{sink}`: build nodes with el() instead"
            );
        }
        assert!(
            !INDEX_HTML.contains("<script>") && !has_inline_handler(INDEX_HTML),
            "index.html has inline script or an inline handler, which the CSP forbids"
        );
        assert!(has_inline_handler("<b onclick=\"x\">") && !has_inline_handler("one on top"));
    }

    /// Whether `html` has an attribute such as ` onclick=`.
    fn has_inline_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .len();
            name > 0 && rest[name..].trim_start().starts_with('=')
        })
    }

    #[test]
    fn the_console_csp_allows_no_inline_script() {
        let script = CONSOLE_CSP
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .expect("a script-src");
        assert_eq!(script.trim(), "script-src 'self'");
        assert!(!CONSOLE_CSP.contains("unsafe"));
    }
}
