//! The frame codec (RFC 6455 5.2): header parse and encode, and masking.

use crate::error::ProtocolError;

/// A frame opcode (RFC 6455 5.2). Reserved values are rejected at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continuation of a fragmented message.
    Continuation,
    /// 0x1: text (UTF-8).
    Text,
    /// 0x2: binary.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes the low four bits of the first header byte.
    pub fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(ProtocolError::ReservedOpCode(other)),
        })
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong are control frames (RFC 6455 5.5).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// The largest header: 2 fixed bytes, 8 length bytes, 4 mask bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1 (used by permessage-deflate).
    pub rsv1: bool,
    /// RSV2.
    pub rsv2: bool,
    /// RSV3.
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a header, otherwise the header and
    /// the number of bytes it took.
    ///
    /// # Errors
    ///
    /// A reserved opcode, or a 64-bit length with its top bit set (RFC 6455 5.2).
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut len) = match b1 & 0x7F {
            126 => {
                let Some(b) = buf.get(2..4) else { return Ok(None) };
                (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
            }
            127 => {
                let Some(b) = buf.get(2..10) else { return Ok(None) };
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let n = u64::from_be_bytes(a);
                // RFC 6455 5.2: "the most significant bit MUST be 0".
                if n >> 63 != 0 {
                    return Err(ProtocolError::InvalidLength);
                }
                (n, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            let Some(b) = buf.get(len..len + 4) else { return Ok(None) };
            len += 4;
            Some([b[0], b[1], b[2], b[3]])
        } else {
            None
        };
        let header = Self {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            rsv2: b0 & 0x20 != 0,
            rsv3: b0 & 0x10 != 0,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, len)))
    }

    /// Encodes the header into `out`, returning how many bytes were written.
    /// The length is written in its shortest form.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = match self.payload_len {
            n @ 0..=125 => {
                out[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        len
    }

    /// Length of the encoded header.
    pub fn encoded_len(&self) -> usize {
        let base = match self.payload_len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        base + if self.mask.is_some() { 4 } else { 0 }
    }
}

/// XORs `buf` with `key`, as if `buf` started `offset` bytes into the payload
/// (RFC 6455 5.3). Works a machine word at a time.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let rot = (offset % 4) as u32;
    let key = u32::from_ne_bytes(key);
    // Rotate so that byte 0 of the word lines up with key byte `offset % 4`.
    let key =
        if cfg!(target_endian = "little") { key.rotate_right(rot * 8) } else { key.rotate_left(rot * 8) };
    let kb = key.to_ne_bytes();
    // 32 bytes at a time in a shape the compiler turns into SIMD XORs, then words, then
    // bytes (32 and 8 are multiples of 4, so the key stays lined up).
    let mut key32 = [0u8; 32];
    for (i, k) in key32.iter_mut().enumerate() {
        *k = kb[i % 4];
    }
    let mut blocks = buf.chunks_exact_mut(32);
    for block in &mut blocks {
        for (b, k) in block.iter_mut().zip(&key32) {
            *b ^= k;
        }
    }
    let buf = blocks.into_remainder();
    let wide = u64::from_ne_bytes([kb[0], kb[1], kb[2], kb[3], kb[0], kb[1], kb[2], kb[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= kb[i % 4];
    }
}

/// The byte-at-a-time mask of RFC 6455 5.3, kept as the reference for [`apply_mask`].
pub fn apply_mask_naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_5_7_single_frame_unmasked_text() {
        let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, n) = FrameHeader::parse(&bytes).unwrap().unwrap();
        assert_eq!(n, 2);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.payload_len, 5);
        assert_eq!(&bytes[n..], b"Hello");
    }

    #[test]
    fn rfc6455_5_7_single_frame_masked_text() {
        let bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (h, n) = FrameHeader::parse(&bytes).unwrap().unwrap();
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        let mut p = bytes[n..].to_vec();
        apply_mask(&mut p, h.mask.unwrap(), 0);
        assert_eq!(p, b"Hello");
    }

    #[test]
    fn rfc6455_5_7_fragmented_unmasked_text() {
        let a = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let b = [0x80, 0x02, 0x6c, 0x6f];
        let (ha, _) = FrameHeader::parse(&a).unwrap().unwrap();
        let (hb, _) = FrameHeader::parse(&b).unwrap().unwrap();
        assert!(!ha.fin && ha.opcode == OpCode::Text);
        assert!(hb.fin && hb.opcode == OpCode::Continuation);
    }

    #[test]
    fn rfc6455_5_7_ping_and_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, _) = FrameHeader::parse(&ping).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Ping);
        let pong = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (h, n) = FrameHeader::parse(&pong).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Pong);
        let mut p = pong[n..].to_vec();
        apply_mask(&mut p, h.mask.unwrap(), 0);
        assert_eq!(p, b"Hello");
    }

    #[test]
    fn rfc6455_5_7_lengths() {
        // 256 bytes binary message in a single unmasked frame.
        let h = FrameHeader::parse(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.0.payload_len, h.1), (256, 4));
        // 64 KiB binary message in a single unmasked frame.
        let h = FrameHeader::parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]).unwrap().unwrap();
        assert_eq!((h.0.payload_len, h.1), (65536, 10));
    }

    #[test]
    fn partial_headers_need_more() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for i in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..i]).unwrap(), None, "prefix {i}");
        }
        assert!(FrameHeader::parse(&full).unwrap().is_some());
    }

    #[test]
    fn reserved_opcode_and_length_msb() {
        assert_eq!(FrameHeader::parse(&[0x83, 0]), Err(ProtocolError::ReservedOpCode(3)));
        assert_eq!(FrameHeader::parse(&[0x8B, 0]), Err(ProtocolError::ReservedOpCode(0xB)));
        let bad = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&bad), Err(ProtocolError::InvalidLength));
    }

    #[test]
    fn mask_matches_naive_at_every_offset() {
        let data: Vec<u8> = (0..100u8).collect();
        for off in 0..8 {
            for len in 0..data.len() {
                let mut a = data[..len].to_vec();
                let mut b = a.clone();
                apply_mask(&mut a, [1, 2, 3, 0xff], off);
                apply_mask_naive(&mut b, [1, 2, 3, 0xff], off);
                assert_eq!(a, b);
            }
        }
    }
}

