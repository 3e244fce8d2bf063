//! Proptest strategies for random logs. Ids come from small spaces so that
//! duplicates, re-submissions, not-found and failed ids happen often; a few
//! references (the pending transfer a post/void settles, the record a
//! re-submission repeats) are symbolic and resolved against the model's state
//! when the command is applied, so posts and voids usually name a real
//! pending transfer.

use bursar_core::records::{account_flags as AF, transfer_flags as TF};
use bursar_core::{Account, Ledger, Transfer};
use proptest::prelude::*;

pub const NANOS: u64 = 1_000_000_000;

/// How the log clock moves before an entry.
#[derive(Clone, Copy, Debug)]
pub enum TimeStep {
    /// Forward by a few nanoseconds.
    Nanos(u64),
    /// Forward by whole seconds plus a small jitter, so that pending timeouts
    /// fall due at the start of, or in the middle of, an entry.
    Seconds(u64, i64),
    /// The node clock steps back (and stays back).
    Back(u64),
    /// This one entry is stamped 0.
    Zero,
    /// Stamped this many nanoseconds before the earliest pending expiry (if
    /// any), so that the transfer is due during the entry but not swept at
    /// its start (0: due exactly at the start). Resolved by the harness.
    NearExpiry(u64),
}

/// Which pending transfer a post or void names.
#[derive(Clone, Copy, Debug)]
pub enum PendingRef {
    /// The pending_id as generated.
    Raw,
    /// The k-th most recent pending transfer in the state.
    Recent(u8),
    /// The k-th most recent pending transfer earlier in the same batch.
    InBatch(u8),
    /// The live pending transfer that expires first.
    NextToExpire,
}

/// Repeat an existing record (possibly with one field changed).
#[derive(Clone, Copy, Debug)]
pub enum Resubmit {
    /// The k-th most recent record in the state.
    Existing(u8, u8),
    /// The k-th most recent event earlier in the same batch.
    InBatch(u8, u8),
}

#[derive(Clone, Debug)]
pub struct AccountSpec {
    pub account: Account,
    pub resubmit: Option<Resubmit>,
    pub faults: Vec<AccountFault>,
}

#[derive(Clone, Debug)]
pub struct TransferSpec {
    pub transfer: Transfer,
    /// Use the smallest id not used yet (in the state or the batch).
    pub fresh_id: bool,
    /// Use the debit account's ledger, if it exists.
    pub ledger_from_account: bool,
    pub pending: PendingRef,
    pub amount: SettleAmount,
    /// For post/void: bit 0 copies the pending transfer's accounts, bit 1 its
    /// ledger and code.
    pub fill: u8,
    pub resubmit: Option<Resubmit>,
    pub faults: Vec<TransferFault>,
}

#[derive(Clone, Debug)]
pub enum CmdSpec {
    Ledgers(Vec<Ledger>),
    Accounts(Vec<AccountSpec>),
    Transfers(Vec<TransferSpec>),
}

#[derive(Clone, Copy, Debug)]
pub enum TsSel {
    Zero,
    Max,
    /// A timestamp that occurs in the state (chosen by index) plus an offset.
    Pick(u16, i8),
}

#[derive(Clone, Copy, Debug)]
pub struct QuerySpec {
    pub account: u128,
    pub flags: u32,
    pub limit: u32,
    pub min: TsSel,
    pub max: TsSel,
    pub reserved: bool,
}

#[derive(Clone, Debug)]
pub struct EntrySpec {
    pub step: TimeStep,
    pub commands: Vec<CmdSpec>,
    pub queries: Vec<QuerySpec>,
}

#[derive(Clone, Debug)]
pub struct CaseSpec {
    /// (ledgers, accounts, transfers), or `None` for the default limits.
    pub limits: Option<(usize, usize, usize)>,
    /// How the small generated ids are spread over the id space.
    pub shape: IdShape,
    pub start_clock: u64,
    pub setup_ledgers: Vec<Ledger>,
    pub setup_accounts: Vec<Account>,
    pub entries: Vec<EntrySpec>,
}

/// Knobs drawn once per case, so that some cases are dense in huge amounts or
/// long chains and others are not.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    big: u32,
    linked: u32,
}

