//! JSON text written straight into a byte buffer, exactly as `serde_json` writes it.
//!
//! Two things leave the data plane as JSON on every call: the minimised answer and the audit
//! record's canonical bytes. Through `serde_json`'s serializer each string is escaped byte by
//! byte and each member goes through the generic `Serialize` machinery: about a tenth of the
//! data plane's instructions per call. Here a string that needs no escape (nearly all: names,
//! identifiers, dates) is checked eight bytes at a time ([`special`], which the answer's
//! reader uses too) and copied whole; one that does is handed to `serde_json`, so the bytes are
//! the same either way. The tests hold them equal.

/// Writes `s` as a JSON string, quotes included, escaped as `serde_json` escapes it.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    if special(s.as_bytes(), 0) < s.len() {
        // `serde_json` writes a `&str` into a `Vec` without failing.
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// The first byte from `i` on that a string cannot hold as it is: a quote, a backslash or a
/// control character (or the end of `bytes`). Eight bytes at a time: a byte of a word is
/// zero where it matched, found with the borrow trick of "Bit Twiddling Hacks" (a borrow can
/// mark bytes above a real match, never below, so the lowest mark is the first match).
#[inline]
pub fn special(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let hit = marks(chunk);
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    special_in_tail(bytes, from, i)
}

/// The high bit of each byte of `chunk` that is special, and maybe of bytes above one that is.
#[inline]
fn marks(chunk: &[u8; 8]) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let w = u64::from_le_bytes(*chunk);
    (zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) | (w.wrapping_sub(ONES * 0x20) & !w))
        & HIGH
}

/// [`special`] for the fewer than eight bytes from `i` on, `from..i` being plain.
fn special_in_tail(bytes: &[u8], from: usize, mut i: usize) -> usize {
    // The last eight bytes hold them, behind bytes found plain (a special byte below could
    // mark plain ones above it), so the first mark at or after `i` is the first special byte.
    // Fewer than eight from `from` are looked at byte by byte.
    if let Some(last) = bytes.last_chunk::<8>()
        && i < bytes.len()
        && bytes.len() - 8 >= from
    {
        let behind = 8 - (bytes.len() - i);
        let hit = marks(last) >> (8 * behind) << (8 * behind);
        return if hit != 0 { bytes.len() - 8 + (hit.trailing_zeros() / 8) as usize } else { bytes.len() };
    }
    while bytes.get(i).is_some_and(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        i += 1;
    }
    i
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
    fn the_word_scan_finds_the_first_special_byte_as_a_byte_scan_does() {
        let plain = |bytes: &[u8], i: usize| {
            (i..bytes.len()).find(|&j| bytes[j] < 0x20 || bytes[j] == b'"' || bytes[j] == b'\\').unwrap_or(bytes.len())
        };
        let base: Vec<u8> = "abcdefghijklmnopqrstuvwxyz é中😀 0123456789".bytes().collect();
        for special_byte in [b'"', b'\\', 0x00, 0x01, 0x1f] {
            for at in 0..base.len() {
                let mut bytes = base.clone();
                bytes[at] = special_byte;
                // A second match further on, and bytes just above and below the control range.
                bytes.extend_from_slice(&[0x20, 0x7f, 0x80, 0xff, b'"']);
                for start in 0..=at {
                    assert_eq!(special(&bytes, start), plain(&bytes, start), "{special_byte} at {at} from {start}");
                }
            }
        }
        assert_eq!(special(&base, 0), base.len());
    }

    #[test]
    fn every_length_and_start_ends_where_a_byte_scan_does() {
        let plain = |bytes: &[u8], i: usize| {
            (i..bytes.len()).find(|&j| bytes[j] < 0x20 || bytes[j] == b'"' || bytes[j] == b'\\').unwrap_or(bytes.len())
        };
        // Bytes one above each special value (a borrow from a special byte below turns them
        // into marks) around the special ones.
        for len in 0..26 {
            for filler in [b'a', b'#', b']', 0x21] {
                for special_at in (0..len).map(Some).chain([None]) {
                    for special_byte in [b'"', b'\\', 0x00, 0x1f] {
                        let mut bytes = vec![filler; len];
                        if let Some(at) = special_at {
                            bytes[at] = special_byte;
                        }
                        for start in 0..=len {
                            assert_eq!(
                                special(&bytes, start),
                                plain(&bytes, start),
                                "len {len} filler {filler} at {special_at:?} byte {special_byte} from {start}"
                            );
                        }
                    }
                }
            }
        }
    }

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
