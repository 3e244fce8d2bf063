//! The error types of this crate. Decoding names what is damaged (the record,
//! the id, the count and its limit); an invariant check names the record that
//! breaks it. Both are data errors from stored or received bytes: a caller
//! refuses the input, it never panics on it.

/// Bytes (a log entry body, a snapshot section, an engine reply) that fail a
/// check while decoding, or a restored state that is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("stored record ends early")]
    EndsEarly,
    #[error("{what} is not UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("{count} unexpected trailing bytes")]
    TrailingBytes { count: usize },
    #[error("reserved {what} bytes are not zero")]
    ReservedNotZero { what: &'static str },
    #[error("{what} is cut short")]
    CutShort { what: &'static str },
    #[error("the {what} header has the wrong length")]
    HeaderLength { what: &'static str },
    #[error("{len} trailing bytes are shorter than a command header")]
    ShortTail { len: usize },
    #[error("envelope declares more bytes than the body holds")]
    EnvelopeOverrun,
    #[error("unknown {what} {code}")]
    UnknownCode { what: &'static str, code: u64 },
    #[error("command of {count} events exceeds the batch limit of {max}")]
    CommandTooLarge { count: usize, max: usize },
    #[error("command declares {count} events but the body ends early")]
    CommandEndsEarly { count: usize },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("an envelope without an idempotency key carries a scope")]
    ScopeWithoutKey,
    #[error("envelope {what} is longer than {max} bytes")]
    EnvelopeFieldTooLong { what: &'static str, max: usize },
    #[error("an envelope holds bytes after its command")]
    BytesAfterCommand,
    #[error("a rejected entry holds bytes after its record")]
    BytesAfterRejection,
    #[error("{count} {what} stored, more than the limit of {max}")]
    TooMany { what: &'static str, count: u64, max: u64 },
    #[error("{what} {id} is stored twice")]
    StoredTwice { what: &'static str, id: u128 },
    #[error("{what} {id} is invalid or stored twice")]
    InvalidOrStoredTwice { what: &'static str, id: u128 },
    #[error("{what} at position {position} has invalid id {id}")]
    InvalidId { what: &'static str, position: u64, id: u128 },
    #[error("a {what} chunk of {len} bytes is not a whole number of {size}-byte records")]
    ChunkMisaligned { what: &'static str, len: usize, size: usize },
    #[error("chunk {index} holds {len} elements; chunks hold {chunk} and only the last may be short")]
    ArenaChunk { index: usize, len: usize, chunk: usize },
    #[error("expected {expected} sections, found {found}")]
    Sections { expected: usize, found: usize },
    #[error("a chunk was left on disk by the snapshot store but no chunk reader was given")]
    StoredChunkWithoutReader,
    #[error("a stored chunk cannot be read back: {reason}")]
    StoredChunkUnreadable { reason: String },
    #[error("stored {what} ids cover {covered} records, but the snapshot holds {records}")]
    StoredIdsAhead { what: &'static str, covered: u64, records: u64 },
    #[error("snapshot header is too short")]
    HeaderTooShort,
    #[error("snapshot header declares {count} ledgers but holds {len} bytes")]
    LedgerCount { count: u64, len: usize },
    #[error("account {account} is on unknown ledger {ledger}")]
    AccountOnUnknownLedger { account: u128, ledger: u32 },
    #[error("{states} pending states for {transfers} transfers")]
    PendingStates { states: usize, transfers: usize },
    #[error("transfer {transfer} names unknown account {account}")]
    TransferUnknownAccount { transfer: u128, account: u128 },
    #[error("transfer {transfer} debits and credits the same account {account}")]
    TransferSameAccounts { transfer: u128, account: u128 },
    #[error("transfer {transfer} has an invalid pending state")]
    InvalidPendingState { transfer: u128 },
    #[error("balance record for unknown account {account}")]
    BalanceUnknownAccount { account: u128 },
    #[error("balance record for account {account} without the history flag")]
    BalanceWithoutHistory { account: u128 },
    #[error("journal slot {slot} (kind {kind}) points at nothing")]
    DanglingJournalSlot { slot: u64, kind: u8 },
    #[error("stored key {id} has an invalid rate limit")]
    KeyRateLimit { id: u64 },
    #[error("access record {index} holds seq {seq}")]
    AccessSeq { index: u64, seq: u64 },
    #[error("idempotency result count {count} overflows")]
    ResultCountOverflows { count: usize },
    #[error("an idempotency scope is stored twice")]
    ScopeStoredTwice,
    #[error("node {node}'s newest proposal is not marked as seen")]
    NewestProposalUnseen { node: u32 },
    #[error("stored webhook id {id} is invalid")]
    WebhookId { id: u64 },
    #[error("stored webhook {id} has inconsistent counts")]
    WebhookCounts { id: u64 },
    #[error("a feed reply ends inside {what}")]
    FeedCut { what: &'static str },
    #[error("audit record {seq} {fault}")]
    Audit { seq: u64, fault: AuditFault },
    #[error(transparent)]
    Invariant(#[from] InvariantError),
}

/// Why an audit record fails verification (the record's seq is beside it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditFault {
    #[error("does not exist")]
    Missing,
    #[error("has invalid bounds")]
    Bounds,
    #[error("does not decode: {0}")]
    Undecodable(Box<DecodeError>),
    #[error("holds seq {0}")]
    WrongSeq(u64),
    #[error("does not link to the record before it")]
    BrokenLink,
    #[error("its content does not match its hash")]
    HashMismatch,
}

/// A write command that is not well formed, or an envelope field beyond its
/// limit; found before anything is logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{operation} is not a write operation")]
    NotWrite { operation: &'static str },
    #[error("{len} bytes is not a whole number of {size}-byte events")]
    PartialEvent { len: usize, size: usize },
    #[error("{count} events exceed the batch limit of {max}")]
    BatchTooLarge { count: usize, max: usize },
    #[error("{what} is longer than {max} bytes")]
    FieldTooLong { what: &'static str, max: usize },
    #[error("envelope of {len} bytes exceeds {max}")]
    EnvelopeTooLarge { len: usize, max: usize },
}

/// A broken invariant of the ledger, the orders or the audit trail: names
/// the record that breaks it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantError {
    #[error("account {account} is on unknown ledger {ledger}")]
    AccountOnUnknownLedger { account: u128, ledger: u32 },
    #[error("ledger {ledger} has no totals")]
    NoTotals { ledger: u32 },
    #[error("ledger {ledger}: totals recomputed from accounts {recomputed} differ from the running totals {kept}")]
    TotalsDiffer { ledger: u32, recomputed: String, kept: String },
    #[error("ledger {ledger}: debits and credits differ: {totals}")]
    Unbalanced { ledger: u32, totals: String },
    #[error("totals exist for a ledger that does not")]
    TotalsWithoutLedger,
    #[error("account {account}: pending plus posted overflows")]
    AccountOverflows { account: u128 },
    #[error("account {account}: debits {debits} exceed posted credits {credits_posted}")]
    DebitsExceedCredits { account: u128, debits: u128, credits_posted: u128 },
    #[error("account {account}: credits {credits} exceed posted debits {debits_posted}")]
    CreditsExceedDebits { account: u128, credits: u128, debits_posted: u128 },
    #[error("per-account indexes do not cover every account")]
    AccountIndexes,
    #[error("transfer {transfer} is listed as live pending but is not")]
    NotLivePending { transfer: u128 },
    #[error("pending transfer {transfer} is not scheduled to expire")]
    NotScheduled { transfer: u128 },
    #[error("pending transfer {transfer} with unknown {side} account")]
    PendingUnknownAccount { transfer: u128, side: &'static str },
    #[error("pending sum overflows")]
    PendingSumOverflows,
    #[error("{scheduled} expiries scheduled for {expected} live pending transfers with a timeout")]
    Expiries { scheduled: usize, expected: usize },
    #[error(
        "account {account}: pending balances {debits}/{credits} differ from live pending transfers {want_debits}/{want_credits}"
    )]
    PendingBalances { account: u128, debits: u128, credits: u128, want_debits: u128, want_credits: u128 },
    #[error("pending states do not cover every transfer")]
    PendingStates,
    #[error("transfer {transfer} has timestamp {timestamp} not after {previous}")]
    TimestampOrder { transfer: u128, timestamp: u64, previous: u64 },
    #[error("transfer {transfer}: pending flag and state {state} disagree")]
    PendingFlag { transfer: u128, state: String },
    #[error("{live} transfers are pending but {listed} are listed live")]
    LiveCount { live: usize, listed: usize },
    #[error("an order index has the wrong size")]
    OrderIndexSize,
    #[error("order {order} has state {state}")]
    OrderState { order: u128, state: u8 },
    #[error("order {order} is missing from an index")]
    OrderNotIndexed { order: u128 },
    #[error("order {order} is ahead of the change feed")]
    OrderAheadOfFeed { order: u128 },
    #[error("order {order} is missing from the deadlines")]
    OrderNoDeadline { order: u128 },
    #[error("the deadline index has stale entries")]
    StaleDeadlines,
    #[error("order {order} is terminal but still open")]
    TerminalOrderOpen { order: u128 },
    #[error("the final orders do not read back: {0}")]
    FinalOrders(Box<DecodeError>),
    #[error("order {order} in state {state} has a deadline")]
    UnexpectedDeadline { order: u128, state: &'static str },
    #[error("ledger {ledger}: escrow holds {held}, orders hold {expected}")]
    Escrow { ledger: u32, held: u128, expected: u128 },
    #[error(
        "ledger {ledger}: payout clearing has {net} posted and {paying} pending, orders expect {want_net} and {want_paying}"
    )]
    Clearing { ledger: u32, net: u128, paying: u128, want_net: u128, want_paying: u128 },
    #[error("orders use ledger {ledger}, which does not exist")]
    OrdersOnUnknownLedger { ledger: u32 },
    #[error("order amounts overflow a ledger's 128-bit balance")]
    OrderAmountsOverflow,
    #[error("audit record {seq} {fault}")]
    Audit { seq: u64, fault: AuditFault },
}
