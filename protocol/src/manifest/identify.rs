//! Reading only the identity of every object in a YAML file, without building its values.
//!
//! [`split`](super::split) builds a `serde_json::Value` for every document, which the agent needs to apply
//! it; the packager only needs to know that every document is a Kubernetes object and which one. Building
//! and dropping the values of 50 MB of manifests costs more than parsing them, so [`identify`] drives the
//! same parser, with the same options and budgets, through visitors that keep `apiVersion`, `kind`,
//! `metadata.name` and `metadata.namespace` and walk past everything else.
//!
//! The walk accepts exactly what `serde_json::Value` accepts, node for node — mapping keys are read as
//! strings, scalars through `deserialize_any`, the same `visit_*` methods are implemented and the rest are
//! left to serde's defaults — so a file `identify` passes is a file `split` passes with the same
//! identities, and the agent never refuses a manifest the packager let through. A property test and the
//! refusal table in `super::tests` hold the two to that.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Field, Identified, ManifestError, ManifestLimits, Meta, identity, options};

/// Reads the identity of every object in `text`, in document order; empty documents are skipped.
///
/// Accepts and refuses exactly what [`split`](super::split) does, with the same errors, but builds no
/// values: it is what the packager runs over every manifest of a bundle. Block-style YAML as renderers
/// write it is read by a line scanner (`fast`); anything that scanner is not sure of goes through the
/// parser.
pub fn identify(text: &str, limits: &ManifestLimits) -> Result<Vec<Identified>, ManifestError> {
    if text.len() > limits.max_file_bytes {
        return Err(ManifestError::TooLarge {
            size: text.len(),
            limit: limits.max_file_bytes,
        });
    }
    if let Ok(found) = super::fast::identify(text, limits) {
        return Ok(found);
    }
    let documents = serde_saphyr::from_multiple_with_options::<Document>(text, options(limits))
        .map_err(|e| ManifestError::Yaml(super::first_line(&e.to_string())))?;
    documents
        .into_iter()
        .filter(|doc| !matches!(doc, Document::Null))
        .enumerate()
        .map(|(i, doc)| match doc {
            Document::Object {
                api_version,
                kind,
                metadata,
            } => identity(i + 1, api_version, kind, metadata),
            Document::Null | Document::Other => Err(ManifestError::NotAnObject { document: i + 1 }),
        })
        .collect()
}

/// A document, as far as identity goes. `Null` mirrors `Value::is_null` (what `split` skips).
enum Document {
    Null,
    Other,
    Object {
        api_version: Field<'static>,
        kind: Field<'static>,
        metadata: Meta<'static>,
    },
}

/// The keys of a document that identity reads.
enum TopKey {
    ApiVersion,
    Kind,
    Metadata,
    Other,
}

/// The keys of `metadata` that identity reads.
enum MetaKey {
    Name,
    Namespace,
    Other,
}

impl<'de> de::Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML document")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Document, E> {
        Ok(Document::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Document, E> {
        Ok(Document::Other)
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Document, E> {
        Skip.visit_i128(v).map(|()| Document::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Document, E> {
        Ok(Document::Other)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Document, E> {
        Skip.visit_u128(v).map(|()| Document::Other)
    }
    fn visit_f64<E>(self, v: f64) -> Result<Document, E> {
        // `Value` holds a non-finite float as null.
        Ok(if v.is_finite() {
            Document::Other
        } else {
            Document::Null
        })
    }
    fn visit_str<E>(self, _: &str) -> Result<Document, E> {
        Ok(Document::Other)
    }
    fn visit_none<E>(self) -> Result<Document, E> {
        Ok(Document::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Document, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_unit<E>(self) -> Result<Document, E> {
        Ok(Document::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Document, A::Error> {
        Skip.visit_seq(seq).map(|()| Document::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let (mut api_version, mut kind, mut metadata) =
            (Field::Missing, Field::Missing, Meta::Missing);
        // A repeated key replaces the earlier value, as inserting into `Value`'s map does (the parser
        // refuses true duplicates before they get here).
        while let Some(key) = map.next_key_seed(KeySeed(top_key))? {
            match key {
                TopKey::ApiVersion => api_version = map.next_value_seed(FieldSeed)?,
                TopKey::Kind => kind = map.next_value_seed(FieldSeed)?,
                TopKey::Metadata => metadata = map.next_value_seed(MetaSeed)?,
                TopKey::Other => map.next_value_seed(Skip)?,
            }
        }
        Ok(Document::Object {
            api_version,
            kind,
            metadata,
        })
    }
}

fn top_key(key: &str) -> TopKey {
    match key {
        "apiVersion" => TopKey::ApiVersion,
        "kind" => TopKey::Kind,
        "metadata" => TopKey::Metadata,
        _ => TopKey::Other,
    }
}

fn meta_key(key: &str) -> MetaKey {
    match key {
        "name" => MetaKey::Name,
        "namespace" => MetaKey::Namespace,
        _ => MetaKey::Other,
    }
}

/// A mapping key, read as `Value` reads one (`deserialize_str`) and classified without allocating.
struct KeySeed<K>(fn(&str) -> K);

impl<'de, K> DeserializeSeed<'de> for KeySeed<K> {
    type Value = K;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K, D::Error> {
        d.deserialize_str(self)
    }
}

impl<K> Visitor<'_> for KeySeed<K> {
    type Value = K;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, key: &str) -> Result<K, E> {
        Ok((self.0)(key))
    }
}

/// `apiVersion`, `kind`, `metadata.name` or `metadata.namespace`: a string is kept, anything else only
/// classified.
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Field<'static>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = Field<'static>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        Skip.visit_i128(v).map(|()| Field::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Skip.visit_u128(v).map(|()| Field::Other)
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(if v.is_finite() {
            Field::Other
        } else {
            Field::Null
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Str(v.to_owned().into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Field::Str(v.into()))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip.visit_seq(seq).map(|()| Field::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Skip.visit_map(map).map(|()| Field::Other)
    }
}

/// `metadata`: a mapping's `name` and `namespace` are kept, anything else only classified.
struct MetaSeed;

impl<'de> DeserializeSeed<'de> for MetaSeed {
    type Value = Meta<'static>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetaSeed {
    type Value = Meta<'static>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Meta::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Meta::Other)
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        Skip.visit_i128(v).map(|()| Meta::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Meta::Other)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Skip.visit_u128(v).map(|()| Meta::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        // Null or a number: neither is a mapping.
        Ok(Meta::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Meta::Other)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Meta::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Meta::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip.visit_seq(seq).map(|()| Meta::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut name, mut namespace) = (Field::Missing, Field::Missing);
        while let Some(key) = map.next_key_seed(KeySeed(meta_key))? {
            match key {
                MetaKey::Name => name = map.next_value_seed(FieldSeed)?,
                MetaKey::Namespace => namespace = map.next_value_seed(FieldSeed)?,
                MetaKey::Other => map.next_value_seed(Skip)?,
            }
        }
        Ok(Meta::Mapping { name, namespace })
    }
}

/// Walks past a value, accepting what `Value` accepts and keeping nothing.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        // `Value` holds integers that fit an i64 or a u64, and refuses the rest.
        if i64::try_from(v).is_ok() || u64::try_from(v).is_ok() {
            Ok(())
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        if u64::try_from(v).is_ok() {
            Ok(())
        } else {
            Err(E::custom("number out of range"))
        }
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(KeySeed(|_| ()))?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}
