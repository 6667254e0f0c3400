//! 0.15's directory and settings (the dump) as 0.16 registry objects: pure, no I/O.
//!
//! The mapping follows upstream's `resources/scripts/migrate_v016.py` and the registry schema
//! (`crates/registry/src/schema/`) at tag v0.16.18 (facts: /work/notes/crossing.md sections 2-4),
//! with these deliberate differences, each because upstream's script loses something an admin
//! would call data:
//! * plain-text 0.15 passwords (what 0.15 stores when a password is set through its API) are
//!   sent as sha512-crypt hashes, which 0.16 stores verbatim; sent as plain text, 0.16's password
//!   policy (zxcvbn score 3) refuses every weak one and the account with it;
//! * domains get `dkimManagement: Manual`: 0.16's default (Automatic) would generate new keys
//!   with selectors no DNS record names;
//! * the 0.15 listeners (`server.listener.*`) become NetworkListener objects, so the mail ports
//!   that answered before answer again (0.16's first normal start would otherwise bind its seven
//!   defaults instead);
//! * 0.15 `admin` roles become 0.16 `Admin` roles;
//! * values that are config macros (`%{env:..}%`, `%{file:..}%`) are not expanded: they would be
//!   read as root from wherever the service user's config points and handed to the server. They
//!   are reported as left behind instead.
//!
//! What is not carried is counted in `Carried::left_behind`, which `plan` prints.

use super::dump::Dump;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One registry call of the apply step, in dependency order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// `x:<object>/set` creating `items` (creation id, object); later objects refer to them as
    /// `#<creation id>`.
    Create {
        object: String,
        items: Vec<(String, Value)>,
    },
    /// `x:<object>/set` updating the singleton.
    Update { object: String, value: Value },
}

/// The converted objects and what stays behind.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Carried {
    pub ops: Vec<Op>,
    /// What 0.15 had that 0.16 will not (`what`, how many), for `plan`.
    pub left_behind: Vec<(String, usize)>,
    /// The `[authentication.fallback-admin]` user and secret (a hash or plain text), which
    /// becomes 0.16's `STALWART_RECOVERY_ADMIN`.
    pub admin: Option<(String, String)>,
    /// 0.16's `defaultHostname` and where it comes from, for `plan`.
    #[serde(default)]
    pub hostname: Option<Hostname>,
    /// What 0.16 would refuse (module `accept`), each with what to change in 0.15: the
    /// crossing is refused before the downtime while any is left.
    #[serde(default)]
    pub refused: Vec<String>,
    /// Settings left behind that an admin changed from 0.15's defaults: (key, value).
    #[serde(default)]
    pub changed: Vec<(String, String)>,
    /// Settings an admin changed that are carried (module `settings`), by key.
    #[serde(default)]
    pub carried_settings: Vec<String>,
}

/// The host name the crossing gives 0.16.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hostname {
    pub name: String,
    /// Where it comes from, in words.
    pub source: String,
}

/// The machine's names: what 0.15 fell back to (`gethostname`), and the fully qualified one
/// (`hostname -f`: getaddrinfo's canonical name), if it has one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machine {
    pub name: String,
    pub fqdn: Option<String>,
}

impl Carried {
    /// Objects per registry type, e.g. ("Account/User", 2), for `plan`.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for op in &self.ops {
            if let Op::Create { object, items } = op {
                for (_, v) in items {
                    let key = match v.get("@type").and_then(Value::as_str) {
                        Some(t) if object == "Account" => format!("{object}/{t}"),
                        _ => object.clone(),
                    };
                    *out.entry(key).or_default() += 1;
                }
            }
        }
        out
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConvertError {
    #[error("{what} is claimed twice in 0.15 ({first} and {second}); 0.16 allows each address once: change one of them in 0.15, then run the upgrade again")]
    DuplicateAddress {
        what: String,
        first: String,
        second: String,
    },
    #[error("0.15 principal {name:?} has no domain 0.16 could put it in (no address, no domain in the directory): give it an address in 0.15, then run the upgrade again")]
    NoDomain { name: String },
    #[error("the blob store `{store}` is a {kind} store, which this helper does not carry over to 0.16 (0.16 would look for the mail's contents in the data store): cross with upstream's procedure (UPGRADING/v0_16.md), configuring 0.16's BlobStore by hand")]
    BlobStore { store: String, kind: String },
}

/// Settings prefixes the conversion reads (upstream's `_CONSUMED_PREFIXES`, plus the listeners
/// and the fallback admin, which this helper carries too).
const CONSUMED: &[&str] = &[
    "acme.",
    "certificate.",
    "enterprise.",
    "lookup.default.",
    "server.hostname",
    "signature.",
    "storage.",
    "store.",
    "version.",
    "server.listener.",
    "authentication.fallback-admin.",
    "imap.auth.allow-plain-text",
];

/// A 0.15 principal, read leniently from the dump's JSON.
struct Principal<'a>(&'a Value);

impl<'a> Principal<'a> {
    fn id(&self) -> Option<u64> {
        self.0.get("id").and_then(Value::as_u64)
    }
    fn kind(&self) -> &'a str {
        self.0.get("type").and_then(Value::as_str).unwrap_or("")
    }
    fn name(&self) -> &'a str {
        self.0.get("name").and_then(Value::as_str).unwrap_or("")
    }
    fn str(&self, k: &str) -> Option<&'a str> {
        self.0
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
    fn list(&self, k: &str) -> Vec<&'a str> {
        match self.0.get(k) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            _ => Vec::new(),
        }
    }
    /// Disk quota in bytes (a number, or the first element of 0.15's per-type array).
    fn quota(&self) -> Option<u64> {
        match self.0.get("quota") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::Array(a)) => a.first().and_then(Value::as_u64),
            _ => None,
        }
        .filter(|q| *q > 0)
    }
}

