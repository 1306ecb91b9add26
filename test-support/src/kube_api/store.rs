//! The test API server's state: the resource types it serves, the objects, and server-side apply with
//! managed fields.
//!
//! A field is a JSON pointer to a leaf of the object: a scalar, a list (lists are atomic here; a real
//! server merges lists with merge keys, such as containers by name) or an empty mapping. Each field
//! manager owns a set of fields; that is what decides conflicts and what an apply that drops a field
//! removes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::fields::{dotted, field_set, fields_v1, remove_pointer, set_pointer};
use super::kinds::{builtin, check_crd, simulate};
use super::selector::Selector;

/// A resource type the server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resource {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) kind: String,
    pub(crate) plural: String,
    pub(crate) namespaced: bool,
    /// Whether `status` is a subresource: main-resource writes leave it alone, `/status` writes only it.
    pub(crate) status: bool,
}

impl Resource {
    pub(super) fn new(gv: &str, kind: &str, plural: &str, namespaced: bool, status: bool) -> Self {
        let (group, version) = gv.split_once('/').unwrap_or(("", gv));
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
            status,
        }
    }

    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// An error answer: HTTP status, Kubernetes reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// HTTP status code.
    pub code: u16,
    /// The `reason` of the Status object (`NotFound`, `Conflict`, ...).
    pub reason: String,
    /// The message.
    pub message: String,
}

impl ApiFailure {
    pub(crate) fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    fn not_found(resource: &Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!(
                "{}.{} \"{name}\" not found",
                resource.plural, resource.group
            )
            .replace(". \"", " \""),
        )
    }
}

/// Who wrote a field set, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Manager {
    /// `Apply` or `Update`.
    operation: &'static str,
    api_version: String,
    fields: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct Stored {
    object: Value,
    managers: BTreeMap<String, Manager>,
}

/// Where an object lives: group, plural, namespace (empty for cluster scope), name.
type Key = (String, String, String, String);

/// How a write reaches an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Main,
    Status,
}

/// A failure to inject: the next `times` requests whose path starts with `path` (and whose method is
/// `method`, when one is given) get `code`.
#[derive(Debug, Clone)]
struct Fault {
    method: Option<String>,
    path: String,
    code: u16,
    times: usize,
}

/// Everything the server holds.
#[derive(Debug)]
pub(crate) struct Store {
    resources: Vec<Resource>,
    objects: BTreeMap<Key, Stored>,
    revision: u64,
    /// CRDs waiting to be established, by name, with when.
    pending_crds: Vec<(String, Instant)>,
    pub(crate) crd_delay: Duration,
    faults: Vec<Fault>,
    pub(crate) requests: Vec<String>,
    /// Whether the server plays the workload controllers (see [`Store::simulate`]).
    pub(crate) controllers: bool,
    /// `(kind, namespace, name)` of objects whose status the simulated controllers leave alone.
    pub(crate) stalled: BTreeSet<(String, String, String)>,
}

impl Store {
    pub(crate) fn new() -> Self {
        let mut store = Self {
            resources: builtin(),
            objects: BTreeMap::new(),
            revision: 1,
            pending_crds: Vec::new(),
            crd_delay: Duration::from_millis(300),
            faults: Vec::new(),
            requests: Vec::new(),
            controllers: false,
            stalled: BTreeSet::new(),
        };
        // A real cluster starts with these namespaces.
        for ns in ["default", "kube-system"] {
            let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let _ = store.update(
                "v1",
                "Namespace",
                None,
                ns,
                "kube-apiserver",
                Target::Main,
                |o| {
                    *o = object;
                },
            );
        }
        store
    }

    pub(crate) fn resources(&mut self) -> &[Resource] {
        self.settle();
        &self.resources
    }

