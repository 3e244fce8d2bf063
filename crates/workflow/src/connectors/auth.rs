//! Authentication of connector requests (docs/connectors.md): a bearer
//! token, HMAC-SHA256 request signatures, or both. The client side adds the
//! headers ([`ConnectorAuth::headers`]); the simulator server checks them
//! ([`ConnectorAuth::verify`]) the way a bank's endpoint would.
//!
//! A signature covers the method, the path and query, a timestamp, the
//! Idempotency-Key and the SHA-256 of the body, so a captured request can be
//! neither altered nor replayed once the timestamp is outside
//! [`SKEW_SECS_MAX`] (within it, a replay repeats an idempotent call).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;

use bursar_crypto::signing::{hmac_sha256_hex, sha256, sha256_hex, verify_hmac_sha256_hex};

/// Unix seconds at which the request was signed.
pub const TIMESTAMP_HEADER: &str = "Bursar-Timestamp";
/// `v1=<hex HMAC-SHA256(key, canonical string)>`.
pub const SIGNATURE_HEADER: &str = "Bursar-Signature";
/// Most seconds a signed request's timestamp may differ from the verifier's clock.
pub const SKEW_SECS_MAX: u64 = 300;
/// The first line of the signed string: names the scheme and its version.
const SCHEME: &str = "BURSAR-HMAC-SHA256-V1";
/// Bounds of a bearer token (visible ASCII).
const TOKEN_LEN: std::ops::RangeInclusive<usize> = 16..=4096;
/// Bounds of an HMAC key, in bytes (hex in its file).
const HMAC_KEY_LEN: std::ops::RangeInclusive<usize> = 32..=1024;
/// Largest secret file read.
const SECRET_FILE_MAX: u64 = 64 << 10;

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone)]
struct Secret(Arc<[u8]>);

/// How connector requests are authenticated; empty means not at all.
#[derive(Clone, Default)]
pub struct ConnectorAuth {
    token: Option<Secret>,
    hmac_key: Option<Secret>,
}

impl fmt::Debug for ConnectorAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &Option<Secret>| if s.is_some() { "set" } else { "none" };
        f.debug_struct("ConnectorAuth")
            .field("token", &set(&self.token))
            .field("hmac_key", &set(&self.hmac_key))
            .finish()
    }
}

/// Why connector credentials were refused at start. Names the source (file
/// or variable), never the secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("a connector token must be {} to {} visible ASCII characters without spaces", TOKEN_LEN.start(), TOKEN_LEN.end())]
    BadToken,
    #[error("a connector HMAC key must be {} to {} bytes, not {len}", HMAC_KEY_LEN.start(), HMAC_KEY_LEN.end())]
    BadKeyLength { len: usize },
    #[error("give the connector token once: --connectors-token-file or BURSAR_CONNECTORS_TOKEN")]
    TokenTwice,
    #[error("{}: the HMAC key must be hex (64 or more hex digits)", path.display())]
    KeyNotHex { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {len} bytes is too large for a secret file", path.display())]
    FileTooLarge { path: PathBuf, len: u64 },
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<AuthConfigError>,
    },
    #[error("BURSAR_CONNECTORS_TOKEN: {0}")]
    InEnv(#[source] Box<AuthConfigError>),
}

/// Why a received connector request was refused (never shows the expected secret).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthRefusal {
    #[error("missing bearer token (Authorization header)")]
    MissingToken,
    #[error("the Authorization header is not a bearer token")]
    NotBearer,
    #[error("wrong bearer token")]
    WrongToken,
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("{TIMESTAMP_HEADER} is not unix seconds")]
    BadTimestamp,
    #[error("{TIMESTAMP_HEADER} is {skew} s away from the server's clock (at most {SKEW_SECS_MAX} s allowed)")]
    Skew { skew: u64 },
    #[error("{SIGNATURE_HEADER} must be v1=<hex>")]
    BadSignatureFormat,
    #[error("{SIGNATURE_HEADER} does not match the request")]
    BadSignature,
    #[error("{0} appears more than once")]
    Repeated(String),
    #[error("{0} must be visible ASCII")]
    NotAscii(String),
}

