//! Replays every file of `fuzz/corpus/<target>/` through the same entry points the cargo-fuzz
//! targets call, so CI covers the corpus (and every crash input ever saved into it) on stable.

use std::path::PathBuf;

/// A fuzz entry point: arbitrary bytes in, no panic out.
type Target = fn(&[u8]);

#[test]
fn every_corpus_file_decodes_without_panic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let targets: [(&str, Target); 8] = [
        ("chunk", cairn::format::fuzzing::chunk),
        ("segment", cairn::format::fuzzing::segment),
        ("delta", cairn::format::fuzzing::delta),
        ("manifest", cairn::format::fuzzing::manifest),
        ("head", cairn::format::fuzzing::head),
        ("global", cairn::format::fuzzing::global),
        ("journal", cairn::format::fuzzing::journal),
        ("ops_crash", cairn::fuzz_ops::ops_crash),
    ];
    let mut replayed = 0;
    for (target, run) in targets {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
            run(&data);
            // Every prefix too: truncations are the commonest damage (and, for ops_crash,
            // shorter workloads).
            // At most 64 prefixes a file, so large inputs stay cheap.
            for cut in (0..data.len()).step_by((data.len() / 64).max(7)) {
                run(&data[..cut]);
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 6, "only {replayed} corpus files found");
}
