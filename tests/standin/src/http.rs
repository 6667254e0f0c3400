//! HTTP side (plain HTTP only; the stand-in has no TLS).
//!
//! Upstream endpoints imitated (facts file, "Health" and "refresh the web admin"):
//! * `GET /healthz/live`: always 200. `GET /healthz/ready`: 200 once started with a data store,
//!   503 otherwise (the stand-in also answers 503 while migrating and with fault never-ready).
//! * 0.15: `GET /api/update/webadmin` (permission WebadminUpdate): 200 `{"data":null}`; 401
//!   without/wrong credentials with no `WWW-Authenticate` header (measured with the real 0.15.5:
//!   only /jmap sends `Bearer` and `Basic realm="Stalwart Server"`); 403 without the permission;
//!   500 on failure; errors as `application/problem+json`.
//! * 0.16: `POST /jmap` with `x:Action/set` creating `{"@type":"UpdateApps"}`. Measured with the
//!   real 0.16.18: UpdateApps answers `created` even when the bundle cannot be fetched, after it
//!   dropped the cached one, so `GET /admin/` then answers 404 (fault webadmin-fails does that
//!   here); otherwise `/admin/` serves the bundle (200).
//!
//! STAND-IN ONLY endpoints (not upstream, for tests): `POST /standin/deliver?n=K` and
//! `GET /standin/digest`.

use crate::records::{self, Records};
use crate::store::Store;
use base64::Engine;
use serde_json::{json, Value};
use stalwart_standin::{Fault, Release};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tiny_http::{Header, Method, Request, Response, Server};

/// Worker threads per listener (enough for a few stalled web-admin requests plus health checks).
const WORKERS: usize = 8;
/// How long fault webadmin-slow sleeps before answering.
const SLOW_WEBADMIN: Duration = Duration::from_secs(120);

pub struct App {
    pub release: Release,
    pub json_generation: bool,
    pub mode: crate::config::Mode,
    pub store: Mutex<Option<Store>>,
    /// True while the store must not be written (before start-up finished, during migration).
    pub read_only: AtomicBool,
    /// True once started with a data store (never with fault never-ready).
    pub ready: AtomicBool,
    pub blob_dir: Option<PathBuf>,
    pub admin: Option<(String, String)>,
    pub unprivileged: BTreeMap<String, String>,
    pub state_counter: AtomicU64,
    /// 0.16: a web UI bundle is cached and served under /admin/.
    pub webui: AtomicBool,
    /// 0.15: the config's settings (`/api/settings/list`).
    pub settings: BTreeMap<String, String>,
    /// 0.16: registry objects created over JMAP (object type, id, value). STAND-IN: kept in
    /// memory only, gone at the next start (upstream stores them in its database).
    pub registry: Mutex<Vec<(String, String, Value)>>,
    /// 0.15: the directory's principals, created and changed over `/api/principal`. STAND-IN:
    /// kept in memory only, gone at the next start (upstream stores them in its database).
    pub principals: Mutex<Vec<Value>>,
}

enum Who {
    Admin,
    Unprivileged,
}

type Resp = Response<std::io::Cursor<Vec<u8>>>;

fn header(k: &str, v: &str) -> Option<Header> {
    Header::from_bytes(k.as_bytes(), v.as_bytes()).ok()
}

fn json_resp(status: u16, body: &Value) -> Resp {
    let mut r = Response::from_data(body.to_string().into_bytes()).with_status_code(status);
    if let Some(h) = header("Content-Type", "application/json") {
        r.add_header(h);
    }
    r
}

fn problem(status: u16, title: &str, detail: &str) -> Resp {
    let body = json!({"type": "about:blank", "title": title, "status": status, "detail": detail});
    let mut r = Response::from_data(body.to_string().into_bytes()).with_status_code(status);
    if let Some(h) = header("Content-Type", "application/problem+json") {
        r.add_header(h);
    }
    r
}

/// 401. Upstream names the schemes (`WWW-Authenticate`) on /jmap only, not under /api.
fn unauthorized(schemes: bool) -> Resp {
    let mut r = problem(401, "Unauthorized", "You have to authenticate first.");
    if schemes {
        for v in [
            "Bearer realm=\"Stalwart Server\"",
            "Basic realm=\"Stalwart Server\"",
        ] {
            if let Some(h) = header("WWW-Authenticate", v) {
                r.add_header(h);
            }
        }
    }
    r
}

