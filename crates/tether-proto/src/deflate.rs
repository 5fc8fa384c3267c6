//! permessage-deflate (RFC 7692): negotiation and the per-connection codec.
//!
//! DEFLATE itself comes from flate2 with the pure-Rust zlib-rs backend (it supports window
//! sizes, which miniz_oxide does not). Choices the RFC leaves open, and why:
//!
//! - **Inflating always uses a 15-bit window.** A larger window decodes anything a smaller
//!   one produced, so the peer's `*_max_window_bits` never changes how we inflate.
//! - **A window of 8 bits.** zlib cannot produce raw DEFLATE with a 256-byte window (it
//!   silently uses 512). When the peer asks us to compress with 8 bits we agree and then
//!   send every message uncompressed: RSV1 is per message (RFC 7692 6), so that is always
//!   correct, and the peer can still compress towards us.
//! - **Bad offers.** A server declines an offer with an unknown, duplicate or invalid
//!   parameter and looks at the next one (RFC 7692 5: "MUST decline"); a client fails the
//!   handshake when the answer is invalid (RFC 7692 5: "MUST _Fail the WebSocket Connection_").
//! - **State is lazy.** The compressor is allocated on the first message we compress, the
//!   decompressor on the first compressed message we receive. See `docs/OPERATIONS.md` for
//!   the memory each costs.

use crate::error::{HandshakeError, ProtocolError};
use crate::handshake::Extension;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;

/// The extension token.
pub const NAME: &str = "permessage-deflate";

/// The four bytes a sync flush ends with, removed before sending and appended before
/// inflating (RFC 7692 7.2.1, 7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What this endpoint asks for or allows when negotiating permessage-deflate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Ask (client) or require (server) that the server resets its compressor after every
    /// message. Saves the server's compressor memory between messages at the cost of ratio.
    pub server_no_context_takeover: bool,
    /// Ask (server) or promise (client) that the client resets its compressor after every
    /// message.
    pub client_no_context_takeover: bool,
    /// Largest window the server's compressor may use, 8 to 15.
    pub server_max_window_bits: u8,
    /// Largest window the client's compressor may use, 8 to 15.
    pub client_max_window_bits: u8,
    /// Messages shorter than this are sent uncompressed. Default 64 bytes: below that the
    /// DEFLATE block overhead often makes the message longer.
    pub threshold: usize,
    /// zlib compression level, 0 to 9. Default 6.
    pub level: u32,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            threshold: 64,
            level: 6,
        }
    }
}

impl DeflateConfig {
    /// Sets [`DeflateConfig::server_no_context_takeover`].
    pub fn with_server_no_context_takeover(mut self, v: bool) -> Self {
        self.server_no_context_takeover = v;
        self
    }
    /// Sets [`DeflateConfig::client_no_context_takeover`].
    pub fn with_client_no_context_takeover(mut self, v: bool) -> Self {
        self.client_no_context_takeover = v;
        self
    }
    /// Sets [`DeflateConfig::server_max_window_bits`] (clamped to 8..=15).
    pub fn with_server_max_window_bits(mut self, v: u8) -> Self {
        self.server_max_window_bits = v.clamp(8, 15);
        self
    }
    /// Sets [`DeflateConfig::client_max_window_bits`] (clamped to 8..=15).
    pub fn with_client_max_window_bits(mut self, v: u8) -> Self {
        self.client_max_window_bits = v.clamp(8, 15);
        self
    }
    /// Sets [`DeflateConfig::threshold`].
    pub fn with_threshold(mut self, v: usize) -> Self {
        self.threshold = v;
        self
    }
    /// Sets [`DeflateConfig::level`] (clamped to 0..=9).
    pub fn with_level(mut self, v: u32) -> Self {
        self.level = v.min(9);
        self
    }
}

/// What was agreed, from this endpoint's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateParams {
    /// Window for what we send; `None` when we may not compress at all (an 8-bit window).
    pub compress_window_bits: Option<u8>,
    /// We start every message afresh: no compressor is kept between messages (one is
    /// borrowed from a per-thread pool for each), and frames prepared once for many
    /// connections may be sent compressed.
    pub compress_no_context_takeover: bool,
    /// The peer must start every message afresh: our decompressor is not kept between its
    /// messages (one is borrowed from a per-thread pool for each).
    pub decompress_no_context_takeover: bool,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
    /// zlib compression level.
    pub level: u32,
}

