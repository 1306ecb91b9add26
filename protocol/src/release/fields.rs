//! Reading `custom.mast` field by field, so that every error names the target and the field.

use serde_json::{Map, Value};

use super::{ReleaseError, SEED_SPACE, Wave, Waves, waves};

/// Typed access to `custom.mast`, with errors naming the target and field.
pub(super) struct Fields<'a> {
    pub(super) target: &'a str,
    pub(super) obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(super) fn err(&self, field: &str, reason: String) -> ReleaseError {
        ReleaseError::Field {
            target: self.target.to_owned(),
            field: field.to_owned(),
            reason,
        }
    }

    fn get(&self, field: &str) -> Result<&'a Value, ReleaseError> {
        self.obj
            .get(field)
            .ok_or_else(|| self.err(field, "missing".to_owned()))
    }

    pub(super) fn str(&self, field: &str) -> Result<&'a str, ReleaseError> {
        self.get(field)?
            .as_str()
            .ok_or_else(|| self.err(field, "must be a string".to_owned()))
    }

    pub(super) fn u64(&self, field: &str) -> Result<u64, ReleaseError> {
        // as_u64 is None for negatives, fractions, numbers beyond u64 (parsed as floats) and non-numbers.
        self.get(field)?
            .as_u64()
            .ok_or_else(|| self.err(field, "must be an integer from 0 to 2^64-1".to_owned()))
    }

    pub(super) fn waves(&self) -> Result<Waves, ReleaseError> {
        // Absent (or an empty list) means everyone at once.
        let Some(list) = self.obj.get("waves") else {
            return Ok(Waves::default());
        };
        let list = list
            .as_array()
            .ok_or_else(|| self.err("waves", "must be a list".to_owned()))?;
        let mut waves = Vec::with_capacity(list.len().min(usize::from(SEED_SPACE)));
        for (i, w) in list.iter().enumerate() {
            let field = |name: &str| format!("waves[{i}].{name}");
            let seed_below = w
                .get("seed_below")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| (1..=SEED_SPACE).contains(n))
                .ok_or_else(|| {
                    self.err(
                        &field("seed_below"),
                        "must be an integer in 1..=10000".to_owned(),
                    )
                })?;
            let start = w
                .get("start")
                .and_then(Value::as_str)
                .and_then(|s| waves::parse_time(s).ok())
                .ok_or_else(|| {
                    self.err(&field("start"), "must be YYYY-MM-DDTHH:MM:SSZ".to_owned())
                })?;
            waves.push(Wave { seed_below, start });
        }
        Waves::new(waves).map_err(|e| self.err("waves", e.to_string()))
    }
}
