//! The voter cookie decoder takes whatever a client sends in `Cookie:`.
//! It must never panic, and what it accepts must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voteswarm::cookie::VoterCookie;

fuzz_target!(|data: &[u8]| {
    let key = voteswarm::capture::settings::cookie_key_from("fuzz-key-fuzz-key-fuzz-key-fuzz-key!")
        .expect("a long key");
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = key.key();
    if let Some(c) = VoterCookie::decode(&key, text) {
        assert_eq!(VoterCookie::decode(&key, &c.encode(&key)), Some(c));
    }
});
