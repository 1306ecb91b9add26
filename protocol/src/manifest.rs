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

mod fast;
mod identify;

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

pub use self::identify::identify;

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

/// An object's identity as [`identify`] reads it, without the document's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    /// Its identity.
    pub id: ObjectId,
    /// The full `apiVersion` (`apps/v1`).
    pub api_version: String,
    /// Which document of the file it came from, counting from 1 and skipping empty documents.
    pub document: usize,
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
    serde_saphyr::from_multiple_with_options::<Value>(text, options(limits))
        .map_err(|e| ManifestError::Yaml(first_line(&e.to_string())))
        .map(|docs| docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The parser options both readers use: `limits` as serde-saphyr's budget, and duplicate keys refused.
fn options(limits: &ManifestLimits) -> serde_saphyr::Options {
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
    options
}

/// What an identifying field held: all [`identity`] needs to accept it or say what is wrong with it.
enum Field<'a> {
    Missing,
    Null,
    Str(Cow<'a, str>),
    Other,
}

/// What `metadata` held.
enum Meta<'a> {
    Missing,
    Mapping {
        name: Field<'a>,
        namespace: Field<'a>,
    },
    Other,
}

impl<'a> Field<'a> {
    fn of(value: Option<&'a Value>) -> Self {
        match value {
            None => Self::Missing,
            Some(Value::Null) => Self::Null,
            Some(Value::String(s)) => Self::Str(Cow::Borrowed(s)),
            Some(_) => Self::Other,
        }
    }
}

fn object(document: usize, value: Value) -> Result<Object, ManifestError> {
    let map = value
        .as_object()
        .ok_or(ManifestError::NotAnObject { document })?;
    let metadata = match map.get("metadata") {
        None => Meta::Missing,
        Some(Value::Object(m)) => Meta::Mapping {
            name: Field::of(m.get("name")),
            namespace: Field::of(m.get("namespace")),
        },
        Some(_) => Meta::Other,
    };
    let Identified {
        id,
        api_version,
        document,
    } = identity(
        document,
        Field::of(map.get("apiVersion")),
        Field::of(map.get("kind")),
        metadata,
    )?;
    Ok(Object {
        id,
        api_version,
        document,
        value,
    })
}

