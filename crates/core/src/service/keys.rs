//! API keys: only a hash of each secret is ever stored (or logged). The
//! HTTP layer generates the secret and the key id; the state machine checks
//! and records them, so keys replicate and survive restarts like any other
//! state.
//!
//! A key may carry an expiry and its own rate limit. The state machine only
//! stores them: whether a key has expired is decided at the edge against the
//! wall clock (`bursar_server::auth`), so apply never reads a clock. The one
//! time it compares is log time (`rotate`, and which admin keys count as
//! usable), which is deterministic.

use crate::limits::{KEY_LEDGERS_MAX, KEY_NAME_MAX, KEYS_MAX, RATE_LIMIT_MAX};
use crate::memory::tree_bytes;
use bytemuck::{Pod, Zeroable};
use std::collections::BTreeMap;

/// A key's own token bucket: `per_second` requests refill a bucket of
/// `burst`. Zeros: the node's default applies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct KeyRateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl KeyRateLimit {
    /// The node's default applies.
    pub fn is_default(self) -> bool {
        self == KeyRateLimit::default()
    }

    /// Both zero, or both between 1 and `RATE_LIMIT_MAX`.
    pub fn is_valid(self) -> bool {
        self.is_default()
            || ((1..=RATE_LIMIT_MAX).contains(&self.per_second) && (1..=RATE_LIMIT_MAX).contains(&self.burst))
    }
}

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
    /// When the key stops working, in nanoseconds since the Unix epoch (set
    /// by the edge from its clock); 0 = never. These 16 bytes were reserved
    /// (zero) before keys could expire or be limited, so old records read
    /// as "never" and "the node's default".
    pub expires_at: u64,
    pub rate_limit: KeyRateLimit,
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

    /// The same key, expiring at `expires_at` (0 = never).
    pub fn expiring(mut self, expires_at: u64) -> KeyEvent {
        self.expires_at = expires_at;
        self
    }

    /// The same key, with its own rate limit.
    pub fn limited(mut self, rate_limit: KeyRateLimit) -> KeyEvent {
        self.rate_limit = rate_limit;
        self
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

/// The rotate-key event as logged: a new key with the old one's role,
/// ledgers, name and rate limit, and a new secret; the old key expires
/// after a grace period.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RotateEvent {
    /// The key to replace.
    pub id: u64,
    /// The new key's id, chosen by the HTTP layer; never zero.
    pub new_id: u64,
    /// blake3 of the new key's whole secret token.
    pub hash: [u8; 32],
    /// The old key expires this long after the rotation (log time), or
    /// when it already did if that is sooner. 0: at once.
    pub grace_seconds: u64,
    /// When the new key expires (nanoseconds since the epoch, set by the
    /// edge); 0 = never.
    pub expires_at: u64,
    pub reserved: [u8; 16],
}

impl RotateEvent {
    pub const SIZE: usize = 80;
}

const _: () = assert!(std::mem::size_of::<KeyEvent>() == KeyEvent::SIZE);
const _: () = assert!(std::mem::size_of::<RevokeEvent>() == RevokeEvent::SIZE);
const _: () = assert!(std::mem::size_of::<RotateEvent>() == RotateEvent::SIZE);

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
    /// Nanoseconds since the epoch; 0 = never.
    pub expires_at: u64,
    pub rate_limit: KeyRateLimit,
}

impl ApiKey {
    /// Not revoked (it may still have expired: see `is_expired`).
    pub fn is_active(&self) -> bool {
        self.revoked_at == 0
    }

