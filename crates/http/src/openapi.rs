//! The OpenAPI 3 document, generated from the route annotations and the
//! JSON types.

use crate::dto::*;
use crate::dto_events::EventBody;
use crate::dto_orders::*;
use crate::problem::{self, ProblemBody};
use crate::routes::events::{self, EventPageBody};
use crate::routes::webhooks::{
    self, DeadLetterBody, ReplayBody, ReplayRequest, WebhookBody, WebhookList, WebhookRequest,
};
use crate::routes::{access, accounts, audit, keys, ledgers, ops, orders, transfers};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::Header;
use utoipa::openapi::response::Response;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{PathItem, RefOr};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Bursar", description = "A fault-tolerant double-entry ledger with payment orders. Amounts and ids are strings of minor units and u128 ids."),
    paths(
        ledgers::create, ledgers::list,
        accounts::create, accounts::create_batch, accounts::get_one, accounts::transfers, accounts::balances,
        transfers::create, transfers::create_batch, transfers::get_one,
        orders::create, orders::list, orders::get_one, orders::events, orders::cancel, orders::review, orders::funds,
        keys::create, keys::list, keys::revoke, keys::rotate,
        webhooks::create, webhooks::list, webhooks::get_one, webhooks::delete, webhooks::dead_letters,
        webhooks::replay,
        audit::list, access::list,
        events::list, events::stream,
        ops::healthz, ops::readyz, ops::metrics, serve,
    ),
    components(
        schemas(
            LedgerRequest, LedgerBody, AccountRequest, AccountCreated, AccountBody, AccountBatchRequest,
            TransferRequest, TransferBody, TransferBatchRequest, BatchResult, EventError, BalanceBody,
            KeyRequest, KeyBody, KeyList, RateLimitBody, RotateRequest, AuditBody, AccessBody, Status, ProblemBody, EventBody, EventPageBody,
            OrderRequest, SenderRequest, RecipientRequest, OrderBody, SenderBody, RecipientBody, CancelRequest,
            ReviewRequest, FundsRequest, OrderEventBody, OrderEventList,
            WebhookRequest, WebhookBody, WebhookList, DeadLetterBody, ReplayRequest, ReplayBody,
            Id, U128, U64, AccountFlag, TransferFlag, RoleName,
            OrderStateName, OrderFlag, OrderEventKind, OrderActor, OrderEventResult, ReviewDecision,
        ),
        responses(
            problem::BadRequest, problem::Unauthorized, problem::Forbidden, problem::NotFound, problem::Conflict,
            problem::PayloadTooLarge, problem::UnsupportedMediaType, problem::Unprocessable,
            problem::InternalError, problem::Unavailable, problem::TooManyRequests,
        ),
    ),
    modifiers(&BearerAuth, &ResponseHeaders),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The headers the middleware and the idempotency layer put on responses:
/// `X-Request-Id` on every one, `Idempotent-Replayed` on replays of writes.
struct ResponseHeaders;

const REQUEST_ID: &str = "X-Request-Id";
const REPLAYED: &str = "Idempotent-Replayed";
/// Problems that a replayed write can answer with.
const REPLAYABLE_PROBLEMS: [&str; 3] = ["NotFound", "Conflict", "Unprocessable"];

fn request_id_header() -> Header {
    let schema = ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[A-Za-z0-9._:-]{1,64}$"));
    let mut header = Header::new(schema);
    header.description = Some(
        "The client's X-Request-Id if it sent a valid one (1-64 of A-Z a-z 0-9 - _ . :), otherwise a new one.".into(),
    );
    // utoipa's Header has no `required`; every response carries this one.
    let mut required = Extensions::default();
    required.insert("required".into(), true.into());
    header.extensions = Some(required);
    header
}

fn replayed_header() -> Header {
    let schema = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["true"]));
    let mut header = Header::new(schema);
    header.description = Some("Present on a replay of an earlier request with the same Idempotency-Key.".into());
    header
}

