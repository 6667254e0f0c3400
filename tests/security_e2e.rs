//! The service user as the adversary (README "Security"): in booted containers, the `stalwart`
//! user (who writes the server's config and data, and in an install.sh layout all of
//! /opt/stalwart) tries to steer what root's helper does. Each test performs the attack and shows
//! that the target is unchanged, nothing ran as root, no credential left the helper.

mod common;
use common::*;
use testbed::stalwart::ServerLayout;
use testbed::Fault;

/// Runs `script` in a shell as the `stalwart` user.
fn as_stalwart(s: &Scenario, script: &str) -> std::process::Output {
    s.ct.exec(&["runuser", "-u", "stalwart", "--", "sh", "-c", script])
}

/// (inode, content listing with sha256s, owners and modes) of a path: what must not change.
fn fingerprint(s: &Scenario, path: &str) -> String {
    s.ct.sh_ok(&format!(
        "stat -c '%i %U %a' {path}; find {path} -exec stat -c '%n %i %U %a %s' {{}} \\; | sort; \
         find {path} -type f -exec sha256sum {{}} \\; | sort"
    ))
    .expect("fingerprint")
}

/// The attack of finding 1: while a minor upgrade is being rolled back, the service user points
/// the data store at a directory of root's. The restore must go where the snapshot was taken
/// from, and root's directory must stay exactly as it was.
fn restore_target_attack(layout: ServerLayout, live: &str, victim: &str, make_victim: &str) {
    let s = Scenario::with(
        &release("0.14.3", Fault::None, 0),
        layout,
        DEFAULT_HELPER_CONFIG,
    );
    let before = s.digest();
    s.ct.sh_ok(make_victim).unwrap();
    let victim_before = fingerprint(&s, victim);
    s.allow("0.15");
    let edit = format!(
        "runuser -u stalwart -- sed -i 's#{live}#{victim}#' /opt/stalwart/etc/config.toml && grep -q {victim} /opt/stalwart/etc/config.toml"
    );
    // The rollback has begun (the new release crashed at start); the restore runs next.
    let out = s.upgrade_pausing(
        &release("0.15.5", Fault::CrashAtStart, 0),
        "undo-data:started",
        &edit,
    );
    let t = text(&out);
    assert!(
        matches!(code(&out), 5 | 6),
        "the upgrade must have failed and been rolled back: {t}"
    );
    assert_eq!(
        fingerprint(&s, victim),
        victim_before,
        "root's {victim} was changed by the restore: {t}"
    );
    // The data went back where it was taken from: with the config repaired, the old version
    // serves the original data.
    s.ct.sh_ok(&format!(
        "sed -i 's#{victim}#{live}#' /opt/stalwart/etc/config.toml && systemctl restart stalwart.service"
    ))
    .unwrap();
    s.serves("0.14.3", &before);
}

#[test]
fn a_store_path_changed_during_the_rollback_cannot_make_root_replace_a_directory() {
    restore_target_attack(
        ServerLayout::rocksdb(),
        "/opt/stalwart/data",
        "/srv/victim",
        "mkdir -p /srv/victim/sub && echo root-only > /srv/victim/sub/file && chmod 0700 /srv/victim",
    );
}

#[test]
fn a_sqlite_path_changed_during_the_rollback_cannot_make_root_replace_a_file() {
    restore_target_attack(
        ServerLayout::sqlite(),
        "/opt/stalwart/data/index.sqlite3",
        "/srv/shadow",
        "mkdir -p /srv && echo 'root:$6$hash:19000:0:99999:7:::' > /srv/shadow && chmod 0600 /srv/shadow",
    );
}

