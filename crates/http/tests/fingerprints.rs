//! The idempotency fingerprint of every write route, pinned. A fingerprint
//! hashes the route's name and the request's canonical form, and it is
//! persisted with each idempotency record in the log: if a route's name
//! (or the hash) changed, a retry after an upgrade would no longer match
//! the record its first try wrote. The expected values were computed with
//! the code before the route table existed; they must never change.

use bursar_http::engine_client::fingerprint;
use bursar_http::paths::{self, Route};

/// Every write route: its name as fed to the fingerprint, and the
/// fingerprint of [`canonical`] under it.
const PINNED: &[(Route, &str, &str)] = &[
    (paths::CREATE_LEDGER, "POST /v1/ledgers", "adf23aaf78018ccfffcef2e4556522a1"),
    (paths::CREATE_ACCOUNT, "POST /v1/accounts", "75396ab7fe1e9e53e537d42155d73c53"),
    (paths::CREATE_ACCOUNTS, "POST /v1/accounts/batch", "2f800905861e44f777523929da3c38b5"),
    (paths::CREATE_TRANSFER, "POST /v1/transfers", "f707eccb7677837669cad0e91a7008bb"),
    (paths::CREATE_TRANSFERS, "POST /v1/transfers/batch", "6205e05dd33af6302c33f7749b4a3466"),
    (paths::CREATE_ORDER, "POST /v1/orders", "63495c112e4d9101e6792e9f51ac3a41"),
    (paths::CANCEL_ORDER, "POST /v1/orders/{id}/cancel", "ab65e0aaa88717260cdccf81454a14c6"),
    (paths::REVIEW_ORDER, "POST /v1/orders/{id}/review", "304a2d8414e67e040721f17aecf9e1de"),
    (paths::ORDER_FUNDS_RECEIVED, "POST /v1/orders/{id}/funds", "5824efef49f83eff3f312948990e0e19"),
    (paths::CREATE_KEY, "POST /v1/keys", "d69475b822d45f69a2dbc8b90ff65284"),
    (paths::REVOKE_KEY, "DELETE /v1/keys/{id}", "406e7b9ae24666cfaa8b79e96ea8a76e"),
    (paths::ROTATE_KEY, "POST /v1/keys/{id}/rotate", "3638a2245f655b21612e6d9184e2dc90"),
    (paths::CREATE_WEBHOOK, "POST /v1/webhooks", "2a1874dc45e9319c4cdfce44f719d830"),
    (paths::DELETE_WEBHOOK, "DELETE /v1/webhooks/{id}", "3485dd671803c90c7fcfe6376efdec8f"),
    (paths::REPLAY_WEBHOOK, "POST /v1/webhooks/{id}/replay", "bdca7e1425e8a798a54b4da2188ba0f2"),
];

/// A fixed canonical body: the bytes 0 to 255.
fn canonical() -> Vec<u8> {
    (0u8..=255).collect()
}

#[test]
fn write_route_names_are_unchanged() {
    for (route, name, _) in PINNED {
        assert_eq!(route.name, *name, "the name of a write route is persisted in its fingerprints");
    }
}

#[test]
fn write_route_fingerprints_are_unchanged() {
    let body = canonical();
    for (route, name, hex) in PINNED {
        assert_eq!(hex::encode(fingerprint(route.name, &body)), *hex, "fingerprint of {name}");
    }
}

/// A new write route must be pinned here too (and an old one never dropped).
#[test]
fn every_write_route_is_pinned() {
    let writes: Vec<&str> = paths::ALL.iter().filter(|r| r.writes()).map(|r| r.name).collect();
    let pinned: Vec<&str> = PINNED.iter().map(|(r, _, _)| r.name).collect();
    for name in &writes {
        assert!(pinned.contains(name), "{name} writes but its fingerprint is not pinned");
    }
    for name in &pinned {
        assert!(writes.contains(name), "{name} is pinned but is no write route of the table");
    }
}
