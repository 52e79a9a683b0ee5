//! RESP wire format on the server side: requests in, replies out.
//!
//! Contract:
//! - [`parse_command`] takes one complete command off the front of a connection's read
//!   buffer, or leaves the buffer untouched and returns `Ok(None)` when only part of one
//!   has arrived. It follows redis-server's `processMultibulkBuffer`,
//!   `processInlineBuffer` and `sdssplitargs`, error texts included, so clients see
//!   the refusals they know.
//! - Every limit in [`Limits`] is checked from a header line, before the bytes it
//!   announces are buffered: a client that declares a 1 GiB bulk is refused at once.
//! - Bulk arguments are slices of the read buffer (no copy); bulk data is never scanned,
//!   so a big value arriving in many reads costs one walk over the small header lines
//!   per read, not one pass over the data. (The walk restarts at the command's first
//!   header on each call, so a command with very many arguments arriving in many reads
//!   costs arguments × reads; `Limits::max_args` bounds that.)
//! - [`Reply::encode`] writes RESP2, or RESP3 after `HELLO 3`. Simple strings and errors
//!   have `\r` and `\n` replaced with spaces, so no reply can smuggle in a second one.

use std::borrow::Cow;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The longest `*<n>` or `$<len>` header line, as redis-server's `PROTO_INLINE_MAX_SIZE`.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The fewest bytes one multibulk argument takes on the wire: `$0\r\n\r\n`.
const MIN_ARG_BYTES: usize = 6;

/// Limits on what one client request may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest `$<len>` accepted (redis-server's `proto-max-bulk-len`).
    pub max_bulk_bytes: usize,
    /// The largest `*<n>` accepted.
    pub max_args: usize,
    /// The longest inline command line accepted, without its `\n`.
    pub max_inline_bytes: usize,
}

/// A request the connection must refuse; the text goes to the client as
/// `-ERR Protocol error: {0}` and then the connection closes (Redis's behaviour).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }
}

/// Takes one complete command off the front of `buf` (advancing it), `Ok(None)` when
/// `buf` holds only part of one (the caller reads more and calls again). Empty commands
/// (an empty inline line, `*0`, `*-1`) are consumed and skipped.
///
/// On `Ok(None)` the buffer is left as it was; on an error its contents are unspecified
/// and the connection must close.
pub fn parse_command(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    loop {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let command =
            if first == b'*' { take_multibulk(buf, limits)? } else { take_inline(buf, limits)? };
        match command {
            None => return Ok(None),
            Some(args) if args.is_empty() => continue,
            Some(args) => return Ok(Some(args)),
        }
    }
}

/// Takes a `*<n>` command off `buf` once all of it is there.
fn take_multibulk(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(frame) = measure_multibulk(buf, limits)? else {
        return Ok(None);
    };
    let command = buf.split_to(frame.len).freeze();
    Ok(Some(frame.args.into_iter().map(|range| command.slice(range)).collect()))
}

/// Where a complete multibulk command's arguments lie in the buffer.
struct MultibulkFrame {
    /// Bytes the whole command takes.
    len: usize,
    /// Each argument's bytes, as offsets from the start of the command.
    args: Vec<Range<usize>>,
}

/// Walks a multibulk command's header lines, stepping over bulk data by its declared
/// length without reading it. `Ok(None)` until the whole command has arrived.
fn measure_multibulk(
    data: &[u8],
    limits: &Limits,
) -> Result<Option<MultibulkFrame>, ProtocolError> {
    let Some(header) = read_header_line(data, "too big mbulk count string")? else {
        return Ok(None);
    };
    let count = header.value().ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
    if count <= 0 {
        return Ok(Some(MultibulkFrame { len: header.len, args: Vec::new() }));
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|&count| count <= limits.max_args)
        .ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;

    let mut pos = header.len;
    // Sized by what has arrived, so a 12-byte `*<huge>` header allocates nothing big.
    let mut args = Vec::with_capacity(count.min((data.len() - pos) / MIN_ARG_BYTES));
    for _ in 0..count {
        let Some(range) = measure_bulk(data, pos, limits)? else {
            return Ok(None);
        };
        pos = range.end + 2;
        args.push(range);
    }
    Ok(Some(MultibulkFrame { len: pos, args }))
}