fn percent(p: u32) -> impl Strategy<Value = bool> {
    (0u32..100).prop_map(move |x| x < p)
}

fn asset(code: &str) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..code.len()].copy_from_slice(code.as_bytes());
    a
}

fn asset_strategy() -> impl Strategy<Value = [u8; 16]> {
    let mut junk_after_nul = asset("USD");
    junk_after_nul[5] = b'X';
    prop_oneof![
        10 => Just(asset("USD")),
        6 => Just(asset("EUR")),
        2 => Just(asset("JPY")),
        1 => Just(asset("ABCDEFGHIJKLMNOP")),
        1 => Just(asset("A.B-C_9")),
        1 => Just(asset("")),
        1 => Just(asset("usd")),
        1 => Just(asset("1AB")),
        1 => Just(asset("A B")),
        1 => Just(junk_after_nul),
    ]
}

fn ledger_strategy() -> impl Strategy<Value = Ledger> {
    (
        prop_oneof![12 => 1u32..=4, 1 => Just(0u32), 1 => Just(u32::MAX), 1 => 5u32..=6],
        prop_oneof![10 => Just(2u8), 3 => 0u8..=3, 1 => Just(38u8), 1 => Just(39u8), 1 => Just(255u8)],
        asset_strategy(),
        percent(3),
        percent(3),
    )
        .prop_map(|(id, scale, asset, reserved, timestamp)| Ledger {
            id,
            scale,
            reserved: if reserved { [0, 1, 0] } else { [0; 3] },
            asset,
            timestamp: timestamp as u64 * 7,
        })
}

fn small_data() -> impl Strategy<Value = u32> {
    prop_oneof![8 => Just(0u32), 2 => 1u32..=3]
}

/// A stateless defect injected into an otherwise valid account.
#[derive(Clone, Copy, Debug)]
pub enum AccountFault {
    Timestamp,
    Reserved,
    ReservedFlag(u8),
    IdZero,
    IdMax,
    BothLimitFlags,
    /// One of the four balances nonzero.
    Balance(u8),
    LedgerZero,
    CodeZero,
    /// A ledger that (probably) does not exist.
    LedgerMissing,
}

fn account_fault() -> impl Strategy<Value = AccountFault> + Clone {
    prop_oneof![
        Just(AccountFault::Timestamp),
        Just(AccountFault::Reserved),
        (5u8..16).prop_map(AccountFault::ReservedFlag),
        Just(AccountFault::IdZero),
        Just(AccountFault::IdMax),
        Just(AccountFault::BothLimitFlags),
        (0u8..4).prop_map(AccountFault::Balance),
        Just(AccountFault::LedgerZero),
        Just(AccountFault::CodeZero),
        Just(AccountFault::LedgerMissing),
    ]
}

/// Mostly none, sometimes one, rarely two defects (to check their order).
fn faults<F: Clone + std::fmt::Debug>(fault: impl Strategy<Value = F> + Clone) -> impl Strategy<Value = Vec<F>> {
    prop_oneof![
        85 => Just(Vec::new()),
        12 => prop::collection::vec(fault.clone(), 1),
        3 => prop::collection::vec(fault, 2),
    ]
}

fn account_flags(k: Knobs) -> impl Strategy<Value = u16> {
    (percent(k.linked), percent(20), percent(20), percent(30), percent(3)).prop_map(
        |(linked, dmnec, cmned, history, closed)| {
            let mut f = 0;
            if linked {
                f |= AF::LINKED;
            }
            if dmnec {
                f |= AF::DEBITS_MUST_NOT_EXCEED_CREDITS;
            } else if cmned {
                f |= AF::CREDITS_MUST_NOT_EXCEED_DEBITS;
            }
            if history {
                f |= AF::HISTORY;
            }
            if closed {
                f |= AF::CLOSED;
            }
            f
        },
    )
}

fn account_strategy(k: Knobs) -> impl Strategy<Value = Account> {
    (
        prop_oneof![30 => 1u128..=12, 3 => 13u128..=14],
        account_flags(k),
        (small_data(), small_data(), small_data()),
        prop_oneof![80 => Just(1u32), 15 => Just(2u32), 5 => Just(3u32)],
        prop_oneof![95 => Just(1u16), 5 => Just(2u16)],
    )
        .prop_map(|(id, flags, (u128_, u64_, u32_), ledger, code)| Account {
            id,
            flags,
            user_data_128: u128_ as u128,
            user_data_64: u64_ as u64,
            user_data_32: u32_,
            ledger,
            code,
            ..Default::default()
        })
}

