//! Canonical JSON as TUF signs it, and a strict JSON parser for untrusted metadata.
//!
//! TUF signs the OLPC canonical form of a document's `signed` object. What matters for interoperability is
//! not the OLPC wiki page but what the reference implementation (python-tuf, through securesystemslib's
//! `encode_canonical`) produces, since that is what signatures in the wild are made over:
//!
//! - object keys sorted by code point (the byte order of their UTF-8), no whitespace;
//! - strings with only `"` and `\` escaped, everything else written literally, no Unicode normalisation;
//! - integers only: a float anywhere is an error.
//!
//! The `olpc-cjson` crate differs on two points — it sorts keys by their quoted bytes (so `"a b"` lands before
//! `"a"`) and normalises strings to NFC — which makes signatures disagree with python-tuf for such
//! documents, so mast encodes here, over [`serde_json::Value`].
//!
//! [`parse_strict`] refuses duplicate object keys: a document that two parsers read differently is how
//! signature-wrapping attacks start, and TUF metadata never needs them.

use std::fmt;

use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a document cannot be put in canonical form or parsed strictly.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// Canonical JSON has no floating-point numbers.
    #[error("canonical JSON cannot hold the non-integer number {0}")]
    Float(Number),
    /// The value could not be turned into JSON at all.
    #[error("cannot represent the value as JSON: {0}")]
    Serialize(#[source] serde_json::Error),
    /// The bytes are not JSON, or hold a duplicate key.
    #[error("invalid JSON: {0}")]
    Parse(#[source] serde_json::Error),
}

/// The canonical bytes of `value`.
pub fn to_canonical_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

/// The canonical bytes of any serialisable value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(value).map_err(CanonicalError::Serialize)?;
    to_canonical_vec(&value)
}

/// Parses JSON, refusing duplicate keys in any object.
///
/// serde_json's own recursion limit (128 levels) bounds nesting.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, CanonicalError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue
        .deserialize(&mut de)
        .map_err(CanonicalError::Parse)?;
    de.end().map_err(CanonicalError::Parse)?;
    Ok(value)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if n.is_f64() {
                return Err(CanonicalError::Float(n.clone()));
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // serde_json's Map is a BTreeMap<String, _> (the `preserve_order` feature is off), so iteration is
            // already in byte order, which for UTF-8 is code point order. Sorting again keeps this correct
            // should a dependency ever switch that feature on.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A `serde_json::Value` seed that errors on duplicate object keys.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let item = access.next_value_seed(StrictValue)?;
            map.insert(key, item);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn sorts_keys_by_code_point_like_securesystemslib() {
        // securesystemslib.formats.encode_canonical({"a": 1, "a b": 2, "a!": 3}) == '{"a":1,"a b":2,"a!":3}'
        let v = json!({"a!": 3, "a b": 2, "a": 1});
        assert_eq!(to_canonical_vec(&v).unwrap(), br#"{"a":1,"a b":2,"a!":3}"#);
    }

    #[test]
    fn escapes_only_quote_and_backslash_and_keeps_unicode_as_is() {
        let v = json!({"k": "q\"b\\n\nt\te\u{301}"});
        assert_eq!(
            to_canonical_vec(&v).unwrap(),
            "{\"k\":\"q\\\"b\\\\n\nt\te\u{301}\"}".as_bytes()
        );
    }

    #[test]
    fn refuses_floats_and_duplicate_keys() {
        assert!(matches!(
            to_canonical_vec(&json!({"x": 1.5})),
            Err(CanonicalError::Float(_))
        ));
        let err = parse_strict(br#"{"a":1,"b":{"c":1,"c":2}}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate key \"c\""), "{err}");
        assert!(parse_strict(br#"{"a":1} trailing"#).is_err());
    }

    #[test]
    fn integers_keep_their_full_range() {
        let v = json!([u64::MAX, i64::MIN, 0, true, false, null]);
        assert_eq!(
            to_canonical_vec(&v).unwrap(),
            br#"[18446744073709551615,-9223372036854775808,0,true,false,null]"#
        );
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<u64>().prop_map(|n| Value::Number(n.into())),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Canonical bytes parse back to the same value, and encoding that value again gives the same bytes.
        #[test]
        fn canonical_round_trip(v in arb_json()) {
            let bytes = to_canonical_vec(&v).unwrap();
            // OLPC canonical JSON writes control characters literally, which strict JSON forbids inside
            // strings; only documents without them must parse back.
            let has_control = bytes.iter().any(|b| *b < 0x20);
            if !has_control {
                let back = parse_strict(&bytes).unwrap();
                prop_assert_eq!(&back, &v);
                prop_assert_eq!(to_canonical_vec(&back).unwrap(), bytes);
            }
        }

        /// Re-encoding is idempotent whatever the key order of the source text.
        #[test]
        fn canonical_ignores_source_key_order(m in prop::collection::btree_map("[a-z ]{0,6}", any::<u32>(), 0..10)) {
            let reversed: String = {
                let parts: Vec<String> = m.iter().rev()
                    .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v)).collect();
                format!("{{{}}}", parts.join(","))
            };
            let parsed = parse_strict(reversed.as_bytes()).unwrap();
            let direct: Value = Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
            prop_assert_eq!(to_canonical_vec(&parsed).unwrap(), to_canonical_vec(&direct).unwrap());
        }
    }
}
