//! Redis glob-style patterns, as KEYS, SCAN MATCH, PSUBSCRIBE and PUBSUB CHANNELS use.
//!
//! Contract: [`matches`] gives the answer redis-server's `stringmatchlen` (case-sensitive)
//! gives, quirks included — an unclosed `[` runs to the end of the pattern, a range
//! `[a-]` takes the `]` as its upper end, a `\` at the end of the pattern is a literal
//! `\` — with one exception: patterns made only of `*` match the empty string, where
//! `stringmatchlen` says no. Bytes compare unsigned. Matching never backtracks
//! exponentially: it costs O(len(pattern) * len(text)) at worst.

/// Returns whether `text` matches the Redis glob-style `pattern` (KEYS, SCAN MATCH,
/// PSUBSCRIBE, PUBSUB CHANNELS): `*` any run, `?` one byte, `[abc]`, `[^abc]`, `[a-z]`
/// ranges, `\x` escapes x. Byte-wise and case-sensitive, like Redis's `stringmatchlen`.
/// Runs in O(len(pattern) * len(text)) at worst.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    // Every token but `*` matches exactly one byte, so when the rest of the pattern
    // fails after a `*`, only the latest `*` needs to grow: an earlier one growing
    // could only make the rest start later, which has already failed.
    let mut pattern_pos = 0;
    let mut text_pos = 0;
    // After the latest `*`: where the pattern resumes and where its text match began.
    let mut last_star: Option<(usize, usize)> = None;
    while text_pos < text.len() {
        if pattern.get(pattern_pos) == Some(&b'*') {
            pattern_pos = skip_stars(pattern, pattern_pos);
            last_star = Some((pattern_pos, text_pos));
            continue;
        }
        if pattern_pos < pattern.len() {
            let (matched, next) = match_token(pattern, pattern_pos, text[text_pos]);
            if matched {
                pattern_pos = next;
                text_pos += 1;
                continue;
            }
        }
        let Some((resume, start)) = last_star else {
            return false;
        };
        last_star = Some((resume, start + 1));
        pattern_pos = resume;
        text_pos = start + 1;
    }
    skip_stars(pattern, pattern_pos) == pattern.len()
}

