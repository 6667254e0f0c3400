//! 0.16 secrets (`Value`, `EnvironmentVariable`, `File`) and their reading as the config's
//! controller.

use super::*;
use crate::server::serverenv::ServerEnv;
use std::path::Path;

/// A 0.16 secret: a plain string or `{"@type":"Value"|"EnvironmentVariable"|"File",...}`.
pub(super) fn json_secret(
    path: &Path,
    v: &serde_json::Value,
    reader: &crate::os::readas::Reader,
    env: &ServerEnv,
) -> Result<Secret, ServerConfigError> {
    let malformed = ServerConfigError::malformed_in(path);
    if let Some(s) = v.as_str() {
        return Ok(Secret(s.to_string()));
    }
    let field = |k: &str| v.get(k).and_then(|x| x.as_str());
    // Field names `value`, `variableName`, `filePath` are our reading of the facts file
    // ("a secret may be {"@type":"Value"|"EnvironmentVariable"|"File",...}"); the alternatives
    // are accepted too in case upstream spells them differently.
    match v.get("@type").and_then(|t| t.as_str()) {
        Some("Value") => field("value")
            .or_else(|| field("secret"))
            .map(|s| Secret(s.to_string()))
            .ok_or_else(|| malformed("authSecret {\"@type\":\"Value\"} has no \"value\"".into())),
        Some("EnvironmentVariable") => {
            let name = field("variableName")
                .or_else(|| field("name"))
                .or_else(|| field("variable"))
                .ok_or_else(|| {
                    malformed(
                        "authSecret {\"@type\":\"EnvironmentVariable\"} has no \"variableName\""
                            .into(),
                    )
                })?;
            env_secret(path, name, env).map(Secret)
        }
        Some("File") => {
            let file = field("filePath")
                .or_else(|| field("path"))
                .or_else(|| field("file"))
                .ok_or_else(|| {
                    malformed("authSecret {\"@type\":\"File\"} has no \"filePath\"".into())
                })?;
            read_secret_file(path, Path::new(file), reader).map(Secret)
        }
        other => Err(malformed(format!(
            "authSecret has an unknown \"@type\" {other:?} (expected Value, EnvironmentVariable or File)"
        ))),
    }
}

/// The value of an environment variable the server's config refers to, as the server's unit
/// gives it to the server (`Environment=`, `EnvironmentFile=`, `UnsetEnvironment=`: see
/// `serverenv`), never the helper's own: the helper runs as root under dpkg, rpm or a timer,
/// with whatever environment they pass, and a config the service user writes must not make root
/// use (or send to a host of the config's choosing) a value of root's.
pub(super) fn env_secret(
    cfg_path: &Path,
    name: &str,
    env: &ServerEnv,
) -> Result<String, ServerConfigError> {
    env.get(name)
        .map(str::to_string)
        .ok_or_else(|| ServerConfigError::Malformed {
            path: cfg_path.to_owned(),
            message: unset_env_message(name),
        })
}

/// Why an `%{env:..}%` macro or an `EnvironmentVariable` secret has no value.
pub(super) fn unset_env_message(name: &str) -> String {
    format!(
        "it refers to the environment variable {name}, which is not set in the environment of \
         the server's unit (its Environment= or EnvironmentFile= lines, as `systemctl show -p \
         Environment -p EnvironmentFiles` lists them); the helper does not take it from its own \
         environment. Set it there (and run `systemctl daemon-reload`)"
    )
}

/// The largest server config read: 0.15 configs are a few KiB, a 0.16 config.json less.
pub(super) const MAX_CONFIG: u64 = 4 << 20;

/// The largest file a `%{file:..}%` macro or a 0.16 `File` secret may name: these hold a
/// password or a short value, never more.
pub(super) const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Reads a file the server config refers to: a regular file of at most [`MAX_SECRET_FILE`]
/// bytes, read with the identity of whoever controls the config (see [`files`]). The contents
/// never appear in an error message.
pub(super) fn read_secret_file(
    cfg_path: &Path,
    file: &Path,
    reader: &crate::os::readas::Reader,
) -> Result<String, ServerConfigError> {
    crate::os::readas::read_as(reader, file, MAX_SECRET_FILE)
        .map(|s| s.trim().to_string())
        .map_err(|why| ServerConfigError::Malformed {
            path: cfg_path.to_owned(),
            message: format!(
                "it refers to the file {}, which cannot be read: {why}",
                file.display()
            ),
        })
}
