//! JSON text written straight into a byte buffer, exactly as `serde_json` writes it.
//!
//! Two things leave the data plane as JSON on every call: the minimised answer and the audit
//! record's canonical bytes. Through `serde_json`'s serializer each string is escaped byte by
//! byte and each member goes through the generic `Serialize` machinery: about a tenth of the
//! data plane's instructions per call. Here a string that needs no escape (nearly all: names,
//! identifiers, dates) is checked in one branch-free pass and copied whole; one that does is
//! handed to `serde_json`, so the bytes are the same either way. The tests hold them equal.

/// Writes `s` as a JSON string, quotes included, escaped as `serde_json` escapes it.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    // Without an early exit the check compiles to a vector loop.
    let escape = s.as_bytes().iter().fold(false, |any, &b| any | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if escape {
        // `serde_json` writes a `&str` into a `Vec` without failing.
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Writes an unsigned integer in decimal.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes a JSON number as `serde_json` writes it.
pub fn push_number(out: &mut Vec<u8>, n: &serde_json::Number) {
    if let Some(u) = n.as_u64() {
        push_u64(out, u);
    } else if let Some(i) = n.as_i64() {
        out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
    } else {
        // A float: `serde_json`'s own shortest form.
        let _ = serde_json::to_writer(&mut *out, n);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn strings_and_numbers_are_written_as_serde_json_writes_them() {
        let mut strings: Vec<String> =
            ["", "plain", "Jan Peeters", "é ü ß 中文 😀", "q\"uote", "back\\slash", "tab\there", "\u{7f}", "\u{1f}x"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        strings.extend((0u8..0x80).map(|b| format!("a{}b", b as char)));
        for s in &strings {
            let mut out = Vec::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        for text in ["0", "18446744073709551615", "-9223372036854775808", "-1", "3.5", "1e300", "-0.0", "0.1"] {
            let n: serde_json::Number = serde_json::from_str(text).unwrap();
            let mut out = Vec::new();
            push_number(&mut out, &n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap(), "{text}");
        }
    }
}
