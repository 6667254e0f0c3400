//! `stalwart_upgrade::os::systemd` against a real systemd: each test boots a container and drives its
//! systemd from the HOST over the container's system bus.
//! Needs root and systemd-nspawn; fails otherwise (TESTBED_SKIP=1 skips explicitly, loudly).

use stalwart_upgrade::os::systemd::{
    ActiveState, JobResult, LoadState, ServiceState, Systemd, SystemdError,
};
use std::time::{Duration, Instant};
use testbed::Container;

fn boot() -> (Container, Systemd) {
    let ct = Container::boot().expect("boot a container");
    let sys = Systemd::connect_address(&ct.bus_address()).expect("connect to the container's bus");
    (ct, sys)
}

fn add_unit(ct: &Container, name: &str, body: &str) {
    ct.write_file(&format!("/etc/systemd/system/{name}"), body)
        .unwrap();
    ct.exec_ok(&["systemctl", "daemon-reload"]).unwrap();
}

#[test]
fn start_and_stop_a_service_from_the_host() {
    if testbed::skip_requested("start_and_stop_a_service_from_the_host") {
        return;
    }
    let (ct, sys) = boot();
    add_unit(
        &ct,
        "sleeper.service",
        "[Service]\nType=simple\nExecStart=/bin/sleep infinity\n",
    );
    let before = sys.state("sleeper.service").unwrap();
    assert_eq!(before.load_state, LoadState::Loaded);
    assert_eq!(before.active_state, ActiveState::Inactive);
    assert_eq!(before.main_pid, 0);
    assert_eq!(before.fragment_path, "/etc/systemd/system/sleeper.service");

    let t = Instant::now();
    sys.start("sleeper.service", Duration::from_secs(10))
        .unwrap();
    eprintln!("start took {:?}", t.elapsed());
    let running = sys.state("sleeper.service").unwrap();
    assert_eq!(running.active_state, ActiveState::Active);
    assert_eq!(running.sub_state, ServiceState::Running);
    assert!(running.main_pid > 0);
    assert_eq!(running.invocation_id.len(), 32, "{running:?}");
    // The same PID systemctl shows inside.
    let pid = ct
        .exec_ok(&["systemctl", "show", "-P", "MainPID", "sleeper.service"])
        .unwrap();
    assert_eq!(pid.trim(), running.main_pid.to_string());

    // Starting an active unit again is a no-op job that succeeds.
    sys.start("sleeper.service", Duration::from_secs(10))
        .unwrap();

    let t = Instant::now();
    sys.stop("sleeper.service", Duration::from_secs(10))
        .unwrap();
    eprintln!("stop took {:?}", t.elapsed());
    let stopped = sys.state("sleeper.service").unwrap();
    assert_eq!(stopped.active_state, ActiveState::Inactive);
    assert_eq!(stopped.main_pid, 0);
    // Stopping an inactive unit succeeds too.
    sys.stop("sleeper.service", Duration::from_secs(10))
        .unwrap();

    // A unit name that needs escaping in its object path (- and @ and \x2d).
    add_unit(
        &ct,
        "odd-name@x\\x2dy.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    sys.start("odd-name@x\\x2dy.service", Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        sys.state("odd-name@x\\x2dy.service").unwrap().active_state,
        ActiveState::Active
    );
    sys.stop("odd-name@x\\x2dy.service", Duration::from_secs(10))
        .unwrap();
}