/// One offer or answer, its parameters checked.
#[derive(Debug, Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (allowed in offers only).
    client_max_window_bits: Option<Option<u8>>,
}

fn window_bits(value: Option<&str>) -> Result<u8, &'static str> {
    let v = value.ok_or("window bits need a value")?;
    // RFC 7692 7.1.2: "a decimal integer value in the range 8 to 15 ... without leading zeros"
    match v.parse::<u8>() {
        Ok(n @ 8..=15) if !v.starts_with('0') && !v.starts_with('+') => Ok(n),
        _ => Err("window bits must be 8 to 15"),
    }
}

fn parse_params(ext: &Extension, offer: bool) -> Result<Params, &'static str> {
    let mut p = Params::default();
    let mut seen = [false; 4];
    for (name, value) in &ext.params {
        let slot = match name.as_str() {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return Err("unknown parameter"),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err("duplicate parameter");
        }
        match slot {
            0 | 1 if value.is_some() => return Err("no_context_takeover takes no value"),
            0 => p.server_no_context_takeover = true,
            1 => p.client_no_context_takeover = true,
            2 => p.server_max_window_bits = Some(window_bits(value.as_deref())?),
            _ if value.is_none() && offer => p.client_max_window_bits = Some(None),
            _ => p.client_max_window_bits = Some(Some(window_bits(value.as_deref())?)),
        }
    }
    Ok(p)
}

/// Server side: picks the first acceptable permessage-deflate offer. Returns what was
/// agreed and the `Sec-WebSocket-Extensions` value to answer with, or `None` to decline.
pub fn server_accept(offers: &[Extension], config: &DeflateConfig) -> Option<(DeflateParams, String)> {
    offers.iter().filter(|e| e.name.eq_ignore_ascii_case(NAME)).find_map(|e| {
        let offer = parse_params(e, true).ok()?;
        let mut answer = String::from(NAME);
        let server_nct = offer.server_no_context_takeover || config.server_no_context_takeover;
        if server_nct {
            answer.push_str("; server_no_context_takeover");
        }
        let client_nct = config.client_no_context_takeover;
        if client_nct {
            answer.push_str("; client_no_context_takeover");
        }
        // Our compressor's window: what the client allows and we want, whichever is smaller.
        let server_bits = config.server_max_window_bits.min(offer.server_max_window_bits.unwrap_or(15));
        if offer.server_max_window_bits.is_some() || server_bits < 15 {
            answer.push_str(&format!("; server_max_window_bits={server_bits}"));
        }
        // We may limit the client's window only if it said it understands the parameter.
        if let Some(offered) = offer.client_max_window_bits {
            let client_bits = config.client_max_window_bits.min(offered.unwrap_or(15));
            if offered.is_some() || client_bits < 15 {
                answer.push_str(&format!("; client_max_window_bits={client_bits}"));
            }
        }
        let params = DeflateParams {
            compress_window_bits: (server_bits >= 9).then_some(server_bits),
            compress_no_context_takeover: server_nct,
            // Only our answer binds the client: its own offer of the parameter is a hint
            // (RFC 7692 7.1.1.2), which Autobahn's client does not keep to.
            decompress_no_context_takeover: client_nct,
            threshold: config.threshold,
            level: config.level,
        };
        Some((params, answer))
    })
}

/// Client side: the `Sec-WebSocket-Extensions` value that offers permessage-deflate.
pub fn client_offer(config: &DeflateConfig) -> String {
    let mut offer = String::from(NAME);
    if config.server_no_context_takeover {
        offer.push_str("; server_no_context_takeover");
    }
    if config.client_no_context_takeover {
        offer.push_str("; client_no_context_takeover");
    }
    if config.server_max_window_bits < 15 {
        offer.push_str(&format!("; server_max_window_bits={}", config.server_max_window_bits));
    }
    // Tell the server we understand client_max_window_bits (browsers do the same).
    if config.client_max_window_bits < 15 {
        offer.push_str(&format!("; client_max_window_bits={}", config.client_max_window_bits));
    } else {
        offer.push_str("; client_max_window_bits");
    }
    offer
}