impl ConnectorAuth {
    /// A bearer token: 16 to 4096 visible ASCII characters.
    pub fn with_token(mut self, token: &str) -> Result<Self, AuthConfigError> {
        if !TOKEN_LEN.contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AuthConfigError::BadToken);
        }
        self.token = Some(Secret(token.as_bytes().into()));
        Ok(self)
    }

    /// An HMAC key of 32 to 1024 bytes.
    pub fn with_hmac_key(mut self, key: &[u8]) -> Result<Self, AuthConfigError> {
        if !HMAC_KEY_LEN.contains(&key.len()) {
            return Err(AuthConfigError::BadKeyLength { len: key.len() });
        }
        self.hmac_key = Some(Secret(key.into()));
        Ok(self)
    }

    /// The token from `token_file` or `token_env` (not both), the HMAC key
    /// from `hmac_key_file` (hex). Errors name the source, never the secret.
    pub fn load(
        token_file: Option<&Path>,
        token_env: Option<&str>,
        hmac_key_file: Option<&Path>,
    ) -> Result<Self, AuthConfigError> {
        let in_file = |path: &Path| {
            let path = path.to_path_buf();
            move |e| AuthConfigError::InFile { path, source: Box::new(e) }
        };
        let mut auth = ConnectorAuth::default();
        match (token_file, token_env) {
            (Some(_), Some(_)) => return Err(AuthConfigError::TokenTwice),
            (Some(path), None) => {
                let text = read_secret(path)?;
                auth = auth.with_token(text.trim()).map_err(in_file(path))?;
            }
            (None, Some(token)) => {
                auth = auth.with_token(token.trim()).map_err(|e| AuthConfigError::InEnv(Box::new(e)))?
            }
            (None, None) => {}
        }
        if let Some(path) = hmac_key_file {
            let text = read_secret(path)?;
            let key = hex::decode(text.trim()).map_err(|_| AuthConfigError::KeyNotHex { path: path.to_path_buf() })?;
            auth = auth.with_hmac_key(&key).map_err(in_file(path))?;
        }
        Ok(auth)
    }

    /// Whether requests carry no credentials.
    pub fn is_none(&self) -> bool {
        self.token.is_none() && self.hmac_key.is_none()
    }

    /// The headers that authenticate one request signed at `now_unix`.
    /// `path_and_query` is the request target as sent (`/payouts/send`).
    pub fn headers(
        &self,
        method: &str,
        path_and_query: &str,
        idempotency_key: &str,
        body: &[u8],
        now_unix: u64,
    ) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(token) = &self.token {
            headers.push(("Authorization", format!("Bearer {}", String::from_utf8_lossy(&token.0))));
        }
        if let Some(key) = &self.hmac_key {
            let signed = canonical_string(method, path_and_query, now_unix, idempotency_key, body);
            headers.push((TIMESTAMP_HEADER, now_unix.to_string()));
            headers.push((SIGNATURE_HEADER, format!("v1={}", hmac_sha256_hex(&key.0, &[signed.as_bytes()]))));
        }
        headers
    }

    /// Checks a received request at `now_unix`; the error says what is
    /// wrong (never the expected secret).
    pub fn verify(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: u64,
    ) -> Result<(), AuthRefusal> {
        if let Some(token) = &self.token {
            let given = header(headers, "authorization")?.ok_or(AuthRefusal::MissingToken)?;
            let given = given.strip_prefix("Bearer ").ok_or(AuthRefusal::NotBearer)?;
            // Digests of equal length: the comparison reveals nothing useful about the token.
            if sha256(given.as_bytes()) != sha256(&token.0) {
                return Err(AuthRefusal::WrongToken);
            }
        }
        if let Some(key) = &self.hmac_key {
            let timestamp = header(headers, TIMESTAMP_HEADER)?.ok_or(AuthRefusal::MissingHeader(TIMESTAMP_HEADER))?;
            let at: u64 = match timestamp.len() {
                1..=20 if timestamp.bytes().all(|b| b.is_ascii_digit()) => timestamp.parse().ok(),
                _ => None,
            }
            .ok_or(AuthRefusal::BadTimestamp)?;
            if at.abs_diff(now_unix) > SKEW_SECS_MAX {
                return Err(AuthRefusal::Skew { skew: at.abs_diff(now_unix) });
            }
            let signature = header(headers, SIGNATURE_HEADER)?.ok_or(AuthRefusal::MissingHeader(SIGNATURE_HEADER))?;
            let hex = signature.strip_prefix("v1=").ok_or(AuthRefusal::BadSignatureFormat)?;
            let key_header = header(headers, super::http_client::IDEMPOTENCY_HEADER)?.unwrap_or("");
            let signed = canonical_string(method, path_and_query, at, key_header, body);
            if !verify_hmac_sha256_hex(&key.0, &[signed.as_bytes()], hex) {
                return Err(AuthRefusal::BadSignature);
            }
        }
        Ok(())
    }
}

