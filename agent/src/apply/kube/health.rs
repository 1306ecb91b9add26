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
/// a Job's completion, a claim's binding, else a `Ready` condition when it has one — the rules of
/// `kubectl rollout status` for workloads and of kstatus for the rest.
pub(super) fn verdict(group: &str, kind: &str, live: &Value) -> Verdict {
    // A status written for an older generation says nothing about this one, whatever the kind.
    let generation = int(live, "/metadata/generation").unwrap_or(0);
    let observed = int(live, "/status/observedGeneration");
    let unobserved = || {
        Verdict::Pending(format!(
            "generation {generation} not yet observed (observed {})",
            observed.unwrap_or(-1)
        ))
    };
    match (group, kind) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet")
            if observed.unwrap_or(-1) < generation =>
        {
            unobserved()
        }
        ("apps", "Deployment") => deployment(live),
        ("apps", "StatefulSet") => stateful_set(live),
        ("apps", "DaemonSet") => daemon_set(live),
        ("batch", "Job") => job(live),
        ("", "PersistentVolumeClaim") => claim(live),
        _ => match condition(live, "Ready") {
            // kstatus: an observedGeneration behind the object's generation means the Ready condition
            // is about the previous spec; so does a Ready condition that says which generation it saw.
            Some(_) if observed.is_some_and(|o| o < generation) => unobserved(),
            Some(_) if condition_generation(live, "Ready").is_some_and(|o| o < generation) => {
                Verdict::Pending(format!(
                    "condition Ready is for generation {} (generation {generation})",
                    condition_generation(live, "Ready").unwrap_or(-1)
                ))
            }
            Some(false) => Verdict::Pending(format!(
                "condition Ready is not True{}",
                condition_reason(live, "Ready")
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )),
            Some(true) | None => Verdict::Ready,
        },
    }
}

fn count(live: &Value, pointer: &str) -> i64 {
    int(live, pointer).unwrap_or(0)
}

/// `kubectl rollout status deployment`: updated, no old replicas left, ready and available.
fn deployment(live: &Value) -> Verdict {
    if condition_reason(live, "Progressing") == Some("ProgressDeadlineExceeded") {
        return Verdict::Failed("progress deadline exceeded".to_owned());
    }
    let desired = int(live, "/spec/replicas").unwrap_or(1);
    let updated = count(live, "/status/updatedReplicas");
    let ready = count(live, "/status/readyReplicas");
    let total = int(live, "/status/replicas").unwrap_or(updated);
    let available = count(live, "/status/availableReplicas");
    if updated < desired {
        Verdict::Pending(format!("{updated}/{desired} replicas updated"))
    } else if total > updated {
        Verdict::Pending(format!(
            "{} old replicas pending termination",
            total - updated
        ))
    } else if ready < desired {
        Verdict::Pending(format!("{ready}/{desired} replicas ready"))
    } else if available < desired {
        Verdict::Pending(format!("{available}/{desired} replicas available"))
    } else {
        Verdict::Ready
    }
}

/// `kubectl rollout status statefulset`: with `OnDelete` there is no rollout to wait for; with a
/// partition, only the ordinals at or above it are updated; otherwise every replica is ready and the
/// current revision is the update revision.
fn stateful_set(live: &Value) -> Verdict {
    let strategy = live
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str);
    if strategy.is_some_and(|s| s != "RollingUpdate") {
        return Verdict::Ready;
    }
    let desired = int(live, "/spec/replicas").unwrap_or(1);
    let ready = count(live, "/status/readyReplicas");
    // A StatefulSet reports no availableReplicas before 1.22; readiness stands in for it.
    let available = int(live, "/status/availableReplicas").unwrap_or(ready);
    if ready < desired {
        return Verdict::Pending(format!("{ready}/{desired} replicas ready"));
    }
    if available < desired {
        return Verdict::Pending(format!("{available}/{desired} replicas available"));
    }
    let updated = count(live, "/status/updatedReplicas");
    if let Some(partition) = int(live, "/spec/updateStrategy/rollingUpdate/partition") {
        let want = (desired - partition).max(0);
        return if updated < want {
            Verdict::Pending(format!(
                "{updated}/{want} replicas updated (partition {partition})"
            ))
        } else {
            Verdict::Ready
        };
    }
    let revision = |p: &str| live.pointer(p).and_then(Value::as_str);
    match (
        revision("/status/currentRevision"),
        revision("/status/updateRevision"),
    ) {
        (Some(current), Some(update)) if current != update => {
            Verdict::Pending(format!("{updated}/{desired} replicas at revision {update}"))
        }
        _ => Verdict::Ready,
    }
}

/// `kubectl rollout status daemonset`: every scheduled pod updated and available (`OnDelete`: nothing
/// to wait for).
fn daemon_set(live: &Value) -> Verdict {
    let strategy = live
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str);
    if strategy.is_some_and(|s| s != "RollingUpdate") {
        return Verdict::Ready;
    }
    let desired = count(live, "/status/desiredNumberScheduled");
    let updated = count(live, "/status/updatedNumberScheduled");
    let available = count(live, "/status/numberAvailable");
    if updated < desired {
        Verdict::Pending(format!("{updated}/{desired} pods updated"))
    } else if available < desired {
        Verdict::Pending(format!("{available}/{desired} pods available"))
    } else {
        Verdict::Ready
    }
}

