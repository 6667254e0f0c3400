#![no_main]
//! The version parsers on arbitrary text: never panic; a parsed version re-parses to itself.
use libfuzzer_sys::fuzz_target;
use stalwart_upgrade::version::{parse_line, Version};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for v in [
        Version::parse_binary_output(s),
        Version::parse_dpkg(s),
        Version::parse_rpm(s),
    ]
    .into_iter()
    .flatten()
    {
        let shown = v.to_string();
        assert_eq!(
            Version::parse_binary_output(&shown).as_ref(),
            Ok(&v),
            "{shown}"
        );
        assert_eq!(parse_line(&shown), Ok(v.line()));
    }
    if let Ok(line) = parse_line(s) {
        assert_eq!(parse_line(&line).as_ref(), Ok(&line));
    }
});
