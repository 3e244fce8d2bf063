//! Who a binary protocol connection speaks for: the API key it
//! authenticated with, and what that key's role and ledgers allow. The
//! rules mirror the HTTP API's (see `docs/security/binary.md`).

use crate::message::OwnedEnvelope;
use bursar_core::Operation;
use bursar_core::records::{Account, Ledger, Transfer};
use bursar_core::service::keys::{ApiKey, Keys, Role};
use bursar_proto::{AuthReply, ProtocolError};
use std::sync::Arc;

/// Why a key may not send a request (the reply's message).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    #[error("the {role} role may not {operation}")]
    Role { role: &'static str, operation: &'static str },
    #[error("event {index}: a key restricted to ledgers must name the ledger of every event")]
    NoLedger { index: usize },
    #[error("event {index}: this key may not act on ledger {ledger}")]
    OutOfScope { index: usize, ledger: u32 },
}

/// An authenticated connection's key, as of the key table it was last
/// checked against.
#[derive(Clone)]
pub struct Session {
    key: ApiKey,
    checked_against: Arc<Keys>,
    /// The key's ledgers, shared with reply filters; `None`: every ledger.
    scope: Option<Arc<[u32]>>,
}

/// The one place that decides whether a stored key may be used: active
/// and not expired by the wall clock (as at the HTTP edge).
fn usable(key: &ApiKey) -> bool {
    key.is_usable_at(crate::clock::Clock::system().now_nanos())
}

/// Checks an authenticate body (the secret) against the key table. Any
/// bytes are safe here: they are length-checked, shape-checked and hashed.
pub fn authenticate(keys: &Arc<Keys>, secret: &[u8]) -> Result<Session, &'static str> {
    let token = std::str::from_utf8(secret).map_err(|_| "the secret is not UTF-8")?;
    if !crate::keys::token_is_plausible(token) {
        return Err("the secret is not a plausible API key");
    }
    match keys.by_hash(&crate::keys::token_hash(token)) {
        Some(key) if usable(key) => Ok(Session::new(key.clone(), keys.clone())),
        _ => Err("no active API key has this secret"),
    }
}

impl Session {
    fn new(key: ApiKey, checked_against: Arc<Keys>) -> Session {
        let scope = (!key.ledgers.is_empty()).then(|| Arc::from(key.ledgers.as_slice()));
        Session { key, checked_against, scope }
    }

    pub fn key_id(&self) -> u64 {
        self.key.id
    }

    pub fn scope(&self) -> Option<&Arc<[u32]>> {
        self.scope.as_ref()
    }

    pub fn reply(&self) -> AuthReply {
        AuthReply { key_id: self.key.id, role: self.key.role as u8, ledgers: self.key.ledgers.len() as u8 }
    }

    /// Follows key changes (revocation, expiry) made since the last check:
    /// cheap when the table is unchanged (one pointer comparison).
    pub fn refresh(&mut self, current: &Arc<Keys>) -> Result<(), &'static str> {
        if Arc::ptr_eq(&self.checked_against, current) {
            return Ok(());
        }
        match current.get(self.key.id) {
            Some(key) if usable(key) => {
                *self = Session::new(key.clone(), current.clone());
                Ok(())
            }
            _ => Err("the connection's API key was revoked"),
        }
    }

    /// Whether the key may send this request. Ledger scopes are checked on
    /// every event of a write (the whole request is refused if one is
    /// outside them) and on replies of reads (see [`filter_reply`]).
    pub fn authorize(&self, op: Operation, body: &[u8]) -> Result<(), Forbidden> {
        let role = self.key.role;
        let allowed = match op {
            // As over HTTP: ledgers are the admin's.
            Operation::CreateLedgers => role == Role::Admin,
            // Operators move money. Admin keys may too, because the binary
            // protocol cannot create keys: a node run without HTTP would
            // otherwise have no key that can write.
            Operation::CreateAccounts | Operation::CreateTransfers => matches!(role, Role::Operator | Role::Admin),
            _ if op.is_write() => false,
            _ => true,
        };
        if !allowed {
            return Err(Forbidden::Role { role: role.name(), operation: op.name() });
        }
        let Some(scope) = &self.scope else { return Ok(()) };
        let check = |i: usize, ledger: u32| {
            if ledger == 0 {
                Err(Forbidden::NoLedger { index: i })
            } else if scope.binary_search(&ledger).is_err() {
                Err(Forbidden::OutOfScope { index: i, ledger })
            } else {
                Ok(())
            }
        };
        match op {
            Operation::CreateAccounts => body
                .chunks_exact(Account::SIZE)
                .enumerate()
                .try_for_each(|(i, c)| check(i, bytemuck::pod_read_unaligned::<Account>(c).ledger)),
            Operation::CreateTransfers => body
                .chunks_exact(Transfer::SIZE)
                .enumerate()
                .try_for_each(|(i, c)| check(i, bytemuck::pod_read_unaligned::<Transfer>(c).ledger)),
            _ => Ok(()),
        }
    }

    /// The envelope a write is logged in, so its audit record names the key.
    pub fn envelope(&self, op: Operation) -> OwnedEnvelope {
        OwnedEnvelope { key_id: self.key.id, route: format!("BINARY {}", op.name()), ..Default::default() }
    }
}

