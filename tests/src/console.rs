//! The web console in a real headless Chromium against a real broker: a reviewer approves, an
//! operator watches a job finish live and reads its chart, a holder suspends a dataset, and a
//! hostile job's report stays inert text. Each page's screenshot is written to
//! `<target>/console-screenshots/`.

use serde_json::{Value, json};
use sluice_broker::client::Submission;

use crate::browser::{Browser, screenshot_dir};
use crate::{TestBroker, guest};

/// The browser, or `None` with a message when Chromium is not installed here. Under CI
/// (`CI` set), `.ci/run` installs it, so its absence is a failure unless `.ci/run` found it
/// could not be installed (`SLUICE_NO_CHROMIUM`).
fn browser() -> Option<Browser> {
    match Browser::start() {
        Ok(b) => Some(b),
        Err(why)
            if std::env::var_os("CI").is_none()
                || std::env::var_os("SLUICE_NO_CHROMIUM").is_some() =>
        {
            eprintln!("SKIPPED: the console's browser tests need Chromium: {why}");
            None
        }
        Err(why) => panic!("the console's browser tests need Chromium under CI: {why}"),
    }
}

/// Signs in on the console at `url` with `token` (signing out first if someone is signed in),
/// and waits until the console shows the principal.
fn sign_in(b: &Browser, url: &str, token: &str, principal: &str) {
    b.goto(&format!("{url}/"));
    // The console decides once its script has run: the sign-in form, or someone signed in.
    let shown = b.wait_for(
        "the console to start",
        "return document.getElementById('sign-in') ? 'form' : (document.getElementById('who').textContent ? 'someone' : '')",
        10,
    );
    if shown == json!("someone") {
        b.click("#sign-out");
    }
    b.type_into("#token", token);
    b.click("#sign-in button[type=submit]");
    b.wait_for(
        &format!("the console to show `{principal}`"),
        &format!(
            "return document.getElementById('who').textContent.startsWith({})",
            json!(principal)
        ),
        10,
    );
}

fn submit(b: &TestBroker, token: &str, wasm: &[u8], params: &str, dataset: &str) -> String {
    let r = b
        .client(token)
        .submit(&Submission {
            wasm,
            purpose: "console test",
            params,
            datasets: &[dataset.into()],
            max_epsilon: Some(2.0),
            scenario: None,
        })
        .expect("submit");
    r["id"].as_str().expect("an id").to_string()
}

