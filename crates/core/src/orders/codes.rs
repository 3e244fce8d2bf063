//! Result codes of order commands, stable like the ledger's, listed in the
//! order they are checked.

crate::codes::result_codes! {
    /// Outcome of creating one order.
    CreateOrderResult {
        Ok = 0 => "The order was created.",
        IdMustNotBeZero = 1 => "The order id is zero.",
        IdMustNotBeIntMax = 2 => "The order id is 2^128 - 1.",
        CustomerIdMustNotBeZero = 3 => "The customer id is zero.",
        FlagsAreInvalid = 4 => "A flag outside the defined ones is set.",
        ReservedFieldMustBeZero = 5 => "A reserved field is not zero.",
        SourceAmountMustNotBeZero = 6 => "The source amount is zero.",
        FeeMustBeLessThanAmount = 7 => "The fee is not less than the source amount.",
        FundsTimeoutMustNotBeZero = 8 => "The funds timeout is zero.",
        ReviewTimeoutMustNotBeZero = 9 => "The review timeout is zero.",
        PiiLengthInvalid = 10 => "The personal data is empty, longer than its slot, or not zero padded.",
        Exists = 11 => "An order with this id and these fields exists (personal data is not compared: it is encrypted with a fresh nonce each time).",
        ExistsWithDifferentFields = 12 => "An order with this id exists with different fields.",
        SourceLedgerNotFound = 13 => "The source ledger does not exist.",
        TargetLedgerNotFound = 14 => "The target ledger does not exist.",
        OrdersLimitReached = 15 => "The state machine holds the most open orders it may (OPEN_ORDERS_MAX); final orders do not count.",
        LedgerRejected = 16 => "The order's ledger accounts could not be created (an account id is taken with other fields).",
    }
}

crate::codes::result_codes! {
    /// Outcome of one order command.
    OrderCommandResult {
        Ok = 0 => "The command was applied.",
        OrderIdMustNotBeZero = 1 => "The order id is zero.",
        KindInvalid = 2 => "The command kind is not a defined one.",
        ReservedFieldMustBeZero = 3 => "A reserved field is not zero.",
        ReasonInvalid = 4 => "The reason is longer than 128 bytes, not UTF-8, or not zero padded.",
        ActorInvalid = 5 => "The actor is not one the sender may act as.",
        OrderNotFound = 6 => "No order has this id.",
        OrderIsCreated = 7 => "The command is not allowed while the order is created.",
        OrderIsAwaitingFunds = 8 => "The command is not allowed while the order awaits funds.",
        OrderIsFundsReceived = 9 => "The command is not allowed once funds are received and not yet screened.",
        OrderIsScreening = 10 => "The command is not allowed while the order is being screened.",
        OrderIsOnHold = 11 => "The command is not allowed while the order is on hold for review.",
        OrderIsApproved = 12 => "The command is not allowed while the order is approved.",
        OrderIsFxLocked = 13 => "The command is not allowed once the FX rate is locked.",
        OrderIsPayoutSent = 14 => "The command is not allowed once the payout is sent.",
        OrderIsCompleted = 15 => "The order is completed.",
        OrderIsCancelled = 16 => "The order is cancelled.",
        OrderIsRejected = 17 => "The order is rejected.",
        OrderIsRefunded = 18 => "The order is refunded.",
        OrderIsExpired = 19 => "The order is expired.",
        OrderIsFailed = 20 => "The order is failed.",
        AmountMustEqualOrder = 21 => "The funds received differ from the order's source amount.",
        VerdictInvalid = 22 => "The verdict is not one this command takes.",
        RateMustNotBeZero = 23 => "The FX rate is zero.",
        QuoteExpired = 24 => "The FX quote expired before it was applied.",
        TargetAmountOverflows = 25 => "The converted amount does not fit in 128 bits.",
        TargetAmountMustNotBeZero = 26 => "The converted amount rounds down to zero.",
        PayoutNotDue = 27 => "The order's scheduled payout time has not come.",
        LedgerRejected = 28 => "The ledger refused the order's transfers (see the order's events for the transfer's code).",
        MakerChecker = 29 => "The API key that created the order may not review it (checked after the state and the verdict, before any transfer).",
    }
}

impl OrderCommandResult {
    /// The code that names a state a command is not allowed in.
    pub fn in_state(state: super::OrderState) -> OrderCommandResult {
        use super::OrderState as S;
        match state {
            S::Created => OrderCommandResult::OrderIsCreated,
            S::AwaitingFunds => OrderCommandResult::OrderIsAwaitingFunds,
            S::FundsReceived => OrderCommandResult::OrderIsFundsReceived,
            S::Screening => OrderCommandResult::OrderIsScreening,
            S::OnHold => OrderCommandResult::OrderIsOnHold,
            S::Approved => OrderCommandResult::OrderIsApproved,
            S::FxLocked => OrderCommandResult::OrderIsFxLocked,
            S::PayoutSent => OrderCommandResult::OrderIsPayoutSent,
            S::Completed => OrderCommandResult::OrderIsCompleted,
            S::Cancelled => OrderCommandResult::OrderIsCancelled,
            S::Rejected => OrderCommandResult::OrderIsRejected,
            S::Refunded => OrderCommandResult::OrderIsRefunded,
            S::Expired => OrderCommandResult::OrderIsExpired,
            S::Failed => OrderCommandResult::OrderIsFailed,
        }
    }
}