/// Binds every port on 127.0.0.1 (the `https` ones with the certificate) and starts the
/// worker threads.
pub fn serve(
    app: Arc<App>,
    ports: &[u16],
    https: &[u16],
    certificate: Option<&(Vec<u8>, Vec<u8>)>,
) -> Result<(), String> {
    let plain = ports.iter().map(|p| (*p, false));
    let tls = https.iter().map(|p| (*p, true));
    for (port, tls) in plain.chain(tls) {
        let addr = format!("127.0.0.1:{port}");
        let server = match (tls, certificate) {
            (true, Some((cert, key))) => Server::https(
                &addr,
                tiny_http::SslConfig {
                    certificate: cert.clone(),
                    private_key: key.clone(),
                },
            ),
            _ => Server::http(&addr),
        }
        .map_err(|e| format!("Failed to bind listener to {addr}: {e}"))?;
        let server = Arc::new(server);
        crate::info!(
            "Listening for {} on {addr}",
            if tls { "HTTPS" } else { "HTTP" }
        );
        for _ in 0..WORKERS {
            let server = server.clone();
            let app = app.clone();
            std::thread::spawn(move || {
                while let Ok(req) = server.recv() {
                    handle(&app, req);
                }
            });
        }
    }
    Ok(())
}

fn handle(app: &App, mut req: Request) {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let method = req.method().clone();
    let resp = match (&method, path) {
        (Method::Get | Method::Head, "/healthz/live") => Response::from_data(Vec::new()),
        (Method::Get | Method::Head, "/healthz/ready") => {
            if app.ready.load(Ordering::SeqCst) {
                Response::from_data(Vec::new())
            } else {
                Response::from_data(Vec::new()).with_status_code(503)
            }
        }
        (Method::Get, "/api/update/webadmin") if !app.json_generation => webadmin(app, &req),
        (Method::Get, "/api/settings/list") if !app.json_generation => {
            settings_list(app, &req, query)
        }
        (Method::Get, "/api/principal") if !app.json_generation => principals(app, &req, query),
        (Method::Post, "/api/principal") if !app.json_generation => create_principal(app, &mut req),
        (Method::Patch, p) if !app.json_generation && p.starts_with("/api/principal/") => {
            let name = p.trim_start_matches("/api/principal/").to_string();
            update_principal(app, &mut req, &name)
        }
        (Method::Get, "/jmap/session" | "/.well-known/jmap") if app.json_generation => session(app),
        (Method::Post, "/jmap" | "/jmap/") if app.json_generation => jmap(app, &mut req),
        (Method::Get, "/admin/") if app.json_generation => {
            if app.webui.load(Ordering::SeqCst) {
                let mut r = Response::from_data(b"<!doctype html><title>webui</title>".to_vec());
                if let Some(h) = header("Content-Type", "text/html") {
                    r.add_header(h);
                }
                r
            } else {
                problem(
                    404,
                    "Not Found",
                    "The requested resource does not exist on this server.",
                )
            }
        }
        (Method::Post, "/standin/deliver") => deliver(app, query),
        (Method::Get, "/standin/digest") => digest(app),
        _ => problem(404, "Not Found", "The requested resource does not exist."),
    };
    let _ = req.respond(resp);
}

/// 0.15 `GET /api/settings/list?prefix=&page=N&limit=L` (permission SettingsList): the keys in
/// order, paged, as `{"data":{"total":T,"items":{key:value}}}`.
fn settings_list(app: &App, req: &Request, query: &str) -> Resp {
    match authenticate(app, req) {
        None => return unauthorized(false),
        Some(Who::Unprivileged) => {
            return problem(
                403,
                "Forbidden",
                "You do not have enough permissions to perform this action (SettingsList).",
            )
        }
        Some(Who::Admin) => {}
    }
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    let prefix = param("prefix");
    let page: usize = param("page").parse().unwrap_or(1).max(1);
    let limit: usize = param("limit").parse().unwrap_or(50).max(1);
    let keys: Vec<(&String, &String)> = app
        .settings
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect();
    let items: serde_json::Map<String, Value> = keys
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json_resp(200, &json!({"data": {"total": keys.len(), "items": items}}))
}

/// 0.15 `GET /api/principal?page=N&limit=L&types=T` (permission PrincipalList): the
/// principals of that type, paged, `{"data":{"items":[...],"total":T}}` (every field, secrets
/// too, as upstream lists them).
fn principals(app: &App, req: &Request, query: &str) -> Resp {
    if authenticate(app, req).is_none() {
        return unauthorized(false);
    }
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    let page: usize = param("page").parse().unwrap_or(1).max(1);
    let limit: usize = param("limit").parse().unwrap_or(50).max(1);
    let ty = param("types");
    let all = lock(&app.principals);
    let of: Vec<&Value> = all
        .iter()
        .filter(|p| ty.is_empty() || p["type"] == ty.as_str())
        .collect();
    let items: Vec<Value> = of
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|p| (*p).clone())
        .collect();
    json_resp(200, &json!({"data": {"items": items, "total": of.len()}}))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn body_json(req: &mut Request) -> Option<Value> {
    let mut body = String::new();
    req.as_reader().read_to_string(&mut body).ok()?;
    serde_json::from_str(&body).ok()
}

