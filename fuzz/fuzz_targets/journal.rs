#![no_main]
//! `journal::parse` on arbitrary bytes: Ok (a valid prefix), Corrupt, or NewerFormat (a begin
//! record naming a newer format), never a panic; every cut of an accepted journal at a line end
//! is a prefix of it; `Summary::of` never panics. `journal::salvage` (history's reader of damaged
//! journals) never panics either, and agrees with `parse` on what it accepts.
use libfuzzer_sys::fuzz_target;
use stalwart_upgrade::journal::{parse, salvage, JournalError, Record, Step, Summary};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("/var/lib/stalwart-upgrade/journal");
    let parsed = match parse(p, data) {
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
            Some(recs)
        }
        Err(JournalError::Corrupt { .. }) => None,
        Err(JournalError::NewerFormat { format, known, .. }) => {
            assert!(format > known);
            None
        }
        Err(e) => panic!("not Corrupt: {e:?}"),
    };
    match salvage(p, data) {
        Ok(s) => {
            if let Some(first) = s.records.first() {
                assert!(matches!(first, Record::Begin { .. }));
            }
            let s2 = Summary::of(&s.records);
            let _ = (s2.downtime_ms(), s2.last_started());
            if let Some(recs) = parsed {
                assert_eq!(s.records, recs);
                assert!(s.damaged.is_empty());
            }
        }
        Err(JournalError::NewerFormat { .. }) => {}
        Err(e) => panic!("salvage: {e:?}"),
    }
});
