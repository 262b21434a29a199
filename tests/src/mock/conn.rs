//! The mock's connections: hyper serves them, but a handler can take the socket
//! over to write an answer hyper would refuse to write (a body shorter than its
//! framing says) and end the connection the way it wants: a clean close (FIN) or
//! an abort (RST, `SO_LINGER` 0).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::Body;

/// How a cut connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cut {
    /// A clean close (FIN).
    Close,
    /// An abort (RST).
    Reset,
}

/// Where a body stops.
#[derive(Clone, Copy, Debug)]
pub(super) enum Stop {
    /// After this many body bytes.
    Bytes(usize),
    /// Before the chunk of this index.
    Chunks(usize),
}

/// A handler's hold on its connection.
#[derive(Clone)]
pub(super) struct Conn {
    io: Arc<TcpStream>,
    kill: Arc<Notify>,
}

/// Serves `stream` with `handler` until the client leaves or a handler cuts it.
pub(super) fn spawn<F, Fut>(stream: TcpStream, handler: F)
where
    F: Fn(Conn, Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let io = Arc::new(stream);
    let kill = Arc::new(Notify::new());
    let conn = Conn {
        io: io.clone(),
        kill: kill.clone(),
    };
    tokio::spawn(async move {
        let svc = service_fn(move |req| handler(conn.clone(), req));
        let http = http1::Builder::new().serve_connection(TokioIo::new(SharedIo(io)), svc);
        tokio::select! {
            _ = http => {}
            // Dropping hyper's side (and the handler with it) closes the socket.
            _ = kill.notified() => {}
        }
    });
}

impl Conn {
    /// A 200 JSON answer whose `Content-Length` is the whole body's, cut after `n`
    /// bytes of it. Never returns: the connection ends instead.
    pub(super) async fn cut_json(&self, body: Vec<u8>, n: usize, cut: Cut) -> Response<Body> {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.write_and_cut(head, vec![body], false, 0, Stop::Bytes(n), cut)
            .await
    }

    /// A 200 chunked stream cut at `stop`. Never returns: the connection ends.
    pub(super) async fn cut_stream(
        &self,
        content_type: &str,
        chunks: Vec<Vec<u8>>,
        delay_ms: u64,
        stop: Stop,
        cut: Cut,
    ) -> Response<Body> {
        let head = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n");
        self.write_and_cut(head, chunks, true, delay_ms, stop, cut).await
    }

    async fn write_and_cut(
        &self,
        head: String,
        chunks: Vec<Vec<u8>>,
        chunked: bool,
        delay_ms: u64,
        stop: Stop,
        cut: Cut,
    ) -> Response<Body> {
        // Hyper is waiting for this handler and writes nothing meanwhile.
        let _ = self.write_body(head, chunks, chunked, delay_ms, stop).await;
        // Let the peer read what was sent before the connection goes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if cut == Cut::Reset {
            let _ = self.io.set_zero_linger();
        }
        self.kill.notify_one();
        std::future::pending().await
    }

    /// Writes the head and the body up to `stop`; a body that ends before `stop`
    /// is written whole, its chunked framing included.
    async fn write_body(
        &self,
        head: String,
        chunks: Vec<Vec<u8>>,
        chunked: bool,
        delay_ms: u64,
        stop: Stop,
    ) -> io::Result<()> {
        self.write_all(head.as_bytes()).await?;
        let mut budget = match stop {
            Stop::Bytes(n) => n,
            Stop::Chunks(_) => usize::MAX,
        };
        for (i, c) in chunks.iter().filter(|c| !c.is_empty()).enumerate() {
            if matches!(stop, Stop::Chunks(k) if k == i) || budget == 0 {
                return Ok(());
            }
            if i > 0 && delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            let take = c.len().min(budget);
            budget -= take;
            if chunked {
                self.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await?;
            }
            self.write_all(&c[..take]).await?;
            if take < c.len() {
                return Ok(());
            }
            if chunked {
                self.write_all(b"\r\n").await?;
            }
        }
        if chunked {
            self.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }

    async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            self.io.writable().await?;
            match self.io.try_write(buf) {
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The socket as hyper reads and writes it, shared with the handlers.
struct SharedIo(Arc<TcpStream>);

impl AsyncRead for SharedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    // The socket closes when its last holder drops it; hyper drops its side right
    // after shutting down.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