    /// The resource serving `plural` in `group/version`.
    pub(crate) fn resource(
        &mut self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Resource> {
        self.settle();
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// The resource of `kind` in `api_version`.
    pub(crate) fn resource_of(&mut self, api_version: &str, kind: &str) -> Option<Resource> {
        self.settle();
        self.resources
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }

    pub(crate) fn add_fault(&mut self, method: Option<&str>, path: &str, code: u16, times: usize) {
        self.faults.push(Fault {
            method: method.map(str::to_owned),
            path: path.to_owned(),
            code,
            times,
        });
    }

    /// Drops every injected failure.
    pub(crate) fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// Consumes one injected failure for `method` on `path`, if any.
    pub(crate) fn take_fault(&mut self, method: &str, path: &str) -> Option<u16> {
        let fault = self.faults.iter_mut().find(|f| {
            f.times > 0
                && path.starts_with(&f.path)
                && f.method.as_deref().is_none_or(|m| m == method)
        })?;
        fault.times -= 1;
        Some(fault.code)
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    fn key(resource: &Resource, namespace: Option<&str>, name: &str) -> Key {
        let ns = if resource.namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        (
            resource.group.clone(),
            resource.plural.clone(),
            ns.to_owned(),
            name.to_owned(),
        )
    }

    /// The object as a client reads it (with `managedFields`).
    pub(crate) fn get(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiFailure> {
        self.settle();
        let stored = self
            .objects
            .get(&Self::key(resource, namespace, name))
            .ok_or_else(|| ApiFailure::not_found(resource, name))?;
        Ok(render(stored, resource))
    }

    /// Objects of `resource` in `namespace` (all namespaces when `None`) matching `selector`.
    pub(crate) fn list(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<Vec<Value>, ApiFailure> {
        self.settle();
        let selector = Selector::parse(selector)?;
        Ok(self
            .objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                *g == resource.group && *p == resource.plural && namespace.is_none_or(|n| n == ns)
            })
            .filter(|(_, s)| selector.matches(&s.object))
            .map(|(_, s)| render(s, resource))
            .collect())
    }

    /// Deletes an object (a namespace with everything in it; a CRD with its resources and objects).
    pub(crate) fn delete(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<Value, ApiFailure> {
        self.settle();
        let key = Self::key(resource, namespace, name);
        let stored = self
            .objects
            .get(&key)
            .ok_or_else(|| ApiFailure::not_found(resource, name))?;
        let answer = render(stored, resource);
        if dry_run {
            return Ok(answer);
        }
        self.objects.remove(&key);
        self.revision += 1;
        if resource.kind == "Namespace" && resource.group.is_empty() {
            self.objects.retain(|(_, _, ns, _), _| ns != name);
        }
        if resource.kind == "CustomResourceDefinition" {
            let group = answer.pointer("/spec/group").and_then(Value::as_str);
            let plural = answer.pointer("/spec/names/plural").and_then(Value::as_str);
            if let (Some(group), Some(plural)) = (group, plural) {
                self.resources
                    .retain(|r| !(r.group == group && r.plural == plural));
                self.objects
                    .retain(|(g, p, _, _), _| !(g == group && p == plural));
            }
            self.pending_crds.retain(|(n, _)| n != name);
        }
        Ok(answer)
    }

    /// Server-side apply of `config` by `manager`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        config: Value,
        manager: &str,
        force: bool,
        target: Target,
        dry_run: bool,
    ) -> Result<Value, ApiFailure> {
        self.settle();
        check_identity(&config, resource, name)?;
        self.check_namespace(resource, namespace)?;
        let key = Self::key(resource, namespace, name);
        let old = self.objects.get(&key).cloned();
        let mut stored = old.clone().unwrap_or_else(|| Stored {
            object: skeleton(resource, &key),
            managers: BTreeMap::new(),
        });
        let fields = field_set(&config, resource, target);
        let mut conflicts = Vec::new();
        for (other, owned) in stored.managers.iter_mut() {
            if other == manager {
                continue;
            }
            for field in &fields {
                if owned.fields.contains(field)
                    && stored.object.pointer(field) != config.pointer(field)
                {
                    conflicts.push((other.clone(), owned.api_version.clone(), field.clone()));
                }
            }
            if force {
                owned.fields.retain(|f| !fields.contains(f));
            }
        }
        if !conflicts.is_empty() && !force {
            let list: Vec<String> = conflicts
                .iter()
                .map(|(m, v, f)| format!("conflict with \"{m}\" using {v}: {}", dotted(f)))
                .collect();
            return Err(ApiFailure::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    list.join("\n")
                ),
            ));
        }
        let previous = stored
            .managers
            .get(manager)
            .map(|m| m.fields.clone())
            .unwrap_or_default();
        for dropped in previous.difference(&fields) {
            let shared = stored
                .managers
                .iter()
                .any(|(m, o)| m != manager && o.fields.contains(dropped));
            if !shared {
                remove_pointer(&mut stored.object, dropped);
            }
        }
        for field in &fields {
            if let Some(value) = config.pointer(field) {
                set_pointer(&mut stored.object, field, value.clone());
            }
        }
        stored.managers.insert(
            manager.to_owned(),
            Manager {
                operation: "Apply",
                api_version: resource.api_version(),
                fields,
            },
        );
        stored.managers.retain(|_, m| !m.fields.is_empty());
        self.commit(resource, key, old, stored, dry_run)
    }

    /// A non-apply write (create, replace, merge patch, an edit by a test): `change` edits the object,
    /// and `manager` takes ownership of every field whose value it changed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        manager: &str,
        target: Target,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiFailure> {
        let resource = self.resource_of(api_version, kind).ok_or_else(|| {
            ApiFailure::new(
                404,
                "NotFound",
                format!("no resource for {api_version} {kind}"),
            )
        })?;
        self.update_resource(&resource, namespace, name, manager, target, false, change)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update_resource(
        &mut self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        manager: &str,
        target: Target,
        dry_run: bool,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiFailure> {
        self.settle();
        self.check_namespace(resource, namespace)?;
        let key = Self::key(resource, namespace, name);
        let old = self.objects.get(&key).cloned();
        let mut stored = old.clone().unwrap_or_else(|| Stored {
            object: skeleton(resource, &key),
            managers: BTreeMap::new(),
        });
        let mut edited = stored.object.clone();
        change(&mut edited);
        check_identity(&edited, resource, name)?;
        // Only the part the endpoint may write changes; identity and system metadata stay.
        let before = field_set(&stored.object, resource, target);
        let after = field_set(&edited, resource, target);
        for gone in before.difference(&after) {
            remove_pointer(&mut stored.object, gone);
            for m in stored.managers.values_mut() {
                m.fields.remove(gone);
            }
        }
        let mut taken = BTreeSet::new();
        for field in &after {
            let value = edited.pointer(field).cloned().unwrap_or(Value::Null);
            if stored.object.pointer(field) != Some(&value) {
                set_pointer(&mut stored.object, field, value);
                taken.insert(field.clone());
            }
        }
        for m in stored.managers.values_mut() {
            m.fields.retain(|f| !taken.contains(f));
        }
        if !taken.is_empty() {
            let entry = stored
                .managers
                .entry(manager.to_owned())
                .or_insert_with(|| Manager {
                    operation: "Update",
                    api_version: resource.api_version(),
                    fields: BTreeSet::new(),
                });
            entry.fields.extend(taken);
        }
        stored.managers.retain(|_, m| !m.fields.is_empty());
        self.commit(resource, key, old, stored, dry_run)
    }

    /// Stores `new` unless nothing changed: bumps the resourceVersion, the generation on a change outside
    /// metadata and status, plays the controllers, registers CRDs.
    fn commit(
        &mut self,
        resource: &Resource,
        key: Key,
        old: Option<Stored>,
        mut new: Stored,
        dry_run: bool,
    ) -> Result<Value, ApiFailure> {
        let spec = |o: &Value| {
            let mut o = o.clone();
            if let Some(map) = o.as_object_mut() {
                map.remove("metadata");
                map.remove("status");
            }
            o
        };
        let same = old
            .as_ref()
            .is_some_and(|o| o.object == new.object && o.managers == new.managers);
        if same {
            return Ok(render(&new, resource));
        }
        let generation = match &old {
            None => 1,
            Some(o) => {
                let g = o
                    .object
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                if spec(&o.object) == spec(&new.object) {
                    g
                } else {
                    g + 1
                }
            }
        };
        if resource.kind == "CustomResourceDefinition" {
            check_crd(&new.object)?;
        }
        let revision = self.revision + 1;
        let meta = metadata(&mut new.object);
        meta.insert("generation".into(), json!(generation));
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
        if old.is_none() {
            meta.insert(
                "uid".into(),
                json!(format!("00000000-0000-0000-0000-{revision:012}")),
            );
            meta.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
        }
        if self.controllers && !self.is_stalled(resource, &key) {
            simulate(&resource.kind, &mut new.object);
        }
        let answer = render(&new, resource);
        if dry_run {
            return Ok(answer);
        }
        self.revision = revision;
        if resource.kind == "CustomResourceDefinition" {
            self.pending_crds
                .push((key.3.clone(), Instant::now() + self.crd_delay));
        }
        self.objects.insert(key, new);
        Ok(answer)
    }

    fn is_stalled(&self, resource: &Resource, key: &Key) -> bool {
        self.stalled
            .contains(&(resource.kind.clone(), key.2.clone(), key.3.clone()))
    }

    fn check_namespace(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
    ) -> Result<(), ApiFailure> {
        if !resource.namespaced {
            return Ok(());
        }
        let ns = namespace.unwrap_or("default");
        let key = (
            String::new(),
            "namespaces".to_owned(),
            String::new(),
            ns.to_owned(),
        );
        if self.objects.contains_key(&key) {
            Ok(())
        } else {
            Err(ApiFailure::new(
                404,
                "NotFound",
                format!("namespaces \"{ns}\" not found"),
            ))
        }
    }

    /// Establishes the CRDs whose delay has passed: their resources become discoverable and servable.
    fn settle(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .pending_crds
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        self.pending_crds.retain(|(_, at)| *at > now);
        for name in due {
            let key = (
                "apiextensions.k8s.io".to_owned(),
                "customresourcedefinitions".to_owned(),
                String::new(),
                name,
            );
            let Some(stored) = self.objects.get_mut(&key) else {
                continue;
            };
            let crd = stored.object.clone();
            let (Some(group), Some(kind), Some(plural)) = (
                crd.pointer("/spec/group").and_then(Value::as_str),
                crd.pointer("/spec/names/kind").and_then(Value::as_str),
                crd.pointer("/spec/names/plural").and_then(Value::as_str),
            ) else {
                continue;
            };
            let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
            let versions = crd
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            self.resources
                .retain(|r| !(r.group == group && r.plural == plural));
            for version in versions {
                let served = version.get("served").and_then(Value::as_bool) != Some(false);
                let Some(v) = version.get("name").and_then(Value::as_str) else {
                    continue;
                };
                if served {
                    self.resources.push(Resource {
                        group: group.to_owned(),
                        version: v.to_owned(),
                        kind: kind.to_owned(),
                        plural: plural.to_owned(),
                        namespaced,
                        status: version.pointer("/subresources/status").is_some(),
                    });
                }
            }
            let conditions = json!([
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
            ]);
            set_pointer(&mut stored.object, "/status/conditions", conditions);
            self.revision += 1;
            metadata(&mut stored.object)
                .insert("resourceVersion".into(), json!(self.revision.to_string()));
        }
    }
}

fn check_identity(object: &Value, resource: &Resource, name: &str) -> Result<(), ApiFailure> {
    let bad = |m: String| Err(ApiFailure::new(400, "BadRequest", m));
    if let Some(kind) = object.get("kind").and_then(Value::as_str)
        && kind != resource.kind
    {
        return bad(format!(
            "kind {kind} does not match the resource {}",
            resource.kind
        ));
    }
    if let Some(n) = object.pointer("/metadata/name").and_then(Value::as_str)
        && n != name
    {
        return bad(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ));
    }
    Ok(())
}

fn skeleton(resource: &Resource, key: &Key) -> Value {
    let mut meta = Map::new();
    meta.insert("name".into(), json!(key.3));
    if resource.namespaced {
        meta.insert("namespace".into(), json!(key.2));
    }
    json!({"apiVersion": resource.api_version(), "kind": resource.kind, "metadata": meta})
}

fn metadata(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        if let Some(map) = object.as_object_mut() {
            map.insert("metadata".into(), json!({}));
        } else {
            *object = json!({"metadata": {}});
        }
    }
    match object.get_mut("metadata") {
        Some(Value::Object(map)) => map,
        // Made a mapping just above.
        _ => unreachable!("metadata is a mapping"),
    }
}

/// The object as served: with `managedFields` and the requested version.
fn render(stored: &Stored, resource: &Resource) -> Value {
    let mut object = stored.object.clone();
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(resource.api_version()));
        map.insert("kind".into(), json!(resource.kind));
    }
    let managed: Vec<Value> = stored
        .managers
        .iter()
        .map(|(name, m)| {
            json!({
                "manager": name, "operation": m.operation, "apiVersion": m.api_version,
                "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(&m.fields),
            })
        })
        .collect();
    metadata(&mut object).insert("managedFields".into(), Value::Array(managed));
    object
}
