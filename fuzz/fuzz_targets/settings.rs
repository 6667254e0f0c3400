#![no_main]
//! `config::Settings::parse` on arbitrary text: never a panic; accepted timeouts fit the clock.
use libfuzzer_sys::fuzz_target;
use stalwart_upgrade::config::Settings;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = Settings::parse(text) {
        let t = &s.timeouts;
        for secs in [
            t.stop_secs,
            t.start_secs,
            t.ready_secs,
            t.settle_secs,
            t.lock_wait_secs,
        ] {
            assert!(Instant::now()
                .checked_add(Duration::from_secs(secs))
                .is_some());
        }
    }
});