fn resubmit_strategy(mutations: u8) -> impl Strategy<Value = Option<Resubmit>> {
    prop_oneof![
        85 => Just(None),
        10 => (0u8..8, 0..mutations).prop_map(|(k, m)| Some(Resubmit::Existing(k, m))),
        5 => (0u8..4, 0..mutations).prop_map(|(k, m)| Some(Resubmit::InBatch(k, m))),
    ]
}

fn account_spec(k: Knobs) -> impl Strategy<Value = AccountSpec> {
    (account_strategy(k), resubmit_strategy(9), faults(account_fault()))
        .prop_map(|(account, resubmit, faults)| AccountSpec { account, resubmit, faults })
}

fn amount_strategy(k: Knobs) -> impl Strategy<Value = u128> {
    prop_oneof![
        3 => Just(0u128),
        5 => Just(1u128),
        20 => 2u128..=1000,
        k.big => Just(u128::MAX / 2),
        k.big => Just(u128::MAX / 2 + 1),
        k.big => Just(u128::MAX - 1),
        k.big + 1 => Just(u128::MAX),
    ]
}

/// A stateless defect injected into an otherwise valid transfer, applied
/// after the symbolic references are resolved.
#[derive(Clone, Copy, Debug)]
pub enum TransferFault {
    Timestamp,
    ReservedFlag(u8),
    IdZero,
    IdMax,
    /// Extra kind bits (pending / post / void).
    KindBits(u8),
    /// Balancing or closing bits (invalid on post / void).
    ExtraBits(u8),
    DebitZero,
    DebitMax,
    CreditZero,
    CreditMax,
    SameAccounts,
    PendingId(u8),
    Timeout,
    LedgerZero,
    CodeZero,
    /// A ledger other than the accounts'.
    LedgerOther,
    PendingIdSelf,
}

fn transfer_fault() -> impl Strategy<Value = TransferFault> + Clone {
    prop_oneof![
        Just(TransferFault::Timestamp),
        (8u8..16).prop_map(TransferFault::ReservedFlag),
        Just(TransferFault::IdZero),
        Just(TransferFault::IdMax),
        (1u8..8).prop_map(TransferFault::KindBits),
        (1u8..16).prop_map(TransferFault::ExtraBits),
        Just(TransferFault::DebitZero),
        Just(TransferFault::DebitMax),
        Just(TransferFault::CreditZero),
        Just(TransferFault::CreditMax),
        Just(TransferFault::SameAccounts),
        (0u8..4).prop_map(TransferFault::PendingId),
        Just(TransferFault::Timeout),
        Just(TransferFault::LedgerZero),
        Just(TransferFault::CodeZero),
        Just(TransferFault::LedgerOther),
        Just(TransferFault::PendingIdSelf),
    ]
}

/// How a post or void's amount is chosen.
#[derive(Clone, Copy, Debug)]
pub enum SettleAmount {
    Given,
    /// The pending amount, minus or plus a delta (saturating).
    Pending(i8),
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Plain,
    Pending,
    Post,
    Void,
}

