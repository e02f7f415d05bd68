//! Metering and revenue statements over HTTP: a holder's statement equals the ledger, prices
//! commercial use under its cap and public-interest use at nothing, counts cached answers as
//! answered queries, is signed, and only its parties read it.

use serde_json::Value;
use sluice_broker::statements::Statement;

use crate::{TestBroker, guest, http, this_month};

/// The analyst's grant made commercial: 1,000 CNY per ε, 0.50 per query, 0.01 per cell, at most
/// 1,500 CNY a month, a fifth earmarked.
const TARIFF: &str = "purpose = \"tests\"\nuse = \"commercial\"\ntariff = { fen_per_epsilon = 100000, fen_per_query = 50, fen_per_cell = 1, cap_fen_per_month = 150000, earmark_percent = 20 }\n";

#[test]
fn a_holders_statement_equals_the_ledger_prices_use_and_verifies() {
    let b = TestBroker::start("statements", |p| {
        p.replacen("purpose = \"tests\"\n", TARIFF, 1)
    });
    let admin = b.client(&b.admin);
    let visits = guest(env!("GUEST_VISITS_BY_DISTRICT"));
    let first = b.run_to_end(&b.analyst, &visits, "epsilon=0.4", "health_visits");
    // The same queries again: answered from the cache.
    let again = b.run_to_end(&b.analyst, &visits, "epsilon=0.4", "health_visits");
    // A public-interest grant (counts only).
    let counted = b.run_to_end(
        &b.token("operator", "counter"),
        &guest(env!("GUEST_HOSTILE")),
        "sql:SELECT district, COUNT(*) AS n FROM health_visits GROUP BY district",
        "health_visits",
    );
    let month = this_month();
    let v = admin
        .get_json(&format!(
            "/v1/statements/holders/city-health-commission/{month}"
        ))
        .unwrap();
    let s: Statement = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        (s.kind.as_str(), s.party.as_str()),
        ("holder", "city-health-commission")
    );
    let line = |job: &Value| {
        s.lines
            .iter()
            .find(|l| l.job == job["id"].as_str().unwrap())
            .unwrap_or_else(|| panic!("no line for {job}: {v}"))
    };

    // ε is the ledger's: per line, and in total over the holder's datasets this month.
    let conn = sluice_broker::store::Store::open_conn_readonly(&b.dir).unwrap();
    let (from, to) = sluice_broker::statements::month_bounds(&month, 8 * 60).unwrap();
    let ledger: f64 = conn
        .query_row(
            "SELECT COALESCE(SUM(epsilon), 0) FROM charges
             WHERE dataset IN ('health_visits', 'health_raw', 'health_stats') AND at_ms >= ?1 AND at_ms < ?2",
            [from, to],
            |r| r.get(0),
        )
        .unwrap();
    assert!(ledger > 0.0);
    assert!(
        (s.totals.used.epsilon - ledger).abs() <= 1e-12 * ledger,
        "{} vs {ledger}",
        s.totals.used.epsilon
    );
    assert_eq!(
        line(&first).used.epsilon,
        first["epsilon_spent"].as_f64().unwrap()
    );

    // A cached answer costs no ε but is an answered query.
    let cached = line(&again);
    assert_eq!(cached.used.epsilon, 0.0, "{cached:?}");
    assert!(
        cached.used.queries >= 1 && cached.used.cached == cached.used.queries,
        "{cached:?}"
    );
    assert!(cached.used.cells > 0, "{cached:?}");

    // Commercial use is priced (under the cap), public-interest use is free.
    let priced = line(&first);
    assert_eq!(priced.usage, "commercial");
    let list = (priced.used.epsilon * 100_000.0).round() as u64
        + priced.used.queries as u64 * 50
        + priced.used.cells as u64;
    assert_eq!(priced.used.fee_fen, list.min(150_000), "{priced:?}");
    assert_eq!(priced.used.earmark_fen, priced.used.fee_fen / 5);
    let analyst_fees: u64 = s
        .lines
        .iter()
        .filter(|l| l.operator == "analyst")
        .map(|l| l.used.fee_fen)
        .sum();
    assert!(
        analyst_fees <= 150_000,
        "the monthly cap holds: {analyst_fees}"
    );
    let free = line(&counted);
    assert_eq!(
        (free.usage.as_str(), free.used.fee_fen),
        ("public-interest", 0)
    );
    assert!(free.used.epsilon > 0.0);

    // Signed: it verifies with the broker's key; one changed figure does not.
    let key = sluice_broker::keys::public_key(&b.public_key).unwrap();
    s.verify(&key).unwrap();
    let mut altered = s.clone();
    altered.lines[0].used.fee_fen += 1;
    altered.totals.used.fee_fen += 1;
    let e = altered.verify(&key).unwrap_err().to_string();
    assert!(e.contains("signature is invalid"), "{e}");
    let mut unsummed = s.clone();
    unsummed.totals.used.queries += 1;
    assert!(unsummed.verify(&key).is_err());

    // The operator's invoice view holds the same lines of its own jobs.
    let invoice: Statement = serde_json::from_value(
        b.client(&b.analyst)
            .get_json(&format!("/v1/statements/operators/analyst/{month}"))
            .unwrap(),
    )
    .unwrap();
    let mine: Vec<_> = s.lines.iter().filter(|l| l.operator == "analyst").collect();
    assert_eq!(invoice.lines.iter().collect::<Vec<_>>(), mine);

    // Only its parties (and admins, auditors) read a statement; each issue is on the record.
    let url = b.url().to_string();
    for (token, path, want) in [
        (
            &b.analyst,
            format!("/v1/statements/operators/counter/{month}"),
            403,
        ),
        (
            &b.analyst,
            format!("/v1/statements/holders/city-health-commission/{month}"),
            403,
        ),
        (
            &b.reviewer,
            format!("/v1/statements/operators/analyst/{month}"),
            403,
        ),
        (
            &b.admin,
            "/v1/statements/holders/city-health-commission/2026-13".to_string(),
            400,
        ),
        (&b.admin, format!("/v1/statements/partners/x/{month}"), 404),
    ] {
        let (status, body) = http(&url, "GET", &path, Some(token), None, b"");
        assert_eq!(status, want, "{path}: {body}");
    }
    let log = admin.get_json("/v1/audit?limit=1000").unwrap();
    let issued = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "statement.issued")
        .count();
    assert_eq!(issued, 2);
}
