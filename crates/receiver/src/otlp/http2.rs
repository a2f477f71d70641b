//! The OTLP/gRPC server's HTTP/2 connections, served here rather than by hyper and h2.
//!
//! The two OTLP calls are unary: one request message, one answer. A connection reads the
//! socket into one buffer and parses the frames in place; a trace export's message that
//! arrives whole in one read is that frame's bytes (no copy), a larger one is gathered once
//! into a buffer of its declared size, and the call is decoded and admitted by a future polled
//! on the connection's own task — no task, channel or header map per call, and the socket is
//! read in 64 KiB steps rather than h2's 8 KiB. Clients may send DATA frames as large as the
//! windows (1 MiB, advertised in `SETTINGS_MAX_FRAME_SIZE`; h2, the Rust stack, then sends a
//! message in one frame, gRPC's C core in frames of 128–192 KiB, and stacks that keep to
//! 16 KiB frames are served as before): a DATA frame is handed on as its bytes arrive, and
//! once a message's size is known the rest of its frame is read from the socket straight into
//! the message's buffer — one copy, the kernel's. Frames other than DATA are read whole up to
//! 64 KiB (a header block's limit); frames of unknown types are skipped unread. Every other
//! call (the native and query APIs, health, reflection) is handed to tonic's routes as an
//! `http::Request` whose body and answer travel through channels, with HTTP/2 flow control
//! kept per stream.
//!
//! What it speaks: the connection preface and SETTINGS (the server's sent at once: gRPC
//! clients wait for it), HPACK (decoded by `hpack.rs` with the 4 KiB table advertised by
//! default; answers encoded as literals without indexing), HEADERS and CONTINUATION, DATA with
//! padding, flow control both ways (windows of 1 MiB per stream and per connection, as hyper
//! advertised), PING, RST_STREAM (a client's reset drops its call's work), WINDOW_UPDATE,
//! PRIORITY (ignored), GOAWAY both ways (graceful: calls begun finish). A protocol error ends
//! the connection with a GOAWAY naming it; a stream's error resets that stream.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::{AbortHandle, Abortable, BoxFuture};
use futures::stream::{FuturesUnordered, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use http_body_util::BodyExt;
use spanlake_core::CancellationToken;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::Status;

use super::front::{
    ACCEPTED_ENCODINGS, Front, MessageReader, NOT_GRPC, export, is_grpc, is_gzip, otlp_call,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A frame's header: length (24 bits), type, flags, stream id.
const FRAME_HEADER: usize = 9;
/// The protocol's default `SETTINGS_MAX_FRAME_SIZE`: what a client may send before it has our
/// settings, and what we send until we have the client's.
const DEFAULT_MAX_FRAME: usize = 16_384;
/// The largest frame a client may send (advertised as `SETTINGS_MAX_FRAME_SIZE`): as large as
/// the windows, so a client that honours it sends a message of up to 1 MiB in one DATA frame,
/// whose bytes are read from the socket straight into the message's buffer.
const MAX_DATA_FRAME: usize = WINDOW as usize;
/// The largest frame other than DATA that is read whole: a header block of `MAX_HEADER_BLOCK`
/// with its padding and priority.
const MAX_OTHER_FRAME: usize = MAX_HEADER_BLOCK + 512;
/// The rest of a DATA frame is read straight into an OTLP message's buffer when at least this
/// much of it is still to come (less is read with what follows it, in one step).
const DIRECT_READ: usize = 16 * 1024;
/// The window advertised for each stream and for the connection.
const WINDOW: u32 = 1 << 20;
/// The protocol's initial window, before settings.
const DEFAULT_WINDOW: i64 = 65_535;
/// The largest header block gathered from HEADERS and CONTINUATION frames.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The socket is read in steps of this size.
const READ: usize = 64 * 1024;
/// Reading pauses while this much waits to be written (a client that does not read).
const MAX_UNWRITTEN: usize = 1 << 20;

// Frame types.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

// Error codes.
const NO_ERROR: u32 = 0x0;
const PROTOCOL_ERROR: u32 = 0x1;
const INTERNAL_ERROR: u32 = 0x2;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const STREAM_CLOSED: u32 = 0x5;
const FRAME_SIZE_ERROR: u32 = 0x6;
const REFUSED_STREAM: u32 = 0x7;
const COMPRESSION_ERROR: u32 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

// Settings.
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

#[cfg(test)]
thread_local! {
    /// Bytes read straight into messages' buffers on this thread (a test's server runs on the
    /// test's own thread: tests look at it to know the path was taken).
    pub(crate) static READ_DIRECT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// An error that ends the connection: the GOAWAY's code and a word for the client.
#[derive(Debug)]
struct ConnError {
    code: u32,
    message: &'static str,
}

fn conn_error(code: u32, message: &'static str) -> ConnError {
    ConnError { code, message }
}

/// Serve one accepted connection until the client closes it, or, after `shutdown`, until the
/// calls it had begun are answered.
pub(crate) async fn serve_connection(
    sock: TcpStream,
    front: Front,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let (events_tx, events) = mpsc::unbounded_channel();
    let hpack = super::hpack::Decoder::new(4096);
    let mut conn = Conn {
        sock,
        front,
        shutdown,
        inbuf: BytesMut::new(),
        out: BytesMut::with_capacity(256),
        hpack,
        streams: HashMap::new(),
        last_id: 0,
        preface: false,
        continuation: None,
        recv: RecvWindow::new(),
        send_window: DEFAULT_WINDOW,
        peer_initial_window: DEFAULT_WINDOW,
        peer_max_frame: DEFAULT_MAX_FRAME,
        data: None,
        skip: 0,
        going_away: false,
        peer_gone: false,
        calls: FuturesUnordered::new(),
        events,
        events_tx,
    };
    let served = conn.run().await;
    for (_, stream) in conn.streams.drain() {
        drop_stream(stream);
    }
    served
}

struct Conn {
    sock: TcpStream,
    front: Front,
    shutdown: CancellationToken,
    /// What has been read and not yet parsed.
    inbuf: BytesMut,
    /// Frames waiting to be written.
    out: BytesMut,
    hpack: super::hpack::Decoder,
    streams: HashMap<u32, Stream>,
    /// The highest stream id the client has opened.
    last_id: u32,
    preface: bool,
    /// A header block still being gathered: its stream, whether it ends the stream, its bytes.
    continuation: Option<(u32, bool, Vec<u8>)>,
    /// The DATA frame whose payload is being read.
    data: Option<InData>,
    /// Bytes of a frame of an unknown type still to be skipped.
    skip: usize,
    /// What the client may still send on the connection.
    recv: RecvWindow,
    /// What this side may still send on the connection.
    send_window: i64,
    peer_initial_window: i64,
    peer_max_frame: usize,
    /// A GOAWAY has been sent: no new streams.
    going_away: bool,
    /// The client sent GOAWAY: it opens no new streams.
    peer_gone: bool,
    /// The OTLP calls being answered, polled here.
    calls: FuturesUnordered<Abortable<Call>>,
    /// What the routed calls' tasks report.
    events: mpsc::UnboundedReceiver<Event>,
    events_tx: mpsc::UnboundedSender<Event>,
}

/// A DATA frame being read: its payload is handed on as it arrives, not gathered first.
struct InData {
    id: u32,
    /// The frame ends its stream.
    end: bool,
    /// The frame's length.
    len: usize,
    /// Its pad length (the payload's first byte) is still to come.
    padded: bool,
    /// Bytes of the frame still to come.
    left: usize,
    /// Of those, the data's (the rest is padding).
    data: usize,
}

/// An OTLP call being answered: its stream and its answer's message or refusal.
type Call = BoxFuture<'static, (u32, Result<Bytes, Status>)>;

/// One stream (call) of the connection.
struct Stream {
    recv: Recv,
    /// The client has ended its side (END_STREAM).
    client_done: bool,
    /// The answer's parts not yet written (DATA waits for flow-control window).
    queue: VecDeque<Part>,
    send_window: i64,
    /// What the client may still send on this stream.
    recv_window: RecvWindow,
    abort: Option<AbortHandle>,
}

/// Where a stream's DATA goes.
enum Recv {
    /// An OTLP call's message.
    Message {
        reader: Box<MessageReader>,
        traces: bool,
    },
    /// A routed call's request body.
    Body(mpsc::UnboundedSender<Result<Frame<Bytes>, Status>>),
    /// Nowhere: the call is answered or its body ended.
    Discard,
}

/// A part of an answer.
enum Part {
    Headers(Bytes, bool),
    Data(Bytes, bool),
}

/// What a routed call's task reports.
enum Event {
    Head(u32, http::StatusCode, HeaderMap, bool),
    Data(u32, Bytes),
    Trailers(u32, HeaderMap),
    End(u32),
    Failed(u32),
    /// The call's handler has taken this many bytes of its request body.
    Consumed(u32, usize),
}

/// What woke the connection.
enum Wake {
    Shutdown,
    Event(Event),
    Answer(u32, Result<Bytes, Status>),
    Aborted,
    Readable,
    Writable,
}

impl Stream {
    fn new(recv: Recv, send_window: i64) -> Self {
        Stream {
            recv,
            client_done: false,
            queue: VecDeque::new(),
            send_window,
            recv_window: RecvWindow::new(),
            abort: None,
        }
    }
}

impl Conn {
    async fn run(&mut self) -> io::Result<()> {
        // The server's preface goes first and at once: gRPC clients wait for it before calling.
        let mut settings = BytesMut::new();
        settings.put_u16(SETTINGS_INITIAL_WINDOW_SIZE);
        settings.put_u32(WINDOW);
        settings.put_u16(SETTINGS_MAX_FRAME_SIZE);
        settings.put_u32(MAX_DATA_FRAME as u32);
        frame(&mut self.out, SETTINGS, 0, 0, &settings);
        window_update(&mut self.out, 0, WINDOW - DEFAULT_WINDOW as u32);
        loop {
            self.write()?;
            if (self.going_away || self.peer_gone) && self.streams.is_empty() && self.out.is_empty()
            {
                return Ok(());
            }
            let unwritten = !self.out.is_empty();
            let can_read = self.out.len() < MAX_UNWRITTEN;
            let wake = tokio::select! {
                biased;
                _ = self.shutdown.cancelled(), if !self.going_away => Wake::Shutdown,
                Some(event) = self.events.recv() => Wake::Event(event),
                Some(answer) = self.calls.next(), if !self.calls.is_empty() => match answer {
                    Ok((id, answer)) => Wake::Answer(id, answer),
                    Err(_) => Wake::Aborted,
                },
                r = self.sock.readable(), if can_read => { r?; Wake::Readable }
                r = self.sock.writable(), if unwritten => { r?; Wake::Writable }
            };
            match wake {
                Wake::Shutdown => self.go_away(NO_ERROR, b""),
                Wake::Event(event) => self.on_event(event),
                Wake::Answer(id, answer) => self.on_answer(id, answer),
                Wake::Aborted | Wake::Writable => {}
                Wake::Readable => {
                    match self.read() {
                        Ok(0) => return Ok(()), // the client closed the connection
                        Ok(_) => {
                            if let Err(e) = self.parse() {
                                let code = e.code;
                                self.go_away(code, e.message.as_bytes());
                                let _ = self.write();
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    format!("HTTP/2 error {code:#x}: {}", e.message),
                                ));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Write what waits, as far as the socket takes it.
    fn write(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.sock.try_write(&self.out) {
                Ok(n) => self.out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.out.is_empty() && self.out.capacity() > 64 * 1024 {
            self.out = BytesMut::with_capacity(256);
        }
        Ok(())
    }

    fn go_away(&mut self, code: u32, debug: &[u8]) {
        let mut payload = BytesMut::with_capacity(8 + debug.len());
        payload.put_u32(self.last_id);
        payload.put_u32(code);
        payload.put_slice(debug);
        frame(&mut self.out, GOAWAY, 0, 0, &payload);
        self.going_away = true;
    }

    /// Read what the socket holds: the rest of a large DATA frame of an OTLP call straight into
    /// the call's message buffer (no copy), anything else into `inbuf`. The bytes read; 0 when
    /// the client has closed the connection.
    fn read(&mut self) -> io::Result<usize> {
        if self.inbuf.is_empty()
            && let Some(d) = &self.data
            && !d.padded
            && d.data >= DIRECT_READ
            && let Some(stream) = self.streams.get_mut(&d.id)
            && let Recv::Message { reader, .. } = &mut stream.recv
            && let Some((buf, room)) = reader.room()
        {
            let n = self
                .sock
                .try_read_buf(&mut (&mut *buf).limit(d.data.min(room)))?;
            if n > 0 {
                #[cfg(test)]
                READ_DIRECT.with(|c| c.set(c.get() + n));
                self.on_data_direct(n);
            }
            return Ok(n);
        }
        if self.inbuf.capacity() - self.inbuf.len() < FRAME_HEADER + DEFAULT_MAX_FRAME {
            self.inbuf.reserve(READ);
        }
        self.sock.try_read_buf(&mut self.inbuf)
    }

    /// Parse what has been read: whole frames, and of a DATA frame (or a frame skipped) as much
    /// as has arrived.
    fn parse(&mut self) -> Result<(), ConnError> {
        if !self.preface {
            let n = self.inbuf.len().min(PREFACE.len());
            if self.inbuf[..n] != PREFACE[..n] {
                return Err(conn_error(
                    PROTOCOL_ERROR,
                    "not an HTTP/2 connection preface: this port serves OTLP over gRPC",
                ));
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            self.inbuf.advance(PREFACE.len());
            self.preface = true;
        }
        loop {
            if let Some(d) = &self.data {
                if self.inbuf.is_empty() {
                    return Ok(());
                }
                let chunk = self.inbuf.split_to(d.left.min(self.inbuf.len())).freeze();
                self.on_data_bytes(chunk)?;
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(self.inbuf.len());
                self.inbuf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(());
                }
            }
            if self.inbuf.len() < FRAME_HEADER {
                return Ok(());
            }
            let h = &self.inbuf[..FRAME_HEADER];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            if len > MAX_DATA_FRAME {
                return Err(conn_error(FRAME_SIZE_ERROR, "a frame larger than 1 MiB"));
            }
            if let Some((stream, _, _)) = &self.continuation
                && (kind != CONTINUATION || id != *stream)
            {
                return Err(conn_error(PROTOCOL_ERROR, "a header block was interrupted"));
            }
            if kind == DATA {
                self.inbuf.advance(FRAME_HEADER);
                self.on_data_start(id, flags, len)?;
                continue;
            }
            if kind > CONTINUATION {
                // Unknown frame types are ignored, as the protocol asks.
                self.inbuf.advance(FRAME_HEADER);
                self.skip = len;
                continue;
            }
            if len > MAX_OTHER_FRAME {
                return Err(conn_error(
                    ENHANCE_YOUR_CALM,
                    "a frame other than DATA over 64 KiB",
                ));
            }
            if self.inbuf.len() < FRAME_HEADER + len {
                self.inbuf.reserve(FRAME_HEADER + len - self.inbuf.len());
                return Ok(());
            }
            self.inbuf.advance(FRAME_HEADER);
            let payload = self.inbuf.split_to(len).freeze();
            self.on_frame(kind, flags, id, payload)?;
        }
    }

    /// A whole frame other than DATA.
    fn on_frame(&mut self, kind: u8, flags: u8, id: u32, payload: Bytes) -> Result<(), ConnError> {
        match kind {
            HEADERS => self.on_headers(id, flags, payload)?,
            CONTINUATION => {
                let Some((_, _, block)) = self.continuation.as_mut() else {
                    return Err(conn_error(PROTOCOL_ERROR, "CONTINUATION without HEADERS"));
                };
                block.extend_from_slice(&payload);
                if block.len() > MAX_HEADER_BLOCK {
                    return Err(conn_error(ENHANCE_YOUR_CALM, "a header block over 64 KiB"));
                }
                if flags & END_HEADERS != 0 {
                    let (stream, end, block) = self.continuation.take().expect("gathering");
                    self.on_header_block(stream, end, &block)?;
                }
            }
            PRIORITY => {
                if id == 0 {
                    return Err(conn_error(PROTOCOL_ERROR, "PRIORITY on stream 0"));
                }
                if payload.len() != 5 {
                    self.reset(id, FRAME_SIZE_ERROR);
                }
            }
            RST_STREAM => {
                if id == 0 || id > self.last_id {
                    return Err(conn_error(PROTOCOL_ERROR, "RST_STREAM of an idle stream"));
                }
                if payload.len() != 4 {
                    return Err(conn_error(FRAME_SIZE_ERROR, "RST_STREAM not of 4 bytes"));
                }
                if let Some(stream) = self.streams.remove(&id) {
                    drop_stream(stream);
                }
            }
            SETTINGS => self.on_settings(id, flags, &payload)?,
            PUSH_PROMISE => return Err(conn_error(PROTOCOL_ERROR, "PUSH_PROMISE from a client")),
            PING => {
                if id != 0 {
                    return Err(conn_error(PROTOCOL_ERROR, "PING on a stream"));
                }
                if payload.len() != 8 {
                    return Err(conn_error(FRAME_SIZE_ERROR, "PING not of 8 bytes"));
                }
                if flags & ACK == 0 {
                    frame(&mut self.out, PING, ACK, 0, &payload);
                }
            }
            GOAWAY => {
                if id != 0 {
                    return Err(conn_error(PROTOCOL_ERROR, "GOAWAY on a stream"));
                }
                self.peer_gone = true;
            }
            WINDOW_UPDATE => self.on_window_update(id, &payload)?,
            _ => {} // DATA and unknown types do not come here
        }
        Ok(())
    }

    fn on_settings(&mut self, id: u32, flags: u8, payload: &[u8]) -> Result<(), ConnError> {
        if id != 0 {
            return Err(conn_error(PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if flags & ACK != 0 {
            if !payload.is_empty() {
                return Err(conn_error(
                    FRAME_SIZE_ERROR,
                    "a SETTINGS ack with a payload",
                ));
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return Err(conn_error(
                FRAME_SIZE_ERROR,
                "SETTINGS not in 6-byte entries",
            ));
        }
        for entry in payload.chunks_exact(6) {
            let key = u16::from_be_bytes([entry[0], entry[1]]);
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            match key {
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    if value > 0x7fff_ffff {
                        return Err(conn_error(FLOW_CONTROL_ERROR, "a window over 2^31-1"));
                    }
                    let delta = i64::from(value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(value);
                    for stream in self.streams.values_mut() {
                        stream.send_window += delta;
                    }
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(conn_error(PROTOCOL_ERROR, "a max frame size out of range"));
                    }
                    self.peer_max_frame = value as usize;
                }
                // The header table size is for our encoder, which uses no table; push is not
                // ours to do; the stream and header list limits bound our answers, which stay
                // far below them.
                _ => {}
            }
        }
        frame(&mut self.out, SETTINGS, ACK, 0, &[]);
        self.flush_all();
        Ok(())
    }

    fn on_window_update(&mut self, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if payload.len() != 4 {
            return Err(conn_error(FRAME_SIZE_ERROR, "WINDOW_UPDATE not of 4 bytes"));
        }
        let increment = i64::from(
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
        );
        if id == 0 {
            if increment == 0 {
                return Err(conn_error(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0"));
            }
            self.send_window += increment;
            if self.send_window > 0x7fff_ffff {
                return Err(conn_error(FLOW_CONTROL_ERROR, "a window over 2^31-1"));
            }
            self.flush_all();
        } else if let Some(stream) = self.streams.get_mut(&id) {
            stream.send_window += increment;
            if increment == 0 || stream.send_window > 0x7fff_ffff {
                self.reset(
                    id,
                    if increment == 0 {
                        PROTOCOL_ERROR
                    } else {
                        FLOW_CONTROL_ERROR
                    },
                );
            } else {
                self.flush(id);
            }
        }
        Ok(())
    }

    fn on_headers(&mut self, id: u32, flags: u8, mut payload: Bytes) -> Result<(), ConnError> {
        if id == 0 {
            return Err(conn_error(PROTOCOL_ERROR, "HEADERS on stream 0"));
        }
        if flags & PADDED != 0 {
            payload = unpad(payload)?;
        }
        if flags & PRIORITY_FLAG != 0 {
            if payload.len() < 5 {
                return Err(conn_error(
                    FRAME_SIZE_ERROR,
                    "HEADERS too short for its priority",
                ));
            }
            payload.advance(5);
        }
        let end = flags & END_STREAM != 0;
        if flags & END_HEADERS != 0 {
            self.on_header_block(id, end, &payload)
        } else {
            self.continuation = Some((id, end, payload.to_vec()));
            Ok(())
        }
    }

    /// A whole header block: a new call, or a client's trailers.
    fn on_header_block(&mut self, id: u32, end: bool, block: &[u8]) -> Result<(), ConnError> {
        // Decoded always, to keep the table in step with the client's.
        let mut head = Head::default();
        self.hpack
            .decode(block, |name, value| head.add(name, value))
            .map_err(|_| conn_error(COMPRESSION_ERROR, "a header block HPACK cannot decode"))?;
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers: nothing in them for the calls served here; they end the request.
            if stream.client_done || !end {
                self.reset(id, PROTOCOL_ERROR);
            } else {
                self.end_of_request(id);
            }
            return Ok(());
        }
        if id <= self.last_id {
            return Ok(()); // a stream closed here: its late frames are ignored
        }
        if id.is_multiple_of(2) {
            return Err(conn_error(
                PROTOCOL_ERROR,
                "a client stream with an even id",
            ));
        }
        self.last_id = id;
        if self.going_away {
            self.reset(id, REFUSED_STREAM);
            return Ok(());
        }
        if head.malformed || head.method.is_none() || head.path.is_none() {
            self.reset(id, PROTOCOL_ERROR);
            return Ok(());
        }
        match head.call {
            Some(traces) => self.start_otlp(id, traces, &head, end),
            None => self.start_routed(id, head, end),
        }
        Ok(())
    }

    fn start_otlp(&mut self, id: u32, traces: bool, head: &Head, end: bool) {
        let mut stream = Stream::new(Recv::Discard, self.peer_initial_window);
        if !is_grpc(head.content_type.as_deref()) {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            stream
                .queue
                .push_back(Part::Headers(encode_block(Some(415), &headers), false));
            stream
                .queue
                .push_back(Part::Data(Bytes::from_static(NOT_GRPC.as_bytes()), true));
        } else {
            match is_gzip(head.encoding.as_deref()) {
                Ok(gzip) => {
                    let shared = &self.front.shared;
                    let keep = traces && shared.intake.keeps_requests();
                    let reader = MessageReader::new(shared.max_message, keep, gzip);
                    stream.recv = Recv::Message {
                        reader: Box::new(reader),
                        traces,
                    };
                }
                Err(status) => refuse(&mut stream, status),
            }
        }
        self.streams.insert(id, stream);
        if end {
            self.end_of_request(id);
        } else {
            self.flush(id);
        }
    }

    fn start_routed(&mut self, id: u32, head: Head, end: bool) {
        let Some(request) = head.request() else {
            self.reset(id, PROTOCOL_ERROR);
            return;
        };
        let (body_tx, body_rx) = mpsc::unbounded_channel();
        let body = RequestBody {
            frames: body_rx,
            id,
            events: self.events_tx.clone(),
        };
        let request = request.map(|()| tonic::body::Body::new(body));
        let mut routes = self.front.routes.clone();
        let events = self.events_tx.clone();
        let (abort, registration) = AbortHandle::new_pair();
        let call = async move {
            let Ok(response) = tower::Service::call(&mut routes, request).await;
            let (parts, mut body) = super::grpc::refine_status(response).into_parts();
            // A body that is over before it begins (a gRPC refusal: its status in the
            // headers) ends the stream with its headers: gRPC clients accept no other form.
            let end = http_body::Body::is_end_stream(&body);
            let _ = events.send(Event::Head(id, parts.status, parts.headers, end));
            if end {
                return;
            }
            while let Some(frame) = body.frame().await {
                let event = match frame {
                    Err(_) => Event::Failed(id),
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => Event::Data(id, data),
                        Err(frame) => match frame.into_trailers() {
                            Ok(trailers) => Event::Trailers(id, trailers),
                            Err(_) => continue,
                        },
                    },
                };
                let last = !matches!(event, Event::Data(..));
                let _ = events.send(event);
                if last {
                    return;
                }
            }
            let _ = events.send(Event::End(id));
        };
        tokio::spawn(Abortable::new(call, registration));
        let mut stream = Stream::new(Recv::Body(body_tx), self.peer_initial_window);
        stream.abort = Some(abort);
        self.streams.insert(id, stream);
        if end {
            self.end_of_request(id);
        }
    }

    /// A DATA frame's header: the windows are counted for the whole frame at once, its payload
    /// follows (`on_data_bytes`, `on_data_direct`).
    fn on_data_start(&mut self, id: u32, flags: u8, len: usize) -> Result<(), ConnError> {
        if id == 0 {
            return Err(conn_error(PROTOCOL_ERROR, "DATA on stream 0"));
        }
        // Flow control counts the whole frame, padding included.
        if !self.recv.receive(len) {
            return Err(conn_error(
                FLOW_CONTROL_ERROR,
                "DATA beyond the connection's window",
            ));
        }
        self.recv.give_back_by_half(&mut self.out, 0, len);
        let padded = flags & PADDED != 0;
        if padded && len == 0 {
            return Err(conn_error(
                PROTOCOL_ERROR,
                "a padded frame without its pad length",
            ));
        }
        match self.streams.get_mut(&id) {
            None if id > self.last_id => {
                return Err(conn_error(PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            None => {} // a stream closed here: its late frames are ignored
            Some(stream) => {
                if stream.client_done {
                    self.reset(id, STREAM_CLOSED);
                } else if !stream.recv_window.receive(len) {
                    self.reset(id, FLOW_CONTROL_ERROR);
                }
            }
        }
        let end = flags & END_STREAM != 0;
        self.data = Some(InData {
            id,
            end,
            len,
            padded,
            left: len,
            data: len,
        });
        self.end_of_frame_if_read();
        Ok(())
    }

    /// The next bytes of the DATA frame being read.
    fn on_data_bytes(&mut self, mut chunk: Bytes) -> Result<(), ConnError> {
        let d = self.data.as_mut().expect("a DATA frame is being read");
        d.left -= chunk.len();
        let mut padding = 0;
        if d.padded {
            let pad = usize::from(chunk[0]);
            if pad + 1 > d.len {
                return Err(conn_error(PROTOCOL_ERROR, "padding longer than its frame"));
            }
            chunk.advance(1);
            d.padded = false;
            d.data = d.len - 1 - pad;
            padding = 1 + pad;
        }
        let data = chunk.split_to(chunk.len().min(d.data));
        d.data -= data.len();
        let (id, end) = (d.id, d.end);
        if let Some(stream) = self.streams.get_mut(&id) {
            match &mut stream.recv {
                Recv::Message { reader, .. } => {
                    // The message's room is reserved from its prefix: the window is given
                    // back as the bytes arrive.
                    if !end {
                        stream.recv_window.give_back_by_half(
                            &mut self.out,
                            id,
                            data.len() + padding,
                        );
                    }
                    if !data.is_empty()
                        && let Err(status) = reader.push(&self.front.shared.intake, data)
                    {
                        refuse(stream, status);
                        self.flush(id);
                    }
                }
                Recv::Body(body) => {
                    // The data is given back as the handler takes it (`Event::Consumed`);
                    // the padding at once, and everything at once if the body is no longer
                    // read.
                    let n = data.len();
                    let now = if n > 0 && body.send(Ok(Frame::data(data))).is_ok() {
                        padding
                    } else {
                        n + padding
                    };
                    stream.recv_window.give_back(&mut self.out, id, now);
                }
                Recv::Discard => {}
            }
        }
        self.end_of_frame_if_read();
        Ok(())
    }

    /// `n` bytes of the DATA frame being read were read straight into its call's message.
    fn on_data_direct(&mut self, n: usize) {
        let d = self.data.as_mut().expect("a DATA frame is being read");
        d.left -= n;
        d.data -= n;
        let (id, end) = (d.id, d.end);
        if !end && let Some(stream) = self.streams.get_mut(&id) {
            stream.recv_window.give_back_by_half(&mut self.out, id, n);
        }
        self.end_of_frame_if_read();
    }

    /// Once the DATA frame being read has arrived whole: its stream's request ends with it, or
    /// what its stream has to write is written.
    fn end_of_frame_if_read(&mut self) {
        if let Some(d) = self.data.take_if(|d| d.left == 0) {
            if d.end {
                self.end_of_request(d.id);
            } else {
                self.flush(d.id);
            }
        }
    }

    /// The client has ended its side of stream `id`.
    fn end_of_request(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.client_done = true;
        match std::mem::replace(&mut stream.recv, Recv::Discard) {
            Recv::Message { reader, traces } => match reader.finish() {
                Ok((message, reservation)) => {
                    let shared = std::sync::Arc::clone(&self.front.shared);
                    let call: Call = Box::pin(async move {
                        (id, export(&shared, traces, message, reservation).await)
                    });
                    let (abort, registration) = AbortHandle::new_pair();
                    stream.abort = Some(abort);
                    self.calls.push(Abortable::new(call, registration));
                }
                Err(status) => refuse(stream, status),
            },
            Recv::Body(_) | Recv::Discard => {} // dropping the sender ends the body
        }
        self.flush(id);
    }

    fn on_answer(&mut self, id: u32, answer: Result<Bytes, Status>) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.abort = None;
        match answer {
            Ok(message) => {
                stream
                    .queue
                    .push_back(Part::Headers(Bytes::from_static(ANSWER_HEADERS), false));
                stream.queue.push_back(Part::Data(message, false));
                stream
                    .queue
                    .push_back(Part::Headers(Bytes::from_static(OK_TRAILERS), true));
            }
            Err(status) => refuse(stream, status),
        }
        self.flush(id);
    }

    fn on_event(&mut self, event: Event) {
        let (id, part) = match event {
            Event::Head(id, status, headers, end) => (
                id,
                Part::Headers(encode_block(Some(status.as_u16()), &headers), end),
            ),
            Event::Data(id, data) => (id, Part::Data(data, false)),
            Event::Trailers(id, trailers) => {
                (id, Part::Headers(encode_block(None, &trailers), true))
            }
            Event::End(id) => (id, Part::Data(Bytes::new(), true)),
            Event::Failed(id) => {
                self.reset(id, INTERNAL_ERROR);
                return;
            }
            Event::Consumed(id, n) => {
                if let Some(stream) = self.streams.get_mut(&id)
                    && !stream.client_done
                {
                    stream.recv_window.give_back(&mut self.out, id, n);
                }
                return;
            }
        };
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if matches!(part, Part::Headers(_, true) | Part::Data(_, true)) {
            stream.abort = None;
        }
        stream.queue.push_back(part);
        self.flush(id);
    }

    /// Reset stream `id` with `code`, dropping its work.
    fn reset(&mut self, id: u32, code: u32) {
        rst_stream(&mut self.out, id, code);
        if let Some(stream) = self.streams.remove(&id) {
            drop_stream(stream);
        }
    }

    fn flush_all(&mut self) {
        let waiting: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.queue.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.flush(id);
        }
    }

    /// Write stream `id`'s answer as far as the windows allow; forget the stream once both
    /// sides have ended.
    fn flush(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let mut ended = false;
        while let Some(part) = stream.queue.front_mut() {
            match part {
                Part::Headers(block, end) => {
                    write_headers(&mut self.out, id, block, *end, self.peer_max_frame);
                    ended = *end;
                    stream.queue.pop_front();
                }
                Part::Data(data, end) => {
                    if data.is_empty() {
                        frame(
                            &mut self.out,
                            DATA,
                            if *end { END_STREAM } else { 0 },
                            id,
                            &[],
                        );
                        ended = *end;
                        stream.queue.pop_front();
                        continue;
                    }
                    let room = self
                        .send_window
                        .min(stream.send_window)
                        .min(self.peer_max_frame as i64);
                    if room <= 0 {
                        break;
                    }
                    let chunk = data.split_to(data.len().min(room as usize));
                    let last = data.is_empty();
                    let flags = if last && *end { END_STREAM } else { 0 };
                    frame(&mut self.out, DATA, flags, id, &chunk);
                    self.send_window -= chunk.len() as i64;
                    stream.send_window -= chunk.len() as i64;
                    if last {
                        ended = *end;
                        stream.queue.pop_front();
                    }
                }
            }
        }
        if ended {
            let client_done = stream.client_done;
            let stream = self.streams.remove(&id).expect("the stream flushed");
            drop_stream(stream);
            if !client_done {
                // Answered before the request ended (a refusal): the rest is not wanted.
                rst_stream(&mut self.out, id, NO_ERROR);
            }
        }
    }
}

/// Drop a stream's work: its call (if still running) and its request body.
fn drop_stream(stream: Stream) {
    if let Some(abort) = stream.abort {
        abort.abort();
    }
    if let Recv::Body(body) = stream.recv {
        let _ = body.send(Err(Status::cancelled("the client reset the call")));
    }
}

/// Answer a stream with `status` (a gRPC "trailers-only" answer), reading no more of it.
fn refuse(stream: &mut Stream, status: Status) {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        "grpc-accept-encoding",
        HeaderValue::from_static(ACCEPTED_ENCODINGS),
    );
    if status.add_header(&mut headers).is_err() {
        headers.insert("grpc-status", HeaderValue::from_static("13"));
    }
    stream.recv = Recv::Discard;
    stream.queue.clear();
    stream
        .queue
        .push_back(Part::Headers(encode_block(Some(200), &headers), true));
}

/// A frame's payload without its padding.
fn unpad(mut payload: Bytes) -> Result<Bytes, ConnError> {
    let Some(&pad) = payload.first() else {
        return Err(conn_error(
            PROTOCOL_ERROR,
            "a padded frame without its pad length",
        ));
    };
    let pad = usize::from(pad);
    if pad + 1 > payload.len() {
        return Err(conn_error(PROTOCOL_ERROR, "padding longer than its frame"));
    }
    payload.advance(1);
    payload.truncate(payload.len() - pad);
    Ok(payload)
}

fn frame(out: &mut BytesMut, kind: u8, flags: u8, id: u32, payload: &[u8]) {
    let len = payload.len();
    out.reserve(FRAME_HEADER + len);
    out.put_u8((len >> 16) as u8);
    out.put_u8((len >> 8) as u8);
    out.put_u8(len as u8);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(id);
    out.put_slice(payload);
}

fn window_update(out: &mut BytesMut, id: u32, increment: u32) {
    frame(out, WINDOW_UPDATE, 0, id, &increment.to_be_bytes());
}

fn rst_stream(out: &mut BytesMut, id: u32, code: u32) {
    frame(out, RST_STREAM, 0, id, &code.to_be_bytes());
}

/// What the client may still send (on the connection or a stream), and what it has sent
/// since the last WINDOW_UPDATE.
struct RecvWindow {
    left: i64,
    unacked: usize,
}

impl RecvWindow {
    fn new() -> Self {
        RecvWindow {
            left: i64::from(WINDOW),
            unacked: 0,
        }
    }

    /// Count `len` bytes received: false if the client sent past the window.
    fn receive(&mut self, len: usize) -> bool {
        self.left -= len as i64;
        self.left >= 0
    }

    /// Give `len` bytes back to the client at once (no frame for 0: an increment of 0 is a
    /// protocol error).
    fn give_back(&mut self, out: &mut BytesMut, id: u32, len: usize) {
        if len > 0 {
            self.left += len as i64;
            window_update(out, id, len as u32);
        }
    }

    /// Give `len` bytes back once half the window waits to be given back (fewer frames).
    fn give_back_by_half(&mut self, out: &mut BytesMut, id: u32, len: usize) {
        self.unacked += len;
        if self.unacked >= WINDOW as usize / 2 {
            let unacked = std::mem::take(&mut self.unacked);
            self.give_back(out, id, unacked);
        }
    }
}

/// A header block in HEADERS and, past the client's frame size, CONTINUATION frames.
fn write_headers(out: &mut BytesMut, id: u32, block: &[u8], end: bool, max_frame: usize) {
    let mut chunks = block.chunks(max_frame).peekable();
    let first = chunks.next().unwrap_or_default();
    let end_flag = if end { END_STREAM } else { 0 };
    let headers_end = if chunks.peek().is_none() {
        END_HEADERS
    } else {
        0
    };
    frame(out, HEADERS, end_flag | headers_end, id, first);
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        frame(out, CONTINUATION, flags, id, chunk);
    }
}

/// `:status: 200`, `content-type: application/grpc`, `grpc-accept-encoding: gzip`.
const ANSWER_HEADERS: &[u8] =
    b"\x88\x00\x0ccontent-type\x10application/grpc\x00\x14grpc-accept-encoding\x04gzip";
/// `grpc-status: 0`.
const OK_TRAILERS: &[u8] = b"\x00\x0bgrpc-status\x010";

/// A header block of literals without indexing (the client's table is left alone), with
/// `:status` first when given.
fn encode_block(status: Option<u16>, headers: &HeaderMap) -> Bytes {
    let mut out = BytesMut::new();
    match status {
        Some(200) => out.put_u8(0x88), // :status 200, from the static table
        Some(code) => {
            out.put_u8(0x08); // literal without indexing, name :status (static index 8)
            put_string(&mut out, code.to_string().as_bytes());
        }
        None => {}
    }
    for (name, value) in headers {
        if CONNECTION_HEADERS.contains(&name.as_str()) {
            continue;
        }
        out.put_u8(0x00);
        put_string(&mut out, name.as_str().as_bytes());
        put_string(&mut out, value.as_bytes());
    }
    out.freeze()
}

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2).
const CONNECTION_HEADERS: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// An HPACK string literal, not Huffman-coded.
fn put_string(out: &mut BytesMut, s: &[u8]) {
    put_integer(out, s.len(), 7, 0x00);
    out.put_slice(s);
}

/// An HPACK integer with a `bits`-bit prefix in a first byte holding `first`.
fn put_integer(out: &mut BytesMut, mut value: usize, bits: u8, first: u8) {
    let max = (1usize << bits) - 1;
    if value < max {
        out.put_u8(first | value as u8);
        return;
    }
    out.put_u8(first | max as u8);
    value -= max;
    while value >= 128 {
        out.put_u8((value % 128 + 128) as u8);
        value /= 128;
    }
    out.put_u8(value as u8);
}

/// What a request's header block holds: the pseudo-headers, the two headers an OTLP call
/// reads, and, for a routed call, the rest.
#[derive(Default)]
struct Head {
    method: Option<Vec<u8>>,
    path: Option<Vec<u8>>,
    scheme: Option<Vec<u8>>,
    authority: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    encoding: Option<Vec<u8>>,
    /// The OTLP call `:path` names, if it names one.
    call: Option<bool>,
    /// The other headers (only for a routed call).
    rest: Vec<(HeaderName, HeaderValue)>,
    regular_seen: bool,
    malformed: bool,
}

impl Head {
    fn add(&mut self, name: &[u8], value: &[u8]) {
        if name.first() == Some(&b':') {
            if self.regular_seen {
                self.malformed = true; // pseudo-headers come first
            }
            let slot = match name {
                b":method" => &mut self.method,
                b":path" => &mut self.path,
                b":scheme" => &mut self.scheme,
                b":authority" => &mut self.authority,
                _ => {
                    self.malformed = true;
                    return;
                }
            };
            *slot = Some(value.to_vec());
            if name == b":path" {
                self.call = otlp_call(value);
            }
            return;
        }
        self.regular_seen = true;
        match name {
            b"content-type" => self.content_type = Some(value.to_vec()),
            b"grpc-encoding" => self.encoding = Some(value.to_vec()),
            _ => {}
        }
        if self.call.is_some() {
            return; // an OTLP call reads no other header
        }
        match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            (Ok(name), Ok(value)) if !CONNECTION_HEADERS.contains(&name.as_str()) => {
                self.rest.push((name, value));
            }
            _ => self.malformed = true,
        }
    }

    /// The routed call's request, without its body.
    fn request(self) -> Option<http::Request<()>> {
        let method = http::Method::from_bytes(self.method.as_deref()?).ok()?;
        let mut uri = http::Uri::builder().path_and_query(self.path?);
        if let (Some(scheme), Some(authority)) = (self.scheme, self.authority) {
            uri = uri.scheme(scheme.as_slice()).authority(authority);
        }
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri.build().ok()?)
            .version(http::Version::HTTP_2)
            .body(())
            .ok()?;
        let headers = request.headers_mut();
        if let Some(ct) = self.content_type {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_bytes(&ct).ok()?,
            );
        }
        if let Some(enc) = self.encoding {
            headers.insert("grpc-encoding", HeaderValue::from_bytes(&enc).ok()?);
        }
        for (name, value) in self.rest {
            if name != http::header::CONTENT_TYPE && name.as_str() != "grpc-encoding" {
                headers.append(name, value);
            }
        }
        Some(request)
    }
}

/// A routed call's request body: the DATA frames as they arrive; each taken gives its bytes
/// back to the client's window.
struct RequestBody {
    frames: mpsc::UnboundedReceiver<Result<Frame<Bytes>, Status>>,
    id: u32,
    events: mpsc::UnboundedSender<Event>,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = std::task::ready!(self.frames.poll_recv(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let _ = self.events.send(Event::Consumed(self.id, data.len()));
        }
        Poll::Ready(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers_and_the_fixed_blocks_decode_as_meant() {
        let mut out = BytesMut::new();
        put_integer(&mut out, 1337, 5, 0);
        assert_eq!(&out[..], &[31, 154, 10]); // RFC 7541 C.1.2
        let mut decoder = super::super::hpack::Decoder::new(4096);
        let mut decode = |block: &[u8]| {
            let mut fields = Vec::new();
            decoder
                .decode(block, |n, v| fields.push((n.to_vec(), v.to_vec())))
                .expect("decodes");
            fields
        };
        let decoded = decode(ANSWER_HEADERS);
        let want: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b":status".to_vec(), b"200".to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"grpc-accept-encoding".to_vec(), b"gzip".to_vec()),
        ];
        assert_eq!(decoded, want);
        let decoded = decode(OK_TRAILERS);
        assert_eq!(decoded, vec![(b"grpc-status".to_vec(), b"0".to_vec())]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("x".repeat(300).leak()),
        );
        let decoded = decode(&encode_block(Some(415), &headers));
        assert_eq!(decoded[0], (b":status".to_vec(), b"415".to_vec()));
        assert_eq!(decoded[1].1.len(), 300);
    }
}
