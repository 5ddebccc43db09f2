//! SOCKS messages come straight from whoever connects to `sockit proxy`: judging them must
//! never panic, a complete message must lie within the bytes given, and every prefix of a
//! message that parses must be "need more", never an error, or a client whose request
//! arrives in pieces would be refused. The first byte picks the parser, as the proxy does
//! (with the greeting, the password sub-negotiation and the UDP header tried on every input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockit::proxy::socks::{
    Parsed, parse_greeting, parse_request, parse_socks4, parse_udp_datagram, parse_user_pass,
};

/// Checks the framing contract of one parser on `data`.
fn check<T: PartialEq + std::fmt::Debug>(data: &[u8], parse: fn(&[u8]) -> Parsed<T>) {
    let Parsed::Complete { len, value } = parse(data) else {
        return;
    };
    assert!(len > 0 && len <= data.len(), "message length {len} outside the input");
    assert_eq!(parse(&data[..len]), Parsed::Complete { len, value });
    for cut in 0..len {
        let verdict = parse(&data[..cut]);
        assert!(
            verdict == Parsed::NeedMore,
            "prefix of {cut} bytes of a valid message judged {verdict:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, parse_greeting);
    check(data, parse_user_pass);
    check(data, parse_request);
    check(data, parse_socks4);
    if let Ok(datagram) = parse_udp_datagram(data) {
        assert!(datagram.payload.len() < data.len());
    }
});