/// Upstream's `is_valid_domain_name` (two labels at least, letters/digits/hyphens, <= 253), and
/// a name 0.16's registry takes (`accept::sanitize_domain`): a domain 0.16 would refuse stays
/// behind, said in the plan, instead of failing the carry step after the stop.
fn valid_domain(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    super::accept::sanitize_domain(d).is_some()
        && d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

fn split_address(a: &str) -> Option<(String, String)> {
    let (l, d) = a.rsplit_once('@')?;
    (!l.is_empty() && !d.is_empty()).then(|| (l.to_lowercase(), d.to_lowercase()))
}

fn is_macro(v: &str) -> bool {
    v.contains("%{")
}

/// A password as 0.16 will store it: a hash stays as it is; plain text becomes sha512-crypt.
pub fn password_secret(secret: &str, hash: &dyn Fn(&str) -> String) -> String {
    if looks_hashed(secret) {
        secret.to_string()
    } else {
        hash(secret)
    }
}

/// Upstream 0.16's `is_password_hash` accepts these forms (and checks their lengths); anything
/// else it treats as plain text.
fn looks_hashed(s: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "$argon2",
        "$pbkdf2",
        "$scrypt",
        "$2a$",
        "$2b$",
        "$2x$",
        "$2y$",
        "$1$",
        "$5$",
        "$6$",
        "$sha1$",
        "{SHA}",
        "{SSHA}",
        "{SHA256}",
        "{SSHA256}",
        "{SHA512}",
        "{SSHA512}",
        "{MD5}",
        "{ARGON2",
        "{PBKDF2}",
        "{CRYPT}",
    ];
    PREFIXES.iter().any(|p| s.starts_with(p))
}

/// State of one conversion.
struct Conv<'a> {
    dump: &'a Dump,
    /// Domain name -> creation id.
    domains: BTreeMap<String, String>,
    default_domain: Option<String>,
    /// 0.15 name -> principal, for individuals and groups.
    accounts: BTreeMap<&'a str, Principal<'a>>,
    /// Every address claimed, with who claims it.
    claimed: BTreeMap<String, String>,
    left: BTreeMap<String, usize>,
    next_id: usize,
    /// What 0.16 would refuse (`Carried::refused`).
    refused: Vec<String>,
    hostname: Option<Hostname>,
    changed: Vec<(String, String)>,
    /// Keys the `settings` module carries (changed or not).
    carried_keys: std::collections::BTreeSet<String>,
    carried_changed: Vec<String>,
}

/// Converts the dump. `machine`: the machine's names, 0.15's last fallback for
/// `server.hostname`. `hash`: turns a plain-text password into a sha512-crypt hash.
pub fn convert(
    dump: &Dump,
    machine: &Machine,
    hash: &dyn Fn(&str) -> String,
) -> Result<Carried, ConvertError> {
    let mut c = Conv {
        dump,
        domains: BTreeMap::new(),
        default_domain: None,
        accounts: BTreeMap::new(),
        claimed: BTreeMap::new(),
        left: BTreeMap::new(),
        next_id: 0,
        refused: Vec::new(),
        hostname: None,
        changed: Vec::new(),
        carried_keys: Default::default(),
        carried_changed: Vec::new(),
    };
    let principals: Vec<Principal> = dump.principals.iter().map(Principal).collect();
    for p in &principals {
        match p.kind() {
            "individual" | "group" => {
                c.accounts.insert(p.name(), Principal(p.0));
            }
            "domain" | "list" => {}
            other => c.leave(&format!("0.15 principals of type {other}"), 1),
        }
    }
    let mut ops = vec![c.domains_op(&principals)];
    let (groups, users) = c.accounts_ops(&principals, hash)?;
    ops.extend([groups, users, c.lists_op(&principals)?]);
    ops.extend([c.dkim_op(), c.certificates_op(), c.listeners_op()]);
    ops.extend(c.system_settings_op(machine));
    ops.extend(c.imap_op());
    ops.extend(c.blob_store_op()?);
    c.other_stores();
    let carried = super::settings::carry(&dump.settings, &|k, v| {
        !super::defaults::is_default(k, v, &dump.settings)
    });
    ops.extend(carried.ops);
    c.carried_keys = carried.keys;
    c.unconsumed_settings();
    let admin = match (
        dump.settings.get("authentication.fallback-admin.user"),
        dump.settings.get("authentication.fallback-admin.secret"),
    ) {
        (Some(u), Some(s)) if !is_macro(u) && !is_macro(s) && !u.contains(':') => {
            Some((u.trim().to_string(), s.trim().to_string()))
        }
        (Some(_), Some(_)) => {
            c.leave(
                "the fallback admin (a %{..}% macro or a ':' in the name: set STALWART_RECOVERY_ADMIN by hand)",
                1,
            );
            None
        }
        _ => None,
    };
    // No empty create calls: 0.16 refuses them.
    ops.retain(|op| !matches!(op, Op::Create { items, .. } if items.is_empty()));
    Ok(Carried {
        ops,
        left_behind: c.left.into_iter().collect(),
        admin,
        hostname: c.hostname,
        refused: c.refused,
        changed: c.changed,
        carried_settings: c.carried_changed,
    })
}

