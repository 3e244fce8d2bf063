//! Stable result codes. The numbers and names never change meaning once
//! released; new codes are appended. Within each enum the codes are listed in
//! the order the state machine checks them, so the first failing check is the
//! one reported. `docs/result-codes.md` is generated from these tables.

use bytemuck::{Pod, Zeroable};

macro_rules! result_codes {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $value:literal => $doc:literal,)* }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $(#[doc = $doc] $variant = $value,)*
        }

        impl $name {
            /// Every code, in check order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn code(self) -> u32 {
                self as u32
            }

            pub fn from_code(code: u32) -> Option<Self> {
                match code {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The stable snake_case name used in APIs and logs.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $crate::codes::result_codes!(@snake $variant),)*
                }
            }

            pub fn description(self) -> &'static str {
                match self {
                    $($name::$variant => $doc,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
    (@snake $variant:ident) => {{
        const NAME: &str = stringify!($variant);
        const LEN: usize = $crate::codes::snake_len(NAME);
        const BYTES: [u8; LEN] = $crate::codes::snake_bytes::<LEN>(NAME);
        match std::str::from_utf8(&BYTES) {
            Ok(s) => s,
            Err(_) => unreachable!(),
        }
    }};
}

pub(crate) use result_codes;

/// Length of the snake_case form of a CamelCase identifier.
pub(crate) const fn snake_len(name: &str) -> usize {
    let b = name.as_bytes();
    let mut len = 0;
    let mut i = 0;
    while i < b.len() {
        if starts_word(b, i) {
            len += 1;
        }
        len += 1;
        i += 1;
    }
    len
}

/// A new word starts at an upper-case letter or at the first digit of a run.
const fn starts_word(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i].is_ascii_uppercase() || (b[i].is_ascii_digit() && !b[i - 1].is_ascii_digit()))
}

/// The snake_case form of a CamelCase identifier ("UserData128" → "user_data_128").
pub(crate) const fn snake_bytes<const N: usize>(name: &str) -> [u8; N] {
    let b = name.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    let mut o = 0;
    while i < b.len() {
        if starts_word(b, i) {
            out[o] = b'_';
            o += 1;
        }
        out[o] = b[i].to_ascii_lowercase();
        o += 1;
        i += 1;
    }
    out
}

result_codes! {
    /// Outcome of creating one ledger.
    CreateLedgerResult {
        Ok = 0 => "The ledger was created.",
        TimestampMustBeZero = 1 => "The timestamp is assigned by the engine and must be zero.",
        ReservedField = 2 => "A reserved field is not zero.",
        IdMustNotBeZero = 3 => "The ledger id must not be zero.",
        AssetInvalid = 4 => "The asset code must be 1 to 16 characters of A-Z, 0-9, '_', '-', '.', starting with a letter.",
        ScaleInvalid = 5 => "The scale must be between 0 and 38.",
        ExistsWithDifferentAsset = 6 => "A ledger with this id exists with a different asset.",
        ExistsWithDifferentScale = 7 => "A ledger with this id exists with a different scale.",
        Exists = 8 => "An identical ledger exists; nothing was changed.",
        LedgersLimitReached = 9 => "The engine holds the maximum number of ledgers.",
    }
}

result_codes! {
    /// Outcome of creating one account.
    CreateAccountResult {
        Ok = 0 => "The account was created.",
        LinkedEventFailed = 1 => "Another event in this linked chain failed, so this one was not applied.",
        LinkedEventChainOpen = 2 => "The last event of the batch has the linked flag: the chain is never closed.",
        TimestampMustBeZero = 3 => "The timestamp is assigned by the engine and must be zero.",
        ReservedField = 4 => "A reserved field is not zero.",
        ReservedFlag = 5 => "An unknown flag is set.",
        IdMustNotBeZero = 6 => "The account id must not be zero.",
        IdMustNotBeIntMax = 7 => "The account id must not be 2^128 - 1.",
        FlagsAreMutuallyExclusive = 8 => "debits_must_not_exceed_credits and credits_must_not_exceed_debits cannot both be set.",
        DebitsPendingMustBeZero = 9 => "Balances start at zero: debits_pending must be zero.",
        DebitsPostedMustBeZero = 10 => "Balances start at zero: debits_posted must be zero.",
        CreditsPendingMustBeZero = 11 => "Balances start at zero: credits_pending must be zero.",
        CreditsPostedMustBeZero = 12 => "Balances start at zero: credits_posted must be zero.",
        LedgerMustNotBeZero = 13 => "The ledger must not be zero.",
        CodeMustNotBeZero = 14 => "The account code must not be zero.",
        ExistsWithDifferentFlags = 15 => "An account with this id exists with different flags.",
        ExistsWithDifferentUserData128 = 16 => "An account with this id exists with a different user_data_128.",
        ExistsWithDifferentUserData64 = 17 => "An account with this id exists with a different user_data_64.",
        ExistsWithDifferentUserData32 = 18 => "An account with this id exists with a different user_data_32.",
        ExistsWithDifferentLedger = 19 => "An account with this id exists with a different ledger.",
        ExistsWithDifferentCode = 20 => "An account with this id exists with a different code.",
        Exists = 21 => "An identical account exists; nothing was changed.",
        LedgerNotFound = 22 => "The ledger does not exist.",
        AccountsLimitReached = 23 => "The engine holds the maximum number of accounts.",
    }
}

