//! Server-side RFC 6455 frame reader.
//!
//! Why not the reader of tokio-tungstenite or fastwebsockets: both keep a read buffer
//! allocated for the whole life of a connection (tungstenite 128 KiB by default, 4 KiB at
//! the least; fastwebsockets a fixed 8 KiB). Per-connection memory is the product, and most
//! sockets of a real-time hub are idle most of the time. This reader waits for readability
//! *without* a buffer, allocates one only when bytes arrive, and drops it again as soon as
//! every received byte has been handed out. An idle connection holds no read buffer at all.
//!
//! It enforces what a server must: client frames are masked, reserved bits are zero,
//! control frames are final and at most 125 bytes, fragments interleave correctly, text is
//! UTF-8, and no message exceeds `max_message_size` (checked from the header, before the
//! payload is buffered).

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

/// A complete message or a control frame.
#[derive(Debug, PartialEq)]
pub(crate) enum Incoming {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// The close code the client sent, if any.
    Close(Option<u16>),
}

/// Why reading stopped. Each maps to one close code in `conn`.
#[derive(Debug, PartialEq)]
pub(crate) enum ReadError {
    /// The peer closed the TCP connection (or it broke).
    Eof,
    /// A protocol violation; the text is for logs.
    Protocol(&'static str),
    /// The message would exceed `max_message_size`.
    TooBig,
    /// A text message that is not UTF-8.
    InvalidUtf8,
}

/// Most bytes [`poll_read_sized`] reads at once (on the stack).
const STACK_READ: usize = 4096;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

pub(crate) struct FrameReader {
    buf: BytesMut,
    /// A fragmented message being assembled: (is_text, payload so far). Boxed: it is rare,
    /// and this struct lives in every connection's task.
    partial: Option<Box<(bool, BytesMut)>>,
    max_message: usize,
    read_chunk: usize,
}

impl FrameReader {
    /// `leftover` is what the HTTP layer had already read past the upgrade request.
    pub(crate) fn new(leftover: Bytes, max_message: usize, read_chunk: usize) -> Self {
        FrameReader {
            buf: BytesMut::from(&leftover[..]),
            partial: None,
            max_message,
            read_chunk: read_chunk.max(256),
        }
    }

    /// Reads until one message or control frame is complete.
    ///
    /// `max_message` is re-read before each parse, so a config reload reaches a connection
    /// that is already waiting for data.
    pub(crate) async fn next(
        &mut self,
        stream: &mut TcpStream,
        max_message: &AtomicUsize,
    ) -> Result<Incoming, ReadError> {
        std::future::poll_fn(|cx| self.poll_next(cx, &mut *stream, max_message)).await
    }

    /// [`next`](Self::next) as a poll, for the connection's hand-written future. All state
    /// lives in `self`, so a `Pending` here loses nothing.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut TcpStream,
        max_message: &AtomicUsize,
    ) -> Poll<Result<Incoming, ReadError>> {
        loop {
            self.max_message = max_message.load(Ordering::Relaxed);
            if let Some(needed) = self.more_needed()? {
                let read = if self.buf.is_empty() {
                    // Nothing buffered: the allocation was given back before waiting, so an
                    // idle connection holds no read buffer.
                    self.buf = BytesMut::new();
                    ready!(poll_read_sized(cx, stream, &mut self.buf, self.read_chunk))
                } else {
                    if ready!(stream.poll_read_ready(cx)).is_err() {
                        return Poll::Ready(Err(ReadError::Eof));
                    }
                    self.buf.reserve(needed.max(self.read_chunk));
                    // `try_read_buf` clears the readiness on `WouldBlock`, so the next
                    // `poll_read_ready` registers for the next wake-up.
                    stream.try_read_buf(&mut self.buf)
                };
                match read {
                    Ok(0) => return Poll::Ready(Err(ReadError::Eof)),
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return Poll::Ready(Err(ReadError::Eof)),
                }
            }
            if let Some(msg) = self.take_frame()? {
                return Poll::Ready(Ok(msg));
            }
        }
    }