    /// Whether the key has expired at `now` (nanoseconds since the epoch).
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at != 0 && now >= self.expires_at
    }

    /// Whether a request signed with this key may be served at `now`
    /// (nanoseconds since the epoch, from the edge's clock): not revoked and
    /// not expired. The one check every front end (HTTP, binary) uses.
    pub fn is_usable_at(&self, now: u64) -> bool {
        self.is_active() && !self.is_expired(now)
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
        RateLimitInvalid = 9 => "A rate limit is both zero (the default) or a rate and a burst of 1 to 1000000.",
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

crate::codes::result_codes! {
    /// Outcome of rotating one API key.
    RotateKeyResult {
        Ok = 0 => "The key was rotated: a new key replaces it.",
        ReservedField = 1 => "A reserved field is not zero.",
        IdMustNotBeZero = 2 => "The new key id must not be zero.",
        KeyNotFound = 3 => "No key has this id.",
        KeyIsRevoked = 4 => "A revoked key cannot be rotated.",
        KeyIsExpired = 5 => "An expired key cannot be rotated.",
        IdExists = 6 => "A key with the new id exists.",
        SecretExists = 7 => "A key with the new secret exists.",
        KeysLimitReached = 8 => "The engine holds the maximum number of keys.",
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

    /// Estimated RAM held (see `crate::memory`).
    pub fn heap_bytes(&self) -> u64 {
        tree_bytes::<u64, ApiKey>(self.by_id.len()) + tree_bytes::<[u8; 32], u64>(self.by_hash.len())
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Admin keys usable at log time `now`: neither revoked nor expired.
    fn usable_admins(&self, now: u64) -> usize {
        self.by_id.values().filter(|k| k.role == Role::Admin && k.is_usable_at(now)).count()
    }

    /// Checks in the order of `CreateKeyResult`. `ledger_exists` tells
    /// whether a ledger id exists.
    pub fn create(&mut self, e: &KeyEvent, timestamp: u64, ledger_exists: impl Fn(u32) -> bool) -> CreateKeyResult {
        use CreateKeyResult as R;
        if e.reserved0 != 0 || e.reserved1 != 0 {
            return R::ReservedField;
        }
        if e.id == 0 {
            return R::IdMustNotBeZero;
        }
        let Some(role) = Role::from_code(e.role) else { return R::RoleInvalid };
        let Some(ledgers) = key_ledgers(e, role, &ledger_exists) else { return R::LedgersInvalid };
        let Some(name) = key_name(e) else { return R::NameInvalid };
        if !e.rate_limit.is_valid() {
            return R::RateLimitInvalid;
        }
        if self.by_id.contains_key(&e.id) {
            return R::IdExists;
        }
        if self.by_hash.contains_key(&e.hash) {
            return R::SecretExists;
        }
        if self.by_id.len() >= KEYS_MAX {
            return R::KeysLimitReached;
        }
        let key = ApiKey {
            id: e.id,
            hash: e.hash,
            role,
            ledgers,
            name,
            created_at: timestamp,
            revoked_at: 0,
            expires_at: e.expires_at,
            rate_limit: e.rate_limit,
        };
        self.by_hash.insert(key.hash, key.id);
        self.by_id.insert(key.id, key);
        R::Ok
    }

    /// `timestamp` is log time: an admin key that has expired by then does
    /// not count as the one left.
    pub fn revoke(&mut self, e: &RevokeEvent, timestamp: u64) -> RevokeKeyResult {
        use RevokeKeyResult as R;
        if e.reserved != 0 {
            return R::ReservedField;
        }
        let admins = self.usable_admins(timestamp);
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

    /// Checks in the order of `RotateKeyResult`. `timestamp` is log time:
    /// the new key's creation and the start of the old key's grace period.
    pub fn rotate(&mut self, e: &RotateEvent, timestamp: u64) -> RotateKeyResult {
        use RotateKeyResult as R;
        if e.reserved != [0; 16] {
            return R::ReservedField;
        }
        if e.new_id == 0 {
            return R::IdMustNotBeZero;
        }
        let Some(old) = self.by_id.get(&e.id) else { return R::KeyNotFound };
        if !old.is_active() {
            return R::KeyIsRevoked;
        }
        if old.is_expired(timestamp) {
            return R::KeyIsExpired;
        }
        if self.by_id.contains_key(&e.new_id) {
            return R::IdExists;
        }
        if self.by_hash.contains_key(&e.hash) {
            return R::SecretExists;
        }
        if self.by_id.len() >= KEYS_MAX {
            return R::KeysLimitReached;
        }
        let new = ApiKey {
            id: e.new_id,
            hash: e.hash,
            created_at: timestamp,
            revoked_at: 0,
            expires_at: e.expires_at,
            ..old.clone()
        };
        // A rotation never lengthens the old key's life.
        let until = timestamp.saturating_add(e.grace_seconds.saturating_mul(crate::records::NANOS_PER_SECOND));
        let old = self.by_id.get_mut(&e.id).expect("invariant: looked up above");
        old.expires_at = if old.expires_at == 0 { until } else { old.expires_at.min(until) };
        self.by_hash.insert(new.hash, new.id);
        self.by_id.insert(new.id, new);
        R::Ok
    }

    /// Undo of a create within a failed linked chain is not needed: key
    /// commands are not linked. Used by restore.
    pub(crate) fn insert_restored(&mut self, key: ApiKey) -> Result<(), crate::error::DecodeError> {
        if key.id == 0 || self.by_id.contains_key(&key.id) || self.by_hash.contains_key(&key.hash) {
            return Err(crate::error::DecodeError::InvalidOrStoredTwice { what: "key", id: u128::from(key.id) });
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

    #[test]
    fn rate_limits_are_both_zero_or_both_in_range() {
        let mut keys = Keys::default();
        let limited = |id, secret, per_second, burst| {
            event(id, secret, Role::Operator, &[]).limited(KeyRateLimit { per_second, burst })
        };
        for (per_second, burst) in [(0, 5), (5, 0), (RATE_LIMIT_MAX + 1, 5), (5, RATE_LIMIT_MAX + 1)] {
            let r = keys.create(&limited(1, 1, per_second, burst), 10, |_| true);
            assert_eq!(r, CreateKeyResult::RateLimitInvalid, "{per_second}/{burst}");
        }
        assert_eq!(keys.create(&limited(1, 1, 0, 0), 10, |_| true), CreateKeyResult::Ok);
        assert_eq!(keys.create(&limited(2, 2, 1, RATE_LIMIT_MAX), 10, |_| true), CreateKeyResult::Ok);
        assert_eq!(keys.get(2).unwrap().rate_limit, KeyRateLimit { per_second: 1, burst: RATE_LIMIT_MAX });
        assert!(keys.get(1).unwrap().rate_limit.is_default());
    }

    #[test]
    fn rotation_copies_the_key_and_never_lengthens_the_old_one() {
        const S: u64 = crate::records::NANOS_PER_SECOND;
        let mut keys = Keys::default();
        let limit = KeyRateLimit { per_second: 7, burst: 9 };
        let old = event(1, 1, Role::Operator, &[2]).limited(limit).expiring(1000 * S);
        assert_eq!(keys.create(&old, 10 * S, |_| true), CreateKeyResult::Ok);
        let rotate = |id, new_id, secret, grace_seconds| RotateEvent {
            id,
            new_id,
            hash: [secret; 32],
            grace_seconds,
            expires_at: 0,
            reserved: [0; 16],
        };
        assert_eq!(
            keys.rotate(&RotateEvent { reserved: [1; 16], ..rotate(1, 2, 2, 60) }, 20 * S),
            RotateKeyResult::ReservedField
        );
        assert_eq!(keys.rotate(&rotate(1, 0, 2, 60), 20 * S), RotateKeyResult::IdMustNotBeZero);
        assert_eq!(keys.rotate(&rotate(9, 2, 2, 60), 20 * S), RotateKeyResult::KeyNotFound);
        assert_eq!(keys.rotate(&rotate(1, 1, 2, 60), 20 * S), RotateKeyResult::IdExists);
        assert_eq!(keys.rotate(&rotate(1, 2, 1, 60), 20 * S), RotateKeyResult::SecretExists);
        assert_eq!(keys.rotate(&rotate(1, 2, 2, 60), 20 * S), RotateKeyResult::Ok);
        let (a, b) = (keys.get(1).unwrap().clone(), keys.get(2).unwrap().clone());
        assert_eq!((a.expires_at, b.expires_at, b.created_at), (80 * S, 0, 20 * S));
        assert_eq!(
            (b.role, b.ledgers.clone(), b.name.clone(), b.rate_limit),
            (a.role, a.ledgers.clone(), a.name.clone(), limit)
        );
        assert_eq!(keys.by_hash(&[2; 32]).map(|k| k.id), Some(2));
        // A longer grace does not extend it; a shorter one shortens it.
        assert_eq!(keys.rotate(&rotate(1, 3, 3, 3600), 30 * S), RotateKeyResult::Ok);
        assert_eq!(keys.get(1).unwrap().expires_at, 80 * S);
        assert_eq!(keys.rotate(&rotate(1, 4, 4, 0), 40 * S), RotateKeyResult::Ok);
        assert_eq!(keys.get(1).unwrap().expires_at, 40 * S);
        assert_eq!(keys.rotate(&rotate(1, 5, 5, 0), 40 * S), RotateKeyResult::KeyIsExpired);
        assert_eq!(keys.revoke(&RevokeEvent { id: 2, reserved: 0 }, 50 * S), RevokeKeyResult::Ok);
        assert_eq!(keys.rotate(&rotate(2, 5, 5, 0), 50 * S), RotateKeyResult::KeyIsRevoked);
    }

    #[test]
    fn an_expired_admin_key_is_not_the_last_admin() {
        let mut keys = Keys::default();
        assert_eq!(keys.create(&event(1, 1, Role::Admin, &[]), 10, |_| true), CreateKeyResult::Ok);
        assert_eq!(keys.create(&event(2, 2, Role::Admin, &[]).expiring(100), 10, |_| true), CreateKeyResult::Ok);
        assert_eq!(keys.revoke(&RevokeEvent { id: 1, reserved: 0 }, 100), RevokeKeyResult::LastAdminKey);
        assert_eq!(keys.revoke(&RevokeEvent { id: 1, reserved: 0 }, 99), RevokeKeyResult::Ok);
    }
}
