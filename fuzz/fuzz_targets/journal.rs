#![no_main]
//! `journal::parse` on arbitrary bytes: Ok (a valid prefix) or Corrupt, never a panic; every cut
//! of an accepted journal at a line end is a prefix of it; `Summary::of` never panics.
use libfuzzer_sys::fuzz_target;
use stalwart_upgrade::journal::{parse, JournalError, Record, Step, Summary};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("/var/lib/stalwart-upgrade/journal");
    match parse(p, data) {
        Ok(recs) => {
            if let Some(first) = recs.first() {
                assert!(matches!(first, Record::Begin { .. }));
            }
            let s = Summary::of(&recs);
            let _ = (s.downtime_ms(), s.last_started());
            for step in Step::ALL {
                let _ = (s.started(step), s.done(step), s.note(step));
            }
            for (i, _) in data.iter().enumerate().filter(|(_, &b)| b == b'\n') {
                let cut = parse(p, &data[..=i]).expect("a prefix of an accepted journal");
                assert_eq!(&cut[..], &recs[..cut.len()]);
            }
        }
        Err(JournalError::Corrupt { .. }) => {}
        Err(e) => panic!("not Corrupt: {e:?}"),
    }
});