    /// `Some(n)`: at least `n` more bytes are needed before the next frame is complete.
    fn more_needed(&self) -> Result<Option<usize>, ReadError> {
        match self.header()? {
            None => Ok(Some(14 - self.buf.len().min(13))),
            Some(h) => {
                let total = h.header_len + h.payload_len;
                Ok((self.buf.len() < total).then(|| total - self.buf.len()))
            }
        }
    }

    /// Parses the header at the front of `buf`, if complete, and validates it.
    fn header(&self) -> Result<Option<Header>, ReadError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        let opcode = b[0] & 0x0f;
        if b[1] & 0x80 == 0 {
            return Err(ReadError::Protocol("client frame not masked"));
        }
        let len7 = (b[1] & 0x7f) as usize;
        let (ext, payload_len) = match len7 {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (2, u16::from_be_bytes([b[2], b[3]]) as usize)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                let n = u64::from_be_bytes(n);
                if n >> 63 != 0 {
                    return Err(ReadError::Protocol("payload length has its top bit set"));
                }
                (8, usize::try_from(n).unwrap_or(usize::MAX))
            }
            n => (0, n),
        };
        let is_control = opcode & 0x8 != 0;
        if is_control {
            if !fin {
                return Err(ReadError::Protocol("fragmented control frame"));
            }
            if payload_len > 125 {
                return Err(ReadError::Protocol("control frame longer than 125 bytes"));
            }
        } else {
            let so_far = self.partial.as_ref().map_or(0, |p| p.1.len());
            if payload_len.saturating_add(so_far) > self.max_message {
                return Err(ReadError::TooBig);
            }
        }
        Ok(Some(Header {
            fin,
            opcode,
            header_len: 2 + ext + 4,
            payload_len,
        }))
    }

    /// Takes the complete frame at the front of `buf`. `None` when it was a non-final
    /// fragment (the caller reads on).
    fn take_frame(&mut self) -> Result<Option<Incoming>, ReadError> {
        let Some(h) = self.header()? else {
            return Ok(None);
        };
        let mut frame = self.buf.split_to(h.header_len + h.payload_len);
        let mask = [
            frame[h.header_len - 4],
            frame[h.header_len - 3],
            frame[h.header_len - 2],
            frame[h.header_len - 1],
        ];
        frame.advance(h.header_len);
        unmask(&mut frame, mask);
        match h.opcode {
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(ReadError::Protocol("new message inside a fragmented one"));
                }
                let is_text = h.opcode == OP_TEXT;
                if h.fin {
                    return finish(is_text, frame.freeze()).map(Some);
                }
                self.partial = Some(Box::new((is_text, frame)));
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some(mut partial) = self.partial.take() else {
                    return Err(ReadError::Protocol("continuation without a message"));
                };
                let (is_text, so_far) = &mut *partial;
                so_far.extend_from_slice(&frame);
                if h.fin {
                    let is_text = *is_text;
                    return finish(is_text, std::mem::take(so_far).freeze()).map(Some);
                }
                self.partial = Some(partial);
                Ok(None)
            }
            OP_CLOSE => match frame.len() {
                0 => Ok(Some(Incoming::Close(None))),
                1 => Err(ReadError::Protocol("close frame with a 1-byte payload")),
                _ => {
                    let code = u16::from_be_bytes([frame[0], frame[1]]);
                    if std::str::from_utf8(&frame[2..]).is_err() {
                        return Err(ReadError::InvalidUtf8);
                    }
                    Ok(Some(Incoming::Close(Some(code))))
                }
            },
            OP_PING => Ok(Some(Incoming::Ping(frame.freeze()))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            _ => Err(ReadError::Protocol("unknown opcode")),
        }
    }
}

struct Header {
    fin: bool,
    opcode: u8,
    header_len: usize,
    payload_len: usize,
}

fn finish(is_text: bool, payload: Bytes) -> Result<Incoming, ReadError> {
    if is_text {
        std::str::from_utf8(&payload).map_err(|_| ReadError::InvalidUtf8)?;
        Ok(Incoming::Text(payload))
    } else {
        Ok(Incoming::Binary(payload))
    }
}

