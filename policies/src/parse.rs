//! Reading policy files: TOML in, a validated [`Policy`] or every problem with file, line and column out.
//!
//! The reader walks TOML's spanned syntax tree by hand rather than deriving serde: that is what lets it
//! report *all* problems at once, each at the exact place it occurs, with what would be accepted there.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::date::{Date, Expiry, TimeZone};
use crate::model::*;
use crate::{PolicyError, Problem};

/// Largest `max_rows_per_unit` accepted: beyond it sensitivity (and noise) is useless anyway.
const MAX_ROWS_PER_UNIT_LIMIT: i64 = 10_000;
/// Largest public value domain for one column.
const MAX_PUBLIC_VALUES: usize = 10_000;
/// Largest δ a grant may declare, per query or per period.
const MAX_DELTA: f64 = 1e-3;

/// Reads and validates one policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|cause| PolicyError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    parse_files(vec![(path.to_path_buf(), text)])
}

/// Reads and validates every `*.toml` file in `dir` (sorted by name) as one policy.
pub fn load_dir(dir: &Path) -> Result<Policy, PolicyError> {
    let io = |cause| PolicyError::Io {
        path: dir.to_path_buf(),
        cause,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(PolicyError::Empty(dir.to_path_buf()));
    }
    let mut files = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|cause| PolicyError::Io {
            path: p.clone(),
            cause,
        })?;
        files.push((p, text));
    }
    parse_files(files)
}

/// Reads a policy from a directory or a single file.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    if path.is_dir() {
        load_dir(path)
    } else {
        load_file(path)
    }
}

/// Validates policy text held in memory; `files` pairs a display path with its contents.
pub fn parse_files(files: Vec<(PathBuf, String)>) -> Result<Policy, PolicyError> {
    let mut problems = Vec::new();
    let mut policy = Policy::default();
    // Dataset references in grants are checked once every file is read.
    let mut refs: Vec<DatasetRef> = Vec::new();
    let mut grant_keys: GrantKeys = BTreeMap::new();
    // Every `[dataset.<name>]` seen, valid or not, so that grants naming an invalid dataset are not
    // also reported as naming an unknown one.
    let mut declared: BTreeSet<String> = BTreeSet::new();

    let mut time_zone_seen = None;
    for (index, (path, text)) in files.iter().enumerate() {
        let mut cx = Cx {
            file: index,
            problems: Vec::new(),
            time_zone_seen,
        };
        match DeTable::parse(text) {
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                cx.err(span, format!("invalid TOML: {}", e.message().trim()));
            }
            Ok(root) => {
                if let Some(DeValue::Table(t)) = root.get_ref().get("dataset").map(|v| v.get_ref())
                {
                    declared.extend(t.iter().map(|(k, _)| k.get_ref().to_string()));
                }
                cx.document(root.get_ref(), &mut policy, &mut refs, &mut grant_keys);
            }
        }
        time_zone_seen = cx.time_zone_seen;
        cx.problems.sort_by_key(|(span, _)| span.start);
        problems.extend(cx.problems.into_iter().map(|(span, message)| {
            let (line, column) = line_col(text, span.start);
            Problem {
                file: path.clone(),
                line,
                column,
                message,
            }
        }));
    }

    let missing = check_refs(&files, &policy, &declared, refs);
    // Keep file order: problems of each file sorted by place.
    problems.extend(missing);
    let order: Vec<&PathBuf> = files.iter().map(|(p, _)| p).collect();
    problems.sort_by_key(|p| {
        (
            order
                .iter()
                .position(|f| **f == p.file)
                .unwrap_or(usize::MAX),
            p.line,
            p.column,
        )
    });

    if problems.is_empty() {
        apply_grade_minimums(&mut policy);
        policy.files = files;
        Ok(policy)
    } else {
        Err(PolicyError::Invalid(crate::Problems(problems)))
    }
}

/// A duration written as whole days or hours, `"30d"` or `"12h"` (1 to 3,660 of them), in
/// seconds; `None` for anything else. Policy periods and token lifetimes are written so.
///
/// ```
/// assert_eq!(sluice_policy::duration_secs("30d"), Some(30 * 86_400));
/// assert_eq!(sluice_policy::duration_secs("12h"), Some(12 * 3_600));
/// assert_eq!(sluice_policy::duration_secs("1w"), None);
/// ```
pub fn duration_secs(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let unit_secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        _ => return None,
    };
    match num.parse::<u64>() {
        Ok(n) if (1..=3_660).contains(&n) => Some(n * unit_secs),
        _ => None,
    }
}

/// The fields an `[[alert]]` accepts.
const ALERT_FIELDS: &[&str] = &[
    "name",
    "when",
    "threshold",
    "window",
    "count",
    "datasets",
    "action",
];

/// The fields a `[[grant]]` accepts.
const GRANT_FIELDS: &[&str] = &[
    "delta_per_query",
    "delta_per_period",
    "operator",
    "datasets",
    "purpose",
    "aggregations",
    "epsilon_per_job",
    "epsilon_per_period",
    "rho_per_job",
    "rho_per_period",
    "period",
    "expires",
    "review",
    "allowed_wasm",
    "params",
    "adhoc_sql",
    "row_functions",
    "min_group_count",
    "scenario",
    "legal_basis",
    "use",
    "tariff",
    "recipients",
];

/// The fields of a grant's `tariff`.
const TARIFF_FIELDS: &[&str] = &[
    "fen_per_epsilon",
    "fen_per_rho",
    "fen_per_query",
    "fen_per_cell",
    "cap_fen_per_month",
    "earmark_percent",
];

/// The largest price or cap a tariff may state, in fen (10^12 fen: 10 billion CNY).
const MAX_FEN: i64 = 1_000_000_000_000;

/// A grant's (per job, per period) caps in one measure: `Some(None)` when not declared, `None`
/// after reporting a problem.
type CapPair = Option<Option<(f64, f64)>>;

/// What a grant says about the scenario it authorizes.
struct ScenarioTerms {
    id: Option<String>,
    legal_basis: Option<String>,
    usage: Usage,
    tariff: Option<Tariff>,
    recipients: Vec<OperatorId>,
}

/// The scenarios (`None`: a grant without one) each operator holds on each dataset.
type GrantKeys = BTreeMap<(OperatorId, DatasetId), Vec<Option<String>>>;

/// A dataset named by a grant or an alert, checked once every file is read.
struct DatasetRef {
    file: usize,
    span: Range<usize>,
    id: DatasetId,
    /// Whether the grant caps ε and ρ (both for alerts, which cap nothing).
    units: (bool, bool),
    /// The grant's index in `Policy::grants`, once the grant was added; `None` for alerts.
    grant: Option<usize>,
    /// `grant` or `alert`, for messages.
    named_by: &'static str,
}

/// The checks of every dataset a grant or an alert names, once every file is read: it exists, the
/// grant caps its measure, its grade lets it be granted, and the grant is within the grade's
/// ceilings.
fn check_refs(
    files: &[(PathBuf, String)],
    policy: &Policy,
    declared: &BTreeSet<String>,
    refs: Vec<DatasetRef>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for r in refs {
        let (line, column) = line_col(&files[r.file].1, r.span.start);
        let mut problem = |message: String| {
            out.push(Problem {
                file: files[r.file].0.clone(),
                line,
                column,
                message,
            })
        };
        if !declared.contains(r.id.as_str()) {
            let known: Vec<_> = declared.iter().map(String::as_str).collect();
            problem(format!(
                "{} names unknown dataset `{}`; declared datasets are: {}",
                r.named_by,
                r.id,
                list_or_none(&known)
            ));
            continue;
        }
        let (Some(d), Some(g)) = (policy.datasets.get(&r.id), r.grant) else {
            continue;
        };
        let (eps, rho) = r.units;
        // A valid dataset's budget unit must be one the grant caps.
        let unit = match d.measure {
            PrivacyMeasure::Pure if !eps => {
                Some(("pure", "epsilon_per_job` and `epsilon_per_period"))
            }
            PrivacyMeasure::Zcdp if !rho => Some(("zcdp", "rho_per_job` and `rho_per_period")),
            _ => None,
        };
        if let Some((measure, keys)) = unit {
            problem(format!(
                "dataset `{}` has privacy_measure = \"{measure}\", so a grant covering it must declare `{keys}`",
                r.id
            ));
        }
        for message in grade_problems(policy, d, &policy.grants[g]) {
            problem(message);
        }
    }
    out
}

