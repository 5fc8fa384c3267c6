//! The decompression bomb: a ~1 MiB compressed message that inflates to 1 GiB is refused
//! with 1009 once the inflated size passes the message limit, having used at most about the
//! limit's worth of memory. A counting allocator measures the peak.

use flate2::{Compress, Compression, FlushCompress};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tether_proto::deflate::{client_offer, server_accept, DeflateConfig};
use tether_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use tether_proto::handshake::parse_extensions;
use tether_proto::{CloseCode, Config, Connection, Event, ProtocolError};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn add(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to the system allocator unchanged and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as alloc-then-free, the worst case of a moving realloc.
        add(new_size);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const GIB: usize = 1 << 30;

/// One raw DEFLATE stream holding 1 GiB of zeros, sync-flushed, tail removed (RFC 7692 7.2.1).
fn bomb() -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(2 << 20);
    for i in 0..GIB / zeros.len() {
        let flush = if i + 1 == GIB / zeros.len() { FlushCompress::Sync } else { FlushCompress::None };
        let mut fed = 0;
        while fed < zeros.len() || (flush == FlushCompress::Sync && out.len() == out.capacity()) {
            if out.capacity() - out.len() < 1024 {
                out.reserve(1 << 20);
            }
            let before = c.total_in();
            c.compress_vec(&zeros[fed..], &mut out, flush).unwrap();
            fed += (c.total_in() - before) as usize;
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// How much `data` inflates to, counted through a small buffer.
fn inflated_size(data: &[u8]) -> u64 {
    let mut d = flate2::Decompress::new(false);
    let mut scratch = vec![0u8; 1 << 16];
    let input = [data, &[0, 0, 0xff, 0xff]].concat();
    let mut pos = 0;
    loop {
        let (in_before, out_before) = (d.total_in(), d.total_out());
        d.decompress(&input[pos..], &mut scratch, flate2::FlushDecompress::Sync).unwrap();
        pos += (d.total_in() - in_before) as usize;
        // Done once all input is read and a call no longer fills the scratch buffer.
        if pos == input.len() && d.total_out() - out_before < scratch.len() as u64 {
            return d.total_out();
        }
    }
}

#[test]
fn a_message_inflating_to_1_gib_is_refused_with_1009_within_the_limit() {
    let compressed = bomb();
    assert!(compressed.len() < 2 << 20, "bomb is {} bytes", compressed.len());
    assert_eq!(inflated_size(&compressed), GIB as u64);

    let config = DeflateConfig::default();
    let offer = parse_extensions([client_offer(&config).as_bytes()]).unwrap();
    let (params, _) = server_accept(&offer, &config).unwrap();
    let limit = Config::default().max_message_size;
    let mut server = Connection::server(Config::default()).with_deflate(Some(params));

    // One frame: FIN, RSV1, binary, masked with a zero key (the payload goes as is).
    let header = FrameHeader {
        fin: true,
        rsv1: true,
        rsv2: false,
        rsv3: false,
        opcode: OpCode::Binary,
        mask: Some([0; 4]),
        payload_len: compressed.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut wire = head[..n].to_vec();
    wire.extend_from_slice(&compressed);
    drop(compressed);

    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    server.handle_bytes(&wire);
    let result = server.poll_event();
    let peak = PEAK.load(Ordering::Relaxed) - baseline;

    eprintln!("bomb: {} compressed bytes, peak {peak} bytes allocated for a limit of {limit}", wire.len());
    assert_eq!(result, Err(ProtocolError::MessageTooLarge { limit }));
    // The input buffer (a copy of the ~1 MiB frame), the inflater and at most limit + 1
    // inflated bytes: nowhere near the 1 GiB the message would become.
    assert!(peak <= limit + (4 << 20), "peak {peak} bytes for a limit of {limit}");
    // The peer is told 1009.
    assert_eq!(server.poll_event(), Ok(None));
    let mut out = Vec::new();
    server.poll_transmit(&mut out);
    assert_eq!(&out[..4], &[0x88, out[1], 0x03, 0xf1], "close frame with 1009: {:x?}", &out[..8]);
    assert_eq!(u16::from_be_bytes([out[2], out[3]]), CloseCode::MESSAGE_TOO_BIG.0);
    assert!(!matches!(result, Ok(Some(Event::Binary(_)))));
}
