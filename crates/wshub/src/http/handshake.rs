//! The start of every TCP connection: reads the request head itself. A WebSocket upgrade
//! (`GET /ws`) is decided here and answered in the connection's first write, together with
//! the first frames; anything else is served by hyper and axum, given the bytes read so far.
//!
//! Why not let hyper read every request: a WebSocket connection uses HTTP for one request.
//! Going through hyper's connection, axum's router and hyper's upgrade cost a second task,
//! hyper's buffers and a dozen allocations per connection, and the 101 went out in a write
//! of its own. Connection churn (clients reconnecting after a deploy, mobile clients coming
//! and going) is bounded by that per-connection work.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::upgrade::{self, Refusal};
use super::{Prefixed, RemoteAddr};
use crate::conn::{Opening, Upgraded};
use crate::node::Node;

/// Longest request head read directly; a longer one is refused with 431.
pub(super) const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a head read directly; a request with more goes to hyper (which refuses it
/// past its own limit).
const MAX_HEADERS: usize = 64;
/// A head's first read (at most 4 KiB, and the buffer then holds exactly what arrived);
/// later reads of a longer head add this much.
const READ_CHUNK: usize = 4096;

/// The connection's task starts with this: `Some` for a WebSocket whose 101 is ready to be
/// sent, `None` when the connection was served as HTTP, refused, or went away.
pub(crate) fn open(
    node: Arc<Node>,
    router: Router,
    mut stream: TcpStream,
    remote: SocketAddr,
) -> Opening {
    Box::pin(async move {
        let handshake_timeout = node.config().limits.handshake_timeout;
        let shutdown = node.shutdown.clone();
        let mut head = BytesMut::new();
        let read = tokio::select! {
            read = tokio::time::timeout(handshake_timeout, read_head(&mut stream, &mut head)) => read,
            _ = shutdown.cancelled() => return None,
        };
        let head_len = match read {
            Ok(Ok(Some(len))) => len,
            Ok(Ok(None)) => {
                refuse(
                    stream,
                    &Refusal::new(
                        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "Request Header Fields Too Large",
                    ),
                )
                .await;
                return None;
            }
            // Gone before a whole request, or too slow to send one.
            Ok(Err(_)) | Err(_) => return None,
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(&head[..head_len]);
        let (path, query) = req.path.map_or(("", None), |p| {
            p.split_once('?').map_or((p, None), |(p, q)| (p, Some(q)))
        });
        if !matches!(parsed, Ok(httparse::Status::Complete(_)))
            || req.method != Some("GET")
            || path != "/ws"
        {
            // Boxed: hyper's connection state is large, and only HTTP requests need it.
            Box::pin(serve_http(
                node,
                router,
                Prefixed::new(head.freeze(), stream),
                remote,
            ))
            .await;
            return None;
        }
        let decided = upgrade::decide(&node, &*req.headers, query, remote);
        let accepted = match decided {
            Ok(accepted) => accepted,
            Err(refusal) => {
                refuse(stream, &refusal).await;
                return None;
            }
        };
        // Frames a client sent right behind its request (not waiting for the 101), copied
        // so the head's buffer is freed.
        let leftover = Bytes::copy_from_slice(&head[head_len..]);
        Some(Upgraded {
            greeting: Some(accepted.response_bytes()),
            stream,
            leftover,
            start: accepted.start,
            slot: accepted.slot,
        })
    })
}

/// Reads until the head (up to its blank line) is in `buf`: `Some(its length)`, or `None`
/// past [`MAX_HEAD`].
async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<Option<usize>> {
    let mut searched = 0;
    loop {
        if let Some(end) = find_head_end(buf, searched) {
            return Ok(Some(end));
        }
        if buf.len() >= MAX_HEAD {
            return Ok(None);
        }
        searched = buf.len().saturating_sub(3);
        let read = if buf.is_empty() {
            std::future::poll_fn(|cx| crate::conn::poll_read_sized(cx, stream, buf, READ_CHUNK))
                .await
        } else {
            stream.readable().await?;
            buf.reserve(READ_CHUNK);
            stream.try_read_buf(buf)
        };
        match read {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// The length of the head (through `\r\n\r\n`), searching from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

/// Answers with `refusal` and closes.
async fn refuse(mut stream: TcpStream, refusal: &Refusal) {
    tracing::debug!(status = %refusal.status, text = refusal.text, "upgrade refused");
    let _ = stream.write_all(&refusal.response_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Serves the connection as HTTP/1 (the API, `/health`, `/metrics`, static files, and a
/// WebSocket upgrade that comes after other requests on a kept-alive connection).
async fn serve_http(node: Arc<Node>, router: Router, io: Prefixed, remote: SocketAddr) {
    let handshake_timeout = node.config().limits.handshake_timeout;
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(RemoteAddr(remote));
            router.clone().oneshot(req)
        });
    let conn = hyper::server::conn::http1::Builder::new()
        // A client that opens a socket and never finishes its request is dropped.
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, %remote, "http connection error");
            }
        }
        _ = node.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_end_of_a_head_split_anywhere() {
        let head = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(find_head_end(head, 0), Some(head.len() - 4));
        // However the bytes arrived, searching from three before the previous end finds it.
        for cut in 0..head.len() {
            let searched = cut.saturating_sub(3);
            let first = find_head_end(&head[..cut], 0);
            let found = first.or_else(|| find_head_end(head, searched));
            assert_eq!(found, Some(head.len() - 4), "cut at {cut}");
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n", 0), None);
        assert_eq!(find_head_end(b"ab", 5), None);
    }
}
