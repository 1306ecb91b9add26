//! Kubernetes manifests: splitting a multi-document YAML file into objects, and each object's identity.
//!
//! The packager refuses a bundle whose YAML is not a set of Kubernetes objects, and the agent applies the
//! objects this module returns, so both sides read YAML through this one bounded decoder. YAML is a
//! dangerous input format: anchors and aliases expand (a "billion laughs" file of a few hundred bytes
//! describes gigabytes), nesting can be deep enough to exhaust a stack, and one file can hold any number of
//! documents. Every one of those is capped by [`ManifestLimits`], enforced by the parser while it reads
//! (serde-saphyr's budget) rather than after the fact, so a hostile file costs at most the budget.
//!
//! An object's identity is its API group, kind, namespace and name ([`ObjectId`]): the version is not part
//! of it, because `apps/v1` and `apps/v1beta2` of one Deployment are the same object to the API server.

use std::fmt;

use serde_json::Value;

/// Caps on one YAML file, enforced while it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestLimits {
    /// Largest file, in bytes (checked before parsing).
    pub max_file_bytes: usize,
    /// Most documents in one file.
    pub max_documents: usize,
    /// Deepest nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most YAML nodes in the whole file, counting each alias expansion.
    pub max_nodes: usize,
    /// Most alias references (`*name`) in the whole file.
    pub max_aliases: usize,
}

impl Default for ManifestLimits {
    /// 16 MiB, 10 000 documents, depth 64, 2 000 000 nodes, 1 000 aliases: far above rendered manifests
    /// (Kubernetes itself refuses objects over 1.5 MiB and nesting past a few dozen levels), far below what
    /// would hurt a packager in CI or an agent on a small node.
    fn default() -> Self {
        Self {
            max_file_bytes: 16 << 20,
            max_documents: 10_000,
            max_depth: 64,
            max_nodes: 2_000_000,
            max_aliases: 1_000,
        }
    }
}

/// What identifies an object to the API server: group, kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// The API group; empty for the core group (`apiVersion: v1`).
    pub group: String,
    /// The kind, e.g. `Deployment`.
    pub kind: String,
    /// `metadata.namespace`, when the document sets one.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

/// One Kubernetes object read from a YAML file.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Its identity.
    pub id: ObjectId,
    /// The full `apiVersion` (`apps/v1`).
    pub api_version: String,
    /// Which document of the file it came from, counting from 1 and skipping empty documents.
    pub document: usize,
    /// The whole document.
    pub value: Value,
}

/// Why a YAML file is not a set of Kubernetes objects. The caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The file is larger than [`ManifestLimits::max_file_bytes`].
    #[error("file is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// The file's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The YAML does not parse, or breaks a budget (depth, nodes, aliases, documents).
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// A document is not a mapping.
    #[error(
        "document {document}: not a Kubernetes object (a mapping with apiVersion, kind and metadata.name)"
    )]
    NotAnObject {
        /// The document, counting from 1.
        document: usize,
    },
    /// A required field is missing, empty or of the wrong type.
    #[error("document {document}: {field} {reason}")]
    Field {
        /// The document, counting from 1.
        document: usize,
        /// The field, e.g. `metadata.name`.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl ObjectId {
    /// `group/Kind namespace/name`, or `Kind name` for a core, cluster-scoped object: how kubectl and
    /// operators name an object in messages.
    fn fmt_kind(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}/{}", self.group, self.kind)
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_kind(f)?;
        match &self.namespace {
            Some(ns) => write!(f, " {ns}/{}", self.name),
            None => write!(f, " {}", self.name),
        }
    }
}

/// Splits `text` into its Kubernetes objects, in document order. Empty documents are skipped.
///
/// Every document must be a mapping with a non-empty string `apiVersion` and `kind`, and a `metadata`
/// mapping with a non-empty string `name` (and, if present, a string `namespace`). Duplicate mapping keys
/// are refused: two YAML readers that keep different duplicates would apply different objects.
pub fn split(text: &str, limits: &ManifestLimits) -> Result<Vec<Object>, ManifestError> {
    if text.len() > limits.max_file_bytes {
        return Err(ManifestError::TooLarge {
            size: text.len(),
            limit: limits.max_file_bytes,
        });
    }
    let documents = parse_documents(text, limits)?;
    documents
        .into_iter()
        .enumerate()
        .map(|(i, value)| object(i + 1, value))
        .collect()
}

