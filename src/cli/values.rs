//! Value parsers for flags: text → a typed value, or a one-line message saying what to
//! write instead. Pure functions, below every argument struct that names them.

use std::time::Duration;

use crate::server::Amplification;

/// Parses a `--pin` fingerprint.
pub fn parse_fingerprint(text: &str) -> Result<crate::transport::tls::Fingerprint, String> {
    text.parse()
        .map_err(|e: crate::transport::tls::FingerprintError| e.to_string())
}

/// Parses `--amplification-limit`: a factor of at least 1, or "off".
///
/// # Errors
/// A message saying what is accepted.
pub fn parse_amplification(text: &str) -> Result<Amplification, String> {
    match text.trim() {
        "off" => Ok(Amplification::Off),
        factor => match factor.parse::<u32>() {
            Ok(k) if k >= 1 => Ok(Amplification::Factor(k)),
            _ => Err(format!(
                "{factor:?} is not a factor; write a whole number of at least 1 (3 is QUIC's) or off"
            )),
        },
    }
}

/// Parses a file mode in octal ("0600", "600", "0o660").
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim().trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err("write the mode in octal, such as 0600 or 0660".into()),
    }
}

/// Parses a byte count: digits, optionally followed by K, M or G (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => {
            return Err(format!(
                "unknown unit {unit:?}: write a byte count such as 65536, 64K or 16M"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| "write a byte count such as 65536, 64K or 16M".to_string())
}

/// Parses "5s", "250ms", "1m30s"; a bare number is seconds; "0" means zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Ok(Duration::from_secs_f64(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e} (write a duration such as 500ms, 5s or 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_modes_are_octal() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(64 * 1024));
        assert_eq!(parse_size("16MiB"), Ok(16 * 1024 * 1024));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert!(parse_mode("0900").is_err());
        assert!(parse_mode("77777").is_err());
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