fn transfer_spec(k: Knobs) -> impl Strategy<Value = TransferSpec> {
    let kind = prop_oneof![
        45 => Just(Kind::Plain),
        30 => Just(Kind::Pending),
        13 => Just(Kind::Post),
        12 => Just(Kind::Void),
    ];
    let flags = (percent(k.linked), percent(8), percent(8), percent(3), percent(3));
    let id = prop_oneof![75 => Just(None), 25 => (1u128..=40).prop_map(Some)];
    let accounts = prop_oneof![30 => 1u128..=12, 1 => 13u128..=14]
        .prop_flat_map(|dr| (Just(dr), prop_oneof![30 => 1u128..=11, 1 => Just(0u128)]))
        .prop_map(|(dr, offset)| if dr > 12 { (dr, 1) } else { (dr, (dr - 1 + offset) % 12 + 1) });
    let settle_accounts = prop_oneof![8 => Just((0u128, 0u128)), 2 => (1u128..=12, 1u128..=12)];
    let pending_ref = prop_oneof![
        75 => (0u8..6).prop_map(PendingRef::Recent),
        15 => (0u8..3).prop_map(PendingRef::InBatch),
        10 => Just(PendingRef::NextToExpire),
        10 => Just(PendingRef::Raw),
    ];
    let timeout = prop_oneof![
        12 => Just(0u32),
        6 => Just(1u32),
        3 => 2u32..=3,
        1 => Just(u32::MAX),
        1 => Just(3_000_000_000u32),
    ];
    let settle_amount = prop_oneof![
        3 => Just(SettleAmount::Given),
        4 => Just(SettleAmount::Pending(0)),
        2 => (-3i8..=-1).prop_map(SettleAmount::Pending),
        1 => Just(SettleAmount::Pending(1)),
    ];
    let data = (small_data(), small_data(), small_data());
    (
        (kind, flags, id),
        (accounts, settle_accounts, prop_oneof![9 => Just(true), 1 => Just(false)]),
        (amount_strategy(k), prop_oneof![2 => Just(u128::MAX), 1 => Just(0u128)], percent(50), settle_amount),
        (pending_ref, 1u128..=40),
        timeout,
        (
            prop_oneof![95 => Just(1u16), 5 => Just(2u16)],
            prop_oneof![85 => Just(0u32), 10 => Just(1u32), 5 => Just(2u32)],
            prop_oneof![85 => Just(0u16), 10 => Just(1u16), 5 => Just(2u16)],
        ),
        data,
        (0u8..4, percent(40)),
        resubmit_strategy(16),
        faults(transfer_fault()),
    )
        .prop_map(
            |(
                (kind, (linked, bd, bc, cd, cc), id),
                ((dr, cr), (settle_dr, settle_cr), ledger_from_account),
                (amount, special_amount, use_special, settle_amount),
                (pending, raw_pending_id),
                timeout,
                (code, settle_ledger, settle_code),
                (u128_, u64_, u32_),
                (fill, fill_on),
                resubmit,
                faults,
            )| {
                let settle = matches!(kind, Kind::Post | Kind::Void);
                let mut flags = match kind {
                    Kind::Plain => 0,
                    Kind::Pending => TF::PENDING,
                    Kind::Post => TF::POST_PENDING,
                    Kind::Void => TF::VOID_PENDING,
                };
                if linked {
                    flags |= TF::LINKED;
                }
                if !settle {
                    if bd {
                        flags |= TF::BALANCING_DEBIT;
                    }
                    if bc {
                        flags |= TF::BALANCING_CREDIT;
                    }
                }
                if matches!(kind, Kind::Pending) {
                    if cd {
                        flags |= TF::CLOSING_DEBIT;
                    }
                    if cc {
                        flags |= TF::CLOSING_CREDIT;
                    }
                }
                let transfer = Transfer {
                    id: id.unwrap_or(0),
                    debit_account_id: if settle { settle_dr } else { dr },
                    credit_account_id: if settle { settle_cr } else { cr },
                    amount: if settle && use_special { special_amount } else { amount },
                    pending_id: if settle { raw_pending_id } else { 0 },
                    user_data_128: u128_ as u128,
                    user_data_64: u64_ as u64,
                    user_data_32: u32_,
                    timeout: if matches!(kind, Kind::Pending) { timeout } else { 0 },
                    ledger: if settle { settle_ledger } else { 1 },
                    code: if settle { settle_code } else { code },
                    flags,
                    timestamp: 0,
                };
                TransferSpec {
                    transfer,
                    fresh_id: id.is_none(),
                    ledger_from_account: !settle && ledger_from_account,
                    pending: if settle { pending } else { PendingRef::Raw },
                    amount: if settle { settle_amount } else { SettleAmount::Given },
                    fill: if settle && fill_on { fill } else { 0 },
                    resubmit,
                    faults,
                }
            },
        )
}

