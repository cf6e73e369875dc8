//! Every route of the API, declared once: in the sub-router of the access it needs (open, read,
//! invoke, admin), whose layer checks the key, and from which the OpenAPI document takes its
//! paths, schemas and security entries.

use crate::api::{batch, cancel, fleet, functions, health, invocations, keys, queries, secrets};
use crate::api::{destinations, dlq, schedules, triggers, versions};
use crate::compat::{lambda, web};
use crate::http::auth::{Access, Scope};
use crate::http::{auth, ui};
use crate::AppState;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use std::sync::Arc;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Routes = OpenApiRouter<Arc<AppState>>;

/// The document's frame: title, version and the bearer scheme.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Squall HTTP API",
        version = "1",
        description = "Deploy natively compiled functions and invoke them through NATS JetStream. \
            Every error answers `{\"error\": {\"code\", \"message\"}}`."
    ),
    components(schemas(squall_api::ErrorBody, squall_api::ErrorDetail, squall_api::ErrorCode))
)]
struct Frame;

/// The bearer scheme's name in the document.
const BEARER: &str = "bearer";

/// The routes each access level holds. `/metrics` is open when `metrics_open`, else it needs
/// the read scope.
/// A deploy body may hold `deploy_limit` bytes.
fn groups(metrics_open: bool, deploy_limit: usize) -> Vec<(Access, Routes)> {
    let deploy = {
        let (schemas, paths, method) = routes!(functions::deploy);
        (
            schemas,
            paths,
            method.layer(DefaultBodyLimit::max(deploy_limit)),
        )
    };
    let unbounded = |(schemas, paths, method): utoipa_axum::router::UtoipaMethodRouter<
        Arc<AppState>,
    >| (schemas, paths, method.layer(DefaultBodyLimit::disable()));
    let mut open = Routes::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::openapi))
        .routes(routes!(ui::index))
        .routes(routes!(ui::asset));
    let any_key = Routes::new().routes(routes!(keys::whoami));
    let read = Routes::new()
        .routes(routes!(functions::list_functions))
        .routes(routes!(functions::get_function))
        .routes(routes!(versions::list_versions))
        .routes(routes!(versions::list_aliases))
        .routes(routes!(versions::get_alias))
        .routes(routes!(queries::stats));
    // What shows every function at once: not for a key limited to some.
    let mut read_every = Routes::new()
        .routes(routes!(queries::usage))
        .routes(routes!(fleet::get));
    if metrics_open {
        open = open.routes(routes!(health::metrics));
    } else {
        read_every = read_every.routes(routes!(health::metrics));
    }
    let invoke = Routes::new()
        .routes(unbounded(routes!(invocations::invoke)))
        .routes(unbounded(routes!(batch::submit)))
        .routes(routes!(queries::list))
        .routes(routes!(
            invocations::get_invocation,
            cancel::cancel_invocation
        ))
        .routes(routes!(invocations::get_output))
        .routes(routes!(invocations::get_logs));
    let admin = Routes::new()
        .routes(deploy)
        .routes(routes!(cancel::cancel_backlog))
        .routes(routes!(functions::delete_function))
        .routes(routes!(versions::delete_version))
        .routes(routes!(versions::put_alias, versions::delete_alias))
        .routes(routes!(versions::rollback_alias))
        .routes(routes!(secrets::put, secrets::get, secrets::delete))
        .routes(routes!(destinations::list))
        .routes(routes!(destinations::replay))
        .routes(routes!(dlq::list))
        .routes(routes!(dlq::replay_all))
        .routes(routes!(dlq::show, dlq::remove))
        .routes(routes!(dlq::replay))
        .routes(routes!(schedules::list))
        .routes(routes!(schedules::put, schedules::get, schedules::delete))
        .routes(routes!(triggers::list))
        .routes(routes!(triggers::put, triggers::get, triggers::delete))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::delete));
    vec![
        (Access::Open, open),
        (Access::AnyKey, any_key),
        (Access::Scope(Scope::Read), read),
        (Access::EveryFunction(Scope::Read), read_every),
        (Access::Scope(Scope::Invoke), invoke),
        (Access::Scope(Scope::Admin), admin),
    ]
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// A unique operation id from the method and path: `get /v1/functions/{name}` →
/// `get_functions_name`.
fn operation_id(method: &str, path: &str) -> String {
    let words: Vec<String> = path
        .split('/')
        .filter(|segment| !segment.is_empty() && *segment != "v1")
        .map(|segment| {
            segment
                .trim_matches(|c| c == '{' || c == '}')
                .replace(['.', '-'], "_")
        })
        .collect();
    format!("{method}_{}", words.join("_"))
}

