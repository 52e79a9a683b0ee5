//! Validation of `POST /api/searches` into [`SearchParams`].

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::time::{iso_date, parse_iso_date};

/// The 27 Brazilian federative units.
pub const UF_CODES: [&str; 27] = [
    "AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA", "PB", "PR",
    "PE", "PI", "RJ", "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO",
];
const MAX_SPAN_DAYS: i64 = 366;
const MAX_KEYWORDS: usize = 20;
const MAX_KEYWORD_CHARS: usize = 100;

/// The body of `POST /api/searches`, as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// The UFs to search, one part each (lowercase and spaces around are accepted too).
    #[schema(schema_with = ufs_schema)]
    pub ufs: Vec<String>,
    /// The first day, `YYYY-MM-DD`.
    #[schema(format = Date, example = "2026-11-01")]
    pub date_from: String,
    /// The last day, not before `date_from`, at most 366 days after it.
    #[schema(format = Date, example = "2026-11-07")]
    pub date_to: String,
    /// Words a notice must contain (any of them); none keeps every notice.
    #[serde(default)]
    #[schema(schema_with = keywords_schema)]
    pub keywords: Vec<String>,
    /// Where notices come from: one of the node's sources (`sources` of
    /// `GET /api/health`); `sample` when left out.
    #[serde(default)]
    #[schema(example = "sample")]
    pub source: Option<String>,
}

/// The OpenAPI schema of `ufs`: distinct UF codes.
fn ufs_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
    let code = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(UF_CODES));
    ArrayBuilder::new()
        .items(code)
        .min_items(Some(1))
        .max_items(Some(UF_CODES.len()))
        .unique_items(true)
        .build()
}

/// The OpenAPI schema of `keywords`.
fn keywords_schema() -> utoipa::openapi::Array {
    use utoipa::openapi::{ArrayBuilder, ObjectBuilder, Type};
    let keyword = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_KEYWORD_CHARS))
        .pattern(Some("\\S"));
    ArrayBuilder::new().items(keyword).max_items(Some(MAX_KEYWORDS)).build()
}

/// A validated search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchParams {
    pub ufs: Vec<String>,
    pub date_from: String,
    pub date_to: String,
    pub keywords: Vec<String>,
    pub source: String,
}

impl SearchParams {
    /// Returns the first day as days since 1970-01-01.
    pub fn first_day(&self) -> i64 {
        parse_iso_date(&self.date_from).expect("validated")
    }

    /// Returns the last day as days since 1970-01-01.
    pub fn last_day(&self) -> i64 {
        parse_iso_date(&self.date_to).expect("validated")
    }
}

/// A rule the request broke; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidSearch {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InvalidSearch {
    InvalidSearch { field, problem: problem.into() }
}

impl SearchRequest {
    /// Checks every rule of DESIGN §6 and returns the normalized search.
    pub fn validate(self, sources: &[&str]) -> Result<SearchParams, InvalidSearch> {
        if self.ufs.is_empty() || self.ufs.len() > UF_CODES.len() {
            return Err(invalid("ufs", format!("list 1 to {} UF codes", UF_CODES.len())));
        }
        let mut seen = BTreeSet::new();
        let mut ufs = Vec::with_capacity(self.ufs.len());
        for uf in &self.ufs {
            let code = uf.trim().to_ascii_uppercase();
            if !UF_CODES.contains(&code.as_str()) {
                return Err(invalid("ufs", format!("{uf:?} is not a UF code such as SP or RJ")));
            }
            if !seen.insert(code.clone()) {
                return Err(invalid("ufs", format!("{code} is listed twice")));
            }
            ufs.push(code);
        }
        let date = |field: &'static str, text: &str| {
            parse_iso_date(text)
                .ok_or_else(|| invalid(field, format!("{text:?} is not a date as YYYY-MM-DD")))
        };
        let first = date("date_from", &self.date_from)?;
        let last = date("date_to", &self.date_to)?;
        if last < first {
            return Err(invalid("date_to", "is before date_from"));
        }
        if last - first + 1 > MAX_SPAN_DAYS {
            return Err(invalid("date_to", format!("the span is over {MAX_SPAN_DAYS} days")));
        }
        if self.keywords.len() > MAX_KEYWORDS {
            return Err(invalid("keywords", format!("at most {MAX_KEYWORDS} keywords")));
        }
        let mut keywords = Vec::with_capacity(self.keywords.len());
        for keyword in self.keywords {
            let keyword = keyword.trim().to_string();
            if keyword.is_empty() || keyword.chars().count() > MAX_KEYWORD_CHARS {
                return Err(invalid(
                    "keywords",
                    format!("each keyword has 1 to {MAX_KEYWORD_CHARS} characters"),
                ));
            }
            keywords.push(keyword);
        }
        let source = self.source.unwrap_or_else(|| "sample".to_string());
        if !sources.contains(&source.as_str()) {
            return Err(invalid(
                "source",
                format!("{source:?} is not one of {}", sources.join(", ")),
            ));
        }
        Ok(SearchParams {
            ufs,
            date_from: iso_date(first),
            date_to: iso_date(last),
            keywords,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        ufs: &[&str],
        from: &str,
        to: &str,
        keywords: usize,
        source: Option<&str>,
    ) -> SearchRequest {
        SearchRequest {
            ufs: ufs.iter().map(|uf| uf.to_string()).collect(),
            date_from: from.into(),
            date_to: to.into(),
            keywords: (0..keywords).map(|n| format!("k{n}")).collect(),
            source: source.map(str::to_string),
        }
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (request(&[], "2025-01-01", "2025-01-31", 0, None), "ufs"),
            (request(&["SP", "XX"], "2025-01-01", "2025-01-31", 0, None), "ufs"),
            (request(&["SP", "sp"], "2025-01-01", "2025-01-31", 0, None), "ufs"),
            (request(&["SP"], "2025-1-1", "2025-01-31", 0, None), "date_from"),
            (request(&["SP"], "2025-01-01", "2025-02-30", 0, None), "date_to"),
            (request(&["SP"], "2025-01-31", "2025-01-01", 0, None), "date_to"),
            (request(&["SP"], "2024-01-01", "2025-01-01", 0, None), "date_to"),
            (request(&["SP"], "2025-01-01", "2025-01-31", 21, None), "keywords"),
            (request(&["SP"], "2025-01-01", "2025-01-31", 0, Some("ftp")), "source"),
        ];
        for (request, field) in cases {
            let error = request.validate(&["sample"]).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
        let ok = request(&["sp", "RJ"], "2025-01-01", "2025-12-31", 20, None)
            .validate(&["sample"])
            .unwrap();
        assert_eq!(
            (ok.ufs, ok.source.as_str()),
            (vec!["SP".to_string(), "RJ".to_string()], "sample")
        );
        let all: Vec<&str> = UF_CODES.to_vec();
        assert!(request(&all, "2024-01-01", "2024-12-31", 0, None).validate(&["sample"]).is_ok());
    }
}