/// 0.15 `POST /api/principal` (permission PrincipalCreate): `{"data": <new id>}`; a name taken
/// already is an error, sent with HTTP 200 as upstream sends management errors.
fn create_principal(app: &App, req: &mut Request) -> Resp {
    if !matches!(authenticate(app, req), Some(Who::Admin)) {
        return unauthorized(false);
    }
    let Some(mut p) = body_json(req).filter(Value::is_object) else {
        return problem(400, "Bad Request", "Invalid JSON body");
    };
    let mut all = lock(&app.principals);
    if all.iter().any(|q| q["name"] == p["name"]) {
        return json_resp(
            200,
            &json!({"error": "fieldAlreadyExists", "field": "name"}),
        );
    }
    let id = all.len() as u64 + 1;
    p["id"] = json!(id);
    all.push(p);
    json_resp(200, &json!({"data": id}))
}

/// 0.15 `PATCH /api/principal/<name>` (permission PrincipalUpdate): a list of
/// `{"action":"set"|"addItem"|"removeItem","field":F,"value":V}` (directory/src/backend/
/// internal/mod.rs `PrincipalUpdate`); `{"data":null}`.
fn update_principal(app: &App, req: &mut Request, name: &str) -> Resp {
    if !matches!(authenticate(app, req), Some(Who::Admin)) {
        return unauthorized(false);
    }
    let Some(Value::Array(changes)) = body_json(req) else {
        return problem(400, "Bad Request", "Invalid JSON body");
    };
    let mut all = lock(&app.principals);
    let Some(p) = all.iter_mut().find(|p| p["name"] == name) else {
        return json_resp(200, &json!({"error": "notFound", "item": name}));
    };
    for c in changes {
        let (Some(field), value) = (c["field"].as_str(), c["value"].clone()) else {
            continue;
        };
        match c["action"].as_str() {
            Some("set") => p[field] = value,
            Some("addItem") => {
                if !p[field].is_array() {
                    p[field] = json!([]);
                }
                if let Some(a) = p[field].as_array_mut() {
                    a.push(value);
                }
            }
            Some("removeItem") => {
                if let Some(a) = p[field].as_array_mut() {
                    a.retain(|v| *v != value);
                }
            }
            _ => return problem(400, "Bad Request", "Unknown action"),
        }
    }
    crate::info!("Principal {name} updated");
    json_resp(200, &json!({"data": null}))
}

/// 0.16 `x:<Object>/set` and `/get` for registry objects other than actions: created objects
/// get ids, updates of singletons are accepted. Fault registry-refuses refuses every create.
fn registry(app: &App, name: &str, args: &Value) -> Value {
    let Some((object, method)) = name.strip_prefix("x:").and_then(|n| n.split_once('/')) else {
        return json!({"type": "unknownMethod"});
    };
    let mut reg = match app.registry.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if method == "get" {
        let list: Vec<Value> = reg
            .iter()
            .filter(|(o, _, _)| o == object)
            .map(|(_, id, v)| {
                let mut v = v.clone();
                v["id"] = json!(id);
                v
            })
            .collect();
        return json!({"list": list, "notFound": []});
    }
    let mut created = serde_json::Map::new();
    let mut not_created = serde_json::Map::new();
    for (cid, obj) in args
        .get("create")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if app.release.fault == Fault::RegistryRefuses {
            crate::error!("Refusing {object} {cid} (stand-in fault registry-refuses)");
            not_created.insert(
                cid.clone(),
                json!({"type": "invalidProperties", "description": "refused by the stand-in (fault registry-refuses)"}),
            );
            continue;
        }
        let id = format!("r{}", app.state_counter.fetch_add(1, Ordering::SeqCst) + 1);
        reg.push((object.to_string(), id.clone(), obj.clone()));
        created.insert(cid.clone(), json!({"id": id}));
    }
    let mut updated = serde_json::Map::new();
    for (id, _) in args
        .get("update")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        updated.insert(id.clone(), Value::Null);
    }
    crate::info!(
        "Registry {object}: {} created, {} refused, {} updated",
        created.len(),
        not_created.len(),
        updated.len()
    );
    let mut out = json!({"created": created, "updated": updated});
    if !not_created.is_empty() {
        out["notCreated"] = Value::Object(not_created);
    }
    out
}

