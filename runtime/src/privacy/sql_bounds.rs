//! Bounds on a statement's shape, checked on its tokens before it is parsed or planned.
//!
//! DataFusion's SQL planner and its expression naming recurse once per level of nesting and once
//! per operator in a chain (`a + b + c …` is a left-deep tree), and a stack overflow aborts the
//! whole broker. The parser's own recursion limit does not bound operator chains, which it builds
//! in a loop. So before anything recursive sees a statement, its tokens are counted here, in one
//! pass that cannot recurse: the nesting of brackets and the number of operators are capped well
//! below what the planner's stack holds ([`MAX_NESTING`], [`MAX_OPERATORS`]), and the error says
//! what to change. Both limits depend only on the query text.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::QueryError;

/// Deepest nesting of parentheses and brackets (subqueries, function calls, grouping).
pub const MAX_NESTING: usize = 16;
/// Most operators in one statement (arithmetic, comparison, concatenation, AND/OR/NOT, IS, LIKE,
/// BETWEEN, IN).
pub const MAX_OPERATORS: usize = 128;

/// What the token scan found.
#[derive(Debug, PartialEq)]
struct Shape {
    nesting: usize,
    operators: usize,
}

/// Refuses a statement nested deeper than [`MAX_NESTING`] or with more than [`MAX_OPERATORS`]
/// operators.
pub fn check(sql: &str) -> Result<(), QueryError> {
    let shape = scan(sql)?;
    if shape.nesting > MAX_NESTING {
        return Err(QueryError::InvalidSql(format!(
            "the query nests parentheses {} deep; at most {MAX_NESTING} levels are accepted",
            shape.nesting
        )));
    }
    if shape.operators > MAX_OPERATORS {
        return Err(QueryError::InvalidSql(format!(
            "the query has {} operators; at most {MAX_OPERATORS} are accepted (split it into several queries)",
            shape.operators
        )));
    }
    Ok(())
}

fn scan(sql: &str) -> Result<Shape, QueryError> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| QueryError::InvalidSql(e.to_string()))?;
    let (mut depth, mut nesting, mut operators) = (0usize, 0usize, 0usize);
    let mut previous: Option<&Token> = None;
    for t in tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))) {
        match t {
            Token::LParen | Token::LBracket | Token::LBrace => {
                depth += 1;
                nesting = nesting.max(depth);
            }
            Token::RParen | Token::RBracket | Token::RBrace => depth = depth.saturating_sub(1),
            Token::Mul if previous.is_none_or(starts_a_list) => {} // `*` as in COUNT(*), t.*
            t if is_operator(t) => operators += 1,
            _ => {}
        }
        previous = Some(t);
    }
    Ok(Shape { nesting, operators })
}

/// A token after which `*` is a wildcard, not a multiplication.
fn starts_a_list(t: &Token) -> bool {
    match t {
        Token::LParen | Token::Comma | Token::Period => true,
        Token::Word(w) => w.quote_style.is_none() && w.keyword == Keyword::SELECT,
        _ => false,
    }
}

fn is_operator(t: &Token) -> bool {
    match t {
        Token::Word(w) => {
            w.quote_style.is_none()
                && matches!(
                    w.keyword,
                    Keyword::AND
                        | Keyword::OR
                        | Keyword::XOR
                        | Keyword::NOT
                        | Keyword::IS
                        | Keyword::LIKE
                        | Keyword::ILIKE
                        | Keyword::BETWEEN
                        | Keyword::IN
                )
        }
        Token::EOF
        | Token::Number(..)
        | Token::Char(_)
        | Token::Comma
        | Token::Whitespace(_)
        | Token::Period
        | Token::SemiColon
        | Token::LParen
        | Token::RParen
        | Token::LBracket
        | Token::RBracket
        | Token::LBrace
        | Token::RBrace => false,
        // Literals of every quoting style are not operators; every other symbol is.
        t => !is_literal(t),
    }
}

fn is_literal(t: &Token) -> bool {
    matches!(
        t,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_subqueries(n: usize) -> String {
        let mut sql = "SELECT COUNT(*) FROM health_visits".to_string();
        for _ in 0..n {
            sql = format!("SELECT COUNT(*) FROM ({sql})");
        }
        sql
    }

    #[test]
    fn counts_nesting_and_operators_but_not_literals() {
        let s = scan("SELECT COUNT(*) FROM t WHERE a + 1 > 2 AND name = 'x + y AND z' OR NOT b")
            .unwrap();
        assert_eq!(
            s,
            Shape {
                nesting: 1,
                operators: 6
            }
        );
        assert_eq!(scan(&nested_subqueries(3)).unwrap().nesting, 4);
        // A quoted identifier named like a keyword is not an operator, nor is a wildcard.
        assert_eq!(scan("SELECT \"and\" FROM t").unwrap().operators, 0);
        assert_eq!(scan("SELECT *, t.* FROM t").unwrap().operators, 0);
        assert_eq!(scan("SELECT COUNT(*) * 2 FROM t").unwrap().operators, 1);
    }

    #[test]
    fn the_shapes_that_overflowed_the_planner_are_refused() {
        let too_deep = nested_subqueries(18);
        let nots = format!("SELECT COUNT(*) FROM t WHERE {} a", "NOT ".repeat(200));
        let plus = format!("SELECT COUNT(*) FROM t WHERE a{} > 0", " + 1".repeat(246));
        let concat = format!(
            "SELECT COUNT(*) FROM t WHERE d{} = 'x'",
            " || 'a'".repeat(246)
        );
        let counts = format!("SELECT COUNT(*){} FROM t", " + COUNT(*)".repeat(246));
        for sql in [&too_deep, &nots, &plus, &concat, &counts] {
            match check(sql) {
                Err(QueryError::InvalidSql(m)) => assert!(m.contains("at most"), "{m}"),
                other => panic!("{sql:.60}: {other:?}"),
            }
        }
        // Exactly at the limits is fine.
        assert!(check(&nested_subqueries(MAX_NESTING - 1)).is_ok());
        let edge = format!("SELECT COUNT(*) FROM t WHERE a{} > 0", " + 1".repeat(127));
        assert!(check(&edge).is_ok());
    }
}
