//! Reading 0.15's settings and directory through its management API while it still runs (the
//! first step of upstream's UPGRADING/v0_16.md, `migrate_v016.py dump`).
//!
//! Facts (crossing.md section 1): `GET /api/settings/list?prefix=&page=N&limit=200` answers
//! `{"data":{"total":T,"items":{key:value}}}` in key order, with config.toml's own keys raw
//! (macros unexpanded); `GET /api/principal?page=N&limit=200&types=<type>` answers
//! `{"data":{"items":[principal...],"total":T}}` with every field; a type the build lacks
//! (tenant outside the enterprise edition) answers an error, skipped.
//!
//! The server runs as the service user, and a compromised one answers what it likes: a `total`
//! never reached, the same page again and again, new items forever, huge pages. So each answer
//! is bounded (`webadmin::MAX_ANSWER`), every page must bring something new, and the pages,
//! items and bytes of the whole dump are capped ([`Limits`]) far above any real directory.

use crate::server::webadmin::{Api, WebadminError};
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

/// Bounds of one dump.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Pages of one listing (the settings, or the principals of one type).
    pub pages: usize,
    /// Settings, and principals, each.
    pub items: usize,
    /// Bytes of all answers together.
    pub bytes: u64,
}

impl Default for Limits {
    /// A million settings or principals, 1 GiB of answers: a hundred times a large install.
    fn default() -> Limits {
        Limits {
            pages: 1_000_000 / PAGE,
            items: 1_000_000,
            bytes: 1 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Api(#[from] WebadminError),
    #[error(
        "{url} answered no {what} that the earlier pages did not have, while its `total` says \
         there are more: the listing would never end (is that the Stalwart server?)"
    )]
    NoProgress { url: String, what: &'static str },
    #[error(
        "listing {what} went past {limit} (at {url}): far more than any real server has; the \
         answers are not trusted (is that the Stalwart server?)"
    )]
    TooMany {
        url: String,
        what: &'static str,
        limit: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dump {
    pub settings: BTreeMap<String, String>,
    pub principals: Vec<Value>,
}

impl Dump {
    /// How many principals (by id) and settings (by key) differ between two dumps: added,
    /// removed or changed.
    pub fn differences(&self, other: &Dump) -> (usize, usize) {
        let by_id = |d: &Dump| -> BTreeMap<u64, Value> {
            d.principals
                .iter()
                .filter_map(|p| Some((p.get("id")?.as_u64()?, p.clone())))
                .collect()
        };
        let (a, b) = (by_id(self), by_id(other));
        let principals = a
            .keys()
            .chain(b.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|id| a.get(id) != b.get(id))
            .count();
        let settings = self
            .settings
            .keys()
            .chain(other.settings.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| self.settings.get(*k) != other.settings.get(*k))
            .count();
        (principals, settings)
    }
}

pub fn dump(api: &Api) -> Result<Dump, DumpError> {
    dump_with(&mut |path| api.rest_get_sized(path), Limits::default())
}

/// `GET path` of the management API: the `data` of the answer, and the answer's size.
pub type Get<'a> = dyn FnMut(&str) -> Result<(Value, u64), WebadminError> + 'a;

/// The answers taken so far: pages of the current listing and bytes of the whole dump.
struct Budget {
    limits: Limits,
    bytes: u64,
}

impl Budget {
    /// `get(path)`, counted: Err once the page or byte limit is passed.
    fn get(
        &mut self,
        get: &mut Get,
        path: &str,
        page: usize,
        what: &'static str,
    ) -> Result<Value, DumpError> {
        if page > self.limits.pages {
            return Err(DumpError::TooMany {
                url: path.into(),
                what,
                limit: format!("{} pages", self.limits.pages),
            });
        }
        let (v, size) = get(path)?;
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.limits.bytes {
            return Err(DumpError::TooMany {
                url: path.into(),
                what,
                limit: format!("{} bytes of answers", self.limits.bytes),
            });
        }
        Ok(v)
    }

    fn items(&self, n: usize, path: &str, what: &'static str) -> Result<(), DumpError> {
        if n > self.limits.items {
            return Err(DumpError::TooMany {
                url: path.into(),
                what,
                limit: format!("{} items", self.limits.items),
            });
        }
        Ok(())
    }
}

/// The dump, with `get` answering `GET path` (the `data` of the answer, and its size).
pub fn dump_with(get: &mut Get, limits: Limits) -> Result<Dump, DumpError> {
    let mut budget = Budget { limits, bytes: 0 };
    let mut settings = BTreeMap::new();
    for page in 1.. {
        let path = format!("/api/settings/list?prefix=&page={page}&limit={PAGE}");
        let d = budget.get(get, &path, page, "settings")?;
        let Some(items) = d
            .get("items")
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty())
        else {
            break;
        };
        let before = settings.len();
        for (k, v) in items {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            settings.insert(k.clone(), v);
        }
        budget.items(settings.len(), &path, "settings")?;
        let total = d.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
        if settings.len() >= total {
            break;
        }
        if settings.len() == before {
            return Err(DumpError::NoProgress {
                url: path,
                what: "setting",
            });
        }
    }
    let mut principals = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for ty in TYPES {
        for page in 1.. {
            let path = format!("/api/principal?page={page}&limit={PAGE}&types={ty}");
            let mut d = match budget.get(get, &path, page, "principals") {
                Ok(d) => d,
                // A type this build does not have (tenants outside the enterprise edition).
                Err(DumpError::Api(WebadminError::Server { .. })) if page == 1 => break,
                Err(e) => return Err(e),
            };
            let total = d.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
            let items = match d.get_mut("items").map(Value::take) {
                Some(Value::Array(items)) if !items.is_empty() => items,
                _ => break,
            };
            let n = items.len();
            let before = principals.len();
            for p in items {
                if let Some(id) = p.get("id").and_then(Value::as_u64) {
                    if seen.insert(id) {
                        principals.push(p);
                    }
                }
            }
            budget.items(principals.len(), &path, "principals")?;
            if n < PAGE || page * PAGE >= total {
                break;
            }
            if principals.len() == before {
                return Err(DumpError::NoProgress {
                    url: path,
                    what: "principal",
                });
            }
        }
    }
    Ok(Dump {
        settings,
        principals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A fake 0.15: `answer(path)` gives the `data` of each answer; counts the requests.
    fn run(
        limits: Limits,
        mut answer: impl FnMut(&str) -> Result<Value, WebadminError>,
    ) -> (Result<Dump, DumpError>, usize) {
        let mut calls = 0;
        let r = dump_with(
            &mut |path| {
                calls += 1;
                let v = answer(path)?;
                let size = v.to_string().len() as u64;
                Ok((v, size))
            },
            limits,
        );
        (r, calls)
    }

    fn page_of(path: &str) -> usize {
        let p = path.split("page=").nth(1).unwrap_or("1");
        p.split('&').next().unwrap_or("1").parse().unwrap()
    }

    /// No principals of any type (an empty page ends a listing).
    fn no_principals() -> Value {
        json!({"items": [], "total": 0})
    }

    fn small() -> Limits {
        Limits {
            pages: 50,
            items: 2_000,
            bytes: 10 << 20,
        }
    }

    #[test]
    fn a_real_looking_directory_is_read_whole() {
        let (r, _) = run(small(), |path| {
            Ok(if path.starts_with("/api/settings") {
                // 250 settings over two pages.
                let page = page_of(path);
                let items: serde_json::Map<String, Value> = (0..250)
                    .skip((page - 1) * PAGE)
                    .take(PAGE)
                    .map(|i| (format!("k{i:04}"), json!(format!("v{i}"))))
                    .collect();
                json!({"items": items, "total": 250})
            } else if path.contains("types=individual") {
                let page = page_of(path);
                let items: Vec<Value> = (0..201)
                    .skip((page - 1) * PAGE)
                    .take(PAGE)
                    .map(|i| json!({"id": i, "name": format!("u{i}")}))
                    .collect();
                json!({"items": items, "total": 201})
            } else {
                no_principals()
            })
        });
        let d = r.unwrap();
        assert_eq!(d.settings.len(), 250);
        assert_eq!(d.principals.len(), 201);
    }

    #[test]
    fn the_same_page_again_and_again_is_an_error_not_a_loop() {
        // Settings: page 1 forever, `total` never reached.
        let (r, calls) = run(small(), |path| {
            Ok(if path.starts_with("/api/settings") {
                json!({"items": {"a": "1", "b": "2"}, "total": 1_000_000})
            } else {
                no_principals()
            })
        });
        let e = r.unwrap_err();
        assert!(
            matches!(&e, DumpError::NoProgress { url, .. } if url.contains("page=2")),
            "{e:?}"
        );
        assert_eq!(calls, 2);
        // Principals: the same full page of 200 forever.
        let (r, calls) = run(small(), |path| {
            Ok(if path.starts_with("/api/settings") {
                json!({"items": {}, "total": 0})
            } else {
                let items: Vec<Value> = (0..PAGE).map(|i| json!({"id": i})).collect();
                json!({"items": items, "total": 1_000_000})
            })
        });
        let e = r.unwrap_err();
        assert!(
            matches!(&e, DumpError::NoProgress { url, what: "principal" } if url.contains("types=individual")),
            "{e:?}"
        );
        assert_eq!(calls, 3);
        assert!(e.to_string().contains("/api/principal?page=2"), "{e}");
    }

    #[test]
    fn new_items_forever_stop_at_the_caps() {
        // A new page of new settings every time: stopped by the item cap.
        let (r, calls) = run(small(), |path| {
            let page = page_of(path);
            Ok(if path.starts_with("/api/settings") {
                let items: serde_json::Map<String, Value> = (0..PAGE)
                    .map(|i| (format!("p{page}-{i}"), json!("x")))
                    .collect();
                json!({"items": items, "total": u64::MAX})
            } else {
                no_principals()
            })
        });
        let e = r.unwrap_err();
        assert!(
            matches!(
                &e,
                DumpError::TooMany {
                    what: "settings",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("2000 items"), "{e}");
        assert_eq!(calls, 11);
        // One new principal a page: stopped by the page cap.
        let (r, calls) = run(small(), |path| {
            let page = page_of(path);
            Ok(if path.starts_with("/api/settings") {
                json!({"items": {}, "total": 0})
            } else {
                let items: Vec<Value> = (0..PAGE)
                    .map(|i| json!({"id": if i == 0 { page } else { 1 }}))
                    .collect();
                json!({"items": items, "total": u64::MAX})
            })
        });
        let e = r.unwrap_err();
        assert!(
            matches!(
                &e,
                DumpError::TooMany {
                    what: "principals",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("50 pages"), "{e}");
        assert_eq!(calls, 1 + 50);
        // Pages of a few MiB each: stopped by the byte cap.
        let big = "x".repeat(1 << 20);
        let (r, calls) = run(small(), |path| {
            let page = page_of(path);
            Ok(if path.starts_with("/api/settings") {
                json!({"items": {format!("k{page}"): big.clone()}, "total": u64::MAX})
            } else {
                no_principals()
            })
        });
        let e = r.unwrap_err();
        assert!(
            e.to_string().contains(&format!("{} bytes", 10 << 20)),
            "{e}"
        );
        assert_eq!(calls, 10);
    }

    #[test]
    fn differences_count_what_was_added_removed_or_changed() {
        let d = |principals: Value, settings: &[(&str, &str)]| Dump {
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            principals: principals.as_array().unwrap().clone(),
        };
        let a = d(
            json!([{"id": 1, "secrets": ["old"]}, {"id": 2}]),
            &[("a", "1"), ("b", "2")],
        );
        assert_eq!(a.differences(&a.clone()), (0, 0));
        let b = d(
            json!([{"id": 1, "secrets": ["new"]}, {"id": 3}]),
            &[("a", "1"), ("b", "3"), ("c", "4")],
        );
        assert_eq!(a.differences(&b), (3, 2));
    }

    #[test]
    fn a_missing_type_is_skipped_other_errors_stop() {
        let (r, _) = run(small(), |path| {
            if path.contains("types=tenant") {
                Err(WebadminError::Server {
                    url: path.into(),
                    status: 200,
                    detail: "unsupported".into(),
                })
            } else {
                Ok(no_principals())
            }
        });
        assert!(r.is_ok(), "{r:?}");
        let (r, _) = run(small(), |path| {
            Err(WebadminError::TooLarge {
                url: path.into(),
                limit: crate::server::webadmin::MAX_ANSWER,
            })
        });
        assert!(
            matches!(r, Err(DumpError::Api(WebadminError::TooLarge { .. }))),
            "{r:?}"
        );
    }
}
