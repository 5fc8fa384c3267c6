//! Client and server cores wired together in memory, with a fake clock.

mod common;

use bytes::Bytes;
use common::{events, transmit};
use std::time::{Duration, Instant};
use tether_proto::frame::{apply_mask, FrameHeader, OpCode, MAX_HEADER_LEN};
use tether_proto::{
    CloseCode, Closed, Config, Connection, Event, Initiator, ProtocolError, UsageError, Utf8Bytes,
};

fn client(config: Config) -> Connection {
    let mut n = 0u8;
    Connection::client(
        config,
        Box::new(move || {
            n = n.wrapping_add(1);
            [n, 0x5a, n ^ 0xff, 0x33]
        }),
    )
}

/// Moves every queued byte from `from` to `to`.
fn pump(from: &mut Connection, to: &mut Connection) -> usize {
    let buf = transmit(from);
    to.handle_bytes(&buf);
    buf.len()
}

/// A raw frame as a client would send it (masked), for malformed input.
fn raw(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let key = [9, 8, 7, 6];
    let header = FrameHeader {
        fin,
        rsv1: rsv & 4 != 0,
        rsv2: rsv & 2 != 0,
        rsv3: rsv & 1 != 0,
        opcode: OpCode::Text,
        mask: masked.then_some(key),
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    head[0] = (head[0] & 0xF0) | opcode;
    let mut out = head[..n].to_vec();
    let mut p = payload.to_vec();
    if masked {
        apply_mask(&mut p, key, 0);
    }
    out.extend(p);
    out
}

fn closed_of(events: &[Result<Event, ProtocolError>]) -> Option<Closed> {
    events.iter().find_map(|e| match e {
        Ok(Event::Closed(c)) => Some(c.clone()),
        _ => None,
    })
}

#[test]
fn messages_both_ways() {
    let (mut c, mut s) = (client(Config::default()), Connection::server(Config::default()));
    c.send_text("hi".into()).unwrap();
    c.send_binary(Bytes::from_static(&[0, 1, 2])).unwrap();
    pump(&mut c, &mut s);
    assert_eq!(
        events(&mut s),
        vec![Ok(Event::Text("hi".into())), Ok(Event::Binary(Bytes::from_static(&[0, 1, 2])))]
    );
    s.send_text(Utf8Bytes::from("back")).unwrap();
    pump(&mut s, &mut c);
    assert_eq!(events(&mut c), vec![Ok(Event::Text("back".into()))]);
}

#[test]
fn fragments_with_a_ping_in_between() {
    let mut s = Connection::server(Config::default());
    let mut wire = raw(false, 0, 0x1, b"Hel", true);
    wire.extend(raw(true, 0, 0x9, b"p", true));
    wire.extend(raw(true, 0, 0x0, b"lo", true));
    s.handle_bytes(&wire);
    assert_eq!(
        events(&mut s),
        vec![Ok(Event::Ping(Bytes::from_static(b"p"))), Ok(Event::Text("Hello".into()))]
    );
    // The pong is queued automatically.
    let mut c = client(Config::default());
    pump(&mut s, &mut c);
    assert_eq!(events(&mut c), vec![Ok(Event::Pong(Bytes::from_static(b"p")))]);
}

#[test]
fn close_handshake_started_by_client() {
    let (mut c, mut s) = (client(Config::default()), Connection::server(Config::default()));
    c.send_text("last".into()).unwrap();
    c.close(CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(c.send_text("late".into()), Err(UsageError::Closed));
    pump(&mut c, &mut s);
    assert_eq!(s.poll_event(), Ok(Some(Event::Text("last".into()))));
    let Ok(Some(Event::Closed(closed))) = s.poll_event() else { panic!("no close") };
    assert_eq!(
        closed,
        Closed { code: CloseCode::NORMAL, reason: "bye".into(), initiator: Initiator::Remote, clean: true }
    );
    // The server may still answer the last message before its close reply goes out.
    s.send_text("answer".into()).unwrap();
    assert!(!s.should_close_transport());
    assert!(events(&mut s).is_empty()); // this call queues the close reply
    pump(&mut s, &mut c);
    assert!(s.is_closed() && s.should_close_transport(), "server closes TCP first");
    let ev = events(&mut c);
    assert_eq!(ev[0], Ok(Event::Text("answer".into())));
    let closed = closed_of(&ev).unwrap();
    assert_eq!((closed.code, closed.initiator, closed.clean), (CloseCode::NORMAL, Initiator::Local, true));
    assert!(!c.should_close_transport(), "client waits for the server's TCP close");
    c.handle_eof();
    assert!(c.should_close_transport());
}

#[test]
fn close_handshake_started_by_server_with_empty_close() {
    let (mut c, mut s) = (client(Config::default()), Connection::server(Config::default()));
    s.handle_bytes(&raw(true, 0, 0x8, b"", true));
    let closed = closed_of(&events(&mut s)).unwrap();
    assert_eq!(closed.code, CloseCode::NO_STATUS);
    events(&mut s);
    pump(&mut s, &mut c);
    // An empty close is answered with an empty close.
    let closed = closed_of(&events(&mut c)).unwrap();
    assert_eq!((closed.code, closed.initiator), (CloseCode::NO_STATUS, Initiator::Remote));
}

#[test]
fn protocol_errors_close_with_the_right_code() {
    let cases: Vec<(Vec<u8>, CloseCode)> = vec![
        (raw(true, 0, 0x1, b"unmasked", false), CloseCode::PROTOCOL_ERROR),
        (raw(true, 4, 0x1, b"rsv1", true), CloseCode::PROTOCOL_ERROR),
        (raw(true, 1, 0x2, b"rsv3", true), CloseCode::PROTOCOL_ERROR),
        (raw(true, 0, 0x3, b"", true), CloseCode::PROTOCOL_ERROR),
        (raw(true, 0, 0xB, b"", true), CloseCode::PROTOCOL_ERROR),
        (raw(false, 0, 0x9, b"", true), CloseCode::PROTOCOL_ERROR),
        (raw(true, 0, 0x9, &[0; 126], true), CloseCode::PROTOCOL_ERROR),
        (raw(true, 0, 0x0, b"orphan", true), CloseCode::PROTOCOL_ERROR),
        (raw(true, 0, 0x8, &[0x03], true), CloseCode::PROTOCOL_ERROR),
        (raw(true, 0, 0x8, &1005u16.to_be_bytes(), true), CloseCode::PROTOCOL_ERROR),
        (raw(true, 0, 0x8, &999u16.to_be_bytes(), true), CloseCode::PROTOCOL_ERROR),
        (raw(true, 0, 0x8, &[0x03, 0xe8, 0xff], true), CloseCode::INVALID_PAYLOAD),
        (raw(true, 0, 0x1, b"\xce\xba\xff", true), CloseCode::INVALID_PAYLOAD),
        ([raw(false, 0, 0x1, b"a", true), raw(true, 0, 0x1, b"b", true)].concat(), CloseCode::PROTOCOL_ERROR),
    ];
    for (i, (wire, code)) in cases.into_iter().enumerate() {
        let (mut c, mut s) = (client(Config::default()), Connection::server(Config::default()));
        s.handle_bytes(&wire);
        let ev = events(&mut s);
        let err = ev
            .iter()
            .find_map(|e| e.as_ref().err())
            .unwrap_or_else(|| panic!("case {i}: no error in {ev:?}"));
        assert_eq!(err.close_code(), code, "case {i}: {err}");
        events(&mut s); // queues the close frame
        pump(&mut s, &mut c);
        assert!(s.should_close_transport(), "case {i}");
        let closed = closed_of(&events(&mut c)).unwrap();
        assert_eq!(closed.code, code, "case {i}: peer sees the code");
    }
}

#[test]
fn client_refuses_masked_frames() {
    let mut c = client(Config::default());
    c.handle_bytes(&raw(true, 0, 0x1, b"masked", true));
    assert_eq!(c.poll_event(), Err(ProtocolError::MaskedServerFrame));
}

#[test]
fn message_and_frame_limits_close_with_1009() {
    let config = Config::default().with_max_message_size(1000).with_max_frame_size(600);
    let mut s = Connection::server(config.clone());
    s.handle_bytes(&raw(true, 0, 0x2, &[0; 601], true));
    assert!(matches!(s.poll_event(), Err(ProtocolError::FrameTooLarge { size: 601, limit: 600 })));
    let mut s = Connection::server(config);
    let wire = [raw(false, 0, 0x2, &[0; 600], true), raw(true, 0, 0x0, &[0; 401], true)].concat();
    // Refused on the header of the second frame, before its payload is read.
    s.handle_bytes(&wire[..wire.len() - 401]);
    assert_eq!(s.poll_event(), Err(ProtocolError::MessageTooLarge { limit: 1000 }));
    assert_eq!(ProtocolError::MessageTooLarge { limit: 1000 }.close_code(), CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn usage_errors() {
    let mut c = client(Config::default());
    assert_eq!(c.send_ping(Bytes::from(vec![0; 126])), Err(UsageError::ControlFrameTooLong));
    assert_eq!(c.close(CloseCode::NO_STATUS, ""), Err(UsageError::InvalidCloseCode(1005)));
    assert_eq!(c.close(CloseCode::ABNORMAL, ""), Err(UsageError::InvalidCloseCode(1006)));
    assert_eq!(c.close(CloseCode::NORMAL, &"x".repeat(124)), Err(UsageError::ControlFrameTooLong));
    c.close(CloseCode(4000), "app").unwrap();
    assert_eq!(c.close(CloseCode::NORMAL, ""), Err(UsageError::Closed));
}

#[test]
fn buffered_amount_counts_queued_bytes() {
    let mut s = Connection::server(Config::default());
    assert_eq!(s.buffered_amount(), 0);
    s.send_binary(Bytes::from(vec![0; 1000])).unwrap();
    assert_eq!(s.buffered_amount(), 1004);
    let mut buf = Vec::new();
    s.poll_transmit(&mut buf);
    assert_eq!((s.buffered_amount(), buf.len()), (0, 1004));
}

#[test]
fn close_timeout_with_fake_clock() {
    let t0 = Instant::now();
    let mut c = client(Config::default().with_close_timeout(Duration::from_secs(5)));
    c.handle_timeout(t0);
    c.close(CloseCode::NORMAL, "").unwrap();
    c.handle_timeout(t0);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    c.handle_timeout(t0 + Duration::from_secs(4));
    assert!(!c.is_closed());
    c.handle_timeout(t0 + Duration::from_secs(5));
    let closed = closed_of(&events(&mut c)).unwrap();
    assert_eq!((closed.code, closed.clean), (CloseCode::ABNORMAL, false));
    let mut sink = Vec::new();
    while c.poll_transmit(&mut sink) {}
    assert!(c.should_close_transport());
}

#[test]
fn client_closes_tcp_if_server_does_not() {
    let t0 = Instant::now();
    let (mut c, mut s) = (client(Config::default()), Connection::server(Config::default()));
    c.handle_timeout(t0);
    s.close(CloseCode::GOING_AWAY, "restart").unwrap();
    pump(&mut s, &mut c);
    assert!(closed_of(&events(&mut c)).is_some());
    events(&mut c);
    pump(&mut c, &mut s);
    c.handle_timeout(t0);
    assert!(!c.should_close_transport());
    c.handle_timeout(t0 + Config::default().close_timeout);
    assert!(c.should_close_transport());
}

#[test]
fn idle_timeout_and_keepalive_with_fake_clock() {
    let t0 = Instant::now();
    let config = Config::default()
        .with_ping_interval(Some(Duration::from_secs(5)))
        .with_idle_timeout(Some(Duration::from_secs(12)));
    let (mut c, mut s) = (client(Config::default()), Connection::server(config));
    s.handle_timeout(t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    s.handle_timeout(t0 + Duration::from_secs(5));
    pump(&mut s, &mut c);
    assert!(matches!(events(&mut c)[..], [Ok(Event::Ping(_))]));
    // The client's pong counts as activity and pushes the idle deadline back.
    pump(&mut c, &mut s);
    s.handle_timeout(t0 + Duration::from_secs(6));
    assert!(matches!(events(&mut s)[..], [Ok(Event::Pong(_))]));
    s.handle_timeout(t0 + Duration::from_secs(17));
    assert!(s.is_open(), "6 s + 12 s idle not reached yet");
    s.handle_timeout(t0 + Duration::from_secs(18));
    pump(&mut s, &mut c);
    let ev = events(&mut c);
    let closed = closed_of(&ev).unwrap();
    assert_eq!((closed.code, closed.reason.as_str()), (CloseCode::GOING_AWAY, "idle timeout"));
}

#[test]
fn ping_flood_keeps_at_most_32_pongs() {
    let mut s = Connection::server(Config::default());
    let wire: Vec<u8> = (0..100u8).flat_map(|i| raw(true, 0, 0x9, &[i], true)).collect();
    s.handle_bytes(&wire);
    assert_eq!(events(&mut s).len(), 100);
    let mut c = client(Config::default());
    pump(&mut s, &mut c);
    let pongs: Vec<_> = events(&mut c)
        .into_iter()
        .map(|e| match e {
            Ok(Event::Pong(p)) => p[0],
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(pongs, (68..100).collect::<Vec<u8>>());

    let mut s = Connection::server(Config::default().with_max_pending_pongs(2));
    s.handle_bytes(&wire);
    assert_eq!(events(&mut s).len(), 100);
    let mut c = client(Config::default());
    pump(&mut s, &mut c);
    assert_eq!(
        events(&mut c),
        vec![Ok(Event::Pong(Bytes::from_static(&[98]))), Ok(Event::Pong(Bytes::from_static(&[99])))]
    );
}

#[test]
fn split_transmit_writes_the_same_bytes_without_copying_large_payloads() {
    let big = Bytes::from(vec![7u8; 20_000]);
    let queue = |s: &mut Connection| {
        s.send_text(Utf8Bytes::from_static("small")).unwrap();
        s.send_binary(big.clone()).unwrap();
        s.send_ping(Bytes::from_static(b"p")).unwrap();
        s.send_binary(Bytes::from(vec![1u8; 100])).unwrap();
        s.send_binary(big.clone()).unwrap();
    };
    let mut whole = Connection::server(Config::default());
    queue(&mut whole);
    let want = transmit(&mut whole);

    let mut split = Connection::server(Config::default());
    queue(&mut split);
    let (mut got, mut tails) = (Vec::new(), 0);
    loop {
        let mut buf = Vec::new();
        let (any, tail) = split.poll_transmit_split(&mut buf, 8192);
        if !any {
            break;
        }
        got.extend_from_slice(&buf);
        if let Some(t) = tail {
            // The payload itself, not a copy.
            assert_eq!(t.as_ptr(), big.as_ptr());
            got.extend_from_slice(&t);
            tails += 1;
        }
    }
    assert_eq!(tails, 2);
    assert_eq!(got, want);
    assert_eq!(split.stats().bytes_sent, whole.stats().bytes_sent);
    assert_eq!(split.buffered_amount(), 0);

    // A client masks every frame: nothing is written in place.
    let mut c = client(Config::default());
    c.send_binary(big.clone()).unwrap();
    let mut buf = Vec::new();
    let (any, tail) = c.poll_transmit_split(&mut buf, 8192);
    assert!(any && tail.is_none() && buf.len() > 20_000);
}

#[test]
fn reading_in_place_hands_out_a_large_binary_message_without_copying() {
    // A client's masked 20,000-byte binary frame, fed to a server in three reads straight
    // into its input buffer.
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = client(Config::default());
    c.send_binary(Bytes::from(payload.clone())).unwrap();
    let wire = transmit(&mut c);
    let mut s = Connection::server(Config::default());
    let mut fed = 0;
    let mut start = None;
    for part in [&wire[..1000], &wire[1000..12_000], &wire[12_000..]] {
        let want = if fed == 0 { wire.len() } else { s.input_wanted() };
        assert!(want >= wire.len() - fed, "{want} {fed}");
        let buf = s.input_buffer(want);
        start.get_or_insert(buf.as_ptr() as usize);
        buf.extend_from_slice(part);
        s.input_added(part.len());
        fed += part.len();
        let ev = events(&mut s);
        if fed < wire.len() {
            assert!(ev.is_empty(), "{ev:?}");
        } else {
            match &ev[..] {
                [Ok(Event::Binary(b))] => {
                    assert_eq!(&b[..], &payload[..]);
                    // In the buffer it was read into, after the frame header.
                    let at = b.as_ptr() as usize;
                    assert!(at > start.unwrap() && at - start.unwrap() <= MAX_HEADER_LEN, "copied");
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(s.stats().bytes_received, wire.len() as u64);
    assert_eq!(s.input_wanted(), 0);
    s.release_input();
    assert_eq!(s.input_buffer(0).capacity(), 0);
}

#[test]
fn release_input_lets_go_of_a_buffer_emptied_by_its_last_message() {
    let mut s = Connection::server(Config::default());
    // Exactly one message arrives: the buffer holds only it, and hands it all out.
    s.handle_bytes(&raw(true, 0, 1, b"{\"id\":1,\"connect\":{}}", true));
    let payload = match s.poll_event() {
        Ok(Some(Event::Text(t))) => t.into_bytes(),
        other => panic!("{other:?}"),
    };
    assert!(!payload.is_unique(), "the input buffer shares the message's allocation");
    s.release_input();
    assert!(payload.is_unique(), "the connection no longer holds a share of it");
}
