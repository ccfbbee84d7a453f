//! Format tests: pinned bytes of every encoder (fixtures in `engine/fixtures/v3/`), round trips,
//! and rejection of every truncation and every flipped byte where a check covers it.
//!
//! A deliberate format change: bump `FORMAT_VERSION`, update `format-spec.md`, then regenerate
//! the fixtures with `CAIRN_BLESS=1 cargo test -p cairn format::tests`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use std::path::PathBuf;

fn fixture(name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/v3").join(name);
    if std::env::var_os("CAIRN_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let pinned = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("fixture {} missing ({e}); see the module docs", path.display()));
    assert!(
        pinned == bytes,
        "encoding of {name} differs from the pinned fixture: a format change needs a version bump"
    );
}

fn sample_entries() -> Vec<u8> {
    encode_entries_chunk([
        (&b"apple"[..], Some(&b"1"[..])),
        (&b"banana"[..], None),
        (&b"cherry"[..], Some(&[0u8; 3][..])),
    ])
}

fn sample_run_index() -> RunIndex {
    RunIndex {
        chunks: vec![
            RunIndexEntry { hash: ChunkHash([7; 32]), entries: 3, first_key: b"apple".to_vec() },
            RunIndexEntry { hash: ChunkHash([9; 32]), entries: 200, first_key: b"kiwi".to_vec() },
        ],
    }
}

fn sample_manifest() -> Manifest {
    Manifest {
        id: CheckpointId(5),
        kind: ManifestKind::Compaction,
        parent: Some((CheckpointId(4), ManifestHash([3; 32]))),
        created_unix_ms: 1_700_000_000_000,
        stats: ManifestStats { dirty_keys: 3, segment_bytes: 400, chunks_new: 2, chunks_reused: 1, duration_us: 1234 },
        metadata: b"offset=42".to_vec(),
        tables: vec![
            ManifestTable {
                name: "counts".into(),
                runs: vec![RunRef { index: ChunkHash([1; 32]), entries: 3, data_bytes: 30, chunks: 1 }],
            },
            ManifestTable { name: "empty".into(), runs: vec![] },
        ],
    }
}

fn sample_segment() -> Vec<u8> {
    let mut w = SegmentWriter::new(SegmentId(2));
    let raw = sample_entries();
    w.push(ChunkHash::of(&raw), ChunkKind::Entries, &raw, Codec::None);
    let compressible = encode_entries_chunk([(&b"k"[..], Some(&[b'x'; 300][..]))]);
    w.push(ChunkHash::of(&compressible), ChunkKind::Entries, &compressible, Codec::Lz4);
    let index = encode_run_index_chunk(&sample_run_index());
    w.push(ChunkHash::of(&index), ChunkKind::RunIndex, &index, Codec::None);
    // An entries chunk, and a chunk stored as a delta against it (one value differs).
    let (base, target) = sample_delta_pair();
    w.push(ChunkHash::of(&base), ChunkKind::Entries, &base, Codec::None);
    let stored = encode_delta(&ChunkHash::of(&base), &base, &target).unwrap();
    w.push_delta(ChunkHash::of(&target), target.len(), &stored);
    w.finish().0
}

/// Two entries chunks of the same 12 keys (40-byte values), the second with one value changed.
fn sample_delta_pair() -> (Vec<u8>, Vec<u8>) {
    let chunk = |changed: u8| {
        let entries: Vec<([u8; 1], [u8; 40])> =
            (0u8..12).map(|i| ([i], [if i == changed { 0xee } else { i }; 40])).collect();
        encode_entries_chunk(entries.iter().map(|(k, v)| (&k[..], Some(&v[..]))))
    };
    (chunk(99), chunk(5))
}

/// A chunk of `segment` read back and verified; a delta chunk against its base in the same
/// segment.
fn read_in_segment(segment: &[u8], chunks: &[SegmentChunk], c: &SegmentChunk) -> Result<Vec<u8>, DecodeError> {
    let stored_of = |c: &SegmentChunk| &segment[c.offset as usize..][..c.stored_len as usize];
    if c.codec != Codec::Delta {
        return segment_chunk_bytes(c, stored_of(c));
    }
    let stored = stored_of(c);
    let base_hash = delta_base(stored)?;
    let base =
        chunks.iter().find(|b| b.hash == base_hash && b.codec != Codec::Delta).ok_or(DecodeError::Checksum("base"))?;
    apply_delta(c, stored, &segment_chunk_bytes(base, stored_of(base))?)
}

fn sample_head() -> Head {
    Head {
        current: CheckpointId(5),
        manifest_hash: ManifestHash([4; 32]),
        max_checkpoint_id: CheckpointId(7),
        max_segment_id: SegmentId(2),
    }
}

#[test]
fn varints_round_trip_and_reject_overflow() {
    for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        let mut r = Reader::new(&out);
        assert_eq!(r.varint().unwrap(), v);
        assert!(r.is_empty());
    }
    assert!(Reader::new(&[0xff; 11]).varint().is_err());
    assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).varint().is_err());
    assert!(Reader::new(&[0x80]).varint().is_err());
}

