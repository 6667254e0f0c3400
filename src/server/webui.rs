//! The web UI bundle the `stalwart` package carries (issue #28): the zip of upstream's web UI for
//! exactly the packaged server, kept next to the binary in bin/ (`BUNDLE`), so it is swapped,
//! kept and rolled back with the binary it belongs to.
//!
//! Upstream (0.16.18 and the v1.0.0 branch, the same code; facts: stalwart.md "Web UI"): the web
//! UI is an `x:Application` registry object (one by default, `urlPrefix` ["/admin","/account"],
//! `resourceUrl` upstream's *latest* release, `autoUpdateFrequency` 30 days in ms), fetched at
//! start and by `x:Action/set` UpdateApps, which answers success even when the fetch failed.
//! `file://PATH` is read directly (the service user must be able to read it). The frequency must
//! be a positive number of milliseconds (0 and null are refused), so "never" is a century. The
//! zip needs `index.html` at its root; other entries are served byte for byte under the prefix.
//!
//! Pure knowledge here; the requests are `server::webadmin`'s.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The bundle's name in bin/, in the package's payload directory and in a kept release.
pub const BUNDLE: &str = "webui.zip";

/// How often upstream may fetch the bundle again: never, in effect (a century, in ms).
pub const NEVER_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// The largest entry compared with what the server serves.
const MAX_ENTRY: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WebuiError {
    #[error("the web UI bundle {path} does not read as a zip: {message}; reinstall the stalwart package")]
    Unreadable { path: PathBuf, message: String },
    #[error("the web UI bundle {path} has no index.html at its root, which upstream's server needs; reinstall the stalwart package")]
    NoIndex { path: PathBuf },
}

/// The bundle in `dir` (bin/, a package's payload, a kept release), if it has one: a regular
/// file in a directory only root can write (the bundle is copied into root's bin/ and the
/// server is pointed at it; one a service user could have put beside a binary is not taken).
pub fn bundled(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let d = std::fs::symlink_metadata(dir).ok()?;
    if !d.is_dir() || d.uid() != 0 || d.mode() & 0o022 != 0 {
        return None;
    }
    let p = dir.join(BUNDLE);
    std::fs::symlink_metadata(&p)
        .ok()
        .filter(|m| m.file_type().is_file() && m.uid() == 0)
        .map(|_| p)
}

/// Upstream's default web UI source and refresh (facts: stalwart.md "Web UI"), which a server
/// whose release has no bundle goes back to.
pub const UPSTREAM_URL: &str =
    "https://github.com/stalwartlabs/webui/releases/latest/download/webui.zip";
pub const UPSTREAM_EVERY_MS: u64 = 30 * 24 * 3600 * 1000;

/// A server still pointed at a bundle that bin/ no longer has (an upgrade to, or a rollback to,
/// a release without one) goes back to upstream's default: the update for the Application in
/// `list` (None: it does not read `url`).
pub fn application_unpin(
    list: &[serde_json::Value],
    url: &str,
) -> Option<(String, serde_json::Value)> {
    let app = list
        .iter()
        .find(|a| a["resourceUrl"].as_str() == Some(url))?;
    Some((
        app["id"].as_str()?.to_string(),
        serde_json::json!({"resourceUrl": UPSTREAM_URL, "autoUpdateFrequency": UPSTREAM_EVERY_MS}),
    ))
}

/// The `resourceUrl` that makes the server read `bundle`.
pub fn resource_url(bundle: &Path) -> String {
    format!("file://{}", bundle.display())
}

/// The id of the web admin's Application in an `x:Application/get` answer's `list`, and the
/// update it needs (None: it already reads `url` and never fetches again).
pub fn application_update(
    list: &[serde_json::Value],
    url: &str,
) -> Option<(String, Option<serde_json::Value>)> {
    // A set of strings: a JSON array, or (JMAP's form of a set) an object keyed by them.
    let serves_admin = |a: &serde_json::Value| match &a["urlPrefix"] {
        serde_json::Value::Array(p) => p.iter().any(|x| x.as_str() == Some("/admin")),
        serde_json::Value::Object(p) => p.contains_key("/admin"),
        _ => false,
    };
    let app = list.iter().find(|a| serves_admin(a))?;
    let id = app["id"].as_str()?.to_string();
    let current = app["resourceUrl"].as_str() == Some(url)
        && app["autoUpdateFrequency"]
            .as_u64()
            .is_some_and(|f| f >= NEVER_MS);
    let update = (!current).then(|| {
        serde_json::json!({
            "resourceUrl": url,
            "autoUpdateFrequency": NEVER_MS,
        })
    });
    Some((id, update))
}