fn time_step() -> impl Strategy<Value = TimeStep> {
    prop_oneof![
        10 => (0u64..=50).prop_map(TimeStep::Nanos),
        4 => (1u64..=3).prop_map(|s| TimeStep::Seconds(s, 0)),
        2 => (1u64..=3, -3i64..=3).prop_map(|(s, j)| TimeStep::Seconds(s, j)),
        2 => prop_oneof![1u64..=1000, Just(NANOS)].prop_map(TimeStep::Back),
        1 => Just(TimeStep::Zero),
        3 => prop_oneof![1 => Just(0u64), 4 => 1u64..=6].prop_map(TimeStep::NearExpiry),
    ]
}

fn ts_sel() -> impl Strategy<Value = TsSel> {
    prop_oneof![
        4 => Just(TsSel::Zero),
        1 => Just(TsSel::Max),
        6 => (any::<u16>(), -1i8..=1).prop_map(|(i, o)| TsSel::Pick(i, o)),
    ]
}

/// The largest query limit; one more is refused.
const PAGE_MAX: u32 = bursar_core::limits::QUERY_PAGE_MAX as u32;

fn query_spec() -> impl Strategy<Value = QuerySpec> {
    (
        prop_oneof![20 => 1u128..=13, 1 => Just(0u128), 1 => Just(u128::MAX)],
        prop_oneof![30 => 0u32..8, 1 => Just(8u32), 1 => Just(1u32 << 31)],
        prop_oneof![2 => Just(1u32), 3 => 2u32..=5, 3 => Just(PAGE_MAX), 1 => Just(0u32), 1 => Just(PAGE_MAX + 1)],
        ts_sel(),
        ts_sel(),
        percent(2),
    )
        .prop_map(|(account, flags, limit, min, max, reserved)| QuerySpec {
            account,
            flags,
            limit,
            min,
            max,
            reserved,
        })
}

fn command_spec(k: Knobs) -> impl Strategy<Value = CmdSpec> {
    prop_oneof![
        1 => prop::collection::vec(ledger_strategy(), 0..4).prop_map(CmdSpec::Ledgers),
        2 => prop::collection::vec(account_spec(k), 0..8).prop_map(CmdSpec::Accounts),
        7 => prop::collection::vec(transfer_spec(k), 0..20).prop_map(CmdSpec::Transfers),
    ]
}

fn entry_spec(k: Knobs) -> impl Strategy<Value = EntrySpec> {
    (time_step(), prop::collection::vec(command_spec(k), 0..=3), prop::collection::vec(query_spec(), 0..3))
        .prop_map(|(step, commands, queries)| EntrySpec { step, commands, queries })
}

pub fn case_spec(max_entries: usize) -> impl Strategy<Value = CaseSpec> {
    let knobs = (prop_oneof![Just(0u32), Just(2), Just(6)], prop_oneof![Just(5u32), Just(20), Just(40)])
        .prop_map(|(big, linked)| Knobs { big, linked });
    knobs.prop_flat_map(move |k| {
        (
            prop_oneof![3 => Just(None), 1 => (2usize..=4, 6usize..=14, 10usize..=45).prop_map(Some)],
            prop_oneof![
                3 => Just(1_000u64),
                3 => Just(1_700_000_000_000_000_000u64),
                1 => Just(15_000_000_000_000_000_000u64),
            ],
            prop_oneof![
                3 => Just(vec![
                    Ledger { id: 1, scale: 2, asset: asset("USD"), ..Default::default() },
                    Ledger { id: 2, scale: 2, asset: asset("EUR"), ..Default::default() },
                ]),
                1 => Just(vec![Ledger { id: 1, scale: 2, asset: asset("USD"), ..Default::default() }]),
            ],
            prop::collection::vec(
                (
                    prop_oneof![11 => Just(1u32), 1 => Just(2u32)],
                    (percent(25), percent(25), percent(40)),
                    prop_oneof![40 => Just(0u16), 1 => Just(AF::LINKED)],
                ),
                12,
            ),
            prop::collection::vec(entry_spec(k), 1..=max_entries),
            prop_oneof![
                4 => Just(IdShape::Small),
                1 => Just(IdShape::High),
                1 => Just(IdShape::Top),
                1 => Just(IdShape::Scrambled),
            ],
        )
            .prop_map(|(limits, start_clock, setup_ledgers, accounts, entries, shape)| {
                let setup_accounts = accounts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (ledger, (dmnec, cmned, history), linked))| {
                        let mut flags = linked;
                        if dmnec {
                            flags |= AF::DEBITS_MUST_NOT_EXCEED_CREDITS;
                        } else if cmned {
                            flags |= AF::CREDITS_MUST_NOT_EXCEED_DEBITS;
                        }
                        if history {
                            flags |= AF::HISTORY;
                        }
                        Account { id: i as u128 + 1, ledger, code: 1, flags, ..Default::default() }
                    })
                    .collect();
                let mut case = CaseSpec { limits, shape, start_clock, setup_ledgers, setup_accounts, entries };
                case.map_ids();
                case
            })
    })
}