/// Regression (found by the `chunk` fuzzer in its first seconds): an overlong varint (`0x80
/// 0x00` for 0) decoded, so two different byte strings meant the same chunk and a decoded
/// chunk did not re-encode to its own bytes.
#[test]
fn overlong_varints_are_rejected() {
    assert!(Reader::new(&[0x80, 0x00]).varint().is_err());
    assert!(Reader::new(&[0xff, 0x00]).varint().is_err());
    assert_eq!(Reader::new(&[0x80, 0x01]).varint().unwrap(), 128);
    let overlong_key_len = [ChunkKind::Entries as u8, 0x81, 0x00, 0x00, b'k'];
    assert!(decode_entries(&overlong_key_len, |_, _| {}).is_err());
}

#[test]
fn entries_chunk_is_pinned_and_round_trips() {
    let bytes = sample_entries();
    fixture("entries.chunk", &bytes);
    let body = decode_chunk(&bytes).unwrap();
    let ChunkBody::Entries(entries) = body else { panic!("expected entries") };
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[1], Entry { key: b"banana".to_vec(), value: None });
    assert_eq!(entries[2].value.as_deref(), Some(&[0u8; 3][..]));
}

/// `entry_ranges` points at exactly what `decode_entries` hands on, and the entries' whole
/// ranges tile the chunk after its kind byte.
#[test]
fn entry_ranges_locate_every_entry() {
    let bytes = sample_entries();
    let ranges = entry_ranges(&bytes).unwrap();
    let mut decoded = Vec::new();
    decode_entries(&bytes, |k, v| decoded.push((k.to_vec(), v.map(<[u8]>::to_vec)))).unwrap();
    let located: Vec<_> =
        ranges.iter().map(|e| (bytes[e.key.clone()].to_vec(), e.value.clone().map(|v| bytes[v].to_vec()))).collect();
    assert_eq!(located, decoded);
    let mut at = 1;
    for e in &ranges {
        assert_eq!(e.whole.start, at);
        assert!(e.whole.start < e.key.start && e.value.as_ref().map_or(e.key.end, |v| v.end) == e.whole.end);
        at = e.whole.end;
    }
    assert_eq!(at, bytes.len());
}

#[test]
fn entries_chunk_rejects_disorder_empty_and_truncation() {
    let unordered = encode_entries_chunk([(&b"b"[..], None), (&b"a"[..], None)]);
    assert!(decode_entries(&unordered, |_, _| {}).is_err());
    let duplicate = encode_entries_chunk([(&b"a"[..], None), (&b"a"[..], None)]);
    assert!(decode_entries(&duplicate, |_, _| {}).is_err());
    assert!(decode_entries(&[ChunkKind::Entries as u8], |_, _| {}).is_err());
    assert!(decode_entries(&[], |_, _| {}).is_err());
    let bytes = sample_entries();
    for cut in 1..bytes.len() {
        // A cut at an entry boundary is a valid shorter chunk; anywhere else it must fail,
        // and in no case may the callback see an entry of a chunk that then fails.
        let mut seen = 0;
        if decode_entries(&bytes[..cut], |_, _| seen += 1).is_err() {
            assert_eq!(seen, 0, "entries of a bad chunk were reported");
        }
    }
}

