//! API keys: only a hash of each secret is ever stored (or logged). The
//! HTTP layer generates the secret and the key id; the state machine checks
//! and records them, so keys replicate and survive restarts like any other
//! state.

use bytemuck::{Pod, Zeroable};
use std::collections::BTreeMap;

/// Most ledgers one key may be restricted to.
pub const KEY_LEDGERS_MAX: usize = 32;
/// Longest key name, in bytes.
pub const KEY_NAME_MAX: usize = 64;
/// Most keys (active and revoked) the engine keeps.
pub const KEYS_MAX: usize = 10_000;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Manages keys and ledgers.
    Admin = 1,
    /// Creates accounts and transfers.
    Operator = 2,
    /// Reads everything, including the audit trail; writes nothing.
    Auditor = 3,
    /// Reviews orders on hold; reads orders (personal data included), the
    /// audit trail and the access log; moves no money, manages no keys.
    /// Code 4 was refused before this role existed (and the HTTP edge only
    /// ever logged the codes of named roles), so no old entry changes meaning.
    Compliance = 4,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Auditor, Role::Compliance];

    pub fn from_code(code: u8) -> Option<Role> {
        Role::ALL.iter().copied().find(|r| *r as u8 == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Compliance => "compliance",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.iter().copied().find(|r| r.name() == name)
    }
}

/// The create-key event as logged: 256 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct KeyEvent {
    /// Public id, chosen at random by the HTTP layer; never zero.
    pub id: u64,
    pub role: u8,
    pub ledger_count: u8,
    pub name_len: u8,
    pub reserved0: u8,
    pub reserved1: u32,
    /// blake3 of the whole secret token.
    pub hash: [u8; 32],
    /// The ledgers the key is restricted to (first `ledger_count`); none
    /// means every ledger.
    pub ledgers: [u32; KEY_LEDGERS_MAX],
    pub name: [u8; KEY_NAME_MAX],
    pub reserved: [u8; 16],
}

impl KeyEvent {
    pub const SIZE: usize = 256;

    pub fn new(id: u64, hash: [u8; 32], role: Role, ledgers: &[u32], name: &str) -> Option<KeyEvent> {
        if ledgers.len() > KEY_LEDGERS_MAX || name.len() > KEY_NAME_MAX {
            return None;
        }
        let mut e = KeyEvent::zeroed();
        e.id = id;
        e.role = role as u8;
        e.hash = hash;
        e.ledger_count = ledgers.len() as u8;
        e.ledgers[..ledgers.len()].copy_from_slice(ledgers);
        e.name_len = name.len() as u8;
        e.name[..name.len()].copy_from_slice(name.as_bytes());
        Some(e)
    }
}

/// The revoke-key event as logged.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RevokeEvent {
    pub id: u64,
    pub reserved: u64,
}

impl RevokeEvent {
    pub const SIZE: usize = 16;
}

const _: () = assert!(std::mem::size_of::<KeyEvent>() == KeyEvent::SIZE);
const _: () = assert!(std::mem::size_of::<RevokeEvent>() == RevokeEvent::SIZE);

/// A stored key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: u64,
    pub hash: [u8; 32],
    pub role: Role,
    /// Sorted; empty means every ledger.
    pub ledgers: Vec<u32>,
    pub name: String,
    pub created_at: u64,
    /// Zero while the key is active.
    pub revoked_at: u64,
}

impl ApiKey {
    pub fn is_active(&self) -> bool {
        self.revoked_at == 0
    }

    /// Whether the key may act on `ledger`.
    pub fn allows_ledger(&self, ledger: u32) -> bool {
        self.ledgers.is_empty() || self.ledgers.binary_search(&ledger).is_ok()
    }
}

crate::codes::result_codes! {
    /// Outcome of creating one API key.
    CreateKeyResult {
        Ok = 0 => "The key was created.",
        ReservedField = 1 => "A reserved field is not zero.",
        IdMustNotBeZero = 2 => "The key id must not be zero.",
        RoleInvalid = 3 => "The role must be admin, operator, auditor or compliance.",
        LedgersInvalid = 4 => "Ledger restrictions must be at most 32 distinct nonzero existing ledgers, and admin keys cannot be restricted.",
        NameInvalid = 5 => "The name must be at most 64 bytes of printable UTF-8.",
        IdExists = 6 => "A key with this id exists.",
        SecretExists = 7 => "A key with this secret exists.",
        KeysLimitReached = 8 => "The engine holds the maximum number of keys.",
    }
}

crate::codes::result_codes! {
    /// Outcome of revoking one API key.
    RevokeKeyResult {
        Ok = 0 => "The key was revoked.",
        ReservedField = 1 => "A reserved field is not zero.",
        KeyNotFound = 2 => "No key has this id.",
        AlreadyRevoked = 3 => "The key was already revoked.",
        LastAdminKey = 4 => "The last active admin key cannot be revoked.",
    }
}

#[derive(Clone, Default)]
pub struct Keys {
    by_id: BTreeMap<u64, ApiKey>,
    by_hash: BTreeMap<[u8; 32], u64>,
}

impl Keys {
    pub fn get(&self, id: u64) -> Option<&ApiKey> {
        self.by_id.get(&id)
    }

    pub fn by_hash(&self, hash: &[u8; 32]) -> Option<&ApiKey> {
        self.by_hash.get(hash).and_then(|id| self.by_id.get(id))
    }

