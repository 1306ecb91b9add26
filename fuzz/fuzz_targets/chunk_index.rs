//! `ChunkIndex::from_slice` on arbitrary bytes: it must never panic, and whatever it accepts must survive a
//! round trip through its canonical bytes unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mast_protocol::bundle::{ChunkIndex, IndexLimits, Reassembler, verify_chunk};

fuzz_target!(|data: &[u8]| {
    let limits = IndexLimits::default();
    let Ok(index) = ChunkIndex::from_slice(data, &limits) else {
        return;
    };
    let bytes = index.to_bytes();
    let again = ChunkIndex::from_slice(&bytes, &limits)
        .expect("the canonical form of a valid index parses");
    assert_eq!(again, index);
    assert_eq!(again.to_bytes(), bytes);
    assert_eq!(
        index.chunks().iter().map(|c| c.raw_length()).sum::<u64>(),
        index.tar_length()
    );
    // The input itself is never a chunk the index vouches for, so verification must refuse it cleanly.
    if let Some(first) = index.chunks().first() {
        assert!(verify_chunk(first, data).is_err());
        assert!(Reassembler::new(&index).feed(data).is_err());
    }
    let _ = index.missing(|d| d.as_bytes()[0] % 2 == 0).count();
});
