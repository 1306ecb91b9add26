//! `walk` on arbitrary bytes: it must never panic, and any file set it accepts must be one the canonical
//! builder accepts too and reads back identically.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mast_protocol::bundle::{WalkLimits, build_tar, walk};

fuzz_target!(|data: &[u8]| {
    // Tighter than the defaults so that the fuzzer also reaches the limits.
    let limits = WalkLimits {
        max_entries: 64,
        max_entry_size: 64 << 10,
        max_total_size: 256 << 10,
    };
    let Ok(files) = walk(data, &limits) else {
        return;
    };
    let mut expected: Vec<_> = files
        .iter()
        .map(|f| (f.path.clone(), f.data.to_vec()))
        .collect();
    expected.sort();
    let rebuilt = build_tar(expected.clone()).expect("a file set the walker accepted builds");
    let back: Vec<_> = walk(&rebuilt, &WalkLimits::default())
        .expect("a canonical tar walks")
        .into_iter()
        .map(|f| (f.path, f.data.to_vec()))
        .collect();
    assert_eq!(back, expected);
});