#[test]
fn reviewers_operators_and_holders_do_their_work_in_the_console_and_hostile_text_stays_text() {
    let Some(web) = browser() else { return };
    let b = TestBroker::start_with(
        "console",
        |p| p,
        |mut c| {
            c.public_register = true;
            c
        },
    );
    let url = b.url().to_string();
    let tourism = guest(env!("GUEST_TOURISM_SPEND"));

    // A reviewer sees a pending job with its params in full and approves it.
    let params = "epsilon=1.0&note=<b>not bold</b>";
    let pending = submit(&b, &b.tourism, &tourism, params, "tourism_trips");
    sign_in(&web, &url, &b.reviewer, "rita");
    let card = format!("article.review[data-job='{pending}']");
    web.wait_for(
        "the pending job's card",
        &format!("return document.querySelector({})", json!(card)),
        10,
    );
    let shown = web.eval(
        "return document.querySelector(arguments[0] + ' pre.params').textContent",
        json!([card]),
    );
    assert_eq!(
        shown,
        json!(params),
        "the params are shown in full, as text"
    );
    web.click(&format!("{card} button.secondary"));
    web.wait_for(
        "the risk report",
        &format!(
            "return document.querySelector({})?.textContent.includes('Risk level')",
            json!(format!("{card} .risk"))
        ),
        120,
    );
    let shot = web.screenshot("console-review-queue.png");
    web.type_into(&format!("{card} textarea"), "purpose and params checked");
    web.click(&format!("{card} button[data-decision=approve]"));
    web.wait_for(
        "the approval's confirmation",
        &format!(
            "return document.querySelector({})?.textContent.includes('is now queued')",
            json!(format!("{card} .outcome"))
        ),
        20,
    );
    let job = b
        .client(&b.reviewer)
        .get_json(&format!("/v1/jobs/{pending}"))
        .unwrap();
    assert_eq!(job["approved_by"], json!(["rita"]), "{job}");

    // An operator watches a job go from review to a released report, live, and sees its chart
    // with error bars.
    let live = submit(&b, &b.tourism, &tourism, "epsilon=1.0", "tourism_trips");
    sign_in(&web, &url, &b.tourism, "tourism-lab");
    web.goto(&format!("{url}/#/job/{live}"));
    web.wait_for(
        "the job page, pending",
        "return document.querySelector('#job-state .state-pending_review')",
        10,
    );
    b.client(&b.reviewer)
        .post_json(
            &format!("/v1/reviews/{live}/approve"),
            &json!({"reason": "fine"}),
        )
        .unwrap();
    web.wait_for(
        "the job to finish on the open page",
        "return document.querySelector('#job-state .state-succeeded')",
        120,
    );
    let bars = web.wait_for(
        "a chart with error bars",
        "return document.querySelectorAll('#report svg.bar-chart g.error-bar').length",
        20,
    );
    assert!(bars.as_u64().unwrap_or(0) >= 2, "error bars: {bars}");
    let events = web.eval(
        "return [...document.querySelectorAll('#events li strong')].map(e => e.textContent)",
        json!([]),
    );
    for kind in ["queued", "running", "released"] {
        assert!(
            events
                .as_array()
                .unwrap()
                .contains(&Value::String(kind.into())),
            "the page saw `{kind}` live: {events}"
        );
    }
    web.screenshot("console-operator-job.png");

    // The operator estimates a query's cost for a target accuracy, free.
    web.goto(&format!("{url}/#/estimate"));
    web.type_into(
        "#page-estimate textarea",
        "SELECT spot, COUNT(*) AS n FROM tourism_trips GROUP BY spot",
    );
    web.eval(
        "document.querySelector('#page-estimate select').value = 'accuracy'",
        json!([]),
    );
    web.type_into("#page-estimate input[type=number]", "40");
    web.click("#page-estimate button[type=submit]");
    let estimate = web.wait_for(
        "the estimate",
        "return document.querySelector('#estimate dl')?.textContent",
        20,
    );
    assert!(estimate.as_str().unwrap_or("").contains("ε="), "{estimate}");
    web.screenshot("console-operator-estimate.png");

    // A hostile job's report renders as text: no script runs, no element is injected.
    let analyst_job = submit(
        &b,
        &b.analyst,
        &guest(env!("GUEST_HOSTILE")),
        "markup",
        "health_visits",
    );
    b.client(&b.analyst)
        .follow(&analyst_job, |_, _| {})
        .expect("events");
    sign_in(&web, &url, &b.analyst, "analyst");
    web.goto(&format!("{url}/#/job/{analyst_job}"));
    web.wait_for(
        "the hostile report",
        "return document.querySelector('#report .report-title')",
        20,
    );
    web.wait_for(
        "the hostile job's log",
        "return document.querySelector('#log li')",
        10,
    );
    let inert = web.eval(
        r#"const main = document.getElementById('main');
           return {
             pwned: window.__pwned === undefined ? null : String(window.__pwned),
             scripts: main.querySelectorAll('script').length,
             images: main.querySelectorAll('img').length,
             script_links: document.querySelectorAll('a[href^="javascript"]').length,
             handlers: [...main.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length,
             title: main.querySelector('.report-title').textContent,
             text: main.querySelector('.report-text').textContent,
             table: main.querySelector('.report-table h3').textContent,
             header: [...main.querySelectorAll('table.result th')].map(t => t.textContent).join('|'),
             log: main.querySelector('#log').textContent,
           };"#,
        json!([]),
    );
    assert_eq!(inert["pwned"], Value::Null, "a payload ran: {inert}");
    for count in ["scripts", "images", "script_links", "handlers"] {
        assert_eq!(inert[count], json!(0), "{count}: {inert}");
    }
    let has = |field: &str, needle: &str| {
        assert!(
            inert[field].as_str().unwrap_or("").contains(needle),
            "{field} shows `{needle}` as text: {inert}"
        );
    };
    has("title", "<script>window.__pwned = 'script'</script>");
    has("text", "<img src=x onerror=");
    has("text", "<a href=\"javascript:");
    has("table", "<img src=x");
    has("header", "<img src=x onerror=window.__pwned=1>");
    has("log", "<script>");
    web.screenshot("console-hostile-report.png");

    // A holder suspends its dataset from the console; the API then refuses its queries.
    let holder = b.token("holder", "city-culture-tourism-bureau");
    sign_in(&web, &url, &holder, "city-culture-tourism-bureau");
    web.goto(&format!("{url}/#/datasets"));
    let card = "article.dataset[data-dataset='tourism_trips']";
    web.wait_for(
        "the dataset's burn-down chart",
        &format!(
            "return document.querySelector({})",
            json!(format!("{card} svg.burn-down polyline"))
        ),
        20,
    );
    web.screenshot("console-holder-datasets.png");
    web.type_into(
        &format!("{card} input"),
        "incident 17: checking a leak report",
    );
    web.click(&format!("{card} button[data-action=suspend]"));
    web.wait_for(
        "the suspension's confirmation",
        &format!(
            "return document.querySelector({})?.textContent.includes('suspended')",
            json!(format!("{card} .outcome"))
        ),
        10,
    );
    let s = b
        .client(&b.admin)
        .get_json("/v1/admin/suspensions")
        .unwrap();
    assert!(
        s["suspensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "tourism_trips"
                && x["reason"] == "incident 17: checking a leak report"),
        "{s}"
    );
    web.wait_for(
        "the card to say suspended",
        &format!(
            "return document.querySelector({})?.textContent.includes('suspended')",
            json!(format!("{card} h2"))
        ),
        10,
    );
    web.screenshot("console-holder-suspended.png");

    // The holder reads this month's signed statement of its dataset's use.
    web.goto(&format!("{url}/#/statements"));
    web.click("#page-statements form button[type=submit]");
    let lines = web.wait_for(
        "the statement's lines",
        "return document.querySelectorAll('#statement-lines tbody tr').length",
        10,
    );
    assert!(lines.as_u64().unwrap_or(0) >= 2, "{lines}");
    web.screenshot("console-holder-statement.png");

    // Anyone, without a token, reads the public register and files an objection; a reviewer
    // upholds it; its tracking id then shows the outcome.
    web.click("#sign-out");
    web.goto(&format!("{url}/#/public"));
    web.wait_for(
        "the public register's scenarios",
        "return document.querySelectorAll('#public-scenarios tbody tr').length",
        10,
    );
    let register = web.eval(
        "return document.getElementById('main').innerText",
        json!([]),
    );
    assert!(
        register.as_str().unwrap_or("").contains("tourism-lab"),
        "{register}"
    );
    web.type_into(
        "#objection-form input[aria-label=Subject]",
        "tourism-lab's spend study",
    );
    web.type_into(
        "#objection-form textarea",
        "<b>Why</b> was my trip data used?",
    );
    web.click("#objection-form button[type=submit]");
    let tracking = web.wait_for(
        "a tracking id",
        "return document.querySelector('#objection-filed code.tracking')?.textContent",
        10,
    );
    let tracking = tracking.as_str().unwrap().to_string();
    web.screenshot("console-public-register.png");
    sign_in(&web, &url, &b.reviewer, "rita");
    web.goto(&format!("{url}/#/objections"));
    let card = format!("article.objection[data-objection='{tracking}']");
    web.type_into(
        &format!("{card} textarea"),
        "the scenario's notice was missing",
    );
    web.eval(
        "document.querySelector(arguments[0] + ' select').value = 'tourism-lab'",
        json!([card]),
    );
    web.click(&format!("{card} button[data-decision=uphold]"));
    web.wait_for(
        "the resolution",
        &format!(
            "return document.querySelector({})?.textContent.includes('upheld')",
            json!(format!("{card} .outcome"))
        ),
        10,
    );
    web.screenshot("console-objections.png");
    web.goto(&format!("{url}/#/operators"));
    let upheld = web.wait_for(
        "the credit records",
        "return [...document.querySelectorAll('#credit tbody tr')].find(r => r.cells[0].textContent === 'tourism-lab')?.cells[7].textContent",
        10,
    );
    assert_eq!(upheld, json!("1"));
    web.click("#sign-out");
    web.goto(&format!("{url}/#/public/{tracking}"));
    web.click("#page-public form:last-of-type button[type=submit]");
    let state = web.wait_for(
        "the objection's state",
        "return document.querySelector('#objection-status dl')?.textContent",
        10,
    );
    assert!(state.as_str().unwrap_or("").contains("upheld"), "{state}");

    // The audit page verifies the log.
    sign_in(&web, &url, &b.reviewer, "rita");
    web.goto(&format!("{url}/#/audit"));
    web.click("#verify-button");
    let verdict = web.wait_for(
        "the audit verdict",
        "return document.querySelector('#verify p')?.textContent",
        20,
    );
    assert!(
        verdict.as_str().unwrap_or("").starts_with("OK: "),
        "{verdict}"
    );
    web.screenshot("console-audit.png");

    // A receipt and its report, uploaded, verify; an altered receipt does not.
    let dir = crate::temp_dir("console-receipts");
    let reviewer = b.client(&b.reviewer);
    let receipt = reviewer
        .get_bytes(&format!("/v1/jobs/{pending}/receipt"))
        .unwrap();
    let report = b
        .client(&b.tourism)
        .get_bytes(&format!("/v1/jobs/{pending}/result"))
        .unwrap();
    let mut altered: Value = serde_json::from_slice(&receipt).unwrap();
    altered["epsilon"] = json!(0.001);
    for (name, bytes) in [
        ("receipt.json", receipt.clone()),
        ("report.json", report),
        ("altered.json", serde_json::to_vec(&altered).unwrap()),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    for (file, expect) in [("receipt.json", "Valid: "), ("altered.json", "Not valid: ")] {
        web.goto(&format!("{url}/#/audit"));
        web.goto(&format!("{url}/#/receipts"));
        web.upload("#receipt-file", &dir.join(file));
        web.upload("#report-file", &dir.join("report.json"));
        web.click("#page-receipts button[type=submit]");
        let verdict = web.wait_for(
            "the receipt's verdict",
            "return document.querySelector('#receipt-verdict p')?.textContent",
            20,
        );
        assert!(
            verdict.as_str().unwrap_or("").starts_with(expect),
            "{file}: {verdict}"
        );
        if file == "receipt.json" {
            assert!(verdict.as_str().unwrap_or("").contains("covers the report"));
            web.screenshot("console-receipt.png");
        }
    }
    // Every page asked only for what its role may read: no request was refused.
    let log = b.client(&b.admin).get_json("/v1/audit?limit=1000").unwrap();
    let denied: Vec<&Value> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .unwrap_or("")
                .starts_with("access.denied")
        })
        .collect();
    assert!(denied.is_empty(), "the console was refused: {denied:?}");
    eprintln!("screenshots in {}", screenshot_dir().display());
    assert!(shot.exists());
}
