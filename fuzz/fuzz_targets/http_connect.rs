//! HTTP CONNECT heads come straight from whoever connects to `sockit proxy`: judging them
//! must never panic, a complete head must lie within the bytes given and the bound, an
//! input over the bound must be refused (not buffered forever), and every prefix of a
//! head that parses must be "need more" (a head in pieces is read, not refused).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockit::proxy::http::{MAX_HEAD, parse_head};
use sockit::proxy::socks::Parsed;

fuzz_target!(|data: &[u8]| {
    // A small bound as well as the default one, so the flood path is reached.
    for bound in [64, MAX_HEAD] {
        match parse_head(data, bound) {
            Parsed::Complete { len, value } => {
                assert!(len > 0 && len <= data.len() && len <= bound, "head length {len}");
                assert_eq!(
                    parse_head(&data[..len], bound),
                    Parsed::Complete { len, value }
                );
                for cut in 0..len {
                    let verdict = parse_head(&data[..cut], bound);
                    assert!(
                        verdict == Parsed::NeedMore,
                        "prefix of {cut} bytes of a valid head judged {verdict:?}"
                    );
                }
            }
            Parsed::NeedMore => assert!(data.len() < bound, "{} bytes buffered past the bound {bound}", data.len()),
            Parsed::Invalid(_) => {}
        }
    }
});
