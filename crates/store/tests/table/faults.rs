use super::*;
use bursar_store::Fault;
use bursar_store::block::{BlockAddress, BlockFault, BlockKind};
use bursar_store::error::TableFault;
use bursar_store::limits::{BLOCK_HEADER_SIZE, BLOCK_SIZE};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

const BS: u64 = BLOCK_SIZE as u64;

fn flip_bit(path: &Path, bit: u64) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, bit / 8).unwrap();
    byte[0] ^= 1 << (bit % 8);
    f.write_all_at(&byte, bit / 8).unwrap();
}

/// Opens the table and reads every entry; the first error, if any.
fn open_and_read(path: &Path, file_id: u64) -> Result<Vec<(u64, u32)>, StoreError> {
    all(&Table::<u64, u32>::open(path, file_id, &cache())?)
}

/// The bytes of each block that carry something: its header and its
/// payload (the rest is zero padding, under the checksum all the same).
fn used_bytes(path: &Path) -> Vec<std::ops::Range<u64>> {
    let bytes = fs::read(path).unwrap();
    bytes
        .chunks(BLOCK_SIZE)
        .enumerate()
        .map(|(i, b)| {
            let len = u32::from_le_bytes(b[24..28].try_into().unwrap()) as u64;
            i as u64 * BS..i as u64 * BS + BLOCK_HEADER_SIZE as u64 + len
        })
        .collect()
}

/// Every bit of every header and payload, and one bit in every 61st byte
/// of padding: each flip is corruption of the flipped block, found at open
/// (footer, index, filter) or by the read of the data block.
#[test]
fn every_bit_flip_is_corruption_named_by_file_and_block() {
    let d = dir();
    let entries: Vec<(u64, u32)> = (0..30u64).map(|i| (i * i * 1009, i as u32)).collect();
    let (path, info) = write(d.path(), "t", 21, entries.clone());
    assert_eq!(info.blocks, 4);
    let used = used_bytes(&path);
    let mut bits: Vec<u64> = used.iter().flat_map(|r| r.start * 8..r.end * 8).collect();
    let padding = (0..info.file_size).step_by(61).filter(|b| !used.iter().any(|r| r.contains(b)));
    bits.extend(padding.map(|byte| byte * 8 + byte % 8));
    assert!(bits.len() > 10_000, "{} bits", bits.len());
    for &bit in &bits {
        flip_bit(&path, bit);
        let err = open_and_read(&path, 21).expect_err("a flipped bit never reads as a table");
        let (file, offset, fault) = corrupt_at(err);
        assert_eq!((file.as_path(), offset), (path.as_path(), bit / 8 / BS * BS), "bit {bit}");
        assert_eq!(fault, Fault::Block(BlockFault::Checksum), "bit {bit}");
        flip_bit(&path, bit);
    }
    assert_eq!(open_and_read(&path, 21).unwrap(), entries, "every flip was undone");
}

#[test]
fn a_damaged_data_block_is_found_by_the_read_that_touches_it() {
    let d = dir();
    let n = 20_000u64;
    let (path, info) = write(d.path(), "t", 2, (0..n).map(|i| (i, i as u32)));
    assert!(info.data_blocks >= 3);
    flip_bit(&path, (BS + 100) * 8);
    let t = Table::<u64, u32>::open(&path, 2, &cache()).expect("open reads no data block");
    assert_eq!(t.get(&0).unwrap(), Some(0), "block 0 is intact");
    assert_eq!(t.get(&(n - 1)).unwrap(), Some((n - 1) as u32));
    let in_block_1 = (BLOCK_SIZE as u64 - 32) / 12 + 5;
    let (file, offset, _) = corrupt_at(t.get(&in_block_1).unwrap_err());
    assert_eq!((file, offset), (path.clone(), BS));
    let mut range = t.range(..);
    let errors: Vec<_> = range.by_ref().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 1, "a range stops at the first damaged block");
    assert!(range.next().is_none());
}

#[test]
fn every_truncation_is_corruption() {
    let d = dir();
    let (path, info) = write(d.path(), "t", 8, (0..10_000u64).map(|i| (i, i as u32)));
    let whole = fs::read(&path).unwrap();
    let mut lengths: Vec<u64> = (0..info.blocks).flat_map(|b| [b * BS, b * BS + 1, b * BS + BS / 2]).collect();
    lengths.push(info.file_size - 1);
    for len in lengths {
        fs::write(&path, &whole[..len as usize]).unwrap();
        let (file, offset, fault) = corrupt_at(open_and_read(&path, 8).unwrap_err());
        assert_eq!(file, path);
        if len % BS == 0 && len > 0 {
            // Ends on a block boundary: the last block is not a footer.
            assert_eq!(offset, len - BS, "len {len}");
            assert!(
                matches!(fault, Fault::Block(BlockFault::Kind { expected: BlockKind::TableFooter, .. })),
                "{fault}"
            );
        } else {
            assert_eq!((offset, fault), (len / BS * BS, Fault::Truncated { len, expected: (len / BS + 1) * BS }));
        }
    }
    // Shrunk after open: the read that reaches past the end says so.
    fs::write(&path, &whole).unwrap();
    let t = Table::<u64, u32>::open(&path, 8, &cache()).unwrap();
    OpenOptions::new().write(true).open(&path).unwrap().set_len(BS).unwrap();
    let (_, offset, fault) = corrupt_at(t.get(&9_999).unwrap_err());
    assert_eq!((offset, fault), (BS, Fault::Truncated { len: BS, expected: 2 * BS }));
}

