//! The streaming path: a connection whose first request is `GET …/events` (SSE) is
//! answered outside hyper's connection machinery.
//!
//! Why: hyper keeps two 8 KiB buffers for as long as a connection lives (the response
//! head's, and the read buffer it reserves again to notice a client that goes away), the
//! larger part of what an idle SSE client costs (docs/decisions.md has the heap profile).
//! Here the request head is parsed with httparse from a peek, the request goes through
//! the same router (routes, middleware, handlers: nothing else differs), and the response
//! is written chunked straight to the socket; a client that goes away is noticed by a
//! one-byte peek. When the stream ends, the connection goes on under hyper.
//!
//! Anything else is left to hyper untouched, since detecting only peeks: other methods
//! and paths, a request with a body, HTTP/1.0, a head that did not arrive whole in the
//! first read.

use std::io::{self, Write as _};

use axum::body::{Body, HttpBody};
use axum::Router;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::api::STREAM_ROUTES;

/// The most bytes of a request head looked at; a longer head goes to hyper.
const MAX_HEAD: usize = 8 * 1024;
/// The most headers a request on this path may carry.
const MAX_HEADERS: usize = 64;

/// What a connection starts with.
pub(super) enum Opening {
    /// A request for this path, parsed; its head is `head_len` bytes on the socket.
    Stream { request: Box<Request<Body>>, head_len: usize },
    /// Anything else, for hyper.
    Other,
    /// The client closed before sending anything.
    Closed,
}

/// Looks at the first bytes of `stream` without consuming them.
pub(super) async fn open(stream: &TcpStream) -> io::Result<Opening> {
    // Idle connections hold no buffer: it is made once the client has sent something.
    stream.readable().await?;
    let mut buf = vec![0; MAX_HEAD];
    let len = stream.peek(&mut buf).await?;
    if len == 0 {
        return Ok(Opening::Closed);
    }
    Ok(match parse(&buf[..len]) {
        Some((request, head_len)) => Opening::Stream { request: Box::new(request), head_len },
        None => Opening::Other,
    })
}

/// Parses a complete request head that this path serves.
pub(crate) fn parse(bytes: &[u8]) -> Option<(Request<Body>, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(bytes).ok()? else { return None };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let target = parsed.path?;
    if !is_stream_path(target.split('?').next().unwrap_or_default()) {
        return None;
    }
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        map.append(name, value);
    }
    // A body (or a request to change protocols) is hyper's business, and so is anything
    // but a single `Content-Length: 0`: bytes a second length announces must not be left
    // on the socket for hyper to read as the next request.
    let mut lengths = map.get_all(http::header::CONTENT_LENGTH).iter();
    let has_body = match (lengths.next(), lengths.next()) {
        (None, _) => false,
        (Some(length), None) => length != "0",
        (Some(_), Some(_)) => true,
    } || map.contains_key(http::header::TRANSFER_ENCODING);
    if has_body || map.contains_key(http::header::UPGRADE) || map.contains_key(http::header::EXPECT)
    {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(target)
        .version(Version::HTTP_11)
        .body(Body::empty())
        .ok()?;
    // The router routes by the parsed path, which may differ from the raw target (a
    // fragment is dropped: `/api/searches/a#/events` is `/api/searches/a`; found by
    // fuzzing, fuzz/regressions/stream_head/): it must be a stream path too.
    if !is_stream_path(request.uri().path()) {
        return None;
    }
    *request.headers_mut() = map;
    Some((request, head_len))
}

/// Returns whether `path` is one of the router's SSE routes ([`STREAM_ROUTES`]).
fn is_stream_path(path: &str) -> bool {
    STREAM_ROUTES.iter().any(|route| matches_route(route, path))
}

/// Returns whether `path` matches `route`, whose `{name}` segments each match one
/// non-empty segment, as the router matches them.
fn matches_route(route: &str, path: &str) -> bool {
    let (mut route, mut path) = (route.split('/'), path.split('/'));
    loop {
        match (route.next(), path.next()) {
            (None, None) => return true,
            (Some(wanted), Some(segment)) if wanted.starts_with('{') && wanted.ends_with('}') => {
                if segment.is_empty() {
                    return false;
                }
            }
            (Some(wanted), Some(segment)) if wanted == segment => {}
            _ => return false,
        }
    }
}

