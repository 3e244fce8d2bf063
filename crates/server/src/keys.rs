//! API key secrets: generated from the operating system's random source,
//! hashed before they go anywhere near the log.

use crate::limits::{SUPPLIED_TOKEN_MIN, TOKEN_MAX};
use bursar_core::service::keys::{KeyEvent, Role};

/// Prefix of generated keys, so they are recognisable in configs and leaks.
pub const TOKEN_PREFIX: &str = "bsk_";

/// A new random key: `bsk_` and 64 hex digits (256 bits).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 64);
    token.push_str(TOKEN_PREFIX);
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    token
}

/// A random nonzero key id.
pub fn generate_key_id() -> u64 {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the operating system's random source works");
        // Below 2^53, so the id survives JSON numbers in any language.
        let id = u64::from_le_bytes(bytes) >> 11;
        if id != 0 {
            return id;
        }
    }
}

/// A key id derived from the token (cluster bootstrap: replicas that create
/// the same first key give it the same id). Nonzero, below 2^53.
pub fn key_id_from_token(token: &str) -> u64 {
    let hash = blake3::derive_key("bursar 2026 cluster admin key id", token.as_bytes());
    let bytes: [u8; 8] = hash[..8].try_into().expect("invariant: 8 of 32 bytes");
    (u64::from_le_bytes(bytes) >> 11).max(1)
}

/// What is stored of a key: blake3 of the whole token. Keys carry 256 bits
/// of entropy (or at least 16 chars chosen by an operator), so a fast hash
/// is enough; nothing can be guessed from it.
pub fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Checks a token's shape before hashing it (bounded, printable ASCII).
pub fn token_is_plausible(token: &str) -> bool {
    (SUPPLIED_TOKEN_MIN..=TOKEN_MAX).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic())
}

pub fn admin_key_event(id: u64, token: &str) -> KeyEvent {
    KeyEvent::new(id, token_hash(token), Role::Admin, &[], "bootstrap admin").expect("a fixed short name fits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_well_formed() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 68 && token_is_plausible(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
        assert!(!token_is_plausible("short"));
        assert!(!token_is_plausible("has a space in it, which is not allowed"));
        assert!(generate_key_id() < (1 << 53));
    }
}
