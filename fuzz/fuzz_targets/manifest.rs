//! `manifest::split` on arbitrary bytes: it must never panic or run past its budget, and every object it
//! returns must carry the identity fields it promises. `manifest::identify` (the packager's reader, with its
//! fast scanner) must accept exactly what `split` accepts, with the same identities.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mast_protocol::manifest::{ManifestLimits, identify, split};

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
    let split = split(text, &limits);
    let identified = identify(text, &limits);
    assert_eq!(split.is_ok(), identified.is_ok(), "{text:?}");
    let (Ok(objects), Ok(identified)) = (split, identified) else {
        return;
    };
    assert_eq!(objects.len(), identified.len());
    for (object, found) in objects.iter().zip(&identified) {
        assert_eq!((&object.id, &object.api_version, object.document), (&found.id, &found.api_version, found.document));
    }
    assert!(objects.len() <= limits.max_documents);
    for object in &objects {
        assert!(!object.id.kind.is_empty() && !object.id.name.is_empty());
        assert!(!object.api_version.is_empty());
        assert_eq!(object.value["kind"].as_str(), Some(object.id.kind.as_str()));
    }
});
