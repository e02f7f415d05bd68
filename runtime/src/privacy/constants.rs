//! Constant expressions are evaluated at planning time, so that one that cannot be evaluated
//! (integer overflow, a cast of a literal that does not parse, division by a constant zero) is
//! refused before the charge, for free, with an error that depends only on the query.
//!
//! Without this, `WHERE age > -(-9223372036854775808)` passed validation, was charged, and then
//! failed during execution: budget spent on a query that could never run. Each maximal
//! subexpression without columns, aggregates or volatile functions is evaluated once on one empty
//! row after DataFusion's type coercion (the same coercion execution applies), and a division or
//! modulo whose divisor is such a constant must not divide by zero.

use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::Schema;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::AnalyzerRule;
use datafusion::optimizer::analyzer::type_coercion::TypeCoercion;
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_expr::execution_props::ExecutionProps;

use crate::QueryError;

/// Refuses `plan` if any of its constant subexpressions cannot be evaluated, or a division or
/// modulo divides by a constant zero.
pub fn check(plan: &LogicalPlan) -> Result<(), QueryError> {
    // Coercion failures are the planner's to report (they surface as refusals elsewhere); only
    // a coerced plan tells what execution would evaluate.
    let Ok(plan) = TypeCoercion::new().analyze(plan.clone(), &ConfigOptions::default()) else {
        return Ok(());
    };
    let mut refusal = None;
    let _ = plan.apply(|node| {
        node.apply_expressions(|e| {
            refusal = first_failure(e);
            Ok(if refusal.is_some() {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        })
    });
    refusal.map_or(Ok(()), Err)
}

/// The first constant subexpression of `e` that fails, outermost first.
fn first_failure(e: &Expr) -> Option<QueryError> {
    let mut found = None;
    let _ = e.apply(|sub| {
        if is_constant(sub) {
            match evaluate(sub) {
                Ok(_) => return Ok(TreeNodeRecursion::Jump),
                Err(why) => {
                    found = Some(QueryError::InvalidSql(format!(
                        "the constant expression `{sub}` cannot be evaluated: {why}"
                    )));
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        if let Expr::BinaryExpr(BinaryExpr { op, right, .. }) = sub
            && matches!(op, Operator::Divide | Operator::Modulo)
            && is_constant(right)
            && evaluate(right).is_ok_and(|v| is_zero(&v))
        {
            found = Some(QueryError::InvalidSql(format!(
                "`{sub}` divides by zero: the divisor is the constant `{right}`"
            )));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// An expression whose value does not depend on any row: no columns, aggregates, windows,
/// subqueries, placeholders or volatile functions, and none of the date functions that exist only
/// for planning (the DP rewrite replaces them). A bare literal needs no evaluation.
fn is_constant(e: &Expr) -> bool {
    if matches!(e, Expr::Literal(..)) {
        return false;
    }
    let depends = e
        .exists(|x| {
            Ok(matches!(
                x,
                Expr::Column(_)
                    | Expr::OuterReferenceColumn(..)
                    | Expr::ScalarVariable(..)
                    | Expr::AggregateFunction(_)
                    | Expr::WindowFunction(_)
                    | Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::Placeholder(_)
                    | Expr::Unnest(_)
                    | Expr::GroupingSet(_)
            ) || matches!(x, Expr::ScalarFunction(f) if super::dates::is_planned_only(&f.func)))
        })
        .unwrap_or(true);
    !depends && !e.is_volatile()
}

/// Evaluates a constant expression on one empty row.
fn evaluate(e: &Expr) -> Result<ScalarValue, String> {
    let first = |s: String| s.lines().next().unwrap_or("").chars().take(200).collect();
    let physical = create_physical_expr(
        e,
        &DFSchema::empty(),
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
    .map_err(|err| first(err.strip_backtrace()))?;
    let row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|err| first(err.to_string()))?;
    let value = physical
        .evaluate(&row)
        .map_err(|err| first(err.strip_backtrace()))?;
    let array = value
        .into_array(1)
        .map_err(|err| first(err.strip_backtrace()))?;
    if array.len() != 1 {
        return Err("it is not a single value".into());
    }
    ScalarValue::try_from_array(&array, 0).map_err(|err| first(err.strip_backtrace()))
}

fn is_zero(v: &ScalarValue) -> bool {
    !v.is_null() && ScalarValue::new_zero(&v.data_type()).is_ok_and(|zero| zero == *v)
}