fn add_headers(response: &mut RefOr<Response>, replayable: bool) {
    if let RefOr::T(response) = response {
        response.headers.insert(REQUEST_ID.into(), RefOr::T(request_id_header()));
        if replayable {
            response.headers.insert(REPLAYED.into(), RefOr::T(replayed_header()));
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch].into_iter().flatten()
}

impl Modify for ResponseHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            for (name, response) in components.responses.iter_mut() {
                add_headers(response, REPLAYABLE_PROBLEMS.contains(&name.as_str()));
            }
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                // Every authenticated route may answer 429 (per-key rate limit).
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    let too_many = RefOr::Ref(utoipa::openapi::Ref::from_response_name("TooManyRequests"));
                    operation.responses.responses.insert("429".into(), too_many);
                }
                let idempotent = operation.parameters.iter().flatten().any(|p| match p {
                    RefOr::T(p) => p.name == "Idempotency-Key",
                    RefOr::Ref(_) => false,
                });
                for response in operation.responses.responses.values_mut() {
                    add_headers(response, idempotent);
                }
            }
        }
    }
}

pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes")
}

/// This API's OpenAPI 3 document, generated from the code.
#[utoipa::path(get, path = crate::paths::OPENAPI.path, operation_id = "openapi", tag = "operations", responses(
    (status = 200, description = "This document", body = Object, content_type = "application/json"),
    (status = 503, response = problem::Unavailable),
))]
pub async fn serve() -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json = DOC.get_or_init(document);
    let mut r = (StatusCode::OK, json.clone()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
        &doc["components"]["schemas"][name]
    }

    /// The bounds written as literals in the annotations are the ones the
    /// code enforces.
    #[test]
    fn declared_bounds_match_the_code() {
        let doc: Value = serde_json::from_str(&document()).unwrap();
        let batch = bursar_core::limits::BATCH_EVENTS_MAX as u64;
        for (name, field) in [("AccountBatchRequest", "accounts"), ("TransferBatchRequest", "transfers")] {
            let items = &schema(&doc, name)["properties"][field];
            assert_eq!((items["minItems"].as_u64(), items["maxItems"].as_u64()), (Some(1), Some(batch)), "{name}");
        }
        use bursar_core::limits::{KEY_LEDGERS_MAX, KEY_NAME_MAX};
        let key = &schema(&doc, "KeyRequest")["properties"];
        assert_eq!(key["ledgers"]["maxItems"].as_u64(), Some(KEY_LEDGERS_MAX as u64));
        assert_eq!(key["name"]["maxLength"].as_u64(), Some(KEY_NAME_MAX as u64), "{}", key["name"]);
        let limit = &doc["paths"]["/v1/ledgers"]["get"]["parameters"][0];
        assert_eq!(limit["name"], "limit");
        let max = crate::routes::PAGE_MAX as u64;
        assert_eq!((limit["schema"]["minimum"].as_u64(), limit["schema"]["maximum"].as_u64()), (Some(1), Some(max)));
    }

    /// Every operation answers with the request id, and every write
    /// declares its Idempotency-Key.
    #[test]
    fn operations_declare_their_headers() {
        let doc: Value = serde_json::from_str(&document()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let response = match response["$ref"].as_str() {
                        Some(r) => &doc["components"]["responses"][r.rsplit('/').next().unwrap()],
                        None => response,
                    };
                    assert!(response["headers"]["X-Request-Id"].is_object(), "{method} {path} {status}");
                }
                let idempotency = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
                if method == "post" {
                    assert_eq!(idempotency.map(|p| &p["required"]), Some(&Value::Bool(true)), "{method} {path}");
                }
            }
        }
    }

    /// The annotations name their route's path from the route table, but
    /// their method is a keyword of their own: the document and the table
    /// must list the same methods and paths.
    #[test]
    fn operations_are_the_route_table() {
        let doc: Value = serde_json::from_str(&document()).unwrap();
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        let table: std::collections::BTreeSet<String> = crate::paths::ALL.iter().map(|r| r.name.to_string()).collect();
        assert_eq!(documented, table);
    }
}
