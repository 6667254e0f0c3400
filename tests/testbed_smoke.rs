//! The testbed itself: containers boot in parallel, each with its own systemd, and a container
//! dropped while a test panics leaves no mount and no cgroup behind.
//! Needs root and systemd-nspawn; fails otherwise (TESTBED_SKIP=1 skips explicitly, loudly).

use std::path::Path;
use std::time::Instant;
use testbed::Container;

fn leftovers(name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mountinfo.lines().filter(|l| l.contains(name)) {
        found.push(format!("mount: {line}"));
    }
    for h in ["systemd", "unified", ""] {
        let p = Path::new("/sys/fs/cgroup")
            .join(h)
            .join(format!("ct-{name}"));
        if p.exists() {
            found.push(format!("cgroup: {}", p.display()));
        }
    }
    let dir = Path::new("/var/tmp/stalwart-testbed").join(name);
    if std::env::var_os("TESTBED_TMP").is_none() && dir.exists() {
        found.push(format!("state dir: {}", dir.display()));
    }
    found
}

#[test]
fn two_containers_boot_in_parallel_each_with_its_own_systemd() {
    if testbed::skip_requested("two_containers_boot_in_parallel_each_with_its_own_systemd") {
        return;
    }
    // Build the rootfs first so the boot times below are boot times.
    let t = Instant::now();
    testbed::rootfs().expect("rootfs");
    eprintln!("rootfs ready in {:.2} s", t.elapsed().as_secs_f64());

    let handles: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(|| Container::boot().expect("boot")))
        .collect();
    let cts: Vec<Container> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_ne!(cts[0].name(), cts[1].name());
    assert_ne!(cts[0].bus_address(), cts[1].bus_address());
    for ct in &cts {
        eprintln!(
            "{} booted to running in {:.2} s",
            ct.name(),
            ct.boot_duration().as_secs_f64()
        );
        let state = ct.exec_ok(&["systemctl", "is-system-running"]).unwrap();
        assert_eq!(state.trim(), "running");
        // Its own hostname, its own PID 1, its own machine.
        let host = ct.exec_ok(&["hostname"]).unwrap();
        assert_eq!(host.trim(), ct.name());
        let comm = ct.exec_ok(&["cat", "/proc/1/comm"]).unwrap();
        assert_eq!(comm.trim(), "systemd");
        // A file written from the host through path() is seen inside, and only there.
        std::fs::write(ct.path("/etc/testbed-marker"), ct.name()).unwrap();
        // A transient unit's exit code comes back.
        let out = ct.run_unit(&["sh", "-c", "echo hi; exit 3"]);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
        // The target dir is there, read-only.
        ct.exec_ok(&["test", "-d", "/target/debug"]).unwrap();
        assert!(!ct.exec(&["touch", "/target/x"]).status.success());
    }
    for ct in &cts {
        let marker = ct.exec_ok(&["cat", "/etc/testbed-marker"]).unwrap();
        assert_eq!(marker, ct.name());
    }
    let names: Vec<String> = cts.iter().map(|c| c.name().to_string()).collect();
    for ct in cts {
        let halted = ct.stop().expect("clean stop");
        eprintln!(
            "clean stop in {:.2} s",
            halted.stop_duration().as_secs_f64()
        );
    }
    for n in names {
        assert_eq!(leftovers(&n), Vec::<String>::new());
    }
}