impl<'a> Conv<'a> {
    fn leave(&mut self, what: &str, n: usize) {
        *self.left.entry(what.to_string()).or_default() += n;
    }

    fn cid(&mut self) -> String {
        let id = format!("create-{}", self.next_id);
        self.next_id += 1;
        id
    }

    fn claim(&mut self, address: &str, who: &str) -> Result<(), ConvertError> {
        match self.claimed.get(address) {
            Some(first) if first != who => Err(ConvertError::DuplicateAddress {
                what: address.to_string(),
                first: first.clone(),
                second: who.to_string(),
            }),
            _ => {
                self.claimed.insert(address.to_string(), who.to_string());
                Ok(())
            }
        }
    }

    fn domains_op(&mut self, principals: &[Principal]) -> Op {
        let mut names = BTreeSet::new();
        let mut described: BTreeMap<String, &Principal> = BTreeMap::new();
        for p in principals {
            match p.kind() {
                "domain" => {
                    names.insert(p.name().to_lowercase());
                    described.insert(p.name().to_lowercase(), p);
                }
                "individual" | "group" | "list" => {
                    if let Some((_, d)) = split_address(p.name()) {
                        names.insert(d);
                    }
                    for e in p.list("emails") {
                        if let Some((_, d)) = split_address(e) {
                            names.insert(d);
                        }
                    }
                }
                _ => {}
            }
        }
        for (k, v) in &self.dump.settings {
            if k.starts_with("signature.") && k.ends_with(".domain") {
                names.insert(v.to_lowercase());
            }
        }
        let mut items = Vec::new();
        for d in names {
            if !valid_domain(&d) {
                self.leave(
                    &format!("domain {d:?} (not a valid domain name for 0.16)"),
                    1,
                );
                continue;
            }
            let cid = self.cid();
            let mut obj = json!({"name": d, "dkimManagement": {"@type": "Manual"}});
            if let Some(desc) = described.get(&d).and_then(|p| p.str("description")) {
                obj["description"] = json!(desc);
            }
            self.domains.insert(d, cid.clone());
            items.push((cid, obj));
        }
        self.default_domain = self.pick_default(principals);
        Op::Create {
            object: "Domain".into(),
            items,
        }
    }

