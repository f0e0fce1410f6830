//! The listener's own bounds, below HTTP: at most `max_connections` open at
//! once (the next waits in the kernel's backlog), and a connection that
//! sends nothing for `idle_timeout_secs`, or lives longer than
//! `connection_secs`, is closed. A client trickling headers or a body a byte
//! at a time holds one slot for a bounded time, never the server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use super::limits::Http;

pub struct Bounded {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
    lifetime: Duration,
}

impl Bounded {
    pub fn new(inner: TcpListener, http: &Http) -> Self {
        Bounded {
            inner,
            slots: Arc::new(Semaphore::new(http.max_connections as usize)),
            idle: Duration::from_secs(http.idle_timeout_secs),
            lifetime: Duration::from_secs(http.connection_secs),
        }
    }
}

impl axum::serve::Listener for Bounded {
    type Io = BoundedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed; a closed one would only lift the cap.
        let permit = self.slots.clone().acquire_owned().await.ok();
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let now = Instant::now();
        let io = BoundedIo {
            io,
            _permit: permit,
            idle: self.idle,
            idle_at: Box::pin(tokio::time::sleep_until(now + self.idle)),
            end_at: Box::pin(tokio::time::sleep_until(now + self.lifetime)),
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

pub struct BoundedIo {
    io: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
    idle: Duration,
    idle_at: Pin<Box<Sleep>>,
    end_at: Pin<Box<Sleep>>,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl AsyncRead for BoundedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle;
                    self.idle_at.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if self.end_at.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(timed_out("connection lifetime exceeded")));
                }
                if self.idle_at.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(timed_out("idle connection")));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for BoundedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
