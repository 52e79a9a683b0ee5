//! RESP requests on the server side (replies are `reply.rs`).
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
//!   and a [`Parser`] resumes a partly arrived command where it stopped, so a command
//!   arriving in many reads costs one walk over its header lines in all.
//! - Replies are `reply.rs`'s.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

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
/// and the connection must close. A connection uses a [`Parser`], which does the same
/// without walking a partly arrived command again from its start on every call.
pub fn parse_command(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    Parser::new(*limits).next(buf)
}

/// Takes commands off a connection's read buffer, remembering how far it got into a
/// multibulk command that has not all arrived: the buffer only grows at its end until
/// the command is taken, so the arguments measured so far stay where they are, and a
/// command trickling in byte by byte is walked once in all, not once per read.
#[derive(Debug)]
pub struct Parser {
    limits: Limits,
    partial: Option<Partial>,
}

/// The measured start of a multibulk command that has not all arrived.
#[derive(Debug)]
struct Partial {
    count: usize,
    /// Where the next argument's header starts.
    pos: usize,
    args: Vec<Range<usize>>,
}

impl Parser {
    /// Returns a parser that refuses what `limits` refuses.
    pub fn new(limits: Limits) -> Self {
        Self { limits, partial: None }
    }

    /// Takes the next command off `buf`, as [`parse_command`] does.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let command = if first == b'*' {
                self.take_multibulk(buf)?
            } else {
                take_inline(buf, &self.limits)?
            };
            match command {
                None => return Ok(None),
                Some(args) if args.is_empty() => continue,
                Some(args) => return Ok(Some(args)),
            }
        }
    }

    /// Takes a `*<n>` command off `buf` once all of it is there.
    fn take_multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let partial = self.partial.take();
        let frame = match measure_multibulk(buf, &self.limits, partial)? {
            Measured::Complete(frame) => frame,
            Measured::Partial(partial) => {
                self.partial = partial;
                return Ok(None);
            }
        };
        let command = buf.split_to(frame.len).freeze();
        Ok(Some(frame.args.into_iter().map(|range| command.slice(range)).collect()))
    }
}

/// What a walk over a multibulk command found.
enum Measured {
    Complete(MultibulkFrame),
    /// Not all there yet; how far the walk got (`None`: not past the count line).
    Partial(Option<Partial>),
}

/// Where a complete multibulk command's arguments lie in the buffer.
struct MultibulkFrame {
    /// Bytes the whole command takes.
    len: usize,
    /// Each argument's bytes, as offsets from the start of the command.
    args: Vec<Range<usize>>,
}

/// Walks a multibulk command's header lines, stepping over bulk data by its declared
/// length without reading it, from where an earlier walk over the same command stopped
/// (`resume`). [`Measured::Partial`] until the whole command has arrived.
fn measure_multibulk(
    data: &[u8],
    limits: &Limits,
    resume: Option<Partial>,
) -> Result<Measured, ProtocolError> {
    let mut partial = match resume {
        Some(partial) => partial,
        None => {
            let Some(header) = read_header_line(data, "too big mbulk count string")? else {
                return Ok(Measured::Partial(None));
            };
            let count =
                header.value().ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
            if count <= 0 {
                return Ok(Measured::Complete(MultibulkFrame {
                    len: header.len,
                    args: Vec::new(),
                }));
            }
            let count = usize::try_from(count)
                .ok()
                .filter(|&count| count <= limits.max_args)
                .ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
            let pos = header.len;
            // Sized by what has arrived, so a 12-byte `*<huge>` header allocates nothing big.
            let args = Vec::with_capacity(count.min((data.len() - pos) / MIN_ARG_BYTES));
            Partial { count, pos, args }
        }
    };
    while partial.args.len() < partial.count {
        let Some(range) = measure_bulk(data, partial.pos, limits)? else {
            return Ok(Measured::Partial(Some(partial)));
        };
        partial.pos = range.end + 2;
        partial.args.push(range);
    }
    Ok(Measured::Complete(MultibulkFrame { len: partial.pos, args: partial.args }))
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

#[cfg(test)]
mod tests {
    use super::*;

    const SET_COMMAND: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";

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

    #[test]
    fn a_parser_resumes_a_command_arriving_byte_by_byte() {
        let mut pipeline = SET_COMMAND.to_vec();
        pipeline.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
        let mut parser = Parser::new(LIMITS);
        let mut buf = BytesMut::new();
        let mut commands = Vec::new();
        for byte in pipeline {
            buf.extend_from_slice(&[byte]);
            while let Some(command) = parser.next(&mut buf).expect("valid") {
                commands.push(command);
            }
        }
        assert_eq!(commands, vec![args(&[b"SET", b"key", b"value"]), args(&[b"GET", b"key"])]);
        assert!(buf.is_empty());
    }

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
}
