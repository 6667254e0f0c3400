//! Command line, imitating upstream's flags (facts file, "Binary"): `-c/--config`, `-e/--export`,
//! `-i/--import`, `-o/--console`, `-V/--version`, `-h/--help`, 0.15 also `-I/--init`.
//! If env `CONFIG_PATH` is set, the arguments are ignored entirely and it is the config.

use std::path::PathBuf;

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Serve {
        config: PathBuf,
    },
    Export {
        config: PathBuf,
        dir: PathBuf,
    },
    Import {
        config: PathBuf,
        dir: PathBuf,
    },
    Init {
        dir: PathBuf,
    },
    Console,
    /// `--export`/`--import` without `--config`: upstream prints a line and exits 0.
    MissingConfig,
}

pub const HELP: &str = "\
Stalwart Server (stand-in test double)

Usage: stalwart [OPTIONS]

Options:
  -c, --config <PATH>   Path to the configuration file
  -e, --export <DIR>    Export the database to DIR (the server must be stopped)
  -i, --import <DIR>    Import the database from DIR (the server must be stopped)
  -I, --init <DIR>      Write a default configuration under DIR (0.15 and older only)
  -o, --console         Database console (not implemented by the stand-in)
  -h, --help            Print help
  -V, --version         Print version

Env: CONFIG_PATH (overrides all arguments).
";

/// Parses the arguments (without argv[0]). `config_env` is env `CONFIG_PATH`.
pub fn parse(args: &[String], config_env: Option<String>) -> Result<Command, String> {
    if let Some(c) = config_env.filter(|c| !c.is_empty()) {
        return Ok(Command::Serve { config: c.into() });
    }
    let mut config = None;
    let mut export = None;
    let mut import = None;
    let mut init = None;
    let mut console = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<PathBuf, String> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
                // A flag without its value reads, upstream, as an unknown command.
                _ => Err(format!(
                    "Unrecognized command '{}', try '--help'.",
                    name.split_whitespace()
                        .next()
                        .unwrap_or(name)
                        .trim_start_matches('-')
                )),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-c" | "--config" => config = Some(value("--config <PATH>")?),
            "-e" | "--export" => export = Some(value("--export <DIR>")?),
            "-i" | "--import" => import = Some(value("--import <DIR>")?),
            "-I" | "--init" => init = Some(value("--init <DIR>")?),
            "-o" | "--console" => console = true,
            // Upstream's wording (measured with the real 0.15.5 and 0.16.18), exit 1.
            other => {
                return Err(format!(
                    "Unrecognized command '{}', try '--help'.",
                    other.trim_start_matches('-')
                ))
            }
        }
    }
    if let Some(dir) = init {
        return Ok(Command::Init { dir });
    }
    if console {
        return Ok(Command::Console);
    }
    let Some(config) = config else {
        if export.is_some() || import.is_some() {
            return Ok(Command::MissingConfig);
        }
        return Ok(Command::Help);
    };
    Ok(match (export, import) {
        (Some(_), Some(_)) => return Err("error: --export and --import exclude each other".into()),
        (Some(dir), None) => Command::Export { config, dir },
        (None, Some(dir)) => Command::Import { config, dir },
        (None, None) => Command::Serve { config },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Command, String> {
        parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>(), None)
    }

    #[test]
    fn flags() {
        assert_eq!(p(&[]), Ok(Command::Help));
        assert_eq!(p(&["-V"]), Ok(Command::Version));
        assert_eq!(
            p(&["--config=/x"]),
            Ok(Command::Serve {
                config: "/x".into()
            })
        );
        assert_eq!(
            p(&["-c", "/x"]),
            Ok(Command::Serve {
                config: "/x".into()
            })
        );
        assert_eq!(
            p(&["-c", "/x", "--export", "/d"]),
            Ok(Command::Export {
                config: "/x".into(),
                dir: "/d".into()
            })
        );
        assert!(p(&["--bogus"]).is_err());
        assert!(p(&["--config"]).is_err());
        assert_eq!(
            parse(&["--bogus".to_string()], Some("/c".into())),
            Ok(Command::Serve {
                config: "/c".into()
            })
        );
    }
}
