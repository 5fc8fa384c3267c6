//! The STOMP frame codec (1.0, 1.1 and 1.2), sans-IO: bytes in, frames out; frames in,
//! bytes out.
//!
//! ```text
//! frame  = command EOL *(header EOL) EOL *OCTET NUL *(EOL)
//! EOL    = [CR] LF            (CR only from 1.2 on)
//! header = name ":" value     (escaped from 1.1 on, except in CONNECT and CONNECTED)
//! ```
//!
//! The decoder is fed whatever arrived (a WebSocket message may hold several frames or a
//! part of one) and hands out whole frames; bare EOLs between frames are heart-beats.
//! Bodies are cut from the input without a copy.

use bytes::{Buf, Bytes, BytesMut};
use std::fmt;

/// A STOMP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no escaping, no heart-beats, no NACK.
    V1_0,
    /// STOMP 1.1: escaping of `\n`, `:` and `\`, heart-beats, NACK.
    V1_1,
    /// STOMP 1.2: also `\r` escaped and CRLF line ends; ACK by the `ack` header.
    V1_2,
}

impl Version {
    /// Every version, newest first.
    pub const ALL: [Version; 3] = [Version::V1_2, Version::V1_1, Version::V1_0];

    /// `"1.0"`, `"1.1"` or `"1.2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "1.0",
            Self::V1_1 => "1.1",
            Self::V1_2 => "1.2",
        }
    }

    /// The version named `s` (`"1.2"`), if known.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s.trim())
    }

    /// The version of a WebSocket subprotocol (`v12.stomp`).
    pub fn from_subprotocol(p: &str) -> Option<Self> {
        match p {
            "v12.stomp" => Some(Self::V1_2),
            "v11.stomp" => Some(Self::V1_1),
            "v10.stomp" => Some(Self::V1_0),
            _ => None,
        }
    }
}

/// STOMP commands, from both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Command {
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Connected,
    Message,
    Receipt,
    Error,
}

impl Command {
    const ALL: [Command; 15] = [
        Self::Connect,
        Self::Stomp,
        Self::Send,
        Self::Subscribe,
        Self::Unsubscribe,
        Self::Ack,
        Self::Nack,
        Self::Begin,
        Self::Commit,
        Self::Abort,
        Self::Disconnect,
        Self::Connected,
        Self::Message,
        Self::Receipt,
        Self::Error,
    ];

