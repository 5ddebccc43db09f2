//! A plain, idiomatic tokio server: the "typical Rust" baseline `bench/compare.sh` measures
//! sockit against. `#[tokio::main]`, one task per connection, no tuning; deliberately not
//! sharing any of sockit's code.
//!
//! usage: cargo run --release --example plain_tokio -- MODE ADDR
//!        MODE = hello | echo | discard | udp
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "hello".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8000".into());
    if mode == "udp" {
        let socket = UdpSocket::bind(&addr).await?;
        let mut buf = [0u8; 1024];
        loop {
            if let Ok((_, peer)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(b"hello udp client", peer).await;
            }
        }
    }
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mode = mode.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; if mode == "discard" { 256 * 1024 } else { 1024 }];
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let reply: &[u8] = match mode.as_str() {
                    "echo" => &buf[..n],
                    "discard" => continue,
                    _ => b"hello tcp client",
                };
                if stream.write_all(reply).await.is_err() {
                    return;
                }
                if mode == "hello" {
                    return; // the note's server closes after its reply
                }
            }
        });
    }
}