/// A Job is healthy once complete and failed once failed (`FailureTarget`/`SuccessCriteriaMet` are
/// the same verdicts a little earlier, on 1.31 and later).
fn job(live: &Value) -> Verdict {
    let failed = ["Failed", "FailureTarget"]
        .into_iter()
        .find(|c| condition(live, c) == Some(true));
    if let Some(c) = failed {
        Verdict::Failed(format!(
            "job failed: {}",
            condition_reason(live, c).unwrap_or("no reason given")
        ))
    } else if condition(live, "Complete") == Some(true)
        || condition(live, "SuccessCriteriaMet") == Some(true)
    {
        Verdict::Ready
    } else if live.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        Verdict::Pending("job suspended".to_owned())
    } else {
        Verdict::Pending("job not complete".to_owned())
    }
}

/// A claim is healthy once bound; a lost claim (its volume went away) has failed.
fn claim(live: &Value) -> Verdict {
    match live.pointer("/status/phase").and_then(Value::as_str) {
        Some("Bound") => Verdict::Ready,
        Some("Lost") => Verdict::Failed("claim lost its volume".to_owned()),
        phase => Verdict::Pending(format!("claim {}", phase.unwrap_or("not yet bound"))),
    }
}

/// The `observedGeneration` a condition carries (conditions of the `metav1.Condition` shape do).
fn condition_generation(object: &Value, kind: &str) -> Option<i64> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))?
        .get("observedGeneration")
        .and_then(Value::as_i64)
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

    fn pending(v: &Verdict) -> &str {
        match v {
            Verdict::Pending(why) => why,
            other => panic!("not pending: {other:?}"),
        }
    }

    #[test]
    fn a_deployment_is_healthy_once_its_rollout_of_this_generation_completes() {
        let deployment = |status: Value| json!({"metadata": {"generation": 2}, "spec": {"replicas": 3}, "status": status});
        let cases = [
            (
                json!({"observedGeneration": 1, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
                Verdict::Pending("generation 2 not yet observed (observed 1)".into()),
            ),
            (
                json!({}),
                Verdict::Pending("generation 2 not yet observed (observed -1)".into()),
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
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 2}),
                Verdict::Pending("2/3 replicas ready".into()),
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
                json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
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
        // No replicas asked for: nothing to wait for once observed.
        let zero = json!({"metadata": {"generation": 1}, "spec": {"replicas": 0}, "status": {"observedGeneration": 1}});
        assert_eq!(verdict("apps", "Deployment", &zero), Verdict::Ready);
    }

    #[test]
    fn a_stateful_set_waits_for_readiness_and_its_update_revision() {
        let set = |spec: Value, status: Value| {
            let mut spec = spec;
            spec["replicas"] = json!(3);
            json!({"metadata": {"generation": 4}, "spec": spec, "status": status})
        };
        let rolling = json!({"updateStrategy": {"type": "RollingUpdate"}});
        let done = json!({"observedGeneration": 4, "readyReplicas": 3, "availableReplicas": 3, "updatedReplicas": 3, "currentRevision": "web-2", "updateRevision": "web-2"});
        assert_eq!(
            verdict("apps", "StatefulSet", &set(rolling.clone(), done.clone())),
            Verdict::Ready
        );
        let mut old = done.clone();
        old["observedGeneration"] = json!(3);
        assert_eq!(
            pending(&verdict("apps", "StatefulSet", &set(rolling.clone(), old))),
            "generation 4 not yet observed (observed 3)"
        );
        let mut not_ready = done.clone();
        not_ready["readyReplicas"] = json!(2);
        assert_eq!(
            pending(&verdict(
                "apps",
                "StatefulSet",
                &set(rolling.clone(), not_ready)
            )),
            "2/3 replicas ready"
        );
        let mut rolling_out = done.clone();
        rolling_out["updatedReplicas"] = json!(1);
        rolling_out["updateRevision"] = json!("web-3");
        assert_eq!(
            pending(&verdict(
                "apps",
                "StatefulSet",
                &set(rolling.clone(), rolling_out.clone())
            )),
            "1/3 replicas at revision web-3"
        );
        // Before 1.22 there is no availableReplicas: readiness stands in.
        let mut old_server = done.clone();
        old_server
            .as_object_mut()
            .unwrap()
            .remove("availableReplicas");
        assert_eq!(
            verdict("apps", "StatefulSet", &set(rolling, old_server)),
            Verdict::Ready
        );
        // A partition of 2 updates only ordinal 2: one updated replica is the whole rollout.
        let partitioned =
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}});
        assert_eq!(
            verdict(
                "apps",
                "StatefulSet",
                &set(partitioned.clone(), rolling_out.clone())
            ),
            Verdict::Ready
        );
        let mut none_updated = rolling_out.clone();
        none_updated["updatedReplicas"] = json!(0);
        assert_eq!(
            pending(&verdict(
                "apps",
                "StatefulSet",
                &set(partitioned, none_updated)
            )),
            "0/1 replicas updated (partition 2)"
        );
        // OnDelete: pods change when someone deletes them; there is no rollout to wait for.
        let on_delete = json!({"updateStrategy": {"type": "OnDelete"}});
        assert_eq!(
            verdict("apps", "StatefulSet", &set(on_delete, rolling_out)),
            Verdict::Ready
        );
    }

    #[test]
    fn a_daemon_set_waits_for_every_scheduled_pod_updated_and_available() {
        let set = |strategy: &str, status: Value| json!({"metadata": {"generation": 2}, "spec": {"updateStrategy": {"type": strategy}}, "status": status});
        let status = |updated: i64, available: i64| json!({"observedGeneration": 2, "desiredNumberScheduled": 5, "updatedNumberScheduled": updated, "numberAvailable": available});
        assert_eq!(
            pending(&verdict(
                "apps",
                "DaemonSet",
                &set("RollingUpdate", status(3, 5))
            )),
            "3/5 pods updated"
        );
        assert_eq!(
            pending(&verdict(
                "apps",
                "DaemonSet",
                &set("RollingUpdate", status(5, 4))
            )),
            "4/5 pods available"
        );
        assert_eq!(
            verdict("apps", "DaemonSet", &set("RollingUpdate", status(5, 5))),
            Verdict::Ready
        );
        assert_eq!(
            verdict("apps", "DaemonSet", &set("OnDelete", status(0, 5))),
            Verdict::Ready
        );
        let mut unobserved = status(5, 5);
        unobserved["observedGeneration"] = json!(1);
        assert!(
            pending(&verdict(
                "apps",
                "DaemonSet",
                &set("RollingUpdate", unobserved)
            ))
            .starts_with("generation 2")
        );
    }

    #[test]
    fn a_job_is_healthy_when_complete_and_failed_when_failed() {
        let job = |c: &str| json!({"status": {"conditions": [{"type": c, "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert_eq!(verdict("batch", "Job", &job("Complete")), Verdict::Ready);
        assert_eq!(
            verdict("batch", "Job", &job("SuccessCriteriaMet")),
            Verdict::Ready
        );
        assert_eq!(
            verdict("batch", "Job", &job("Failed")),
            Verdict::Failed("job failed: BackoffLimitExceeded".into())
        );
        assert!(matches!(
            verdict("batch", "Job", &job("FailureTarget")),
            Verdict::Failed(_)
        ));
        assert_eq!(
            pending(&verdict("batch", "Job", &json!({"status": {"active": 1}}))),
            "job not complete"
        );
        assert_eq!(
            pending(&verdict(
                "batch",
                "Job",
                &json!({"spec": {"suspend": true}})
            )),
            "job suspended"
        );
    }

    #[test]
    fn a_claim_is_healthy_when_bound_and_failed_when_lost() {
        let claim = |phase: &str| json!({"status": {"phase": phase}});
        assert_eq!(
            verdict("", "PersistentVolumeClaim", &claim("Bound")),
            Verdict::Ready
        );
        assert_eq!(
            pending(&verdict("", "PersistentVolumeClaim", &claim("Pending"))),
            "claim Pending"
        );
        assert_eq!(
            pending(&verdict("", "PersistentVolumeClaim", &json!({}))),
            "claim not yet bound"
        );
        assert!(matches!(
            verdict("", "PersistentVolumeClaim", &claim("Lost")),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn anything_with_a_ready_condition_waits_for_it_for_its_own_generation() {
        let object = |generation: i64, status: Value| json!({"metadata": {"generation": generation}, "status": status});
        let ready = |s: &str| json!({"conditions": [{"type": "Ready", "status": s, "reason": "Reconciling"}]});
        assert_eq!(
            verdict("example.com", "Widget", &object(1, ready("True"))),
            Verdict::Ready
        );
        assert_eq!(
            pending(&verdict(
                "example.com",
                "Widget",
                &object(1, ready("False"))
            )),
            "condition Ready is not True (Reconciling)"
        );
        // Ready for the previous spec, by the object's observedGeneration or the condition's own.
        let mut stale = ready("True");
        stale["observedGeneration"] = json!(1);
        assert_eq!(
            pending(&verdict("example.com", "Widget", &object(2, stale))),
            "generation 2 not yet observed (observed 1)"
        );
        let stale =
            json!({"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]});
        assert_eq!(
            pending(&verdict("example.com", "Widget", &object(2, stale.clone()))),
            "condition Ready is for generation 1 (generation 2)"
        );
        assert_eq!(
            verdict("example.com", "Widget", &object(1, stale)),
            Verdict::Ready
        );
        // A Pod is one of these too.
        assert_eq!(
            verdict("", "Pod", &object(1, ready("True"))),
            Verdict::Ready
        );
        // Objects with no notion of readiness are healthy once applied.
        assert_eq!(verdict("", "ConfigMap", &json!({})), Verdict::Ready);
        assert_eq!(
            verdict(
                "example.com",
                "Widget",
                &object(3, json!({"observedGeneration": 1}))
            ),
            Verdict::Ready
        );
    }
}