#[test]
fn a_table_read_as_other_types_or_under_another_id_is_refused() {
    let d = dir();
    let (path, info) = write(d.path(), "t", 8, (0..100u64).map(|i| (i, i as u32)));
    let footer = (info.blocks - 1) * BS;
    let (_, offset, fault) = corrupt_at(Table::<u64, u64>::open(&path, 8, &cache()).err().unwrap());
    let shape = TableFault::Shape { key_size: 8, value_size: 4, expected_key: 8, expected_value: 8 };
    assert_eq!((offset, fault), (footer, Fault::Table(shape)));
    let (_, offset, fault) = corrupt_at(Table::<u64, u32>::open(&path, 9, &cache()).err().unwrap());
    let misplaced = BlockFault::Misplaced {
        expected: BlockAddress { file_id: 9, index: info.blocks - 1 },
        found: BlockAddress { file_id: 8, index: info.blocks - 1 },
    };
    assert_eq!((offset, fault), (footer, Fault::Block(misplaced)));
}

/// Intact blocks that do not belong together (here: a data block of
/// another table with the same id and shape) are caught by the checks
/// of the data against the index and the footer.
#[test]
fn an_intact_block_from_another_table_is_refused() {
    let d = dir();
    let (a, _) = write(d.path(), "a", 8, (0..20_000u64).map(|i| (i * 2, 0u32)));
    let (b, _) = write(d.path(), "b", 8, (0..20_000u64).map(|i| (i * 2 + 1, 0u32)));
    let mut bytes = fs::read(&a).unwrap();
    bytes[BLOCK_SIZE..2 * BLOCK_SIZE].copy_from_slice(&fs::read(&b).unwrap()[BLOCK_SIZE..2 * BLOCK_SIZE]);
    fs::write(&a, bytes).unwrap();
    let t = Table::<u64, u32>::open(&a, 8, &cache()).unwrap();
    let (_, offset, fault) = corrupt_at(all(&t).unwrap_err());
    assert_eq!((offset, fault), (BS, Fault::Table(TableFault::Data("its first key differs from the index"))));
}

#[test]
fn a_missing_file_is_an_io_error() {
    let d = dir();
    let err = Table::<u64, u32>::open(&d.path().join("none"), 1, &cache()).err().unwrap();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
}

/// Rewrites block `index` of a table with `change` applied to its payload,
/// sealed with a valid checksum: bytes a buggy writer could have produced.
fn reseal(path: &Path, file_id: u64, index: u64, kind: BlockKind, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    let at = BlockAddress { file_id, index };
    let range = index as usize * BLOCK_SIZE..(index as usize + 1) * BLOCK_SIZE;
    let mut payload = bursar_store::block::open(kind, at, &bytes[range.clone()]).unwrap().to_vec();
    change(&mut payload);
    let block: &mut [u8; BLOCK_SIZE] = (&mut bytes[range]).try_into().unwrap();
    bursar_store::block::seal(kind, at, &payload, block);
    fs::write(path, bytes).unwrap();
}

/// A footer that passes its checksum but lies in any one byte (every bit
/// of it inverted) is refused with a typed fault: never a panic, never a
/// table that reads. The same for an index block.
#[test]
fn every_byte_of_a_resealed_footer_or_index_is_checked() {
    let d = dir();
    let (path, info) = write(d.path(), "t", 6, (0..8_000u64).map(|i| (i * 5, i as u32)));
    assert_eq!(info.data_blocks, 2);
    let whole = fs::read(&path).unwrap();
    let footer = info.blocks - 1;
    let payloads = [(footer, BlockKind::TableFooter, 104 + 16), (info.data_blocks, BlockKind::TableIndex, 16)];
    for (index, kind, len) in payloads {
        for byte in 0..len {
            reseal(&path, 6, index, kind, |p| {
                assert_eq!(p.len(), len, "{kind:?} payload");
                p[byte] ^= 0xff;
            });
            let (file, offset, fault) = corrupt_at(open_and_read(&path, 6).unwrap_err());
            assert_eq!(file, path);
            assert!(matches!(fault, Fault::Table(_)), "{kind:?} byte {byte}: {fault}");
            // Found where the lie is, or at the block that contradicts it
            // (a footer's min key against the index, an index key against
            // its data block).
            assert!(offset.is_multiple_of(BS) && offset < info.file_size, "{kind:?} byte {byte} at {offset}");
            if (kind, byte) == (BlockKind::TableFooter, 0) {
                assert_eq!(fault, Fault::Table(TableFault::Format { found: 0xfe, expected: 1 }));
            }
            fs::write(&path, &whole).unwrap();
        }
    }
}
