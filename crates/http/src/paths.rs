//! Every route's method and path, written once: the router, the OpenAPI
//! annotations and the writes' identity (audit trail, access trail and
//! idempotency fingerprint) all read them here.
//!
//! A route's [`Route::name`] (`POST /v1/accounts`) is hashed into the
//! fingerprint of every idempotency record it writes, and those records are
//! persisted in the log: changing the name of a write route changes
//! idempotency across an upgrade (tests/fingerprints.rs pins them).

use axum::routing::MethodFilter;

/// The HTTP methods the API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }

    pub fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Delete => MethodFilter::DELETE,
        }
    }
}

/// One route of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// As axum matches it: `/v1/accounts/{id}`.
    pub path: &'static str,
    /// `METHOD path`: the route's identity in envelopes, trails and
    /// idempotency fingerprints. Persisted: never change a write's.
    pub name: &'static str,
}

impl Route {
    /// Whether requests on it write to the log (with an envelope).
    pub fn writes(&self) -> bool {
        self.method != Method::Get
    }
}

macro_rules! method {
    (GET) => {
        Method::Get
    };
    (POST) => {
        Method::Post
    };
    (DELETE) => {
        Method::Delete
    };
}

/// Declares each route once, and [`ALL`] with every one of them.
macro_rules! routes {
    ($($const:ident = $method:ident $path:literal;)*) => {
        $(pub const $const: Route =
            Route { method: method!($method), path: $path, name: concat!(stringify!($method), " ", $path) };)*
        /// Every route, in the order of the OpenAPI document's paths.
        pub const ALL: &[Route] = &[$($const),*];
    };
}

// Named after the OpenAPI operation ids.
routes! {
    CREATE_LEDGER = POST "/v1/ledgers";
    LIST_LEDGERS = GET "/v1/ledgers";
    CREATE_ACCOUNT = POST "/v1/accounts";
    CREATE_ACCOUNTS = POST "/v1/accounts/batch";
    GET_ACCOUNT = GET "/v1/accounts/{id}";
    GET_ACCOUNT_TRANSFERS = GET "/v1/accounts/{id}/transfers";
    GET_ACCOUNT_BALANCES = GET "/v1/accounts/{id}/balances";
    CREATE_TRANSFER = POST "/v1/transfers";
    CREATE_TRANSFERS = POST "/v1/transfers/batch";
    GET_TRANSFER = GET "/v1/transfers/{id}";
    CREATE_ORDER = POST "/v1/orders";
    LIST_ORDERS = GET "/v1/orders";
    GET_ORDER = GET "/v1/orders/{id}";
    GET_ORDER_EVENTS = GET "/v1/orders/{id}/events";
    CANCEL_ORDER = POST "/v1/orders/{id}/cancel";
    REVIEW_ORDER = POST "/v1/orders/{id}/review";
    ORDER_FUNDS_RECEIVED = POST "/v1/orders/{id}/funds";
    CREATE_KEY = POST "/v1/keys";
    LIST_KEYS = GET "/v1/keys";
    REVOKE_KEY = DELETE "/v1/keys/{id}";
    ROTATE_KEY = POST "/v1/keys/{id}/rotate";
    CREATE_WEBHOOK = POST "/v1/webhooks";
    LIST_WEBHOOKS = GET "/v1/webhooks";
    GET_WEBHOOK = GET "/v1/webhooks/{id}";
    DELETE_WEBHOOK = DELETE "/v1/webhooks/{id}";
    LIST_DEAD_LETTERS = GET "/v1/webhooks/{id}/dead-letters";
    REPLAY_WEBHOOK = POST "/v1/webhooks/{id}/replay";
    LIST_AUDIT = GET "/v1/audit";
    LIST_ACCESS_LOG = GET "/v1/access-log";
    LIST_EVENTS = GET "/v1/events";
    STREAM_EVENTS = GET "/v1/events/stream";
    OPENAPI = GET "/v1/openapi.json";
    METRICS = GET "/metrics";
    HEALTHZ = GET "/healthz";
    READYZ = GET "/readyz";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_method_and_path() {
        for r in ALL {
            assert_eq!(r.name, format!("{} {}", r.method.as_str(), r.path));
        }
    }

    #[test]
    fn each_method_and_path_once() {
        let mut seen = std::collections::HashSet::new();
        for r in ALL {
            assert!(seen.insert((r.method, r.path)), "{} is declared twice", r.name);
        }
    }
}
