//! Personal data of an order, encrypted at rest with AES-256-GCM under
//! rotatable keys.
//!
//! Orders carry personal data (sender name and country, recipient name and
//! bank account). The API edge encrypts it before the order reaches the log,
//! so plaintext never appears in the data directory: the deterministic core
//! only stores an opaque slot of [`PII_SLOT`] bytes per order (the blob, then
//! zero padding; the core keeps the blob's real length).
//!
//! Blob layout: `version u8 (=1) | key_id u32 LE | nonce [u8; 12] | ciphertext + tag`.
//! The associated data is the order id (u128 LE), so a blob copied onto
//! another order fails authentication. Every blob names the key that sealed
//! it, so after a rotation old blobs keep decrypting with their old key while
//! new blobs use the new active key.
//!
//! Keys are configured as a spec `"<id>:<64 hex>,<id>:<64 hex>,..."` whose
//! first entry is the active key, either inline ([`PiiKeyring::parse`]) or in
//! a key file ([`PiiKeyring::load_or_create`], [`PiiKeyring::rotate_file`]).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};

/// Size of the opaque per-order slot in the core. A blob never exceeds it.
pub const PII_SLOT: usize = 384;

/// Version byte of the blob layout.
const BLOB_VERSION: u8 = 1;
/// Version byte of the plaintext encoding.
const PLAINTEXT_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const KEY_LEN: usize = 32;

const NAME_LEN_MAX: usize = 128;
const ACCOUNT_LEN_MAX: usize = 64;

/// Largest possible plaintext: version byte, four length bytes, maximal fields.
const PLAINTEXT_LEN_MAX: usize = 1 + 4 + NAME_LEN_MAX * 2 + 2 + ACCOUNT_LEN_MAX;

// The slot size is a contract with the core: prove at compile time that the
// largest valid PII always fits.
const _: () = assert!(HEADER_LEN + PLAINTEXT_LEN_MAX + TAG_LEN <= PII_SLOT);

/// Why personal data could not be validated, encrypted, decrypted or keyed.
/// No variant ever carries key material or plaintext field values.
#[derive(Debug, thiserror::Error)]
pub enum PiiError {
    /// A field failed validation; `field` is its name in [`OrderPii`].
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The blob names a key id this keyring does not hold.
    #[error("unknown PII key id {0}")]
    UnknownKey(u32),
    /// Authentication failed: the blob was modified, or belongs to another order.
    #[error("PII blob failed authentication (tampered, or bound to another order)")]
    Tampered,
    /// The blob or decrypted plaintext does not have the expected shape.
    #[error("malformed PII blob: {0}")]
    Malformed(String),
    /// The key spec (inline or in a key file) is unusable.
    #[error("invalid PII key spec: {0}")]
    KeySpec(String),
    /// Reading or writing the key file failed.
    #[error("PII key file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(String),
    /// The blob would not fit the core's slot (cannot happen for valid PII).
    #[error("PII blob of {0} bytes exceeds the {PII_SLOT}-byte slot")]
    TooLarge(usize),
}

/// The personal data of one order, in plaintext. `Debug` redacts the
/// names and the bank account so it can't leak into logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPii {
    pub sender_name: String,
    /// ISO 3166-1 alpha-2 shape: two ASCII uppercase letters.
    pub sender_country: String,
    pub recipient_name: String,
    pub recipient_bank_account: String,
}

impl fmt::Debug for OrderPii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderPii")
            .field("sender_name", &"<redacted>")
            .field("sender_country", &self.sender_country)
            .field("recipient_name", &"<redacted>")
            .field("recipient_bank_account", &"<redacted>")
            .finish()
    }
}

impl OrderPii {
    /// Checks every field; the error names the first bad field.
    pub fn validate(&self) -> Result<(), PiiError> {
        validate_name("sender_name", &self.sender_name)?;
        validate_country("sender_country", &self.sender_country)?;
        validate_name("recipient_name", &self.recipient_name)?;
        validate_account("recipient_bank_account", &self.recipient_bank_account)
    }

    /// Compact plaintext encoding: a version byte, then each field as a u8
    /// length and its bytes, in declaration order. Validates first, which
    /// also guarantees every length fits in a u8.
    pub fn encode(&self) -> Result<Vec<u8>, PiiError> {
        self.validate()?;
        let mut out = Vec::with_capacity(PLAINTEXT_LEN_MAX);
        out.push(PLAINTEXT_VERSION);
        for field in self.fields() {
            // validate() bounds every field to at most 128 bytes.
            let len = u8::try_from(field.len()).map_err(|_| PiiError::Malformed("field too long".into()))?;
            out.push(len);
            out.extend_from_slice(field.as_bytes());
        }
        Ok(out)
    }

