//! Fuzz target for the CSV import parser (issue 13, trust boundaries).
//!
//! `fuzz_import_csv` writes CSV files built from field values that are
//! valid, empty, tricky (signs, points, UUIDs, overflow, quotes, non-ASCII)
//! or random, in shuffled or broken headers, then edits their bytes, and
//! runs the validation pass of `bursar import` (header, rows, linked chains,
//! batching). Nothing panics; every accepted row is a transfer request the
//! server's own checks accept; every batch is within the request limits and
//! never ends inside a linked chain.
//!
//! `BURSAR_FUZZ_CASES` sets the number of cases (see docs/security/fuzz.md).

use super::*;
use bursar_fuzz as fz;
use proptest::prelude::*;

const NAMES: [&str; 12] = [
    "id",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "ledger",
    "code",
    "flags",
    "pending_id",
    "timeout",
    "user_data_128",
    "user_data_64",
    "user_data_32",
];

fn field() -> impl Strategy<Value = String> {
    let tricky = proptest::sample::select(vec![
        "",
        " ",
        "0",
        "1",
        "2",
        "+1",
        "-1",
        "1.5",
        "1e3",
        " 7 ",
        "340282366920938463463374607431768211455",
        "340282366920938463463374607431768211456",
        "4294967295",
        "4294967296",
        "65535",
        "65536",
        "18446744073709551616",
        "00000000-0000-0000-0000-00000000002a",
        "00000000-0000-0000-0000-00000000002g",
        "linked",
        "pending",
        "post_pending",
        "void_pending",
        "linked|pending",
        "linked|linked",
        "balancing_debit|closing_credit",
        "\"quoted, with comma\"",
        "\"",
        "é",
        "\u{feff}id",
    ]);
    prop_oneof![
        3 => tricky.prop_map(String::from),
        2 => (0u64..10).prop_map(|n| n.to_string()),
        1 => any::<u128>().prop_map(|n| n.to_string()),
        1 => ".{0,12}",
    ]
}

/// A CSV file: a header (all, some or shuffled columns) and rows.
fn csv_text() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        3 => Just(NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        1 => Just(NAMES[..7].iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        1 => Just(NAMES.to_vec()).prop_shuffle().prop_map(|v| v.iter().map(|s| s.to_string()).collect()),
        1 => proptest::collection::vec(proptest::sample::select(NAMES.to_vec()).prop_map(String::from), 0..14),
    ];
    (header, proptest::collection::vec(proptest::collection::vec(field(), 0..14), 0..12)).prop_map(|(h, rows)| {
        let mut out = h.join(",");
        out.push('\n');
        for r in rows {
            out.push_str(&r.join(","));
            out.push('\n');
        }
        out.into_bytes()
    })
}

/// The validation pass of `run`: rows, chains, batches; errors collected.
fn validate(path: &Path, size: u32) -> Result<(Vec<Batch>, Vec<RowError>), CliError> {
    let mut rows = CsvRows::open(path)?;
    let mut batcher = Batcher::new(size);
    let (mut batches, mut errors) = (Vec::new(), Vec::new());
    while let Some(r) = rows.next_row() {
        match r {
            Ok(row) => {
                if let Err(e) = batcher.push(row, &mut batches) {
                    errors.push(e);
                }
            }
            Err(e) => {
                let fatal = e.fatal;
                errors.push(e);
                if fatal {
                    break;
                }
            }
        }
    }
    if let Err(e) = batcher.finish(&mut batches) {
        errors.push(e);
    }
    let _ = rows.hash();
    Ok((batches, errors))
}

proptest! {
    #![proptest_config(fz::config(512))]

    #[test]
    fn fuzz_import_csv(text in csv_text(), edits in prop_oneof![3 => Just(Vec::new()), 1 => fz::mutations(4)], size in 1u32..5) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.csv");
        std::fs::write(&path, fz::mutated(text, &edits)).expect("write csv");
        let Ok((batches, errors)) = validate(&path, size) else { return Ok(()) };
        for e in &errors {
            prop_assert!(!e.message.is_empty());
        }
        for (i, b) in batches.iter().enumerate() {
            prop_assert_eq!(b.index, i as u64);
            prop_assert!(!b.rows.is_empty() && b.rows.len() <= BATCH_MAX && b.bytes <= HARD_BYTES);
            prop_assert!(!b.rows.last().expect("not empty").linked, "batch {} ends inside a linked chain", i);
            for row in &b.rows {
                let req: TransferRequest = serde_json::from_str(&row.json).expect("rows are JSON the API takes");
                prop_assert!(req.to_record().is_ok(), "line {} passed but the server refuses it", row.line);
                prop_assert!(row.line >= 2);
            }
        }
    }
}
