//! The kinds a fresh test server serves, what its simulated controllers write, and the CRD fields it
//! requires.

use serde_json::{Value, json};

use super::fields::set_pointer;
use super::store::{ApiFailure, Resource};

/// The resource types of a fresh server.
pub(super) fn builtin() -> Vec<Resource> {
    let r = Resource::new;
    vec![
        r("v1", "Namespace", "namespaces", false, true),
        r("v1", "ConfigMap", "configmaps", true, false),
        r("v1", "Secret", "secrets", true, false),
        r("v1", "Service", "services", true, true),
        r("v1", "ServiceAccount", "serviceaccounts", true, false),
        r(
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            true,
            true,
        ),
        r("v1", "Pod", "pods", true, true),
        r("apps/v1", "Deployment", "deployments", true, true),
        r("apps/v1", "StatefulSet", "statefulsets", true, true),
        r("apps/v1", "DaemonSet", "daemonsets", true, true),
        r("batch/v1", "Job", "jobs", true, true),
        r("batch/v1", "CronJob", "cronjobs", true, true),
        r("networking.k8s.io/v1", "Ingress", "ingresses", true, true),
        r(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            false,
        ),
        r("rbac.authorization.k8s.io/v1", "Role", "roles", true, false),
        r(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            "rolebindings",
            true,
            false,
        ),
        r(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "clusterroles",
            false,
            false,
        ),
        r(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            false,
        ),
        r(
            "policy/v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            true,
        ),
        r(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            true,
        ),
    ]
}

/// What the simulated controllers write: a finished rollout for the current generation, a complete Job,
/// a bound claim.
pub(super) fn simulate(kind: &str, object: &mut Value) {
    let generation = object
        .pointer("/metadata/generation")
        .cloned()
        .unwrap_or(json!(1));
    let replicas = object
        .pointer("/spec/replicas")
        .cloned()
        .unwrap_or(json!(1));
    let status = match kind {
        "Deployment" | "StatefulSet" => json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
        }),
        "DaemonSet" => json!({
            "observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
            "updatedNumberScheduled": 1, "numberReady": 1, "numberAvailable": 1,
        }),
        "Job" => json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
        "PersistentVolumeClaim" => json!({"phase": "Bound"}),
        _ => return,
    };
    set_pointer(object, "/status", status);
}

/// The little of a CRD the server reads must be there, as a real server's validation would demand.
pub(super) fn check_crd(object: &Value) -> Result<(), ApiFailure> {
    let missing = [
        "/spec/group",
        "/spec/names/plural",
        "/spec/names/kind",
        "/spec/scope",
    ]
    .into_iter()
    .find(|p| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    });
    let versions = object
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .is_some_and(|v| !v.is_empty());
    match (missing, versions) {
        (None, true) => Ok(()),
        (Some(p), _) => Err(ApiFailure::new(
            422,
            "Invalid",
            format!("CustomResourceDefinition: {p}: Required value"),
        )),
        (None, false) => Err(ApiFailure::new(
            422,
            "Invalid",
            "CustomResourceDefinition: /spec/versions: must have at least one version",
        )),
    }
}
