//! The tether.json command parser (tether-hub): arbitrary text gives a command or the error
//! reply the client would get (code 104 or 107), never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_hub::frontend::json::check_command;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = check_command(text) {
        assert!(e.code == 104 || e.code == 107, "{e:?}");
    }
});
