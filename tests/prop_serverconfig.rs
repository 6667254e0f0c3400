//! Property tests (fuzzing on stable) of `ServerConfig::parse_toml` / `parse_json`: on arbitrary
//! text and on generated configs (nested tables, flattened dotted and quoted keys, `%{env:..}%`,
//! `%{file:..}%`, `%{cfg:..}%` macros, unknown store types, huge numbers) they return Ok or
//! `ServerConfigError::Malformed`, never panic, never hang, and no error message carries what a
//! `%{file:..}%` / `%{env:..}%` macro (or a 0.16 secret) read. `scripts/fuzz` runs them longer.

mod prop_common;

use prop_common::{check, corpus, expect_of, Expect, SLOW_CASE};
use proptest::prelude::*;
use stalwart_upgrade::server::serverconfig::{ServerConfig, ServerConfigError};
use stalwart_upgrade::server::serverenv::ServerEnv;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

const TOML_PATH: &str = "/opt/stalwart/etc/config.toml";
const JSON_PATH: &str = "/etc/stalwart/config.json";
const CANARY_ENV: &str = "SU_PROP_SECRET";
const CANARY_ENV_VALUE: &str = "CANARY-ENV-7f3a";
const CANARY_FILE_VALUE: &str = "CANARY-FILE-91c2";

struct Fixture {
    _dir: tempfile::TempDir,
    secret_file: PathBuf,
    multiline_file: PathBuf,
}

/// The server unit's environment (the only source of `%{env:..}%`), holding a canary.
fn unit_env() -> &'static ServerEnv {
    static E: OnceLock<ServerEnv> = OnceLock::new();
    E.get_or_init(|| ServerEnv::from_unit(&[format!("{CANARY_ENV}={CANARY_ENV_VALUE}")], &[], &[]))
}

/// A file and an environment variable holding canaries that must never show up in an error.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, format!("{CANARY_FILE_VALUE}\n")).unwrap();
        let multiline_file = dir.path().join("shadow");
        std::fs::write(
            &multiline_file,
            format!("root:$6$CANARY-SHADOW:19000::\n\"{CANARY_FILE_VALUE}\"\tx\n"),
        )
        .unwrap();
        Fixture {
            _dir: dir,
            secret_file,
            multiline_file,
        }
    })
}

fn no_canary(what: &str, e: &ServerConfigError) -> Result<(), TestCaseError> {
    for shown in [e.to_string(), format!("{e:?}")] {
        prop_assert!(
            !shown.contains("CANARY"),
            "{} leaks what a macro or secret read: {}",
            what,
            shown
        );
    }
    Ok(())
}

/// The contract on any text: Ok or Malformed, quickly, no leaked secrets; invariants of an Ok.
fn contract(text: &str) -> Result<(), TestCaseError> {
    fixture();
    let t0 = Instant::now();
    let toml = ServerConfig::parse_toml_with_env(Path::new(TOML_PATH), text, unit_env());
    let json = ServerConfig::parse_json_with_env(Path::new(JSON_PATH), text, unit_env());
    prop_assert!(t0.elapsed() < SLOW_CASE, "took {:?}", t0.elapsed());
    for r in [toml, json] {
        match r {
            Ok(c) => {
                prop_assert!(
                    !c.stores.is_empty(),
                    "a config without a store was accepted"
                );
                let mut ids: Vec<&str> = c.stores.iter().map(|s| s.id.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), c.stores.len(), "duplicate store ids");
                let mut roles: Vec<&str> = c
                    .stores
                    .iter()
                    .flat_map(|s| s.roles.iter().map(String::as_str))
                    .collect();
                prop_assert!(roles.contains(&"data"), "no data role");
                roles.sort_unstable();
                let n = roles.len();
                roles.dedup();
                prop_assert_eq!(n, roles.len(), "a role names two stores");
                for r in &roles {
                    prop_assert!(
                        ["data", "blob", "fts", "lookup", "directory"].contains(r),
                        "unknown role {}",
                        r
                    );
                }
                for s in &c.stores {
                    if let Some(p) = s.kind.path() {
                        prop_assert!(!p.as_os_str().is_empty(), "empty store path");
                    }
                }
                // Serializing must not panic (plan --json) and redacts passwords.
                let _ = serde_json::to_string(&c).unwrap();
            }
            Err(e @ ServerConfigError::Malformed { .. }) => no_canary(text, &e)?,
            Err(e) => return Err(TestCaseError::fail(format!("not Malformed: {e:?}"))),
        }
    }
    Ok(())
}

