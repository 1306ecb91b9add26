//! Label selectors, equality-based only.

use serde_json::Value;

use super::store::ApiFailure;

/// A label selector: `a=b`, `a==b`, `a!=b`, `a`, `!a`, joined by commas.
pub(super) struct Selector(Vec<(String, Op)>);

enum Op {
    Eq(String),
    Ne(String),
    Exists,
    Absent,
}

impl Selector {
    pub(super) fn parse(text: &str) -> Result<Self, ApiFailure> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
                return Err(ApiFailure::new(
                    400,
                    "BadRequest",
                    format!(
                        "label selector {term:?}: set-based terms are not supported by the test API server"
                    ),
                ));
            }
            let parsed = if let Some((k, v)) = term.split_once("!=") {
                (k.to_owned(), Op::Ne(v.to_owned()))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k.to_owned(), Op::Eq(v.to_owned()))
            } else if let Some(k) = term.strip_prefix('!') {
                (k.to_owned(), Op::Absent)
            } else {
                (term.to_owned(), Op::Exists)
            };
            terms.push(parsed);
        }
        Ok(Self(terms))
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.0.iter().all(|(key, op)| {
            let value = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            match op {
                Op::Eq(v) => value == Some(v.as_str()),
                Op::Ne(v) => value != Some(v.as_str()),
                Op::Exists => value.is_some(),
                Op::Absent => value.is_none(),
            }
        })
    }
}