    pub fn iter(&self) -> impl Iterator<Item = &ApiKey> + '_ {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn active_admins(&self) -> usize {
        self.by_id.values().filter(|k| k.role == Role::Admin && k.is_active()).count()
    }

    /// Checks in the order of `CreateKeyResult`. `ledger_exists` tells
    /// whether a ledger id exists.
    pub fn create(&mut self, e: &KeyEvent, timestamp: u64, ledger_exists: impl Fn(u32) -> bool) -> CreateKeyResult {
        use CreateKeyResult as R;
        if e.reserved0 != 0 || e.reserved1 != 0 || e.reserved != [0; 16] {
            return R::ReservedField;
        }
        if e.id == 0 {
            return R::IdMustNotBeZero;
        }
        let Some(role) = Role::from_code(e.role) else { return R::RoleInvalid };
        let Some(ledgers) = key_ledgers(e, role, &ledger_exists) else { return R::LedgersInvalid };
        let Some(name) = key_name(e) else { return R::NameInvalid };
        if self.by_id.contains_key(&e.id) {
            return R::IdExists;
        }
        if self.by_hash.contains_key(&e.hash) {
            return R::SecretExists;
        }
        if self.by_id.len() >= KEYS_MAX {
            return R::KeysLimitReached;
        }
        let key = ApiKey { id: e.id, hash: e.hash, role, ledgers, name, created_at: timestamp, revoked_at: 0 };
        self.by_hash.insert(key.hash, key.id);
        self.by_id.insert(key.id, key);
        R::Ok
    }

    pub fn revoke(&mut self, e: &RevokeEvent, timestamp: u64) -> RevokeKeyResult {
        use RevokeKeyResult as R;
        if e.reserved != 0 {
            return R::ReservedField;
        }
        let admins = self.active_admins();
        let Some(key) = self.by_id.get_mut(&e.id) else { return R::KeyNotFound };
        if !key.is_active() {
            return R::AlreadyRevoked;
        }
        if key.role == Role::Admin && admins <= 1 {
            return R::LastAdminKey;
        }
        key.revoked_at = timestamp;
        R::Ok
    }

    /// Undo of a create within a failed linked chain is not needed: key
    /// commands are not linked. Used by restore.
    pub(crate) fn insert_restored(&mut self, key: ApiKey) -> Result<(), String> {
        if key.id == 0 || self.by_id.contains_key(&key.id) || self.by_hash.contains_key(&key.hash) {
            return Err(format!("key {} is invalid or stored twice", key.id));
        }
        self.by_hash.insert(key.hash, key.id);
        self.by_id.insert(key.id, key);
        Ok(())
    }
}

fn key_ledgers(e: &KeyEvent, role: Role, exists: &impl Fn(u32) -> bool) -> Option<Vec<u32>> {
    let count = e.ledger_count as usize;
    if count > KEY_LEDGERS_MAX || (role == Role::Admin && count > 0) || e.ledgers[count..].iter().any(|&l| l != 0) {
        return None;
    }
    let mut ledgers = e.ledgers[..count].to_vec();
    ledgers.sort_unstable();
    ledgers.dedup();
    (ledgers.len() == count && ledgers.iter().all(|&l| l != 0 && exists(l))).then_some(ledgers)
}

fn key_name(e: &KeyEvent) -> Option<String> {
    let len = e.name_len as usize;
    if len > KEY_NAME_MAX || e.name[len..].iter().any(|&b| b != 0) {
        return None;
    }
    let name = std::str::from_utf8(&e.name[..len]).ok()?;
    (!name.chars().any(char::is_control)).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64, secret: u8, role: Role, ledgers: &[u32]) -> KeyEvent {
        KeyEvent::new(id, [secret; 32], role, ledgers, "ci").unwrap()
    }

    #[test]
    fn create_checks_and_revoke_protects_the_last_admin() {
        let mut keys = Keys::default();
        let exists = |l: u32| l == 1 || l == 2;
        assert_eq!(keys.create(&event(1, 1, Role::Admin, &[]), 10, exists), CreateKeyResult::Ok);
        assert_eq!(keys.create(&event(1, 2, Role::Operator, &[]), 11, exists), CreateKeyResult::IdExists);
        assert_eq!(keys.create(&event(2, 1, Role::Operator, &[]), 11, exists), CreateKeyResult::SecretExists);
        assert_eq!(keys.create(&event(2, 2, Role::Admin, &[1]), 11, exists), CreateKeyResult::LedgersInvalid);
        assert_eq!(keys.create(&event(2, 2, Role::Operator, &[3]), 11, exists), CreateKeyResult::LedgersInvalid);
        assert_eq!(keys.create(&event(2, 2, Role::Operator, &[2, 1]), 11, exists), CreateKeyResult::Ok);
        assert_eq!(keys.get(2).unwrap().ledgers, vec![1, 2]);
        assert!(keys.get(2).unwrap().allows_ledger(2) && !keys.get(2).unwrap().allows_ledger(3));
        let mut bad = event(3, 3, Role::Auditor, &[]);
        bad.role = 9;
        assert_eq!(keys.create(&bad, 12, exists), CreateKeyResult::RoleInvalid);
        assert_eq!(keys.revoke(&RevokeEvent { id: 1, reserved: 0 }, 20), RevokeKeyResult::LastAdminKey);
        assert_eq!(keys.revoke(&RevokeEvent { id: 2, reserved: 0 }, 20), RevokeKeyResult::Ok);
        assert_eq!(keys.revoke(&RevokeEvent { id: 2, reserved: 0 }, 21), RevokeKeyResult::AlreadyRevoked);
        assert_eq!(keys.revoke(&RevokeEvent { id: 9, reserved: 0 }, 21), RevokeKeyResult::KeyNotFound);
        assert!(!keys.by_hash(&[2; 32]).unwrap().is_active());
    }
}
