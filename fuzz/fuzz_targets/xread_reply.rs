//! The worker's own XREADGROUP reply decoder reads whatever the socket
//! gives it, in whatever pieces. It must never panic, and a reply it
//! accepts must decode the same however it arrived.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voteswarm::queue::reply::scan_and_decode;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, reply)) = data.split_first() else {
        return;
    };
    let whole = scan_and_decode(reply, reply.len());
    let pieces = scan_and_decode(reply, usize::from(chunk % 16) + 1);
    match (whole, pieces) {
        (Some(Ok(a)), Some(Ok(b))) => assert_eq!(a, b),
        (None, None) | (Some(Err(_)), Some(Err(_))) => {}
        (a, b) => panic!(
            "whole and in pieces differ: {:?} / {:?}",
            a.map(|r| r.map(|e| e.len()).map_err(|e| e.to_string())),
            b.map(|r| r.map(|e| e.len()).map_err(|e| e.to_string()))
        ),
    }
});