/// Parses every document of `text` as generic YAML under the budget of `limits`.
pub fn parse_documents(text: &str, limits: &ManifestLimits) -> Result<Vec<Value>, ManifestError> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = limits.max_documents;
    budget.max_depth = limits.max_depth;
    budget.max_nodes = limits.max_nodes;
    budget.max_aliases = limits.max_aliases;
    budget.max_anchors = limits.max_aliases;
    budget.max_events = limits.max_nodes.saturating_mul(2);
    budget.max_total_scalar_bytes = limits.max_file_bytes;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    serde_saphyr::from_multiple_with_options::<Value>(text, options)
        .map_err(|e| ManifestError::Yaml(first_line(&e.to_string())))
        .map(|docs| docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn object(document: usize, value: Value) -> Result<Object, ManifestError> {
    let field = |field, reason| ManifestError::Field {
        document,
        field,
        reason,
    };
    let map = value
        .as_object()
        .ok_or(ManifestError::NotAnObject { document })?;
    let string = |v: Option<&Value>, name| -> Result<String, ManifestError> {
        match v {
            None => Err(field(name, "is missing")),
            Some(Value::String(s)) if s.is_empty() => Err(field(name, "is empty")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(field(name, "must be a string")),
        }
    };
    let api_version = string(map.get("apiVersion"), "apiVersion")?;
    let group = match api_version.split_once('/') {
        Some((group, version)) if !group.is_empty() && !version.is_empty() => group.to_owned(),
        Some(_) => return Err(field("apiVersion", "must be VERSION or GROUP/VERSION")),
        None => String::new(),
    };
    let kind = string(map.get("kind"), "kind")?;
    let metadata = match map.get("metadata") {
        None => return Err(field("metadata", "is missing")),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(field("metadata", "must be a mapping")),
    };
    let name = string(metadata.get("name"), "metadata.name")?;
    if name.len() > 253 || name.contains('/') || name.chars().any(char::is_control) {
        return Err(field(
            "metadata.name",
            "must be at most 253 characters without '/' or control characters",
        ));
    }
    let namespace = match metadata.get("namespace") {
        None | Some(Value::Null) => None,
        ns => Some(string(ns, "metadata.namespace")?),
    };
    if let Some(ns) = &namespace
        && !is_dns_label(ns)
    {
        return Err(field(
            "metadata.namespace",
            "must be a DNS label (1-63 of [a-z0-9-], starting and ending with a letter or digit)",
        ));
    }
    Ok(Object {
        id: ObjectId {
            group,
            kind,
            namespace,
            name,
        },
        api_version,
        document,
        value,
    })
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&b.len())
        && b.first().is_some_and(inner)
        && b.last().is_some_and(inner)
        && b.iter().all(|c| inner(c) || *c == b'-')
}

/// serde-saphyr's messages may carry a multi-line source snippet; the first line says what is wrong and
/// where, which is what belongs in a one-line CLI error.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message);
    line.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> ManifestLimits {
        ManifestLimits::default()
    }

    #[test]
    fn splits_documents_and_reads_identity() {
        let text = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: prod\n\
                    ---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n";
        let objects = split(text, &limits()).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].id.to_string(), "apps/Deployment prod/web");
        assert_eq!(objects[0].api_version, "apps/v1");
        assert_eq!(objects[1].id.to_string(), "Namespace prod");
        assert_eq!(objects[1].id.group, "");
        assert_eq!(objects[1].document, 2);
    }

    #[test]
    fn refuses_documents_that_are_not_objects_naming_document_and_field() {
        let cases = [
            ("- a\n- b\n", "document 1: not a Kubernetes object"),
            (
                "kind: X\nmetadata: {name: a}\n",
                "document 1: apiVersion is missing",
            ),
            (
                "apiVersion: v1\nkind: A\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: b}\n",
                "document 2: kind is missing",
            ),
            (
                "apiVersion: v1\nkind: A\n",
                "document 1: metadata is missing",
            ),
            (
                "apiVersion: v1\nkind: A\nmetadata: {}\n",
                "document 1: metadata.name is missing",
            ),
            (
                "apiVersion: v1\nkind: A\nmetadata: {name: ''}\n",
                "metadata.name is empty",
            ),
            (
                "apiVersion: 1\nkind: A\nmetadata: {name: a}\n",
                "apiVersion must be a string",
            ),
            (
                "apiVersion: /v1\nkind: A\nmetadata: {name: a}\n",
                "apiVersion must be VERSION",
            ),
            (
                "apiVersion: v1\nkind: A\nmetadata: {name: a, namespace: Prod}\n",
                "metadata.namespace must be a DNS label",
            ),
            (
                "apiVersion: v1\nkind: A\nmetadata: {name: a/b}\n",
                "metadata.name must be",
            ),
        ];
        for (text, want) in cases {
            let err = split(text, &limits()).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn refuses_duplicate_keys() {
        let err = split(
            "apiVersion: v1\nkind: A\nkind: B\nmetadata: {name: a}\n",
            &limits(),
        );
        assert!(matches!(err, Err(ManifestError::Yaml(_))), "{err:?}");
    }

    #[test]
    fn a_yaml_bomb_is_refused_by_the_budget() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            let prev = if i == 0 {
                "a".to_owned()
            } else {
                format!("l{}", i - 1)
            };
            bomb.push_str(&format!(
                "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        assert!(bomb.len() < 2048);
        let err = split(&bomb, &limits()).unwrap_err();
        assert!(matches!(err, ManifestError::Yaml(_)), "{err}");
    }

    #[test]
    fn deep_nesting_and_too_many_documents_are_refused() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            split(&deep, &limits()),
            Err(ManifestError::Yaml(_))
        ));
        let small = ManifestLimits {
            max_documents: 3,
            ..limits()
        };
        let doc = "apiVersion: v1\nkind: A\nmetadata: {name: a}\n";
        let docs = |n: usize| vec![doc; n].join("---\n");
        assert_eq!(split(&docs(3), &small).unwrap().len(), 3);
        assert!(split(&docs(4), &small).is_err());
        let tiny = ManifestLimits {
            max_file_bytes: 10,
            ..limits()
        };
        assert!(matches!(
            split(doc, &tiny),
            Err(ManifestError::TooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = split(&text, &limits());
        }

        #[test]
        fn generated_objects_round_trip(
            objects in proptest::collection::vec(
                ("[a-z]{0,8}", "[A-Z][a-zA-Z]{0,10}", proptest::option::of("[a-z][a-z0-9]{0,10}"), "[a-z][a-z0-9.-]{0,20}"),
                1..10,
            )
        ) {
            let mut text = String::new();
            for (group, kind, namespace, name) in &objects {
                let api = if group.is_empty() { "v1".to_owned() } else { format!("{group}.io/v1") };
                text.push_str(&format!("---\napiVersion: {api}\nkind: \"{kind}\"\nmetadata:\n  name: \"{name}\"\n"));
                if let Some(ns) = namespace {
                    text.push_str(&format!("  namespace: \"{ns}\"\n"));
                }
            }
            let parsed = split(&text, &limits()).unwrap();
            prop_assert_eq!(parsed.len(), objects.len());
            for (object, (group, kind, namespace, name)) in parsed.iter().zip(&objects) {
                let want_group = if group.is_empty() { String::new() } else { format!("{group}.io") };
                prop_assert_eq!(&object.id.group, &want_group);
                prop_assert_eq!(&object.id.kind, kind);
                prop_assert_eq!(&object.id.namespace, namespace);
                prop_assert_eq!(&object.id.name, name);
            }
        }
    }
}