/// The one place the identifying fields are checked, for [`split`] and [`identify`] alike.
fn identity(
    document: usize,
    api_version: Field<'_>,
    kind: Field<'_>,
    metadata: Meta<'_>,
) -> Result<Identified, ManifestError> {
    let field = |field, reason| ManifestError::Field {
        document,
        field,
        reason,
    };
    let string = |v: Field<'_>, name| -> Result<String, ManifestError> {
        match v {
            Field::Missing => Err(field(name, "is missing")),
            Field::Str(s) if s.is_empty() => Err(field(name, "is empty")),
            Field::Str(s) => Ok(s.into_owned()),
            Field::Null | Field::Other => Err(field(name, "must be a string")),
        }
    };
    let api_version = string(api_version, "apiVersion")?;
    let group = match api_version.split_once('/') {
        Some((group, version)) if !group.is_empty() && !version.is_empty() => group.to_owned(),
        Some(_) => return Err(field("apiVersion", "must be VERSION or GROUP/VERSION")),
        None => String::new(),
    };
    let kind = string(kind, "kind")?;
    let (name, namespace) = match metadata {
        Meta::Missing => return Err(field("metadata", "is missing")),
        Meta::Mapping { name, namespace } => (name, namespace),
        Meta::Other => return Err(field("metadata", "must be a mapping")),
    };
    let name = string(name, "metadata.name")?;
    if name.len() > 253 || name.contains('/') || name.chars().any(char::is_control) {
        return Err(field(
            "metadata.name",
            "must be at most 253 characters without '/' or control characters",
        ));
    }
    let namespace = match namespace {
        Field::Missing | Field::Null => None,
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
    Ok(Identified {
        id: ObjectId {
            group,
            kind,
            namespace,
            name,
        },
        api_version,
        document,
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
        assert_eq!(
            identities(split(text, &limits())),
            identify(text, &limits())
        );
    }

    fn identities(
        split: Result<Vec<Object>, ManifestError>,
    ) -> Result<Vec<Identified>, ManifestError> {
        split.map(|objects| {
            objects
                .into_iter()
                .map(|o| Identified {
                    id: o.id,
                    api_version: o.api_version,
                    document: o.document,
                })
                .collect()
        })
    }

    /// What a renderer writes: comments, markers, block scalars, one-line flow collections, quoted
    /// strings with escapes, sequences at their key's column and nested under `- `.
    const RENDERED: &str = "# Source: chart/templates/deployment.yaml\n---\napiVersion: apps/v1\nkind: Deployment\n\
        metadata:\n  name: web # the front\n  namespace: prod\n  labels:\n    app.kubernetes.io/name: web\n\
        \x20 annotations:\n    checksum/config: \"3f2a\\u00e9\"\n    note: 'it''s'\nspec:\n  replicas: 3\n\
        \x20 template:\n    spec:\n      containers:\n      - name: web\n        image: registry.example.com/web:1.2\n\
        \x20       args: [\"--port=8080\", --verbose, {a: 1}]\n        resources: {limits: {cpu: 100m, memory: 64Mi}}\n\
        \x20       command:\n        - sh\n        - -c\n        - |\n          echo \"a: b\" # not a comment\n\n\
        \x20         exec web\n      - - nested\n        - seq\n      volumes: []\n---\n---\napiVersion: v1\n\
        kind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  nginx.conf: >-\n    server {\n    \t}\n  empty: \"\"\n  nothing: ~\n";

    #[test]
    fn the_fast_scanner_reads_what_renderers_write_and_agrees_with_split() {
        let found = fast::identify(RENDERED, &limits()).expect("rendered YAML takes the fast path");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].id.to_string(), "apps/Deployment prod/web");
        assert_eq!(found[1].id.to_string(), "ConfigMap web-config");
        assert_eq!(found[1].document, 2);
        assert_eq!(identities(split(RENDERED, &limits())), Ok(found));
    }

    #[test]
    fn the_fast_scanner_defers_what_it_is_not_sure_of() {
        let head = "apiVersion: v1\nkind: A\nmetadata:\n  name: a\n";
        let cases = [
            "x: &anchor 1\ny: *anchor\n",
            "x: !!binary aGk=\n",
            "x: a\n  continued\n",
            "x: \"open\n  quote\"\n",
            "x: [a,\n  b]\n",
            "x: .nan\n",
            "x: 1e999\n",
            "x: yes\n",
            "x: 1\nx: 2\n",
            "x: 1\n\"x\": 2\n",
            "<<: {y: 1}\n",
            "? x\n: 1\n",
            "x:\ty\n",
            "x: caf\u{e9}\n",
            "x: |2\n   a\n",
            "x: \"\\q\"\n",
            "x: - a\n",
            "x: a: b\n",
            "...\n",
            "%YAML 1.2\n",
        ];
        let huge = format!("x: {}\n", "9".repeat(400));
        for case in cases.into_iter().chain([huge.as_str()]) {
            let text = format!("{head}{case}");
            assert!(fast::identify(&text, &limits()).is_err(), "{text:?}");
            assert_eq!(
                identities(split(&text, &limits())),
                identify(&text, &limits()),
                "{text:?}"
            );
        }
        // Identifying fields the scanner cannot be sure are strings, or that are wrong: the parser decides.
        for head in [
            "apiVersion: 1\nkind: A\nmetadata: {name: a}\n",
            "apiVersion: v1\nkind: true\nmetadata:\n  name: a\n",
            "apiVersion: v1\nkind: A\nmetadata:\n  name: 0a\n",
            "apiVersion: v1\nkind: A\nmetadata:\n  name: a\n  namespace: Prod\n",
            "apiVersion: v1\nkind: A\n",
        ] {
            assert!(fast::identify(head, &limits()).is_err(), "{head:?}");
        }
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
            let err = identify(text, &limits()).unwrap_err().to_string();
            assert!(err.contains(want), "identify {text:?}: {err}");
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

    /// Lines rendered manifests are made of, at the indents they are used at.
    const COMMON: &[&str] = &[
        "apiVersion: v1",
        "apiVersion: apps/v1",
        "kind: A",
        "kind: 'B'",
        "metadata:",
        "  name: a",
        "  name: b",
        "  namespace: ns",
        "  labels:",
        "    app: web",
        "    tier: \"db\"",
        "  - x",
        "- x",
        "  - a: 1",
        "    b: 2",
        "spec:",
        "  replicas: 3",
        "  text: |",
        "    line: 1",
        "  folded: >-",
        "      deeper",
        "  args: [\"--a=b\", c, {d: 1}]",
        "  f: \"a\\tb\"",
        "  g: 'it''s'",
        "#comment",
        "",
        "---",
        "  key: 1",
        "key: 1",
        "key: 2",
        "  - - n",
        "  -",
        "    - o",
        "  list:",
        "  - p",
        "  map: {}",
    ];

    /// Lines that are invalid, or outside the fast scanner's subset, or wrong for an object.
    const ODD: &[&str] = &[
        "apiVersion: \"v1\"",
        "apiVersion: 1",
        "kind: ~",
        "kind:",
        "metadata: {}",
        "metadata: {name: m}",
        "  name: \"\"",
        "  name: a/b",
        "  namespace: NS",
        "  namespace: ~",
        "  replicas: .inf",
        "  replicas: 1e400",
        "  args: [a,",
        "  e: {x: 1, x: 2}",
        "  h: &h 1",
        "  i: *h",
        "  j: !!str 1",
        "  k: a: b",
        "  l: - m",
        "--- # doc",
        "...",
        "\tkey: 1",
        "   - o",
        "y: yes",
        "z: caf\u{e9}",
        "? q",
        ": r",
        "<<: {s: 1}",
        "  continued",
        "  \"a\": 1",
        "  a : 1",
        "  s: \"\\q\"",
        "  t: [x]]",
    ];

    proptest! {
        // About one text in nine is a valid object list, and most of those take the fast path.
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn fast_scanner_and_identify_agree_with_split(
            lines in proptest::collection::vec(
                prop_oneof![
                    12 => proptest::sample::select(COMMON),
                    1 => proptest::sample::select(ODD),
                ],
                0..16,
            ),
            prefix in proptest::bool::ANY,
        ) {
            let mut text = String::new();
            if prefix {
                text.push_str("apiVersion: v1\nkind: A\nmetadata:\n  name: a\n");
            }
            for line in &lines {
                text.push_str(line);
                text.push('\n');
            }
            let want = identities(split(&text, &limits()));
            if let Ok(found) = fast::identify(&text, &limits()) {
                prop_assert_eq!(&want, &Ok(found), "fast path on {:?}", text);
            }
            let got = identify(&text, &limits());
            match (&want, &got) {
                (Err(ManifestError::Yaml(_)), Err(ManifestError::Yaml(_))) => {}
                _ => prop_assert_eq!(&want, &got, "identify on {:?}", text),
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = split(&text, &limits());
            let _ = identify(&text, &limits());
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