/// XORs the payload with the 4-byte mask, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let mask8 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_ne_bytes(word) ^ mask8;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Reads up to `max` bytes (at most 4 KiB) into an empty `buf` through the stack, so that
/// the heap buffer is exactly as large as what arrived.
///
/// Why: most messages (and upgrade requests) are far smaller than a read chunk, and
/// reserving a whole chunk for each (4 KiB by default) made every read on an idle connection
/// a large allocation, which glibc's malloc serves outside its per-thread cache, after
/// consolidating its free chunks.
pub(crate) fn poll_read_sized(
    cx: &mut Context<'_>,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    max: usize,
) -> Poll<std::io::Result<usize>> {
    debug_assert!(buf.is_empty());
    let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); STACK_READ];
    let mut read = ReadBuf::uninit(&mut chunk[..max.clamp(1, STACK_READ)]);
    ready!(Pin::new(stream).poll_read(cx, &mut read))?;
    buf.extend_from_slice(read.filled());
    Poll::Ready(Ok(read.filled().len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn reader(bytes: Vec<u8>, max: usize) -> FrameReader {
        FrameReader::new(Bytes::from(bytes), max, 4096)
    }

    #[test]
    fn unmask_matches_bytewise_xor() {
        let mask = [1, 2, 3, 4];
        let original: Vec<u8> = (0..37u8).collect();
        let mut data = original.clone();
        unmask(&mut data, mask);
        for (i, b) in data.iter().enumerate() {
            assert_eq!(*b, original[i] ^ mask[i & 3]);
        }
    }

    #[test]
    fn parses_text_of_each_length_form() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload = "a".repeat(len);
            let mut r = reader(client_frame(true, OP_TEXT, payload.as_bytes()), 1 << 20);
            assert_eq!(r.more_needed().unwrap(), None, "len {len}");
            assert_eq!(
                r.take_frame().unwrap(),
                Some(Incoming::Text(Bytes::from(payload)))
            );
        }
    }

    #[test]
    fn assembles_fragments_with_interleaved_control() {
        let mut bytes = client_frame(false, OP_TEXT, b"hel");
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"lo"));
        let mut r = reader(bytes, 100);
        assert_eq!(r.take_frame().unwrap(), None);
        assert_eq!(
            r.take_frame().unwrap(),
            Some(Incoming::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(
            r.take_frame().unwrap(),
            Some(Incoming::Text(Bytes::from_static(b"hello")))
        );
    }

    #[test]
    fn rejects_what_a_server_must_reject() {
        let mut unmasked = client_frame(true, OP_TEXT, b"x");
        unmasked[1] &= 0x7f;
        assert!(matches!(
            reader(unmasked, 100).header(),
            Err(ReadError::Protocol(_))
        ));
        let mut rsv = client_frame(true, OP_TEXT, b"x");
        rsv[0] |= 0x40;
        assert!(matches!(
            reader(rsv, 100).header(),
            Err(ReadError::Protocol(_))
        ));
        assert_eq!(
            reader(client_frame(true, OP_TEXT, &[b'a'; 101]), 100)
                .header()
                .err(),
            Some(ReadError::TooBig)
        );
        assert_eq!(
            reader(client_frame(true, OP_TEXT, &[0xff, 0xfe]), 100)
                .take_frame()
                .err(),
            Some(ReadError::InvalidUtf8)
        );
        assert!(matches!(
            reader(client_frame(false, OP_PING, b""), 100).header(),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            reader(client_frame(true, OP_CONTINUATION, b"x"), 100).take_frame(),
            Err(ReadError::Protocol(_))
        ));
        // Fragments add up against the limit too.
        let mut bytes = client_frame(false, OP_BINARY, &[0; 60]);
        bytes.extend(client_frame(true, OP_CONTINUATION, &[0; 60]));
        let mut r = reader(bytes, 100);
        assert_eq!(r.take_frame().unwrap(), None);
        assert_eq!(r.header().err(), Some(ReadError::TooBig));
    }

    #[test]
    fn close_frame_code() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        assert_eq!(
            reader(client_frame(true, OP_CLOSE, &payload), 100)
                .take_frame()
                .unwrap(),
            Some(Incoming::Close(Some(1000)))
        );
    }
}