/// Returns the literal prefix of `pattern` before its first special character
/// (`*?[\`), so callers can scan only keys that start with it.
pub fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern
        .iter()
        .position(|byte| matches!(byte, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    &pattern[..end]
}

/// Returns the position after the run of `*` starting at `pos`.
fn skip_stars(pattern: &[u8], mut pos: usize) -> usize {
    while pattern.get(pos) == Some(&b'*') {
        pos += 1;
    }
    pos
}

/// Matches the one-byte token (anything but `*`) at `pos` against `byte`; returns
/// whether it matched and where the next token starts.
fn match_token(pattern: &[u8], pos: usize, byte: u8) -> (bool, usize) {
    match pattern[pos] {
        b'?' => (true, pos + 1),
        b'[' => match_class(pattern, pos + 1, byte),
        b'\\' if pos + 1 < pattern.len() => (pattern[pos + 1] == byte, pos + 2),
        literal => (literal == byte, pos + 1),
    }
}

/// Matches the class whose body starts at `pos` (just after its `[`) against `byte`,
/// following `stringmatchlen`'s scan: `\` escapes the next byte, `x-y` is a range in
/// either order whose `y` may be a `]`, and a missing `]` ends the class at the end
/// of the pattern. Returns whether it matched and where the next token starts.
fn match_class(pattern: &[u8], mut pos: usize, byte: u8) -> (bool, usize) {
    let negated = pattern.get(pos) == Some(&b'^');
    if negated {
        pos += 1;
    }
    let mut matched = false;
    loop {
        match pattern.get(pos..) {
            None | Some([]) => {
                pos = pattern.len();
                break;
            }
            Some([b'\\', escaped, ..]) => {
                matched |= *escaped == byte;
                pos += 2;
            }
            Some([b']', ..]) => {
                pos += 1;
                break;
            }
            Some([start, b'-', end, ..]) => {
                let (low, high) = if start <= end { (*start, *end) } else { (*end, *start) };
                matched |= (low..=high).contains(&byte);
                pos += 3;
            }
            Some([literal, ..]) => {
                matched |= *literal == byte;
                pos += 1;
            }
        }
    }
    (matched != negated, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_match(pattern: &str, text: &str) -> bool {
        matches(pattern.as_bytes(), text.as_bytes())
    }

    #[test]
    fn question_mark_matches_exactly_one_byte() {
        assert!(is_match("h?llo", "hello"));
        assert!(is_match("h?llo", "hallo"));
        assert!(!is_match("h?llo", "hllo"));
        assert!(!is_match("h?llo", "heello"));
    }

    #[test]
    fn star_matches_any_run() {
        assert!(is_match("h*llo", "hllo"));
        assert!(is_match("h*llo", "heeeello"));
        assert!(!is_match("h*llo", "heeeellx"));
        assert!(is_match("*", "anything"));
        assert!(is_match("a**b", "axxb"));
        assert!(is_match("*llo*", "hello world"));
        assert!(!is_match("h*", "ah"));
    }

    #[test]
    fn star_matches_empty() {
        assert!(is_match("*", ""));
        assert!(is_match("**", ""));
        assert!(is_match("a*", "a"));
        assert!(is_match("*a", "a"));
        assert!(is_match("a*b", "ab"));
        assert!(is_match("", ""));
        assert!(!is_match("", "a"));
        assert!(!is_match("?", ""));
        assert!(!is_match("*?", ""));
    }

    #[test]
    fn classes_list_ranges_and_negation() {
        assert!(is_match("h[ae]llo", "hello"));
        assert!(is_match("h[ae]llo", "hallo"));
        assert!(!is_match("h[ae]llo", "hillo"));
        assert!(is_match("h[^e]llo", "hallo"));
        assert!(!is_match("h[^e]llo", "hello"));
        assert!(is_match("h[a-b]llo", "hallo"));
        assert!(is_match("h[a-b]llo", "hbllo"));
        assert!(!is_match("h[a-b]llo", "hcllo"));
        assert!(is_match("[z-a]", "m"), "a reversed range is swapped, as in Redis");
        assert!(is_match("[\\]]", "]"));
        assert!(is_match("[a\\-z]", "-"));
        assert!(!is_match("[a\\-z]", "b"));
    }

    #[test]
    fn escapes_make_specials_literal() {
        assert!(is_match("h\\*llo", "h*llo"));
        assert!(!is_match("h\\*llo", "hello"));
        assert!(is_match("\\?", "?"));
        assert!(!is_match("\\?", "a"));
        assert!(is_match("a\\", "a\\"), "a trailing backslash is a literal backslash");
    }

    #[test]
    fn redis_quirks_are_kept() {
        // An unclosed class ends at the end of the pattern.
        assert!(is_match("h[ab", "ha"));
        assert!(is_match("h[ab", "hb"));
        assert!(!is_match("h[ab", "hc"));
        assert!(!is_match("a[", "ab"));
        assert!(!is_match("a[", "a"));
        // `[^` at the end is an empty negated class: any one byte.
        assert!(is_match("a[^", "ab"));
        // `[a-]`: the range runs from `]` to `a` and swallows the `]`.
        assert!(is_match("[a-]", "_"));
        assert!(is_match("[a-]", "a"));
        assert!(!is_match("[a-]", "-"));
        assert!(is_match("[a-]x", "x"), "the class goes on to the end of the pattern");
    }

    #[test]
    fn bytes_compare_unsigned_and_case_sensitive() {
        assert!(matches(b"[\x01-\xff]", b"\x80"));
        assert!(matches(b"?", b"\xff"));
        assert!(!is_match("HELLO", "hello"));
        assert!(!is_match("[A-Z]", "a"));
    }

    #[test]
    fn pathological_pattern_finishes() {
        let text = vec![b'a'; 10_000];
        assert!(!matches(b"a*a*a*a*a*a*a*a*a*b", &text));
        assert!(matches(b"a*a*a*a*a*a*a*a*a*a", &text));
        let pattern = b"*a".repeat(500);
        assert!(!matches(&[pattern.as_slice(), b"b"].concat(), &text));
    }

    #[test]
    fn literal_prefix_stops_at_the_first_special() {
        assert_eq!(literal_prefix(b"user:*"), b"user:");
        assert_eq!(literal_prefix(b"user:?x"), b"user:");
        assert_eq!(literal_prefix(b"us[ae]r"), b"us");
        assert_eq!(literal_prefix(b"a\\*b"), b"a");
        assert_eq!(literal_prefix(b"plain"), b"plain");
        assert_eq!(literal_prefix(b"*"), b"");
        assert_eq!(literal_prefix(b""), b"");
    }
}