/// Finding 4/5/6 as a rule: under strace, nothing the helper does below /opt/stalwart (the
/// service user's in an install.sh layout) goes by a path that could be swapped for a symlink:
/// no path-based chmod/chown/open/rename there, every open relative to a directory there with
/// O_NOFOLLOW, every directory reached with RESOLVE_NO_SYMLINKS. Covers an upgrade rolled back
/// with a data restore, a committed upgrade with its web-admin refresh, the crossing to 0.16
/// (config.json written) and a rollback below it (config.json set aside, data restored).
#[test]
fn the_helper_reaches_nothing_below_the_servers_directories_by_a_path() {
    let s = Scenario::new(&release("0.14.3", Fault::None, 0));
    s.allow("0.15");
    s.allow("0.16");
    let mut traces = Vec::new();
    let mut run = |args: Vec<String>, what: &str| {
        let cmd = format!(
            "strace -f -qq -y -s 512 -o /root/trace -e trace=%file,fchmod,fchown,fchownat,fchmodat {} {}",
            s.helper,
            args.join(" ")
        );
        let out = s.ct.sh(&cmd);
        let trace = s.ct.exec_ok(&["cat", "/root/trace"]).expect("trace");
        traces.push((what.to_string(), code(&out), text(&out), trace));
    };
    let to = |v: &str, f: Fault| s.inside(&release(v, f, 0));
    run(
        vec![
            "upgrade".into(),
            "--to".into(),
            to("0.15.5", Fault::CrashAtStart),
            "--yes".into(),
        ],
        "minor upgrade rolled back with a restore",
    );
    run(
        vec![
            "upgrade".into(),
            "--to".into(),
            to("0.15.5", Fault::None),
            "--yes".into(),
            "--retry".into(),
        ],
        "minor upgrade committed",
    );
    run(
        vec![
            "upgrade".into(),
            "--to".into(),
            to("0.16.18", Fault::None),
            "--yes".into(),
        ],
        "crossing to 0.16",
    );
    run(
        vec!["rollback".into(), "--yes".into()],
        "rollback below 0.16",
    );
    let mut violations = Vec::new();
    for (what, rc, out, trace) in &traces {
        assert!(
            matches!(rc, 0 | 5),
            "{what}: the command itself must work: {out}"
        );
        // The trace does show the helper working below /opt/stalwart, through descriptors
        // (else the check below would pass on an empty or undecoded trace).
        let through_fds = trace
            .lines()
            .filter(|l| l.contains("</opt/stalwart") && l.contains("O_NOFOLLOW"))
            .count();
        let no_symlinks = trace
            .lines()
            .filter(|l| {
                l.contains("openat2(")
                    && l.contains("\"/opt/stalwart")
                    && l.contains("RESOLVE_NO_SYMLINKS")
            })
            .count();
        assert!(
            through_fds > 5 && no_symlinks > 2,
            "{what}: the trace does not show the work below /opt/stalwart ({through_fds} opens by descriptor, {no_symlinks} openat2):\n{}",
            trace.lines().take(40).collect::<Vec<_>>().join("\n")
        );
        for v in path_violations(trace, "/opt/stalwart") {
            violations.push(format!("{what}: {v}"));
        }
    }
    assert!(
        violations.is_empty(),
        "path-based operations below /opt/stalwart:\n{}",
        violations.join("\n")
    );
}

/// The calls of `trace` (strace -f -y) that reach an entry below `dir` in a way a symlink or a
/// swapped name could redirect. Lines of processes that exec'ed (the server binary, pg_dump, ...)
/// are not the helper's and are skipped.
fn path_violations(trace: &str, dir: &str) -> Vec<String> {
    // The first line is the helper's own execve (strace started it); any other process that
    // exec'ed is a child.
    let helper = trace
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().next());
    let execed: std::collections::HashSet<&str> = trace
        .lines()
        .filter(|l| l.contains(" execve(") && !l.contains("= -1"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|pid| Some(*pid) != helper)
        .collect();
    let under = |s: &str| s.starts_with(&format!("\"{dir}/")) || s == format!("\"{dir}\"");
    let mut out = Vec::new();
    for line in trace.lines() {
        // `PID   call(args) = result`
        let mut it = line.splitn(2, ' ');
        let (Some(pid), Some(call)) = (it.next(), it.next().map(str::trim_start)) else {
            continue;
        };
        if execed.contains(pid) || call.contains("= -1 ") {
            continue;
        }
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        let first = args.split(", ").next().unwrap_or("");
        let second = args.split(", ").nth(1).unwrap_or("");
        // "." of a directory descriptor (listing it) cannot be a symlink.
        if second == "\".\"" {
            continue;
        }
        // The *at calls: a directory descriptor shown as N</path> (AT_FDCWD maybe with the cwd).
        let at_cwd = first.starts_with("AT_FDCWD");
        let dirfd_under =
            !at_cwd && (first.contains(&format!("<{dir}/")) || first.contains(&format!("<{dir}>")));
        let at_cwd_under = at_cwd && under(second);
        let flags = args;
        let bad = match name {
            // Path-based calls that change something, or open it.
            "chmod" | "chown" | "lchown" | "truncate" | "creat" | "mkdir" | "rmdir" | "unlink"
            | "rename" | "link" | "symlink" | "utimes" | "utime" | "open" => under(first),
            "openat" => {
                (at_cwd_under && !flags.contains("O_NOFOLLOW"))
                    || (dirfd_under && !flags.contains("O_NOFOLLOW"))
            }
            "openat2" => at_cwd_under && !flags.contains("RESOLVE_NO_SYMLINKS"),
            "fchmodat" => at_cwd_under || dirfd_under,
            "fchownat" => (at_cwd_under || dirfd_under) && !flags.contains("AT_SYMLINK_NOFOLLOW"),
            "mkdirat" | "unlinkat" | "renameat" | "renameat2" | "linkat" | "symlinkat"
            | "utimensat" => at_cwd_under,
            _ => false,
        };
        if bad {
            out.push(line.to_string());
        }
    }
    out
}