/// Whether a scoped key's read must first learn the account's ledger: the
/// replies of account history queries do not say it.
pub fn needs_account_check(op: Operation) -> bool {
    matches!(op, Operation::GetAccountTransfers | Operation::GetAccountBalances)
}

/// Drops the records outside `scope` from a read's reply body; returns the
/// new body and count. Reads other than lookups and lists pass unchanged.
pub fn filter_reply(op: u8, body: &[u8], count: u32, scope: &[u32]) -> (Vec<u8>, u32) {
    let allowed = |ledger: u32| scope.binary_search(&ledger).is_ok();
    let (size, ledger_of): (usize, fn(&[u8]) -> u32) = match Operation::from_code(op) {
        Some(Operation::LookupAccounts) => (Account::SIZE, |c| bytemuck::pod_read_unaligned::<Account>(c).ledger),
        Some(Operation::LookupTransfers) => (Transfer::SIZE, |c| bytemuck::pod_read_unaligned::<Transfer>(c).ledger),
        Some(Operation::ListLedgers) => (Ledger::SIZE, |c| bytemuck::pod_read_unaligned::<Ledger>(c).id),
        _ => return (body.to_vec(), count),
    };
    let mut out = Vec::with_capacity(body.len());
    let mut kept = 0;
    for c in body.chunks_exact(size).filter(|c| allowed(ledger_of(c))) {
        out.extend_from_slice(c);
        kept += 1;
    }
    (out, kept)
}

/// The error for requests that arrive before a successful authenticate.
pub fn unauthenticated() -> (ProtocolError, &'static str) {
    (ProtocolError::Unauthenticated, "authenticate with an API key first")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bursar_core::service::keys::KeyEvent;

    fn table(keys: &[(u64, &str, Role, &[u32])]) -> Arc<Keys> {
        let mut t = Keys::default();
        for (id, token, role, ledgers) in keys {
            let e = KeyEvent::new(*id, crate::keys::token_hash(token), *role, ledgers, "t").unwrap();
            assert_eq!(t.create(&e, 1, |_| true).code(), 0);
        }
        Arc::new(t)
    }

    #[test]
    fn random_secrets_never_panic_and_never_authenticate() {
        let keys = table(&[(1, "operator-secret-0123456789", Role::Operator, &[])]);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (state >> (i % 57)) as u8).collect();
            assert!(authenticate(&keys, &bytes).is_err());
        }
        assert_eq!(authenticate(&keys, b"operator-secret-0123456789").unwrap().key_id(), 1);
    }

    #[test]
    fn roles_and_scopes_are_enforced() {
        let keys = table(&[
            (1, "auditor-secret-0123456789", Role::Auditor, &[]),
            (2, "scoped-secret-01234567890", Role::Operator, &[7]),
        ]);
        let auditor = authenticate(&keys, b"auditor-secret-0123456789").unwrap();
        assert!(auditor.authorize(Operation::CreateTransfers, &[]).is_err());
        assert!(auditor.authorize(Operation::LookupAccounts, &[]).is_ok());
        let scoped = authenticate(&keys, b"scoped-secret-01234567890").unwrap();
        assert!(scoped.authorize(Operation::CreateLedgers, &[]).is_err());
        let t = |ledger| Transfer { ledger, ..Default::default() };
        let ok = bursar_core::records::encode_all(&[t(7), t(7)]).to_vec();
        assert!(scoped.authorize(Operation::CreateTransfers, &ok).is_ok());
        let bad = bursar_core::records::encode_all(&[t(7), t(8)]).to_vec();
        assert!(scoped.authorize(Operation::CreateTransfers, &bad).unwrap_err().to_string().starts_with("event 1:"));
        let (body, count) = filter_reply(Operation::LookupTransfers as u8, &bad, 2, &[7]);
        assert_eq!((body.len(), count), (Transfer::SIZE, 1));
    }
}