/// Client side: checks the server's answer to [`client_offer`].
///
/// # Errors
///
/// [`HandshakeError::InvalidDeflateResponse`] for an answer the offer does not allow.
pub fn client_accept(
    answer: &[Extension],
    config: &DeflateConfig,
) -> Result<Option<DeflateParams>, HandshakeError> {
    let mut found = None;
    for ext in answer {
        if !ext.name.eq_ignore_ascii_case(NAME) {
            return Err(HandshakeError::UnofferedExtension(ext.name.clone()));
        }
        if found.replace(ext).is_some() {
            return Err(HandshakeError::InvalidDeflateResponse("permessage-deflate answered twice"));
        }
    }
    let Some(ext) = found else { return Ok(None) };
    let bad = HandshakeError::InvalidDeflateResponse;
    let p = parse_params(ext, false).map_err(bad)?;
    // RFC 7692 7.1.1.1 / 7.1.2.1: what we asked for must be confirmed, within our limits.
    if config.server_no_context_takeover && !p.server_no_context_takeover {
        return Err(bad("server_no_context_takeover was requested but not confirmed"));
    }
    match p.server_max_window_bits {
        Some(bits) if bits > config.server_max_window_bits => {
            return Err(bad("server_max_window_bits above the requested value"))
        }
        None if config.server_max_window_bits < 15 => {
            return Err(bad("server_max_window_bits was requested but not confirmed"))
        }
        _ => {}
    }
    let client_bits = match p.client_max_window_bits {
        Some(Some(bits)) if bits > config.client_max_window_bits => {
            return Err(bad("client_max_window_bits above the offered value"))
        }
        Some(Some(bits)) => bits,
        _ => config.client_max_window_bits,
    };
    Ok(Some(DeflateParams {
        compress_window_bits: (client_bits >= 9).then_some(client_bits),
        compress_no_context_takeover: p.client_no_context_takeover || config.client_no_context_takeover,
        decompress_no_context_takeover: p.server_no_context_takeover,
        threshold: config.threshold,
        level: config.level,
    }))
}

/// An inflated message being assembled: a list of chunks, so that growing it never copies
/// (or briefly doubles) what is already there.
#[derive(Debug, Default)]
pub(crate) struct Inflated {
    chunks: Vec<Vec<u8>>,
    len: usize,
}

/// Chunks grow from 4 KiB by doubling up to this size.
const MAX_CHUNK: usize = 1 << 20;

impl Inflated {
    /// Bytes so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A chunk with spare capacity, without ever allocating past `limit + 1` bytes in all.
    fn room(&mut self, limit: usize) -> Result<&mut Vec<u8>, ProtocolError> {
        let has_room = self.chunks.last().is_some_and(|c| c.len() < c.capacity());
        if !has_room {
            let left = (limit + 1).saturating_sub(self.len);
            if left == 0 {
                return Err(ProtocolError::MessageTooLarge { limit });
            }
            let size = self.len.clamp(4096, MAX_CHUNK).min(left);
            self.chunks.push(Vec::with_capacity(size));
        }
        let last = self.chunks.len() - 1;
        Ok(&mut self.chunks[last])
    }

    /// Calls `f` on the bytes from offset `from` to the end, in order.
    pub(crate) fn each_since(&self, mut from: usize, mut f: impl FnMut(&[u8]) -> bool) -> bool {
        for chunk in &self.chunks {
            if from >= chunk.len() {
                from -= chunk.len();
                continue;
            }
            if !f(&chunk[from..]) {
                return false;
            }
            from = 0;
        }
        true
    }

    /// The message: the single chunk as is, or the chunks joined once.
    pub(crate) fn into_bytes(mut self) -> bytes::Bytes {
        if self.chunks.len() == 1 {
            let mut chunk = self.chunks.pop().unwrap_or_default();
            // Do not keep a mostly empty chunk alive behind a small message.
            if chunk.capacity() - chunk.len() > 1024 {
                chunk.shrink_to_fit();
            }
            return bytes::Bytes::from(chunk);
        }
        let mut all = Vec::with_capacity(self.len);
        for chunk in self.chunks {
            all.extend_from_slice(&chunk);
        }
        bytes::Bytes::from(all)
    }
}

