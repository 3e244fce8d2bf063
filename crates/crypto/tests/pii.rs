//! Personal data encryption: round trips, tamper detection, key rotation,
//! key specs and files, field validation, slot size.

use std::os::unix::fs::PermissionsExt;

use bursar_crypto::pii::{OrderPii, PII_SLOT, PiiError, PiiKeyring};

const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY_B: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff";

fn sample() -> OrderPii {
    OrderPii {
        sender_name: "Zebulon Quixote-Marchbanks".into(),
        sender_country: "GB".into(),
        recipient_name: "Élodie Brontë".into(),
        recipient_bank_account: "DE89 3704 0044 0532 0130 00".into(),
    }
}

fn keyring() -> PiiKeyring {
    PiiKeyring::parse(&format!("1:{KEY_A}")).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn round_trip() {
    let keys = keyring();
    let blob = keys.encrypt(42, &sample()).unwrap();
    assert_eq!(keys.decrypt(42, &blob).unwrap(), sample());
    assert_eq!(blob[0], 1, "version byte");
    assert_eq!(u32::from_le_bytes(blob[1..5].try_into().unwrap()), 1, "key id");
}

#[test]
fn plaintext_never_appears_in_the_blob() {
    let blob = keyring().encrypt(7, &sample()).unwrap();
    for field in ["Zebulon Quixote-Marchbanks", "Zebulon", "Marchbanks", "DE89 3704", "Brontë"] {
        assert!(!contains(&blob, field.as_bytes()), "{field} leaked");
    }
}

#[test]
fn nonces_differ_between_encryptions() {
    let keys = keyring();
    assert_ne!(keys.encrypt(1, &sample()).unwrap(), keys.encrypt(1, &sample()).unwrap());
}

#[test]
fn tampering_any_byte_is_detected() {
    let keys = keyring();
    let blob = keys.encrypt(9, &sample()).unwrap();
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        let result = keys.decrypt(9, &bad);
        match i {
            0 => assert!(matches!(result, Err(PiiError::Malformed(_))), "version byte: {result:?}"),
            1..=4 => assert!(matches!(result, Err(PiiError::UnknownKey(_))), "key id byte {i}: {result:?}"),
            _ => assert!(matches!(result, Err(PiiError::Tampered)), "byte {i}: {result:?}"),
        }
    }
    let mut truncated = blob.clone();
    truncated.pop();
    assert!(matches!(keys.decrypt(9, &truncated), Err(PiiError::Tampered)));
    assert!(matches!(keys.decrypt(9, &blob[..20]), Err(PiiError::Malformed(_))));
    assert!(matches!(keys.decrypt(9, &[]), Err(PiiError::Malformed(_))));
}

#[test]
fn key_id_switched_to_another_held_key_is_tampered() {
    let keys = PiiKeyring::parse(&format!("2:{KEY_B},1:{KEY_A}")).unwrap();
    let mut blob = keys.encrypt(9, &sample()).unwrap();
    blob[1..5].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(keys.decrypt(9, &blob), Err(PiiError::Tampered)));
}

#[test]
fn blob_bound_to_its_order() {
    let keys = keyring();
    let blob = keys.encrypt(1000, &sample()).unwrap();
    assert!(matches!(keys.decrypt(1001, &blob), Err(PiiError::Tampered)));
    assert!(matches!(keys.decrypt(u128::MAX, &blob), Err(PiiError::Tampered)));
}

#[test]
fn unknown_key_id() {
    let old = PiiKeyring::parse(&format!("5:{KEY_A}")).unwrap();
    let blob = old.encrypt(3, &sample()).unwrap();
    assert!(matches!(keyring().decrypt(3, &blob), Err(PiiError::UnknownKey(5))));
}

#[test]
fn first_entry_is_active_and_others_still_decrypt() {
    let old = keyring();
    let old_blob = old.encrypt(11, &sample()).unwrap();
    let rotated = PiiKeyring::parse(&format!("2:{KEY_B}\n1:{KEY_A}\n")).unwrap();
    assert_eq!(rotated.active_key_id(), 2);
    assert_eq!(rotated.key_ids(), vec![2, 1]);
    assert_eq!(rotated.decrypt(11, &old_blob).unwrap(), sample());
    let new_blob = rotated.encrypt(11, &sample()).unwrap();
    assert_eq!(u32::from_le_bytes(new_blob[1..5].try_into().unwrap()), 2);
    assert!(matches!(old.decrypt(11, &new_blob), Err(PiiError::UnknownKey(2))));
}

