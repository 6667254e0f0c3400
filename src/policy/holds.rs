//! The package managers' own hold files (apt preferences, dnf 4 and dnf 5 versionlock), under a
//! filesystem root (`/` on a real system).

use super::*;
use crate::server::version::parse_line;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where the package managers' hold files live under a filesystem root (`/` on a real system).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldPaths {
    pub root: PathBuf,
    /// ROOT/etc/apt/preferences.d/stalwart-upgrade (whole file ours).
    pub apt_prefs: PathBuf,
    /// ROOT/etc/dnf/plugins/versionlock.list (dnf 4; our marked block only).
    pub dnf_versionlock: PathBuf,
    /// ROOT/etc/dnf/versionlock.toml (dnf 5; our marked entry only).
    pub dnf5_versionlock: PathBuf,
}

impl HoldPaths {
    pub fn for_root(root: &Path) -> HoldPaths {
        HoldPaths {
            root: root.to_owned(),
            apt_prefs: root.join("etc/apt/preferences.d/stalwart-upgrade"),
            dnf_versionlock: root.join("etc/dnf/plugins/versionlock.list"),
            dnf5_versionlock: root.join("etc/dnf/versionlock.toml"),
        }
    }
    /// The real system.
    pub fn system() -> HoldPaths {
        HoldPaths::for_root(Path::new("/"))
    }
    fn has_apt(&self) -> bool {
        self.root.join("etc/apt").is_dir()
    }
    fn has_dnf(&self) -> bool {
        self.root.join("etc/dnf").is_dir()
    }
}

/// `0.15` -> ("0.15", "0.16"): the first version of the line and of the next one.
pub(crate) fn line_bounds(line: &str) -> Result<(String, String), PolicyError> {
    let line = parse_line(line)?;
    let bad = || PolicyError::Other(format!("bad line {line:?}"));
    let (major, minor) = line.split_once('.').ok_or_else(bad)?;
    let minor: u64 = minor.parse().map_err(|_| bad())?;
    let next = format!("{major}.{}", minor + 1);
    Ok((line, next))
}

/// The apt preferences file for a line.
///
/// apt_preferences(5): "The first specific-form record matching an available package version
/// determines the priority of the package version." All records name the package, so for each
/// version of `stalwart` the first record that matches wins:
/// 1. versions of the line get 990: above the 500 of a normal archive, so the line's newest
///    version is the candidate, and below 1000, so apt never downgrades to reach it (from 1000 up
///    apt installs a version even if it is a downgrade). `0.15.*` matches `0.15.6-1`; with an epoch
///    (`1:0.15.6-1`) a glob does not work (apt reads a trailing `*` as a prefix of the literal
///    text), so a second record uses a regular expression, which apt accepts between slashes;
/// 2. every other version gets -1: never a candidate, so apt, unattended-upgrades and
///    `apt upgrade` do not even select it. The installed version gets its priority from the same
///    records (990 inside the line).
///
/// tests/policy_apt_pin.rs checks this with the real apt-cache against a local repository.
pub fn apt_prefs_text(line: &str) -> Result<String, PolicyError> {
    let (line, _) = line_bounds(line)?;
    let re = line.replace('.', "\\.");
    Ok(format!(
        "# Written by stalwart-upgrade: keeps apt on the Stalwart {line} release line.\n\
         # Do not edit: change it with `stalwart-upgrade allow VERSION` (moves the line),\n\
         # `stalwart-upgrade hold` / `stalwart-upgrade unhold`; see `stalwart-upgrade policy`.\n\
         # The first matching record wins (apt_preferences(5)): versions of {line} get 990\n\
         # (preferred, but below 1000 so never a downgrade), every other version -1 (never chosen).\n\
         \n\
         Package: {PACKAGE}\n\
         Pin: version {line}.*\n\
         Pin-Priority: 990\n\
         \n\
         Package: {PACKAGE}\n\
         Pin: version /^[0-9]+:{re}\\./\n\
         Pin-Priority: 990\n\
         \n\
         Package: {PACKAGE}\n\
         Pin: version *\n\
         Pin-Priority: -1\n"
    ))
}

/// The dnf 4 versionlock spec for a line: `stalwart-0.15.*`. dnf-plugins-core's versionlock reads
/// each non-comment line as a package spec; `NAME-VERSION` with a glob in VERSION matches every
/// version of the line (hawkey filters the version with a glob), and every other version of a
/// locked name is excluded.
pub fn dnf_spec(line: &str) -> Result<String, PolicyError> {
    let (line, _) = line_bounds(line)?;
    Ok(format!("{PACKAGE}-{line}.*"))
}

