//! `manifest::split` on arbitrary bytes: it must never panic or run past its budget, and every object it
//! returns must carry the identity fields it promises.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mast_protocol::manifest::{ManifestLimits, split};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = ManifestLimits {
        max_file_bytes: 1 << 20,
        max_documents: 64,
        max_depth: 32,
        max_nodes: 100_000,
        max_aliases: 64,
    };
    let Ok(objects) = split(text, &limits) else {
        return;
    };
    assert!(objects.len() <= limits.max_documents);
    for object in &objects {
        assert!(!object.id.kind.is_empty() && !object.id.name.is_empty());
        assert!(!object.api_version.is_empty());
        assert_eq!(object.value["kind"].as_str(), Some(object.id.kind.as_str()));
    }
});