/// Writes `access` into every operation of `doc`: its security entry, a unique operation id,
/// and the answers the key check and the header limits can give.
fn secure(doc: &mut OpenApi, access: Access) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations: [(&str, &mut Option<Operation>); 5] = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else {
                continue;
            };
            operation.operation_id = Some(operation_id(method, path));
            let responses = &mut operation.responses.responses;
            responses.insert(
                "431".into(),
                error_response("Too many or too large request headers.").into(),
            );
            responses.entry("503".into()).or_insert_with(|| {
                error_response("The broker is unavailable; retry after `Retry-After` when given.")
                    .into()
            });
            match access {
                Access::Open => operation.security = Some(vec![SecurityRequirement::default()]),
                Access::AnyKey | Access::Scope(_) | Access::EveryFunction(_) => {
                    let scopes: Vec<&str> = match access {
                        Access::Scope(scope) | Access::EveryFunction(scope) => {
                            vec![scope.as_str()]
                        }
                        _ => vec![],
                    };
                    operation.security = Some(vec![SecurityRequirement::new(BEARER, scopes)]);
                    responses.insert(
                        "401".into(),
                        error_response("No valid API key (only when the dispatcher has keys).")
                            .into(),
                    );
                    responses.insert(
                        "403".into(),
                        error_response(match access {
                            Access::EveryFunction(_) => "The key lacks the scope this route needs, or is limited to some functions.",
                            _ => "The key lacks the scope this route needs, or may not reach the function the path names.",
                        })
                        .into(),
                    );
                    responses.insert(
                        "429".into(),
                        error_response("The key's request rate is spent (per dispatcher); retry after `Retry-After`.").into(),
                    );
                }
            }
        }
    }
}

/// The whole API: the router (with each group's key check when `state` is given) and its
/// document.
fn build(state: Option<&Arc<AppState>>, metrics_open: bool) -> (Router<Arc<AppState>>, OpenApi) {
    // Room for multipart framing and the config part beside the artifact.
    let deploy_limit = state.map_or(0, |s| s.config.max_artifact + 1024 * 1024);
    let mut api = Routes::with_openapi(Frame::openapi());
    for (access, mut group) in groups(metrics_open, deploy_limit) {
        secure(group.get_openapi_mut(), access);
        if let (Some(state), Access::AnyKey | Access::Scope(_) | Access::EveryFunction(_)) =
            (state, access)
        {
            group = group.route_layer(axum::middleware::from_fn_with_state(
                (state.keys.clone(), access),
                auth::require,
            ));
        }
        api = api.merge(group);
    }
    let (router, mut doc) = api.split_for_parts();
    // Web functions are served on their own listener (`web_app`) and check access themselves,
    // by the function's spec: a key with the invoke scope, or none for `"auth": "none"` (the
    // empty requirement). They are in this document, which describes every listener.
    let mut web_doc = web::Document::openapi();
    secure(&mut web_doc, Access::Scope(Scope::Invoke));
    for item in web_doc.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            if let Some(security) = operation.security.as_mut() {
                security.push(SecurityRequirement::default());
            }
            operation.description = Some(
                "Served on the web listener (`--web-addr`, by default the API's port + 1), never on \
                 the API's origin. Every method is served; a function whose spec says \
                 `\"web\": {\"auth\": \"none\"}` takes no key."
                    .into(),
            );
        }
    }
    doc.merge(web_doc);
    // The Lambda-compatible API checks SigV4 itself and follows Lambda's contract, so it stays
    // out of this document.
    let router = router.merge(web::elsewhere()).merge(lambda::router());
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "An API key: SQUALL_ADMIN_KEY or one made by POST /v1/keys, whose scopes must \
             include the one each operation lists (admin holds them all). Required only when \
             the dispatcher has an admin key.",
        ))
        .build();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    (router, doc)
}

