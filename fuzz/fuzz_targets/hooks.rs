#![no_main]
//! `hooks::deb_action` / `rpm_action` on arbitrary words: a defined action, never a panic.
use libfuzzer_sys::fuzz_target;
use stalwart_upgrade::hooks::{deb_action, rpm_action, Action};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let words: Vec<String> = text.split(' ').map(str::to_string).collect();
    let a = deb_action(&words[0], &words[1..]);
    if !["preinst", "postinst", "prerm", "postrm"].contains(&words[0].as_str()) {
        assert!(matches!(a, Action::Unknown { .. }));
    }
    let get = |i: usize| words.get(i).map(String::as_str);
    let _ = rpm_action(&words[0], get(1).unwrap_or(""), get(2));
});
