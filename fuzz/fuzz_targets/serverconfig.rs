#![no_main]
//! `ServerConfig::parse_toml` / `parse_json` on arbitrary text: Ok or Malformed, never a panic;
//! an accepted config has a data store.
use libfuzzer_sys::fuzz_target;
use stalwart_upgrade::serverconfig::{ServerConfig, ServerConfigError};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for r in [
        ServerConfig::parse_toml(Path::new("/opt/stalwart/etc/config.toml"), text),
        ServerConfig::parse_json(Path::new("/etc/stalwart/config.json"), text),
    ] {
        match r {
            Ok(c) => {
                assert!(c.stores.iter().any(|s| s.roles.iter().any(|r| r == "data")));
                let _ = serde_json::to_string(&c);
            }
            Err(ServerConfigError::Malformed { .. }) => {}
            Err(e) => panic!("not Malformed: {e:?}"),
        }
    }
});
