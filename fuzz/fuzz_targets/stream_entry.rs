//! The stream entry decoder takes whatever is in a Redis Stream. It must
//! never panic, and what it accepts must re-encode to an equal vote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voteswarm::vote::Vote;

fuzz_target!(|data: &[u8]| {
    // Fields are separated by 0xff, names from values by 0xfe.
    let fields: Vec<(&[u8], &[u8])> = data
        .split(|b| *b == 0xff)
        .map(|f| match f.iter().position(|b| *b == 0xfe) {
            Some(i) => (&f[..i], &f[i + 1..]),
            None => (f, &[][..]),
        })
        .collect();
    if let Ok(vote) = Vote::from_fields(fields.iter().copied()) {
        let again = vote.to_fields();
        let back = Vote::from_fields(again.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        assert_eq!(back, Ok(vote));
    }
});
