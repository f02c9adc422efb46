//! A synchronous client for the one call on the hot path, the unary `Eval` RPC: HTTP/2 framing, HPACK
//! and gRPC message framing spoken directly over a blocking Unix socket, without starting tokio,
//! hyper or tonic.
//!
//! Why: a warm `flakectl eval` is a few milliseconds end to end, and building an async runtime, a
//! tonic channel (with its buffer task) and hyper's connection task, then polling them through a
//! dozen wake-ups, was a measurable share of it. Here the whole request (client preface, SETTINGS, a
//! connection WINDOW_UPDATE, HEADERS and DATA) leaves in one `write`, and the answer is read frame by
//! frame until the stream ends.
//!
//! Invariant: [`eval`] answers only when the exchange went the way a gRPC server's unary answer goes
//! (response headers with `:status 200`, at most one uncompressed message, trailers carrying
//! `grpc-status`), and then its answer is the one tonic derives from the same bytes (the status is
//! built by tonic's own `Status::from_header_map`). In every other case — no daemon answers (starting
//! one is the tonic path's job), an unexpected frame, an HPACK or protobuf decoding error, a reset
//! stream, a GOAWAY that did not take our request, a connection closed early — it returns
//! [`Fallback`] having printed nothing, and the caller sends the request again on the tonic path, so
//! what the user sees (output, error messages, exit codes) is exactly what that path shows.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use flaked_proto::v1 as pb;
use prost::Message;
use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (RFC 9113 section 6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

// Frame flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

// SETTINGS identifiers.
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// The one stream of the connection.
const STREAM: u32 = 1;
/// The largest frame payload accepted (announced as SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 1 << 20;
/// The receive window announced for the stream and opened for the connection: the largest allowed,
/// so that the server never waits for a WINDOW_UPDATE (one is still sent whenever half of it was used).
const WINDOW: u32 = (1 << 31) - 1;
/// Both of the server's windows, and its frame size limit, start at these until its SETTINGS arrive;
/// the request is sent before they do, so it must fit in them.
const PEER_INITIAL_WINDOW: usize = 65_535;
const PEER_INITIAL_MAX_FRAME: usize = 16_384;
/// The dynamic table size our HPACK decoder allows (SETTINGS_HEADER_TABLE_SIZE, left at its default).
const HEADER_TABLE_SIZE: usize = 4096;

/// What the daemon answered.
#[derive(Debug)]
pub enum Answer {
    /// The call succeeded: the reply message.
    Reply(pb::EvalResponse),
    /// The call failed with this gRPC status (never OK).
    Status(tonic::Status),
}

/// Why the fast path did not answer; the caller then takes the tonic path.
#[derive(Debug)]
pub struct Fallback(pub String);

fn fallback<T>(why: impl Into<String>) -> Result<T, Fallback> {
    Err(Fallback(why.into()))
}

/// Calls `flaked.v1.Flaked/Eval` with `req` on the daemon listening at `socket`. `max_reply` is the
/// largest reply message accepted (a larger one is left to the tonic path, which reports it).
pub fn eval(socket: &Path, req: &pb::EvalRequest, max_reply: usize) -> Result<Answer, Fallback> {
    let request = encode_request("/flaked.v1.Flaked/Eval", req)?;
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return fallback(format!("cannot connect: {e}")),
    };
    if let Err(e) = stream.write_all(&request) {
        return fallback(format!("cannot send the request: {e}"));
    }
    let mut conn = Conn {
        stream,
        buf: vec![0; 16 * 1024],
        start: 0,
        end: 0,
    };
    let body = exchange(&mut conn, max_reply)?;
    match body {
        Outcome::Status(s) => Ok(Answer::Status(s)),
        Outcome::Message(body) => match pb::EvalResponse::decode(body.get(5..).unwrap_or(&[])) {
            Ok(reply) => Ok(Answer::Reply(reply)),
            Err(e) => fallback(format!("undecodable reply: {e}")),
        },
    }
}