result_codes! {
    /// Outcome of creating one transfer.
    CreateTransferResult {
        Ok = 0 => "The transfer was applied.",
        LinkedEventFailed = 1 => "Another event in this linked chain failed, so this one was not applied.",
        LinkedEventChainOpen = 2 => "The last event of the batch has the linked flag: the chain is never closed.",
        TimestampMustBeZero = 3 => "The timestamp is assigned by the engine and must be zero.",
        ReservedFlag = 4 => "An unknown flag is set.",
        IdMustNotBeZero = 5 => "The transfer id must not be zero.",
        IdMustNotBeIntMax = 6 => "The transfer id must not be 2^128 - 1.",
        FlagsAreMutuallyExclusive = 7 => "The flags combine kinds of transfer that exclude each other (pending, post, void, balancing, closing).",
        DebitAccountIdMustNotBeZero = 8 => "The debit account id must not be zero.",
        DebitAccountIdMustNotBeIntMax = 9 => "The debit account id must not be 2^128 - 1.",
        CreditAccountIdMustNotBeZero = 10 => "The credit account id must not be zero.",
        CreditAccountIdMustNotBeIntMax = 11 => "The credit account id must not be 2^128 - 1.",
        AccountsMustBeDifferent = 12 => "The debit and credit accounts must differ.",
        PendingIdMustBeZero = 13 => "Only post and void transfers take a pending_id.",
        PendingIdMustNotBeZero = 14 => "A post or void transfer needs the pending_id it settles.",
        PendingIdMustNotBeIntMax = 15 => "The pending_id must not be 2^128 - 1.",
        PendingIdMustBeDifferent = 16 => "The pending_id must differ from the transfer's own id.",
        TimeoutReservedForPendingTransfer = 17 => "Only pending transfers take a timeout.",
        ClosingTransferMustBePending = 18 => "closing_debit and closing_credit need the pending flag.",
        LedgerMustNotBeZero = 19 => "The ledger must not be zero.",
        CodeMustNotBeZero = 20 => "The transfer code must not be zero.",
        ExistsWithDifferentFlags = 21 => "A transfer with this id exists with different flags.",
        ExistsWithDifferentPendingId = 22 => "A transfer with this id exists with a different pending_id.",
        ExistsWithDifferentTimeout = 23 => "A transfer with this id exists with a different timeout.",
        ExistsWithDifferentDebitAccountId = 24 => "A transfer with this id exists with a different debit account.",
        ExistsWithDifferentCreditAccountId = 25 => "A transfer with this id exists with a different credit account.",
        ExistsWithDifferentAmount = 26 => "A transfer with this id exists with a different amount.",
        ExistsWithDifferentUserData128 = 27 => "A transfer with this id exists with a different user_data_128.",
        ExistsWithDifferentUserData64 = 28 => "A transfer with this id exists with a different user_data_64.",
        ExistsWithDifferentUserData32 = 29 => "A transfer with this id exists with a different user_data_32.",
        ExistsWithDifferentLedger = 30 => "A transfer with this id exists with a different ledger.",
        ExistsWithDifferentCode = 31 => "A transfer with this id exists with a different code.",
        Exists = 32 => "An identical transfer exists; nothing was applied again.",
        IdAlreadyFailed = 33 => "A transfer with this id was rejected before; ids are never reused, pick a new one.",
        DebitAccountNotFound = 34 => "The debit account does not exist.",
        CreditAccountNotFound = 35 => "The credit account does not exist.",
        AccountsMustHaveTheSameLedger = 36 => "The debit and credit accounts are on different ledgers.",
        TransferMustHaveTheSameLedgerAsAccounts = 37 => "The transfer's ledger differs from its accounts' ledger.",
        PendingTransferNotFound = 38 => "The pending transfer does not exist.",
        PendingTransferNotPending = 39 => "The transfer named by pending_id is not a pending transfer.",
        PendingTransferHasDifferentDebitAccountId = 40 => "The debit account differs from the pending transfer's.",
        PendingTransferHasDifferentCreditAccountId = 41 => "The credit account differs from the pending transfer's.",
        PendingTransferHasDifferentLedger = 42 => "The ledger differs from the pending transfer's.",
        PendingTransferHasDifferentCode = 43 => "The code differs from the pending transfer's.",
        ExceedsPendingTransferAmount = 44 => "The amount to post exceeds the pending amount.",
        PendingTransferHasDifferentAmount = 45 => "A void must name the full pending amount (or 0).",
        PendingTransferAlreadyPosted = 46 => "The pending transfer was already posted.",
        PendingTransferAlreadyVoided = 47 => "The pending transfer was already voided.",
        PendingTransferExpired = 48 => "The pending transfer expired.",
        DebitAccountClosed = 49 => "The debit account is closed.",
        CreditAccountClosed = 50 => "The credit account is closed.",
        OverflowsDebitsPending = 51 => "The debit account's debits_pending would overflow.",
        OverflowsCreditsPending = 52 => "The credit account's credits_pending would overflow.",
        OverflowsDebitsPosted = 53 => "The debit account's debits_posted would overflow.",
        OverflowsCreditsPosted = 54 => "The credit account's credits_posted would overflow.",
        OverflowsDebits = 55 => "The debit account's pending plus posted debits would overflow.",
        OverflowsCredits = 56 => "The credit account's pending plus posted credits would overflow.",
        OverflowsTimeout = 57 => "The pending transfer's expiry time would overflow.",
        ExceedsCredits = 58 => "The debit account's debits would exceed its credits.",
        ExceedsDebits = 59 => "The credit account's credits would exceed its debits.",
        TransfersLimitReached = 60 => "The engine holds the maximum number of transfers.",
    }
}

