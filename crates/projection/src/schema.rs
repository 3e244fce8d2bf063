//! The read model's tables (documented in docs/projection.md). Amounts and
//! ids are `numeric(39,0)`: every u128 fits, and nothing is a float.

/// Created when absent; all statements are idempotent.
pub const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS projection_state (
    id        int PRIMARY KEY CHECK (id = 1),
    last_seq  bigint NOT NULL,
    events    bigint NOT NULL
);
INSERT INTO projection_state (id, last_seq, events) VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS ledgers (
    id         bigint PRIMARY KEY,
    asset      text NOT NULL,
    scale      smallint NOT NULL,
    timestamp  bigint NOT NULL,
    created_at timestamptz NOT NULL,
    seq        bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS accounts (
    id              numeric(39,0) PRIMARY KEY,
    ledger          bigint NOT NULL,
    code            integer NOT NULL,
    flags           text[] NOT NULL,
    user_data_128   numeric(39,0) NOT NULL,
    user_data_64    numeric(20,0) NOT NULL,
    user_data_32    bigint NOT NULL,
    timestamp       bigint NOT NULL,
    created_at      timestamptz NOT NULL,
    seq             bigint NOT NULL,
    debits_pending  numeric(39,0) NOT NULL CHECK (debits_pending >= 0),
    debits_posted   numeric(39,0) NOT NULL CHECK (debits_posted >= 0),
    credits_pending numeric(39,0) NOT NULL CHECK (credits_pending >= 0),
    credits_posted  numeric(39,0) NOT NULL CHECK (credits_posted >= 0),
    updated_seq     bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS accounts_ledger ON accounts (ledger);

CREATE TABLE IF NOT EXISTS transfers (
    id                numeric(39,0) PRIMARY KEY,
    seq               bigint NOT NULL,
    kind              text NOT NULL,
    debit_account_id  numeric(39,0) NOT NULL,
    credit_account_id numeric(39,0) NOT NULL,
    amount            numeric(39,0) NOT NULL,
    pending_id        numeric(39,0),
    pending_amount    numeric(39,0),
    ledger            bigint NOT NULL,
    code              integer NOT NULL,
    flags             text[] NOT NULL,
    timeout           bigint NOT NULL,
    user_data_128     numeric(39,0) NOT NULL,
    user_data_64      numeric(20,0) NOT NULL,
    user_data_32      bigint NOT NULL,
    timestamp         bigint NOT NULL,
    created_at        timestamptz NOT NULL,
    resolution        text,
    resolved_seq      bigint,
    resolved_at       timestamptz
);
CREATE INDEX IF NOT EXISTS transfers_debit ON transfers (debit_account_id, seq);
CREATE INDEX IF NOT EXISTS transfers_credit ON transfers (credit_account_id, seq);

CREATE TABLE IF NOT EXISTS orders (
    id            numeric(39,0) PRIMARY KEY,
    customer_id   numeric(39,0) NOT NULL,
    source_ledger bigint NOT NULL,
    target_ledger bigint NOT NULL,
    source_amount numeric(39,0) NOT NULL,
    fee_amount    numeric(39,0) NOT NULL,
    target_amount numeric(39,0),
    rate_ppb      numeric(39,0),
    quote_id      numeric(39,0),
    state         text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    created_seq   bigint NOT NULL,
    updated_seq   bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_customer ON orders (customer_id);

CREATE TABLE IF NOT EXISTS daily_balances (
    account_id      numeric(39,0) NOT NULL,
    day             date NOT NULL,
    debits_pending  numeric(39,0) NOT NULL,
    debits_posted   numeric(39,0) NOT NULL,
    credits_pending numeric(39,0) NOT NULL,
    credits_posted  numeric(39,0) NOT NULL,
    debit_volume    numeric(39,0) NOT NULL,
    credit_volume   numeric(39,0) NOT NULL,
    PRIMARY KEY (account_id, day)
);
"#;

/// Per-connection staging tables, emptied by every commit.
pub const STAGING: &str = r#"
CREATE TEMP TABLE IF NOT EXISTS stage_daily (
    account_id        numeric(39,0) NOT NULL,
    day               date NOT NULL,
    d_debits_pending  numeric NOT NULL,
    d_debits_posted   numeric NOT NULL,
    d_credits_pending numeric NOT NULL,
    d_credits_posted  numeric NOT NULL,
    debit_volume      numeric NOT NULL,
    credit_volume     numeric NOT NULL,
    last_seq          bigint NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_resolutions (
    pending_id  numeric(39,0) NOT NULL,
    resolution  text NOT NULL,
    seq         bigint NOT NULL,
    at          timestamptz NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_orders (LIKE orders) ON COMMIT DELETE ROWS;
"#;

/// `--rebuild`: empties the read model and resets the cursor (one transaction
/// with the caller's).
pub const TRUNCATE: &str = "TRUNCATE ledgers, accounts, transfers, orders, daily_balances; \
                            UPDATE projection_state SET last_seq = 0, events = 0 WHERE id = 1;";

/// End-of-day balances: the balances before the batch plus the running sum
/// of the batch's deltas, day by day (days of one account are unique in the
/// staging table); volumes add up across batches of the same day.
pub const APPLY_DAILY: &str = r#"
INSERT INTO daily_balances AS d (account_id, day, debits_pending, debits_posted, credits_pending, credits_posted,
                                 debit_volume, credit_volume)
SELECT s.account_id, s.day,
       a.debits_pending + sum(s.d_debits_pending) OVER w,
       a.debits_posted + sum(s.d_debits_posted) OVER w,
       a.credits_pending + sum(s.d_credits_pending) OVER w,
       a.credits_posted + sum(s.d_credits_posted) OVER w,
       s.debit_volume, s.credit_volume
FROM stage_daily s JOIN accounts a ON a.id = s.account_id
WINDOW w AS (PARTITION BY s.account_id ORDER BY s.day)
ON CONFLICT (account_id, day) DO UPDATE SET
    debits_pending = excluded.debits_pending,
    debits_posted = excluded.debits_posted,
    credits_pending = excluded.credits_pending,
    credits_posted = excluded.credits_posted,
    debit_volume = d.debit_volume + excluded.debit_volume,
    credit_volume = d.credit_volume + excluded.credit_volume
"#;

/// Must run after [`APPLY_DAILY`], which reads the balances before the batch.
pub const APPLY_ACCOUNTS: &str = r#"
UPDATE accounts a SET
    debits_pending = a.debits_pending + s.dp,
    debits_posted = a.debits_posted + s.dpo,
    credits_pending = a.credits_pending + s.cp,
    credits_posted = a.credits_posted + s.cpo,
    updated_seq = s.last_seq
FROM (SELECT account_id, sum(d_debits_pending) AS dp, sum(d_debits_posted) AS dpo,
             sum(d_credits_pending) AS cp, sum(d_credits_posted) AS cpo, max(last_seq) AS last_seq
      FROM stage_daily GROUP BY account_id) s
WHERE a.id = s.account_id
"#;

pub const APPLY_RESOLUTIONS: &str = r#"
UPDATE transfers t SET resolution = s.resolution, resolved_seq = s.seq, resolved_at = s.at
FROM stage_resolutions s WHERE t.id = s.pending_id
"#;

/// Static fields come from the order's first event; state and time from its
/// last; the locked quote once it is known.
pub const APPLY_ORDERS: &str = r#"
INSERT INTO orders AS o SELECT * FROM stage_orders
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state,
    updated_at = excluded.updated_at,
    updated_seq = excluded.updated_seq,
    target_amount = coalesce(excluded.target_amount, o.target_amount),
    rate_ppb = coalesce(excluded.rate_ppb, o.rate_ppb),
    quote_id = coalesce(excluded.quote_id, o.quote_id)
"#;
