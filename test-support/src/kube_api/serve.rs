//! The HTTP side of the test API server: routing Kubernetes API paths to the [`Store`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::store::{ApiFailure, Resource, Store, Target};

pub(crate) type Shared = Arc<Mutex<Store>>;

/// Largest request body read, well above Kubernetes' own 3 MiB limit on a request.
const MAX_BODY: usize = 8 << 20;

pub(crate) async fn handle(
    store: Shared,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = parse_query(request.uri().query().unwrap_or(""));
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
    store.requests.push(format!(
        "{method} {path}{}",
        match query.is_empty() {
            true => String::new(),
            false => format!("?{}", encode_query(&query)),
        }
    ));
    if let Some(code) = store.take_fault(method.as_str(), &path) {
        let failure = ApiFailure::new(code, reason_of(code), "injected by the test API server");
        return Ok(failure_response(&failure));
    }
    let answer = if body.len() > MAX_BODY {
        Err(ApiFailure::new(
            413,
            "RequestEntityTooLarge",
            "request body too large",
        ))
    } else {
        route(&mut store, &method, &path, &query, &content_type, &body)
    };
    Ok(match answer {
        Ok((status, value)) => json_response(status, &value),
        Err(failure) => failure_response(&failure),
    })
}

fn route(
    store: &mut Store,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiFailure> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Ok((StatusCode::OK, version_info())),
        ["api"] => return Ok((StatusCode::OK, api_versions())),
        ["apis"] => return Ok((StatusCode::OK, api_groups(store))),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found(path)),
    };
    if rest.is_empty() {
        return resource_list(store, group, version)
            .map(|v| (StatusCode::OK, v))
            .ok_or_else(|| not_found(path));
    }
    // `namespaces/NS/PLURAL/...` when PLURAL is a namespaced resource; otherwise a cluster path, which
    // includes `namespaces/NAME` itself.
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, more @ ..]
            if store
                .resource(group, version, plural)
                .is_some_and(|r| r.namespaced) =>
        {
            (Some(*ns), {
                let mut r = vec![*plural];
                r.extend_from_slice(more);
                r
            })
        }
        _ => (None, rest.to_vec()),
    };
    let resource = store
        .resource(group, version, rest[0])
        .ok_or_else(|| not_found(path))?;
    if resource.namespaced != namespace.is_some() && rest.len() > 1 {
        return Err(not_found(path));
    }
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    match (rest.as_slice(), method) {
        ([_], &Method::GET) => {
            let selector = query.get("labelSelector").map_or("", String::as_str);
            let items = store.list(&resource, namespace, selector)?;
            Ok((StatusCode::OK, list(&resource, items, store.revision())))
        }
        ([_], &Method::POST) => {
            let object = parse_body(body, content_type)?;
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiFailure::new(400, "BadRequest", "metadata.name is required"))?
                .to_owned();
            if store.get(&resource, namespace, &name).is_ok() {
                return Err(ApiFailure::new(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", resource.plural),
                ));
            }
            let manager = manager_of(query, "unknown");
            store
                .update_resource(
                    &resource,
                    namespace,
                    &name,
                    &manager,
                    Target::Main,
                    dry_run,
                    |o| {
                        *o = object;
                    },
                )
                .map(|v| (StatusCode::CREATED, v))
        }
        ([_, name], &Method::GET) => Ok((StatusCode::OK, store.get(&resource, namespace, name)?)),
        ([_, name], &Method::DELETE) => store
            .delete(&resource, namespace, name, dry_run)
            .map(|v| (StatusCode::OK, v)),
        ([_, name], &Method::PATCH | &Method::PUT) => write(
            store,
            &resource,
            namespace,
            name,
            Target::Main,
            method,
            query,
            content_type,
            body,
            dry_run,
        ),
        ([_, name, "status"], &Method::GET) => {
            Ok((StatusCode::OK, store.get(&resource, namespace, name)?))
        }
        ([_, name, "status"], &Method::PATCH | &Method::PUT) if resource.status => write(
            store,
            &resource,
            namespace,
            name,
            Target::Status,
            method,
            query,
            content_type,
            body,
            dry_run,
        ),
        _ => Err(ApiFailure::new(
            405,
            "MethodNotAllowed",
            format!("{method} {path} is not supported by the test API server"),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn write(
    store: &mut Store,
    resource: &Resource,
    namespace: Option<&str>,
    name: &str,
    target: Target,
    method: &Method,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiFailure> {
    let patch = parse_body(body, content_type)?;
    let existed = store.get(resource, namespace, name).is_ok();
    let created = |v: Value| {
        let status = if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        (status, v)
    };
    if method == Method::PATCH && content_type.starts_with("application/apply-patch") {
        let manager = query.get("fieldManager").ok_or_else(|| {
            ApiFailure::new(
                400,
                "BadRequest",
                "PATCH, fieldManager: Required value: is required for apply patch",
            )
        })?;
        let force = query.get("force").is_some_and(|v| v == "true");
        return store
            .apply(
                resource, namespace, name, patch, manager, force, target, dry_run,
            )
            .map(created);
    }
    let manager = manager_of(query, "unknown");
    if method == Method::PUT {
        return store
            .update_resource(resource, namespace, name, &manager, target, dry_run, |o| {
                *o = patch;
            })
            .map(created);
    }
    if !existed {
        return Err(ApiFailure::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", resource.plural),
        ));
    }
    if content_type.starts_with("application/merge-patch+json") {
        return store
            .update_resource(resource, namespace, name, &manager, target, dry_run, |o| {
                merge_patch(o, &patch);
            })
            .map(created);
    }
    Err(ApiFailure::new(
        415,
        "UnsupportedMediaType",
        format!("the test API server does not support PATCH with {content_type:?}"),
    ))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn parse_body(body: &[u8], content_type: &str) -> Result<Value, ApiFailure> {
    let bad = |m: String| ApiFailure::new(400, "BadRequest", m);
    if content_type.contains("yaml") && serde_json::from_slice::<Value>(body).is_err() {
        let text = std::str::from_utf8(body).map_err(|_| bad("body is not UTF-8".into()))?;
        return serde_saphyr::from_str(text).map_err(|e| bad(format!("invalid YAML: {e}")));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))
}

fn manager_of(query: &BTreeMap<String, String>, default: &str) -> String {
    query
        .get("fieldManager")
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn list(resource: &Resource, items: Vec<Value>, revision: u64) -> Value {
    json!({
        "apiVersion": resource.api_version(),
        "kind": format!("{}List", resource.kind),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    })
}

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "34", "gitVersion": "v1.34.0-mast-test", "gitCommit": "", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
    })
}

fn api_versions() -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

fn api_groups(store: &mut Store) -> Value {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in store.resources() {
        if !r.group.is_empty() {
            let versions = groups.entry(r.group.clone()).or_default();
            if !versions.contains(&r.version) {
                versions.push(r.version.clone());
            }
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let list: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                .collect();
            let preferred = list.first().cloned().unwrap_or(Value::Null);
            json!({"name": name, "versions": list, "preferredVersion": preferred})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(store: &mut Store, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in store.resources() {
        if r.group != group || r.version != version {
            continue;
        }
        let verbs = [
            "create", "delete", "get", "list", "patch", "update", "watch",
        ];
        resources.push(json!({
            "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
            "kind": r.kind, "verbs": verbs,
        }));
        if r.status {
            resources.push(json!({
                "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    (!resources.is_empty()).then(|| {
        json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": resources,
        })
    })
}

fn not_found(path: &str) -> ApiFailure {
    ApiFailure::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

fn reason_of(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

fn failure_response(failure: &ApiFailure) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(failure.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": failure.message, "reason": failure.reason, "code": failure.code,
    });
    json_response(status, &body)
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn encode_query(query: &BTreeMap<String, String>) -> String {
    query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