impl CreateTransferResult {
    /// Rejections that depend on state rather than on the transfer alone. The
    /// id of such a transfer is recorded, so a retry of the same id reports
    /// `IdAlreadyFailed` instead of succeeding later when the state changed.
    pub fn burns_id(self) -> bool {
        let code = self.code();
        (CreateTransferResult::DebitAccountNotFound.code()..=CreateTransferResult::ExceedsDebits.code()).contains(&code)
    }
}

/// The outcome of one event that was not `ok` (results are sparse: events
/// that succeeded are not listed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EventResult {
    /// Index of the event within its command.
    pub index: u32,
    /// The result code of the command's operation.
    pub code: u32,
}

impl EventResult {
    pub const SIZE: usize = 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_snake_case_and_codes_round_trip() {
        assert_eq!(CreateTransferResult::ExistsWithDifferentUserData128.name(), "exists_with_different_user_data_128");
        assert_eq!(CreateTransferResult::Ok.name(), "ok");
        assert_eq!(CreateAccountResult::LinkedEventChainOpen.name(), "linked_event_chain_open");
        for (i, c) in CreateTransferResult::ALL.iter().enumerate() {
            assert_eq!(c.code() as usize, i, "codes are dense and in check order");
            assert_eq!(CreateTransferResult::from_code(c.code()), Some(*c));
        }
        for (i, c) in CreateAccountResult::ALL.iter().enumerate() {
            assert_eq!(c.code() as usize, i);
        }
        for (i, c) in CreateLedgerResult::ALL.iter().enumerate() {
            assert_eq!(c.code() as usize, i);
        }
        assert!(CreateTransferResult::from_code(999).is_none());
    }

    #[test]
    fn only_state_dependent_rejections_burn_ids() {
        assert!(CreateTransferResult::ExceedsCredits.burns_id());
        assert!(CreateTransferResult::DebitAccountNotFound.burns_id());
        assert!(!CreateTransferResult::Exists.burns_id());
        assert!(!CreateTransferResult::LinkedEventFailed.burns_id());
        assert!(!CreateTransferResult::IdMustNotBeZero.burns_id());
        assert!(!CreateTransferResult::TransfersLimitReached.burns_id());
    }
}