/// What proves that the server serves `bundle`: a path under /admin/ and the bytes it must
/// answer with. An entry other than index.html, served byte for byte; else index.html itself,
/// whose `<base href="/"` the server rewrites to the prefix.
pub fn probe(bundle: &Path) -> Result<(String, Vec<u8>), WebuiError> {
    let bad = |message: String| WebuiError::Unreadable {
        path: bundle.to_owned(),
        message,
    };
    let file = std::fs::File::open(bundle).map_err(|e| bad(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let mut index = None;
    let mut other = None;
    for i in 0..zip.len() {
        let e = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
        if !e.is_file() || e.size() > MAX_ENTRY {
            continue;
        }
        if e.name() == "index.html" {
            index = Some(i);
        } else if other.is_none()
            && !e.name().contains("..")
            && !e.name().starts_with('/')
            && e.name()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        {
            // A name that needs no escaping in the URL.
            other = Some(i);
        }
    }
    let Some(index) = index else {
        return Err(WebuiError::NoIndex {
            path: bundle.to_owned(),
        });
    };
    let mut read = |i: usize| -> Result<(String, Vec<u8>), WebuiError> {
        let mut e = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
        let mut bytes = Vec::new();
        (&mut e)
            .take(MAX_ENTRY)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(e.to_string()))?;
        Ok((e.name().to_string(), bytes))
    };
    match other {
        Some(i) => {
            let (name, bytes) = read(i)?;
            Ok((format!("/admin/{name}"), bytes))
        }
        None => {
            let (_, bytes) = read(index)?;
            let text = String::from_utf8_lossy(&bytes)
                .replace("<base href=\"/\"", "<base href=\"/admin/\"");
            Ok(("/admin/".into(), text.into_bytes()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut z = zip::ZipWriter::new(f.reopen().unwrap());
        for (name, bytes) in entries {
            z.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(bytes).unwrap();
        }
        z.finish().unwrap();
        f
    }

    #[test]
    fn the_probe_is_an_asset_else_the_rewritten_index() {
        let z = zip_of(&[("index.html", b"<base href=\"/\">"), ("app.js", b"js")]);
        assert_eq!(
            probe(z.path()).unwrap(),
            ("/admin/app.js".into(), b"js".to_vec())
        );
        let z = zip_of(&[("index.html", b"<html><base href=\"/\">")]);
        assert_eq!(
            probe(z.path()).unwrap(),
            ("/admin/".into(), b"<html><base href=\"/admin/\">".to_vec())
        );
        let z = zip_of(&[("app.js", b"js")]);
        assert!(matches!(probe(z.path()), Err(WebuiError::NoIndex { .. })));
        let not_zip = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_zip.path(), b"nope").unwrap();
        assert!(matches!(
            probe(not_zip.path()),
            Err(WebuiError::Unreadable { .. })
        ));
    }

    fn done_list(url: &str) -> Vec<serde_json::Value> {
        vec![serde_json::json!({"id": "a", "urlPrefix": ["/admin"],
            "resourceUrl": url, "autoUpdateFrequency": NEVER_MS})]
    }

    #[test]
    fn the_admin_application_is_pointed_at_the_bundle_once() {
        let url = "file:///opt/stalwart/bin/webui.zip";
        let list = vec![
            serde_json::json!({"id": "x", "urlPrefix": ["/other"]}),
            serde_json::json!({"id": "a", "urlPrefix": ["/admin", "/account"],
                "resourceUrl": "https://github.com/stalwartlabs/webui/releases/latest/download/webui.zip",
                "autoUpdateFrequency": 2592000000u64}),
        ];
        let (id, update) = application_update(&list, url).unwrap();
        assert_eq!(id, "a");
        assert_eq!(
            update.unwrap(),
            serde_json::json!({"resourceUrl": url, "autoUpdateFrequency": NEVER_MS})
        );
        let back = application_unpin(&done_list(url), url).unwrap();
        assert_eq!(back.0, "a");
        assert_eq!(back.1["resourceUrl"], UPSTREAM_URL);
        assert!(application_unpin(&done_list("file:///elsewhere.zip"), url).is_none());
        let keyed = vec![serde_json::json!({"id": "k", "urlPrefix": {"/admin": true}})];
        assert_eq!(application_update(&keyed, url).unwrap().0, "k");
        let done = vec![serde_json::json!({"id": "a", "urlPrefix": ["/admin"],
            "resourceUrl": url, "autoUpdateFrequency": NEVER_MS})];
        assert_eq!(application_update(&done, url), Some(("a".into(), None)));
        assert_eq!(application_update(&[], url), None);
    }
}
