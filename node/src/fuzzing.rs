//! Entry points for the fuzz targets (`fuzz/`) and their regression tests: each takes
//! the fuzzer's bytes and panics when a property fails.

use shoal_raft::auth::ReplayGuard;
use shoal_raft::ClusterSecret;

use crate::gossip::transport::Sealer;

/// Offers `data` to the streaming path's head parser, as the first bytes of a
/// connection. A head it takes is a whole `GET` of an events path in HTTP/1.1 with no
/// body and nothing that changes protocols, ends where it says with an empty line, and
/// reaches the router with the path it checked; the bytes after it are left for hyper
/// as the next request.
pub fn stream_head(data: &[u8]) {
    let Some((request, head_len)) = crate::http::parse_stream_head(data) else { return };
    assert!(head_len <= data.len());
    // Empty lines before the request line are skipped (RFC 9112, 2.2), by hyper too.
    let skipped = data.iter().take_while(|byte| matches!(byte, b'\r' | b'\n')).count();
    let head = &data[skipped.min(head_len)..head_len];
    // httparse, like hyper (which parses with it), ends a line at `\n` or `\r\n`.
    assert!(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"), "the head ends early");
    assert!(head.starts_with(b"GET "), "not a GET");
    assert_eq!(request.method(), http::Method::GET);
    assert_eq!(request.version(), http::Version::HTTP_11);
    let path = request.uri().path();
    let request_line = head.split(|byte| *byte == b'\n').next().unwrap_or_default();
    let request_line = std::str::from_utf8(request_line).expect("a target the router took is text");
    let raw_target = request_line.split(' ').nth(1).unwrap_or("");
    assert_eq!(path, raw_target.split('?').next().unwrap_or(""), "the router sees another path");
    assert!(path.ends_with("/events") && path.starts_with("/api/"), "{path}");
    let headers = request.headers();
    for name in [http::header::TRANSFER_ENCODING, http::header::UPGRADE, http::header::EXPECT] {
        assert!(!headers.contains_key(&name), "took a request with {name}");
    }
    let lengths: Vec<_> = headers.get_all(http::header::CONTENT_LENGTH).iter().collect();
    assert!(lengths.is_empty() || lengths == ["0"], "took a request with a body: {lengths:?}");
}

/// Offers `data` to the gossip transport as a datagram from a stranger (never opened),
/// then seals a payload from it and checks that it opens once and never again.
pub fn gossip_datagram(data: &[u8]) {
    let now = 5_000_000;
    let replays = ReplayGuard::new(now - 60_000);
    let mut ours = Sealer::new(ClusterSecret::new(b"the cluster's secret".to_vec()));
    assert!(ours.open(data, &replays, now).is_err(), "a stranger's datagram opened");
    let mut theirs = Sealer::new(ClusterSecret::new(b"another secret".to_vec()));
    let foreign = theirs.seal(data, now);
    assert!(ours.open(&foreign, &replays, now).is_err(), "another secret's datagram opened");
    // Within the 30 s of skew a datagram may carry.
    let skew = i64::from(data.first().copied().unwrap_or(0) as i8 % 100) * 250;
    let sealed = ours.seal(data, now.saturating_add_signed(skew));
    assert_eq!(ours.open(&sealed, &replays, now).expect("a fresh sealed datagram opens"), data);
    assert!(ours.open(&sealed, &replays, now + 1).is_err(), "a replayed datagram opened");
    let mut tampered = sealed.clone();
    let at = usize::from(data.get(1).copied().unwrap_or(0)) % tampered.len();
    tampered[at] ^= 0x20;
    assert!(ours.open(&tampered, &replays, now).is_err(), "a tampered datagram opened");
}

/// Offers `data` to the RESP request parser twice, whole and one byte at a time (as a
/// client that trickles bytes sends it), with small limits: both see the same commands
/// and the same refusal, every argument stays within the limits, and a refusal leaves
/// nothing half taken that a later call could misread.
pub fn resp_request(data: &[u8]) {
    use crate::resp::request::{Limits, Parser};
    let limits = Limits { max_bulk_bytes: 64, max_args: 8, max_inline_bytes: 128 };
    let run = |chunk: usize| {
        let (mut parser, mut buf) = (Parser::new(limits), bytes::BytesMut::new());
        let mut commands = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match parser.next(&mut buf) {
                    Ok(Some(command)) => commands.push(command),
                    Ok(None) => break,
                    Err(error) => return (commands, Some(error)),
                }
            }
        }
        (commands, None)
    };
    let (whole, whole_error) = run(data.len());
    let (trickled, trickled_error) = run(1);
    for command in &whole {
        assert!(!command.is_empty() && command.len() <= limits.max_args);
    }
    // Inline lines are judged by their length as they grow, so a long one may be refused
    // byte by byte where whole it was read with its newline: compare only without that.
    let inline_limit = |error: &Option<crate::resp::request::ProtocolError>| {
        error.as_ref().is_some_and(|error| error.0.contains("inline"))
    };
    if !inline_limit(&whole_error) && !inline_limit(&trickled_error) {
        assert_eq!(whole, trickled, "whole and byte by byte differ");
        assert_eq!(whole_error, trickled_error);
    }
}
