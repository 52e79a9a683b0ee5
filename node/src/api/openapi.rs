//! The OpenAPI 3.1 document of the public API, generated from the handlers: each route is
//! registered through `utoipa_axum::routes!` from the `#[utoipa::path]` of its handler,
//! so a route and its documentation are one declaration. `GET /api/openapi.json` serves
//! it; the test below fails when the router has a route or method the document lacks.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder, Type,
};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error the API answers: a machine-readable code and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for programs: `not_found`, `invalid_body`, `no_leader`, …
    #[schema(example = "invalid_body")]
    pub error: String,
    /// What went wrong and what to do, for people.
    #[schema(example = "ufs: \"XX\" is not a UF code such as SP or RJ")]
    pub message: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shoal",
        description = "Sessions, searches with live progress over SSE, trackers for outside \
                       workers and Excel reports, served alike by every node of a shoal \
                       cluster. Every write is replicated to a majority and fsynced before \
                       it is answered; every read is linearizable, on any node.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(ErrorBody)),
    modifiers(&AdminToken),
    tags(
        (name = "sessions", description = "Replicated sessions with a sliding expiry"),
        (name = "searches", description = "Searches run by the nodes' workers, one part per UF"),
        (name = "trackers", description = "Progress of work done outside shoal"),
        (name = "downloads", description = "Reports, on signed links, from any node"),
        (name = "cluster", description = "Members, roles, health and administration"),
        (name = "console", description = "The web console and this document"),
    )
)]
struct ApiDoc;

/// The `admin_token` security scheme of the admin endpoints (`--admin-token`).
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Returns the document of every public route.
pub fn document() -> serde_json::Value {
    let (_, mut paths) = super::public_routes().split_for_parts();
    let mut document = ApiDoc::openapi();
    document.paths = std::mem::take(&mut paths.paths);
    if let Some(components) = paths.components.take() {
        let mine = document.components.get_or_insert_with(Default::default);
        mine.schemas.extend(components.schemas);
    }
    let mut document = serde_json::to_value(document).expect("the document serializes");
    bodies_may_be_left_out(&mut document);
    document
}

/// utoipa writes a body that may be left out (`request_body(content = Option<T>)`) as
/// not required, and its schema as `T` or `null`; but a body left out is no body, not
/// JSON `null`, which the API refuses like any body that is not an object. Keeps `T`.
fn bodies_may_be_left_out(document: &mut serde_json::Value) {
    let Some(paths) = document["paths"].as_object_mut() else { return };
    let operations = paths.values_mut().filter_map(|item| item.as_object_mut()).flatten();
    for (_, operation) in operations {
        // `get_mut`, not indexing: indexing a JSON object for writing adds the key.
        let content = operation
            .get_mut("requestBody")
            .and_then(|body| body.get_mut("content"))
            .and_then(|content| content.as_object_mut());
        let Some(content) = content else { continue };
        for media in content.values_mut() {
            let Some(choices) = media.get("schema").and_then(|schema| schema.get("oneOf")) else {
                continue;
            };
            let Some(choices) = choices.as_array() else { continue };
            let not_null: Vec<_> =
                choices.iter().filter(|choice| choice["type"] != "null").cloned().collect();
            if let [only] = not_null.as_slice() {
                media["schema"] = only.clone();
            }
        }
    }
}

/// Serves the OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "console",
    responses((status = 200, description = "This document", body = Object, content_type = "application/json"))
)]
pub async fn openapi_json() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let text =
        DOCUMENT.get_or_init(|| serde_json::to_string_pretty(&document()).expect("serializes"));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

/// One error status answered with an [`ErrorBody`].
fn error_response(status: u16, description: &str) -> (String, RefOr<utoipa::openapi::Response>) {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    let mut response =
        ResponseBuilder::new().description(description).content("application/json", content);
    if status == 503 {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).build();
        let retry_after = HeaderBuilder::new()
            .schema(Some(seconds))
            .description(Some("Seconds to wait before retrying"))
            .build();
        response = response.header("Retry-After", retry_after);
    }
    (status.to_string(), RefOr::T(response.build()))
}

/// Declares a set of error answers that many operations share, for `responses(...)`.
macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident { $($status:literal => $description:literal),+ $(,)? }) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                [$(error_response($status, $description)),+].into_iter().collect()
            }
        }
    };
}

error_set! {
    /// What any operation on the replicated state may answer.
    StateErrors {
        500 => "Something failed inside the node (its log says what)",
        503 => "The cluster cannot answer right now (no leader, no quorum, a timeout, a \
                full queue); the request changed nothing it did not report, retry after \
                Retry-After",
    }
}

error_set! {
    /// What an operation with a JSON request body may answer for the body.
    BodyErrors {
        400 => "The body is not JSON",
        413 => "The body, or a value in it, is over its size limit",
        422 => "The JSON holds a value that cannot be accepted; the message names the field",
    }
}

