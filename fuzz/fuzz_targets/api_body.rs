//! The server API's request bodies (tether-hub), for every method: arbitrary bytes are read
//! or refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_hub::http::check_api_body;

const METHODS: [&str; 7] = ["publish", "broadcast", "presence", "history", "disconnect", "channels", "nope"];

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    let _ = check_api_body(METHODS[usize::from(which) % METHODS.len()], body);
});
