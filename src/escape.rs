//! Printing payloads safely: any bytes become one readable line.
//!
//! The note prints `indata.decode()`, which raises on invalid UTF-8 and lets a newline in a
//! message break the log. Here valid UTF-8 text (any script) is kept as is; control
//! characters, backslashes and bytes that are not UTF-8 are written as escapes, so a
//! message's log line is always one line and always says exactly which bytes came in.

use std::fmt::Write;

/// Appends the escaped form of `bytes` to `out`.
pub fn escape_into(out: &mut String, bytes: &[u8]) {
    // The common case, plain printable ASCII, needs no escaping at all. The check has no
    // early exit so the compiler can vectorise it.
    let needs_escaping = bytes.iter().fold(false, |acc, &b| {
        acc | !(0x20..0x7f).contains(&b) | (b == b'\\')
    });
    if !needs_escaping {
        // Printable ASCII is valid UTF-8: this always succeeds, on std's ASCII fast path.
        if let Ok(text) = std::str::from_utf8(bytes) {
            out.push_str(text);
            return;
        }
    }
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
}

/// The escaped form of `bytes` as a new string.
pub fn escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    escape_into(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(escaped(b"hello tcp server"), "hello tcp server");
        assert_eq!(escaped("你好 socket".as_bytes()), "你好 socket");
    }

    #[test]
    fn invalid_utf8_and_controls_are_escaped() {
        assert_eq!(escaped(b"caf\xe9\n"), "caf\\xe9\\n");
        assert_eq!(escaped(b"a\\b\x00\r\t"), "a\\\\b\\u{0}\\r\\t");
        assert_eq!(escaped(b"\xff\xfe"), "\\xff\\xfe");
    }
}