/// Reads the `$<len>` argument starting at `pos` and returns where its data lies,
/// `Ok(None)` while the data and its `\r\n` have not all arrived.
fn measure_bulk(
    data: &[u8],
    pos: usize,
    limits: &Limits,
) -> Result<Option<Range<usize>>, ProtocolError> {
    let Some(header) = read_header_line(&data[pos..], "too big bulk count string")? else {
        return Ok(None);
    };
    if header.marker != b'$' {
        return Err(ProtocolError(format!("expected '$', got '{}'", describe_byte(header.marker))));
    }
    let len = header
        .value()
        .and_then(|len| usize::try_from(len).ok())
        .filter(|&len| len <= limits.max_bulk_bytes)
        .ok_or_else(|| ProtocolError::new("invalid bulk length"))?;

    let start = pos + header.len;
    // Saturating: a `max_bulk_bytes` near `usize::MAX` then just waits for data that
    // cannot come.
    let end = start.saturating_add(len);
    // Compare lengths before touching the data: a big bulk arriving piecemeal is
    // never scanned.
    let Some(terminator) = data.get(end..end.saturating_add(2)) else {
        return Ok(None);
    };
    if terminator != b"\r\n" {
        return Err(ProtocolError::new("expected CRLF after bulk data"));
    }
    Ok(Some(start..end))
}

/// One `*<n>` or `$<len>` line at the front of some bytes.
struct HeaderLine<'a> {
    /// The line's first byte: `*` or `$` in a well-formed request.
    marker: u8,
    /// The bytes between the marker and the `\r`.
    number: &'a [u8],
    /// Whether the `\r` is followed by `\n`.
    crlf: bool,
    /// Bytes the line takes, its terminator included.
    len: usize,
}

impl HeaderLine<'_> {
    /// Returns the line's number when the line is well formed.
    fn value(&self) -> Option<i64> {
        if self.crlf {
            parse_redis_int(self.number)
        } else {
            None
        }
    }
}

/// Finds the header line at the front of `data`. `Ok(None)` while its `\r\n` has not
/// arrived; `too_big` when more than [`MAX_HEADER_BYTES`] have come without a `\r`.
fn read_header_line<'a>(
    data: &'a [u8],
    too_big: &str,
) -> Result<Option<HeaderLine<'a>>, ProtocolError> {
    let window = &data[..data.len().min(MAX_HEADER_BYTES + 1)];
    let Some(cr) = window.iter().position(|&byte| byte == b'\r') else {
        if data.len() > MAX_HEADER_BYTES {
            return Err(ProtocolError::new(too_big));
        }
        return Ok(None);
    };
    let Some(&after_cr) = data.get(cr + 1) else {
        return Ok(None);
    };
    Ok(Some(HeaderLine {
        marker: data[0],
        number: data.get(1..cr).unwrap_or_default(),
        crlf: after_cr == b'\n',
        len: cr + 2,
    }))
}

/// Parses a decimal the way redis-server's `string2ll` does: an optional `-`, no `+`,
/// no leading zeros, no spaces, no `-0`.
fn parse_redis_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Shows a byte in an error message: itself when printable, else `\xHH`.
fn describe_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() || byte == b' ' {
        char::from(byte).to_string()
    } else {
        format!("\\x{byte:02x}")
    }
}

/// Takes one inline command line off `buf` once its `\n` has arrived.
fn take_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let window = &buf[..buf.len().min(limits.max_inline_bytes.saturating_add(1))];
    let Some(newline) = window.iter().position(|&byte| byte == b'\n') else {
        if buf.len() > limits.max_inline_bytes {
            return Err(ProtocolError::new("too big inline request"));
        }
        return Ok(None);
    };
    let line = match &buf[..newline] {
        [line @ .., b'\r'] => line,
        line => line,
    };
    let args = split_inline_args(line)
        .ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
    buf.advance(newline + 1);
    Ok(Some(args))
}

