//! Fields as the test API server tracks them: JSON pointers to the leaves of an object's nested
//! mappings (a list is one leaf), and the pointer operations server-side apply needs.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::store::{Resource, Target};

/// The fields of `object` that a write through `target` may own.
pub(super) fn field_set(object: &Value, resource: &Resource, target: Target) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (key, value) in map {
        let path = format!("/{}", escape(key));
        match (key.as_str(), target) {
            ("apiVersion" | "kind", _) => {}
            ("status", Target::Status) => leaves(value, path, &mut out),
            ("status", Target::Main) if !resource.status => leaves(value, path, &mut out),
            ("status", Target::Main) | (_, Target::Status) => {}
            ("metadata", Target::Main) => {
                for part in ["labels", "annotations"] {
                    if let Some(v) = value.get(part) {
                        leaves(v, format!("/metadata/{part}"), &mut out);
                    }
                }
            }
            (_, Target::Main) => leaves(value, path, &mut out),
        }
    }
    out
}

pub(super) fn leaves(value: &Value, path: String, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                leaves(v, format!("{path}/{}", escape(k)), out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

pub(super) fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

pub(super) fn unescape(part: &str) -> String {
    part.replace("~1", "/").replace("~0", "~")
}

/// `/spec/replicas` as a real server names it in a conflict: `.spec.replicas`.
pub(super) fn dotted(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(unescape)
        .fold(String::new(), |acc, p| format!("{acc}.{p}"))
}

pub(super) fn set_pointer(object: &mut Value, pointer: &str, value: Value) {
    let parts: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    let mut at = object;
    for (i, part) in parts.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        let Value::Object(map) = at else { return };
        if i + 1 == parts.len() {
            map.insert(part.clone(), value);
            return;
        }
        at = map.entry(part.clone()).or_insert_with(|| json!({}));
    }
}

/// Removes the field and any mapping it leaves empty (but never `metadata` itself).
pub(super) fn remove_pointer(object: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let removed = object
        .pointer_mut(if parent.is_empty() { "" } else { parent })
        .and_then(Value::as_object_mut)
        .map(|map| map.remove(&unescape(last)));
    if removed.is_some()
        && !parent.is_empty()
        && parent != "/metadata"
        && object
            .pointer(parent)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        remove_pointer(object, parent);
    }
}

/// `fieldsV1` of a field set: `{"f:spec": {"f:replicas": {}}}`.
pub(super) fn fields_v1(fields: &BTreeSet<String>) -> Value {
    let mut root = json!({});
    for field in fields {
        let pointer: String = field
            .split('/')
            .skip(1)
            .map(|p| format!("/f:{p}"))
            .collect();
        set_pointer(&mut root, &pointer, json!({}));
    }
    root
}