/// Answers `request` on `stream` (its head, `head_len` bytes, not yet consumed) and
/// returns the stream when the connection may go on with another request.
pub(super) async fn serve(
    mut stream: TcpStream,
    request: Box<Request<Body>>,
    head_len: usize,
    router: Router,
) -> io::Result<Option<TcpStream>> {
    let request = *request;
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut vec![0; head_len]).await?;
    let close = request.headers().get_all(http::header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&byte| byte == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    });
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let (parts, body) = response.into_parts();
    let no_body = parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED
        || parts.status.is_informational();
    let length = body.size_hint().exact();
    let chunked = !no_body && length.is_none();

    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if [http::header::CONTENT_LENGTH, http::header::TRANSFER_ENCODING, http::header::CONNECTION]
            .contains(name)
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match length {
        _ if no_body => {}
        Some(length) => head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes()),
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    stream.write_all(&head).await?;
    drop(head);

    if no_body {
        stream.flush().await?;
        return Ok((!close).then_some(stream));
    }
    let mut data = body.into_data_stream();
    let mut watching = true;
    {
        let (mut reader, mut writer) = stream.split();
        let mut probe = [0_u8; 1];
        loop {
            tokio::select! {
                next = data.next() => match next {
                    Some(Ok(bytes)) if bytes.is_empty() => {}
                    Some(Ok(bytes)) if chunked => {
                        // One write per chunk: with TCP_NODELAY, three small writes are
                        // three segments, and the client waits for the last.
                        let mut chunk = Vec::with_capacity(bytes.len() + 12);
                        // Upper-case hex, as hyper writes chunk sizes: the same bytes.
                        write!(chunk, "{:X}\r\n", bytes.len())?;
                        chunk.extend_from_slice(&bytes);
                        chunk.extend_from_slice(b"\r\n");
                        writer.write_all(&chunk).await?;
                    }
                    Some(Ok(bytes)) => writer.write_all(&bytes).await?,
                    Some(Err(error)) => {
                        tracing::debug!(%error, "a streamed response failed; closing");
                        return Ok(None);
                    }
                    None => break,
                },
                peeked = reader.peek(&mut probe), if watching => match peeked {
                    // The client went away: drop the stream and what it holds.
                    Ok(0) | Err(_) => return Ok(None),
                    // It sent the next request already: hyper reads it afterwards.
                    Ok(_) => watching = false,
                },
            }
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        writer.flush().await?;
    }
    Ok((!close).then_some(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_sse_gets_without_a_body_take_this_path() {
        let events =
            b"GET /api/trackers/abc/events?x=1 HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 1:2\r\n\r\n";
        let (request, head_len) = parse(events).expect("an SSE request");
        assert_eq!(head_len, events.len());
        assert_eq!(request.uri().path(), "/api/trackers/abc/events");
        assert_eq!(request.uri().query(), Some("x=1"));
        assert_eq!(request.headers()["last-event-id"], "1:2");
        assert!(parse(b"GET /api/searches/s1/events HTTP/1.1\r\n\r\nGET /next").is_some());

        for other in [
            &b"GET /api/searches/s1/events HTTP/1.1\r\nHost: a\r\n"[..], // not whole yet
            b"GET /api/searches/s1/events HTTP/1.0\r\n\r\n",
            b"POST /api/searches/s1/events HTTP/1.1\r\n\r\n",
            b"HEAD /api/searches/s1/events HTTP/1.1\r\n\r\n",
            b"GET /api/searches/s1 HTTP/1.1\r\n\r\n",
            b"GET /api/searches//events HTTP/1.1\r\n\r\n",
            b"GET /api/searches/a/b/events HTTP/1.1\r\n\r\n",
            b"GET /api/sessions/s1/events HTTP/1.1\r\n\r\n",
            // Routed as `/api/searches/a`, fragment dropped.
            b"GET /api/searches/a#/events HTTP/1.1\r\n\r\n",
            b"GET /api/searches/s1/events HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            // A second length must not leave its body on the socket for hyper.
            b"GET /api/searches/s1/events HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nGET /",
            b"GET /api/searches/s1/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /api/searches/s1/events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(parse(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
        assert!(
            parse(b"GET /api/searches/s1/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some()
        );
        assert!(is_stream_path("/api/trackers/t/events") && !is_stream_path("/api/trackers/t"));
        assert!(
            !is_stream_path("/api/trackers/t/events/") && !is_stream_path("api/trackers/t/events")
        );
    }
}
