//! PROXY protocol headers come straight from the network (or whoever connects to a port
//! behind `--proxy-protocol`): judging them must never panic, a complete header must lie
//! within the bytes given, and every prefix of a header that parses must be judged
//! "need more", never "invalid", or a balancer whose header arrives in pieces would be
//! turned away.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockit::transport::proxy::{Parsed, parse};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Parsed::Complete { len, origin } => {
            assert!(len > 0 && len <= data.len(), "header length {len} outside the input");
            // The header alone parses the same.
            assert_eq!(parse(&data[..len]), Parsed::Complete { len, origin });
            for cut in 0..len {
                let verdict = parse(&data[..cut]);
                assert!(
                    matches!(verdict, Parsed::NeedMore | Parsed::NeedTotal(_)),
                    "prefix of {cut} bytes of a valid header judged {verdict:?}"
                );
            }
        }
        Parsed::NeedTotal(total) => assert!(total > data.len(), "asked for {total} bytes, has {}", data.len()),
        Parsed::NeedMore | Parsed::Invalid(_) => {}
    }
});