#[test]
fn a_stop_that_hangs_ends_in_timeout_not_a_hang() {
    if testbed::skip_requested("a_stop_that_hangs_ends_in_timeout_not_a_hang") {
        return;
    }
    let (ct, sys) = boot();
    add_unit(
        &ct,
        "stubborn.service",
        "[Service]\nType=exec\nKillMode=process\nKillSignal=SIGINT\nTimeoutStopSec=60\n\
         ExecStart=/bin/sh -c 'trap \"\" TERM INT; while :; do sleep 1; done'\n",
    );
    sys.start("stubborn.service", Duration::from_secs(10))
        .unwrap();
    let t = Instant::now();
    let err = sys
        .stop("stubborn.service", Duration::from_secs(3))
        .unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(err, SystemdError::Timeout { ref unit, op: "stop", secs: 3 } if unit == "stubborn.service"),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert!(err
        .to_string()
        .contains("systemctl status stubborn.service"));
    // systemd is still stopping it (its own 60 s timeout): state says so.
    let st = sys.state("stubborn.service").unwrap();
    assert_eq!(st.active_state, ActiveState::Deactivating, "{st:?}");
    // The Systemd handle is still usable afterwards.
    add_unit(
        &ct,
        "after.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    sys.start("after.service", Duration::from_secs(10)).unwrap();
    sys.stop("after.service", Duration::from_secs(10)).unwrap();
    // Don't make the container's poweroff wait for systemd's 60 s.
    ct.exec_ok(&["systemctl", "kill", "-s", "KILL", "stubborn.service"])
        .unwrap();
}

#[test]
fn masked_and_missing_units_are_not_loaded() {
    if testbed::skip_requested("masked_and_missing_units_are_not_loaded") {
        return;
    }
    let (ct, sys) = boot();
    // A vendor unit (as a package ships it), masked by the admin.
    ct.write_file(
        "/usr/lib/systemd/system/hidden.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    )
    .unwrap();
    ct.exec_ok(&["systemctl", "mask", "hidden.service"])
        .unwrap();
    ct.exec_ok(&["systemctl", "daemon-reload"]).unwrap();

    let err = sys.state("hidden.service").unwrap_err();
    assert!(
        matches!(err, SystemdError::NotLoaded { ref load_state, .. } if *load_state == LoadState::Masked),
        "{err:?}"
    );
    assert!(err.to_string().contains("systemctl unmask hidden.service"));
    let err = sys
        .start("hidden.service", Duration::from_secs(5))
        .unwrap_err();
    assert!(
        matches!(err, SystemdError::NotLoaded { ref load_state, .. } if *load_state == LoadState::Masked),
        "{err:?}"
    );

    for op in ["state", "start", "stop"] {
        let r = match op {
            "state" => sys.state("no-such-thing.service").map(|_| ()),
            "start" => sys.start("no-such-thing.service", Duration::from_secs(5)),
            _ => sys.stop("no-such-thing.service", Duration::from_secs(5)),
        };
        let err = r.unwrap_err();
        assert!(
            matches!(err, SystemdError::NotLoaded { ref unit, ref load_state } if unit == "no-such-thing.service" && *load_state == LoadState::NotFound),
            "{op}: {err:?}"
        );
    }

    // An invalid unit name is a typed call error, not a panic.
    let err = sys.state("not a unit name").unwrap_err();
    assert!(matches!(err, SystemdError::Call { .. }), "{err:?}");
}

#[test]
fn units_that_fail_to_start() {
    if testbed::skip_requested("units_that_fail_to_start") {
        return;
    }
    let (ct, sys) = boot();
    // Type=simple: the start job is done at fork; the failure shows in the state afterwards.
    add_unit(&ct, "falls.service", "[Service]\nExecStart=/bin/false\n");
    sys.start("falls.service", Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = sys.state("falls.service").unwrap();
        if st.active_state == ActiveState::Failed || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st.active_state, ActiveState::Failed, "{st:?}");
    assert_eq!(st.sub_state, ServiceState::Failed);
    assert_eq!(st.exec_main_status, 1);
    assert_eq!(st.main_pid, 0);
    // Stopping a failed unit is fine (nothing runs).
    sys.stop("falls.service", Duration::from_secs(5)).unwrap();

    // Type=exec (or oneshot): the job itself fails -> JobFailed with result 'failed'.
    add_unit(
        &ct,
        "falls-oneshot.service",
        "[Service]\nType=oneshot\nExecStart=/bin/false\n",
    );
    let err = sys
        .start("falls-oneshot.service", Duration::from_secs(10))
        .unwrap_err();
    assert!(
        matches!(err, SystemdError::JobFailed { op: "start", ref result, .. } if *result == JobResult::Failed),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .contains("journalctl -u falls-oneshot.service"));
    let st = sys.state("falls-oneshot.service").unwrap();
    assert_eq!(st.active_state, ActiveState::Failed);
    assert_eq!(st.exec_main_status, 1);

    // A missing ExecStart binary with Type=exec: the job fails.
    add_unit(
        &ct,
        "nobinary.service",
        "[Service]\nType=exec\nExecStart=/nonexistent/bin\n",
    );
    let err = sys
        .start("nobinary.service", Duration::from_secs(10))
        .unwrap_err();
    assert!(
        matches!(err, SystemdError::JobFailed { ref result, .. } if *result == JobResult::Failed),
        "{err:?}"
    );

    // A dependency that fails: result 'dependency'.
    add_unit(
        &ct,
        "needs-broken.service",
        "[Unit]\nRequires=falls-oneshot.service\nAfter=falls-oneshot.service\n\
         [Service]\nExecStart=/bin/sleep infinity\n",
    );
    let err = sys
        .start("needs-broken.service", Duration::from_secs(10))
        .unwrap_err();
    assert!(
        matches!(err, SystemdError::JobFailed { ref result, .. } if *result == JobResult::Dependency),
        "{err:?}"
    );

    // A Condition that does not hold (like stalwart.service without its config.toml).
    add_unit(
        &ct,
        "conditional.service",
        "[Unit]\nConditionPathExists=/nonexistent/config.toml\n\
         [Service]\nExecStart=/bin/sleep infinity\n",
    );
    let err = sys
        .start("conditional.service", Duration::from_secs(10))
        .unwrap_err();
    assert!(
        matches!(err, SystemdError::JobFailed { ref result, .. } if *result == JobResult::ConditionFailed),
        "{err:?}"
    );

    // A start that does not finish in time (ExecStartPre sleeps): Timeout, bounded.
    add_unit(
        &ct,
        "slowstart.service",
        "[Service]\nType=exec\nExecStartPre=/bin/sleep 30\nExecStart=/bin/sleep infinity\n",
    );
    let t = Instant::now();
    let err = sys
        .start("slowstart.service", Duration::from_secs(2))
        .unwrap_err();
    assert!(
        matches!(err, SystemdError::Timeout { op: "start", .. }),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // Its job is still queued; a stop replaces it, and the start job reports 'canceled'.
    sys.stop("slowstart.service", Duration::from_secs(10))
        .unwrap();
}

#[test]
fn the_stalwart_unit_from_install_sh() {
    if testbed::skip_requested("the_stalwart_unit_from_install_sh") {
        return;
    }
    let (ct, sys) = boot();
    // The unit only, with a sleep in place of the server (the stand-in has its own tests).
    ct.exec_ok(&[
        "useradd",
        "stalwart",
        "-s",
        "/usr/sbin/nologin",
        "-M",
        "-r",
        "-U",
    ])
    .unwrap();
    ct.write_file(
        "/opt/stalwart/bin/stalwart",
        "#!/bin/sh\nexec sleep infinity\n",
    )
    .unwrap();
    ct.exec_ok(&["chmod", "0755", "/opt/stalwart/bin/stalwart"])
        .unwrap();
    add_unit(&ct, "stalwart.service", testbed::stalwart::UNIT_FILE);
    // No config.toml yet: ConditionPathExists fails.
    let err = sys
        .start("stalwart.service", Duration::from_secs(10))
        .unwrap_err();
    assert!(matches!(err, SystemdError::JobFailed { .. }), "{err:?}");
    ct.write_file("/opt/stalwart/etc/config.toml", "").unwrap();
    sys.start("stalwart.service", Duration::from_secs(10))
        .unwrap();
    let st = sys.state("stalwart.service").unwrap();
    assert_eq!(st.active_state, ActiveState::Active);
    assert_eq!(st.unit_file_state, "disabled");
    let user = ct
        .exec_ok(&["ps", "-o", "user=", "-p", &st.main_pid.to_string()])
        .unwrap();
    assert_eq!(user.trim(), "stalwart");
    // KillSignal=SIGINT: sh's exec'd sleep dies of SIGINT.
    sys.stop("stalwart.service", Duration::from_secs(10))
        .unwrap();
    let st = sys.state("stalwart.service").unwrap();
    assert_eq!((st.active_state, st.main_pid), (ActiveState::Inactive, 0));
}

#[test]
fn many_jobs_in_a_row_and_in_parallel_each_get_their_own_result() {
    if testbed::skip_requested("many_jobs_in_a_row_and_in_parallel_each_get_their_own_result") {
        return;
    }
    let (ct, sys) = boot();
    for i in 0..4 {
        add_unit(
            &ct,
            &format!("worker{i}.service"),
            "[Service]\nType=exec\nExecStart=/bin/sleep infinity\n",
        );
    }
    // Back to back: a JobRemoved is never missed (each wait is bounded, so a miss would be a
    // Timeout here, not a hang).
    let t = Instant::now();
    for _ in 0..25 {
        sys.start("worker0.service", Duration::from_secs(5))
            .unwrap();
        sys.stop("worker0.service", Duration::from_secs(5)).unwrap();
    }
    eprintln!("25 start+stop cycles in {:?}", t.elapsed());
    // Concurrent jobs on one connection: each waiter matches its own job path.
    let sys = std::sync::Arc::new(sys);
    let handles: Vec<_> = (1..4)
        .map(|i| {
            let sys = sys.clone();
            std::thread::spawn(move || {
                let unit = format!("worker{i}.service");
                for _ in 0..10 {
                    sys.start(&unit, Duration::from_secs(10)).unwrap();
                    assert_eq!(sys.state(&unit).unwrap().active_state, ActiveState::Active);
                    sys.stop(&unit, Duration::from_secs(10)).unwrap();
                    assert_eq!(sys.state(&unit).unwrap().main_pid, 0);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn connect_honours_dbus_system_bus_address() {
    if testbed::skip_requested("connect_honours_dbus_system_bus_address") {
        return;
    }
    let ct = Container::boot().expect("boot");
    add_unit(
        &ct,
        "only-in-this-container.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    // Only this test in this binary uses connect(); the others pass the address explicitly.
    std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", ct.bus_address());
    let sys = Systemd::connect().expect("connect via DBUS_SYSTEM_BUS_ADDRESS");
    std::env::remove_var("DBUS_SYSTEM_BUS_ADDRESS");
    let st = sys.state("only-in-this-container.service").unwrap();
    assert_eq!(st.load_state, LoadState::Loaded);
    assert_eq!(sys.address(), ct.bus_address());
}