/// The string a request signature covers, one field per line:
///
/// ```text
/// BURSAR-HMAC-SHA256-V1
/// <Bursar-Timestamp>
/// <METHOD>
/// <path and query>
/// <Idempotency-Key, or empty>
/// <hex SHA-256 of the body>
/// ```
pub fn canonical_string(
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    idempotency_key: &str,
    body: &[u8],
) -> String {
    format!("{SCHEME}\n{timestamp}\n{method}\n{path_and_query}\n{idempotency_key}\n{}", sha256_hex(body))
}

/// Seconds since 1970 by this machine's clock.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A header once, as text; a repeated or non-ASCII one is refused.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AuthRefusal> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(AuthRefusal::Repeated(name.to_string()));
    }
    value.to_str().map(Some).map_err(|_| AuthRefusal::NotAscii(name.to_string()))
}

fn read_secret(path: &Path) -> Result<String, AuthConfigError> {
    let read = |source| AuthConfigError::Read { path: path.to_path_buf(), source };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > SECRET_FILE_MAX {
        return Err(AuthConfigError::FileTooLarge { path: path.to_path_buf(), len });
    }
    std::fs::read_to_string(path).map_err(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const KEY: &[u8] = &[7u8; 32];

    fn to_map(headers: Vec<(&'static str, String)>, idempotency_key: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(name, HeaderValue::from_str(&value).unwrap());
        }
        map.insert("idempotency-key", HeaderValue::from_str(idempotency_key).unwrap());
        map
    }

    #[test]
    fn signed_requests_verify_and_tampering_does_not() {
        let auth = ConnectorAuth::default().with_token("t0ken-of-sixteen-chars").unwrap().with_hmac_key(KEY).unwrap();
        let now = 1_800_000_000;
        let headers = to_map(auth.headers("POST", "/payouts/send", "k1", b"{}", now), "k1");
        assert_eq!(auth.verify("POST", "/payouts/send", &headers, b"{}", now + 299), Ok(()));
        let refused = |method, path, headers: &HeaderMap, body: &[u8], at| {
            auth.verify(method, path, headers, body, at).expect_err("must be refused").to_string()
        };
        assert!(refused("POST", "/payouts/send", &headers, b"{ }", now).contains("does not match"));
        assert!(refused("GET", "/payouts/send", &headers, b"{}", now).contains("does not match"));
        assert!(refused("POST", "/payouts/status", &headers, b"{}", now).contains("does not match"));
        assert!(refused("POST", "/payouts/send", &headers, b"{}", now + 301).contains("away from the server's clock"));
        assert!(refused("POST", "/payouts/send", &headers, b"{}", now - 301).contains("away from the server's clock"));
        let other_key = to_map(auth.headers("POST", "/payouts/send", "k1", b"{}", now), "k2");
        assert!(refused("POST", "/payouts/send", &other_key, b"{}", now).contains("does not match"));
        let mut no_token = headers.clone();
        no_token.remove("authorization");
        assert!(refused("POST", "/payouts/send", &no_token, b"{}", now).contains("missing bearer token"));
        let mut wrong = headers.clone();
        wrong.insert("authorization", HeaderValue::from_static("Bearer t0ken-of-sixteen-chaRs"));
        assert_eq!(refused("POST", "/payouts/send", &wrong, b"{}", now), "wrong bearer token");
        let mut garbage = headers.clone();
        garbage.insert(TIMESTAMP_HEADER, HeaderValue::from_static("-5"));
        assert!(refused("POST", "/payouts/send", &garbage, b"{}", now).contains("not unix seconds"));
        garbage.insert(TIMESTAMP_HEADER, HeaderValue::from_static("99999999999999999999999"));
        assert!(refused("POST", "/payouts/send", &garbage, b"{}", now).contains("not unix seconds"));
        let mut bad_sig = headers.clone();
        bad_sig.insert(SIGNATURE_HEADER, HeaderValue::from_static("v1=zz"));
        assert!(refused("POST", "/payouts/send", &bad_sig, b"{}", now).contains("does not match"));
        bad_sig.append(SIGNATURE_HEADER, HeaderValue::from_static("v1=00"));
        assert!(refused("POST", "/payouts/send", &bad_sig, b"{}", now).contains("more than once"));
    }

    #[test]
    fn the_signed_string_is_documented_and_stable() {
        // docs/connectors.md shows this example; a bank-side engineer checks
        // it with `printf '%s' "$STRING" | openssl dgst -sha256 -mac HMAC -macopt hexkey:0707…07`.
        let s = canonical_string("POST", "/fx/quote", 1_800_000_000, "order-1-fx", b"{}");
        assert_eq!(
            s,
            "BURSAR-HMAC-SHA256-V1\n1800000000\nPOST\n/fx/quote\norder-1-fx\n\
             44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let auth = ConnectorAuth::default().with_hmac_key(KEY).unwrap();
        let headers = auth.headers("POST", "/fx/quote", "order-1-fx", b"{}", 1_800_000_000);
        assert_eq!(headers[0], (TIMESTAMP_HEADER, "1800000000".to_string()));
        assert_eq!(headers[1].1, format!("v1={}", hmac_sha256_hex(KEY, &[s.as_bytes()])));
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        assert!(ConnectorAuth::default().with_token("short").is_err());
        assert!(ConnectorAuth::default().with_token("has a space in it, so no").is_err());
        assert!(ConnectorAuth::default().with_hmac_key(&[1; 31]).is_err());
        let auth = ConnectorAuth::default().with_token("very-secret-token-value").unwrap();
        let shown = format!("{auth:?}");
        assert!(!shown.contains("very-secret") && shown.contains("set"), "{shown}");

        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("hmac.key");
        std::fs::write(&key_file, format!("{}\n", "ab".repeat(32))).unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "  very-secret-token-value\n").unwrap();
        let loaded = ConnectorAuth::load(Some(&token_file), None, Some(&key_file)).unwrap();
        assert!(loaded.token.is_some() && loaded.hmac_key.as_ref().is_some_and(|k| k.0.len() == 32));
        assert!(ConnectorAuth::load(Some(&token_file), Some("x"), None).unwrap_err().to_string().contains("once"));
        std::fs::write(&key_file, "not hex at all").unwrap();
        let err = ConnectorAuth::load(None, None, Some(&key_file)).unwrap_err().to_string();
        assert!(err.contains("must be hex") && !err.contains("not hex at all"), "{err}");
        std::fs::write(&token_file, "tiny").unwrap();
        let err = ConnectorAuth::load(Some(&token_file), None, None).unwrap_err().to_string();
        assert!(!err.contains("tiny"), "{err}");
        assert!(ConnectorAuth::load(None, None, None).unwrap().is_none());
    }
}