/// How many idle compressors (and, apart, decompressors) a thread keeps for reuse.
const POOL: usize = 4;

thread_local! {
    /// Compressors for messages that stand alone, with their window bits and level, reset.
    static COMPRESSORS: RefCell<Vec<(u8, u32, Box<Compress>)>> = const { RefCell::new(Vec::new()) };
    /// Decompressors for peers that start every message afresh, reset.
    // Boxed as a connection's codec holds them, so that lending one moves a pointer.
    #[allow(clippy::vec_box)]
    static DECOMPRESSORS: RefCell<Vec<Box<Decompress>>> = const { RefCell::new(Vec::new()) };
}

/// A compressor of `bits` and `level` from this thread's pool, or a new one.
fn take_compressor(bits: u8, level: u32) -> Box<Compress> {
    let pooled = COMPRESSORS
        .try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let at = pool.iter().position(|&(b, l, _)| b == bits && l == level)?;
            Some(pool.swap_remove(at).2)
        })
        .ok()
        .flatten();
    pooled.unwrap_or_else(|| Box::new(Compress::new_with_window_bits(Compression::new(level), false, bits)))
}

/// Gives a compressor back, reset, to this thread's pool (dropped when the pool is full).
fn give_compressor(bits: u8, level: u32, mut c: Box<Compress>) {
    c.reset();
    let _ = COMPRESSORS.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL {
            pool.push((bits, level, c));
        }
    });
}

/// A decompressor from this thread's pool, or a new one (always a 15-bit window).
fn take_decompressor() -> Box<Decompress> {
    let pooled = DECOMPRESSORS.try_with(|pool| pool.borrow_mut().pop()).ok().flatten();
    pooled.unwrap_or_else(|| Box::new(Decompress::new_with_window_bits(false, 15)))
}

/// Gives a decompressor back, reset, to this thread's pool (dropped when the pool is full).
fn give_decompressor(mut d: Box<Decompress>) {
    d.reset(false);
    let _ = DECOMPRESSORS.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL {
            pool.push(d);
        }
    });
}

/// Compresses one whole message with `c` (a sync flush, its `00 00 ff ff` removed, RFC 7692
/// 7.2.1). An empty result is sent as the single byte `0x00`.
fn compress_message(c: &mut Compress, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    let start = c.total_in();
    loop {
        let consumed = (c.total_in() - start) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.len().max(64));
        }
        // Compressing into a growing Vec cannot fail: flate2 reports only stream errors,
        // which a fresh or reset raw stream fed with Sync flushes does not produce.
        let _ = c.compress_vec(&input[consumed..], &mut out, FlushCompress::Sync);
        let done = (c.total_in() - start) as usize == input.len();
        // A sync flush is complete once it stops filling the buffer.
        if done && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    // With nothing new to flush (an empty message right after another flush) zlib emits
    // nothing, and an empty payload plus the receiver's `00 00 ff ff` would read as the
    // start of a 65280-byte stored block. Send RFC 7692 7.2.3.6's empty message instead:
    // one 0x00 byte, which with the tail is an empty stored block. The compressor is
    // byte-aligned after any sync flush, so this is valid in every state.
    if out.is_empty() {
        out.push(0x00);
    }
    out
}

/// Compresses `input` as a message that stands alone, with no context before or after it,
/// using a compressor from this thread's pool: what a sender without context takeover
/// sends, and what a [`PreparedFrame`](crate::frame::PreparedFrame) shares.
pub(crate) fn compress_alone(input: &[u8], bits: u8, level: u32) -> Vec<u8> {
    let mut c = take_compressor(bits, level);
    let out = compress_message(&mut c, input);
    give_compressor(bits, level, c);
    out
}