/// Anonymous JMAP session (0.16). Measured: `apiUrl` is absolute (`https://<hostname>/jmap/`)
/// in normal mode and relative (`/jmap/`) in recovery and bootstrap mode; nothing else in the
/// anonymous answers names the mode.
fn session(app: &App) -> Resp {
    let api = if app.mode == crate::config::Mode::Normal {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("https://{host}/jmap/")
    } else {
        "/jmap/".to_string()
    };
    json_resp(
        200,
        &json!({
            "capabilities": {"urn:ietf:params:jmap:core": {}, "urn:stalwart:jmap": {}},
            "accounts": {}, "primaryAccounts": {}, "username": "",
            "apiUrl": api, "downloadUrl": "", "uploadUrl": "", "eventSourceUrl": "",
            "state": "0"
        }),
    )
}

fn authenticate(app: &App, req: &Request) -> Option<Who> {
    let value = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))?
        .value
        .as_str()
        .trim()
        .to_string();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let b64 = if scheme.eq_ignore_ascii_case("basic") {
        token
    } else if scheme.eq_ignore_ascii_case("bearer") {
        // Upstream also accepts `Bearer api_<base64(user:secret)>` under /api.
        token.strip_prefix("api_")?
    } else {
        return None;
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    if let Some((u, p)) = &app.admin {
        if u == user && crate::crypt::verify(p, pass) {
            return Some(Who::Admin);
        }
    }
    match app.unprivileged.get(user) {
        Some(p) if crate::crypt::verify(p, pass) => Some(Who::Unprivileged),
        _ => None,
    }
}

/// Applies the web-admin faults; `Some(response)` when the update fails.
fn webadmin_fault(app: &App) -> Option<Resp> {
    match app.release.fault {
        Fault::WebadminFails => {
            crate::error!("Failed to update webadmin: stand-in fault webadmin-fails");
            Some(problem(
                500,
                "Internal Server Error",
                "Failed to download or unpack the web admin bundle (stand-in fault webadmin-fails)",
            ))
        }
        Fault::WebadminSlow => {
            crate::warn!(
                "Web admin update stalls for {}s (fault webadmin-slow)",
                SLOW_WEBADMIN.as_secs()
            );
            std::thread::sleep(SLOW_WEBADMIN);
            None
        }
        _ => None,
    }
}

fn webadmin(app: &App, req: &Request) -> Resp {
    match authenticate(app, req) {
        None => unauthorized(false),
        Some(Who::Unprivileged) => problem(
            403,
            "Forbidden",
            "You do not have enough permissions to perform this action (WebadminUpdate).",
        ),
        Some(Who::Admin) => {
            if let Some(r) = webadmin_fault(app) {
                return r;
            }
            crate::info!("Web admin updated");
            json_resp(200, &json!({"data": null}))
        }
    }
}