/// What a grant of dataset `d` does that `d`'s grade does not allow.
fn grade_problems(policy: &Policy, d: &Dataset, grant: &Grant) -> Vec<String> {
    let c = d.classification.as_str();
    let grade = policy.grade(d.classification);
    if !grade.grantable {
        return vec![if d.classification == Classification::Core {
            format!(
                "dataset `{}` is classified `core`: core data is never granted (it stays with its holder; GB/T 43697-2024)",
                d.id
            )
        } else {
            format!(
                "dataset `{}` is classified `{c}`, whose grade is not grantable",
                d.id
            )
        }];
    }
    let mut out = Vec::new();
    let caps = [
        (
            "epsilon_per_job",
            grant.epsilon_per_job,
            grade.max_epsilon_per_job,
        ),
        (
            "epsilon_per_period",
            grant.epsilon_per_period,
            grade.max_epsilon_per_period,
        ),
        ("rho_per_job", grant.rho_per_job, grade.max_rho_per_job),
        (
            "rho_per_period",
            grant.rho_per_period,
            grade.max_rho_per_period,
        ),
    ];
    for (key, value, ceiling) in caps {
        if let Some(max) = ceiling
            && value > max
        {
            out.push(format!(
                "{key} {value} exceeds grade '{c}' ceiling {key} {max} (dataset `{}`)",
                d.id
            ));
        }
    }
    if !grade.row_functions && grant.row_functions {
        out.push(format!(
            "grade '{c}' does not allow row functions: remove `row_functions` from grants of `{}` (or set `row_functions = true` in `[grade.{c}]`)",
            d.id
        ));
    }
    if !grade.partition_selection && grant.delta_per_query.is_some() {
        out.push(format!(
            "grade '{c}' does not allow partition selection: remove `delta_per_query` from grants of `{}`",
            d.id
        ));
    }
    out
}

/// Every grant gets the stricter of its own and its datasets' grades' minimums: review and the
/// minimum group count.
fn apply_grade_minimums(policy: &mut Policy) {
    let grades: Vec<Vec<Grade>> = policy
        .grants
        .iter()
        .map(|g| {
            g.datasets
                .iter()
                .filter_map(|id| policy.datasets.get(id))
                .map(|d| policy.grade(d.classification))
                .collect()
        })
        .collect();
    for (grant, grades) in policy.grants.iter_mut().zip(grades) {
        for grade in grades {
            grant.review = grant.review.stricter(grade.review);
            if grade.holder_approval {
                grant.review = Review::Required;
            }
            grant.min_group_count = match (grant.min_group_count, grade.min_group_count) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
    }
}

/// A TOML local date (no time, no offset), e.g. `2027-12-31`.
fn toml_date(v: &Value<'_>) -> Option<Date> {
    match v.get_ref() {
        DeValue::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => {
            dt.date.map(|d| Date {
                year: i32::from(d.year),
                month: d.month,
                day: d.day,
            })
        }
        _ => None,
    }
}

/// A grant's `expires`: a date, a local date-time or a date-time with an offset.
fn toml_expiry(v: &Value<'_>) -> Option<Expiry> {
    let DeValue::Datetime(dt) = v.get_ref() else {
        return None;
    };
    let d = dt.date?;
    let date = Date::parse(&format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))?;
    let Some(t) = dt.time else {
        return dt.offset.is_none().then_some(Expiry::EndOfDay(date));
    };
    let second_of_day = u32::from(t.hour) * 3600
        + u32::from(t.minute) * 60
        + u32::from(t.second.unwrap_or(0).min(59));
    Some(match dt.offset {
        None => Expiry::Local {
            date,
            second_of_day,
        },
        // Written `Z` or `+HH:MM`, as a fixed-offset zone reads it.
        Some(o) => Expiry::Offset {
            date,
            second_of_day,
            offset_minutes: match o.to_string().as_str() {
                "Z" => 0,
                written => TimeZone::parse(written)?.offset_minutes,
            },
        },
    })
}

fn int(i: &toml::de::DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(i.as_str(), i.radix()).ok()
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(", ")
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
        + 1;
    (line, column)
}

type Table<'i> = DeTable<'i>;
type Value<'i> = Spanned<DeValue<'i>>;

struct Cx {
    file: usize,
    problems: Vec<(Range<usize>, String)>,
    /// The offset of a `time_zone` declared in this or an earlier file.
    time_zone_seen: Option<i32>,
}

/// The fields of one TOML table, taken one by one so that leftovers are reported as unknown.
struct Fields<'t, 'i> {
    table: &'t Table<'i>,
    taken: BTreeSet<&'t str>,
    span: Range<usize>,
}

