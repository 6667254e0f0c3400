//! What Stalwart's release lines differ in, as far as more than one layer needs to know it.

use crate::config::Settings;
use crate::server::version::Version;
use std::path::PathBuf;

/// >= 0.16 servers read config.json and are managed over JMAP.
pub fn is_json(v: &Version) -> bool {
    v.0.major > 0 || v.0.minor >= 16
}

/// The port upstream's recovery mode (>= 0.16) listens on (plain HTTP, `[::]`), pinned by the
/// crossing so that an env file of the admin's does not move it.
pub const RECOVERY_PORT: u16 = 8080;

/// The server config `running` reads: the configured one, else config.json for >= 0.16 (when
/// present), else config.toml. After a 0.15 -> 0.16 upgrade both files exist.
pub fn server_config_path(s: &Settings, running: &Version) -> PathBuf {
    if let Some(p) = &s.server_config {
        return p.clone();
    }
    let json = s.config_json_path();
    if is_json(running) && json.exists() {
        json
    } else {
        s.server_config_path()
    }
}

/// The server config the installed server binary reads (its `--version` decides, through
/// [`server_config_path`]); config.toml's place when the binary cannot say.
pub fn installed_config(s: &Settings) -> PathBuf {
    match crate::server::version::of_binary(&s.server_binary()) {
        Ok(v) => server_config_path(s, &v),
        Err(_) => s.server_config_path(),
    }
}
