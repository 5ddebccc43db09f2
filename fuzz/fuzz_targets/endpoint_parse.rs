//! Endpoint strings come from users and config: parsing must never panic, and whatever
//! parses must print back to a string that parses to the same endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockit::Endpoint;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(endpoint) = text.parse::<Endpoint>() {
        let printed = endpoint.to_string();
        let again: Endpoint = match printed.parse() {
            Ok(e) => e,
            Err(e) => panic!("{text:?} parsed, but its display {printed:?} does not: {e}"),
        };
        assert_eq!(endpoint, again, "round trip changed {text:?}");
    }
});
