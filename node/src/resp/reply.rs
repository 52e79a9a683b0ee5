//! RESP replies: [`Reply::encode`] writes RESP2, or RESP3 after `HELLO 3`. Simple
//! strings and errors have `\r` and `\n` replaced with spaces, so no reply can smuggle in
//! a second one.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

/// One reply, written in RESP2 or RESP3 (after `HELLO 3`).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A status line: `+OK`.
    Simple(Cow<'static, str>),
    /// An error line; the text includes its prefix such as `ERR ` or `WRONGTYPE `.
    Error(String),
    /// `:<n>`.
    Integer(i64),
    /// A binary-safe string: `$<len>`.
    Bulk(Bytes),
    /// No value: RESP2 `$-1`, RESP3 `_`.
    Null,
    /// No array: RESP2 `*-1`, RESP3 `_`.
    NullArray,
    /// `*<n>` followed by the elements.
    Array(Vec<Reply>),
    /// Key-value pairs: RESP2 a flat array of 2n, RESP3 `%<n>`.
    Map(Vec<(Reply, Reply)>),
    /// Unordered elements: RESP2 an array, RESP3 `~<n>`.
    Set(Vec<Reply>),
    /// A float: RESP2 a bulk string, RESP3 `,<value>`, both formatted as Redis does.
    Double(f64),
    /// RESP2 the integer 1 or 0, RESP3 `#t` or `#f`.
    Boolean(bool),
    /// An out-of-band message such as pub/sub's: RESP2 an array, RESP3 `><n>`.
    Push(Vec<Reply>),
    /// Text with a three-letter format (`txt`, `mkd`): RESP2 a bulk string of the text,
    /// RESP3 `=<len>\r\n<format>:<text>`.
    Verbatim {
        /// The format, such as `txt` or `mkd`.
        format: [u8; 3],
        /// The text.
        text: Bytes,
    },
    /// Several replies to one command, one after another (`SUBSCRIBE a b` confirms each
    /// channel in its own frame).
    Sequence(Vec<Reply>),
}

impl Reply {
    /// Returns `+OK`.
    pub fn ok() -> Self {
        Self::Simple(Cow::Borrowed("OK"))
    }

    /// Returns an error reply; `text` includes its prefix, as in `"ERR no such key"`.
    pub fn error(text: impl Into<String>) -> Self {
        Self::Error(text.into())
    }

    /// Returns a bulk string reply.
    pub fn bulk(bytes: impl Into<Bytes>) -> Self {
        Self::Bulk(bytes.into())
    }

    /// Appends the reply's bytes to `out`; `resp3` after `HELLO 3`.
    pub fn encode(&self, out: &mut BytesMut, resp3: bool) {
        match self {
            Self::Simple(text) => put_line(out, b'+', text.as_bytes()),
            Self::Error(text) => put_line(out, b'-', text.as_bytes()),
            Self::Integer(value) => put_integer(out, *value),
            Self::Bulk(data) => put_bulk(out, data),
            Self::Null if resp3 => out.put_slice(b"_\r\n"),
            Self::Null => out.put_slice(b"$-1\r\n"),
            Self::NullArray if resp3 => out.put_slice(b"_\r\n"),
            Self::NullArray => out.put_slice(b"*-1\r\n"),
            Self::Array(items) => put_aggregate(out, b'*', items, resp3),
            Self::Map(pairs) => put_map(out, pairs, resp3),
            Self::Set(items) => put_aggregate(out, if resp3 { b'~' } else { b'*' }, items, resp3),
            Self::Push(items) => put_aggregate(out, if resp3 { b'>' } else { b'*' }, items, resp3),
            Self::Double(value) => put_double(out, *value, resp3),
            Self::Boolean(value) => put_boolean(out, *value, resp3),
            Self::Verbatim { format, text } => put_verbatim(out, format, text, resp3),
            Self::Sequence(replies) => {
                for reply in replies {
                    reply.encode(out, resp3);
                }
            }
        }
    }
}

/// Writes `<marker><text>\r\n` with any `\r` or `\n` in `text` turned into spaces.
fn put_line(out: &mut BytesMut, marker: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(marker);
    if text.iter().any(|&byte| byte == b'\r' || byte == b'\n') {
        out.extend(
            text.iter().map(|&byte| if byte == b'\r' || byte == b'\n' { b' ' } else { byte }),
        );
    } else {
        out.put_slice(text);
    }
    out.put_slice(b"\r\n");
}

/// Writes `:<value>\r\n`.
fn put_integer(out: &mut BytesMut, value: i64) {
    out.put_u8(b':');
    put_decimal(out, value);
    out.put_slice(b"\r\n");
}

