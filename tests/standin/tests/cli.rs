//! Command line and configuration behaviour of the stand-in.
mod common;

use common::*;
use stalwart_standin::{read_trailer, Fault, Release};
use std::path::Path;

#[test]
fn version_of_stamped_releases() {
    let mut shas = std::collections::BTreeSet::new();
    for v in ["0.14.3", "0.15.5", "0.16.18"] {
        let bin = rel(v);
        for flag in ["--version", "-V"] {
            let out = run(&bin, &[flag], &[]);
            assert_eq!(out.status.code(), Some(0));
            assert_eq!(text(&out.stdout), format!("{v}\n"));
        }
        assert_eq!(read_trailer(&bin), Some(Release::new(v)));
        shas.insert(std::fs::read(&bin).unwrap());
    }
    // Every release is its own file.
    shas.insert(std::fs::read(release("0.15.5", Fault::NeverReady, 300)).unwrap());
    assert_eq!(shas.len(), 4);
}

#[test]
fn unstamped_binary_refuses_to_run_but_prints_help() {
    let out = run(Path::new(BIN), &["--version"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("must be stamped"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let out = run(Path::new(BIN), &["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("--config"));
}

#[test]
fn unknown_flag_exits_1() {
    // Upstream's words (measured with the real 0.15.5 and 0.16.18).
    let out = run(&rel("0.15.5"), &["--frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "Unrecognized command 'frobnicate', try '--help'."
    );
    let out = run(&rel("0.16.18"), &["--config"], &[]);
    assert_eq!(out.status.code(), Some(1), "missing value");
    assert_eq!(
        text(&out.stderr).trim(),
        "Unrecognized command 'config', try '--help'."
    );
    let out = run(&rel("0.16.18"), &["-e", "/tmp/x"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("Missing '--config' argument for import/export."));
    let out = run(&rel("0.16.18"), &["--init", "/tmp/x"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Missing value for argument 'init'"));
}

#[test]
fn no_config_prints_help_exit_0() {
    for v in ["0.15.5", "0.16.18"] {
        // Upstream prints its help on stderr.
        let out = run(&rel(v), &[], &[]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stderr).contains("Usage: stalwart"));
        let out = run(&rel(v), &["-h"], &[]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stderr).contains("Usage: stalwart"));
    }
}

#[test]
fn config_path_env_overrides_arguments() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    let mut cmd = std::process::Command::new(rel("0.15.5"));
    // With CONFIG_PATH set, even --version and a bogus flag are ignored: the server starts.
    cmd.args(["--version", "--bogus", "--config=/nonexistent"])
        .env("CONFIG_PATH", &cfg)
        .env("STANDIN_HTTP_PORT", env.port.to_string())
        .env("STANDIN_TEST_SECRET", "secret")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = cmd.spawn().unwrap();
    let mut server = Server {
        child,
        port: env.port,
        log: env.path("none.log"),
    };
    server.wait_ready();
    server.stop();
    assert!(env.data().join("CURRENT").exists());
}

#[test]
fn malformed_config_exits_1() {
    let env = Env::new();
    let bad = env.path("bad.toml");
    std::fs::write(&bad, "[storage\ndata = ").unwrap();
    let out = env.run(&rel("0.15.5"), &["--config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Failed to load configuration"));
    assert!(text(&out.stderr).contains("invalid TOML"));

    let bad = env.path("bad.json");
    std::fs::write(&bad, "{\"@type\": \"RocksDb\", ").unwrap();
    let out = env.run(&rel("0.16.18"), &["--config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("invalid JSON"));
    // (A missing 0.15 config is exit 0, silently, as upstream: tests/http.rs.)
}

#[test]
fn config_of_the_other_generation_is_refused() {
    let env = Env::new();
    let json = env.json(Kind::Rocks);
    let out = env.run(&rel("0.15.5"), &["--config", json.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("config.json"),
        "{}",
        text(&out.stderr)
    );
    let toml = env.toml(Kind::Rocks);
    let out = env.run(&rel("0.16.18"), &["--config", toml.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("config.toml"),
        "{}",
        text(&out.stderr)
    );
    assert!(!env.data().exists(), "nothing may be created");
}

#[test]
fn crash_at_start_exits_1_and_serves_nothing() {
    let env = Env::new();
    let cfg = env.toml(Kind::Rocks);
    let bin = release("0.15.5", Fault::CrashAtStart, 300);
    let out = env.run(&bin, &["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Stalwart Server v0.15.5 starting"), "{err}");
    assert!(err.contains("ERROR"), "{err}");
    assert!(!env.data().exists());
}

#[test]
fn init_writes_a_default_config_on_015_only() {
    let env = Env::new();
    let base = env.path("opt");
    let out = run(&rel("0.15.5"), &["--init", base.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let cfg = std::fs::read_to_string(base.join("etc/config.toml")).unwrap();
    assert!(cfg.contains("[store.rocksdb]"));
    assert!(base.join("data").is_dir());
    let out = run(&rel("0.16.18"), &["-I", base.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
}
