//! A fault-injecting TCP proxy on the real HTTP path between a terminal and
//! the server: outages (connections dropped), slow links (delay per
//! chunk), and lost responses (the server applied the request, the answer
//! never arrives). Counts the bytes that cross it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// What the link does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Passes everything.
    Up = 0,
    /// Drops every connection.
    Down = 1,
    /// Delays every chunk by [`SLOW_DELAY`].
    Slow = 2,
    /// Drops half of the server's answers (after the server acted).
    Lossy = 3,
}

/// Delay per chunk and direction on a slow link.
pub const SLOW_DELAY: Duration = Duration::from_millis(150);

/// One terminal's link.
#[derive(Debug, Default)]
pub struct Link {
    mode: AtomicU8,
    /// Bytes terminal → server.
    pub up_bytes: AtomicU64,
    /// Bytes server → terminal.
    pub down_bytes: AtomicU64,
    /// Answers dropped in [`Mode::Lossy`].
    pub lost_responses: AtomicU64,
    coin: AtomicU64,
}

impl Link {
    /// Sets the mode.
    pub fn set(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::SeqCst);
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Down,
            2 => Mode::Slow,
            3 => Mode::Lossy,
            _ => Mode::Up,
        }
    }

    /// A fair, deterministic coin (a Weyl sequence's top bit).
    fn flip(&self) -> bool {
        let x = self
            .coin
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x >> 63 == 1
    }
}

/// Starts a proxy to `upstream` on an ephemeral loopback port.
pub async fn start(upstream: SocketAddr, link: Arc<Link>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let link = Arc::clone(&link);
            tokio::spawn(async move {
                if link.mode() == Mode::Down {
                    return; // dropped: the terminal sees a reset
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return; // the server is down
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::select! {
                    _ = pump(cr, sw, &link, true) => {}
                    _ = pump(sr, cw, &link, false) => {}
                }
            });
        }
    });
    Ok(addr)
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, link: &Link, up: bool) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match link.mode() {
            Mode::Down => return,
            Mode::Slow => tokio::time::sleep(SLOW_DELAY).await,
            Mode::Lossy if !up && link.flip() => {
                link.lost_responses.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        let counter = if up { &link.up_bytes } else { &link.down_bytes };
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}