#[test]
fn run_index_is_pinned_and_round_trips() {
    let bytes = encode_run_index_chunk(&sample_run_index());
    fixture("run_index.chunk", &bytes);
    assert_eq!(decode_run_index(&bytes).unwrap(), sample_run_index());
    for cut in 0..bytes.len() {
        assert!(decode_run_index(&bytes[..cut]).is_err(), "truncation at {cut} accepted");
    }
    let mut unordered = sample_run_index();
    unordered.chunks.reverse();
    assert!(decode_run_index(&encode_run_index_chunk(&unordered)).is_err());
}

#[test]
fn manifest_is_pinned_round_trips_and_rejects_every_flip_and_truncation() {
    let m = sample_manifest();
    let (bytes, hash) = encode_manifest(&m);
    fixture("manifest.man", &bytes);
    let (decoded, decoded_hash) = decode_manifest(&bytes).unwrap();
    assert_eq!(decoded, m);
    assert_eq!(decoded_hash, hash);
    for cut in 0..bytes.len() {
        assert!(decode_manifest(&bytes[..cut]).is_err(), "truncation at {cut} accepted");
    }
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x10;
        assert!(decode_manifest(&flipped).is_err(), "flip at byte {i} accepted");
    }
}

#[test]
fn manifest_with_unknown_version_is_unsupported() {
    let (mut bytes, _) = encode_manifest(&sample_manifest());
    bytes[8] = 9;
    assert!(matches!(decode_manifest(&bytes), Err(DecodeError::UnsupportedVersion { found: 9, .. })));
}

#[test]
fn head_is_pinned_and_rejects_every_flip() {
    let bytes = encode_head(&sample_head());
    fixture("HEAD", &bytes);
    assert_eq!(decode_head(&bytes).unwrap(), sample_head());
    for i in 0..bytes.len() {
        let mut flipped = bytes;
        flipped[i] ^= 0x01;
        assert!(decode_head(&flipped).is_err(), "flip at byte {i} accepted");
    }
    assert!(decode_head(&bytes[..HEAD_LEN - 1]).is_err());
}

#[test]
fn manifest_with_unknown_flags_is_rejected() {
    let (mut bytes, _) = encode_manifest(&sample_manifest());
    bytes[10] = 0x02;
    assert!(decode_manifest(&bytes).is_err());
}

#[test]
fn pins_are_pinned_round_trip_and_reject_every_flip() {
    let pins = vec![
        Pin { id: CheckpointId(3), name: "before-deploy".into() },
        Pin { id: CheckpointId(9), name: "nightly".into() },
    ];
    let bytes = encode_pins(&pins);
    fixture("PINS", &bytes);
    assert_eq!(decode_pins(&bytes).unwrap(), pins);
    assert_eq!(decode_pins(&encode_pins(&[])).unwrap(), vec![]);
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x08;
        assert!(decode_pins(&flipped).is_err(), "flip at byte {i} accepted");
    }
    for cut in 0..bytes.len() {
        assert!(decode_pins(&bytes[..cut]).is_err(), "truncation at {cut} accepted");
    }
}

#[test]
fn store_marker_is_pinned() {
    let bytes = encode_store_marker();
    fixture("CAIRN", &bytes);
    decode_store_marker(&bytes).unwrap();
    let mut newer = bytes;
    newer[8] = 9;
    assert!(matches!(decode_store_marker(&newer), Err(DecodeError::UnsupportedVersion { found: 9, .. })));
    // The previous version (2: no delta chunks) is refused too: there is no in-place upgrade.
    let mut older = bytes;
    older[8] = 2;
    assert!(matches!(decode_store_marker(&older), Err(DecodeError::UnsupportedVersion { found: 2, .. })));
}

#[test]
fn segment_is_pinned_and_every_chunk_reads_back_verified() {
    let bytes = sample_segment();
    fixture("segment.seg", &bytes);
    let (id, chunks) = decode_segment(&bytes).unwrap();
    assert_eq!(id, SegmentId(2));
    assert_eq!(chunks.len(), 5);
    assert_eq!(chunks[1].codec, Codec::Lz4, "a compressible chunk is stored compressed");
    assert_eq!(chunks[4].codec, Codec::Delta);
    assert!(chunks[4].stored_len < chunks[3].stored_len / 2, "a delta is stored smaller");
    for c in &chunks {
        let stored = &bytes[c.offset as usize..][..c.stored_len as usize];
        let raw = read_in_segment(&bytes, &chunks, c).unwrap();
        assert_eq!(ChunkHash::of(&raw), c.hash);
        if c.codec == Codec::Delta {
            assert_eq!(raw, sample_delta_pair().1);
            assert!(segment_chunk_bytes(c, stored).is_err(), "a delta is not read without its base");
            assert!(segment_chunk_into_raw(c, stored.to_vec()).is_err());
        } else {
            assert_eq!(segment_chunk_into_raw(c, stored.to_vec()).unwrap(), raw);
        }
    }
}

