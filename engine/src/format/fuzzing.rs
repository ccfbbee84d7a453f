//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*`) and the stable test
//! that replays `fuzz/corpus/*`, so CI exercises exactly what the fuzzers run.
//!
//! Each takes arbitrary bytes, must return without panicking, and checks a property on
//! success: what decodes re-encodes to the same bytes.

use super::*;

/// Decode a chunk of either kind; a decoded chunk re-encodes to the same bytes.
pub fn chunk(data: &[u8]) {
    match decode_chunk(data) {
        Ok(ChunkBody::Entries(entries)) => {
            let again = encode_entries_chunk(entries.iter().map(|e| (e.key.as_slice(), e.value.as_deref())));
            assert!(again == data, "entries chunk does not re-encode to its bytes");
        }
        Ok(ChunkBody::RunIndex(index)) => {
            assert!(encode_run_index_chunk(&index) == data, "run index does not re-encode to its bytes");
        }
        Err(_) => {}
    }
}

/// Decode a segment's header, trailer and chunk table, then every chunk it lists.
pub fn segment(data: &[u8]) {
    if let Ok((_, chunks)) = decode_segment(data) {
        for c in chunks {
            let stored = usize::try_from(c.offset)
                .ok()
                .and_then(|start| data.get(start..start.checked_add(c.stored_len as usize)?));
            if let Some(stored) = stored {
                let copied = segment_chunk_bytes(&c, stored);
                let owned = segment_chunk_into_raw(&c, stored.to_vec());
                assert!(copied.as_ref().ok() == owned.as_ref().ok(), "the two chunk readers disagree");
                if let Ok(raw) = copied {
                    assert!(ChunkHash::of(&raw) == c.hash, "a verified chunk has another hash");
                    chunk(&raw);
                }
            }
        }
    }
}

/// Delta chunks, both ways. The input is a 2-byte base length, then the base, then the rest:
/// a delta of the rest against the base must rebuild the rest exactly, and the rest read as
/// a delta's stored bytes against the base must give `Ok` or `Err`, never a panic.
pub fn delta(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else { return };
    let split = usize::from(u16::from_le_bytes(*len)) % (rest.len() + 1);
    let (base, target) = rest.split_at(split);
    let base_hash = ChunkHash::of(base);
    let as_delta = |stored: &[u8], raw_len: usize, hash: ChunkHash| SegmentChunk {
        hash,
        offset: 0,
        stored_len: stored.len() as u32,
        raw_len: raw_len as u32,
        codec: Codec::Delta,
        kind: ChunkKind::Entries,
    };
    if let Some(stored) = encode_delta(&base_hash, base, target) {
        assert!(delta_base(&stored).ok() == Some(base_hash), "a delta names another base");
        let chunk = as_delta(&stored, target.len(), ChunkHash::of(target));
        assert!(
            apply_delta(&chunk, &stored, base).ok().as_deref() == Some(target),
            "a delta does not rebuild its chunk"
        );
    }
    // Arbitrary stored bytes: the raw length claimed is the stored length, doubled.
    let claimed = target.len().saturating_mul(2);
    let chunk = as_delta(target, claimed, ChunkHash([0; 32]));
    if let Ok(raw) = apply_delta(&chunk, target, base) {
        assert!(ChunkHash::of(&raw) == chunk.hash, "a rebuilt delta has another hash");
    }
}

/// Decode a manifest; a decoded manifest re-encodes to the same bytes and hash.
pub fn manifest(data: &[u8]) {
    if let Ok((m, hash)) = decode_manifest(data) {
        let (again, again_hash) = encode_manifest(&m);
        assert!(again == data && again_hash == hash, "manifest does not re-encode to its bytes");
    }
}

/// Decode HEAD, PINS and the store marker.
pub fn head(data: &[u8]) {
    if let Ok(h) = decode_head(data) {
        assert!(encode_head(&h).as_slice() == data, "HEAD does not re-encode to its bytes");
    }
    if let Ok(pins) = decode_pins(data) {
        assert!(encode_pins(&pins) == data, "PINS does not re-encode to its bytes");
    }
    let _ = decode_store_marker(data);
}

/// Decode a global checkpoint record; a decoded record re-encodes to the same bytes.
pub fn global(data: &[u8]) {
    if let Ok(record) = decode_global(data) {
        assert!(encode_global(&record).as_deref() == Some(data), "global record does not re-encode to its bytes");
    }
}

/// Decode a journal; a decoded journal re-encodes to the same bytes.
pub fn journal(data: &[u8]) {
    if let Ok(entries) = decode_journal(data) {
        assert!(encode_journal(&entries) == data, "journal does not re-encode to its bytes");
    }
}
