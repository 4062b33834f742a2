//! The fuzz corpus as regression tests: every input saved under `fuzz/corpus/TARGET`
//! (the seeds, what `scripts/fuzz` found interesting, and every crash it ever found,
//! copied in once fixed) goes through the same check as the fuzz target, on stable, in
//! CI. Then a short pass of pseudo-random inputs per target, from a fixed seed.

use std::path::PathBuf;

use fstore_tests::fuzz::TARGETS;

/// The repository's `fuzz/` directory, found from the test's package at run time.
fn fuzz_dir() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    manifest.join("..").join("fuzz")
}

#[test]
fn every_saved_input_passes_its_check() {
    let mut replayed = 0;
    for (target, check) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!("{}: {e}; every target keeps its seeds there", dir.display())
        });
        let mut n = 0;
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a corpus file");
            check(&data);
            n += 1;
        }
        assert!(n > 0, "{target} has no corpus in {}", dir.display());
        replayed += n;
    }
    println!("replayed {replayed} saved inputs");
}

#[test]
fn a_short_random_pass_finds_nothing() {
    // xorshift64*: the same inputs on every run.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for (_, check) in TARGETS {
        for _ in 0..300 {
            let len = (next() % 96) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            check(&data);
        }
    }
}