error_set! {
    /// What an operation that changes state answers to a browser on another site.
    CrossSiteErrors {
        403 => "A browser sent this from another origin (`cross_site`), which \
                --allowed-origins does not list",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every (method, path) the public router serves, read from its `Debug` output: axum
    /// offers no other way to list routes, and a parse that finds nothing fails.
    fn served_routes(router: &axum::Router<super::super::AppState>) -> BTreeSet<(String, String)> {
        let text = format!("{router:?}");
        // The fallback router numbers its routes anew: read the path router only.
        let text = text.split(", fallback_router: ").next().expect("split yields one part");
        let mut routes = BTreeSet::new();
        // `routes: {RouteId(3): MethodRouter(MethodRouter { get: …, head: None, … }), …}`
        // then `node: Node { paths: {RouteId(3): "/api/…", …} }`.
        let paths: BTreeMap<String, String> = text
            .match_indices("RouteId(")
            .filter_map(|(at, _)| {
                let rest = &text[at + "RouteId(".len()..];
                let (id, rest) = rest.split_once("): ")?;
                let path = rest.strip_prefix('"')?.split('"').next()?;
                Some((id.to_string(), path.to_string()))
            })
            .collect();
        for (at, _) in text.match_indices("RouteId(") {
            let rest = &text[at + "RouteId(".len()..];
            let Some((id, rest)) = rest.split_once("): MethodRouter(MethodRouter { ") else {
                continue;
            };
            let fields = rest.split(", fallback:").next().expect("split yields one part");
            for method in ["get", "head", "delete", "options", "patch", "post", "put", "trace"] {
                let set = fields
                    .split(", ")
                    .find_map(|field| field.strip_prefix(&format!("{method}: ")))
                    .is_some_and(|value| value != "None");
                if set {
                    let path = paths.get(id).expect("every route id has a path").clone();
                    routes.insert((method.to_string(), path));
                }
            }
        }
        assert!(routes.len() > 10, "could not read the routes from axum's Debug output: {text}");
        routes
    }

    fn documented_routes() -> BTreeSet<(String, String)> {
        let document = document();
        let mut routes = BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                routes.insert((method.clone(), path.clone()));
            }
        }
        routes
    }

    /// Every route the node serves, but the signed `/internal/*` ones nodes call on each
    /// other, and axum's own fallback.
    fn public_served_routes() -> BTreeSet<(String, String)> {
        let gate = super::super::internal::InternalGate::new(
            shoal_raft::ClusterSecret::new(b"a test secret".to_vec()),
            1,
            0,
            1024,
        );
        let router = super::super::routes(gate);
        let all = served_routes(&router);
        assert!(all.iter().any(|(_, path)| path.starts_with("/internal/")), "{all:?}");
        all.into_iter().filter(|(_, path)| !path.starts_with("/internal/")).collect()
    }

    #[test]
    fn every_route_is_in_the_document_and_every_documented_route_is_served() {
        let served = public_served_routes();
        let documented = documented_routes();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        assert!(undocumented.is_empty(), "routes the OpenAPI document lacks: {undocumented:?}");
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(unserved.is_empty(), "documented routes nothing serves: {unserved:?}");
        for route in super::super::STREAM_ROUTES {
            assert!(documented.contains(&("get".to_string(), route.to_string())), "{route}");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_errors_have_json_bodies() {
        let document = document();
        assert!(document["openapi"].as_str().expect("a version").starts_with("3.1"));
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                let responses = operation["responses"].as_object().expect("responses");
                assert!(!responses.is_empty(), "{method} {path} documents no response");
                for (status, response) in responses {
                    if status.as_str() >= "400" {
                        let json = &response["content"]["application/json"]["schema"];
                        assert!(json.is_object(), "{method} {path} {status} has no JSON body");
                    }
                }
                let takes_input = operation.get("requestBody").is_some()
                    || operation["parameters"].as_array().is_some_and(|p| !p.is_empty());
                let refuses = responses.keys().any(|status| status.starts_with('4'));
                assert!(!takes_input || refuses, "{method} {path} documents no 4xx");
            }
        }
    }

    #[test]
    fn search_ufs_are_the_uf_codes() {
        let document = document();
        let ufs = &document["components"]["schemas"]["SearchRequest"]["properties"]["ufs"];
        let codes: Vec<&str> = ufs["items"]["enum"]
            .as_array()
            .expect("an enum")
            .iter()
            .map(|code| code.as_str().expect("text"))
            .collect();
        assert_eq!(codes, crate::jobs::UF_CODES);
    }

    #[test]
    fn the_route_reader_finds_a_route_added_without_documentation() {
        // The check above is only as good as `served_routes`: a route added with plain
        // axum must show up there.
        let (router, _) = super::super::public_routes()
            .route("/api/undocumented", axum::routing::get(|| async { "" }))
            .split_for_parts();
        let router: axum::Router<super::super::AppState> = router;
        let route = ("get".to_string(), "/api/undocumented".to_string());
        assert!(served_routes(&router).contains(&route));
        assert!(!documented_routes().contains(&route));
    }
}
