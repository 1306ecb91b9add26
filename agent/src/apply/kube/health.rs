//! Whether a live object is healthy, by its kind: the health gate's one look at an object.

use serde_json::Value;

/// An object's health at one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Ready,
    Pending(String),
    Failed(String),
}

/// The value of condition `kind` in `status.conditions`: `Some(true)` for `True`.
pub(super) fn condition(object: &Value, kind: &str) -> Option<bool> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .map(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

/// Whether a live object is healthy, for its kind: the rollout of a workload for its current generation,
/// a Job's completion, a claim's binding, else a `Ready` condition when it has one.
pub(super) fn verdict(group: &str, kind: &str, live: &Value) -> Verdict {
    let generation = int(live, "/metadata/generation").unwrap_or(0);
    let observed = int(live, "/status/observedGeneration").unwrap_or(-1);
    let count = |p: &str| int(live, p).unwrap_or(0);
    let pending = |why: String| Verdict::Pending(why);
    match (group, kind) {
        ("apps", "Deployment" | "StatefulSet") => {
            if condition_reason(live, "Progressing") == Some("ProgressDeadlineExceeded") {
                return Verdict::Failed("progress deadline exceeded".to_owned());
            }
            if observed < generation {
                return pending(format!(
                    "generation {generation} not yet observed (observed {observed})"
                ));
            }
            let desired = int(live, "/spec/replicas").unwrap_or(1);
            let updated = count("/status/updatedReplicas");
            let ready = count("/status/readyReplicas");
            let total = int(live, "/status/replicas").unwrap_or(updated);
            // A StatefulSet reports no availableReplicas before 1.22; readiness stands in for it.
            let available = int(live, "/status/availableReplicas").unwrap_or(ready);
            if updated < desired {
                pending(format!("{updated}/{desired} replicas updated"))
            } else if total > updated {
                pending(format!(
                    "{} old replicas pending termination",
                    total - updated
                ))
            } else if ready < desired {
                pending(format!("{ready}/{desired} replicas ready"))
            } else if available < desired {
                pending(format!("{available}/{desired} replicas available"))
            } else {
                Verdict::Ready
            }
        }
        ("apps", "DaemonSet") => {
            if observed < generation {
                return pending(format!(
                    "generation {generation} not yet observed (observed {observed})"
                ));
            }
            let desired = count("/status/desiredNumberScheduled");
            let updated = count("/status/updatedNumberScheduled");
            let available = count("/status/numberAvailable");
            if updated < desired {
                pending(format!("{updated}/{desired} pods updated"))
            } else if available < desired {
                pending(format!("{available}/{desired} pods available"))
            } else {
                Verdict::Ready
            }
        }
        ("batch", "Job") => {
            if condition(live, "Failed") == Some(true) {
                Verdict::Failed(format!(
                    "job failed: {}",
                    condition_reason(live, "Failed").unwrap_or("no reason given")
                ))
            } else if condition(live, "Complete") == Some(true) {
                Verdict::Ready
            } else {
                pending("job not complete".to_owned())
            }
        }
        ("", "PersistentVolumeClaim") => {
            match live.pointer("/status/phase").and_then(Value::as_str) {
                Some("Bound") => Verdict::Ready,
                Some("Lost") => Verdict::Failed("claim lost its volume".to_owned()),
                phase => pending(format!("claim {}", phase.unwrap_or("not yet bound"))),
            }
        }
        _ => match condition(live, "Ready") {
            Some(false) => pending("condition Ready is not True".to_owned()),
            Some(true) | None => Verdict::Ready,
        },
    }
}

fn condition_reason<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))?
        .get("reason")
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn workload_health_follows_the_observed_generation() {
        let deployment = |status: Value| json!({"metadata": {"generation": 2}, "spec": {"replicas": 3}, "status": status});
        let cases = [
            (
                json!({"observedGeneration": 1, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
                Verdict::Pending("generation 2 not yet observed (observed 1)".into()),
            ),
            (
                json!({"observedGeneration": 2, "updatedReplicas": 1, "readyReplicas": 3}),
                Verdict::Pending("1/3 replicas updated".into()),
            ),
            (
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "readyReplicas": 3}),
                Verdict::Pending("1 old replicas pending termination".into()),
            ),
            (
                json!({"observedGeneration": 2, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 2}),
                Verdict::Pending("2/3 replicas available".into()),
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
                Verdict::Ready,
            ),
            (
                json!({"conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
                Verdict::Failed("progress deadline exceeded".into()),
            ),
        ];
        for (status, want) in cases {
            assert_eq!(
                verdict("apps", "Deployment", &deployment(status.clone())),
                want,
                "{status}"
            );
        }
        let job = |c: &str| json!({"status": {"conditions": [{"type": c, "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert_eq!(verdict("batch", "Job", &job("Complete")), Verdict::Ready);
        assert!(matches!(
            verdict("batch", "Job", &job("Failed")),
            Verdict::Failed(_)
        ));
        assert_eq!(
            verdict(
                "",
                "PersistentVolumeClaim",
                &json!({"status": {"phase": "Bound"}})
            ),
            Verdict::Ready
        );
        assert!(matches!(
            verdict("", "PersistentVolumeClaim", &json!({})),
            Verdict::Pending(_)
        ));
        let ready = |s: &str| json!({"status": {"conditions": [{"type": "Ready", "status": s}]}});
        assert_eq!(
            verdict("example.com", "Widget", &ready("True")),
            Verdict::Ready
        );
        assert!(matches!(
            verdict("example.com", "Widget", &ready("False")),
            Verdict::Pending(_)
        ));
        assert_eq!(verdict("", "ConfigMap", &json!({})), Verdict::Ready);
    }
}