    /// The command's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::Stomp => "STOMP",
            Self::Send => "SEND",
            Self::Subscribe => "SUBSCRIBE",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::Ack => "ACK",
            Self::Nack => "NACK",
            Self::Begin => "BEGIN",
            Self::Commit => "COMMIT",
            Self::Abort => "ABORT",
            Self::Disconnect => "DISCONNECT",
            Self::Connected => "CONNECTED",
            Self::Message => "MESSAGE",
            Self::Receipt => "RECEIPT",
            Self::Error => "ERROR",
        }
    }

    /// The command named `s` (case-sensitive, as the spec says).
    pub fn parse(s: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str().as_bytes() == s)
    }

    /// Whether header values are escaped in this frame for `version`: never in 1.0, and
    /// never in CONNECT/CONNECTED (which must stay readable by 1.0 peers).
    fn escapes(self, version: Version) -> bool {
        version >= Version::V1_1 && !matches!(self, Self::Connect | Self::Stomp | Self::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command.
    pub command: Command,
    /// Headers in order; repeated names are kept, and the first one counts.
    pub headers: Vec<(String, String)>,
    /// The body (empty for most commands).
    pub body: Bytes,
}

impl Frame {
    /// A frame without headers or body.
    pub fn new(command: Command) -> Self {
        Self { command, headers: Vec::new(), body: Bytes::new() }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The value of the first header called `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Appends the frame's wire form for `version` to `out`: escaped headers, a
    /// `content-length` header when the body is not empty and none was given, the body and
    /// the NUL.
    pub fn encode(&self, version: Version, out: &mut BytesMut) {
        out.extend_from_slice(self.command.as_str().as_bytes());
        out.extend_from_slice(b"\n");
        let escape = self.command.escapes(version);
        for (name, value) in &self.headers {
            write_header(out, name, value, escape.then_some(version));
        }
        if !self.body.is_empty() && self.get("content-length").is_none() {
            write_header(out, "content-length", &self.body.len().to_string(), None);
        }
        out.extend_from_slice(b"\n");
        out.extend_from_slice(&self.body);
        out.extend_from_slice(b"\0");
    }

    /// The wire form as bytes.
    pub fn to_bytes(&self, version: Version) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + self.body.len());
        self.encode(version, &mut out);
        out.freeze()
    }
}

/// Appends `name:value\n`, escaped as `version` requires (`None`: verbatim).
///
/// Header text may come from peers (a token's user name, a channel, an error quoting a
/// frame), so nothing in it can end the header or the frame: where there is no escape for
/// it (STOMP 1.0, CONNECTED, a NUL in any version), a line break, a NUL or (in a name) a
/// colon is written as a space.
pub fn write_header(out: &mut BytesMut, name: &str, value: &str, escape: Option<Version>) {
    match escape {
        None => {
            write_verbatim(out, name, b":");
            out.extend_from_slice(b":");
            write_verbatim(out, value, b"");
        }
        Some(v) => {
            escape_into(out, name, v);
            out.extend_from_slice(b":");
            escape_into(out, value, v);
        }
    }
    out.extend_from_slice(b"\n");
}

/// Writes `s` with CR, LF, NUL and the bytes of `also` replaced by spaces.
fn write_verbatim(out: &mut BytesMut, s: &str, also: &[u8]) {
    let unsafe_byte = |b: u8| matches!(b, b'\r' | b'\n' | 0) || also.contains(&b);
    if !s.bytes().any(unsafe_byte) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.extend(s.bytes().map(|b| if unsafe_byte(b) { b' ' } else { b }));
}

fn escape_into(out: &mut BytesMut, s: &str, version: Version) {
    let needs = |b: u8| matches!(b, b'\\' | b'\n' | b':' | 0) || (b == b'\r' && version >= Version::V1_2);
    if !s.bytes().any(needs) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b':' => out.extend_from_slice(b"\\c"),
            b'\r' if version >= Version::V1_2 => out.extend_from_slice(b"\\r"),
            // No escape exists for NUL, which would end the frame.
            0 => out.extend_from_slice(b" "),
            b => out.extend_from_slice(&[b]),
        }
    }
}

/// Why input is not a valid frame. The message goes into the ERROR frame's `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame (headers and body) is over the size limit.
    #[error("frame too large: over {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// More headers than allowed.
    #[error("too many headers: over {limit}")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// A header line over the length limit.
    #[error("header line too long: over {limit} bytes")]
    HeaderTooLong {
        /// The limit.
        limit: usize,
    },
    /// The command is not a STOMP command.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// A header line without a colon, or with an empty name.
    #[error("malformed header line {0:?}")]
    MalformedHeader(String),
    /// A backslash sequence the version does not define.
    #[error("invalid escape sequence in header {0:?}")]
    BadEscape(String),
    /// The command or a header is not UTF-8.
    #[error("frame head is not UTF-8")]
    NotUtf8,
    /// `content-length` is not a number.
    #[error("invalid content-length {0:?}")]
    BadContentLength(String),
    /// The byte after a `content-length` body is not NUL.
    #[error("body longer than its content-length of {0}: no NUL after it")]
    MissingNul(usize),
}

/// Limits on what the decoder buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (command, headers and body), in bytes.
    pub max_frame_size: usize,
    /// Most headers in one frame.
    pub max_headers: usize,
    /// Longest header line, in bytes.
    pub max_header_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_frame_size: 64 * 1024, max_headers: 64, max_header_length: 8 * 1024 }
    }
}

/// Turns a byte stream into frames.
///
/// Bytes may arrive in pieces of any size, down to one byte per WebSocket message: the
/// decoder only looks at bytes it has not looked at before (where the head ends, where a
/// body without `content-length` ends) and parses a head once, when it is whole. Re-reading
/// the whole buffer at every piece would cost time quadratic in the frame size.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    limits: Limits,
    version: Version,
    /// The search for the end of the current frame's head or body.
    scan: Scan,
    /// The current frame's head, once whole, while its body is awaited (boxed: most
    /// connections wait between frames, with none).
    head: Option<Box<Head>>,
    /// Heads parsed, for the tests that check each is parsed once.
    #[cfg(test)]
    heads_parsed: usize,
}

