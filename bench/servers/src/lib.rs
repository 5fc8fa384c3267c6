//! Echo servers on other WebSocket crates, for the side-by-side benchmark (bench/run.py).
//! Each follows its crate's own echo example on a single-threaded runtime; the address
//! comes from the first argument.

/// The listen address: the first argument, or 127.0.0.1:9001.
pub fn addr() -> String {
    std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".to_owned())
}

/// A current-thread tokio runtime, as the crates' examples use.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime")
}
