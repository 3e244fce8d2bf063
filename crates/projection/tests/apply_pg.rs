//! Batches applied to a real PostgreSQL (initdb + pg_ctl in a temp dir):
//! balances per the events table (pending, post, void, expire), daily
//! balances across days and batches, order upserts, and the cursor check
//! that refuses a batch applied twice. Fails when PostgreSQL is missing.

use bursar_projection::apply::Batch;
use bursar_projection::events::{Account, Body, Event, Ledger, Order, Transfer, TransferKind};
use bursar_projection::schema;
use bursar_testkit::postgres::TempPostgres;

const DAY: u64 = 86_400_000_000_000;
/// 2026-11-21 00:00 UTC in nanoseconds.
const T0: u64 = 20_778 * DAY;

fn transfer(seq: u64, ts: u64, kind: TransferKind, id: u128, amount: u128, pending: (u128, u128)) -> Event {
    Event {
        seq,
        timestamp: ts,
        body: Body::Transfer(Transfer {
            kind,
            id,
            debit_account_id: 1,
            credit_account_id: 2,
            amount,
            pending_id: pending.0,
            pending_amount: pending.1,
            ledger: 7,
            code: 1,
            flags: vec![],
            timeout: 0,
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            timestamp: ts,
        }),
    }
}

fn account(seq: u64, id: u128) -> Event {
    Event {
        seq,
        timestamp: T0,
        body: Body::Account(Account {
            id,
            ledger: 7,
            code: 1,
            flags: vec!["history".into()],
            user_data_128: u128::MAX,
            user_data_64: u64::MAX,
            user_data_32: u32::MAX,
            timestamp: T0,
        }),
    }
}

fn order(seq: u64, ts: u64, state: &str, target: Option<u128>) -> Event {
    Event {
        seq,
        timestamp: ts,
        body: Body::Order(Order {
            id: 99,
            customer_id: 5,
            source_ledger: 7,
            target_ledger: 8,
            source_amount: 1000,
            fee_amount: 10,
            target_amount: target,
            rate_ppb: target.map(|_| 900_000_000),
            quote_id: target.map(|_| 3),
            state: state.into(),
        }),
    }
}

fn text(db: &mut postgres::Client, q: &str) -> Vec<String> {
    db.query(q, &[]).unwrap().iter().map(|r| r.get::<_, String>(0)).collect()
}

#[test]
fn batches_apply_exactly_once() {
    let pg = TempPostgres::start().unwrap_or_else(|e| panic!("this test needs PostgreSQL: {e}"));
    let mut db = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    db.batch_execute(schema::CREATE).unwrap();
    db.batch_execute(schema::STAGING).unwrap();

    let big = u128::MAX / 2;
    let first = vec![
        Event {
            seq: 1,
            timestamp: T0,
            body: Body::Ledger(Ledger { id: 7, asset: "U\tSD".into(), scale: 2, timestamp: T0 }),
        },
        account(2, 1),
        account(3, 2),
        transfer(4, T0 + 10, TransferKind::Single, 10, big, (0, 0)),
        transfer(5, T0 + 20, TransferKind::Pending, 11, 500, (0, 0)),
        transfer(6, T0 + 30, TransferKind::Pending, 12, 300, (0, 0)),
        order(7, T0 + 40, "created", None),
        order(8, T0 + 50, "fx_locked", Some(905)),
    ];
    let mut batch = Batch::new(0);
    batch.push(0, 8, &first).unwrap();
    batch.apply(&mut db).unwrap();
    // The same batch again: refused, nothing changes.
    assert!(batch.apply(&mut db).unwrap_err().to_string().contains("stored cursor is 8"));

    // The next day: post 200 of the 500, void the 300, a pending that expires.
    let second = vec![
        transfer(10, T0 + DAY + 1, TransferKind::Post, 13, 200, (11, 500)),
        transfer(11, T0 + DAY + 2, TransferKind::Void, 14, 300, (12, 300)),
        transfer(12, T0 + DAY + 3, TransferKind::Pending, 15, 40, (0, 0)),
        transfer(13, T0 + 2 * DAY, TransferKind::Expire, 15, 40, (0, 40)),
        order(14, T0 + 2 * DAY, "completed", None),
    ];
    let mut batch = Batch::new(8);
    // Seq 9 was a key event, filtered out by the server: the page starts at 8.
    batch.push(8, 14, &second).unwrap();
    batch.apply(&mut db).unwrap();

    assert_eq!(
        text(
            &mut db,
            "SELECT concat_ws(',', id, debits_pending, debits_posted, credits_pending, credits_posted, updated_seq) FROM accounts ORDER BY id"
        ),
        [format!("1,0,{},0,0,13", big + 200), format!("2,0,0,0,{},13", big + 200)]
    );
    assert_eq!(
        text(&mut db, "SELECT concat_ws(',', id, kind, amount, coalesce(resolution, '-')) FROM transfers ORDER BY id"),
        [
            format!("10,single,{big},-"),
            "11,pending,500,posted".into(),
            "12,pending,300,voided".into(),
            "13,post,200,-".into(),
            "14,void,300,-".into(),
            "15,pending,40,expired".into()
        ]
    );
    assert_eq!(
        text(
            &mut db,
            "SELECT concat_ws(',', day, debits_pending, debits_posted, debit_volume, credit_volume) FROM daily_balances WHERE account_id = 1 ORDER BY day"
        ),
        [
            format!("2026-11-21,800,{big},{big},0"),
            format!("2026-11-22,40,{},200,0", big + 200),
            format!("2026-11-23,0,{},0,0", big + 200)
        ]
    );
    assert_eq!(
        text(
            &mut db,
            "SELECT concat_ws(',', state, target_amount, rate_ppb, created_seq, updated_seq, created_at) FROM orders"
        ),
        ["completed,905,900000000,7,14,2026-11-21 00:00:00+00"]
    );
    assert_eq!(text(&mut db, "SELECT asset FROM ledgers"), ["U\tSD"]);
    assert_eq!(text(&mut db, "SELECT last_seq::text || '/' || events FROM projection_state"), ["14/13"]);

    // Rebuild: empty, cursor 0.
    db.batch_execute(&format!("BEGIN; {} COMMIT;", schema::TRUNCATE)).unwrap();
    assert_eq!(text(&mut db, "SELECT count(*)::text FROM transfers"), ["0"]);
    assert_eq!(text(&mut db, "SELECT last_seq::text FROM projection_state"), ["0"]);
}