/// Writes `$<len>\r\n<data>\r\n`.
fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    put_length(out, b'$', data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Writes `<marker><len>\r\n` and then each item.
fn put_aggregate(out: &mut BytesMut, marker: u8, items: &[Reply], resp3: bool) {
    put_length(out, marker, items.len());
    for item in items {
        item.encode(out, resp3);
    }
}

/// Writes RESP3 `%<n>` or RESP2 `*<2n>`, then each key and its value.
fn put_map(out: &mut BytesMut, pairs: &[(Reply, Reply)], resp3: bool) {
    if resp3 {
        put_length(out, b'%', pairs.len());
    } else {
        put_length(out, b'*', pairs.len() * 2);
    }
    for (key, value) in pairs {
        key.encode(out, resp3);
        value.encode(out, resp3);
    }
}

/// Writes RESP3 `,<value>\r\n` or a RESP2 bulk string of the same text.
fn put_double(out: &mut BytesMut, value: f64, resp3: bool) {
    let text = format_double(value);
    if resp3 {
        put_line(out, b',', text.as_bytes());
    } else {
        put_bulk(out, text.as_bytes());
    }
}

/// Writes RESP3 `#t`/`#f` or RESP2 `:1`/`:0`.
fn put_boolean(out: &mut BytesMut, value: bool, resp3: bool) {
    let bytes: &[u8] = match (resp3, value) {
        (true, true) => b"#t\r\n",
        (true, false) => b"#f\r\n",
        (false, true) => b":1\r\n",
        (false, false) => b":0\r\n",
    };
    out.put_slice(bytes);
}

/// Writes RESP3 `=<len>\r\n<format>:<text>\r\n` or a RESP2 bulk string of the text.
fn put_verbatim(out: &mut BytesMut, format: &[u8; 3], text: &[u8], resp3: bool) {
    if !resp3 {
        put_bulk(out, text);
        return;
    }
    out.reserve(text.len() + 24);
    put_length(out, b'=', text.len() + 4);
    out.put_slice(format);
    out.put_u8(b':');
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

/// Writes `<marker><len>\r\n`.
fn put_length(out: &mut BytesMut, marker: u8, len: usize) {
    out.put_u8(marker);
    put_unsigned(out, len as u64);
    out.put_slice(b"\r\n");
}

/// Writes `value` in decimal.
fn put_decimal(out: &mut BytesMut, value: i64) {
    if value < 0 {
        out.put_u8(b'-');
    }
    put_unsigned(out, value.unsigned_abs());
}

/// Writes `value` in decimal without going through `fmt`.
fn put_unsigned(out: &mut BytesMut, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.put_slice(&digits[start..]);
}

/// Formats a float as redis-server's `d2string` does (Redis 7.2 and later): `nan`,
/// `inf`, `-inf`, `0`, `-0`, integers up to 2^62 without a fraction, and otherwise the
/// shortest round-trip digits laid out like its `fpconv_dtoa` (`0.1`, `1e-7`, `1.5e+20`).
fn format_double(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    const INTEGER_LIMIT: f64 = 4_611_686_018_427_387_904.0; // 2^62, as (double)(LLONG_MAX/2)
    if value.abs() <= INTEGER_LIMIT && value.fract() == 0.0 {
        return (value as i64).to_string();
    }
    format_shortest(value)
}

/// Lays out the shortest round-trip digits of a finite, non-zero `value` as
/// `fpconv_dtoa`'s `emit_digits` does.
fn format_shortest(value: f64) -> String {
    // `{:e}` gives the shortest digits that round-trip, as `d.ddde<exp>`.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let num_digits = digits.len() as i32;
    // fpconv's `K`: the value is <digits> * 10^k.
    let k = exponent - (num_digits - 1);
    let exp = exponent.abs();

    let mut text = String::with_capacity(32);
    if value < 0.0 {
        text.push('-');
    }
    if k >= 0 && exp < num_digits + 7 {
        text.push_str(&digits);
        text.extend(std::iter::repeat_n('0', k as usize));
    } else if k < 0 && (k > -7 || exp < 4) {
        let offset = num_digits + k;
        if offset <= 0 {
            text.push_str("0.");
            text.extend(std::iter::repeat_n('0', (-offset) as usize));
            text.push_str(&digits);
        } else {
            let (whole, fraction) = digits.split_at(offset as usize);
            text.push_str(whole);
            text.push('.');
            text.push_str(fraction);
        }
    } else {
        let (first, rest) = digits.split_at(1);
        text.push_str(first);
        if !rest.is_empty() {
            text.push('.');
            text.push_str(rest);
        }
        text.push('e');
        text.push(if exponent < 0 { '-' } else { '+' });
        text.push_str(&exp.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply, resp3: bool) -> Vec<u8> {
        let mut out = BytesMut::new();
        reply.encode(&mut out, resp3);
        out.to_vec()
    }

    /// Asserts the RESP2 and RESP3 encodings of `reply`.
    fn assert_encodes(reply: Reply, resp2: &[u8], resp3: &[u8]) {
        assert_eq!(encoded(&reply, false), resp2, "RESP2 of {reply:?}");
        assert_eq!(encoded(&reply, true), resp3, "RESP3 of {reply:?}");
    }

    #[test]
    fn simple_error_and_integer_replies() {
        assert_encodes(Reply::ok(), b"+OK\r\n", b"+OK\r\n");
        assert_encodes(Reply::Simple("PONG".into()), b"+PONG\r\n", b"+PONG\r\n");
        assert_encodes(Reply::error("ERR no"), b"-ERR no\r\n", b"-ERR no\r\n");
        assert_encodes(Reply::Integer(0), b":0\r\n", b":0\r\n");
        assert_encodes(Reply::Integer(-42), b":-42\r\n", b":-42\r\n");
        assert_encodes(
            Reply::Integer(i64::MIN),
            b":-9223372036854775808\r\n",
            b":-9223372036854775808\r\n",
        );
        assert_encodes(
            Reply::Integer(i64::MAX),
            b":9223372036854775807\r\n",
            b":9223372036854775807\r\n",
        );
    }

    #[test]
    fn line_breaks_in_simple_strings_and_errors_become_spaces() {
        assert_encodes(
            Reply::error("ERR bad\r\n+OK\nx"),
            b"-ERR bad  +OK x\r\n",
            b"-ERR bad  +OK x\r\n",
        );
        assert_encodes(Reply::Simple("a\rb".into()), b"+a b\r\n", b"+a b\r\n");
    }

    #[test]
    fn bulk_and_null_replies() {
        assert_encodes(Reply::bulk("hi"), b"$2\r\nhi\r\n", b"$2\r\nhi\r\n");
        assert_encodes(Reply::bulk(""), b"$0\r\n\r\n", b"$0\r\n\r\n");
        assert_encodes(Reply::bulk(&b"a\r\nb"[..]), b"$4\r\na\r\nb\r\n", b"$4\r\na\r\nb\r\n");
        assert_encodes(Reply::Null, b"$-1\r\n", b"_\r\n");
        assert_encodes(Reply::NullArray, b"*-1\r\n", b"_\r\n");
    }

    #[test]
    fn aggregate_replies() {
        let items = || vec![Reply::Integer(1), Reply::bulk("a")];
        assert_encodes(
            Reply::Array(items()),
            b"*2\r\n:1\r\n$1\r\na\r\n",
            b"*2\r\n:1\r\n$1\r\na\r\n",
        );
        assert_encodes(Reply::Array(Vec::new()), b"*0\r\n", b"*0\r\n");
        assert_encodes(Reply::Set(items()), b"*2\r\n:1\r\n$1\r\na\r\n", b"~2\r\n:1\r\n$1\r\na\r\n");
        assert_encodes(
            Reply::Push(vec![Reply::bulk("message"), Reply::bulk("ch")]),
            b"*2\r\n$7\r\nmessage\r\n$2\r\nch\r\n",
            b">2\r\n$7\r\nmessage\r\n$2\r\nch\r\n",
        );
        assert_encodes(
            Reply::Map(vec![
                (Reply::bulk("a"), Reply::Integer(1)),
                (Reply::bulk("b"), Reply::Null),
            ]),
            b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n$-1\r\n",
            b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n_\r\n",
        );
        assert_encodes(
            Reply::Array(vec![Reply::Array(vec![Reply::Boolean(true)]), Reply::NullArray]),
            b"*2\r\n*1\r\n:1\r\n*-1\r\n",
            b"*2\r\n*1\r\n#t\r\n_\r\n",
        );
    }

    #[test]
    fn boolean_and_verbatim_replies() {
        assert_encodes(Reply::Boolean(true), b":1\r\n", b"#t\r\n");
        assert_encodes(Reply::Boolean(false), b":0\r\n", b"#f\r\n");
        assert_encodes(
            Reply::Verbatim { format: *b"txt", text: Bytes::from_static(b"Some string") },
            b"$11\r\nSome string\r\n",
            b"=15\r\ntxt:Some string\r\n",
        );
    }

    #[test]
    fn double_replies() {
        assert_encodes(Reply::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n");
        assert_encodes(Reply::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n");
        assert_encodes(Reply::Double(f64::NEG_INFINITY), b"$4\r\n-inf\r\n", b",-inf\r\n");
        assert_encodes(Reply::Double(f64::NAN), b"$3\r\nnan\r\n", b",nan\r\n");
    }

    #[test]
    fn doubles_format_as_redis_d2string() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (3.0, "3"),
            (-12.0, "-12"),
            (0.1, "0.1"),
            (-2.25, "-2.25"),
            (1e-6, "0.000001"),
            (1.5e-5, "0.000015"),
            (1.5e-6, "1.5e-6"),
            (1e-7, "1e-7"),
            (1.2345e-10, "1.2345e-10"),
            (123456789.125, "123456789.125"),
            (4611686018427387904.0, "4611686018427387904"),
            (1e19, "1e+19"),
            (1.5e20, "1.5e+20"),
            (1e300, "1e+300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (1.0 / 3.0, "0.3333333333333333"),
        ];
        for &(value, text) in cases {
            assert_eq!(format_double(value), text, "{value:e}");
            assert_eq!(format_double(value).parse::<f64>().unwrap(), value, "round trip");
        }
    }
}