impl TimeStep {
    /// Moves the node clock and returns the timestamp of the entry. The clock
    /// stays far enough below 2^64 that `last_timestamp + 1` never overflows.
    pub fn apply(self, clock: &mut u64, next_expiry: Option<u64>) -> u64 {
        const CEILING: u64 = u64::MAX - (1 << 40);
        match self {
            TimeStep::NearExpiry(d) => {
                if let Some(at) = next_expiry {
                    *clock = at.saturating_sub(d).min(CEILING);
                }
            }
            TimeStep::Nanos(d) => *clock = clock.saturating_add(d).min(CEILING),
            TimeStep::Seconds(s, j) => {
                *clock = clock.saturating_add(s * NANOS).saturating_add_signed(j).min(CEILING);
            }
            TimeStep::Back(d) => *clock = clock.saturating_sub(d),
            TimeStep::Zero => return 0,
        }
        *clock
    }
}

/// Ids are generated small (1, 2, 3, …) and then spread over the id space, so
/// that an index that looked at only some of an id's bits would be caught.
/// Zero and the maximum keep their meaning; the map is injective on the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdShape {
    Small,
    /// The high 64 bits repeat the low ones.
    High,
    /// Counting down from the maximum.
    Top,
    /// Multiplied by an odd constant (a bijection modulo 2^128).
    Scrambled,
}

impl IdShape {
    /// An account or transfer id.
    pub fn id(self, n: u128) -> u128 {
        if n == 0 || n == u128::MAX {
            return n;
        }
        let id = match self {
            IdShape::Small => n,
            IdShape::High => (n << 64) | n,
            IdShape::Top => u128::MAX - n,
            IdShape::Scrambled => n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
        };
        assert!(id != 0 && id != u128::MAX, "id shape {self:?} maps {n} to a reserved id");
        id
    }

    /// A ledger id.
    pub fn ledger(self, n: u32) -> u32 {
        if n == 0 || n == u32::MAX {
            return n;
        }
        let id = match self {
            IdShape::Small => n,
            IdShape::High => n | 0x8000_0000,
            IdShape::Top => u32::MAX - n,
            IdShape::Scrambled => n.wrapping_mul(0x9E37_79B9),
        };
        assert!(id != 0 && id != u32::MAX, "ledger shape {self:?} maps {n} to a reserved id");
        id
    }
}

impl CaseSpec {
    fn map_ids(&mut self) {
        let s = self.shape;
        for l in &mut self.setup_ledgers {
            l.id = s.ledger(l.id);
        }
        for a in &mut self.setup_accounts {
            a.id = s.id(a.id);
            a.ledger = s.ledger(a.ledger);
        }
        for e in &mut self.entries {
            for c in &mut e.commands {
                match c {
                    CmdSpec::Ledgers(v) => v.iter_mut().for_each(|l| l.id = s.ledger(l.id)),
                    CmdSpec::Accounts(v) => v.iter_mut().for_each(|a| {
                        a.account.id = s.id(a.account.id);
                        a.account.ledger = s.ledger(a.account.ledger);
                    }),
                    CmdSpec::Transfers(v) => v.iter_mut().for_each(|t| {
                        let t = &mut t.transfer;
                        t.id = s.id(t.id);
                        t.debit_account_id = s.id(t.debit_account_id);
                        t.credit_account_id = s.id(t.credit_account_id);
                        t.pending_id = s.id(t.pending_id);
                        t.ledger = s.ledger(t.ledger);
                    }),
                }
            }
            for q in &mut e.queries {
                q.account = s.id(q.account);
            }
        }
    }
}