impl<'t, 'i> Fields<'t, 'i> {
    fn new(table: &'t Table<'i>, span: Range<usize>) -> Self {
        Self {
            table,
            taken: BTreeSet::new(),
            span,
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'t Value<'i>> {
        self.taken.insert(key);
        self.table.get(key)
    }

    /// Reports every key that was never asked for, naming what is accepted here.
    fn finish(self, cx: &mut Cx, what: &str, accepted: &[&str]) {
        for (k, _) in self.table.iter() {
            if !self.taken.contains(k.get_ref().as_ref()) {
                cx.err(
                    k.span(),
                    format!(
                        "unknown field `{}` in {what}; accepted fields are: {}",
                        k.get_ref(),
                        accepted.join(", ")
                    ),
                );
            }
        }
    }
}

impl Cx {
    fn err(&mut self, span: Range<usize>, message: String) {
        self.problems.push((span, message));
    }

    fn document(
        &mut self,
        root: &Table<'_>,
        policy: &mut Policy,
        refs: &mut Vec<DatasetRef>,
        grant_keys: &mut GrantKeys,
    ) {
        for (key, value) in root.iter() {
            match key.get_ref().as_ref() {
                "dataset" => match value.get_ref() {
                    DeValue::Table(t) => {
                        for (name, ds) in t.iter() {
                            self.dataset(name, ds, policy);
                        }
                    }
                    _ => self.err(
                        value.span(),
                        "`dataset` must be a table: write `[dataset.<name>]`".into(),
                    ),
                },
                "grant" => match value.get_ref() {
                    DeValue::Array(items) => {
                        for item in items.iter() {
                            self.grant(item, policy, refs, grant_keys);
                        }
                    }
                    _ => self.err(
                        value.span(),
                        "`grant` must be an array of tables: write `[[grant]]`".into(),
                    ),
                },
                "lookup" => match value.get_ref() {
                    DeValue::Table(t) => {
                        for (name, lk) in t.iter() {
                            self.lookup(name, lk, policy);
                        }
                    }
                    _ => self.err(
                        value.span(),
                        "`lookup` must be a table: write `[lookup.<name>]`".into(),
                    ),
                },
                "time_zone" => self.time_zone(value, policy),
                "grade" => match value.get_ref() {
                    DeValue::Table(t) => {
                        for (name, g) in t.iter() {
                            self.grade(name, g, policy);
                        }
                    }
                    _ => self.err(
                        value.span(),
                        "`grade` must be a table: write `[grade.<classification>]`".into(),
                    ),
                },
                "alert" => match value.get_ref() {
                    DeValue::Array(items) => {
                        for item in items.iter() {
                            self.alert(item, policy, refs);
                        }
                    }
                    _ => self.err(
                        value.span(),
                        "`alert` must be an array of tables: write `[[alert]]`".into(),
                    ),
                },
                other => self.err(
                    key.span(),
                    format!(
                        "unknown section `{other}`; accepted sections are: dataset, grant, lookup, alert, grade (and the key time_zone)"
                    ),
                ),
            }
        }
    }

    /// One `[grade.<classification>]` table.
    fn grade(&mut self, name: &Spanned<impl AsRef<str>>, value: &Value<'_>, policy: &mut Policy) {
        let Some(c) = Classification::parse(name.get_ref().as_ref()) else {
            self.err(
                name.span(),
                format!(
                    "unknown grade `{}`; grades are the classifications: {}",
                    name.get_ref().as_ref(),
                    Classification::NAMES.join(", ")
                ),
            );
            return;
        };
        let DeValue::Table(table) = value.get_ref() else {
            self.err(
                value.span(),
                "a grade must be a table: write `[grade.<classification>]`".into(),
            );
            return;
        };
        let mut f = Fields::new(table, value.span());
        let mut g = Grade::default_for(c);
        let grantable = self.opt_bool(&mut f, "grantable");
        let partition = self.opt_bool(&mut f, "partition_selection");
        let holder_approval = self.opt_bool(&mut f, "holder_approval");
        let row_functions = self.opt_bool(&mut f, "row_functions");
        let caps = [
            self.opt_budget(&mut f, "max_epsilon_per_job"),
            self.opt_budget(&mut f, "max_epsilon_per_period"),
            self.opt_budget(&mut f, "max_rho_per_job"),
            self.opt_budget(&mut f, "max_rho_per_period"),
        ];
        let review = match f.get("review") {
            None => Some(None),
            Some(_) => self
                .req_enum(&mut f, "review", Review::NAMES)
                .and_then(|r| Review::parse(&r))
                .map(Some),
        };
        let min_group = self.opt_int(&mut f, "min_group_count", 0, 1_000_000);
        f.finish(
            self,
            "a grade",
            &[
                "grantable",
                "max_epsilon_per_job",
                "max_epsilon_per_period",
                "max_rho_per_job",
                "max_rho_per_period",
                "review",
                "min_group_count",
                "partition_selection",
                "holder_approval",
                "row_functions",
            ],
        );
        let (
            Some(grantable),
            Some(partition),
            Some(holder_approval),
            Some(row_functions),
            Some(review),
            Some(min_group),
        ) = (
            grantable,
            partition,
            holder_approval,
            row_functions,
            review,
            min_group,
        )
        else {
            return;
        };
        let [Some(epj), Some(epp), Some(rpj), Some(rpp)] = caps else {
            return;
        };
        if c == Classification::Core
            && let Some((true, span)) = grantable
        {
            self.err(
                span,
                "core data is never grantable (GB/T 43697-2024)".into(),
            );
            return;
        }
        g.grantable = grantable.map_or(g.grantable, |(b, _)| b);
        g.partition_selection = partition.map_or(g.partition_selection, |(b, _)| b);
        g.holder_approval = holder_approval.is_some_and(|(b, _)| b);
        g.row_functions = row_functions.map_or(g.row_functions, |(b, _)| b);
        (g.max_epsilon_per_job, g.max_epsilon_per_period) = (epj.map(|c| c.0), epp.map(|c| c.0));
        (g.max_rho_per_job, g.max_rho_per_period) = (rpj.map(|c| c.0), rpp.map(|c| c.0));
        g.review = review.unwrap_or(Review::None);
        g.min_group_count = min_group.map(|n| n as u64);
        if policy.grades.insert(c, g).is_some() {
            self.err(
                name.span(),
                format!("grade `{}` is declared twice", c.as_str()),
            );
        }
    }

    /// An optional boolean with its place: `Some(None)` when absent, `None` after reporting.
    fn opt_bool(
        &mut self,
        f: &mut Fields<'_, '_>,
        key: &'static str,
    ) -> Option<Option<(bool, Range<usize>)>> {
        let Some(v) = f.get(key) else {
            return Some(None);
        };
        match v.get_ref() {
            DeValue::Boolean(b) => Some(Some((*b, v.span()))),
            _ => {
                self.err(v.span(), format!("`{key}` must be true or false"));
                None
            }
        }
    }

    /// One `[[alert]]` rule: its name, what it watches at which level, its datasets and action.
    fn alert(&mut self, value: &Value<'_>, policy: &mut Policy, refs: &mut Vec<DatasetRef>) {
        let DeValue::Table(table) = value.get_ref() else {
            self.err(
                value.span(),
                "an alert must be a table: write `[[alert]]`".into(),
            );
            return;
        };
        let mut f = Fields::new(table, value.span());
        let name = self.req_str(&mut f, "name");
        let when = self.alert_when(&mut f);
        let action = self
            .req_enum(&mut f, "action", &["notify", "suspend", "hold_releases"])
            .map(|a| match a.as_str() {
                "suspend" => AlertAction::Suspend,
                "hold_releases" => AlertAction::HoldReleases,
                _ => AlertAction::Notify,
            });
        let datasets = match f.get("datasets") {
            None => Some(vec![]),
            Some(_) => self.datasets_list(&mut f),
        };
        f.finish(self, "an alert", ALERT_FIELDS);
        let (Some((name, span)), Some(when), Some(datasets), Some(action)) =
            (name, when, datasets, action)
        else {
            return;
        };
        if policy.alerts.iter().any(|a| a.name == name) {
            self.err(
                span,
                format!("alert `{name}` is declared twice; names must be unique"),
            );
            return;
        }
        if let (AlertWhen::Denials { .. }, Some((span, _))) = (when, datasets.first()) {
            self.err(
                span.clone(),
                "`datasets` does not apply to `when = \"denials\"`: refusals are counted per operator over every dataset".into(),
            );
            return;
        }
        // Named datasets must exist: checked with the grants' references once every file is
        // read (an alert caps nothing, so it needs neither measure's caps).
        for (span, id) in &datasets {
            refs.push(DatasetRef {
                file: self.file,
                span: span.clone(),
                id: id.clone(),
                units: (true, true),
                grant: None,
                named_by: "alert",
            });
        }
        policy.alerts.push(AlertRule {
            name,
            when,
            datasets: datasets.into_iter().map(|(_, d)| d).collect(),
            action,
        });
    }

    /// An alert's `when` with the fields its kind needs: `threshold` for the shares, with
    /// `window` for `burn_rate`; `count` and `window` for `denials`. A field another kind takes
    /// is refused where it is written.
    fn alert_when(&mut self, f: &mut Fields<'_, '_>) -> Option<AlertWhen> {
        const KINDS: &[&str] = &["budget_share", "dataset_share", "burn_rate", "denials"];
        let kind = self.req_enum(f, "when", KINDS)?;
        let (takes_threshold, takes_window, takes_count) = match kind.as_str() {
            "budget_share" | "dataset_share" => (true, false, false),
            "burn_rate" => (true, true, false),
            _ => (false, true, true),
        };
        let mut misplaced = false;
        for (key, taken) in [
            ("threshold", takes_threshold),
            ("window", takes_window),
            ("count", takes_count),
        ] {
            if let (false, Some(v)) = (taken, f.get(key)) {
                self.err(
                    v.span(),
                    format!("`{key}` does not apply to `when = \"{kind}\"`"),
                );
                misplaced = true;
            }
        }
        let threshold = takes_threshold.then(|| self.share(f, "threshold"));
        let window_secs = takes_window.then(|| self.window(f));
        let count = takes_count.then(|| self.req_int(f, "count", 1, 1_000_000));
        if misplaced
            || [
                threshold.map(|t| t.is_some()),
                window_secs.map(|w| w.is_some()),
                count.map(|c| c.is_some()),
            ]
            .contains(&Some(false))
        {
            return None;
        }
        let (threshold, window_secs, count) = (
            threshold.flatten(),
            window_secs.flatten(),
            count.flatten().map(|c| c as u64),
        );
        Some(match (kind.as_str(), threshold, window_secs, count) {
            ("budget_share", Some(threshold), ..) => AlertWhen::BudgetShare { threshold },
            ("dataset_share", Some(threshold), ..) => AlertWhen::DatasetShare { threshold },
            ("burn_rate", Some(threshold), Some(window_secs), _) => AlertWhen::BurnRate {
                threshold,
                window_secs,
            },
            (_, _, Some(window_secs), Some(count)) => AlertWhen::Denials { count, window_secs },
            _ => return None,
        })
    }

    /// An alert's `window`: a whole number of minutes, hours or days (`"10m"`, `"1h"`, `"1d"`).
    fn window(&mut self, f: &mut Fields<'_, '_>) -> Option<u64> {
        self.require(
            f,
            "window",
            "a whole number of minutes, hours or days, e.g. \"10m\", \"1h\" or \"1d\"",
        )?;
        let (s, span) = self.req_str(f, "window")?;
        let minutes = s
            .strip_suffix('m')
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| (1..=60 * 24 * 31).contains(n))
            .map(|n| n * 60);
        match minutes.or_else(|| duration_secs(&s)) {
            Some(secs) => Some(secs),
            None => {
                self.err(
                    span,
                    format!("invalid window `{s}`; write a whole number of minutes, hours or days, e.g. \"10m\", \"1h\" or \"1d\""),
                );
                None
            }
        }
    }

    /// A required share in (0, 1].
    fn share(&mut self, f: &mut Fields<'_, '_>, key: &'static str) -> Option<f64> {
        let v = self.require(f, key, "a share in (0, 1], e.g. 0.8")?;
        let n = match v.get_ref() {
            DeValue::Float(x) => x.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => int(i).map(|i| i as f64),
            _ => None,
        };
        match n {
            Some(t) if t > 0.0 && t <= 1.0 => Some(t),
            _ => {
                self.err(
                    v.span(),
                    format!("`{key}` must be a share in (0, 1], e.g. 0.8"),
                );
                None
            }
        }
    }

    /// `time_zone = "Asia/Shanghai"`: the zone grant expiry dates are read in. Every file that
    /// declares one must declare the same.
    fn time_zone(&mut self, value: &Value<'_>, policy: &mut Policy) {
        let zone = value
            .get_ref()
            .as_str()
            .and_then(crate::date::TimeZone::parse);
        let Some(zone) = zone else {
            self.err(
                value.span(),
                "`time_zone` must be \"Asia/Shanghai\", \"UTC\" or a fixed offset such as \"+08:00\"".into(),
            );
            return;
        };
        if self
            .time_zone_seen
            .is_some_and(|o| o != zone.offset_minutes)
        {
            self.err(
                value.span(),
                format!(
                    "`time_zone` is declared differently in another policy file (as {}); declare one zone",
                    policy.time_zone.name
                ),
            );
            return;
        }
        self.time_zone_seen = Some(zone.offset_minutes);
        policy.time_zone = zone;
    }

    /// A dataset's or lookup's name.
    fn name(&mut self, name: &Spanned<impl AsRef<str>>) -> Option<DatasetId> {
        DatasetId::new(name.get_ref().as_ref())
            .map_err(|e| self.err(name.span(), e))
            .ok()
    }

    /// A source's format, from its extension.
    fn source_format(&mut self, source: Option<&(String, Range<usize>)>) -> Option<SourceFormat> {
        let (s, span) = source?;
        let lower = s.to_ascii_lowercase();
        if lower.ends_with(".parquet") {
            Some(SourceFormat::Parquet)
        } else if lower.ends_with(".csv") {
            Some(SourceFormat::Csv)
        } else {
            self.err(
                span.clone(),
                format!(
                    "source `{s}` has an unknown format; accepted: a path ending in .parquet or .csv"
                ),
            );
            None
        }
    }

    fn lookup(&mut self, name: &Spanned<impl AsRef<str>>, value: &Value<'_>, policy: &mut Policy) {
        let id = self.name(name);
        let DeValue::Table(table) = value.get_ref() else {
            self.err(
                value.span(),
                "a lookup must be a table: write `[lookup.<name>]`".into(),
            );
            return;
        };
        let mut f = Fields::new(table, value.span());
        let source = self.req_str(&mut f, "source");
        let key = self.req_str(&mut f, "key");
        f.finish(self, "a lookup", &["source", "key"]);
        let format = self.source_format(source.as_ref());
        if let Some((k, span)) = &key
            && let Err(e) = validate_column_name(k)
        {
            self.err(span.clone(), e);
            return;
        }
        let (Some(id), Some((source, _)), Some(format), Some((key, _))) = (id, source, format, key)
        else {
            return;
        };
        if policy.datasets.contains_key(&id) || policy.lookups.contains_key(&id) {
            self.err(
                name.span(),
                format!("`{id}` is declared twice; dataset and lookup names must be unique"),
            );
            return;
        }
        policy.lookups.insert(
            id.clone(),
            Lookup {
                id,
                source: PathBuf::from(source),
                format,
                key,
            },
        );
    }

    fn dataset(&mut self, name: &Spanned<impl AsRef<str>>, value: &Value<'_>, policy: &mut Policy) {
        let id = self.name(name);
        let DeValue::Table(table) = value.get_ref() else {
            self.err(
                value.span(),
                "a dataset must be a table: write `[dataset.<name>]`".into(),
            );
            return;
        };
        let mut f = Fields::new(table, value.span());
        let source = self.req_str(&mut f, "source");
        let holder = self.req_str(&mut f, "holder");
        let classification = self.req_enum(&mut f, "classification", Classification::NAMES);
        let unit_value = f.get("privacy_unit");
        let privacy_unit = self.req_str_value(unit_value, "privacy_unit", f.span.clone());
        let max_rows = self.req_int(&mut f, "max_rows_per_unit", 1, MAX_ROWS_PER_UNIT_LIMIT);
        let max_groups = self.opt_int(&mut f, "max_groups_per_unit", 1, MAX_ROWS_PER_UNIT_LIMIT);
        let max_rows_group = self.opt_int(&mut f, "max_rows_per_group", 1, MAX_ROWS_PER_UNIT_LIMIT);
        let bucket = self.opt_int(&mut f, "response_time_bucket_ms", 1, 60_000);
        let fuel_row = self.opt_int(&mut f, "row_fuel_per_row", 1_000, 1_000_000_000);
        let fuel_unit = self.opt_int(&mut f, "row_fuel_per_unit", 1_000, 100_000_000_000);
        let cluster = self.opt_bool(&mut f, "cluster");
        let measure = self.privacy_measure(&mut f);
        let fuel_span = f.span.clone();
        let columns = self.columns(&mut f, privacy_unit.as_deref(), unit_value);
        let budget = self.dataset_budget(&mut f, measure);
        f.finish(
            self,
            "a dataset",
            &[
                "budget",
                "source",
                "holder",
                "classification",
                "privacy_unit",
                "max_rows_per_unit",
                "max_groups_per_unit",
                "max_rows_per_group",
                "response_time_bucket_ms",
                "row_fuel_per_row",
                "row_fuel_per_unit",
                "privacy_measure",
                "cluster",
                "columns",
            ],
        );
        let row_fuel = self.row_fuel(fuel_row, fuel_unit, fuel_span);

        if let Some(u) = &privacy_unit
            && let Err(e) = validate_column_name(u)
        {
            self.err(unit_value.map_or(0..0, |v| v.span()), e);
        }

        let format = self.source_format(source.as_ref());

        let (
            Some(id),
            Some((source, _)),
            Some(format),
            Some((holder, _)),
            Some(classification),
            Some(privacy_unit),
            Some(max_rows),
            Some(max_groups),
            Some(max_rows_group),
            Some(bucket),
            Some(measure),
            Some(columns),
            Some(budget),
            Some(row_fuel),
        ) = (
            id,
            source,
            format,
            holder,
            classification,
            privacy_unit,
            max_rows,
            max_groups,
            max_rows_group,
            bucket,
            measure,
            columns,
            budget,
            row_fuel,
        )
        else {
            return;
        };
        if policy.datasets.contains_key(&id) || policy.lookups.contains_key(&id) {
            self.err(
                name.span(),
                format!("dataset `{id}` is declared twice; each dataset name must be unique"),
            );
            return;
        }
        policy.datasets.insert(
            id.clone(),
            Dataset {
                id,
                source: PathBuf::from(source),
                format,
                holder,
                classification: Classification::parse(&classification)
                    .expect("validated by req_enum"),
                privacy_unit,
                max_rows_per_unit: max_rows as u32,
                max_groups_per_unit: max_groups.map(|n| n as u32),
                max_rows_per_group: max_rows_group.map(|n| n as u32),
                response_time_bucket_ms: bucket.map(|n| n as u32),
                measure,
                columns,
                budget,
                row_fuel,
                cluster: cluster.flatten().is_none_or(|(b, _)| b),
            },
        );
    }

    /// The dataset's row-function fuel: its optional per-row and per-unit values (defaults
    /// [`RowFuel::default`]), a unit's at least a row's; `None` after reporting.
    fn row_fuel(
        &mut self,
        per_row: Option<Option<i64>>,
        per_unit: Option<Option<i64>>,
        span: std::ops::Range<usize>,
    ) -> Option<RowFuel> {
        let default = RowFuel::default();
        let fuel = RowFuel {
            per_row: per_row?.map_or(default.per_row, |n| n as u64),
            per_unit: per_unit?.map_or(default.per_unit, |n| n as u64),
        };
        if fuel.per_unit < fuel.per_row {
            self.err(
                span,
                format!(
                    "`row_fuel_per_unit` ({}) must be at least `row_fuel_per_row` ({}): a unit's rows share its fuel",
                    fuel.per_unit, fuel.per_row
                ),
            );
            return None;
        }
        Some(fuel)
    }

    /// `privacy_measure`: `pure` (the default) or `zcdp`; `None` after reporting.
    fn privacy_measure(&mut self, f: &mut Fields<'_, '_>) -> Option<PrivacyMeasure> {
        let Some(v) = f.get("privacy_measure") else {
            return Some(PrivacyMeasure::Pure);
        };
        match v.get_ref().as_str() {
            Some("pure") => Some(PrivacyMeasure::Pure),
            Some("zcdp") => Some(PrivacyMeasure::Zcdp),
            _ => {
                self.err(
                    v.span(),
                    format!(
                        "`privacy_measure` must be one of: {} (pure ε-DP with Laplace noise, or zero-concentrated DP with Gaussian noise)",
                        PrivacyMeasure::NAMES.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// `budget = { epsilon_per_period = …, period = "30d" }` (`rho_per_period` on zCDP
    /// datasets): `Some(None)` when absent, `None` after reporting.
    fn dataset_budget(
        &mut self,
        f: &mut Fields<'_, '_>,
        measure: Option<PrivacyMeasure>,
    ) -> Option<Option<DatasetBudget>> {
        let Some(v) = f.get("budget") else {
            return Some(None);
        };
        let DeValue::Table(t) = v.get_ref() else {
            self.err(
                v.span(),
                "`budget` must be a table such as { epsilon_per_period = 5.0, period = \"30d\" }: the cap over every operator together".into(),
            );
            return None;
        };
        let mut b = Fields::new(t, v.span());
        let epsilon = self.opt_budget(&mut b, "epsilon_per_period");
        let rho = self.opt_budget(&mut b, "rho_per_period");
        let period = self.period(&mut b);
        b.finish(
            self,
            "a dataset budget",
            &["epsilon_per_period", "rho_per_period", "period"],
        );
        let per_period = match (measure?, epsilon?, rho?) {
            (PrivacyMeasure::Pure, Some((e, _)), None) => e,
            (PrivacyMeasure::Zcdp, None, Some((r, _))) => r,
            (m, _, _) => {
                let (measure, key) = match m {
                    PrivacyMeasure::Pure => ("pure", "epsilon_per_period"),
                    PrivacyMeasure::Zcdp => ("zcdp", "rho_per_period"),
                };
                self.err(
                    v.span(),
                    format!("the dataset has privacy_measure = \"{measure}\": its budget declares `{key}` (and not the other measure's)"),
                );
                return None;
            }
        };
        Some(Some(DatasetBudget {
            per_period,
            period_secs: period?,
        }))
    }

    fn columns(
        &mut self,
        f: &mut Fields<'_, '_>,
        privacy_unit: Option<&str>,
        unit_value: Option<&Value<'_>>,
    ) -> Option<Vec<Column>> {
        let Some(value) = f.get("columns") else {
            self.err(
                f.span.clone(),
                "missing field `columns`: declare each usable column, e.g. `columns.age = { kind = \"int\", bounds = [0, 100] }`".into(),
            );
            return None;
        };
        let DeValue::Table(table) = value.get_ref() else {
            self.err(
                value.span(),
                "`columns` must be a table of column declarations".into(),
            );
            return None;
        };
        if table.is_empty() {
            self.err(value.span(), "`columns` declares no column".into());
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        // Declaration order is the order columns are shown to jobs.
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        for (name, decl) in entries {
            let name_str = name.get_ref().as_ref().to_string();
            if let Err(e) = validate_column_name(&name_str) {
                self.err(name.span(), e);
                ok = false;
                continue;
            }
            if Some(name_str.as_str()) == privacy_unit {
                self.err(
                    name.span(),
                    format!(
                        "column `{name_str}` is the privacy unit and must not be declared in `columns`: jobs never see it"
                    ),
                );
                let _ = unit_value;
                ok = false;
                continue;
            }
            match self.column(&name_str, decl) {
                Some(c) => out.push(c),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// One column declaration, stage by stage: its fields read (and unknown ones reported), its
    /// `bins`, then the fields of its kind, each field on another kind reported.
    fn column(&mut self, name: &str, decl: &Value<'_>) -> Option<Column> {
        let DeValue::Table(table) = decl.get_ref() else {
            self.err(
                decl.span(),
                format!("column `{name}` must be an inline table such as `{{ kind = \"int\", bounds = [0, 100] }}`"),
            );
            return None;
        };
        let mut f = Fields::new(table, decl.span());
        let kind = self.req_enum(&mut f, "kind", ColumnKind::NAMES);
        let public_values = f.get("public_values");
        let bounds = f.get("bounds");
        let selection = f.get("partition_selection");
        let bins_value = f.get("bins");
        let rows_value = f.get("row_functions");
        f.finish(
            self,
            "a column",
            &[
                "kind",
                "public_values",
                "bounds",
                "partition_selection",
                "bins",
                "row_functions",
            ],
        );
        let kind = kind?;
        let bins = self.column_bins(&kind, bins_value)?;
        let row_functions = self.column_row_functions(&kind, rows_value)?;
        let column = |kind| Column {
            bins: bins.clone(),
            name: name.into(),
            kind,
            row_functions,
        };
        match kind.as_str() {
            "category" => {
                let bad = self.not_for(&kind, bounds, "bounds", "int, float, date");
                let kind = self.category(public_values, selection)?;
                (!bad).then(|| column(kind))
            }
            "int" | "float" | "date" => {
                let bad = self.not_for(&kind, public_values, "public_values", "category")
                    | self.not_for(&kind, selection, "partition_selection", "category");
                let kind = match (kind.as_str(), bounds) {
                    ("int", b) => ColumnKind::Int {
                        bounds: match b {
                            None => None,
                            Some(v) => Some(self.int_bounds(v)?),
                        },
                    },
                    ("float", b) => ColumnKind::Float {
                        bounds: match b {
                            None => None,
                            Some(v) => Some(self.float_bounds(v)?),
                        },
                    },
                    (_, b) => ColumnKind::Date {
                        bounds: match b {
                            None => None,
                            Some(v) => Some(self.date_bounds(v)?),
                        },
                    },
                };
                (!bad).then(|| column(kind))
            }
            "hidden" => {
                let bad1 = self.not_for(&kind, public_values, "public_values", "category");
                let bad2 = self.not_for(&kind, bounds, "bounds", "int, float, date");
                let bad3 = self.not_for(&kind, selection, "partition_selection", "category");
                (!bad1 && !bad2 && !bad3).then(|| column(ColumnKind::Hidden))
            }
            _ => None,
        }
    }

    /// A column's `row_functions` flag, allowed on numeric columns only (row functions take
    /// numbers): `None` after reporting a problem.
    fn column_row_functions(&mut self, kind: &str, v: Option<&Value<'_>>) -> Option<bool> {
        let Some(v) = v else {
            return Some(false);
        };
        match (kind, v.get_ref()) {
            ("int" | "float", DeValue::Boolean(b)) => Some(*b),
            ("int" | "float", _) => {
                self.err(v.span(), "`row_functions` must be true or false".into());
                None
            }
            _ => {
                self.err(
                    v.span(),
                    format!("`row_functions` is for int and float columns (row functions take numbers), not {kind}"),
                );
                None
            }
        }
    }

    /// A column's `bins`, allowed on numeric columns only: `Some(None)` when absent, `None`
    /// after reporting a problem.
    fn column_bins(&mut self, kind: &str, v: Option<&Value<'_>>) -> Option<Option<Vec<f64>>> {
        match v {
            None => Some(None),
            Some(v) if !matches!(kind, "int" | "float") => {
                self.err(
                    v.span(),
                    format!(
                        "`bins` is not allowed on a `{kind}` column; it is allowed on: int, float"
                    ),
                );
                None
            }
            Some(v) => Some(Some(self.bins(v, kind == "int")?)),
        }
    }

    /// Reports `field` present on a column of `kind`, which does not take it; whether it was.
    fn not_for(&mut self, kind: &str, v: Option<&Value<'_>>, field: &str, allowed: &str) -> bool {
        if let Some(v) = v {
            self.err(
                v.span(),
                format!(
                    "`{field}` is not allowed on a `{kind}` column; it is allowed on: {allowed}"
                ),
            );
        }
        v.is_some()
    }

    /// A category column's public values or partition selection (not both).
    fn category(
        &mut self,
        public_values: Option<&Value<'_>>,
        selection: Option<&Value<'_>>,
    ) -> Option<ColumnKind> {
        let values = match public_values {
            None => None,
            Some(v) => Some(self.public_values(v)?),
        };
        let partition_selection = match selection.map(|v| (v, v.get_ref())) {
            None => false,
            Some((_, DeValue::Boolean(b))) => *b,
            Some((v, _)) => {
                self.err(
                    v.span(),
                    "`partition_selection` must be true or false".into(),
                );
                return None;
            }
        };
        if let (Some(v), true, Some(_)) = (selection, partition_selection, &values) {
            self.err(
                v.span(),
                "declare either `public_values` (every value released) or `partition_selection = true` (values released by a noisy threshold), not both".into(),
            );
            return None;
        }
        Some(ColumnKind::Category {
            public_values: values,
            partition_selection,
        })
    }

    /// An `int` column's bounds: two integers, lower first.
    fn int_bounds(&mut self, v: &Value<'_>) -> Option<(i64, i64)> {
        let (lo, hi) = self.bounds_pair(v)?;
        let why = match (lo.get_ref(), hi.get_ref()) {
            (DeValue::Integer(a), DeValue::Integer(b)) => match (int(a), int(b)) {
                (Some(a), Some(b)) if a < b => return Some((a, b)),
                (Some(_), Some(_)) => "bounds must be [lower, upper] with lower < upper",
                _ => "bounds do not fit in a 64-bit integer",
            },
            _ => "bounds of an `int` column must be two integers, e.g. [0, 100]",
        };
        self.err(v.span(), why.into());
        None
    }

    /// A `float` column's bounds: finite, lower first, within ±1e15.
    fn float_bounds(&mut self, v: &Value<'_>) -> Option<(f64, f64)> {
        let (lo, hi) = self.bounds_pair(v)?;
        let (a, b) = (self.number(lo)?, self.number(hi)?);
        if !(a.is_finite() && b.is_finite() && a < b) {
            self.err(
                v.span(),
                "bounds must be finite, [lower, upper] with lower < upper".into(),
            );
            return None;
        }
        if a.abs().max(b.abs()) > 1e15 {
            self.err(v.span(), "bounds must lie within ±1e15".into());
            return None;
        }
        Some((a, b))
    }

    /// A `date` column's bounds: two dates, first before last.
    fn date_bounds(&mut self, v: &Value<'_>) -> Option<(Date, Date)> {
        let (lo, hi) = self.bounds_pair(v)?;
        match (toml_date(lo), toml_date(hi)) {
            (Some(a), Some(b)) if a < b => Some((a, b)),
            _ => {
                self.err(
                    v.span(),
                    "bounds of a `date` column must be two dates, first before last, e.g. [2024-01-01, 2026-12-31] (no quotes)".into(),
                );
                None
            }
        }
    }

    fn public_values(&mut self, v: &Value<'_>) -> Option<Vec<String>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.err(
                v.span(),
                "`public_values` must be an array of strings".into(),
            );
            return None;
        };
        if items.is_empty() || items.len() > MAX_PUBLIC_VALUES {
            self.err(
                v.span(),
                format!("`public_values` must list 1 to {MAX_PUBLIC_VALUES} values"),
            );
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(s) if out.iter().any(|o| o == s) => {
                    self.err(item.span(), format!("public value `{s}` is listed twice"));
                    ok = false;
                }
                Some(s) => out.push(s.to_string()),
                None => {
                    self.err(item.span(), "each public value must be a string".into());
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// Bin edges: 2 to 1,001 numbers (integers for an `int` column), strictly increasing.
    fn bins(&mut self, v: &Value<'_>, integers: bool) -> Option<Vec<f64>> {
        let rule = if integers {
            "`bins` of an `int` column must be 2 to 1001 strictly increasing integers, e.g. [0, 18, 65, 120]"
        } else {
            "`bins` must be 2 to 1001 strictly increasing finite numbers within ±1e15, e.g. [0.0, 0.5, 1.0]"
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.err(v.span(), rule.into());
            return None;
        };
        let mut edges = Vec::with_capacity(items.len());
        for item in items.iter() {
            let n = match item.get_ref() {
                DeValue::Integer(i) => int(i).map(|i| i as f64),
                DeValue::Float(x) if !integers => x.as_str().parse::<f64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n.is_finite() && n.abs() <= 1e15 => edges.push(n),
                _ => {
                    self.err(item.span(), rule.into());
                    return None;
                }
            }
        }
        if !(2..=1001).contains(&edges.len()) || edges.windows(2).any(|w| w[0] >= w[1]) {
            self.err(v.span(), rule.into());
            return None;
        }
        Some(edges)
    }

    fn bounds_pair<'v, 'i>(&mut self, v: &'v Value<'i>) -> Option<(&'v Value<'i>, &'v Value<'i>)> {
        match v.get_ref() {
            DeValue::Array(items) if items.len() == 2 => Some((&items[0], &items[1])),
            _ => {
                self.err(v.span(), "`bounds` must be a pair [lower, upper]".into());
                None
            }
        }
    }

    fn number(&mut self, v: &Value<'_>) -> Option<f64> {
        match v.get_ref() {
            DeValue::Integer(i) => int(i).map(|i| i as f64),
            DeValue::Float(x) => x.as_str().parse::<f64>().ok(),
            _ => {
                self.err(v.span(), "expected a number".into());
                None
            }
        }
    }

    /// One `[[grant]]`: its fields, each checked where it is read (every problem is reported,
    /// not only the first), then the grant, if they all are valid and its operator holds no
    /// other grant on its datasets under the same scenario.
    fn grant(
        &mut self,
        item: &Value<'_>,
        policy: &mut Policy,
        refs: &mut Vec<DatasetRef>,
        grant_keys: &mut GrantKeys,
    ) {
        let DeValue::Table(table) = item.get_ref() else {
            self.err(
                item.span(),
                "each grant must be a table: write `[[grant]]`".into(),
            );
            return;
        };
        let mut f = Fields::new(table, item.span());
        let operator = self
            .req_str(&mut f, "operator")
            .and_then(|(s, span)| OperatorId::new(&s).map_err(|e| self.err(span, e)).ok());
        let datasets = self.datasets_list(&mut f);
        let purpose = self.req_str(&mut f, "purpose");
        let aggregations = self.aggregations(&mut f);
        let (eps, rho) = self.grant_caps(&mut f);
        let first_ref = refs.len();
        self.push_refs(refs, datasets.iter().flatten(), (&eps, &rho));
        let period = self.period(&mut f);
        let expires = self.expiry(&mut f);
        let review = self
            .req_enum(&mut f, "review", Review::NAMES)
            .and_then(|r| Review::parse(&r));
        let allowed_wasm = self.allowed_wasm(&mut f);
        let params = self.params_rule(&mut f);
        let adhoc_sql = self.opt_bool(&mut f, "adhoc_sql");
        let row_functions = self.opt_bool(&mut f, "row_functions");
        let scenario = self.scenario_terms(&mut f);
        let min_group = self.min_group_count(&mut f);
        let delta = self.delta_pair(&mut f);
        f.finish(self, "a grant", GRANT_FIELDS);
        let (Some(params), Some(adhoc_sql), Some(row_functions)) =
            (params, adhoc_sql, row_functions)
        else {
            return;
        };
        let (
            Some(operator),
            Some(datasets),
            Some((purpose, _)),
            Some(aggregations),
            Some(eps),
            Some(rho),
            Some(period),
            Some(expires),
            Some(review),
            Some(allowed_wasm),
            Some(min_group_count),
            Some((delta_per_query, delta_per_period)),
            Some(scenario),
        ) = (
            operator,
            datasets,
            purpose,
            aggregations,
            eps,
            rho,
            period,
            expires,
            review,
            allowed_wasm,
            min_group,
            delta,
            scenario,
        )
        else {
            return;
        };
        if !self.claim(grant_keys, &operator, &datasets, &scenario.id) {
            return;
        }
        policy.grants.push(Grant {
            scenario: scenario.id,
            legal_basis: scenario.legal_basis,
            usage: scenario.usage,
            tariff: scenario.tariff,
            recipients: scenario.recipients,
            operator,
            datasets: datasets.into_iter().map(|(_, d)| d).collect(),
            purpose,
            aggregations,
            epsilon_per_job: eps.map_or(0.0, |c| c.0),
            epsilon_per_period: eps.map_or(0.0, |c| c.1),
            rho_per_job: rho.map_or(0.0, |c| c.0),
            rho_per_period: rho.map_or(0.0, |c| c.1),
            period_secs: period,
            expires,
            review,
            allowed_wasm,
            params,
            adhoc_sql: adhoc_sql.is_some_and(|(b, _)| b),
            row_functions: row_functions.is_some_and(|(b, _)| b),
            min_group_count,
            delta_per_query,
            delta_per_period,
        });
        // Only now do its references know which grant they belong to (for the grade checks).
        for r in &mut refs[first_ref..] {
            r.grant = Some(policy.grants.len() - 1);
        }
    }

    /// A grant's ε and ρ cap pairs; at least one must be declared.
    fn grant_caps(&mut self, f: &mut Fields<'_, '_>) -> (CapPair, CapPair) {
        let eps = self.cap_pair(f, ["epsilon_per_job", "epsilon_per_period"]);
        let rho = self.cap_pair(f, ["rho_per_job", "rho_per_period"]);
        if let (Some(None), Some(None)) = (&eps, &rho) {
            self.err(
                f.span.clone(),
                "a grant must cap the budget: declare `epsilon_per_job` and `epsilon_per_period` (pure-DP datasets), `rho_per_job` and `rho_per_period` (zCDP datasets), or both pairs".into(),
            );
        }
        (eps, rho)
    }

    /// Records the datasets a grant names, to be checked once every file is read (even if the
    /// grant has other problems), with which budget units it declares (each dataset needs its
    /// measure's).
    fn push_refs<'d>(
        &self,
        refs: &mut Vec<DatasetRef>,
        datasets: impl Iterator<Item = &'d (Range<usize>, DatasetId)>,
        (eps, rho): (&CapPair, &CapPair),
    ) {
        let none = matches!((eps, rho), (Some(None), Some(None)));
        let units = (
            none || !matches!(eps, Some(None)),
            none || !matches!(rho, Some(None)),
        );
        for (span, id) in datasets {
            refs.push(DatasetRef {
                file: self.file,
                span: span.clone(),
                id: id.clone(),
                units,
                grant: None,
                named_by: "grant",
            });
        }
    }

    /// `min_group_count`: `Some(None)` when absent, `None` after reporting.
    fn min_group_count(&mut self, f: &mut Fields<'_, '_>) -> Option<Option<u64>> {
        let Some(v) = f.get("min_group_count") else {
            return Some(None);
        };
        match v.get_ref() {
            DeValue::Integer(i) if int(i).is_some_and(|n| n >= 0) => Some(int(i).map(|n| n as u64)),
            _ => {
                self.err(
                    v.span(),
                    "`min_group_count` must be a non-negative integer".into(),
                );
                None
            }
        }
    }

    /// `delta_per_query` and `delta_per_period`, both or neither, the first at most the second:
    /// `(None, 0.0)` when neither, `None` after reporting.
    fn delta_pair(&mut self, f: &mut Fields<'_, '_>) -> Option<(Option<f64>, f64)> {
        let query = self.opt_delta(f, "delta_per_query");
        let period = self.opt_delta(f, "delta_per_period");
        match (query?, period?) {
            (None, None) => Some((None, 0.0)),
            (Some((q, span)), Some((p, _))) if q > p => {
                self.err(
                    span,
                    format!("delta_per_query ({q}) exceeds delta_per_period ({p})"),
                );
                None
            }
            (Some((q, _)), Some((p, _))) => Some((Some(q), p)),
            (Some((_, span)), None) | (None, Some((_, span))) => {
                self.err(
                    span,
                    "declare both `delta_per_query` and `delta_per_period`, or neither".into(),
                );
                None
            }
        }
    }

    /// Claims `operator`'s grant on each of `datasets` under `scenario`: several grants of one
    /// operator on one dataset are scenarios, and each must name its own. False after reporting.
    fn claim(
        &mut self,
        grant_keys: &mut GrantKeys,
        operator: &OperatorId,
        datasets: &[(Range<usize>, DatasetId)],
        scenario: &Option<String>,
    ) -> bool {
        for (span, id) in datasets {
            let held = grant_keys
                .entry((operator.clone(), id.clone()))
                .or_default();
            if !held.is_empty()
                && (scenario.is_none() || held.contains(&None) || held.contains(scenario))
            {
                self.err(
                    span.clone(),
                    format!("operator `{operator}` already has a grant for dataset `{id}`; several grants of one operator on one dataset must each name a distinct `scenario`"),
                );
                return false;
            }
            held.push(scenario.clone());
        }
        true
    }

    /// A grant's scenario: its id, legal basis and use.
    fn scenario_terms(&mut self, f: &mut Fields<'_, '_>) -> Option<ScenarioTerms> {
        let id = self.scenario_id(f);
        let legal_basis = match f.get("legal_basis") {
            None => Some(None),
            Some(_) => self.req_str(f, "legal_basis").map(|(s, _)| Some(s)),
        };
        let usage = match f.get("use") {
            None => Some(Usage::default()),
            Some(_) => self
                .req_enum(f, "use", Usage::NAMES)
                .and_then(|u| Usage::parse(&u)),
        };
        let tariff = self.tariff(f, usage);
        let recipients = self.recipients(f);
        Some(ScenarioTerms {
            id: id?,
            legal_basis: legal_basis?,
            usage: usage?,
            tariff: tariff?,
            recipients: recipients?,
        })
    }

    /// `tariff = { fen_per_epsilon = …, …, cap_fen_per_month = … }`, for commercial use only:
    /// `Some(None)` when absent, `None` after reporting.
    fn tariff(&mut self, f: &mut Fields<'_, '_>, usage: Option<Usage>) -> Option<Option<Tariff>> {
        let Some(v) = f.get("tariff") else {
            return Some(None);
        };
        let DeValue::Table(table) = v.get_ref() else {
            self.err(v.span(), "`tariff` must be a table: `tariff = { fen_per_epsilon = 100000, fen_per_query = 10, cap_fen_per_month = 5000000 }`".into());
            return None;
        };
        if usage.is_some_and(|u| u != Usage::Commercial) {
            self.err(
                v.span(),
                "only `use = \"commercial\"` scenarios have a tariff: public-interest use is free (发改价格〔2025〕65号)".into(),
            );
            return None;
        }
        let mut t = Fields::new(table, v.span());
        let mut price = |cx: &mut Self, key: &'static str| cx.opt_int(&mut t, key, 0, MAX_FEN);
        let epsilon = price(self, "fen_per_epsilon");
        let rho = price(self, "fen_per_rho");
        let query = price(self, "fen_per_query");
        let cell = price(self, "fen_per_cell");
        let cap = self.req_int(&mut t, "cap_fen_per_month", 0, MAX_FEN);
        let earmark = self.opt_int(&mut t, "earmark_percent", 0, 100);
        t.finish(self, "a tariff", TARIFF_FIELDS);
        let fen = |x: Option<i64>| x.unwrap_or(0) as u64;
        Some(Some(Tariff {
            fen_per_epsilon: fen(epsilon?),
            fen_per_rho: fen(rho?),
            fen_per_query: fen(query?),
            fen_per_cell: fen(cell?),
            cap_fen_per_month: cap? as u64,
            earmark_percent: earmark?.unwrap_or(0) as u8,
        }))
    }

    /// `recipients = ["<operator id>", …]`: `Some(vec![])` when absent, `None` after reporting.
    fn recipients(&mut self, f: &mut Fields<'_, '_>) -> Option<Vec<OperatorId>> {
        let Some(v) = f.get("recipients") else {
            return Some(vec![]);
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.err(
                v.span(),
                "`recipients` must be an array of operator ids".into(),
            );
            return None;
        };
        let mut out: Vec<OperatorId> = Vec::new();
        for item in items.iter() {
            match item.get_ref().as_str().map(OperatorId::new) {
                Some(Ok(id)) if out.contains(&id) => {
                    self.err(item.span(), format!("recipient `{id}` is listed twice"))
                }
                Some(Ok(id)) => out.push(id),
                Some(Err(e)) => self.err(item.span(), e),
                None => self.err(
                    item.span(),
                    "each recipient is an operator id (a string)".into(),
                ),
            }
        }
        (out.len() == items.len()).then_some(out)
    }

    /// `scenario = "<id>"`: 1 to 64 lowercase letters, digits, `-` and `_`; `Some(None)` when
    /// absent, `None` after reporting.
    fn scenario_id(&mut self, f: &mut Fields<'_, '_>) -> Option<Option<String>> {
        let Some(v) = f.get("scenario") else {
            return Some(None);
        };
        match v.get_ref().as_str() {
            Some(s)
                if !s.is_empty()
                    && s.len() <= 64
                    && s.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    }) =>
            {
                Some(Some(s.to_string()))
            }
            _ => {
                self.err(
                    v.span(),
                    "`scenario` is an id: 1 to 64 lowercase letters, digits, `-` and `_`".into(),
                );
                None
            }
        }
    }

    /// `allowed_wasm = ["<sha256>", …]`: `Some(vec![])` when absent, `None` after reporting.
    /// `params`: absent (any), `"none"`, or the list of parameter strings a job may pass.
    fn params_rule(&mut self, f: &mut Fields<'_, '_>) -> Option<ParamsRule> {
        const WHAT: &str = "`params` is \"none\" (a job takes no parameters) or an array of the parameter strings a job may pass";
        let Some(v) = f.get("params") else {
            return Some(ParamsRule::Any);
        };
        match v.get_ref() {
            DeValue::String(s) if s.as_ref() == "none" => Some(ParamsRule::Forbidden),
            DeValue::Array(items) if !items.is_empty() => {
                let strings: Vec<String> = items
                    .iter()
                    .filter_map(|i| i.get_ref().as_str().map(str::to_string))
                    .collect();
                if strings.len() == items.len() {
                    Some(ParamsRule::OneOf(strings))
                } else {
                    self.err(v.span(), WHAT.into());
                    None
                }
            }
            _ => {
                self.err(v.span(), WHAT.into());
                None
            }
        }
    }

    fn allowed_wasm(&mut self, f: &mut Fields<'_, '_>) -> Option<Vec<String>> {
        let Some(v) = f.get("allowed_wasm") else {
            return Some(vec![]);
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.err(
                v.span(),
                "`allowed_wasm` must be an array of sha256 digests (64 lowercase hex digits)"
                    .into(),
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(s) if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
                    out.push(s.to_string())
                }
                _ => self.err(
                    item.span(),
                    "each build in `allowed_wasm` is the sha256 of its wasm: 64 lowercase hex digits (as `sluice submit` and `review list` print it)".into(),
                ),
            }
        }
        (out.len() == items.len()).then_some(out)
    }

    fn datasets_list(&mut self, f: &mut Fields<'_, '_>) -> Option<Vec<(Range<usize>, DatasetId)>> {
        let v = self.require(f, "datasets", "an array of dataset names")?;
        let DeValue::Array(items) = v.get_ref() else {
            self.err(
                v.span(),
                "`datasets` must be an array of dataset names".into(),
            );
            return None;
        };
        if items.is_empty() {
            self.err(v.span(), "`datasets` names no dataset".into());
            return None;
        }
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref().as_str().map(DatasetId::new) {
                Some(Ok(id)) => out.push((item.span(), id)),
                Some(Err(e)) => self.err(item.span(), e),
                None => self.err(item.span(), "each dataset name must be a string".into()),
            }
        }
        (out.len() == items.len()).then_some(out)
    }

    fn aggregations(&mut self, f: &mut Fields<'_, '_>) -> Option<Vec<Aggregation>> {
        let v = self.require(
            f,
            "aggregations",
            "an array such as [\"count\", \"sum\", \"mean\"]",
        )?;
        let DeValue::Array(items) = v.get_ref() else {
            self.err(v.span(), "`aggregations` must be an array of names".into());
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref().as_str().map(|s| (s, Aggregation::parse(s))) {
                Some((_, Some(a))) => out.push(a),
                Some((s, None)) => {
                    self.err(
                        item.span(),
                        format!(
                            "unknown aggregation `{s}`; accepted: {}",
                            Aggregation::NAMES.join(", ")
                        ),
                    );
                    ok = false;
                }
                None => {
                    self.err(item.span(), "each aggregation must be a string".into());
                    ok = false;
                }
            }
        }
        if ok && out.is_empty() {
            self.err(v.span(), "`aggregations` allows nothing".into());
            return None;
        }
        ok.then_some(out)
    }

    fn period(&mut self, f: &mut Fields<'_, '_>) -> Option<u64> {
        let (s, span) = self.req_str(f, "period")?;
        match duration_secs(&s) {
            Some(secs) => Some(secs),
            None => {
                self.err(
                    span,
                    format!("invalid period `{s}`; write a whole number of days or hours, e.g. \"30d\" or \"12h\""),
                );
                None
            }
        }
    }

    fn expiry(&mut self, f: &mut Fields<'_, '_>) -> Option<Expiry> {
        const EXPECTED: &str = "a date such as 2027-12-31 (valid through that day in the policy's \
            time zone) or a date-time such as 2027-12-31T18:00:00 or 2027-12-31T18:00:00+08:00";
        let v = self.require(f, "expires", EXPECTED)?;
        let e = toml_expiry(v);
        if e.is_none() {
            self.err(
                v.span(),
                format!("`expires` must be {EXPECTED}, without quotes"),
            );
        }
        e
    }

    fn require<'t, 'i>(
        &mut self,
        f: &mut Fields<'t, 'i>,
        key: &'static str,
        expected: &str,
    ) -> Option<&'t Value<'i>> {
        let v = f.get(key);
        if v.is_none() {
            self.err(
                f.span.clone(),
                format!("missing field `{key}`: expected {expected}"),
            );
        }
        v
    }

    fn req_str(
        &mut self,
        f: &mut Fields<'_, '_>,
        key: &'static str,
    ) -> Option<(String, Range<usize>)> {
        let span = f.span.clone();
        let v = f.get(key);
        self.req_str_value(v, key, span)
            .map(|s| (s, v.map_or(0..0, |v| v.span())))
    }

    fn req_str_value(
        &mut self,
        v: Option<&Value<'_>>,
        key: &str,
        table_span: Range<usize>,
    ) -> Option<String> {
        let Some(v) = v else {
            self.err(
                table_span,
                format!("missing field `{key}`: expected a string"),
            );
            return None;
        };
        match v.get_ref().as_str() {
            Some(s) if !s.trim().is_empty() => Some(s.to_string()),
            Some(_) => {
                self.err(v.span(), format!("`{key}` must not be empty"));
                None
            }
            None => {
                self.err(v.span(), format!("`{key}` must be a string"));
                None
            }
        }
    }

    fn req_enum(
        &mut self,
        f: &mut Fields<'_, '_>,
        key: &'static str,
        names: &[&str],
    ) -> Option<String> {
        let v = self.require(f, key, &format!("one of: {}", names.join(", ")))?;
        match v.get_ref().as_str() {
            Some(s) if names.contains(&s) => Some(s.to_string()),
            Some(s) => {
                self.err(
                    v.span(),
                    format!("invalid {key} `{s}`; accepted: {}", names.join(", ")),
                );
                None
            }
            None => {
                self.err(
                    v.span(),
                    format!("`{key}` must be a string, one of: {}", names.join(", ")),
                );
                None
            }
        }
    }

    fn req_int(
        &mut self,
        f: &mut Fields<'_, '_>,
        key: &'static str,
        lo: i64,
        hi: i64,
    ) -> Option<i64> {
        let v = self.require(f, key, &format!("an integer from {lo} to {hi}"))?;
        match v.get_ref() {
            DeValue::Integer(i) if int(i).is_some_and(|n| (lo..=hi).contains(&n)) => int(i),
            _ => {
                self.err(
                    v.span(),
                    format!("`{key}` must be an integer from {lo} to {hi}"),
                );
                None
            }
        }
    }

    /// An optional integer in `lo..=hi`: `Some(None)` when absent, `None` after reporting a bad
    /// value.
    fn opt_int(
        &mut self,
        f: &mut Fields<'_, '_>,
        key: &'static str,
        lo: i64,
        hi: i64,
    ) -> Option<Option<i64>> {
        let Some(v) = f.get(key) else {
            return Some(None);
        };
        match v.get_ref() {
            DeValue::Integer(i) if int(i).is_some_and(|n| (lo..=hi).contains(&n)) => Some(int(i)),
            _ => {
                self.err(
                    v.span(),
                    format!("`{key}` must be an integer from {lo} to {hi}"),
                );
                None
            }
        }
    }

    /// An optional δ: `Some(None)` when absent, `None` after reporting a bad value.
    fn opt_delta(
        &mut self,
        f: &mut Fields<'_, '_>,
        key: &'static str,
    ) -> Option<Option<(f64, Range<usize>)>> {
        let Some(v) = f.get(key) else {
            return Some(None);
        };
        let n = match v.get_ref() {
            DeValue::Float(x) => x.as_str().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n > 0.0 && n <= MAX_DELTA => Some(Some((n, v.span()))),
            _ => {
                self.err(
                    v.span(),
                    format!(
                        "`{key}` must be a number greater than 0 and at most {MAX_DELTA}, e.g. 1e-7"
                    ),
                );
                None
            }
        }
    }

    /// A per-job and per-period budget cap pair (`keys`), both or neither: `Some(None)` when
    /// both are absent, `None` after reporting a problem.
    fn cap_pair(&mut self, f: &mut Fields<'_, '_>, keys: [&'static str; 2]) -> CapPair {
        let job = self.opt_budget(f, keys[0]);
        let period = self.opt_budget(f, keys[1]);
        match (job?, period?) {
            (None, None) => Some(None),
            (Some((j, span)), Some((p, _))) if j > p => {
                self.err(span, format!("{} ({j}) exceeds {} ({p})", keys[0], keys[1]));
                None
            }
            (Some((j, _)), Some((p, _))) => Some(Some((j, p))),
            (Some((_, span)), None) | (None, Some((_, span))) => {
                self.err(
                    span,
                    format!("declare both `{}` and `{}`, or neither", keys[0], keys[1]),
                );
                None
            }
        }
    }

    /// An optional budget (ε or ρ) in (0, 100]: `Some(None)` when absent, `None` after reporting.
    fn opt_budget(
        &mut self,
        f: &mut Fields<'_, '_>,
        key: &'static str,
    ) -> Option<Option<(f64, Range<usize>)>> {
        let Some(v) = f.get(key) else {
            return Some(None);
        };
        let n = match v.get_ref() {
            DeValue::Integer(i) => int(i).map(|i| i as f64),
            DeValue::Float(x) => x.as_str().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n > 0.0 && n <= 100.0 => Some(Some((n, v.span()))),
            _ => {
                self.err(
                    v.span(),
                    format!("`{key}` must be a number greater than 0 and at most 100"),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a\nbc\nd";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 2));
        assert_eq!(line_col(text, 5), (3, 1));
    }
}
