//! Untrusted text (a peer's bytes, an environment variable) made safe to
//! put in an error message.

/// Untrusted bytes (a peer's refusal, a value from a store) as text safe to
/// print: at most `max` characters, control characters (ANSI escapes,
/// newlines) and the invisible characters that reorder or split what a
/// reader sees ([`hidden`]) escaped, invalid UTF-8 replaced.
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if c.is_control() || hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters a reader does not see but that change what is shown: the
/// bidirectional controls (which reorder the text after them: U+061C,
/// U+200E–U+200F, U+202A–U+202E, U+2066–U+2069), zero-width and other
/// invisible format characters (U+00AD, U+180E, U+200B–U+200D,
/// U+2060–U+206F, U+FEFF, the interlinear annotations U+FFF9–U+FFFB),
/// the line and paragraph separators (U+2028, U+2029), variation selectors
/// (U+FE00–U+FE0F, U+E0100–U+E01EF) and the tag characters
/// (U+E0000–U+E007F), which can carry text no one sees.
fn hidden(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{61c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e0000}'..='\u{e007f}'
            | '\u{e0100}'..='\u{e01ef}'
    )
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
        // a right-to-left override, an isolate, a zero-width space, a line
        // separator: shown as escapes, the text around them as it is
        let s = printable(
            "ok\u{202e}gpj.exe\u{2066}x\u{200b}y\u{2028}z".as_bytes(),
            100,
        );
        assert_eq!(s, "ok\\u{202e}gpj.exe\\u{2066}x\\u{200b}y\\u{2028}z");
        // tag characters spelling "hi", a variation selector
        let s = printable("a\u{e0068}\u{e0069}b\u{fe0f}".as_bytes(), 100);
        assert_eq!(s, "a\\u{e0068}\\u{e0069}b\\u{fe0f}");
    }
}
