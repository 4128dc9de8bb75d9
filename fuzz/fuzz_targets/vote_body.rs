//! The form and JSON vote parsers take any request body. They must never
//! panic, and anything they accept is `a` or `b`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for parsed in [
        voteswarm::capture::parse_form(data),
        voteswarm::capture::parse_json(data),
    ] {
        if let Ok(option) = parsed {
            assert!(matches!(option.as_str(), "a" | "b"));
        }
    }
});
