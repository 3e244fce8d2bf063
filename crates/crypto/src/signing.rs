//! HMAC-SHA256 signatures in hex: the one implementation behind webhook
//! signatures (bursar-http) and connector request signatures
//! ([`crate::connectors::ConnectorAuth`]).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("invariant: HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Lower-case hex of HMAC-SHA256(`key`, the concatenation of `parts`).
pub fn hmac_sha256_hex(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(mac(key, parts).finalize().into_bytes())
}

/// Whether `signature` (hex, either case) is HMAC-SHA256(`key`, `parts`);
/// compared in constant time.
pub fn verify_hmac_sha256_hex(key: &[u8], parts: &[&[u8]], signature: &str) -> bool {
    match hex::decode(signature) {
        Ok(bytes) => mac(key, parts).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// Lower-case hex of SHA-256(`data`).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of `data`: equal digests compare in constant time with respect
/// to the secret they were derived from.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_test_case_2() {
        let sig = hmac_sha256_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(sig, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(verify_hmac_sha256_hex(b"Jefe", &[b"what do ya want for nothing?"], &sig.to_uppercase()));
        assert!(!verify_hmac_sha256_hex(b"jefe", &[b"what do ya want for nothing?"], &sig));
        assert!(!verify_hmac_sha256_hex(b"Jefe", &[b"what do ya want for nothing?"], "zz"));
        assert!(!verify_hmac_sha256_hex(b"Jefe", &[b"what do ya want for nothing?"], &sig[..62]));
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
