//! Untrusted text (a peer's bytes, an environment variable) made safe to
//! put in an error message.

/// Untrusted bytes (a peer's refusal, a value from a store) as text safe to
/// print: at most `max` characters, control characters (ANSI escapes,
/// newlines) escaped, invalid UTF-8 replaced.
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Untrusted text for an error message: at most [`QUOTE_MAX`] characters,
/// control characters (terminal escapes, newlines) escaped
/// ([`printable`]), and the length of the whole when it was cut.
pub(crate) fn quote(s: &str) -> String {
    let mut out = printable(s.as_bytes(), QUOTE_MAX);
    if s.chars().nth(QUOTE_MAX).is_some() {
        out.push_str(&format!(" ({} bytes)", s.len()));
    }
    out
}

/// How many characters of untrusted text an error quotes.
pub(crate) const QUOTE_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_and_shortens() {
        let s = printable(b"\x1b[31mred\nline\x07", 100);
        assert_eq!(s, "\\u{1b}[31mred\\nline\\u{7}");
        assert!(!s.chars().any(char::is_control));
        let long = printable(&[b'a'; 1000], 10);
        assert_eq!(long, "aaaaaaaaaa…");
        assert_eq!(printable(b"\xff\xfeok", 10), "\u{fffd}\u{fffd}ok");
    }
}