#[test]
fn segment_flips_are_detected_or_harmless_and_truncations_rejected() {
    let bytes = sample_segment();
    for cut in 0..bytes.len() {
        assert!(decode_segment(&bytes[..cut]).is_err(), "truncation at {cut} accepted");
    }
    let (_, chunks) = decode_segment(&bytes).unwrap();
    let originals: Vec<Vec<u8>> = chunks.iter().map(|c| read_in_segment(&bytes, &chunks, c).unwrap()).collect();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1 << bit;
            // A flip is caught by the table check or, inside a chunk, by its hash; otherwise
            // it must be harmless: every chunk still reads back exactly as written (e.g. a
            // flip in an LZ4 field the decoder ignores).
            let Ok((_, chunks)) = decode_segment(&flipped) else { continue };
            let caught_or_harmless = chunks.iter().zip(&originals).all(|(c, original)| {
                let stored = &flipped[c.offset as usize..][..c.stored_len as usize];
                if c.codec == Codec::Delta {
                    return read_in_segment(&flipped, &chunks, c).map_or(true, |raw| raw == *original);
                }
                let owned = segment_chunk_into_raw(c, stored.to_vec());
                match segment_chunk_bytes(c, stored) {
                    Err(_) => owned.is_err(),
                    Ok(raw) => raw == *original && owned.is_ok_and(|o| o == raw),
                }
            });
            assert!(caught_or_harmless, "flip of bit {bit} at byte {i} returned wrong bytes");
        }
    }
}

#[test]
fn global_record_is_pinned_round_trips_and_rejects_truncation() {
    let record = GlobalRecord {
        epoch: 42,
        metadata: b"job=wordcount".to_vec(),
        shards: vec![
            ShardPart { id: CheckpointId(7), metadata: b"offset=1000".to_vec() },
            ShardPart { id: CheckpointId(3), metadata: Vec::new() },
        ],
    };
    let bytes = encode_global(&record).unwrap();
    fixture("global.rec", &bytes);
    assert_eq!(decode_global(&bytes).unwrap(), record);
    for n in 0..bytes.len() {
        assert!(decode_global(&bytes[..n]).is_err(), "truncation to {n} bytes accepted");
    }
    let mut zero_id = record.clone();
    zero_id.shards[1].id = CheckpointId(0);
    assert!(decode_global(&encode_global(&zero_id).unwrap()).is_err());
    let none = GlobalRecord { shards: Vec::new(), ..record };
    assert!(decode_global(&encode_global(&none).unwrap()).is_err(), "a record names at least one shard");
}

#[test]
fn journal_is_pinned_round_trips_and_rejects_every_flip() {
    let entries = vec![
        JournalEntry {
            triggered_unix_ms: 1_790_000_000_000,
            capture_pause_us: 12,
            persist_us: 3400,
            dirty_keys: 1000,
            head_id: 7,
            failed: false,
            reason: "checkpoint aborted: aborted by its handle".into(),
        },
        JournalEntry {
            triggered_unix_ms: 1_790_000_000_500,
            capture_pause_us: 9,
            persist_us: 800,
            dirty_keys: 5,
            head_id: 7,
            failed: true,
            reason: "I/O error during fsync of segments/0000000000000009.seg: injected".into(),
        },
    ];
    let bytes = encode_journal(&entries);
    fixture("JOURNAL", &bytes);
    assert_eq!(decode_journal(&bytes).unwrap(), entries);
    for i in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x01;
        assert!(decode_journal(&flipped).is_err(), "flip at {i} accepted");
    }
    for n in 0..bytes.len() {
        assert!(decode_journal(&bytes[..n]).is_err(), "truncation to {n} accepted");
    }
}