pub(crate) fn dnf_block(line: &str) -> Result<String, PolicyError> {
    Ok(format!(
        "{MARK_BEGIN} (managed; change with `stalwart-upgrade allow VERSION` or `stalwart-upgrade unhold`)\n{}\n{MARK_END}\n",
        dnf_spec(line)?
    ))
}

/// Is this a spec line we write (`stalwart-0.15.*`, `stalwart-1.1.*`)? `dnf versionlock delete`
/// rewrites the file without comments, so our lines may lose their markers.
pub(crate) fn is_our_dnf_spec(l: &str) -> bool {
    let Some(rest) = l.trim().strip_prefix(&format!("{PACKAGE}-")) else {
        return false;
    };
    let Some(line) = rest.strip_suffix(".*") else {
        return false;
    };
    line_bounds(line).map(|(l, _)| l == line).unwrap_or(false)
}

/// Removes our block (and any unmarked spec of ours) from versionlock.list text.
pub(crate) fn strip_dnf_block(text: &str) -> String {
    strip_marked(text, is_our_dnf_spec)
}

/// `text` without the lines between our markers (markers included) and without the other lines
/// `also_ours` claims.
fn strip_marked(text: &str, also_ours: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    let mut inside = false;
    for l in text.lines() {
        if l.starts_with(MARK_BEGIN) {
            inside = true;
            continue;
        }
        if inside {
            if l.starts_with(MARK_END) {
                inside = false;
            }
            continue;
        }
        if also_ours(l) {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// dnf 5's versionlock.toml entry for a line (format from dnf5-versionlock(8): entries of one
/// name are OR-ed, the conditions of one entry AND-ed): `>= 0.15` and `< 0.16~`. In rpm order
/// `0.16~` sorts before `0.16.0~rc1`, so pre-releases of the next line are outside too.
pub(crate) fn dnf5_entry(line: &str) -> Result<String, PolicyError> {
    let (line, next) = line_bounds(line)?;
    Ok(format!(
        "{MARK_BEGIN} (managed; change with `stalwart-upgrade allow VERSION` or `stalwart-upgrade unhold`)\n\
         [[packages]]\n\
         name = \"{PACKAGE}\"\n\
         comment = \"{TOML_COMMENT_PREFIX} {line}\"\n\
         [[packages.conditions]]\n\
         key = \"evr\"\n\
         comparator = \">=\"\n\
         value = \"{line}\"\n\
         [[packages.conditions]]\n\
         key = \"evr\"\n\
         comparator = \"<\"\n\
         value = \"{next}~\"\n\
         {MARK_END}\n"
    ))
}

pub(crate) fn strip_dnf5_block(text: &str) -> String {
    strip_marked(text, |_| false)
}

/// dnf 5 rewrites versionlock.toml without comments on `dnf versionlock add`, which removes our
/// markers but keeps our `comment`: drop such entries structurally (the file has no comments then).
pub(crate) fn drop_unmarked_dnf5_entries(text: &str, path: &Path) -> Result<String, PolicyError> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| PolicyError::StateCorrupt {
        path: path.to_owned(),
        message: format!("not valid TOML ({e}); fix it or run `dnf versionlock clear`"),
    })?;
    let Some(toml::Value::Array(pkgs)) = doc.get_mut("packages") else {
        return Ok(text.to_string());
    };
    let before = pkgs.len();
    pkgs.retain(|p| {
        !p.get("comment")
            .and_then(|c| c.as_str())
            .is_some_and(|c| c.starts_with(TOML_COMMENT_PREFIX))
    });
    if pkgs.len() == before {
        return Ok(text.to_string());
    }
    if pkgs.is_empty() {
        doc.remove("packages");
    }
    toml::to_string(&doc)
        .map_err(|e| PolicyError::Other(format!("cannot encode {}: {e}", path.display())))
}

/// Trailing blank lines removed; one final newline unless empty.
pub(crate) fn tidy_end(text: &str) -> String {
    let t = text.trim_end_matches('\n');
    if t.is_empty() {
        String::new()
    } else {
        format!("{t}\n")
    }
}

/// Our dnf 5 entry added structurally, for files where appending text would not be valid TOML
/// (e.g. `packages = [...]` written inline).
pub(crate) fn dnf5_structural(base: &str, line: &str, path: &Path) -> Result<String, PolicyError> {
    let mut doc: toml::Table = toml::from_str(base).map_err(|e| PolicyError::StateCorrupt {
        path: path.to_owned(),
        message: format!("not valid TOML ({e}); fix it or run `dnf versionlock clear`"),
    })?;
    let ours: toml::Table = toml::from_str(&dnf5_entry(line)?)
        .map_err(|e| PolicyError::Other(format!("internal: our dnf5 entry is not TOML: {e}")))?;
    let Some(toml::Value::Array(entry)) = ours.get("packages") else {
        return Err(PolicyError::Other(
            "internal: our dnf5 entry has no packages".into(),
        ));
    };
    match doc
        .entry("packages")
        .or_insert_with(|| toml::Value::Array(Vec::new()))
    {
        toml::Value::Array(a) => a.extend(entry.iter().cloned()),
        _ => {
            return Err(PolicyError::StateCorrupt {
                path: path.to_owned(),
                message: "`packages` is not an array".into(),
            })
        }
    }
    toml::to_string(&doc)
        .map_err(|e| PolicyError::Other(format!("cannot encode {}: {e}", path.display())))
}

pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, PolicyError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

pub(crate) fn mode_of(path: &Path, default: u32) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(default)
}

