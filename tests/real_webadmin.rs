//! The real-server tier: `stalwart-upgrade webadmin refresh` against upstream's real servers
//! with a local (`file://`) bundle: 0.15 `webadmin.resource`, 0.16 the Application's
//! `resourceUrl`; afterwards `/admin` serves the new bundle. A refresh that leaves no bundle is
//! reported as a failure (0.16 itself reports success then).

mod real_common;
use real_common::*;

#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn real_0_15_web_admin_refresh_serves_the_new_bundle() {
    let test = "real_0_15_web_admin_refresh_serves_the_new_bundle";
    let Some(rel) = testbed::real::newest("0.15") else {
        testbed::real::skip(test, "no 0.15 release in the real-server tier");
        return;
    };
    let Some((rels, backend)) = releases(test, &[&rel.version.clone()]) else {
        return;
    };
    let s = RealScenario::new(rels[0], backend);
    // config.toml names file:///opt/stalwart/webadmin.zip (testbed::real_server).
    for marker in ["webui-v1", "webui-v2"] {
        s.webui_zip("/opt/stalwart/webadmin.zip", marker);
        let out = s.helper(&["webadmin", "refresh"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let (st, body) = s.get("/admin");
        assert_eq!(st, 200, "{body}");
        assert!(
            body.contains(marker),
            "/admin does not serve {marker}: {body}"
        );
    }
    // A bundle that cannot be read: the server refuses (500) and keeps the old one.
    s.ct.exec_ok(&["rm", "/opt/stalwart/webadmin.zip"]).unwrap();
    let out = s.helper(&["webadmin", "refresh"]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("HTTP 500"), "{}", text(&out));
    assert!(s.get("/admin").1.contains("webui-v2"));
}

#[test]
#[cfg_attr(
    not(real_bins),
    ignore = "needs the real Stalwart binaries: ../shared/real-stalwart or STALWART_REAL_BINS"
)]
fn real_0_16_web_admin_refresh_serves_the_new_bundle_and_a_lost_bundle_is_a_failure() {
    let test = "real_0_16_web_admin_refresh_serves_the_new_bundle_and_a_lost_bundle_is_a_failure";
    let Some(rel) = testbed::real::newest("0.16") else {
        testbed::real::skip(test, "no 0.16 release in the real-server tier");
        return;
    };
    let Some((rels, backend)) = releases(test, &[&rel.version.clone()]) else {
        return;
    };
    let s = RealScenario::new(rels[0], backend);
    let j = s.server.jmap();
    let apps = s.ct.in_netns(|| j.applications()).expect("applications");
    assert!(!apps.is_empty(), "no Application objects");
    for app in &apps {
        let id = app["id"].as_str().expect("id").to_string();
        s.ct.in_netns(|| {
            j.update(
                "Application",
                &id,
                serde_json::json!({"resourceUrl": "file:///opt/stalwart/webui.zip"}),
            )
        })
        .expect("set resourceUrl");
    }
    for marker in ["webui-v1", "webui-v2"] {
        s.webui_zip("/opt/stalwart/webui.zip", marker);
        let out = s.helper(&["webadmin", "refresh"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let (st, body) = s.get("/admin/");
        assert_eq!(st, 200, "{body}");
        assert!(
            body.contains(marker),
            "/admin/ does not serve {marker}: {body}"
        );
    }
    // UpdateApps with a bundle that is gone: the real server answers "created" and /admin/ 404;
    // the helper says so instead of reporting success.
    s.ct.exec_ok(&["rm", "/opt/stalwart/webui.zip"]).unwrap();
    let out = s.helper(&["webadmin", "refresh"]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("answers HTTP 404"), "{}", text(&out));
    assert_eq!(s.get("/admin/").0, 404);
}