#[test]
fn in_memory_rotation() {
    let mut keys = keyring();
    let blob = keys.encrypt(1, &sample()).unwrap();
    assert_eq!(keys.rotate().unwrap(), 2);
    assert_eq!(keys.active_key_id(), 2);
    assert_eq!(keys.decrypt(1, &blob).unwrap(), sample());
}

#[test]
fn spec_errors() {
    let short = &KEY_A[..62];
    let not_hex = format!("{}zz", &KEY_A[..62]);
    let cases = [
        (String::new(), "no keys"),
        (" ,\n ".to_string(), "no keys"),
        (format!("1:{not_hex}"), "not valid hex"),
        (format!("1:{short}"), "64 hex characters"),
        (format!("1:{KEY_A}00"), "64 hex characters"),
        (format!("1:{KEY_A},1:{KEY_B}"), "duplicate key id 1"),
        (format!("0:{KEY_A}"), "must not be 0"),
        (format!("x:{KEY_A}"), "decimal number"),
        (format!("4294967296:{KEY_A}"), "decimal number"),
        (KEY_A.to_string(), "expected <id>:"),
    ];
    for (spec, expected) in cases {
        let err = PiiKeyring::parse(&spec).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, PiiError::KeySpec(_)), "{spec:?}: {err:?}");
        assert!(message.contains(expected), "{spec:?}: {message}");
        assert!(!message.contains(&KEY_A[..16]) && !message.contains(&KEY_B[..16]), "key echoed: {message}");
    }
}

#[test]
fn debug_never_prints_keys_or_personal_data() {
    let keys = PiiKeyring::parse(&format!("2:{KEY_B},1:{KEY_A}")).unwrap();
    let text = format!("{keys:?}");
    assert!(text.contains("active_key_id: 2"), "{text}");
    assert!(!text.contains(&KEY_A[..8]) && !text.contains(&KEY_B[..8]), "{text}");
    let text = format!("{:?}", sample());
    assert!(!text.contains("Zebulon") && !text.contains("DE89"), "{text}");
}

#[test]
fn load_or_create_generates_once_with_owner_only_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pii.keys");
    let (first, generated) = PiiKeyring::load_or_create(&path).unwrap();
    assert!(generated);
    assert_eq!(first.key_ids(), vec![1]);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let blob = first.encrypt(5, &sample()).unwrap();
    let (again, generated) = PiiKeyring::load_or_create(&path).unwrap();
    assert!(!generated);
    assert_eq!(again.decrypt(5, &blob).unwrap(), sample());
}

#[test]
fn load_tolerates_whitespace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pii.keys");
    std::fs::write(&path, format!("\n  2:{KEY_B},\n  1:{KEY_A}  \n\n")).unwrap();
    let (keys, generated) = PiiKeyring::load_or_create(&path).unwrap();
    assert!(!generated);
    assert_eq!(keys.key_ids(), vec![2, 1]);
}

#[test]
fn load_reports_bad_file_without_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pii.keys");
    std::fs::write(&path, format!("1:{}", &KEY_A[..40])).unwrap();
    let message = PiiKeyring::load_or_create(&path).unwrap_err().to_string();
    assert!(message.contains("pii.keys") && message.contains("entry 1"), "{message}");
    assert!(!message.contains(&KEY_A[..16]), "{message}");
}