    /// Upstream's `_pick_default_domain`: the only one, else the most common primary domain of
    /// the accounts and lists (ties by name), else the first by name.
    fn pick_default(&self, principals: &[Principal]) -> Option<String> {
        if self.domains.len() == 1 {
            return self.domains.keys().next().cloned();
        }
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for p in principals {
            if matches!(p.kind(), "individual" | "group" | "list") {
                if let Some(d) = self.primary_domain(p) {
                    *count.entry(d).or_default() += 1;
                }
            }
        }
        let best = count
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(d, _)| d.clone());
        best.or_else(|| self.domains.keys().next().cloned())
    }

    /// The domain of the principal's own address: its name's, else the first email whose local
    /// part is the name, else the first email (upstream's `_infer_primary_domain`).
    fn primary_domain(&self, p: &Principal) -> Option<String> {
        if let Some((_, d)) = split_address(p.name()) {
            return Some(d);
        }
        let emails: Vec<(String, String)> = p
            .list("emails")
            .into_iter()
            .filter_map(split_address)
            .collect();
        let name = p.name().to_lowercase();
        emails
            .iter()
            .find(|(l, _)| *l == name)
            .or(emails.first())
            .map(|(_, d)| d.clone())
    }

    /// (local part, domain) the 0.16 object gets (upstream's `_resolve_name_and_domain`).
    fn resolve(&self, p: &Principal) -> Result<(String, String), ConvertError> {
        if let Some((l, d)) = split_address(p.name()) {
            return Ok((l, d));
        }
        let d = self
            .primary_domain(p)
            .or_else(|| self.default_domain.clone())
            .ok_or_else(|| ConvertError::NoDomain {
                name: p.name().to_string(),
            })?;
        Ok((p.name().to_lowercase(), d))
    }

    fn domain_ref(&self, d: &str) -> Option<String> {
        self.domains.get(d).map(|c| format!("#{c}"))
    }

    /// Aliases: every address but the primary one, on a carried domain.
    fn aliases(&mut self, p: &Principal, primary: &str) -> Result<Value, ConvertError> {
        let mut out = Map::new();
        let mut seen = BTreeSet::new();
        for e in p.list("emails") {
            let Some((l, d)) = split_address(e) else {
                continue;
            };
            let addr = format!("{l}@{d}");
            if addr == primary || !seen.insert(addr.clone()) {
                continue;
            }
            let Some(dref) = self.domain_ref(&d) else {
                self.leave(&format!("alias {addr} (its domain is not carried)"), 1);
                continue;
            };
            self.claim(&addr, p.name())?;
            out.insert(out.len().to_string(), json!({"name": l, "domainId": dref}));
        }
        Ok(Value::Object(out))
    }

    /// Groups first (users refer to them), then users; creation ids `restore-<0.15 id>`, which
    /// recovery mode turns into the same account id, so the mail stays theirs.
    fn accounts_ops(
        &mut self,
        principals: &[Principal],
        hash: &dyn Fn(&str) -> String,
    ) -> Result<(Op, Op), ConvertError> {
        let mut groups = Vec::new();
        let mut users = Vec::new();
        for p in principals {
            let kind = p.kind();
            if kind != "individual" && kind != "group" {
                continue;
            }
            let Some(id) = p.id() else {
                self.leave("0.15 accounts without an id", 1);
                continue;
            };
            let (local, domain) = self.resolve(p)?;
            let Some(dref) = self.domain_ref(&domain) else {
                self.leave(
                    &format!("account {} (its domain {domain} is not carried)", p.name()),
                    1,
                );
                continue;
            };
            let primary = format!("{local}@{domain}");
            self.claim(&primary, p.name())?;
            let mut obj = json!({
                "@type": if kind == "group" { "Group" } else { "User" },
                "name": local,
                "domainId": dref,
                "aliases": self.aliases(p, &primary)?,
            });
            if let Some(d) = p.str("description") {
                obj["description"] = json!(d);
            }
            obj["quotas"] = match p.quota() {
                Some(q) => json!({"maxDiskQuota": q}),
                None => json!({}),
            };
            if kind == "individual" {
                self.user_fields(p, &mut obj, hash);
            }
            let item = (format!("restore-{id}"), obj);
            if kind == "group" {
                groups.push(item);
            } else {
                users.push(item);
            }
        }
        Ok((
            Op::Create {
                object: "Account".into(),
                items: groups,
            },
            Op::Create {
                object: "Account".into(),
                items: users,
            },
        ))
    }

    fn user_fields(&mut self, p: &Principal, obj: &mut Value, hash: &dyn Fn(&str) -> String) {
        let secrets = p.list("secrets");
        let password = secrets
            .iter()
            .find(|s| !s.starts_with("$app$") && !s.starts_with("otpauth://"));
        let otp = secrets.iter().find(|s| s.starts_with("otpauth://"));
        let app = secrets.iter().filter(|s| s.starts_with("$app$")).count();
        if app > 0 {
            // 0.16 refuses app passwords on create: they must be issued again.
            self.leave("app passwords (issue them again in 0.16)", app);
        }
        let mut creds = Map::new();
        if let Some(pw) = password {
            let mut c = json!({"@type": "Password", "secret": password_secret(pw, hash)});
            if let Some(o) = otp {
                c["otpAuth"] = json!(o);
            }
            creds.insert("0".into(), c);
        }
        obj["credentials"] = Value::Object(creds);
        let groups: Map<String, Value> = p
            .list("memberOf")
            .into_iter()
            .filter_map(|g| self.accounts.get(g))
            .filter(|g| g.kind() == "group")
            .filter_map(|g| g.id())
            .map(|gid| (format!("#restore-{gid}"), json!(true)))
            .collect();
        if !groups.is_empty() {
            obj["memberGroupIds"] = Value::Object(groups);
        }
        let roles = p.list("roles");
        if roles.contains(&"admin") {
            obj["roles"] = json!({"@type": "Admin"});
        }
        let custom = roles
            .iter()
            .filter(|r| !matches!(**r, "admin" | "user" | "tenant-admin"))
            .count();
        if custom > 0 {
            self.leave("custom role assignments of accounts", custom);
        }
        let perms = p.list("enabledPermissions").len() + p.list("disabledPermissions").len();
        if perms > 0 {
            self.leave("per-account permission overrides", perms);
        }
    }

    fn lists_op(&mut self, principals: &[Principal]) -> Result<Op, ConvertError> {
        let mut items = Vec::new();
        let mut lists: Vec<&Principal> = principals.iter().filter(|p| p.kind() == "list").collect();
        lists.sort_by_key(|p| p.id());
        for p in lists {
            let (local, domain) = match self.resolve(p) {
                Ok(x) => x,
                Err(_) => {
                    self.leave("mailing lists without a domain", 1);
                    continue;
                }
            };
            let Some(dref) = self.domain_ref(&domain) else {
                self.leave("mailing lists on a domain that is not carried", 1);
                continue;
            };
            let primary = format!("{local}@{domain}");
            self.claim(&primary, p.name())?;
            let mut recipients = Map::new();
            for m in p.list("members") {
                match self.accounts.get(m) {
                    Some(a) => {
                        let a = Principal(a.0);
                        if let Ok((l, d)) = self.resolve(&a) {
                            recipients.insert(format!("{l}@{d}"), json!(true));
                        }
                    }
                    None => self.leave("mailing-list members that are not accounts", 1),
                }
            }
            for e in p.list("externalMembers") {
                if e.contains('@') {
                    recipients.insert(e.to_lowercase(), json!(true));
                }
            }
            let mut obj = json!({
                "name": local,
                "domainId": dref,
                "aliases": self.aliases(p, &primary)?,
                "recipients": recipients,
            });
            if let Some(d) = p.str("description") {
                obj["description"] = json!(d);
            }
            items.push((self.cid(), obj));
        }
        Ok(Op::Create {
            object: "MailingList".into(),
            items,
        })
    }

    /// `<prefix>.<id>.<field>` settings grouped by id (ids may contain dots: the id is what
    /// stands before a known field).
    fn groups(&self, prefix: &str, fields: &[&str]) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let p = format!("{prefix}.");
        for (k, v) in &self.dump.settings {
            let Some(rest) = k.strip_prefix(&p) else {
                continue;
            };
            for f in fields {
                if let Some(id) = rest.strip_suffix(&format!(".{f}")) {
                    out.entry(id.to_string())
                        .or_default()
                        .insert(f.to_string(), v.clone());
                }
            }
        }
        out
    }

    fn dkim_op(&mut self) -> Op {
        let mut items = Vec::new();
        for (id, f) in self.groups(
            "signature",
            &[
                "private-key",
                "domain",
                "selector",
                "algorithm",
                "canonicalization",
            ],
        ) {
            let ty = match f.get("algorithm").map(String::as_str) {
                Some("ed25519-sha256") => "Dkim1Ed25519Sha256",
                Some("rsa-sha256") => "Dkim1RsaSha256",
                _ => {
                    self.leave("DKIM keys with an algorithm 0.16 lacks (rsa-sha1)", 1);
                    continue;
                }
            };
            let (Some(key), Some(sel), Some(dref)) = (
                f.get("private-key"),
                f.get("selector"),
                f.get("domain")
                    .and_then(|d| self.domain_ref(&d.to_lowercase())),
            ) else {
                self.leave(&format!("DKIM key {id} (no key, selector or domain)"), 1);
                continue;
            };
            if is_macro(key) || is_macro(sel) {
                self.leave(
                    &format!("DKIM key {id} (a %{{..}}% macro: create it again in 0.16)"),
                    1,
                );
                continue;
            }
            let mut obj = json!({
                "@type": ty,
                "domainId": dref,
                "selector": sel,
                "privateKey": {"@type": "Text", "secret": key.trim()},
            });
            if let Some(c) = f.get("canonicalization") {
                obj["canonicalization"] = json!(c);
            }
            items.push((self.cid(), obj));
        }
        Op::Create {
            object: "DkimSignature".into(),
            items,
        }
    }

    fn certificates_op(&mut self) -> Op {
        let mut items = Vec::new();
        for (id, f) in self.groups("certificate", &["cert", "private-key"]) {
            match (f.get("cert"), f.get("private-key")) {
                (Some(c), Some(k))
                    if !is_macro(c)
                        && !is_macro(k)
                        && c.contains("-----BEGIN ")
                        && k.contains("-----BEGIN ") =>
                {
                    let obj = json!({
                        "certificate": {"@type": "Text", "value": c.trim()},
                        "privateKey": {"@type": "Text", "secret": k.trim()},
                    });
                    items.push((self.cid(), obj));
                }
                _ => self.leave(
                    &format!("certificate {id} (read from a file or macro: add it again in 0.16, or let ACME issue it)"),
                    1,
                ),
            }
        }
        Op::Create {
            object: "Certificate".into(),
            items,
        }
    }

    fn listeners_op(&mut self) -> Op {
        let mut items = Vec::new();
        for (id, l) in super::listeners::from_settings(&self.dump.settings) {
            match l {
                Ok(obj) => items.push((self.cid(), obj)),
                Err(why) => self.leave(&format!("listener {id} ({why})"), 1),
            }
        }
        Op::Create {
            object: "NetworkListener".into(),
            items,
        }
    }

    fn system_settings_op(&mut self, machine: &Machine) -> Option<Op> {
        let d = self.default_domain.clone()?;
        let dref = self.domain_ref(&d)?;
        let host = self.choose_hostname(machine, &d)?;
        let op = Op::Update {
            object: "SystemSettings".into(),
            value: json!({"defaultDomainId": dref, "defaultHostname": host.name}),
        };
        self.hostname = Some(host);
        Some(op)
    }

    /// 0.16's `defaultHostname`, resolved the way 0.15 resolved its own (crates/common/src/
    /// config/network.rs at v0.15.5: `server.hostname`, else `lookup.default.hostname`, else the
    /// machine's name), but never a name 0.16 refuses (`accept::hostname`): where 0.15 fell back
    /// to the machine's short name, the machine's fully qualified name (what install.sh asks
    /// `hostname -f` for), else `mail.<default domain>`. A name the admin set that 0.16 refuses
    /// is not replaced behind their back: it refuses the crossing (`refused`) naming the key.
    fn choose_hostname(&mut self, machine: &Machine, domain: &str) -> Option<Hostname> {
        let mut skipped = Vec::new();
        for key in ["server.hostname", "lookup.default.hostname"] {
            let Some(v) = self.dump.settings.get(key).map(|v| v.trim()) else {
                continue;
            };
            if v.is_empty() {
                continue;
            }
            if is_macro(v) {
                // Never expanded (see the module comment): said, and the next candidate used.
                skipped.push(format!("{key} is a %{{..}}% macro, not expanded"));
                continue;
            }
            return match super::accept::hostname(v) {
                Some(name) => Some(Hostname {
                    name,
                    source: format!("0.15's {key}"),
                }),
                None => {
                    self.refused.push(format!(
                        "0.15's {key} = {v:?}: {}; set {key} to the server's fully qualified name in 0.15 (web admin: Settings > Server > Network, or config.toml), then run the upgrade again",
                        super::accept::HOSTNAME_REFUSED
                    ));
                    None
                }
            };
        }
        if skipped.is_empty() {
            skipped.push("0.15 has no server.hostname".into());
        }
        let short = machine.name.trim().to_lowercase();
        let fqdn = machine.fqdn.as_deref().map(str::trim).unwrap_or("");
        let (name, why) = if let Some(name) = super::accept::hostname(&short) {
            (name, "the machine's name, as 0.15 used it".to_string())
        } else {
            if !short.is_empty() {
                skipped.push(format!(
                    "0.15 used the machine's name {short:?}, which 0.16 refuses"
                ));
            }
            match super::accept::hostname(fqdn) {
                Some(name) => (name, "the machine's fully qualified name".to_string()),
                None => {
                    if !fqdn.is_empty() && fqdn != short {
                        skipped.push(format!(
                            "the machine's fully qualified name {fqdn:?} is refused too"
                        ));
                    }
                    let name = super::accept::hostname(&format!("mail.{domain}"))?;
                    (name, format!("`mail.` and the default domain {domain}"))
                }
            }
        };
        Some(Hostname {
            name,
            source: format!(
                "{why} ({}; set server.hostname in 0.15 to choose another)",
                skipped.join("; ")
            ),
        })
    }

    /// 0.15's `imap.auth.allow-plain-text` (both generations refuse a plain LOGIN on a clear-text
    /// port by default; measured): an admin who allowed it keeps it.
    fn imap_op(&mut self) -> Option<Op> {
        let v = self.dump.settings.get("imap.auth.allow-plain-text")?;
        Some(Op::Update {
            object: "Imap".into(),
            value: json!({"allowPlainTextAuth": v == "true"}),
        })
    }

    /// `storage.blob`: the data store (0.16's default), or a file-system store, which becomes the
    /// BlobStore singleton; any other kind refuses the crossing (the mail's contents live there).
    fn blob_store_op(&mut self) -> Result<Option<Op>, ConvertError> {
        let st = &self.dump.settings;
        let (Some(blob), data) = (st.get("storage.blob"), st.get("storage.data")) else {
            return Ok(None);
        };
        if Some(blob) == data {
            return Ok(None);
        }
        let get = |k: &str| st.get(&format!("store.{blob}.{k}"));
        match get("type").map(String::as_str) {
            Some("fs") => {
                let path = get("path").filter(|p| !is_macro(p)).ok_or_else(|| {
                    ConvertError::BlobStore {
                        store: blob.clone(),
                        kind: "file-system (without a plain path)".into(),
                    }
                })?;
                let mut v = json!({"@type": "FileSystem", "path": path});
                if let Some(d) = get("depth").and_then(|d| d.parse::<u64>().ok()) {
                    v["depth"] = json!(d);
                }
                Ok(Some(Op::Update {
                    object: "BlobStore".into(),
                    value: v,
                }))
            }
            other => Err(ConvertError::BlobStore {
                store: blob.clone(),
                kind: other.unwrap_or("unknown").to_string(),
            }),
        }
    }

    /// Full-text and lookup stores other than the data store: 0.16 uses its defaults (the data
    /// store, an in-memory store); the index is rebuilt, nothing is lost, but it is said.
    fn other_stores(&mut self) {
        let st = &self.dump.settings;
        let data = st.get("storage.data");
        let mut left = Vec::new();
        for (role, what) in [
            ("storage.fts", "full-text search store"),
            ("storage.lookup", "lookup store"),
        ] {
            if let Some(id) = st.get(role).filter(|id| Some(*id) != data) {
                left.push(format!("the separate {what} `{id}` (0.16 starts on its default; reindex or configure it again)"));
            }
        }
        for l in left {
            self.leave(&l, 1);
        }
    }

    /// Settings under no consumed prefix, counted by their first two segments: those an admin
    /// changed from 0.15's own defaults (`defaults`), each kept by key with its value for the
    /// crossing's `left-behind.txt`, apart from those still at 0.15's defaults (0.16 brings its
    /// own).
    fn unconsumed_settings(&mut self) {
        let mut changed: BTreeMap<String, usize> = BTreeMap::new();
        let mut defaults: BTreeMap<String, usize> = BTreeMap::new();
        for (k, v) in &self.dump.settings {
            if CONSUMED
                .iter()
                .any(|p| k.starts_with(p) || k == p.trim_end_matches('.'))
            {
                continue;
            }
            let is_default = super::defaults::is_default(k, v, &self.dump.settings);
            if self.carried_keys.contains(k) {
                if !is_default {
                    self.carried_changed.push(k.clone());
                }
                continue;
            }
            let prefix: Vec<&str> = k.splitn(3, '.').take(2).collect();
            let prefix = prefix.join(".");
            if is_default {
                *defaults.entry(prefix).or_default() += 1;
            } else {
                *changed.entry(prefix).or_default() += 1;
                self.changed.push((k.clone(), v.clone()));
            }
        }
        for (p, n) in changed {
            self.leave(
                &format!(
                    "settings {p}.* an admin changed (each with its value in left-behind.txt)"
                ),
                n,
            );
        }
        let n: usize = defaults.values().sum();
        if n > 0 {
            let groups: Vec<String> = defaults.keys().map(|p| format!("{p}.*")).collect();
            self.leave(
                &format!(
                    "settings at 0.15's own defaults, 0.16 brings its own ({})",
                    groups.join(", ")
                ),
                n,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(name: &str) -> Machine {
        Machine {
            name: name.into(),
            fqdn: None,
        }
    }

    fn fake_hash(p: &str) -> String {
        format!("$6$test${p}")
    }

    fn dump(principals: Value, settings: &[(&str, &str)]) -> Dump {
        Dump {
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            principals: principals.as_array().unwrap().clone(),
        }
    }

    fn fixture() -> Dump {
        dump(
            json!([
                {"id": 0, "type": "domain", "name": "example.org", "description": "Main"},
                {"id": 3, "type": "individual", "name": "alice", "secrets": ["alicepw", "$app$phone$x"],
                 "emails": ["alice@example.org", "alice.smith@example.org"], "roles": ["admin"], "quota": 1000},
                {"id": 4, "type": "individual", "name": "bob", "secrets": ["$6$salt$hash"],
                 "emails": ["bob@example.org"], "memberOf": ["sales"], "roles": ["user"]},
                {"id": 2, "type": "group", "name": "sales", "emails": ["sales@example.org"], "members": ["bob"]},
                {"id": 5, "type": "list", "name": "all", "emails": ["all@example.org"],
                 "members": ["alice", "sales"], "externalMembers": ["ext@other.test"]},
                {"id": 6, "type": "apiKey", "name": "ci"}
            ]),
            &[
                (
                    "signature.ed.private-key",
                    "-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----",
                ),
                ("signature.ed.domain", "example.org"),
                ("signature.ed.selector", "202401e"),
                ("signature.ed.algorithm", "ed25519-sha256"),
                ("signature.old.private-key", "x"),
                ("signature.old.domain", "example.org"),
                ("signature.old.selector", "s"),
                ("signature.old.algorithm", "rsa-sha1"),
                ("server.hostname", "mx.example.org"),
                ("authentication.fallback-admin.user", "admin"),
                ("authentication.fallback-admin.secret", "$6$abc$def"),
                ("queue.outbound.hostname", "x"),
                ("queue.outbound.next-hop", "y"),
            ],
        )
    }

    fn items<'a>(c: &'a Carried, object: &str) -> Vec<&'a (String, Value)> {
        c.ops
            .iter()
            .filter_map(|op| match op {
                Op::Create { object: o, items } if o == object => Some(items.iter()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn accounts_keep_their_ids_passwords_aliases_groups_and_admin_role() {
        let c = convert(&fixture(), &machine("host"), &fake_hash).unwrap();
        let accounts = items(&c, "Account");
        let ids: Vec<&str> = accounts.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["restore-2", "restore-3", "restore-4"], "groups first");
        let alice = &accounts[1].1;
        assert_eq!(alice["@type"], "User");
        assert_eq!(alice["name"], "alice");
        assert_eq!(alice["domainId"], "#create-0");
        assert_eq!(alice["credentials"]["0"]["secret"], "$6$test$alicepw");
        assert_eq!(alice["aliases"]["0"]["name"], "alice.smith");
        assert_eq!(alice["roles"]["@type"], "Admin");
        assert_eq!(alice["quotas"]["maxDiskQuota"], 1000);
        let bob = &accounts[2].1;
        assert_eq!(
            bob["credentials"]["0"]["secret"], "$6$salt$hash",
            "a hash stays"
        );
        assert_eq!(bob["memberGroupIds"]["#restore-2"], true);
        assert!(bob.get("roles").is_none());
        assert_eq!(c.admin, Some(("admin".into(), "$6$abc$def".into())));
    }

    #[test]
    fn lists_dkim_settings_and_what_is_left_behind() {
        let c = convert(&fixture(), &machine("host"), &fake_hash).unwrap();
        let lists = items(&c, "MailingList");
        assert_eq!(lists.len(), 1);
        let r = lists[0].1["recipients"].as_object().unwrap();
        let mut got: Vec<&String> = r.keys().collect();
        got.sort();
        assert_eq!(
            got,
            ["alice@example.org", "ext@other.test", "sales@example.org"]
        );
        let dkim = items(&c, "DkimSignature");
        assert_eq!(dkim.len(), 1, "rsa-sha1 is not carried");
        assert_eq!(dkim[0].1["@type"], "Dkim1Ed25519Sha256");
        let domain = &items(&c, "Domain")[0].1;
        assert_eq!(domain["dkimManagement"]["@type"], "Manual");
        assert_eq!(domain["description"], "Main");
        assert!(c.ops.contains(&Op::Update {
            object: "SystemSettings".into(),
            value: json!({"defaultDomainId": "#create-0", "defaultHostname": "mx.example.org"}),
        }));
        let left: BTreeMap<String, usize> = c.left_behind.iter().cloned().collect();
        assert_eq!(
            left["settings queue.outbound.* an admin changed (each with its value in left-behind.txt)"],
            2
        );
        assert_eq!(
            c.changed,
            [
                ("queue.outbound.hostname".to_string(), "x".to_string()),
                ("queue.outbound.next-hop".to_string(), "y".to_string())
            ]
        );
        assert_eq!(left["0.15 principals of type apiKey"], 1);
        assert_eq!(left["app passwords (issue them again in 0.16)"], 1);
        assert_eq!(left["DKIM keys with an algorithm 0.16 lacks (rsa-sha1)"], 1);
        assert!(!left.keys().any(|k| k.contains("fallback")), "{left:?}");
        let counts = c.counts();
        assert_eq!(counts["Account/User"], 2);
        assert_eq!(counts["Account/Group"], 1);
    }

    #[test]
    fn an_address_claimed_twice_refuses_with_both_owners() {
        let d = dump(
            json!([
                {"id": 1, "type": "individual", "name": "a", "emails": ["x@example.org"]},
                {"id": 2, "type": "individual", "name": "b", "emails": ["b@example.org", "x@example.org"]}
            ]),
            &[],
        );
        let e = convert(&d, &machine("h"), &fake_hash).unwrap_err();
        assert!(matches!(e, ConvertError::DuplicateAddress { .. }), "{e}");
    }

    #[test]
    fn macros_are_never_expanded() {
        let d = dump(
            json!([{"id": 1, "type": "individual", "name": "a", "emails": ["a@example.org"]}]),
            &[
                ("signature.k.private-key", "%{file:/etc/shadow}%"),
                ("signature.k.domain", "example.org"),
                ("signature.k.selector", "s"),
                ("signature.k.algorithm", "rsa-sha256"),
                ("certificate.c.cert", "%{file:/root/cert.pem}%"),
                ("certificate.c.private-key", "%{env:KEY}%"),
            ],
        );
        let c = convert(&d, &machine("h"), &fake_hash).unwrap();
        assert!(items(&c, "DkimSignature").is_empty());
        assert!(items(&c, "Certificate").is_empty());
        let text = serde_json::to_string(&c.ops).unwrap();
        assert!(!text.contains("%{"), "{text}");
    }

    #[test]
    fn invalid_domains_and_their_accounts_stay_behind() {
        let d = dump(
            json!([
                {"id": 1, "type": "individual", "name": "a", "emails": ["a@localhost"]},
                {"id": 2, "type": "individual", "name": "b", "emails": ["b@example.org"]}
            ]),
            &[],
        );
        let c = convert(&d, &machine("h"), &fake_hash).unwrap();
        assert_eq!(items(&c, "Account").len(), 1);
        assert!(c.left_behind.iter().any(|(w, _)| w.contains("localhost")));
    }

    #[test]
    fn blob_stores_other_than_the_data_store() {
        let base = [("storage.data", "db"), ("store.db.type", "rocksdb")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v: Vec<(&str, &str)> = base.to_vec();
            v.extend_from_slice(extra);
            convert(&dump(json!([]), &v), &machine("h"), &fake_hash)
        };
        assert!(with(&[("storage.blob", "db")]).unwrap().ops.is_empty());
        let fs = with(&[
            ("storage.blob", "files"),
            ("store.files.type", "fs"),
            ("store.files.path", "/srv/blobs"),
            ("store.files.depth", "2"),
        ])
        .unwrap();
        assert!(fs.ops.contains(&Op::Update {
            object: "BlobStore".into(),
            value: json!({"@type": "FileSystem", "path": "/srv/blobs", "depth": 2}),
        }));
        let s3 = with(&[("storage.blob", "s3"), ("store.s3.type", "s3")]).unwrap_err();
        assert!(matches!(s3, ConvertError::BlobStore { .. }), "{s3}");
        let fts = with(&[("storage.fts", "es"), ("store.es.type", "elasticsearch")]).unwrap();
        assert!(fts.left_behind.iter().any(|(w, _)| w.contains("full-text")));
    }

    #[test]
    fn the_hostname_is_one_0_16_accepts_chosen_as_0_15_chose_it() {
        let alice =
            json!([{"id": 1, "type": "individual", "name": "a", "emails": ["a@example.org"]}]);
        let host = |settings: &[(&str, &str)], m: Machine| {
            let c = convert(&dump(alice.clone(), settings), &m, &fake_hash).unwrap();
            let set = c.ops.iter().find_map(|op| match op {
                Op::Update { object, value } if object == "SystemSettings" => {
                    Some(value["defaultHostname"].as_str().unwrap().to_string())
                }
                _ => None,
            });
            let h = c.hostname.clone();
            assert_eq!(set.as_deref(), h.as_ref().map(|h| h.name.as_str()), "{c:?}");
            (h, c.refused)
        };
        let short = |n: &str, f: Option<&str>| Machine {
            name: n.into(),
            fqdn: f.map(String::from),
        };
        // server.hostname first, then lookup.default.hostname, as 0.15.
        let (h, r) = host(
            &[
                ("server.hostname", "MX.example.org"),
                ("lookup.default.hostname", "other.example.org"),
            ],
            short("debian", None),
        );
        assert_eq!(h.unwrap().name, "mx.example.org");
        assert!(r.is_empty());
        let (h, _) = host(
            &[("lookup.default.hostname", "Other.Example.org")],
            short("debian", None),
        );
        assert_eq!(h.unwrap().source, "0.15's lookup.default.hostname");
        // No name set: 0.15 used the machine's short name, which 0.16 refuses; its fully
        // qualified name, else mail.<default domain>.
        let (h, r) = host(&[], short("debian", Some("debian.corp.example.net")));
        assert_eq!(h.unwrap().name, "debian.corp.example.net");
        assert!(r.is_empty());
        let (h, r) = host(&[], short("stwtb-1-0-ab", None));
        let h = h.unwrap();
        assert_eq!(h.name, "mail.example.org");
        assert!(
            h.source.contains("\"stwtb-1-0-ab\", which 0.16 refuses"),
            "{}",
            h.source
        );
        assert!(r.is_empty());
        let (h, _) = host(&[], short("debian", Some("debian")));
        assert_eq!(h.unwrap().name, "mail.example.org");
        // A machine whose own name is fully qualified keeps it (what 0.15 used).
        let (h, _) = host(&[], short("mx1.example.org", None));
        assert_eq!(h.unwrap().name, "mx1.example.org");
        // A macro is not expanded: the next candidate, said.
        let (h, _) = host(&[("server.hostname", "%{env:HOST}%")], short("d", None));
        let h = h.unwrap();
        assert_eq!(h.name, "mail.example.org");
        assert!(h.source.contains("macro"), "{}", h.source);
        // A name the admin set that 0.16 refuses refuses the crossing, naming the key.
        let (h, r) = host(&[("server.hostname", "mailhost")], short("d", None));
        assert_eq!(h, None);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].contains("server.hostname = \"mailhost\"")
                && r[0].contains("Invalid hostname or IP address"),
            "{r:?}"
        );
    }

    #[test]
    fn hashes_are_recognised() {
        for h in ["$6$x$y", "$argon2id$v=19$x", "{SSHA}abc", "$2b$12$abc"] {
            assert_eq!(password_secret(h, &fake_hash), h);
        }
        assert_eq!(password_secret("hunter2", &fake_hash), "$6$test$hunter2");
    }
}