#[test]
fn arbitrary_text_never_panics() {
    check(
        "serverconfig/text",
        512,
        prop_oneof![
            any::<String>(),
            "[\\[\\]{}=\".a-z0-9%:\n ]{0,120}",
            "(\\{|\\[|\"@type\"|:|,|\"RocksDb\"|\"path\"|\"/x\"|[0-9]{1,30}|\\}|\\])*",
        ],
        |s| contract(&s),
    );
}

// ---- generated configs -------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Arr(Vec<String>),
}

fn toml_str(s: &str) -> String {
    // serde_json's string escaping is valid TOML basic-string escaping for what we generate.
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Val {
    fn render(&self) -> String {
        match self {
            Val::Str(s) => toml_str(s),
            Val::Int(i) => i.to_string(),
            Val::Float(f) if f.is_finite() => format!("{f:?}"),
            Val::Float(f) if f.is_nan() => "nan".into(),
            Val::Float(f) if *f > 0.0 => "inf".into(),
            Val::Float(_) => "-inf".into(),
            Val::Bool(b) => b.to_string(),
            Val::Arr(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|s| toml_str(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

const IDS: [&str; 7] = ["rocksdb", "pg", "my", "blob", "internal", "ldap", "x"];

fn key() -> impl Strategy<Value = String> {
    let id = proptest::sample::select(IDS.to_vec());
    prop_oneof![
        proptest::sample::select(vec!["data", "blob", "fts", "lookup", "directory"])
            .prop_map(|r| format!("storage.{r}")),
        (
            id.clone(),
            proptest::sample::select(vec![
                "type",
                "path",
                "host",
                "port",
                "database",
                "user",
                "password",
                "tls.enable",
                "compression",
                "bucket"
            ])
        )
            .prop_map(|(i, k)| format!("store.{i}.{k}")),
        (id.clone(), proptest::sample::select(vec!["type", "store"]))
            .prop_map(|(i, k)| format!("directory.{i}.{k}")),
        (
            proptest::sample::select(vec!["http", "https", "smtp", "web"]),
            proptest::sample::select(vec![
                "bind",
                "bind.0000",
                "bind.0001",
                "protocol",
                "tls.implicit"
            ])
        )
            .prop_map(|(i, k)| format!("server.listener.{i}.{k}")),
        "[a-z]{1,3}(\\.[a-z0-9-]{1,3}){0,2}",
    ]
}

fn string_value() -> impl Strategy<Value = String> {
    let f = fixture();
    let secret = f.secret_file.display().to_string();
    let shadow = f.multiline_file.display().to_string();
    prop_oneof![
        4 => proptest::sample::select(vec![
            "rocksdb", "pg", "my", "blob", "internal", "ldap", "x", "postgresql", "mysql",
            "sqlite", "fs", "foundationdb", "s3", "RocksDB", "frobnicate", "http", "smtp",
            "/opt/stalwart/data", "/x.db", "[::]:8080", "0.0.0.0:25", "127.0.0.1:65535",
            "[::1]:99999", "localhost", "5432", "-1", "true", "yes", "", " ", "lz4",
        ]).prop_map(str::to_string),
        2 => proptest::sample::select(vec![
            format!("%{{env:{CANARY_ENV}}}%"),
            format!("%{{file:{secret}}}%"),
            format!("%{{file:{shadow}}}%"),
            format!("x%{{file:{secret}}}%y"),
            format!("[%{{env:{CANARY_ENV}}}%]:80"),
            "%{env:SU_PROP_DEFINITELY_UNSET}%".into(),
            "%{file:/nonexistent/su-prop}%".into(),
            "%{file:/dev/null}%".into(),
            "%{cfg:storage.data}%".into(),
            "%{cfg:store.rocksdb.path}%".into(),
            "%{cfg:store.pg.host}%%{cfg:store.pg.host}%".into(),
            "%{cfg:nope}%".into(),
            "%{unknown:x}%".into(),
            "%{".into(),
            "}%".into(),
            "%{env:}%".into(),
            "%{cfg:}%".into(),
        ]),
        1 => any::<String>(),
    ]
}

fn value() -> impl Strategy<Value = Val> {
    prop_oneof![
        6 => string_value().prop_map(Val::Str),
        1 => prop_oneof![any::<i64>(), 0i64..70000].prop_map(Val::Int),
        1 => any::<f64>().prop_map(Val::Float),
        1 => any::<bool>().prop_map(Val::Bool),
        1 => proptest::collection::vec(string_value(), 0..3).prop_map(Val::Arr),
    ]
}

/// Keys such that none is a prefix (at a dot) of another, so every rendering is valid TOML.
fn entries() -> impl Strategy<Value = BTreeMap<String, Val>> {
    proptest::collection::btree_map(key(), value(), 0..24).prop_map(|m| {
        let keys: Vec<String> = m.keys().cloned().collect();
        m.into_iter()
            .filter(|(k, _)| !keys.iter().any(|o| o.starts_with(&format!("{k}."))))
            .collect()
    })
}

#[derive(Debug, Clone, Copy)]
enum Style {
    /// `"store.pg.type" = ..` (how the server rewrites its own file).
    Quoted,
    /// `store.pg.type = ..`
    Dotted,
    /// `[store.pg]` / `type = ..`
    Tables,
}

fn render(entries: &BTreeMap<String, Val>, style: Style) -> String {
    let mut out = String::new();
    match style {
        Style::Quoted => {
            for (k, v) in entries {
                out.push_str(&format!("{} = {}\n", toml_str(k), v.render()));
            }
        }
        Style::Dotted => {
            for (k, v) in entries {
                out.push_str(&format!("{k} = {}\n", v.render()));
            }
        }
        Style::Tables => {
            // Group by the first two segments: [store.pg] type = .., [storage] data = ..
            let mut groups: BTreeMap<String, Vec<(String, &Val)>> = BTreeMap::new();
            let mut top = Vec::new();
            for (k, v) in entries {
                let parts: Vec<&str> = k.splitn(3, '.').collect();
                match parts.as_slice() {
                    [a, b, rest] => groups
                        .entry(format!("{a}.{b}"))
                        .or_default()
                        .push((rest.to_string(), v)),
                    [a, rest] => groups
                        .entry(a.to_string())
                        .or_default()
                        .push((rest.to_string(), v)),
                    _ => top.push((k.clone(), v)),
                }
            }
            for (k, v) in top {
                out.push_str(&format!("{k} = {}\n", v.render()));
            }
            for (table, items) in groups {
                out.push_str(&format!("[{table}]\n"));
                for (k, v) in items {
                    out.push_str(&format!("{k} = {}\n", v.render()));
                }
            }
        }
    }
    out
}

/// The three spellings of one config mean the same; each satisfies the contract.
#[test]
fn generated_configs_same_in_every_spelling() {
    check("serverconfig/generated", 384, entries(), |entries| {
        let path = Path::new(TOML_PATH);
        let mut results = Vec::new();
        for style in [Style::Quoted, Style::Dotted, Style::Tables] {
            let text = render(&entries, style);
            contract(&text)?;
            let r = ServerConfig::parse_toml_with_env(path, &text, unit_env());
            results.push((style, text, format!("{r:?}")));
        }
        let (s0, t0, r0) = &results[0];
        for (s, t, r) in &results[1..] {
            // A generated table header may clash with a dotted key of the same table; then the
            // spelling is not TOML at all, which is fine, and there is nothing to compare.
            if r.contains("duplicate key") || r0.contains("duplicate key") {
                continue;
            }
            prop_assert_eq!(r, r0, "{:?}:\n{}\nvs {:?}:\n{}", s, t, s0, t0);
        }
        Ok(())
    });
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let f = fixture();
    let secret = f.secret_file.display().to_string();
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|i| json!(i)),
        (0u64..70000).prop_map(|i| json!(i)),
        any::<f64>().prop_map(|x| json!(x)),
        string_value().prop_map(Value::String),
        Just(json!({"@type": "Value", "value": CANARY_FILE_VALUE})),
        Just(json!({"@type": "File", "filePath": secret})),
        Just(json!({"@type": "File", "filePath": "/dev/zero"})),
        Just(json!({"@type": "EnvironmentVariable", "variableName": CANARY_ENV})),
        Just(json!({"@type": "EnvironmentVariable", "variableName": "SU_PROP_DEFINITELY_UNSET"})),
        Just(json!({"@type": "Weird"})),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z@]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// 0.16 DataStore objects with fields of every type, secrets of every kind, maybe wrapped.
#[test]
fn generated_json_datastores() {
    let field = proptest::sample::select(vec![
        "@type",
        "path",
        "host",
        "port",
        "database",
        "authUsername",
        "authSecret",
        "useTls",
        "tls",
        "tlsEnable",
        "clusterFile",
    ]);
    let ty = proptest::sample::select(vec![
        "RocksDb",
        "Sqlite",
        "FoundationDb",
        "PostgreSql",
        "MySql",
        "rocksdb",
        "",
        "S3",
    ]);
    check(
        "serverconfig/json",
        256,
        (
            ty,
            proptest::collection::btree_map(field, json_value(), 0..8),
            proptest::sample::select(vec!["", "dataStore", "DataStore", "store", "other"]),
        ),
        |(ty, fields, wrap)| {
            let mut obj: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            obj.entry("@type").or_insert_with(|| ty.into());
            let mut v = serde_json::Value::Object(obj);
            if !wrap.is_empty() {
                v = serde_json::json!({ wrap: v });
            }
            contract(&v.to_string())
        },
    );
}

/// Mutations of real configs: every line dropped, duplicated or cut.
#[test]
fn mutated_corpus_configs() {
    let texts: Vec<String> = corpus("serverconfig")
        .iter()
        .filter(|p| expect_of(p) == Expect::Ok)
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    check(
        "serverconfig/mutated",
        256,
        (
            proptest::sample::select(texts),
            any::<proptest::sample::Index>(),
            0u8..5,
            string_value(),
        ),
        |(text, at, how, insert)| {
            let lines: Vec<&str> = text.lines().collect();
            let i = at.index(lines.len().max(1));
            let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            match how {
                0 if !out.is_empty() => {
                    out.remove(i);
                }
                1 if !out.is_empty() => out.insert(i, out[i].clone()),
                2 => out.truncate(i),
                3 if !out.is_empty() => {
                    // Replace the value of a `key = value` line.
                    if let Some((k, _)) = out[i].clone().split_once('=') {
                        out[i] = format!("{k}= {}", toml_str(&insert));
                    }
                }
                _ => {
                    let cut = at.index(text.len() + 1);
                    let cut = (0..=cut)
                        .rev()
                        .find(|&c| text.is_char_boundary(c))
                        .unwrap_or(0);
                    return contract(&text[..cut]);
                }
            }
            contract(&out.join("\n"))
        },
    );
}

/// `%{cfg:..}%` macros that refer to each other many times over must not explode
/// (fan-out F over D levels is F^D expansions).
#[test]
fn cfg_macro_fanout_is_bounded() {
    for (fanout, levels, leaf) in [
        (16usize, 9usize, ""),
        (16, 9, "x"),
        (2, 40, ""),
        (64, 4, "abcdefgh"),
    ] {
        let mut text = String::from("storage.data = \"%{cfg:k.0}%\"\n");
        for l in 0..levels {
            let v = format!("%{{cfg:k.{}}}%", l + 1).repeat(fanout);
            text.push_str(&format!("k.{l} = \"{v}\"\n"));
        }
        text.push_str(&format!("k.{levels} = \"{leaf}\"\n"));
        let t0 = Instant::now();
        let r = ServerConfig::parse_toml_with_env(Path::new(TOML_PATH), &text, unit_env());
        assert!(
            t0.elapsed() < SLOW_CASE,
            "fan-out {fanout} x {levels}: {:?}",
            t0.elapsed()
        );
        assert!(
            matches!(r, Err(ServerConfigError::Malformed { .. })),
            "{fanout} x {levels}: {r:?}"
        );
    }
}

/// A `%{file:..}%` naming a device or a FIFO must not read forever or block.
#[test]
fn file_macro_on_special_files_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, "a".repeat(4 << 20)).unwrap();
    for file in [
        PathBuf::from("/dev/zero"),
        PathBuf::from("/dev/urandom"),
        fifo.clone(),
        big,
        dir.path().to_path_buf(),
    ] {
        let (tx, rx) = std::sync::mpsc::channel();
        let f = file.clone();
        std::thread::spawn(move || {
            let text = format!(
                "storage.data = \"s\"\nstore.s.type = \"postgresql\"\nstore.s.database = \"d\"\n\
                 store.s.password = \"%{{file:{}}}%\"\n",
                f.display()
            );
            let r = ServerConfig::parse_toml_with_env(Path::new(TOML_PATH), &text, unit_env());
            let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
        });
        let r = rx
            .recv_timeout(SLOW_CASE)
            .unwrap_or_else(|_| panic!("%{{file:{}}}% hangs", file.display()));
        assert!(r.is_err(), "{}: {r:?}", file.display());
        // The JSON File secret reads files the same way.
        let (tx, rx) = std::sync::mpsc::channel();
        let f = file.clone();
        std::thread::spawn(move || {
            let text = format!(
                r#"{{"@type":"PostgreSql","database":"d","authSecret":{{"@type":"File","filePath":"{}"}}}}"#,
                f.display()
            );
            let r = ServerConfig::parse_json_with_env(Path::new(JSON_PATH), &text, unit_env());
            let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
        });
        let r = rx
            .recv_timeout(SLOW_CASE)
            .unwrap_or_else(|_| panic!("File secret {} hangs", file.display()));
        assert!(r.is_err(), "{}: {r:?}", file.display());
    }
}

/// Every error message a value read by a macro can reach, with that value a canary.
#[test]
fn macro_values_never_reach_error_messages() {
    let f = fixture();
    for m in [
        format!("%{{file:{}}}%", f.secret_file.display()),
        format!("%{{file:{}}}%", f.multiline_file.display()),
        format!("%{{env:{CANARY_ENV}}}%"),
        format!("pre-%{{file:{}}}%-post", f.secret_file.display()),
    ] {
        for text in [
            format!("storage.data = \"{m}\"\n"),
            format!("storage.data = \"a\"\nstore.a.type = \"{m}\"\n"),
            format!("storage.data = \"a\"\nstore.a.type = \"postgresql\"\nstore.a.database = \"d\"\nstore.a.port = \"{m}\"\n"),
            format!("storage.data = \"a\"\nstorage.directory = \"{m}\"\nstore.a.type = \"sqlite\"\nstore.a.path = \"/a\"\n"),
            format!("storage.data = \"a\"\nstorage.directory = \"d\"\ndirectory.d.type = \"internal\"\ndirectory.d.store = \"{m}\"\nstore.a.type = \"sqlite\"\nstore.a.path = \"/a\"\n"),
            format!("storage.data = \"a\"\nstore.a.type = \"sqlite\"\nstore.a.path = \"/a\"\nserver.listener.h.protocol = \"http\"\nserver.listener.h.bind = \"{m}\"\n"),
            format!("storage.data = \"a\"\nstore.a.type = \"sqlite\"\nstore.a.path = \"/a\"\nserver.listener.h.protocol = \"http\"\nserver.listener.h.bind = [\"{m}\"]\n"),
            format!("storage.data = \"a\"\nstore.a.type = \"sqlite\"\nstore.a.path = \"/a\"\nx = \"{m}\"\nserver.listener.h.protocol = \"%{{cfg:x}}%\"\nserver.listener.h.bind = \"%{{cfg:x}}%\"\n"),
            format!("storage.data = \"{m}\"\nstore.{{}}.type = \"sqlite\"\n"),
        ] {
            if let Err(e) = ServerConfig::parse_toml_with_env(Path::new(TOML_PATH), &text, unit_env()) {
                no_canary(&text, &e).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
    for text in [
        format!(r#"{{"@type":"PostgreSql","database":"d","port":"%{{env:{CANARY_ENV}}}%"}}"#),
        format!(
            r#"{{"@type":"MySql","authSecret":{{"@type":"File","filePath":"{}"}}}}"#,
            f.secret_file.display()
        ),
    ] {
        if let Err(e) = ServerConfig::parse_json_with_env(Path::new(JSON_PATH), &text, unit_env()) {
            no_canary(&text, &e).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn corpus_regressions() {
    fixture();
    for p in corpus("serverconfig") {
        let text = std::fs::read_to_string(&p).unwrap();
        contract(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let r = if p.extension().is_some_and(|e| e == "json") {
            ServerConfig::parse_json_with_env(Path::new(JSON_PATH), &text, unit_env())
        } else {
            ServerConfig::parse_toml_with_env(Path::new(TOML_PATH), &text, unit_env())
        };
        if let Err(e) = &r {
            // What err-file-etc-passwd / err-file-proc-environ read must not be shown.
            let shown = e.to_string();
            assert!(
                !shown.contains("root:x:0") && !shown.contains("CARGO"),
                "{}: {shown}",
                p.display()
            );
        }
        match expect_of(&p) {
            Expect::Ok => assert!(r.is_ok(), "{}: {r:?}", p.display()),
            Expect::Err => assert!(r.is_err(), "{} accepted", p.display()),
            Expect::Any => {}
        }
    }
}