#[test]
fn rotate_file_keeps_old_keys_and_activates_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pii.keys");
    let (first, _) = PiiKeyring::load_or_create(&path).unwrap();
    let old_blob = first.encrypt(77, &sample()).unwrap();

    assert_eq!(PiiKeyring::rotate_file(&path).unwrap(), 2);
    let (rotated, generated) = PiiKeyring::load_or_create(&path).unwrap();
    assert!(!generated);
    assert_eq!(rotated.key_ids(), vec![2, 1]);
    assert_eq!(rotated.decrypt(77, &old_blob).unwrap(), sample());
    let new_blob = rotated.encrypt(77, &sample()).unwrap();
    assert_eq!(u32::from_le_bytes(new_blob[1..5].try_into().unwrap()), 2);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!dir.path().join("pii.keys.tmp").exists());

    assert_eq!(PiiKeyring::rotate_file(&path).unwrap(), 3);
    let (again, _) = PiiKeyring::load_or_create(&path).unwrap();
    assert_eq!(again.key_ids(), vec![3, 2, 1]);
    assert_eq!(again.decrypt(77, &old_blob).unwrap(), sample());
    assert_eq!(again.decrypt(77, &new_blob).unwrap(), sample());
}

#[test]
fn rotate_file_requires_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = PiiKeyring::rotate_file(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(err, PiiError::Io { .. }), "{err:?}");
}

fn field_of(err: PiiError) -> &'static str {
    match err {
        PiiError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn validation_names_the_field() {
    let with = |f: fn(&mut OrderPii)| {
        let mut pii = sample();
        f(&mut pii);
        pii
    };
    let cases: [(OrderPii, &str); 12] = [
        (with(|p| p.sender_name.clear()), "sender_name"),
        (with(|p| p.sender_name = "a".repeat(129)), "sender_name"),
        (with(|p| p.sender_name = "Bad\nName".into()), "sender_name"),
        (with(|p| p.sender_country = "gb".into()), "sender_country"),
        (with(|p| p.sender_country = "GBR".into()), "sender_country"),
        (with(|p| p.sender_country = "G1".into()), "sender_country"),
        (with(|p| p.recipient_name.clear()), "recipient_name"),
        (with(|p| p.recipient_name = "tab\there".into()), "recipient_name"),
        (with(|p| p.recipient_bank_account.clear()), "recipient_bank_account"),
        (with(|p| p.recipient_bank_account = "1".repeat(65)), "recipient_bank_account"),
        (with(|p| p.recipient_bank_account = "DE89/3704".into()), "recipient_bank_account"),
        (with(|p| p.recipient_bank_account = "ÄB12".into()), "recipient_bank_account"),
    ];
    let keys = keyring();
    for (pii, field) in cases {
        assert_eq!(field_of(pii.validate().unwrap_err()), field);
        assert_eq!(field_of(keys.encrypt(1, &pii).unwrap_err()), field);
    }
    let unicode_max = with(|p| p.sender_name = "é".repeat(64));
    assert!(unicode_max.validate().is_ok(), "128 bytes of UTF-8");
    assert_eq!(field_of(with(|p| p.sender_name = "é".repeat(65)).validate().unwrap_err()), "sender_name");
}

#[test]
fn largest_pii_fits_the_slot() {
    let pii = OrderPii {
        sender_name: "S".repeat(128),
        sender_country: "ZZ".into(),
        recipient_name: "R".repeat(128),
        recipient_bank_account: "9".repeat(64),
    };
    let keys = keyring();
    let blob = keys.encrypt(u128::MAX, &pii).unwrap();
    assert!(blob.len() <= PII_SLOT, "{} > {PII_SLOT}", blob.len());
    assert_eq!(blob.len(), 1 + 4 + 12 + (1 + 4 + 128 + 128 + 2 + 64) + 16);
    assert_eq!(keys.decrypt(u128::MAX, &blob).unwrap(), pii);
}

#[test]
fn plaintext_decoding_rejects_garbage() {
    let encoded = sample().encode().unwrap();
    assert_eq!(OrderPii::decode(&encoded).unwrap(), sample());
    for cut in 0..encoded.len() {
        assert!(matches!(OrderPii::decode(&encoded[..cut]), Err(PiiError::Malformed(_))), "cut at {cut}");
    }
    assert!(matches!(OrderPii::decode(&[1, 1, 0xff, 2, b'G', b'B', 1, b'x', 1, b'y']), Err(PiiError::Malformed(_))));
    assert!(matches!(OrderPii::decode(&[1, 1, b'a', 2, b'g', b'b', 1, b'x', 1, b'y']), Err(PiiError::Malformed(_))));
}