/// The compressor and decompressor of one connection, created on first use. Boxed: each
/// is a few hundred bytes inline, and without context takeover a connection holds neither
/// between messages.
pub(crate) struct Codec {
    params: DeflateParams,
    compressor: Option<Box<Compress>>,
    decompressor: Option<Box<Decompress>>,
    /// The current message's DEFLATE stream ended with a BFINAL block: the rest of the
    /// message (and the appended tail) is ignored, and the next message starts a new stream.
    stream_ended: bool,
    /// Messages sent compressed ([`Stats::compressed_sent`](crate::Stats::compressed_sent)).
    pub(crate) compressed_sent: u64,
    /// Messages received compressed.
    pub(crate) compressed_received: u64,
}

impl Codec {
    pub(crate) fn new(params: DeflateParams) -> Self {
        Self {
            params,
            compressor: None,
            decompressor: None,
            stream_ended: false,
            compressed_sent: 0,
            compressed_received: 0,
        }
    }

    /// Whether a message of `len` bytes should be compressed.
    pub(crate) fn wants(&self, len: usize) -> bool {
        self.params.compress_window_bits.is_some() && len >= self.params.threshold
    }

    /// Compresses one message. Without context takeover no compressor is kept between
    /// messages: one is borrowed from the thread's pool.
    pub(crate) fn compress(&mut self, input: &[u8]) -> Vec<u8> {
        let bits = self.params.compress_window_bits.unwrap_or(15);
        if self.params.compress_no_context_takeover {
            return compress_alone(input, bits, self.params.level);
        }
        let level = Compression::new(self.params.level);
        let c = self
            .compressor
            .get_or_insert_with(|| Box::new(Compress::new_with_window_bits(level, false, bits)));
        compress_message(c, input)
    }

    /// The window bits and level of a compressed frame shared by many connections that this
    /// one may send for a message of `len` bytes: only without context takeover on our side
    /// (a message compressed elsewhere would otherwise break the peer's window), and at or
    /// over the threshold.
    pub(crate) fn shares(&self, len: usize) -> Option<(u8, u32)> {
        let bits = self.params.compress_window_bits?;
        let ok = self.params.compress_no_context_takeover && len >= self.params.threshold;
        ok.then_some((bits, self.params.level))
    }