/// A whole server-to-client data frame (header and payload, unmasked, FIN set, no RSV bits),
/// encoded once and shared: a hub that sends one message to many connections builds it once
/// and hands each connection a reference-counted copy
/// ([`Connection::send_prepared`](crate::Connection::send_prepared)).
///
/// With permessage-deflate, a connection that agreed to `server_no_context_takeover` sends it
/// compressed: the first such connection compresses it (with its window and level), and every
/// later one whose window is at least as large shares that compressed frame. A connection
/// with context takeover, or a smaller window, sends it uncompressed (RFC 7692 lets any
/// message go uncompressed).
#[derive(Clone)]
pub struct PreparedFrame {
    bytes: bytes::Bytes,
    payload_len: usize,
    opcode: OpCode,
    deflated: std::sync::Arc<std::sync::OnceLock<Deflated>>,
}

/// A prepared frame's compressed form.
#[derive(Debug)]
struct Deflated {
    /// The window it was compressed with: a peer that allows a smaller one cannot take it.
    window_bits: u8,
    /// The whole frame (RSV1 set), or `None` when compressing made it no shorter.
    wire: Option<bytes::Bytes>,
}

impl PartialEq for PreparedFrame {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PreparedFrame {}

impl std::fmt::Debug for PreparedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedFrame").field("wire_len", &self.bytes.len()).finish()
    }
}

fn encode_whole(opcode: OpCode, rsv1: bool, payload: &[u8]) -> bytes::Bytes {
    let header = FrameHeader {
        fin: true,
        rsv1,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut bytes = Vec::with_capacity(n + payload.len());
    bytes.extend_from_slice(&head[..n]);
    bytes.extend_from_slice(payload);
    bytes.into()
}

impl PreparedFrame {
    /// A text frame.
    pub fn text(text: &str) -> Self {
        Self::new(OpCode::Text, text.as_bytes())
    }

    /// A binary frame.
    pub fn binary(data: &[u8]) -> Self {
        Self::new(OpCode::Binary, data)
    }

    fn new(opcode: OpCode, payload: &[u8]) -> Self {
        Self {
            bytes: encode_whole(opcode, false, payload),
            payload_len: payload.len(),
            opcode,
            deflated: Default::default(),
        }
    }

    /// The frame as it goes on the wire, uncompressed.
    pub fn wire(&self) -> &bytes::Bytes {
        &self.bytes
    }

    /// The payload length, uncompressed.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The frame compressed as a message that stands alone, for a connection allowed a
    /// window of `window_bits`: made on the first call (with that window and `level`) and
    /// shared after. `None` when compressing does not make it shorter, or when it was made
    /// with a larger window than this connection allows.
    pub(crate) fn deflated(&self, window_bits: u8, level: u32) -> Option<&bytes::Bytes> {
        let d = self.deflated.get_or_init(|| {
            let payload = &self.bytes[self.bytes.len() - self.payload_len..];
            let compressed = crate::deflate::compress_alone(payload, window_bits, level);
            let wire = encode_whole(self.opcode, true, &compressed);
            Deflated { window_bits, wire: (wire.len() < self.bytes.len()).then_some(wire) }
        });
        if d.window_bits <= window_bits {
            d.wire.as_ref()
        } else {
            None
        }
    }
}