/// How far the decoder has looked into the current frame.
#[derive(Debug, Default)]
struct Scan {
    /// Bytes of the buffer already looked at.
    seen: usize,
    /// Where the line being read starts.
    line_start: usize,
    /// Complete lines of the head so far (the command line included).
    lines: usize,
}

/// Where the head of a frame ends and how it reads.
#[derive(Debug)]
struct Head {
    command: Command,
    headers: Vec<(String, String)>,
    /// Bytes of the head, including the empty line.
    len: usize,
}

impl Decoder {
    /// A decoder for `version` (the one negotiated; CONNECT is read the same in all).
    pub fn new(version: Version, limits: Limits) -> Self {
        Self {
            buf: BytesMut::new(),
            limits,
            version,
            scan: Scan::default(),
            head: None,
            #[cfg(test)]
            heads_parsed: 0,
        }
    }

    /// Changes the version (after CONNECT negotiated one).
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether the decoder holds nothing of a frame: a new one would do as well.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.head.is_none()
    }

    /// Bytes received and not yet part of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`FrameError`] for input that can never become a valid frame; the decoder is then
    /// of no further use (the connection must end with an ERROR frame).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let head = match self.head.take() {
            Some(head) => *head,
            None => {
                if self.scan.seen == 0 {
                    // Heart-beats: EOLs between frames.
                    let skip = self.buf.iter().take_while(|b| matches!(b, b'\n' | b'\r')).count();
                    self.buf.advance(skip);
                }
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let Some(_) = self.find_head_end()? else {
                    if self.buf.len() > self.limits.max_frame_size {
                        return Err(FrameError::TooLarge { limit: self.limits.max_frame_size });
                    }
                    return Ok(None);
                };
                #[cfg(test)]
                {
                    self.heads_parsed += 1;
                }
                // Whole by now: parse_head ends at the same empty line.
                let head =
                    self.parse_head()?.ok_or(FrameError::TooLarge { limit: self.limits.max_frame_size })?;
                // The body's search starts after the head.
                self.scan.seen = head.len;
                head
            }
        };
        let length = head.headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v);
        let body_len = match length {
            Some(v) => {
                let n: usize = v.trim().parse().map_err(|_| FrameError::BadContentLength(v.clone()))?;
                if head.len.saturating_add(n) >= self.limits.max_frame_size {
                    return Err(FrameError::TooLarge { limit: self.limits.max_frame_size });
                }
                if self.buf.len() < head.len + n + 1 {
                    self.head = Some(Box::new(head));
                    return Ok(None);
                }
                if self.buf[head.len + n] != 0 {
                    return Err(FrameError::MissingNul(n));
                }
                n
            }
            None => match self.buf[self.scan.seen..].iter().position(|&b| b == 0) {
                Some(at) => self.scan.seen + at - head.len,
                None if self.buf.len() >= self.limits.max_frame_size => {
                    return Err(FrameError::TooLarge { limit: self.limits.max_frame_size });
                }
                None => {
                    self.scan.seen = self.buf.len();
                    self.head = Some(Box::new(head));
                    return Ok(None);
                }
            },
        };
        if head.len + body_len >= self.limits.max_frame_size {
            return Err(FrameError::TooLarge { limit: self.limits.max_frame_size });
        }
        self.buf.advance(head.len);
        let body = self.buf.split_to(body_len).freeze();
        self.buf.advance(1);
        self.scan = Scan::default();
        Ok(Some(Frame { command: head.command, headers: head.headers, body }))
    }

    /// Looks at the bytes not looked at before for the empty line that ends the head,
    /// checking the line limits on the way; the head's length once found.
    fn find_head_end(&mut self) -> Result<Option<usize>, FrameError> {
        let limits = &self.limits;
        let scan = &mut self.scan;
        while let Some(nl) = self.buf[scan.seen..].iter().position(|&b| b == b'\n') {
            let at = scan.seen + nl;
            scan.seen = at + 1;
            let line = &self.buf[scan.line_start..at];
            scan.line_start = at + 1;
            if line.len() > limits.max_header_length {
                return Err(FrameError::HeaderTooLong { limit: limits.max_header_length });
            }
            // As parse_head reads it: a CR before the LF ends the line from 1.2 on.
            let empty = line.is_empty() || (line == b"\r" && self.version >= Version::V1_2);
            if scan.lines > 0 && empty {
                return Ok(Some(at + 1));
            }
            if scan.lines == 0 {
                // A bad command is refused at once, not after the rest of the head.
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if Command::parse(line).is_none() {
                    return Err(FrameError::UnknownCommand(String::from_utf8_lossy(line).into_owned()));
                }
            }
            scan.lines += 1;
            if scan.lines > limits.max_headers + 1 {
                return Err(FrameError::TooManyHeaders { limit: limits.max_headers });
            }
        }
        scan.seen = self.buf.len();
        if self.buf.len() - scan.line_start > limits.max_header_length {
            return Err(FrameError::HeaderTooLong { limit: limits.max_header_length });
        }
        Ok(None)
    }

    fn parse_head(&self) -> Result<Option<Head>, FrameError> {
        let limits = &self.limits;
        let mut pos = 0;
        let mut command = None;
        let mut headers = Vec::new();
        loop {
            let Some(nl) = self.buf[pos..].iter().position(|&b| b == b'\n') else {
                if self.buf.len() - pos > limits.max_header_length {
                    return Err(FrameError::HeaderTooLong { limit: limits.max_header_length });
                }
                return Ok(None);
            };
            let mut line = &self.buf[pos..pos + nl];
            pos += nl + 1;
            if line.len() > limits.max_header_length {
                return Err(FrameError::HeaderTooLong { limit: limits.max_header_length });
            }
            // CR LF ends a line from 1.2 on, and in the CONNECT frame (whose version is
            // not known yet); 1.0 and 1.1 keep a CR as part of the value.
            if line.last() == Some(&b'\r') && (self.version >= Version::V1_2 || command.is_none()) {
                line = &line[..line.len() - 1];
            }
            let Some(cmd) = command else {
                let c = Command::parse(line)
                    .ok_or_else(|| FrameError::UnknownCommand(String::from_utf8_lossy(line).into_owned()))?;
                command = Some(c);
                continue;
            };
            if line.is_empty() {
                return Ok(Some(Head { command: cmd, headers, len: pos }));
            }
            if headers.len() == limits.max_headers {
                return Err(FrameError::TooManyHeaders { limit: limits.max_headers });
            }
            headers.push(self.parse_header(cmd, line)?);
        }
    }

    fn parse_header(&self, command: Command, line: &[u8]) -> Result<(String, String), FrameError> {
        let text = std::str::from_utf8(line).map_err(|_| FrameError::NotUtf8)?;
        let Some((name, value)) = text.split_once(':') else {
            return Err(FrameError::MalformedHeader(text.to_owned()));
        };
        if name.is_empty() {
            return Err(FrameError::MalformedHeader(text.to_owned()));
        }
        if !command.escapes(self.version) {
            // 1.0 and CONNECT: verbatim (a 1.0 peer may put spaces after the colon).
            let value = if self.version == Version::V1_0 { value.trim_start() } else { value };
            return Ok((name.to_owned(), value.to_owned()));
        }
        let bad = || FrameError::BadEscape(text.to_owned());
        Ok((unescape(name, self.version).ok_or_else(bad)?, unescape(value, self.version).ok_or_else(bad)?))
    }
}

