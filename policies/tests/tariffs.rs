//! Tariffs: commercial scenarios state unit prices in fen under a monthly cap; public-interest
//! use is free and may not state one.

use sluice_policy::{Tariff, Usage, parse_str};

mod common;

fn policy(extra: &str) -> Result<sluice_policy::Policy, String> {
    let text = common::visits("sensitive") + &common::grant(extra, "2099-12-31");
    parse_str("p.toml", &text).map_err(|e| e.to_string())
}

#[test]
fn a_commercial_scenario_states_its_prices_and_cap() {
    let p = policy(
        "use = \"commercial\"\ntariff = { fen_per_epsilon = 200000, fen_per_query = 100, fen_per_cell = 1, cap_fen_per_month = 5000000, earmark_percent = 20 }\n",
    )
    .unwrap();
    let g = &p.grants[0];
    assert_eq!(g.usage, Usage::Commercial);
    assert_eq!(
        g.tariff,
        Some(Tariff {
            fen_per_epsilon: 200_000,
            fen_per_rho: 0,
            fen_per_query: 100,
            fen_per_cell: 1,
            cap_fen_per_month: 5_000_000,
            earmark_percent: 20,
        })
    );
    assert_eq!(
        policy("").unwrap().grants[0].tariff,
        None,
        "free by default"
    );
}

#[test]
fn tariffs_are_refused_where_they_do_not_apply_or_do_not_parse() {
    for (extra, says) in [
        (
            "tariff = { cap_fen_per_month = 1 }\n",
            "only `use = \"commercial\"` scenarios have a tariff",
        ),
        (
            "use = \"commercial\"\ntariff = { fen_per_query = 1 }\n",
            "`cap_fen_per_month`",
        ),
        (
            "use = \"commercial\"\ntariff = { cap_fen_per_month = 1, earmark_percent = 101 }\n",
            "`earmark_percent` must be an integer from 0 to 100",
        ),
        (
            "use = \"commercial\"\ntariff = { cap_fen_per_month = -1 }\n",
            "`cap_fen_per_month` must be an integer from 0",
        ),
        (
            "use = \"commercial\"\ntariff = { cap_fen_per_month = 1, fen_per_row = 1 }\n",
            "unknown field `fen_per_row` in a tariff",
        ),
        (
            "use = \"commercial\"\ntariff = 5\n",
            "`tariff` must be a table",
        ),
    ] {
        let e = policy(extra).unwrap_err();
        assert!(e.contains(says), "{extra}: {e}");
    }
}