/// The web listener's router over `state`: web functions and nothing else (no console, no
/// API), so a function's answer never shares an origin with them.
pub fn web_app(state: Arc<AppState>) -> Router {
    web::router()
        .fallback(web::not_here)
        .layer(axum::middleware::from_fn(crate::http::limits::headers))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::core::metrics::track,
        ))
        .with_state(state)
}

/// The OpenAPI 3.1 document of the API as a dispatcher with `metrics_open` serves it.
pub fn document(metrics_open: bool) -> OpenApi {
    build(None, metrics_open).1
}

/// The API router over `state`, without binding a port.
pub fn app(state: Arc<AppState>) -> Router {
    let (router, _) = build(Some(&state), state.keys.metrics_open);
    router
        .fallback(health::not_found)
        .layer(axum::middleware::from_fn(crate::http::limits::headers))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::core::metrics::track,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_error_code() {
        let doc = serde_json::to_value(document(false)).unwrap();
        let schemas = &doc["components"]["schemas"];
        let listed: Vec<&str> = schemas["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode is an enum schema")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let all: Vec<&str> = squall_api::ErrorCode::ALL
            .iter()
            .map(|c| c.as_str())
            .collect();
        assert_eq!(listed, all);
        let code = &schemas["ErrorDetail"];
        assert!(
            code.to_string().contains("#/components/schemas/ErrorCode"),
            "{code}"
        );
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = serde_json::to_value(document(false)).unwrap();
        let mut ids = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                ids.push(operation["operationId"].as_str().unwrap().to_string());
            }
        }
        let count = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), count, "{ids:?}");
        assert!(ids.contains(&"get_functions_name_secrets".to_string()));
    }

    #[test]
    fn every_operation_has_a_security_entry() {
        let doc = serde_json::to_value(document(false)).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let security = &operation["security"];
                assert!(security.is_array(), "{method} {path} has no security entry");
                let open = security[0].as_object().is_some_and(|o| o.is_empty());
                assert_eq!(
                    open,
                    [
                        "/healthz",
                        "/readyz",
                        "/v1/openapi.json",
                        "/ui",
                        "/ui/{file}"
                    ]
                    .contains(&path.as_str()),
                    "{method} {path}: {security}"
                );
                if path.starts_with("/function/") {
                    assert_eq!(
                        security,
                        &serde_json::json!([{ "bearer": ["invoke"] }, {}]),
                        "{method} {path}"
                    );
                }
            }
        }
    }

    #[test]
    fn metrics_needs_the_read_scope_unless_left_open() {
        let closed = serde_json::to_value(document(false)).unwrap();
        assert_eq!(
            closed["paths"]["/metrics"]["get"]["security"],
            serde_json::json!([{ "bearer": ["read"] }])
        );
        let open = serde_json::to_value(document(true)).unwrap();
        assert_eq!(
            open["paths"]["/metrics"]["get"]["security"],
            serde_json::json!([{}])
        );
    }

    #[test]
    fn a_path_with_methods_of_two_scopes_keeps_both() {
        let doc = serde_json::to_value(document(false)).unwrap();
        let item = &doc["paths"]["/v1/functions/{name}"];
        assert_eq!(item["get"]["security"][0]["bearer"][0], "read");
        assert_eq!(item["put"]["security"][0]["bearer"][0], "admin");
        assert_eq!(item["delete"]["security"][0]["bearer"][0], "admin");
    }
}