    /// Inflates part of a compressed message into `out`, failing as soon as the message
    /// would pass `limit` bytes. `out` grows in chunks and never holds more than `limit + 1`
    /// bytes, so a bomb costs at most the limit's worth of memory.
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        out: &mut Inflated,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        if self.stream_ended {
            return Ok(());
        }
        let fresh = self.params.decompress_no_context_takeover;
        let d = self.decompressor.get_or_insert_with(|| {
            if fresh {
                take_decompressor()
            } else {
                Box::new(Decompress::new_with_window_bits(false, 15))
            }
        });
        let mut pos = 0;
        loop {
            let buf = out.room(limit)?;
            let (in_before, len_before) = (d.total_in(), buf.len());
            let status = d
                .decompress_vec(&input[pos..], buf, FlushDecompress::None)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            let full = buf.len() == buf.capacity();
            out.len += buf.len() - len_before;
            pos += (d.total_in() - in_before) as usize;
            if out.len > limit {
                return Err(ProtocolError::MessageTooLarge { limit });
            }
            if status == Status::StreamEnd {
                // RFC 7692 7.2.3.4: a block with BFINAL set ends the DEFLATE stream. What
                // follows in this message is not DEFLATE data (zlib ignores it too); the next
                // message starts a new stream.
                self.stream_ended = true;
                return Ok(());
            }
            if pos == input.len() && !full {
                return Ok(());
            }
        }
    }

    /// Ends a compressed message: inflate the removed tail (RFC 7692 7.2.2).
    pub(crate) fn finish_message(&mut self, out: &mut Inflated, limit: usize) -> Result<(), ProtocolError> {
        self.decompress(&TAIL, out, limit)?;
        let ended = std::mem::take(&mut self.stream_ended);
        if self.params.decompress_no_context_takeover {
            // The peer must start every message afresh (our answer said so, RFC 7692
            // 7.1.1.2): no window is kept until its next message.
            if let Some(d) = self.decompressor.take() {
                give_decompressor(d);
            }
        } else if ended {
            if let Some(d) = self.decompressor.as_mut() {
                d.reset(false);
            }
        }
        Ok(())
    }

    /// Whether compression and decompression state has been allocated (for tests and docs).
    pub(crate) fn allocated(&self) -> (bool, bool) {
        (self.compressor.is_some(), self.decompressor.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::parse_extensions;

    fn exts(s: &str) -> Vec<Extension> {
        parse_extensions([s.as_bytes()]).unwrap()
    }

    fn params(compress_nct: bool) -> DeflateParams {
        DeflateParams {
            compress_window_bits: Some(15),
            compress_no_context_takeover: compress_nct,
            decompress_no_context_takeover: false,
            threshold: 0,
            level: 6,
        }
    }

    fn inflate(codec: &mut Codec, data: &[u8]) -> Vec<u8> {
        let mut out = Inflated::default();
        codec.decompress(data, &mut out, 1 << 20).unwrap();
        codec.finish_message(&mut out, 1 << 20).unwrap();
        out.into_bytes().to_vec()
    }

    #[test]
    fn rfc7692_7_2_3_1_and_2_hello_with_context_takeover() {
        let mut c = Codec::new(params(false));
        assert_eq!(c.compress(b"Hello"), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(c.compress(b"Hello"), [0xf2, 0x00, 0x11, 0x00, 0x00]);
        let mut d = Codec::new(params(false));
        assert_eq!(inflate(&mut d, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), b"Hello");
        assert_eq!(inflate(&mut d, &[0xf2, 0x00, 0x11, 0x00, 0x00]), b"Hello");
    }

    #[test]
    fn rfc7692_without_context_takeover_each_message_stands_alone() {
        let mut c = Codec::new(params(true));
        assert_eq!(c.compress(b"Hello"), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(c.compress(b"Hello"), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    }

    #[test]
    fn rfc7692_7_2_3_3_to_6_other_encodings() {
        let mut d = Codec::new(params(false));
        // 7.2.3.3: a stored (uncompressed) block.
        assert_eq!(
            inflate(&mut d, &[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]),
            b"Hello"
        );
        // 7.2.3.4: BFINAL set; the next message is a new stream.
        assert_eq!(inflate(&mut d, &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]), b"Hello");
        // 7.2.3.5: two blocks in one message.
        let two = [0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&mut d, &two), b"Hello");
        // 7.2.3.6: an empty message compresses to a single 0x00.
        let mut c = Codec::new(params(false));
        assert_eq!(c.compress(b""), [0x00]);
        assert_eq!(inflate(&mut d, &[0x00]), b"");
    }

    #[test]
    fn server_negotiation() {
        let cfg = DeflateConfig::default();
        let (p, answer) = server_accept(&exts("permessage-deflate; client_max_window_bits"), &cfg).unwrap();
        assert_eq!(answer, "permessage-deflate");
        assert_eq!(p.compress_window_bits, Some(15));
        let (p, answer) = server_accept(
            &exts("permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"),
            &cfg,
        )
        .unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        );
        assert_eq!((p.compress_window_bits, p.compress_no_context_takeover), (Some(10), true));
        // Our own limits apply to both sides.
        let tight = DeflateConfig::default()
            .with_client_no_context_takeover(true)
            .with_server_max_window_bits(11)
            .with_client_max_window_bits(9);
        let (_, answer) = server_accept(&exts("permessage-deflate; client_max_window_bits"), &tight).unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=11; client_max_window_bits=9"
        );
        // A window of 8: agreed, but we send uncompressed.
        let (p, _) = server_accept(&exts("permessage-deflate; server_max_window_bits=8"), &cfg).unwrap();
        assert_eq!(p.compress_window_bits, None);
    }

    #[test]
    fn server_declines_bad_offers_and_takes_the_next() {
        let cfg = DeflateConfig::default();
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; x-unknown",
            "x-other",
        ] {
            assert_eq!(server_accept(&exts(bad), &cfg), None, "{bad}");
        }
        let (p, answer) = server_accept(
            &exts("permessage-deflate; bogus, permessage-deflate; server_no_context_takeover"),
            &cfg,
        )
        .unwrap();
        assert_eq!(answer, "permessage-deflate; server_no_context_takeover");
        assert!(p.compress_no_context_takeover);
    }

    #[test]
    fn client_negotiation() {
        let cfg = DeflateConfig::default();
        assert_eq!(client_offer(&cfg), "permessage-deflate; client_max_window_bits");
        let p = client_accept(&exts("permessage-deflate"), &cfg).unwrap().unwrap();
        assert_eq!((p.compress_window_bits, p.compress_no_context_takeover), (Some(15), false));
        let p = client_accept(
            &exts("permessage-deflate; client_no_context_takeover; client_max_window_bits=10"),
            &cfg,
        )
        .unwrap()
        .unwrap();
        assert_eq!((p.compress_window_bits, p.compress_no_context_takeover), (Some(10), true));
        // An 8-bit window for us: agreed, sent uncompressed.
        let p = client_accept(&exts("permessage-deflate; client_max_window_bits=8"), &cfg).unwrap().unwrap();
        assert_eq!(p.compress_window_bits, None);
        assert_eq!(client_accept(&[], &cfg), Ok(None));
    }

    #[test]
    fn client_refuses_bad_answers() {
        let cfg =
            DeflateConfig::default().with_server_no_context_takeover(true).with_server_max_window_bits(10);
        assert_eq!(
            client_offer(&cfg),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits"
        );
        for bad in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; nope",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10, permessage-deflate",
        ] {
            assert!(
                matches!(client_accept(&exts(bad), &cfg), Err(HandshakeError::InvalidDeflateResponse(_))),
                "{bad}"
            );
        }
        assert_eq!(
            client_accept(&exts("x-other"), &cfg),
            Err(HandshakeError::UnofferedExtension("x-other".into()))
        );
    }

    #[test]
    fn peer_keeps_context_despite_no_context_takeover_in_its_offer() {
        // Autobahn's client offers client_no_context_takeover, and when the answer does not
        // include it, compresses with context takeover: we must still decode.
        let offer = exts("permessage-deflate; client_no_context_takeover; client_max_window_bits");
        let (params, answer) = server_accept(&offer, &DeflateConfig::default()).unwrap();
        assert_eq!(answer, "permessage-deflate");
        let mut server = Codec::new(params);
        let mut peer = Codec::new(super::tests::params(false));
        for _ in 0..3 {
            let wire = peer.compress(b"0123456789abcdef");
            assert_eq!(inflate(&mut server, &wire), b"0123456789abcdef");
        }
    }

    #[test]
    fn messages_ending_with_a_final_block() {
        // Each message a complete DEFLATE stream (Z_FINISH, BFINAL=1, nothing after it), as
        // Autobahn's client sends with client_no_context_takeover.
        let finish = |data: &[u8]| {
            let mut c = Compress::new(Compression::default(), false);
            let mut out = Vec::with_capacity(data.len() + 64);
            c.compress_vec(data, &mut out, FlushCompress::Finish).unwrap();
            out
        };
        let mut d = Codec::new(params(false));
        for text in ["Hello", "world, again", "and a third"] {
            assert_eq!(inflate(&mut d, &finish(text.as_bytes())), text.as_bytes());
        }
    }

    #[test]
    fn inflate_stops_at_the_limit() {
        let mut c = Codec::new(params(false));
        let zeros = c.compress(&vec![0u8; 100_000]);
        let mut d = Codec::new(params(false));
        let mut out = Inflated::default();
        assert_eq!(
            d.decompress(&zeros, &mut out, 50_000),
            Err(ProtocolError::MessageTooLarge { limit: 50_000 })
        );
        let capacity: usize = out.chunks.iter().map(Vec::capacity).sum();
        assert!(capacity <= 50_001, "capacity {capacity}");
        let mut d = Codec::new(params(false));
        let err = d.decompress(&[0xff, 0xff, 0xff], &mut Inflated::default(), 100);
        assert_eq!(err, Err(ProtocolError::InvalidCompressedData));
    }

    #[test]
    fn empty_messages_in_a_row_with_context_takeover() {
        // Found by the property test: the second empty message made zlib emit nothing.
        let mut c = Codec::new(params(false));
        let mut d = Codec::new(params(false));
        let random: Vec<u8> = (0..57u32).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
        for m in [&b""[..], &b""[..], &random[..], &b""[..], &b"Hello"[..]] {
            let wire = c.compress(m);
            assert!(!wire.is_empty());
            assert_eq!(inflate(&mut d, &wire), m);
        }
    }
}