/// Everything the client sends, in order: preface, SETTINGS, the connection's WINDOW_UPDATE, the
/// request's HEADERS and its DATA (one gRPC message), ending the stream.
fn encode_request(path: &str, req: &impl Message) -> Result<Vec<u8>, Fallback> {
    let len = req.encoded_len();
    let framed = 5 + len;
    if framed > PEER_INITIAL_WINDOW {
        return fallback(format!(
            "the request ({framed} bytes) exceeds the initial window"
        ));
    }
    let mut out = Vec::with_capacity(256 + framed + 9 * framed.div_ceil(PEER_INITIAL_MAX_FRAME));
    out.extend_from_slice(PREFACE);

    let settings: [(u16, u32); 3] = [
        (SETTINGS_ENABLE_PUSH, 0),
        (SETTINGS_INITIAL_WINDOW_SIZE, WINDOW),
        (SETTINGS_MAX_FRAME_SIZE, MAX_FRAME as u32),
    ];
    frame_header(&mut out, settings.len() * 6, SETTINGS, 0, 0);
    for (id, value) in settings {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
    frame_header(&mut out, 4, WINDOW_UPDATE, 0, 0);
    out.extend_from_slice(&(WINDOW - PEER_INITIAL_WINDOW as u32).to_be_bytes());

    let mut block = Vec::with_capacity(96);
    block.push(0x80 | 3); // :method POST (static table index 3)
    block.push(0x80 | 6); // :scheme http (static table index 6)
    literal_indexed_name(&mut block, 4, path.as_bytes()); // :path
    literal_indexed_name(&mut block, 1, b"flaked.local"); // :authority
    literal_indexed_name(&mut block, 31, b"application/grpc"); // content-type
    literal_new_name(&mut block, b"te", b"trailers");
    if block.len() > PEER_INITIAL_MAX_FRAME {
        return fallback("the request headers exceed a frame");
    }
    frame_header(&mut out, block.len(), HEADERS, END_HEADERS, STREAM);
    out.extend_from_slice(&block);

    let mut message = Vec::with_capacity(framed);
    message.push(0); // not compressed
    message.extend_from_slice(&(len as u32).to_be_bytes());
    if req.encode(&mut message).is_err() {
        return fallback("the request cannot be encoded");
    }
    let chunks: Vec<&[u8]> = message.chunks(PEER_INITIAL_MAX_FRAME).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let flags = if i + 1 == chunks.len() { END_STREAM } else { 0 };
        frame_header(&mut out, chunk.len(), DATA, flags, STREAM);
        out.extend_from_slice(chunk);
    }
    Ok(out)
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = len as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// An HPACK integer with an `prefix`-bit prefix, the high bits of the first octet being `high`.
fn hpack_int(out: &mut Vec<u8>, high: u8, prefix: u32, mut value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// An HPACK string literal, not Huffman-coded.
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// A literal header field without indexing whose name is static table entry `index`.
fn literal_indexed_name(out: &mut Vec<u8>, index: usize, value: &[u8]) {
    hpack_int(out, 0, 4, index);
    hpack_str(out, value);
}

/// A literal header field without indexing with a literal name.
fn literal_new_name(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    hpack_str(out, name);
    hpack_str(out, value);
}

/// The read side of the connection: a buffer of received bytes, `start..end` not yet consumed.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    /// Makes at least `n` unconsumed bytes available.
    fn fill(&mut self, n: usize) -> Result<(), Fallback> {
        while self.end - self.start < n {
            if self.start + n > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if n > self.buf.len() {
                    self.buf.resize(n.next_power_of_two(), 0);
                }
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return fallback("the connection closed before the answer was complete"),
                Ok(k) => self.end += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return fallback(format!("cannot read the answer: {e}")),
            }
        }
        Ok(())
    }

    /// The next frame: its type, flags, stream and payload (valid until the next call).
    fn frame(&mut self) -> Result<(u8, u8, u32, &[u8]), Fallback> {
        self.fill(9)?;
        let h = &self.buf[self.start..self.start + 9];
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        if len > MAX_FRAME {
            return fallback(format!(
                "a frame of {len} bytes exceeds the announced maximum"
            ));
        }
        self.fill(9 + len)?;
        let payload = self.start + 9..self.start + 9 + len;
        self.start = payload.end;
        Ok((kind, flags, stream, &self.buf[payload]))
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Fallback> {
        self.stream
            .write_all(bytes)
            .or_else(|e| fallback(format!("cannot write to the connection: {e}")))
    }
}

/// How the stream ended.
enum Outcome {
    /// A non-OK gRPC status.
    Status(tonic::Status),
    /// Status OK and this one message, with its 5-byte gRPC prefix (checked: uncompressed, and the
    /// length is that of the rest).
    Message(Vec<u8>),
}

/// The payload of a frame without its padding (and, for HEADERS, its priority fields).
fn unpadded(flags: u8, mut p: &[u8], priority: bool) -> Result<&[u8], Fallback> {
    if flags & PADDED != 0 {
        let Some((&pad, rest)) = p.split_first() else {
            return fallback("a padded frame without its pad length");
        };
        if usize::from(pad) > rest.len() {
            return fallback("a frame's padding exceeds its payload");
        }
        p = &rest[..rest.len() - usize::from(pad)];
    }
    if priority && flags & PRIORITY != 0 {
        if p.len() < 5 {
            return fallback("a HEADERS frame too short for its priority fields");
        }
        p = &p[5..];
    }
    Ok(p)
}

/// Reads frames until the stream ends; returns the status or the one reply message.
fn exchange(conn: &mut Conn, max_reply: usize) -> Result<Outcome, Fallback> {
    let mut decoder = crate::hpack::Decoder::new(HEADER_TABLE_SIZE);
    // The header block being received (HEADERS then CONTINUATION frames), and whether it ends the stream.
    let mut block: Vec<u8> = Vec::new();
    let mut in_block = false;
    let mut block_ends_stream = false;
    let mut have_headers = false;
    let mut body: Vec<u8> = Vec::new();
    // Received flow-controlled bytes not yet given back with a WINDOW_UPDATE.
    let mut unacknowledged: u64 = 0;
    loop {
        let (kind, flags, stream, payload) = conn.frame()?;
        if in_block && (kind != CONTINUATION || stream != STREAM) {
            return fallback("a header block interrupted by another frame");
        }
        match kind {
            HEADERS | CONTINUATION => {
                if stream != STREAM {
                    return fallback(format!("header frame on stream {stream}"));
                }
                if kind == HEADERS {
                    if in_block {
                        return fallback("HEADERS inside a header block");
                    }
                    block.clear();
                    block.extend_from_slice(unpadded(flags, payload, true)?);
                    block_ends_stream = flags & END_STREAM != 0;
                } else {
                    if !in_block {
                        return fallback("CONTINUATION outside a header block");
                    }
                    block.extend_from_slice(payload);
                }
                if block.len() > MAX_FRAME {
                    return fallback("a header block larger than a frame");
                }
                in_block = flags & END_HEADERS == 0;
                if in_block {
                    continue;
                }
                let fields = decode_block(&mut decoder, &block)?;
                if !have_headers {
                    have_headers = true;
                    let status = fields.iter().find(|(n, _)| n.as_slice() == b":status");
                    if status.map(|(_, v)| v.as_slice()) != Some(b"200") {
                        return fallback("the response status is not 200");
                    }
                    if !block_ends_stream {
                        continue;
                    }
                } else if !block_ends_stream {
                    return fallback("a second header block that does not end the stream");
                }
                return finish(&fields, body, max_reply);
            }
            DATA => {
                if stream != STREAM || !have_headers {
                    return fallback("unexpected DATA frame");
                }
                unacknowledged += payload.len() as u64;
                body.extend_from_slice(unpadded(flags, payload, false)?);
                if body.len() >= 5 {
                    if body[0] != 0 {
                        return fallback("a compressed reply message");
                    }
                    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
                    if len > max_reply {
                        return fallback(format!("the reply ({len} bytes) exceeds the limit"));
                    }
                    body.reserve((5 + len).saturating_sub(body.len()));
                }
                if flags & END_STREAM != 0 {
                    return fallback("the stream ended without trailers");
                }
                if unacknowledged >= u64::from(WINDOW / 2) {
                    let mut update = Vec::with_capacity(26);
                    for s in [0, STREAM] {
                        frame_header(&mut update, 4, WINDOW_UPDATE, 0, s);
                        update.extend_from_slice(&(unacknowledged as u32).to_be_bytes());
                    }
                    conn.send(&update)?;
                    unacknowledged = 0;
                }
            }
            SETTINGS => {
                if stream != 0 || payload.len() % 6 != 0 {
                    return fallback("a malformed SETTINGS frame");
                }
                if flags & ACK == 0 {
                    let mut ack = Vec::with_capacity(9);
                    frame_header(&mut ack, 0, SETTINGS, ACK, 0);
                    conn.send(&ack)?;
                }
            }
            PING => {
                if stream != 0 || payload.len() != 8 {
                    return fallback("a malformed PING frame");
                }
                if flags & ACK == 0 {
                    let mut pong = Vec::with_capacity(17);
                    frame_header(&mut pong, 8, PING, ACK, 0);
                    pong.extend_from_slice(payload);
                    conn.send(&pong)?;
                }
            }
            GOAWAY => {
                if payload.len() < 8 {
                    return fallback("a malformed GOAWAY frame");
                }
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                if last < STREAM {
                    return fallback("the server went away without taking the request");
                }
                // The request is being answered: keep reading.
            }
            RST_STREAM if stream == STREAM => return fallback("the server reset the stream"),
            PUSH_PROMISE => return fallback("a PUSH_PROMISE although push is disabled"),
            // WINDOW_UPDATE (nothing more is sent), PRIORITY, frames of other streams and unknown
            // frame types (which must be ignored): nothing to do.
            _ => {}
        }
    }
}

/// Decodes a complete header block (updating the decoder's dynamic table).
fn decode_block(
    decoder: &mut crate::hpack::Decoder,
    block: &[u8],
) -> Result<Vec<crate::hpack::Field>, Fallback> {
    decoder
        .decode(block)
        .or_else(|e| fallback(format!("undecodable response headers: {e}")))
}

/// The outcome of a stream whose last header block (trailers, or the headers of a trailers-only
/// answer) is `fields` and whose DATA was `body`.
fn finish(
    fields: &[(Vec<u8>, Vec<u8>)],
    body: Vec<u8>,
    max_reply: usize,
) -> Result<Outcome, Fallback> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        if name.first() == Some(&b':') {
            continue;
        }
        if name.as_slice() == b"grpc-status-details-bin" {
            // Decoded by tonic with an `expect`; left to it.
            return fallback("a status with details");
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            return fallback("an invalid header field in the trailers");
        };
        map.append(name, value);
    }
    let Some(status) = tonic::Status::from_header_map(&map) else {
        return fallback("no grpc-status in the trailers");
    };
    if status.code() != tonic::Code::Ok {
        return Ok(Outcome::Status(status));
    }
    if body.len() < 5 {
        return fallback("status OK without a reply message");
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body[0] != 0 || len > max_reply || body.len() != 5 + len {
        return fallback("not exactly one reply message");
    }
    Ok(Outcome::Message(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers() {
        let enc = |prefix, v| {
            let mut out = Vec::new();
            hpack_int(&mut out, 0, prefix, v);
            out
        };
        // RFC 7541 C.1.
        assert_eq!(enc(5, 10), [10]);
        assert_eq!(enc(5, 1337), [31, 154, 10]);
        assert_eq!(enc(8, 42), [42]);
        assert_eq!(enc(4, 15), [15, 0]);
        assert_eq!(enc(4, 31), [15, 16]);
    }

    /// The request's header block decodes (with an independent HPACK decoder) to what tonic sends.
    #[test]
    fn request_headers_decode() {
        let req = pb::EvalRequest::default();
        let bytes = encode_request("/flaked.v1.Flaked/Eval", &req).expect("encodes");
        assert!(bytes.starts_with(PREFACE));
        // preface, SETTINGS (9 + 18), WINDOW_UPDATE (9 + 4), then HEADERS.
        let at = PREFACE.len() + 27 + 13;
        let h = &bytes[at..at + 9];
        assert_eq!(h[3], HEADERS);
        assert_eq!(h[4], END_HEADERS);
        let len = usize::from(h[2]) | usize::from(h[1]) << 8;
        let block = &bytes[at + 9..at + 9 + len];
        let fields = loona_hpack::Decoder::new().decode(block).expect("decodes");
        let text: Vec<(String, String)> = fields
            .into_iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(&n).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let expected = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/flaked.v1.Flaked/Eval"),
            (":authority", "flaked.local"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ];
        assert_eq!(text, expected.map(|(n, v)| (n.to_string(), v.to_string())));
        // The DATA frame ends the stream and carries the 5-byte prefixed (empty) message.
        let d = &bytes[at + 9 + len..];
        assert_eq!(d.len(), 9 + 5);
        assert_eq!((d[3], d[4]), (DATA, END_STREAM));
        assert_eq!(&d[9..], [0, 0, 0, 0, 0]);
    }

    #[test]
    fn oversized_requests_are_left_to_tonic() {
        let req = pb::EvalRequest {
            source: Some(pb::eval_request::Source::Expr("x".repeat(70_000))),
            ..Default::default()
        };
        assert!(encode_request("/p", &req).is_err());
    }

    fn trailers(fields: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        fields
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn statuses_are_tonics() {
        let Ok(Outcome::Status(s)) = finish(
            &trailers(&[
                (":status", "200"),
                ("grpc-status", "13"),
                ("grpc-message", "flaked%20hit%20a%20bug"),
            ]),
            Vec::new(),
            100,
        ) else {
            panic!("a status");
        };
        assert_eq!(s.code(), tonic::Code::Internal);
        assert_eq!(s.message(), "flaked hit a bug");

        let Ok(Outcome::Message(m)) = finish(
            &trailers(&[("grpc-status", "0")]),
            vec![0, 0, 0, 0, 2, 8, 1],
            100,
        ) else {
            panic!("a message");
        };
        assert_eq!(m, [0, 0, 0, 0, 2, 8, 1]);

        for (fields, body) in [
            (&[][..], vec![0, 0, 0, 0, 0]),
            (&[("grpc-status", "0")][..], vec![]),
            (&[("grpc-status", "0")][..], vec![0, 0, 0, 0, 1]),
            (&[("grpc-status", "0")][..], vec![1, 0, 0, 0, 0]),
            (
                &[("grpc-status", "0")][..],
                vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                &[("grpc-status", "2"), ("grpc-status-details-bin", "!")][..],
                vec![],
            ),
        ] {
            assert!(finish(&trailers(fields), body, 100).is_err());
        }
    }
}