/// Splits an inline command line into arguments like redis-server's `sdssplitargs`;
/// `None` for unbalanced quotes or a closing quote followed by something other than
/// whitespace.
fn split_inline_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut args = Vec::new();
    let mut pos = 0;
    loop {
        while line.get(pos).is_some_and(|&byte| is_c_space(byte)) {
            pos += 1;
        }
        if pos == line.len() {
            return Some(args);
        }
        let (arg, next) = read_inline_token(line, pos)?;
        args.push(Bytes::from(arg));
        pos = next;
    }
}

/// Reads the token starting at `pos` (not whitespace) and returns it with the position
/// after it. A quoted part ends the token.
fn read_inline_token(line: &[u8], mut pos: usize) -> Option<(Vec<u8>, usize)> {
    let mut token = Vec::new();
    loop {
        match line.get(pos) {
            None | Some(b' ' | b'\n' | b'\r' | b'\t') => return Some((token, pos)),
            Some(b'"') => {
                let next = read_double_quoted(line, pos + 1, &mut token)?;
                return Some((token, next));
            }
            Some(b'\'') => {
                let next = read_single_quoted(line, pos + 1, &mut token)?;
                return Some((token, next));
            }
            Some(&byte) => {
                token.push(byte);
                pos += 1;
            }
        }
    }
}

/// Appends the `"..."` part whose contents start at `pos` to `token`, decoding
/// `\n \r \t \b \a \xHH` and `\<any>`; returns the position after the closing quote.
fn read_double_quoted(line: &[u8], mut pos: usize, token: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(pos)? {
            b'\\' if pos + 1 < line.len() => {
                if let Some(byte) = hex_escape(line, pos) {
                    token.push(byte);
                    pos += 4;
                } else {
                    token.push(unescape(line[pos + 1]));
                    pos += 2;
                }
            }
            b'"' => return after_closing_quote(line, pos),
            byte => {
                token.push(byte);
                pos += 1;
            }
        }
    }
}

/// Appends the `'...'` part whose contents start at `pos` to `token`, decoding only
/// `\'`; returns the position after the closing quote.
fn read_single_quoted(line: &[u8], mut pos: usize, token: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(pos)? {
            b'\\' if line.get(pos + 1) == Some(&b'\'') => {
                token.push(b'\'');
                pos += 2;
            }
            b'\'' => return after_closing_quote(line, pos),
            byte => {
                token.push(byte);
                pos += 1;
            }
        }
    }
}

/// Returns the position after the closing quote at `quote`, `None` when the next byte
/// is neither whitespace nor the end of the line.
fn after_closing_quote(line: &[u8], quote: usize) -> Option<usize> {
    match line.get(quote + 1) {
        Some(&byte) if !is_c_space(byte) => None,
        _ => Some(quote + 1),
    }
}

/// Returns the byte a `\xHH` at `backslash` spells, `None` when it is not one (then
/// `\x` stands for a plain `x`).
fn hex_escape(line: &[u8], backslash: usize) -> Option<u8> {
    let [b'x', high, low] = *line.get(backslash + 1..backslash + 4)? else {
        return None;
    };
    let high = char::from(high).to_digit(16)?;
    let low = char::from(low).to_digit(16)?;
    u8::try_from(high * 16 + low).ok()
}