fn jmap(app: &App, req: &mut Request) -> Resp {
    let who = authenticate(app, req);
    let Some(who) = who else {
        return unauthorized(true);
    };
    let mut body = String::new();
    if req
        .as_reader()
        .take(1 << 20)
        .read_to_string(&mut body)
        .is_err()
    {
        return problem(400, "Bad Request", "Unreadable request body.");
    }
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return problem(400, "Bad Request", "The request is not valid JSON.");
    };
    let Some(calls) = request.get("methodCalls").and_then(Value::as_array) else {
        return problem(400, "Bad Request", "Missing methodCalls.");
    };
    // Upstream's x: methods exist only under its own capability (measured).
    let stalwart_capability = request
        .get("using")
        .and_then(Value::as_array)
        .is_some_and(|u| u.iter().any(|c| c == "urn:stalwart:jmap"));
    let mut responses = Vec::new();
    for call in calls {
        let (Some(name), Some(args), Some(call_id)) = (
            call.get(0).and_then(Value::as_str),
            call.get(1),
            call.get(2).cloned(),
        ) else {
            return problem(400, "Bad Request", "Malformed method call.");
        };
        if !name.starts_with("x:") || !stalwart_capability {
            responses.push(json!(["error", {"type": "unknownMethod"}, call_id]));
            continue;
        }
        if app.mode == crate::config::Mode::Bootstrap {
            responses.push(json!(["error", {"type": "forbidden", "description": "The server is in bootstrap mode. Only the 'Bootstrap' object type can be accessed until the bootstrap process is complete."}, call_id]));
            continue;
        }
        if name != "x:Action/set" {
            let answer = registry(app, name, args);
            if answer.get("type").is_some() {
                responses.push(json!(["error", answer, call_id]));
            } else {
                responses.push(json!([name, answer, call_id]));
            }
            continue;
        }
        let mut created = serde_json::Map::new();
        let mut not_created = serde_json::Map::new();
        if let Some(create) = args.get("create").and_then(Value::as_object) {
            for (id, obj) in create {
                if obj.get("@type").and_then(Value::as_str) != Some("UpdateApps") {
                    not_created.insert(
                        id.clone(),
                        json!({"type": "invalidProperties", "description": "The stand-in only implements UpdateApps."}),
                    );
                    continue;
                }
                if matches!(who, Who::Unprivileged) {
                    not_created.insert(
                        id.clone(),
                        json!({"type": "forbidden", "description": "You do not have enough permissions to perform this action."}),
                    );
                    continue;
                }
                if app.release.fault == Fault::WebadminFails {
                    // The real 0.16: the cached bundle is deleted first, the failed fetch is
                    // only logged, and the action still counts as created.
                    app.webui.store(false, Ordering::SeqCst);
                    crate::error!("Failed to unpack application for prefixes: admin, account (stand-in fault webadmin-fails)");
                } else if let Some(r) = webadmin_fault(app) {
                    return r;
                } else {
                    app.webui.store(true, Ordering::SeqCst);
                }
                crate::info!("Applications updated (UpdateApps)");
                let n = app.state_counter.fetch_add(1, Ordering::SeqCst) + 1;
                created.insert(id.clone(), json!({"id": format!("a{n}")}));
            }
        }
        let mut result = serde_json::Map::new();
        result.insert("created".into(), Value::Object(created));
        if !not_created.is_empty() {
            result.insert("notCreated".into(), Value::Object(not_created));
        }
        responses.push(json!([name, Value::Object(result), call_id]));
    }
    let state = app.state_counter.load(Ordering::SeqCst);
    json_resp(
        200,
        &json!({"methodResponses": responses, "sessionState": format!("s{state:x}")}),
    )
}

fn deliver(app: &App, query: &str) -> Resp {
    let n = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("n="))
        .map_or(Ok(1), |v| v.parse::<u64>());
    let n = match n {
        Ok(n) if n <= 100_000 => n,
        _ => return problem(400, "Bad Request", "n must be a number <= 100000"),
    };
    if app.read_only.load(Ordering::SeqCst) {
        return problem(
            503,
            "Service Unavailable",
            "The database is read-only (migration in progress): no new e-mail can be received.",
        );
    }
    let Ok(mut guard) = app.store.lock() else {
        return problem(500, "Internal Server Error", "store lock poisoned");
    };
    let Some(store) = guard.as_mut() else {
        return problem(503, "Service Unavailable", "No data store configured.");
    };
    let result = (|| -> Result<usize, String> {
        let existing = store.records()?;
        let first = records::next_mail(&existing);
        let mut batch = Vec::new();
        for i in first..first + n {
            let payload = records::mail_payload(i);
            if let Some(dir) = &app.blob_dir {
                crate::blob::put(dir, payload.as_bytes())?;
            }
            batch.push((
                records::mail_key(i),
                records::encode(store.schema(), &payload),
            ));
        }
        store.put_batch(&batch)?;
        Ok(existing.len() + n as usize)
    })();
    match result {
        Ok(total) => json_resp(200, &json!({"delivered": n, "records": total})),
        Err(e) => {
            crate::error!("Failed to store message: {e}");
            problem(500, "Internal Server Error", &e)
        }
    }
}

/// Summary of the data: `{"version","schema","records","sha256","blobs"}`.
pub fn digest_value(version: &str, schema: u32, recs: &Records, blobs: Option<usize>) -> Value {
    json!({
        "version": version,
        "schema": schema,
        "records": recs.len(),
        "sha256": records::digest(recs),
        "blobs": blobs,
    })
}

fn digest(app: &App) -> Resp {
    let Ok(guard) = app.store.lock() else {
        return problem(500, "Internal Server Error", "store lock poisoned");
    };
    let Some(store) = guard.as_ref() else {
        return problem(503, "Service Unavailable", "No data store configured.");
    };
    match store.records() {
        Ok(recs) => json_resp(
            200,
            &digest_value(
                &app.release.version,
                store.schema(),
                &recs,
                app.blob_dir.as_deref().map(crate::blob::count),
            ),
        ),
        Err(e) => problem(500, "Internal Server Error", &e),
    }
}
