//! Operations and the encoding of a log entry's body: the commands the state
//! machine applies, in order.
//!
//! ```text
//! body    := command*
//! command := operation u8 | reserved [u8; 3] | count u32 (LE) | count × event
//! ```

use crate::records::{Account, AccountFilter, BATCH_EVENTS_MAX, Ledger, LedgerFilter, Transfer};

/// Every operation a client can ask for. Codes are stable.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    CreateLedgers = 1,
    CreateAccounts = 2,
    CreateTransfers = 3,
    ListLedgers = 16,
    LookupAccounts = 17,
    LookupTransfers = 18,
    GetAccountTransfers = 19,
    GetAccountBalances = 20,
}

impl Operation {
    pub const ALL: &'static [Operation] = &[
        Operation::CreateLedgers,
        Operation::CreateAccounts,
        Operation::CreateTransfers,
        Operation::ListLedgers,
        Operation::LookupAccounts,
        Operation::LookupTransfers,
        Operation::GetAccountTransfers,
        Operation::GetAccountBalances,
    ];

    pub fn from_code(code: u8) -> Option<Operation> {
        Operation::ALL.iter().copied().find(|op| *op as u8 == code)
    }

    /// Writes go through the log; reads are answered from the applied state.
    pub fn is_write(self) -> bool {
        matches!(self, Operation::CreateLedgers | Operation::CreateAccounts | Operation::CreateTransfers)
    }

    /// Size of one event in a request body.
    pub fn event_size(self) -> usize {
        match self {
            Operation::CreateLedgers => Ledger::SIZE,
            Operation::CreateAccounts => Account::SIZE,
            Operation::CreateTransfers => Transfer::SIZE,
            Operation::ListLedgers => LedgerFilter::SIZE,
            Operation::LookupAccounts | Operation::LookupTransfers => 16,
            Operation::GetAccountTransfers | Operation::GetAccountBalances => AccountFilter::SIZE,
        }
    }

    /// Largest number of events in one request.
    pub fn events_max(self) -> usize {
        match self {
            Operation::ListLedgers | Operation::GetAccountTransfers | Operation::GetAccountBalances => 1,
            _ => BATCH_EVENTS_MAX,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateLedgers => "create_ledgers",
            Operation::CreateAccounts => "create_accounts",
            Operation::CreateTransfers => "create_transfers",
            Operation::ListLedgers => "list_ledgers",
            Operation::LookupAccounts => "lookup_accounts",
            Operation::LookupTransfers => "lookup_transfers",
            Operation::GetAccountTransfers => "get_account_transfers",
            Operation::GetAccountBalances => "get_account_balances",
        }
    }
}

/// One write command: an operation and its events as raw little-endian bytes.
#[derive(Clone, Copy, Debug)]
pub struct Command<'a> {
    pub operation: Operation,
    pub events: &'a [u8],
}

impl<'a> Command<'a> {
    pub const HEADER_SIZE: usize = 8;

    pub fn count(&self) -> usize {
        self.events.len() / self.operation.event_size()
    }

    /// The 8-byte header that precedes the events in a log entry body.
    pub fn header(&self) -> [u8; 8] {
        let mut h = [0u8; 8];
        h[0] = self.operation as u8;
        h[4..8].copy_from_slice(&(self.count() as u32).to_le_bytes());
        h
    }

    /// Checks that a write command is well formed: a write operation and a
    /// whole number of events, at most a batch.
    pub fn validate(&self) -> Result<(), String> {
        let size = self.operation.event_size();
        if !self.operation.is_write() {
            return Err(format!("{} is not a write operation", self.operation.name()));
        }
        if !self.events.len().is_multiple_of(size) {
            return Err(format!("{} bytes is not a whole number of {}-byte events", self.events.len(), size));
        }
        if self.count() > BATCH_EVENTS_MAX {
            return Err(format!("{} events exceed the batch limit of {BATCH_EVENTS_MAX}", self.count()));
        }
        Ok(())
    }
}

/// Appends the encoding of `command` to `body`.
pub fn encode_command(body: &mut Vec<u8>, command: &Command<'_>) {
    body.extend_from_slice(&command.header());
    body.extend_from_slice(command.events);
}

/// Decodes a log entry body into its commands.
pub fn decode_body(body: &[u8]) -> Result<Vec<Command<'_>>, String> {
    let mut commands = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if rest.len() < Command::HEADER_SIZE {
            return Err(format!("{} trailing bytes are shorter than a command header", rest.len()));
        }
        let operation = Operation::from_code(rest[0]).ok_or_else(|| format!("unknown operation code {}", rest[0]))?;
        if rest[1..4] != [0, 0, 0] {
            return Err("reserved command header bytes are not zero".into());
        }
        let count = u32::from_le_bytes(rest[4..8].try_into().expect("4-byte slice")) as usize;
        if count > BATCH_EVENTS_MAX {
            return Err(format!("command of {count} events exceeds the batch limit"));
        }
        let len = count * operation.event_size();
        let events = rest[Command::HEADER_SIZE..]
            .get(..len)
            .ok_or_else(|| format!("command declares {count} events but the body ends early"))?;
        let command = Command { operation, events };
        command.validate()?;
        commands.push(command);
        rest = &rest[Command::HEADER_SIZE + len..];
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::encode_all;

    #[test]
    fn body_round_trip_and_rejects_damage() {
        let transfers = vec![Transfer { id: 1, ..Default::default() }, Transfer { id: 2, ..Default::default() }];
        let accounts = vec![Account { id: 3, ..Default::default() }];
        let mut body = Vec::new();
        encode_command(&mut body, &Command { operation: Operation::CreateAccounts, events: encode_all(&accounts) });
        encode_command(&mut body, &Command { operation: Operation::CreateTransfers, events: encode_all(&transfers) });
        let commands = decode_body(&body).unwrap();
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[0].operation, Operation::CreateAccounts);
        assert_eq!(commands[1].count(), 2);
        assert!(decode_body(&body[..body.len() - 1]).is_err());
        let mut bad = body.clone();
        bad[0] = Operation::LookupAccounts as u8;
        assert!(decode_body(&bad).is_err(), "reads are never logged");
        bad[0] = 99;
        assert!(decode_body(&bad).is_err());
        assert!(decode_body(&[]).unwrap().is_empty());
    }
}
