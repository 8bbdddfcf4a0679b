//! [`Coalesce`]: a socket whose first write after a flush waits one turn of the scheduler, so
//! that the commands of every task ready to run go out in one write.
//!
//! The `redis` crate's multiplexed connection is a task that takes every command queued for
//! it, encodes them into one buffer and writes the buffer when the queue is empty. Under this
//! wrapper, that write first returns `Pending` with the task woken at once: tokio puts a task
//! that woke itself at the back of its worker's queue, so every task ready now (callers whose
//! replies just came, each about to queue its next command) runs before the connection task
//! polls its queue again, and their commands join the same write. One turn is the whole
//! delay: the next write goes through, however few commands came.
//!
//! Reads, flushes and shutdown pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose first write after a flush yields once to the scheduler.
pub(crate) struct Coalesce<S> {
    inner: S,
    /// A write has yielded since the last flush: the next goes through.
    yielded: bool,
}

impl<S> Coalesce<S> {
    pub(crate) fn new(inner: S) -> Self {
        Coalesce {
            inner,
            yielded: false,
        }
    }

    /// `Pending` once since the last flush, the task woken so that it runs again after the
    /// tasks ready now; `Ready` after that.
    fn turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.turn(cx));
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.turn(cx));
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        self.yielded = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn the_first_write_after_a_flush_yields_once_and_wakes_its_task() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut stream = Coalesce::new(client);
        let wakes = Arc::new(Wakes::default());
        let waker = wakes.clone().into();
        let mut cx = Context::from_waker(&waker);
        for (word, woken) in [(&b"first"[..], 1), (b"second", 2)] {
            {
                let mut write = std::pin::pin!(stream.write_all(word));
                assert!(write.as_mut().poll(&mut cx).is_pending());
                assert_eq!(wakes.0.load(Ordering::Relaxed), woken);
                assert!(matches!(write.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
            }
            // A second write before the flush goes through at once.
            let mut write = std::pin::pin!(stream.write_all(b"."));
            assert!(matches!(write.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
            stream.flush().await.unwrap();
        }
        drop(stream);
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"first.second.");
    }
}
