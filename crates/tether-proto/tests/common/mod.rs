//! Helpers shared by the public-API tests.
#![allow(dead_code)]

use tether_proto::{Connection, Event, ProtocolError};

/// Everything `c` has queued to send.
pub(crate) fn transmit(c: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while c.poll_transmit(&mut out) {}
    out
}

/// Every event `c` has ready; an error ends the list.
pub(crate) fn events(c: &mut Connection) -> Vec<Result<Event, ProtocolError>> {
    let mut out = Vec::new();
    loop {
        match c.poll_event() {
            Ok(Some(e)) => out.push(Ok(e)),
            Ok(None) => return out,
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        }
    }
}
