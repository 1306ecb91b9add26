//! TUF metadata parsing on arbitrary bytes: it must never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mast_protocol::tuf::parse_any_metadata(data);
});
