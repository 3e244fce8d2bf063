//! Fuzz target for the change-stream pages the projection reads (issue 13,
//! trust boundaries).
//!
//! `fuzz_event_pages` starts from a valid `GET /v1/events` page holding
//! every event type the projection decodes, mutates it structurally (values
//! of any type, boundary numbers, long strings, members removed or added,
//! arrays in place of objects) and sometimes as raw bytes, then decodes it.
//! Decoding returns an error or a page whose seqs increase strictly from
//! the cursor and end at or before `next_after`; it never panics.
//!
//! `BURSAR_FUZZ_CASES` sets the number of cases (see docs/security/fuzz.md).

use bursar_fuzz as fz;
use bursar_projection::events::decode_page;
use proptest::prelude::*;
use serde_json::{Value, json};

const NAMES: &[&str] = &[
    "data",
    "next_after",
    "seq",
    "type",
    "version",
    "timestamp",
    "id",
    "asset",
    "scale",
    "ledger",
    "code",
    "flags",
    "amount",
    "pending_id",
    "pending_amount",
    "debit_account_id",
    "credit_account_id",
    "user_data_128",
    "user_data_64",
    "user_data_32",
    "timeout",
    "order_id",
    "customer_id",
    "source_ledger",
    "target_ledger",
    "source_amount",
    "fee_amount",
    "target_amount",
    "rate_ppb",
    "quote_id",
    "state",
];

/// A valid page with every type the projection decodes.
fn page() -> Value {
    let transfer = |seq: u64, t: &str, id: &str, pending: &str| {
        json!({"seq": seq, "type": t, "version": 1, "timestamp": "9", "accounts": ["7", "8"], "data": {
            "id": id, "debit_account_id": "7", "credit_account_id": "8", "amount": "340282366920938463463374607431768211455",
            "pending_id": pending, "ledger": 840, "code": 1, "flags": ["pending"], "timeout": 60, "user_data_128": "0",
            "user_data_64": "0", "user_data_32": 0, "timestamp": "9", "pending_amount": "500"}})
    };
    json!({"data": [
        {"seq": 1, "type": "ledger.created", "version": 1, "timestamp": "5", "data": {"id": 840, "asset": "USD", "scale": 2, "timestamp": "5"}},
        {"seq": 2, "type": "account.created", "version": 1, "timestamp": "6", "accounts": ["7"], "data": {"id": "7", "ledger": 840, "code": 1, "flags": ["history"], "user_data_128": "0", "user_data_64": "0", "user_data_32": 0, "timestamp": "6"}},
        transfer(3, "transfer.pending", "10", "0"),
        transfer(4, "transfer.posted", "11", "10"),
        transfer(5, "transfer.voided", "12", "10"),
        transfer(6, "transfer.expired", "10", "10"),
        transfer(7, "transfer.posted", "13", "0"),
        {"seq": 8, "type": "order.created", "version": 1, "timestamp": "10", "data": {"order_id": "1", "customer_id": "77", "source_ledger": 840, "target_ledger": 978, "source_amount": "10000", "fee_amount": "150", "target_amount": "9000", "rate_ppb": "920000000", "quote_id": "5", "state": "created"}},
        {"seq": 9, "type": "key.created", "version": 1, "timestamp": "11", "data": {"id": "3", "role": "operator"}}
    ], "next_after": "9"})
}

proptest! {
    #![proptest_config(fz::config(2048))]

    #[test]
    fn fuzz_event_pages(
        after in prop_oneof![Just(0u64), 0u64..10, any::<u64>()],
        edits in fz::json_mutations(NAMES, 6),
        bytes in prop_oneof![4 => Just(Vec::new()), 1 => fz::mutations(4)],
    ) {
        let doc = fz::json_mutated(page(), &edits);
        let body = fz::mutated(serde_json::to_vec(&doc).expect("a value serialises"), &bytes);
        if let Ok(p) = decode_page(after, &body) {
            let mut last = after;
            for e in &p.events {
                prop_assert!(e.seq > last, "seq {} after {}", e.seq, last);
                last = e.seq;
            }
            prop_assert!(p.next_after >= last);
        }
    }
}

#[test]
fn the_seed_page_decodes() {
    let p = decode_page(0, &serde_json::to_vec(&page()).unwrap()).unwrap();
    assert_eq!((p.events.len(), p.next_after), (9, 9));
}