    /// Decodes [`OrderPii::encode`] output, rejecting anything else
    /// (wrong version, truncation, trailing bytes, invalid UTF-8 or fields).
    pub fn decode(bytes: &[u8]) -> Result<Self, PiiError> {
        let (&version, mut rest) = bytes.split_first().ok_or_else(|| PiiError::Malformed("empty plaintext".into()))?;
        if version != PLAINTEXT_VERSION {
            return Err(PiiError::Malformed(format!("unknown plaintext version {version}")));
        }
        let mut next = || take_field(&mut rest);
        let pii = OrderPii {
            sender_name: next()?,
            sender_country: next()?,
            recipient_name: next()?,
            recipient_bank_account: next()?,
        };
        if !rest.is_empty() {
            return Err(PiiError::Malformed(format!("{} trailing bytes", rest.len())));
        }
        pii.validate().map_err(|e| PiiError::Malformed(format!("decoded fields are invalid: {e}")))?;
        Ok(pii)
    }

    fn fields(&self) -> [&str; 4] {
        [&self.sender_name, &self.sender_country, &self.recipient_name, &self.recipient_bank_account]
    }
}

/// Reads one length-prefixed UTF-8 field off the front of `rest`.
fn take_field(rest: &mut &[u8]) -> Result<String, PiiError> {
    let (&len, tail) = rest.split_first().ok_or_else(|| PiiError::Malformed("truncated plaintext".into()))?;
    let len = usize::from(len);
    if tail.len() < len {
        return Err(PiiError::Malformed("truncated plaintext".into()));
    }
    let (field, tail) = tail.split_at(len);
    *rest = tail;
    String::from_utf8(field.to_vec()).map_err(|_| PiiError::Malformed("field is not UTF-8".into()))
}

fn invalid(field: &'static str, reason: impl Into<String>) -> PiiError {
    PiiError::Invalid { field, reason: reason.into() }
}

fn validate_name(field: &'static str, value: &str) -> Result<(), PiiError> {
    if value.is_empty() || value.len() > NAME_LEN_MAX {
        return Err(invalid(field, format!("must be 1 to {NAME_LEN_MAX} bytes, got {}", value.len())));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn validate_country(field: &'static str, value: &str) -> Result<(), PiiError> {
    if value.len() != 2 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(field, "must be two uppercase ASCII letters (ISO 3166-1 alpha-2)"));
    }
    Ok(())
}

fn validate_account(field: &'static str, value: &str) -> Result<(), PiiError> {
    if value.is_empty() || value.len() > ACCOUNT_LEN_MAX {
        return Err(invalid(field, format!("must be 1 to {ACCOUNT_LEN_MAX} bytes, got {}", value.len())));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-') {
        return Err(invalid(field, "may contain only letters, digits, spaces and hyphens"));
    }
    Ok(())
}

/// One key: its id, its raw bytes (kept to write the key file on rotation)
/// and the ready cipher.
struct PiiKey {
    id: u32,
    bytes: [u8; KEY_LEN],
    cipher: Aes256Gcm,
}

impl PiiKey {
    fn new(id: u32, bytes: [u8; KEY_LEN]) -> Self {
        PiiKey { id, bytes, cipher: Aes256Gcm::new(&bytes.into()) }
    }
}

/// The keys that seal and open PII blobs. The first key is the active one
/// (used to encrypt); every key decrypts the blobs that name it.
pub struct PiiKeyring {
    /// Spec order: `keys[0]` is active. Never empty.
    keys: Vec<PiiKey>,
}

/// Lists ids only: key material must never reach a log.
impl fmt::Debug for PiiKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PiiKeyring")
            .field("active_key_id", &self.active_key_id())
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

impl PiiKeyring {
    /// A keyring with one fresh random key, id 1.
    pub fn generate() -> Result<Self, PiiError> {
        Ok(PiiKeyring { keys: vec![PiiKey::new(1, random_key()?)] })
    }

    /// Parses `"<id>:<64 hex chars>,..."`; entries may also be separated by
    /// whitespace or newlines. The first entry is the active key. Ids must be
    /// unique and non-zero, keys exactly 32 bytes. Errors name the entry by
    /// position and never echo its text.
    pub fn parse(spec: &str) -> Result<Self, PiiError> {
        let mut keys: Vec<PiiKey> = Vec::new();
        let entries = spec.split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty());
        for (index, entry) in entries.enumerate() {
            let key = parse_entry(index + 1, entry)?;
            if keys.iter().any(|k| k.id == key.id) {
                return Err(PiiError::KeySpec(format!("entry {}: duplicate key id {}", index + 1, key.id)));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(PiiError::KeySpec("no keys".into()));
        }
        Ok(PiiKeyring { keys })
    }

