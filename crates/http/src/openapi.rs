//! The OpenAPI 3 document, generated from the route annotations and the
//! JSON types.

use crate::dto::*;
use crate::problem::ProblemBody;
use crate::routes::{accounts, audit, keys, ledgers, ops, transfers};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Bursar", description = "A fault-tolerant double-entry ledger. Amounts and ids are strings of minor units and u128 ids."),
    paths(
        ledgers::create, ledgers::list,
        accounts::create, accounts::create_batch, accounts::get_one, accounts::transfers, accounts::balances,
        transfers::create, transfers::create_batch, transfers::get_one,
        keys::create, keys::list, keys::revoke,
        audit::list,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(
        LedgerRequest, LedgerBody, AccountRequest, AccountCreated, AccountBody, AccountBatchRequest,
        TransferRequest, TransferBody, TransferBatchRequest, BatchResult, EventError, BalanceBody,
        KeyRequest, KeyBody, KeyList, AuditBody, Status, ProblemBody,
    )),
    modifiers(&BearerAuth),
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

pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes")
}