#[test]
fn a_container_dropped_during_a_panic_leaves_nothing_behind() {
    if testbed::skip_requested("a_container_dropped_during_a_panic_leaves_nothing_behind") {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::panic::catch_unwind(move || {
        let ct = Container::boot().expect("boot");
        tx.send(ct.name().to_string()).unwrap();
        ct.exec_ok(&["sleep", "0.1"]).unwrap();
        panic!("the scenario failed");
    });
    assert!(result.is_err());
    let name = rx.recv().unwrap();
    assert_eq!(leftovers(&name), Vec::<String>::new());
}

#[test]
fn crash_keeps_the_disk_and_boot_again_sees_it() {
    if testbed::skip_requested("crash_keeps_the_disk_and_boot_again_sees_it") {
        return;
    }
    let ct = Container::boot().expect("boot");
    let first = ct.name().to_string();
    ct.sh_ok("echo before-crash > /var/lib/marker && sync")
        .unwrap();
    let halted = ct.crash();
    assert!(halted.upper().unwrap().join("var/lib/marker").exists());
    let ct = halted.boot_again().expect("boot again");
    assert_ne!(ct.name(), first);
    assert_eq!(
        ct.exec_ok(&["cat", "/var/lib/marker"]).unwrap().trim(),
        "before-crash"
    );
    let second = ct.name().to_string();
    drop(ct);
    assert_eq!(leftovers(&first), Vec::<String>::new());
    assert_eq!(leftovers(&second), Vec::<String>::new());
}

#[test]
fn stop_is_a_clean_shutdown() {
    if testbed::skip_requested("stop_is_a_clean_shutdown") {
        return;
    }
    let ct = Container::boot().expect("boot");
    let halted = ct.stop().expect("clean stop");
    let log = halted.console_log();
    assert!(
        log.contains("Reached target") && (log.contains("Power-Off") || log.contains("Halt")),
        "no shutdown in the console log:\n{log}"
    );
}

#[test]
fn install_sh_style_server_install_becomes_ready() {
    if testbed::skip_requested("install_sh_style_server_install_becomes_ready") {
        return;
    }
    use testbed::stalwart::{self, ServerLayout};
    let release = testbed::standin_release("0.15.5", testbed::Fault::None, 50);
    for layout in [ServerLayout::rocksdb(), ServerLayout::sqlite()] {
        let ct = Container::boot().expect("boot");
        stalwart::install_server(&ct, &release, layout).expect("install");
        let took = stalwart::wait_ready(&ct, std::time::Duration::from_secs(30)).expect("ready");
        eprintln!("stand-in ready {:.2} s after start", took.as_secs_f64());
        let version = ct.exec_ok(&[stalwart::BINARY, "--version"]).unwrap();
        assert_eq!(version.trim(), "0.15.5");
        let owner = ct
            .exec_ok(&[
                "stat",
                "-c",
                "%U:%G %a",
                "/opt/stalwart/data",
                stalwart::BINARY,
            ])
            .unwrap();
        assert_eq!(owner, "stalwart:stalwart 755\nstalwart:stalwart 755\n");
        let enabled = ct
            .exec_ok(&["systemctl", "is-enabled", "stalwart"])
            .unwrap();
        assert_eq!(enabled.trim(), "enabled");
        let d1 = stalwart::digest(&ct).expect("digest");
        assert!(!d1.is_empty());
        // The release is visible inside at /target/...
        let inside = ct
            .target_path(&release)
            .expect("release under the target dir");
        ct.exec_ok(&["test", "-x", &inside]).unwrap();
    }
}

#[test]
fn a_degraded_boot_fails_naming_the_unit_and_cleans_up() {
    if testbed::skip_requested("a_degraded_boot_fails_naming_the_unit_and_cleans_up") {
        return;
    }
    let ct = Container::boot().expect("boot");
    ct.write_file(
        "/etc/systemd/system/breaks-boot.service",
        "[Service]\nType=oneshot\nExecStart=/bin/false\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    ct.exec_ok(&["systemctl", "enable", "breaks-boot.service"])
        .unwrap();
    let halted = ct.stop().expect("stop");
    let dir = halted.upper().unwrap().parent().unwrap().to_path_buf();
    let err = match halted.boot_again() {
        Ok(ct) => panic!("{} booted although a unit failed", ct.name()),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("{err}");
    assert!(
        err.contains("degraded") && err.contains("breaks-boot.service"),
        "{err}"
    );
    // The failed boot tore itself down.
    assert!(!dir.exists(), "{} left behind", dir.display());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(dir.to_str().unwrap()));
}
