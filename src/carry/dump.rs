//! Reading 0.15's settings and directory through its management API while it still runs (the
//! first step of upstream's UPGRADING/v0_16.md, `migrate_v016.py dump`).
//!
//! Facts (crossing.md section 1): `GET /api/settings/list?prefix=&page=N&limit=200` answers
//! `{"data":{"total":T,"items":{key:value}}}` in key order, with config.toml's own keys raw
//! (macros unexpanded); `GET /api/principal?page=N&limit=200&types=<type>` answers
//! `{"data":{"items":[principal...],"total":T}}` with every field; a type the build lacks
//! (tenant outside the enterprise edition) answers an error, skipped.

use crate::webadmin::{Api, WebadminError};
use serde_json::Value;
use std::collections::BTreeMap;

const PAGE: usize = 200;

/// The types 0.15 lists (upstream's `ALL_PRINCIPAL_TYPES` without `other`, which 0.15 does not
/// parse and so lists everything).
const TYPES: &[&str] = &[
    "individual",
    "group",
    "resource",
    "location",
    "list",
    "domain",
    "tenant",
    "role",
    "apiKey",
    "oauthClient",
];

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dump {
    pub settings: BTreeMap<String, String>,
    pub principals: Vec<Value>,
}

pub fn dump(api: &Api) -> Result<Dump, WebadminError> {
    let mut settings = BTreeMap::new();
    for page in 1.. {
        let d = api.rest_get(&format!(
            "/api/settings/list?prefix=&page={page}&limit={PAGE}"
        ))?;
        let items = d.get("items").and_then(Value::as_object);
        let before = settings.len();
        for (k, v) in items.into_iter().flatten() {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            settings.insert(k.clone(), v);
        }
        let total = d.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
        if settings.len() == before || settings.len() >= total {
            break;
        }
    }
    let mut principals = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for ty in TYPES {
        for page in 1.. {
            let d = match api.rest_get(&format!(
                "/api/principal?page={page}&limit={PAGE}&types={ty}"
            )) {
                Ok(d) => d,
                // A type this build does not have (tenants outside the enterprise edition).
                Err(WebadminError::Server { .. }) if page == 1 => break,
                Err(e) => return Err(e),
            };
            let items = d.get("items").and_then(Value::as_array).cloned();
            let items = items.unwrap_or_default();
            let n = items.len();
            for p in items {
                if let Some(id) = p.get("id").and_then(Value::as_u64) {
                    if seen.insert(id) {
                        principals.push(p);
                    }
                }
            }
            let total = d.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
            if n < PAGE || page * PAGE >= total {
                break;
            }
        }
    }
    Ok(Dump {
        settings,
        principals,
    })
}
