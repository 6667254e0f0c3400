//! What Stalwart's release lines differ in, as far as more than one layer needs to know it.

use crate::server::version::Version;

/// >= 0.16 servers read config.json and are managed over JMAP.
pub fn is_json(v: &Version) -> bool {
    v.0.major > 0 || v.0.minor >= 16
}

/// The port upstream's recovery mode (>= 0.16) listens on (plain HTTP, `[::]`), pinned by the
/// crossing so that an env file of the admin's does not move it.
pub const RECOVERY_PORT: u16 = 8080;