/// Undoes header escaping; `None` for an undefined escape.
fn unescape(s: &str, version: Version) -> Option<String> {
    if !s.contains('\\') {
        return Some(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            'c' => out.push(':'),
            '\\' => out.push('\\'),
            'r' if version >= Version::V1_2 => out.push('\r'),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(version: Version, input: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut d = Decoder::new(version, Limits::default());
        d.push(input);
        let mut frames = Vec::new();
        while let Some(f) = d.next_frame()? {
            frames.push(f);
        }
        assert_eq!(d.buffered(), 0, "left over");
        Ok(frames)
    }

    #[test]
    fn connect_frame_is_read_verbatim() {
        let f =
            decode_all(Version::V1_2, b"CONNECT\r\naccept-version:1.1,1.2\r\nhost:a\\cb\r\n\r\n\0").unwrap();
        assert_eq!(f[0].command, Command::Connect);
        assert_eq!(f[0].get("accept-version"), Some("1.1,1.2"));
        // No unescaping in CONNECT.
        assert_eq!(f[0].get("host"), Some("a\\cb"));
    }

    /// Header parsing cost: a frame that arrives a byte at a time (one WebSocket message
    /// each) has its head parsed once and every byte looked at a bounded number of times,
    /// with and without `content-length`; before, every piece re-read the whole buffer
    /// (quadratic in the frame size, up to `max_frame_size`, 64 KiB by default).
    #[test]
    fn a_frame_trickling_in_a_byte_at_a_time_is_read_in_linear_time() {
        let filler: String = (0..40).map(|i| format!("x-{i}:{}\n", "v".repeat(100))).collect();
        for with_length in [true, false] {
            let body = "b".repeat(20_000);
            let length = if with_length { format!("content-length:{}\n", body.len()) } else { String::new() };
            let wire = format!("SEND\ndestination:/queue/a\n{length}{filler}\n{body}\0");
            let mut d = Decoder::new(Version::V1_2, Limits::default());
            let mut frames = Vec::new();
            let mut looked_at = 0;
            for b in wire.as_bytes() {
                let before = d.scan.seen;
                d.push(std::slice::from_ref(b));
                if let Some(f) = d.next_frame().unwrap() {
                    frames.push(f);
                }
                // What this piece made the decoder look at: what it had not seen before.
                looked_at += d.scan.seen.saturating_sub(before);
            }
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].body.len(), body.len());
            assert_eq!(frames[0].headers.len(), 41 + usize::from(with_length));
            assert_eq!(d.heads_parsed, 1, "the head was parsed more than once");
            assert!(looked_at <= 2 * wire.len(), "{looked_at} bytes looked at for {}", wire.len());
        }
    }

    /// Header injection: a value from a peer (a token's `sub`, a channel name) with a line
    /// break or a NUL cannot add a header or end the frame in any version.
    #[test]
    fn header_values_cannot_add_headers_or_end_the_frame() {
        let evil = "ann\nadmin:true\r\n\0MESSAGE";
        for v in [Version::V1_0, Version::V1_1, Version::V1_2] {
            for command in [Command::Message, Command::Connected] {
                let frame = Frame::new(command).header("user-name", evil);
                let wire = frame.to_bytes(v);
                assert_eq!(wire.iter().filter(|&&b| b == 0).count(), 1, "{v:?} {command}: {wire:?}");
                let back = decode_all(v, &wire).unwrap();
                assert_eq!(back.len(), 1);
                assert_eq!(back[0].headers.len(), 1, "{v:?} {command}: {:?}", back[0].headers);
                assert!(back[0].get("admin").is_none());
            }
        }
    }

    #[test]
    fn escapes_per_version() {
        let frame =
            Frame::new(Command::Message).header("destination", "/topic/chat:lobby").header("x", "a\\b\nc\rd");
        assert_eq!(
            &frame.to_bytes(Version::V1_2)[..],
            b"MESSAGE\ndestination:/topic/chat\\clobby\nx:a\\\\b\\nc\\rd\n\n\0"
        );
        assert_eq!(
            &frame.to_bytes(Version::V1_1)[..],
            b"MESSAGE\ndestination:/topic/chat\\clobby\nx:a\\\\b\\nc\rd\n\n\0"
        );
        for v in [Version::V1_1, Version::V1_2] {
            let back = decode_all(v, &frame.to_bytes(v)).unwrap();
            assert_eq!(back, vec![frame.clone()]);
        }
        // 1.0 has no escapes: a backslash is just a backslash, spaces after ':' are dropped.
        let f = decode_all(Version::V1_0, b"SEND\ndestination: /queue/a\\n\n\nhi\0").unwrap();
        assert_eq!(f[0].get("destination"), Some("/queue/a\\n"));
    }

    #[test]
    fn undefined_escapes_are_errors() {
        let e = decode_all(Version::V1_2, b"SEND\ndestination:a\\tb\n\n\0").unwrap_err();
        assert!(matches!(e, FrameError::BadEscape(_)), "{e}");
        // \r is defined only from 1.2 on.
        assert!(decode_all(Version::V1_1, b"SEND\nx:a\\r\n\n\0").is_err());
        assert!(decode_all(Version::V1_2, b"SEND\nx:a\\\n\n\0").is_err());
    }

    #[test]
    fn content_length_bodies_may_hold_nul() {
        let f =
            decode_all(Version::V1_2, b"SEND\ndestination:/queue/a\ncontent-length:3\n\na\0b\0\n\n").unwrap();
        assert_eq!(&f[0].body[..], b"a\0b");
        let e = decode_all(Version::V1_2, b"SEND\ncontent-length:1\n\nab\0").unwrap_err();
        assert_eq!(e, FrameError::MissingNul(1));
        let e = decode_all(Version::V1_2, b"SEND\ncontent-length:x\n\n\0").unwrap_err();
        assert!(matches!(e, FrameError::BadContentLength(_)));
    }

    #[test]
    fn several_frames_and_heart_beats_in_one_input() {
        let input = b"\n\r\nSEND\ndestination:/a\n\none\0\nSEND\ndestination:/b\n\ntwo\0\n\n";
        let f = decode_all(Version::V1_2, input).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((&f[0].body[..], &f[1].body[..]), (&b"one"[..], &b"two"[..]));
        assert_eq!(f[1].get("destination"), Some("/b"));
    }

    #[test]
    fn first_of_repeated_headers_counts() {
        let f = decode_all(Version::V1_2, b"SEND\nfoo:1\nfoo:2\n\n\0").unwrap();
        assert_eq!(f[0].get("foo"), Some("1"));
        assert_eq!(f[0].headers.len(), 2);
    }

    #[test]
    fn cr_is_part_of_the_value_before_1_2() {
        let f = decode_all(Version::V1_1, b"SEND\nx:a\r\n\n\0").unwrap();
        assert_eq!(f[0].get("x"), Some("a\r"));
        let f = decode_all(Version::V1_2, b"SEND\r\nx:a\r\n\r\n\0").unwrap();
        assert_eq!(f[0].get("x"), Some("a"));
    }

    #[test]
    fn bad_input_errors() {
        assert!(matches!(decode_all(Version::V1_2, b"send\n\n\0"), Err(FrameError::UnknownCommand(_))));
        assert!(matches!(
            decode_all(Version::V1_2, b"SEND\nnocolon\n\n\0"),
            Err(FrameError::MalformedHeader(_))
        ));
        assert!(matches!(decode_all(Version::V1_2, b"SEND\n:v\n\n\0"), Err(FrameError::MalformedHeader(_))));
        assert_eq!(decode_all(Version::V1_2, b"SEND\nx:\xff\n\n\0"), Err(FrameError::NotUtf8));
    }

    #[test]
    fn limits() {
        let limits = Limits { max_frame_size: 100, max_headers: 2, max_header_length: 20 };
        let mut d = Decoder::new(Version::V1_2, limits);
        d.push(b"SEND\na:1\nb:2\nc:3\n\n\0");
        assert_eq!(d.next_frame(), Err(FrameError::TooManyHeaders { limit: 2 }));

        let mut d = Decoder::new(Version::V1_2, limits);
        d.push(b"SEND\nlong:0123456789012345678901234567890");
        assert_eq!(d.next_frame(), Err(FrameError::HeaderTooLong { limit: 20 }));

        // A body without NUL is refused as soon as it passes the limit, not buffered on.
        let mut d = Decoder::new(Version::V1_2, limits);
        d.push(b"SEND\n\n");
        d.push(&[b'x'; 60]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&[b'x'; 60]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { limit: 100 }));

        // A content-length over the limit is refused before its body arrives.
        let mut d = Decoder::new(Version::V1_2, limits);
        d.push(b"SEND\ncontent-length:1000\n\n");
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge { limit: 100 }));
    }
}
