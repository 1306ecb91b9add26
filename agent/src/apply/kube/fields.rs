//! The fields mast manages on an object, for drift and for the bundle's ignored fields: the manifest
//! read as a subset of the live object, compared by JSON pointer.

use mast_protocol::bundle::options::BundleOptions;
use serde_json::Value;

use super::{FIELD_MANAGER, Manifest};

/// What mast manages of an object, for drift: the manifest without its identity, server-set metadata,
/// status, and the bundle's ignored fields for its kind.
pub(super) fn desired_fields(m: &Manifest, options: &BundleOptions) -> Value {
    let mut desired = m.value.clone();
    if let Some(map) = desired.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|k, _| k == "labels" || k == "annotations");
        }
    }
    for path in ignored(m, options) {
        remove_pointer(&mut desired, path);
    }
    desired
}

/// The bundle's ignored fields for `m`'s kind.
pub(super) fn ignored<'a>(
    m: &'a Manifest,
    options: &'a BundleOptions,
) -> impl Iterator<Item = &'a str> {
    options
        .ignore
        .iter()
        .filter(|i| i.group == m.id.group && i.kind == m.id.kind)
        .flat_map(|i| i.paths.iter().map(String::as_str))
}

/// Whether a field manager other than mast owns the field at `pointer` of `live`, by its
/// `managedFields` (a pointer into a list never matches: lists are keyed there, not indexed).
pub(super) fn owned_by_another(live: &Value, pointer: &str) -> bool {
    let keys: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| format!("f:{}", p.replace("~1", "/").replace("~0", "~")))
        .collect();
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return false;
    };
    entries
        .iter()
        .filter(|e| e.get("manager").and_then(Value::as_str) != Some(FIELD_MANAGER))
        .any(|e| {
            let mut at = e.get("fieldsV1");
            for key in &keys {
                at = at.and_then(|a| a.get(key));
            }
            at.is_some()
        })
}

pub(super) fn remove_pointer(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match value.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.remove(&last);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                // Null rather than remove: the other indices keep their meaning.
                items[i] = Value::Null;
            }
        }
        _ => {}
    }
}

/// JSON pointers where `live` differs from `desired`, reading `desired` as a subset: keys the server
/// added (defaults, other managers' fields) are not drift, a list must have the same length.
pub(super) fn differences(desired: &Value, live: &Value, at: String, out: &mut Vec<String>) {
    match (desired, live) {
        (Value::Null, _) => {}
        (Value::Object(want), Value::Object(have)) => {
            for (key, value) in want {
                let path = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match have.get(key) {
                    Some(live) => differences(value, live, path, out),
                    None if value.is_null() => {}
                    None => out.push(path),
                }
            }
        }
        (Value::Array(want), Value::Array(have)) if want.len() == have.len() => {
            for (i, (w, h)) in want.iter().zip(have).enumerate() {
                differences(w, h, format!("{at}/{i}"), out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (want, have) if want == have => {}
        _ => out.push(if at.is_empty() { "/".to_owned() } else { at }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn drift_reads_the_manifest_as_a_subset_of_the_live_object() {
        let desired = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}, "metadata": {"labels": {"app": "a"}}});
        let live = json!({
            "metadata": {"labels": {"app": "a"}, "uid": "u"},
            "spec": {"replicas": 5, "strategy": {}, "template": {"spec": {"containers": [{"name": "a", "image": "x:2", "imagePullPolicy": "IfNotPresent"}]}}},
        });
        let mut out = Vec::new();
        differences(&desired, &live, String::new(), &mut out);
        assert_eq!(
            out,
            [
                "/metadata/labels/app",
                "/spec/replicas",
                "/spec/template/spec/containers/0/image"
            ][1..]
        );
        let mut gone = desired.clone();
        remove_pointer(&mut gone, "/spec/replicas");
        let mut out = Vec::new();
        differences(&gone, &live, String::new(), &mut out);
        assert_eq!(out, ["/spec/template/spec/containers/0/image"]);
    }
}