/// Returns the byte a `\<escaped>` in double quotes stands for.
fn unescape(escaped: u8) -> u8 {
    match escaped {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

/// Whether C's `isspace` holds for `byte` in the "C" locale.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

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

    const LIMITS: Limits =
        Limits { max_bulk_bytes: 1024 * 1024, max_args: 1024, max_inline_bytes: 64 * 1024 };

    fn parse(bytes: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        parse_command(&mut BytesMut::from(bytes), &LIMITS)
    }

    fn args(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|part| Bytes::copy_from_slice(part)).collect()
    }

    fn refusal(bytes: &[u8]) -> String {
        match parse(bytes) {
            Err(ProtocolError(text)) => text,
            other => panic!("expected a protocol error for {bytes:?}, got {other:?}"),
        }
    }

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

    const SET_COMMAND: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";

    #[test]
    fn multibulk_parses_whole() {
        let mut buf = BytesMut::from(SET_COMMAND);
        let command = parse_command(&mut buf, &LIMITS).unwrap();
        assert_eq!(command, Some(args(&[b"SET", b"key", b"value"])));
        assert!(buf.is_empty());
        assert_eq!(parse_command(&mut buf, &LIMITS).unwrap(), None);
    }

    #[test]
    fn multibulk_split_at_every_byte_waits_then_parses() {
        for split in 0..SET_COMMAND.len() {
            let mut buf = BytesMut::from(&SET_COMMAND[..split]);
            assert_eq!(parse_command(&mut buf, &LIMITS).unwrap(), None, "split at {split}");
            assert_eq!(&buf[..], &SET_COMMAND[..split], "a partial command stays buffered");
            buf.extend_from_slice(&SET_COMMAND[split..]);
            let command = parse_command(&mut buf, &LIMITS).unwrap();
            assert_eq!(command, Some(args(&[b"SET", b"key", b"value"])), "split at {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn multibulk_arriving_one_byte_at_a_time_parses_once() {
        let mut buf = BytesMut::new();
        let mut commands = Vec::new();
        for &byte in SET_COMMAND {
            buf.extend_from_slice(&[byte]);
            if let Some(command) = parse_command(&mut buf, &LIMITS).unwrap() {
                commands.push(command);
            }
        }
        assert_eq!(commands, vec![args(&[b"SET", b"key", b"value"])]);
    }

    #[test]
    fn header_lines_wait_for_their_crlf() {
        assert_eq!(parse(b"*").unwrap(), None);
        assert_eq!(parse(b"*1").unwrap(), None);
        assert_eq!(parse(b"*1\r").unwrap(), None);
        assert_eq!(parse(b"*1\r\n$").unwrap(), None);
        assert_eq!(parse(b"*1\r\n$3\r").unwrap(), None);
        assert_eq!(parse(b"*1\r\nfoo").unwrap(), None, "the '$' is checked once the line is in");
        assert_eq!(parse(b"*1\r\n$3\r\nabc\r").unwrap(), None);
    }

    #[test]
    fn big_bulk_arriving_in_chunks_is_taken_whole() {
        let value = vec![b'v'; 1024 * 1024];
        let mut wire = b"*2\r\n$3\r\nSET\r\n$1048576\r\n".to_vec();
        wire.extend_from_slice(&value);
        wire.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::new();
        let mut commands = Vec::new();
        for chunk in wire.chunks(4096) {
            buf.extend_from_slice(chunk);
            if let Some(command) = parse_command(&mut buf, &LIMITS).unwrap() {
                commands.push(command);
            }
        }
        assert_eq!(commands, vec![vec![Bytes::from_static(b"SET"), Bytes::from(value)]]);
    }

    #[test]
    fn pipelined_commands_come_off_one_at_a_time() {
        let mut buf =
            BytesMut::from(&b"*1\r\n$4\r\nPING\r\nECHO hi\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1"[..]);
        assert_eq!(parse_command(&mut buf, &LIMITS).unwrap(), Some(args(&[b"PING"])));
        assert_eq!(parse_command(&mut buf, &LIMITS).unwrap(), Some(args(&[b"ECHO", b"hi"])));
        assert_eq!(parse_command(&mut buf, &LIMITS).unwrap(), Some(args(&[b"GET", b"k"])));
        assert_eq!(parse_command(&mut buf, &LIMITS).unwrap(), None);
        assert_eq!(&buf[..], b"*1");
    }

    #[test]
    fn bulk_arguments_are_binary_safe_slices_of_the_buffer() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$6\r\na\r\n\0\xffb\r\n"[..]);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let command = parse_command(&mut buf, &LIMITS).unwrap().unwrap();
        assert_eq!(command, args(&[b"SET", b"a\r\n\0\xffb"]));
        for arg in &command {
            assert!(range.contains(&(arg.as_ptr() as usize)), "argument was copied");
        }
    }

    #[test]
    fn empty_bulk_and_empty_commands() {
        assert_eq!(parse(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n").unwrap(), Some(args(&[b"ECHO", b""])));
        let mut buf = BytesMut::from(&b"\r\n\n   \r\n*0\r\n*-1\r\n*-7\r\nPING\r\n"[..]);
        assert_eq!(parse_command(&mut buf, &LIMITS).unwrap(), Some(args(&[b"PING"])));
        assert!(buf.is_empty());
        let mut only_empty = BytesMut::from(&b"\r\n*0\r\n"[..]);
        assert_eq!(parse_command(&mut only_empty, &LIMITS).unwrap(), None);
        assert!(only_empty.is_empty(), "empty commands are consumed");
    }

    #[test]
    fn inline_commands_split_like_sdssplitargs() {
        assert_eq!(parse(b"PING\r\n").unwrap(), Some(args(&[b"PING"])));
        assert_eq!(parse(b"PING\n").unwrap(), Some(args(&[b"PING"])));
        assert_eq!(parse(b"  SET\t k   v \r\n").unwrap(), Some(args(&[b"SET", b"k", b"v"])));
        assert_eq!(parse(b"SET k \"a b\"\r\n").unwrap(), Some(args(&[b"SET", b"k", b"a b"])));
        assert_eq!(parse(b"SET k \"\"\r\n").unwrap(), Some(args(&[b"SET", b"k", b""])));
        assert_eq!(
            parse(b"SET k 'it\\'s \\n'\n").unwrap(),
            Some(args(&[b"SET", b"k", b"it's \\n"]))
        );
        assert_eq!(parse(b"SET k key\"a b\"\n").unwrap(), Some(args(&[b"SET", b"k", b"keya b"])));
        assert_eq!(parse(b"PING \"x\tx\"\n").unwrap(), Some(args(&[b"PING", b"x\tx"])));
        assert_eq!(parse(b"PING a\x0bb\n").unwrap(), Some(args(&[b"PING", b"a\x0bb"])));
        assert_eq!(parse(b"PING 'a'\x0b\n").unwrap(), Some(args(&[b"PING", b"a"])));
        assert_eq!(parse(b"PING\r\r\n").unwrap(), Some(args(&[b"PING"])));
    }

    #[test]
    fn inline_double_quotes_decode_escapes_and_hex() {
        let line = b"ECHO \"\\n\\r\\t\\b\\a\\\\\\\"\\q\\x41\\xfF\\xzz\\x4\"\r\n";
        let expected: &[u8] = b"\n\r\t\x08\x07\\\"qA\xffxzzx4";
        assert_eq!(parse(line).unwrap(), Some(args(&[b"ECHO", expected])));
    }

    #[test]
    fn inline_waits_for_its_newline() {
        let mut buf = BytesMut::from(&b"SET k \"v"[..]);
        assert_eq!(parse_command(&mut buf, &LIMITS).unwrap(), None);
        buf.extend_from_slice(b"\"\r\n");
        assert_eq!(parse_command(&mut buf, &LIMITS).unwrap(), Some(args(&[b"SET", b"k", b"v"])));
    }

    #[test]
    fn inline_refusals() {
        assert_eq!(refusal(b"SET k \"v\r\n"), "unbalanced quotes in request");
        assert_eq!(refusal(b"SET k 'v\r\n"), "unbalanced quotes in request");
        assert_eq!(refusal(b"SET k \"v\"x\r\n"), "unbalanced quotes in request");
        assert_eq!(refusal(b"SET k 'v'x\r\n"), "unbalanced quotes in request");
        assert_eq!(refusal(b"SET k \"v\\\"\r\n"), "unbalanced quotes in request");
        let limits = Limits { max_inline_bytes: 8, ..LIMITS };
        let mut long = BytesMut::from(&b"123456789"[..]);
        let error = parse_command(&mut long, &limits).unwrap_err();
        assert_eq!(error.0, "too big inline request");
        let mut at_limit = BytesMut::from(&b"12345678"[..]);
        assert_eq!(parse_command(&mut at_limit, &limits).unwrap(), None);
        at_limit.extend_from_slice(b"\n");
        assert_eq!(parse_command(&mut at_limit, &limits).unwrap(), Some(args(&[b"12345678"])));
    }

    #[test]
    fn multibulk_count_refusals() {
        assert_eq!(refusal(b"*abc\r\n"), "invalid multibulk length");
        assert_eq!(refusal(b"*3x\r\n"), "invalid multibulk length");
        assert_eq!(refusal(b"*+3\r\n"), "invalid multibulk length");
        assert_eq!(refusal(b"*03\r\n"), "invalid multibulk length");
        assert_eq!(refusal(b"*\r\n"), "invalid multibulk length");
        assert_eq!(refusal(b"*1\rX"), "invalid multibulk length");
        assert_eq!(refusal(b"*99999999999999999999999\r\n"), "invalid multibulk length");
        assert_eq!(refusal(b"*1025\r\n"), "invalid multibulk length");
        let mut too_long = b"*".to_vec();
        too_long.resize(MAX_HEADER_BYTES + 2, b'1');
        assert_eq!(refusal(&too_long), "too big mbulk count string");
        assert_eq!(parse(&too_long[..MAX_HEADER_BYTES]).unwrap(), None);
    }

    #[test]
    fn bulk_refusals() {
        assert_eq!(refusal(b"*1\r\n:3\r\n"), "expected '$', got ':'");
        assert_eq!(refusal(b"*1\r\nfoo\r\n"), "expected '$', got 'f'");
        assert_eq!(refusal(b"*1\r\n\r\n"), "expected '$', got '\\x0d'");
        assert_eq!(refusal(b"*1\r\n$-1\r\n"), "invalid bulk length");
        assert_eq!(refusal(b"*1\r\n$abc\r\n"), "invalid bulk length");
        assert_eq!(refusal(b"*1\r\n$\r\n"), "invalid bulk length");
        assert_eq!(refusal(b"*1\r\n$3\rX"), "invalid bulk length");
        assert_eq!(refusal(b"*1\r\n$1048577\r\n"), "invalid bulk length");
        assert_eq!(refusal(b"*1\r\n$3\r\nabcd\r\n"), "expected CRLF after bulk data");
        assert_eq!(refusal(b"*1\r\n$3\r\nabc\n\r"), "expected CRLF after bulk data");
        let mut too_long = b"*1\r\n$".to_vec();
        too_long.resize(4 + MAX_HEADER_BYTES + 1, b'1');
        assert_eq!(refusal(&too_long), "too big bulk count string");
        assert_eq!(parse(&too_long[..4 + MAX_HEADER_BYTES]).unwrap(), None);
    }

    #[test]
    fn limits_are_refused_from_the_header_alone() {
        assert_eq!(refusal(b"*99999999\r\n"), "invalid multibulk length");
        assert_eq!(refusal(b"*1\r\n$999999999\r\n"), "invalid bulk length");
        assert_eq!(refusal(b"*3\r\n$3\r\nSET\r\n$999999999\r\n"), "invalid bulk length");
        // The largest bulk the limits allow is waited for, not refused.
        assert_eq!(parse(b"*1\r\n$1048576\r\n").unwrap(), None);
    }

    #[test]
    fn protocol_error_displays_as_redis_writes_it() {
        let error = ProtocolError("invalid bulk length".to_owned());
        assert_eq!(error.to_string(), "Protocol error: invalid bulk length");
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
