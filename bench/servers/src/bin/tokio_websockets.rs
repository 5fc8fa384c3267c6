//! tokio-websockets, after its examples/echo_server.rs: ServerBuilder accepts, text and
//! binary messages are sent back, in an unconstrained task. Default limits (the example
//! lifts them, which is not what a server would run with).
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_websockets::ServerBuilder;

fn main() -> std::io::Result<()> {
    bench_servers::runtime().block_on(async {
        let listener = TcpListener::bind(bench_servers::addr()).await?;
        loop {
            let (conn, _) = listener.accept().await?;
            let _ = conn.set_nodelay(true);
            tokio::spawn(tokio::task::unconstrained(async move {
                let Ok((_request, mut ws)) = ServerBuilder::new().accept(conn).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            }));
        }
    })
}