pub(crate) fn ensure_dir(dir: &Path) -> Result<(), PolicyError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))
}

/// Writes the hold files for `line` (idempotent: the same line gives the same bytes).
pub fn write_holds(paths: &HoldPaths, line: &str) -> Result<Vec<PathBuf>, PolicyError> {
    let mut written = Vec::new();
    if paths.has_apt() {
        if let Some(d) = paths.apt_prefs.parent() {
            ensure_dir(d)?;
        }
        write_atomic(&paths.apt_prefs, apt_prefs_text(line)?.as_bytes(), 0o644)?;
        written.push(paths.apt_prefs.clone());
    }
    if paths.has_dnf() {
        let p = &paths.dnf_versionlock;
        if let Some(d) = p.parent() {
            ensure_dir(d)?;
        }
        let old = read_opt(p)?.unwrap_or_default();
        let mut text = tidy_end(&strip_dnf_block(&old));
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&dnf_block(line)?);
        write_atomic(p, text.as_bytes(), mode_of(p, 0o644))?;
        written.push(p.clone());

        let p = &paths.dnf5_versionlock;
        let old = read_opt(p)?;
        let base = match &old {
            Some(t) => tidy_end(&drop_unmarked_dnf5_entries(&strip_dnf5_block(t), p)?),
            None => "version = \"1.0\"\n".to_string(),
        };
        let mut text = base.clone();
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&dnf5_entry(line)?);
        if toml::from_str::<toml::Table>(&text).is_err() {
            text = dnf5_structural(&base, line, p)?;
        }
        write_atomic(p, text.as_bytes(), mode_of(p, 0o644))?;
        written.push(p.clone());
    }
    Ok(written)
}

/// Removes our hold files / entries; other content is left untouched.
pub fn remove_holds(paths: &HoldPaths) -> Result<(), PolicyError> {
    match std::fs::remove_file(&paths.apt_prefs) {
        Ok(()) => {
            if let Some(d) = paths.apt_prefs.parent() {
                sync_dir(d)?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", &paths.apt_prefs)(e)),
    }
    let p = &paths.dnf_versionlock;
    if let Some(old) = read_opt(p)? {
        let new = strip_dnf_block(&old);
        if new != old {
            write_atomic(p, tidy_end(&new).as_bytes(), mode_of(p, 0o644))?;
        }
    }
    let p = &paths.dnf5_versionlock;
    if let Some(old) = read_opt(p)? {
        let new = tidy_end(&drop_unmarked_dnf5_entries(&strip_dnf5_block(&old), p)?);
        if new != old {
            write_atomic(p, new.as_bytes(), mode_of(p, 0o644))?;
        }
    }
    Ok(())
}

/// One hold file as `stalwart-upgrade policy` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldFile {
    pub manager: &'static str,
    pub path: PathBuf,
    /// The file exists.
    pub present: bool,
    /// Our hold is in it (for apt: the file is ours).
    pub ours_present: bool,
}

pub(crate) fn hold_files(paths: &HoldPaths) -> Result<Vec<HoldFile>, PolicyError> {
    let apt = read_opt(&paths.apt_prefs)?;
    let dnf = read_opt(&paths.dnf_versionlock)?;
    let dnf5 = read_opt(&paths.dnf5_versionlock)?;
    Ok(vec![
        HoldFile {
            manager: "apt",
            path: paths.apt_prefs.clone(),
            present: apt.is_some(),
            ours_present: apt.is_some(),
        },
        HoldFile {
            manager: "dnf4 versionlock",
            path: paths.dnf_versionlock.clone(),
            present: dnf.is_some(),
            ours_present: dnf.as_deref().is_some_and(|t| {
                t.lines()
                    .any(|l| l.starts_with(MARK_BEGIN) || is_our_dnf_spec(l))
            }),
        },
        HoldFile {
            manager: "dnf5 versionlock",
            path: paths.dnf5_versionlock.clone(),
            present: dnf5.is_some(),
            ours_present: dnf5
                .as_deref()
                .is_some_and(|t| t.contains(TOML_COMMENT_PREFIX)),
        },
    ])
}