    /// Loads the key file at `path`, or creates it with one fresh key when it
    /// does not exist. Returns the keyring and whether it was just generated
    /// (callers should tell the operator to back the file up).
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), PiiError> {
        match std::fs::read_to_string(path) {
            Ok(spec) => Ok((Self::parse_file(path, &spec)?, false)),
            Err(e) if e.kind() == ErrorKind::NotFound => Self::create_file(path),
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// Adds a fresh random key to the key file at `path` with id = highest
    /// id + 1, making it active while keeping the old keys (their blobs keep
    /// decrypting). The file is replaced atomically. Returns the new id.
    pub fn rotate_file(path: &Path) -> Result<u32, PiiError> {
        let spec = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        let mut keyring = Self::parse_file(path, &spec)?;
        let id = keyring.rotate()?;
        let tmp = temp_path(path);
        write_key_file(&tmp, &keyring.to_spec(), false)?;
        std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
        sync_parent(path)?;
        Ok(id)
    }

    /// Adds a fresh random key with id = highest id + 1 and makes it active.
    pub fn rotate(&mut self) -> Result<u32, PiiError> {
        let max = self.keys.iter().map(|k| k.id).max().unwrap_or(0);
        let id = max.checked_add(1).ok_or_else(|| PiiError::KeySpec("key ids exhausted".into()))?;
        self.keys.insert(0, PiiKey::new(id, random_key()?));
        Ok(id)
    }

    /// The id of the key new blobs are sealed with.
    pub fn active_key_id(&self) -> u32 {
        self.active().id
    }

    /// All key ids, active first.
    pub fn key_ids(&self) -> Vec<u32> {
        self.keys.iter().map(|k| k.id).collect()
    }

    /// Seals `pii` for `order_id` with the active key and a random nonce.
    /// The blob always fits [`PII_SLOT`].
    pub fn encrypt(&self, order_id: u128, pii: &OrderPii) -> Result<Vec<u8>, PiiError> {
        let blob = self.seal(&order_id.to_le_bytes(), &pii.encode()?)?;
        if blob.len() > PII_SLOT {
            return Err(PiiError::TooLarge(blob.len()));
        }
        Ok(blob)
    }

    /// Opens a blob sealed for `order_id` with whichever key it names.
    /// `blob` must be the real-length prefix of the slot, without padding.
    pub fn decrypt(&self, order_id: u128, blob: &[u8]) -> Result<OrderPii, PiiError> {
        if blob.len() > PII_SLOT {
            return Err(PiiError::Malformed(format!("blob length {} out of range", blob.len())));
        }
        let plaintext = self.open(&order_id.to_le_bytes(), blob)?;
        OrderPii::decode(&plaintext)
    }

    /// Seals arbitrary bytes (a webhook's signing secret) with the active
    /// key, bound to `aad`; same blob layout as personal data.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, PiiError> {
        let key = self.active();
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| PiiError::Random(e.to_string()))?;
        let sealed = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| PiiError::Malformed("encryption failed".into()))?;
        let mut blob = Vec::with_capacity(HEADER_LEN + sealed.len());
        blob.push(BLOB_VERSION);
        blob.extend_from_slice(&key.id.to_le_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(blob)
    }

    /// Opens a blob made by [`PiiKeyring::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, PiiError> {
        if blob.len() < HEADER_LEN + TAG_LEN {
            return Err(PiiError::Malformed(format!("blob length {} out of range", blob.len())));
        }
        if blob[0] != BLOB_VERSION {
            return Err(PiiError::Malformed(format!("unknown blob version {}", blob[0])));
        }
        // The length check above guarantees these fixed-size slices exist.
        let id = u32::from_le_bytes([blob[1], blob[2], blob[3], blob[4]]);
        let key = self.keys.iter().find(|k| k.id == id).ok_or(PiiError::UnknownKey(id))?;
        let nonce = Nonce::from_slice(&blob[5..HEADER_LEN]);
        key.cipher.decrypt(nonce, Payload { msg: &blob[HEADER_LEN..], aad }).map_err(|_| PiiError::Tampered)
    }

    fn active(&self) -> &PiiKey {
        // Construction never leaves the keyring empty (parse rejects an empty
        // spec; generate and rotate add keys), so index 0 always exists.
        &self.keys[0]
    }

    /// The key-file form of this keyring: active key first.
    fn to_spec(&self) -> String {
        let entries: Vec<String> = self.keys.iter().map(|k| format!("{}:{}", k.id, hex::encode(k.bytes))).collect();
        entries.join(",") + "\n"
    }

    /// Parses a key file's content, naming the file in errors.
    fn parse_file(path: &Path, spec: &str) -> Result<Self, PiiError> {
        warn_if_exposed(path);
        Self::parse(spec).map_err(|e| match e {
            PiiError::KeySpec(msg) => PiiError::KeySpec(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Creates a new key file with one fresh key. If another process created
    /// the file first, loads that one instead.
    fn create_file(path: &Path) -> Result<(Self, bool), PiiError> {
        let keyring = Self::generate()?;
        match write_key_file(path, &keyring.to_spec(), true) {
            Ok(()) => {
                sync_parent(path)?;
                Ok((keyring, true))
            }
            Err(PiiError::Io { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                let spec = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
                Ok((Self::parse_file(path, &spec)?, false))
            }
            Err(e) => Err(e),
        }
    }
}

/// Parses one `<id>:<64 hex>` entry; `position` is 1-based for messages.
fn parse_entry(position: usize, entry: &str) -> Result<PiiKey, PiiError> {
    let bad = |reason: &str| PiiError::KeySpec(format!("entry {position}: {reason}"));
    let (id, key_hex) = entry.split_once(':').ok_or_else(|| bad("expected <id>:<64 hex characters>"))?;
    let id: u32 = id.parse().map_err(|_| bad("key id must be a decimal number from 1 to 4294967295"))?;
    if id == 0 {
        return Err(bad("key id must not be 0"));
    }
    if key_hex.len() != KEY_LEN * 2 {
        return Err(bad(&format!("key must be {} hex characters (32 bytes), got {}", KEY_LEN * 2, key_hex.len())));
    }
    let mut bytes = [0u8; KEY_LEN];
    hex::decode_to_slice(key_hex, &mut bytes).map_err(|_| bad("key is not valid hex"))?;
    Ok(PiiKey::new(id, bytes))
}

fn random_key() -> Result<[u8; KEY_LEN], PiiError> {
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| PiiError::Random(e.to_string()))?;
    Ok(key)
}

fn io_error(path: &Path, source: std::io::Error) -> PiiError {
    PiiError::Io { path: path.to_path_buf(), source }
}

/// `<name>.tmp` next to `path`, so the rename stays on one file system.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `content` to `path` with mode 0600 and fsyncs it. With
/// `create_new`, fails if the file exists; otherwise truncates (a temp file
/// left by a crash is simply overwritten).
fn write_key_file(path: &Path, content: &str, create_new: bool) -> Result<(), PiiError> {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let mut file = options.open(path).map_err(|e| io_error(path, e))?;
    // A leftover temp file may have looser permissions than the mode above.
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| io_error(path, e))?;
    file.write_all(content.as_bytes()).map_err(|e| io_error(path, e))?;
    file.sync_all().map_err(|e| io_error(path, e))
}

/// Fsyncs the directory holding `path` so a create or rename is durable.
fn sync_parent(path: &Path) -> Result<(), PiiError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent).and_then(|d| d.sync_all()).map_err(|e| io_error(parent, e))
}

/// Key files should be readable by the owner only; say so if not.
fn warn_if_exposed(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "PII key file is accessible to group or others; use mode 0600");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_path_appends_suffix() {
        assert_eq!(temp_path(Path::new("/a/keys")), PathBuf::from("/a/keys.tmp"));
        assert_eq!(temp_path(Path::new("keys.txt")), PathBuf::from("keys.txt.tmp"));
    }

    #[test]
    fn encode_rejects_invalid_and_decode_rejects_garbage() {
        let pii = OrderPii {
            sender_name: "A".into(),
            sender_country: "US".into(),
            recipient_name: "B".into(),
            recipient_bank_account: "X1".into(),
        };
        let mut bytes = pii.encode().unwrap();
        assert_eq!(OrderPii::decode(&bytes).unwrap(), pii);
        bytes.push(0);
        assert!(matches!(OrderPii::decode(&bytes), Err(PiiError::Malformed(_))));
        assert!(matches!(OrderPii::decode(&[]), Err(PiiError::Malformed(_))));
        assert!(matches!(OrderPii::decode(&[1, 200, 1]), Err(PiiError::Malformed(_))));
        assert!(matches!(OrderPii::decode(&[2]), Err(PiiError::Malformed(_))));
    }
}
