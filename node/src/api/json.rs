//! [`JsonBody`]: a JSON request body whose every failure is an [`ApiError`].

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::error::Category;

use super::error::ApiError;

/// A request body parsed as JSON of type `T`: every body of the API is a JSON object
/// (serde would otherwise read a struct from an array, `[null, null]`, as schemathesis
/// showed). An empty body parses as `{}`, so that bodies whose fields are all optional
/// may be left out. Content types are not checked: the body is JSON or it is refused.
/// Errors in values name the field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "request body is too large",
                )
            } else {
                ApiError::bad_request("unreadable_body", rejection.body_text())
            }
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        parse_object(bytes).map(JsonBody)
    }
}

/// Parses `bytes` as a JSON object read as `T`.
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Valid JSON of another type is a 422, anything else a 400.
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(ApiError::unprocessable("the body must be a JSON object")),
            Err(error) => Err(ApiError::bad_request(
                "invalid_json",
                format!("request body is not valid JSON: {error}"),
            )),
        };
    }
    parse(bytes)
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let invalid_json = |error: serde_json::Error| {
        ApiError::bad_request("invalid_json", format!("request body is not valid JSON: {error}"))
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            Category::Data if path == "." => ApiError::unprocessable(inner.to_string()),
            // Name the field: people read the message to fix the request.
            Category::Data => ApiError::unprocessable(format!("{path}: {inner}")),
            _ => invalid_json(inner),
        }
    })?;
    deserializer.end().map_err(invalid_json)?;
    Ok(value)
}

/// Deserializes a whole number, also when the JSON writes it as a float (`4733.0`): JSON
/// Schema's `integer` admits that form, and so do clients that only have doubles.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = number.as_u64().or_else(|| {
        // Below 2^53 a double holds every whole number exactly.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        number.as_f64().filter(|f| f.fract() == 0.0 && (0.0..=EXACT).contains(f)).map(|f| f as u64)
    });
    whole
        .and_then(|whole| T::try_from(whole).ok())
        .ok_or_else(|| D::Error::custom(format!("{number} is not a whole number in range")))
}

/// [`whole_number`] of an optional field (with `#[serde(default)]`).
pub fn optional_whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    #[derive(Deserialize)]
    struct Whole<T: TryFrom<u64>>(#[serde(deserialize_with = "whole_number")] T);
    Ok(Option::<Whole<T>>::deserialize(deserializer)?.map(|Whole(value)| value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "whole_number")]
        total: u32,
        #[serde(default, deserialize_with = "optional_whole_number")]
        ttl_secs: Option<u64>,
    }

    fn parsed(text: &str) -> Result<Body, ApiError> {
        parse_object(text.as_bytes())
    }

    /// schemathesis posted `[null, null]` to `POST /api/sessions` and got a session.
    #[test]
    fn bodies_other_than_objects_are_refused() {
        #[derive(Debug, Deserialize)]
        struct AllOptional {
            #[allow(dead_code)]
            data: Option<u32>,
        }
        for (text, status) in [
            ("[null, null]", StatusCode::UNPROCESSABLE_ENTITY),
            ("null", StatusCode::UNPROCESSABLE_ENTITY),
            ("3", StatusCode::UNPROCESSABLE_ENTITY),
            ("\"{}\"", StatusCode::UNPROCESSABLE_ENTITY),
            ("[", StatusCode::BAD_REQUEST),
        ] {
            let error = parse_object::<AllOptional>(text.as_bytes()).unwrap_err();
            assert_eq!(error.status, status, "{text}");
        }
        assert!(parse_object::<AllOptional>(b" {}").is_ok());
    }

    /// schemathesis sent `{"total": 237.0}`, a JSON Schema integer, and got a 422.
    #[test]
    fn whole_numbers_written_as_floats_are_accepted() {
        let body = parsed(r#"{"total": 237.0, "ttl_secs": 4733.0}"#).unwrap();
        assert_eq!((body.total, body.ttl_secs), (237, Some(4733)));
        let body = parsed(r#"{"total": 7, "ttl_secs": null}"#).unwrap();
        assert_eq!((body.total, body.ttl_secs), (7, None));
        assert_eq!(parsed(r#"{"total": 1}"#).unwrap().ttl_secs, None);
    }

    #[test]
    fn fractions_negatives_and_out_of_range_numbers_are_refused_with_the_field() {
        for text in [
            r#"{"total": 1.5}"#,
            r#"{"total": -1}"#,
            r#"{"total": -1.0}"#,
            r#"{"total": 4294967296}"#,
            r#"{"total": 1e300}"#,
            r#"{"total": "3"}"#,
            r#"{"total": 1, "ttl_secs": 0.5}"#,
        ] {
            let error = parsed(text).unwrap_err();
            assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
            assert!(
                error.message.contains("total") || error.message.contains("ttl_secs"),
                "{text}: {}",
                error.message
            );
        }
    }
}
