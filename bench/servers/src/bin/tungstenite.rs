//! tokio-tungstenite, after its examples/echo-server.rs: split, and forward the reader into
//! the writer (pings are answered by tungstenite itself).
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};

async fn accept_connection(stream: TcpStream) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
    let (write, read) = ws.split();
    let _ = read.forward(write).await;
}

fn main() -> std::io::Result<()> {
    bench_servers::runtime().block_on(async {
        let listener = TcpListener::bind(bench_servers::addr()).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(accept_connection(stream));
        }
    })
}
