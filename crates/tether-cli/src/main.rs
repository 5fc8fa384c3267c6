//! The `tether` command.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod bridge;
mod connect;
mod echo;
mod limits;
mod serve;
mod stop;
mod tls;
mod token;

/// tether: WebSocket tools.
#[derive(Debug, Parser)]
#[command(name = "tether", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub: channels, history, presence, the JSON protocol at /ws, STOMP, the server
    /// API, metrics (and with --demo, the demo page at /).
    Serve(serve::Args),
    /// Run a WebSocket echo server: every message comes back to its sender.
    Echo(echo::Args),
    /// Connect to a WebSocket server: stdin lines are sent, messages received are printed.
    Connect(connect::Args),
    /// Load-test a WebSocket server: echo throughput and latency over many connections.
    Bench(bench::Args),
    /// Bridge TCP or UDP sockets and WebSocket, either way (a websockify / websocat job).
    Bridge(bridge::Args),
    /// Make a connection token (JWT, HS256) for the hub, signed with its secret (for tests).
    Token(token::Args),
    /// Check a `tether serve` config file and print the settings it resolves to.
    CheckConfig(serve::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
    // On one core (taskset, a container's CPU set), the single-threaded scheduler does the
    // same work without work-stealing and cross-thread wake-ups.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if one_core {
            // The timer of every connection's deadlines in a task here, not a thread of its
            // own: with one thread, the kernel counts no reference on a socket's file at
            // each system call (tether::timer::drive). It takes the timer before this task
            // goes on.
            tokio::spawn(tether::timer::drive());
            tokio::task::yield_now().await;
        }
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Echo(args) => echo::run(args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Bridge(args) => bridge::run(args).await,
            Command::Token(args) => token::run(args),
            Command::CheckConfig(args) => serve::check(args),
        }
    });
    // Without waiting for blocking work: a read of standard input cannot be cancelled, and
    // `connect` may end (the server closed, Ctrl-C) while one is pending.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