#[test]
fn path_violations_finds_what_it_should() {
    let trace = "\
10    execve(\"/target/debug/stalwart-upgrade\", [\"stalwart-upgrade\"], 0x0) = 0
10    openat(AT_FDCWD</>, \"/opt/stalwart/etc/config.toml\", O_RDONLY|O_CLOEXEC) = 3</opt/stalwart/etc/config.toml>
10 openat(5</opt/stalwart/etc>, \"config.toml\", O_RDONLY|O_NOFOLLOW|O_CLOEXEC) = 6
10 openat2(AT_FDCWD, \"/opt/stalwart/data\", {flags=O_RDONLY|O_NOFOLLOW|O_CLOEXEC|O_DIRECTORY, resolve=RESOLVE_NO_SYMLINKS}, 24) = 7
10 chmod(\"/opt/stalwart/etc/config.json\", 0640) = 0
10 fchownat(7</opt/stalwart/data>, \"x\", 0, 0, 0) = 0
11 execve(\"/proc/self/fd/9\", [\"stalwart\"], 0x0) = 0
11 openat(AT_FDCWD, \"/opt/stalwart/data/x\", O_RDONLY) = 3
10 openat(AT_FDCWD, \"/etc/passwd\", O_RDONLY) = 3
10 openat(7</opt/stalwart/data>, \".\", O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 8
10 openat(AT_FDCWD</root>, \"/opt/stalwart/bin\", O_RDONLY|O_DIRECTORY) = 9
";
    let v = path_violations(trace, "/opt/stalwart");
    assert_eq!(v.len(), 4, "{v:#?}");
    assert!(v[0].contains("config.toml\", O_RDONLY|O_CLOEXEC"));
    assert!(v[1].starts_with("10 chmod"));
    assert!(v[2].starts_with("10 fchownat"));
    assert!(v[3].contains("AT_FDCWD</root>"));
}

/// Finding 7: the service user points the config's HTTP listener at a port where a listener of
/// theirs waits for the web-admin credentials.
#[test]
fn web_admin_credentials_are_not_sent_to_a_listener_of_the_service_user() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    // A listener of theirs that records every request it gets.
    let catcher = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        open('/srv/catch/caught', 'a').write(self.path + ' ' + str(self.headers.get('Authorization')) + '\n')
        self.send_response(200); self.send_header('content-length', '0'); self.end_headers()
    do_POST = do_GET
    def log_message(self, *a): pass
http.server.HTTPServer(('127.0.0.1', 9999), H).serve_forever()
"#;
    // (Not /tmp: the container mounts a tmpfs there, over what the host writes.)
    s.ct.write_file("/srv/catch/catcher.py", catcher).unwrap();
    s.ct.sh_ok("chown -R stalwart /srv/catch && chmod 0644 /srv/catch/catcher.py")
        .unwrap();
    s.ct.sh_ok(
        "systemd-run --quiet --uid=stalwart --unit=catcher python3 /srv/catch/catcher.py && \
         for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:9999/ready && break; sleep 0.1; done",
    )
    .unwrap();
    let edit = as_stalwart(
        &s,
        "sed -i 's#127.0.0.1:8080#127.0.0.1:9999#' /opt/stalwart/etc/config.toml",
    );
    assert!(edit.status.success(), "{}", text(&edit));
    let out = s.helper(&["webadmin", "refresh"], &[]);
    let t = text(&out);
    assert_ne!(code(&out), 0, "{t}");
    assert!(t.contains("credentials were not sent"), "{t}");
    assert!(t.contains("[webadmin] url"), "{t}");
    let caught =
        s.ct.exec_ok(&["cat", "/srv/catch/caught"])
            .unwrap_or_default();
    assert!(
        !caught.contains("Basic") && !caught.contains("Bearer"),
        "a credential reached the service user's listener: {caught}"
    );
    // With the config back, the refresh reaches the server itself.
    s.ct.sh_ok("sed -i 's#127.0.0.1:9999#127.0.0.1:8080#' /opt/stalwart/etc/config.toml")
        .unwrap();
    let out = s.helper(&["webadmin", "refresh"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
}

/// Finding 8: with install.sh's KillMode=process, a process of the service user started by the
/// unit survives the stop and could write the data while it is snapshotted. The stop kills it.
#[test]
fn processes_left_in_the_units_cgroup_are_killed_before_the_snapshot() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    // A process the unit starts that stays around: it writes its own pid and sleeps.
    s.ct.write_file(
        "/usr/local/bin/linger",
        "#!/bin/sh\necho $$ > /tmp/lingerer.pid\nexec sleep 100000\n",
    )
    .unwrap();
    s.ct.write_file(
        "/etc/systemd/system/stalwart.service.d/linger.conf",
        "[Service]\nExecStartPost=/bin/sh -c '/usr/local/bin/linger >/dev/null 2>&1 &'\n",
    )
    .unwrap();
    s.ct.sh_ok(
        "chmod 0755 /usr/local/bin/linger && systemctl daemon-reload && \
         systemctl restart stalwart.service && sleep 1",
    )
    .unwrap();
    s.ready();
    let pid =
        s.ct.exec_ok(&["cat", "/tmp/lingerer.pid"])
            .unwrap()
            .trim()
            .to_string();
    let cgroup =
        s.ct.exec_ok(&["cat", &format!("/proc/{pid}/cgroup")])
            .unwrap();
    assert!(cgroup.contains("stalwart.service"), "{cgroup}");
    // The lingerer is in the unit's cgroup and survives a plain stop (KillMode=process).
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(
        !s.ct.sh(&format!("kill -0 {pid}")).status.success(),
        "the process the unit left after its stop still runs: {t}"
    );
    assert!(
        t.contains("processes of it are left"),
        "the kill is logged: {t}"
    );
}

/// Lesser finding: a line a child of the unit prints (not the server's main process) must not
/// veto the upgrade and blacklist the release.
#[test]
fn a_failure_line_from_another_process_of_the_unit_does_not_veto() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    s.ct.write_file(
        "/etc/systemd/system/stalwart.service.d/noise.conf",
        "[Service]\nExecStartPost=/bin/echo 'ERROR Failed to migrate database: forged by another process'\n",
    )
    .unwrap();
    s.ct.sh_ok("systemctl daemon-reload").unwrap();
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(s.binary_version(), "0.15.6");
}

/// Lesser findings: inside a chroot whose /run is the host's, and under a policy-rc.d that forbids
/// service actions, the package hooks leave the running system's services alone.
#[test]
fn hooks_leave_services_alone_in_a_chroot_and_under_policy_rc_d() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let pid = s.main_pid();
    let payload = s.inside(&release("0.15.6", Fault::None, 0));
    s.ct.sh_ok(&format!(
        "mkdir -p /usr/lib/stalwart && cp {payload} /usr/lib/stalwart/stalwart && \
         (cd /usr/lib/stalwart && sha256sum stalwart > SHA256SUMS)"
    ))
    .unwrap();
    s.ct.write_file("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n")
        .unwrap();
    s.ct.sh_ok("chmod 0755 /usr/sbin/policy-rc.d").unwrap();
    let out = s.helper(&["hook", "deb", "postinst", "configure", "0.15.5-1"], &[]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(t.contains("policy-rc.d forbids"), "{t}");
    assert_eq!(s.main_pid(), pid, "the server was restarted: {t}");
    assert_eq!(s.binary_version(), "0.15.5");
    s.ct.sh_ok("rm /usr/sbin/policy-rc.d").unwrap();

    // A chroot on its own root (tmpfs) with the system's directories and /run bind-mounted.
    s.ct.sh_ok(
        "mkdir -p /ch && mount -t tmpfs tmpfs /ch && \
         for d in usr etc var opt run target tmp root; do mkdir -p /ch/$d && mount --rbind /$d /ch/$d; done && \
         for l in bin sbin lib lib64; do ln -s usr/$l /ch/$l; done && \
         mkdir -p /ch/proc /ch/dev /ch/sys && mount -t proc proc /ch/proc && mount --rbind /dev /ch/dev",
    )
    .unwrap();
    let out = s.ct.exec(&[
        "chroot",
        "/ch",
        &s.helper,
        "hook",
        "deb",
        "postinst",
        "configure",
        "0.15.5-1",
    ]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(t.contains("chroot"), "{t}");
    assert_eq!(s.main_pid(), pid, "the host's server was restarted: {t}");
    assert_eq!(s.binary_version(), "0.15.5");
}

/// Lesser finding: a typo in the helper's config must not make the package impossible to remove.
#[test]
fn a_broken_helper_config_does_not_block_removal() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    s.ct.write_file(
        "/etc/stalwart-upgrade/config.d/50-typo.toml",
        "[timeouts\nstop_secs = 1\n",
    )
    .unwrap();
    let out = s.helper(&["hook", "deb", "prerm", "remove"], &[]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(t.contains("default settings"), "{t}");
    let active = s.ct.exec(&["systemctl", "is-active", "stalwart.service"]);
    assert_ne!(String::from_utf8_lossy(&active.stdout).trim(), "active");
    // Anything else still stops on it (nothing is guessed for an upgrade).
    let out = s.helper(&["hook", "deb", "postinst", "configure", "0.15.5-1"], &[]);
    assert_ne!(code(&out), 0, "{}", text(&out));
}

/// A probe for what a child of the helper can do to the admin's terminal: for its three
/// standard descriptors and /dev/tty, whether each is a terminal and whether TIOCSTI (push a
/// character into the terminal's input, as if the admin typed it) works; one line per attempt
/// appended to /var/tmp/tty-probe, then it runs the real server binary (`REAL`) with its
/// arguments.
const TTY_PROBE: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int log = open("/var/tmp/tty-probe", O_WRONLY | O_CREAT | O_APPEND, 0666);
    char c = '#';
    for (int fd = 0; fd < 3; fd++) {
        int r = ioctl(fd, TIOCSTI, &c);
        dprintf(log, "fd%d isatty=%d tiocsti=%d errno=%d\n", fd, isatty(fd), r, r ? errno : 0);
    }
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    int r = t >= 0 ? ioctl(t, TIOCSTI, &c) : -1;
    dprintf(log, "devtty open=%d tiocsti=%d euid=%d argv1=%s\n", t >= 0, r, geteuid(), argc > 1 ? argv[1] : "");
    close(log);
    execv("/var/tmp/stalwart.real", argv);
    return 127;
}
"#;

/// Issue #23 finding 2: the admin runs the helper in a terminal; a binary the service user
/// controls (install.sh's bin/, theirs) is run for its version. It must find no terminal: none of
/// its descriptors is one, /dev/tty cannot be opened, TIOCSTI fails. The same probe run directly
/// in the terminal (the control) does reach it, so the probe can tell.
#[test]
fn a_child_of_the_helper_cannot_reach_the_admins_terminal() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let probe = testbed::c_program("tty-probe", TTY_PROBE).expect("cc");
    let probe = s.inside(&probe);
    // The service user (owner of bin/ in install.sh's layout) puts the probe in front of the
    // server binary.
    let planted = as_stalwart(
        &s,
        &format!(
            "cp /opt/stalwart/bin/stalwart /var/tmp/stalwart.real && \
             cp {probe} /opt/stalwart/bin/.p && mv /opt/stalwart/bin/.p /opt/stalwart/bin/stalwart"
        ),
    );
    assert!(planted.status.success(), "{}", text(&planted));
    // Control: run in the terminal by root, the probe reaches it.
    s.ct.sh_ok("script -qec '/opt/stalwart/bin/stalwart --version' /dev/null >/dev/null")
        .unwrap();
    let control =
        s.ct.sh_ok("cat /var/tmp/tty-probe && rm /var/tmp/tty-probe")
            .unwrap();
    assert!(
        control.contains("devtty open=1 tiocsti=0"),
        "the control must reach the terminal: {control}"
    );
    // The admin's command in a terminal: `status` reads the running server's version.
    let out =
        s.ct.sh(&format!("script -qec '{} status' /dev/null", s.helper));
    let seen = s.ct.sh_ok("cat /var/tmp/tty-probe").unwrap();
    assert!(
        seen.contains("argv1=--version"),
        "the helper ran the binary for its version: {seen} {}",
        text(&out)
    );
    assert!(
        !seen.contains("isatty=1"),
        "a descriptor was a terminal: {seen}"
    );
    assert!(!seen.contains("tiocsti=0"), "TIOCSTI worked: {seen}");
    assert!(!seen.contains("open=1"), "/dev/tty could be opened: {seen}");
    assert!(!seen.contains("euid=0"), "it ran as root: {seen}");
}

/// Issue #23 finding 4: PID 1 reads the unit's env file as root and follows symlinks. The
/// service user points install.sh's PREFIX/etc/stalwart.env (in its own etc/) at a root-only
/// KEY=VALUE file; after the crossing to 0.16 the unit reads only the packages' env file in a
/// root-owned directory, so nothing of root's reaches the server's environment.
#[test]
fn a_symlinked_env_file_in_the_servers_directory_feeds_nothing_of_roots_to_the_server() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    s.allow("0.16");
    let out = s.upgrade(&release("0.16.17", Fault::None, 0), &[]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    s.ct.write_file("/root/cloud.env", "CLOUD_TOKEN=root-only-s3cret\n")
        .unwrap();
    s.ct.sh_ok("chmod 0600 /root/cloud.env").unwrap();
    let o = as_stalwart(&s, "ln -sf /root/cloud.env /opt/stalwart/etc/stalwart.env");
    assert!(o.status.success(), "{}", text(&o));
    s.ct.sh_ok("systemctl restart stalwart.service").unwrap();
    s.ready();
    let environ =
        s.ct.sh_ok("tr '\\0' '\\n' < /proc/$(systemctl show -P MainPID stalwart.service)/environ")
            .unwrap();
    assert!(
        !environ.contains("root-only-s3cret"),
        "a root-only file reached the server's environment: {environ}"
    );
    // The env file the unit does read: root's directory, the carried admin in it.
    assert!(environ.contains("STALWART_RECOVERY_ADMIN="), "{environ}");
    assert_eq!(
        s.ct.sh_ok("stat -c '%U %a' /etc/stalwart-upgrade")
            .unwrap()
            .trim(),
        "root 755"
    );
}

/// Issue #23 finding 5: the service user points the data store at /var/lib/dpkg. Root must not
/// snapshot (and on a rollback, restore over) another part of the system: the upgrade is
/// refused before anything is stopped, naming the setting, and dpkg's database is untouched.
#[test]
fn a_store_path_outside_the_servers_data_is_refused_before_downtime() {
    let s = Scenario::new(&release("0.15.5", Fault::None, 0));
    let pid = s.main_pid();
    let dpkg_before = fingerprint(&s, "/var/lib/dpkg/info/dpkg.list");
    let edit = as_stalwart(
        &s,
        "sed -i 's#/opt/stalwart/data#/var/lib/dpkg#' /opt/stalwart/etc/config.toml && grep -q /var/lib/dpkg /opt/stalwart/etc/config.toml",
    );
    assert!(edit.status.success(), "{}", text(&edit));
    let out = s.upgrade(&release("0.15.6", Fault::None, 0), &[]);
    let t = text(&out);
    assert!(matches!(code(&out), 3 | 4), "refused before downtime: {t}");
    assert!(
        t.contains("/var/lib/dpkg") && t.contains("store_paths"),
        "{t}"
    );
    assert!(t.contains("nothing was stopped"), "{t}");
    assert_eq!(s.main_pid(), pid, "the server was not stopped: {t}");
    assert_eq!(s.binary_version(), "0.15.5");
    assert_eq!(fingerprint(&s, "/var/lib/dpkg/info/dpkg.list"), dpkg_before);
    let snaps = s.helper(&["snapshot", "create"], &[]);
    assert_ne!(code(&snaps), 0, "{}", text(&snaps));
    assert!(text(&snaps).contains("store_paths"), "{}", text(&snaps));
}
