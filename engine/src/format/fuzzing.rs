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
