//! Starting requests and collecting their answers: the call of the handler, the box its
//! future reuses, and the panics caught on the way.

use std::future::Future;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{self, Poll};
use std::time::SystemTime;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;

use super::Connection;
use crate::server::handler::{Handler, rfc3339_nanos};
use crate::wire::{Message, Resp};

impl<'h, H, F, S> Connection<'h, H, F, S>
where
    H: Handler,
    F: Future<Output = Resp>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Runs a request's handler up to its first pending point; answers at once if it is done.
    ///
    /// The handler's future sits in a box reused from one request to the next, and the `Uid`
    /// in a reused buffer: a handler that answers on its first poll costs no allocation here,
    /// and no queue or wake-up; its response is encoded where it is.
    pub(super) fn start_request(&mut self, req: Message, task: &mut task::Context<'_>) {
        self.started = true;
        if req.uid.is_empty() {
            return self.encode(&rejection(String::new(), "request has no Uid"));
        }
        self.uid.clone_from(&req.uid);
        // A panicking handler must not leave its caller waiting for an answer forever: a panic
        // in the call or in a poll is answered with an error.
        let (start, handler) = (self.start, self.handler);
        let Ok(future) = panic::catch_unwind(AssertUnwindSafe(|| start(handler, req))) else {
            let uid = mem::take(&mut self.uid);
            return self.answer_panic(uid);
        };
        let mut boxed = match self.spare.take() {
            Some(mut spare) => {
                spare.set(future);
                spare
            }
            None => Box::pin(future),
        };
        match panic::catch_unwind(AssertUnwindSafe(|| boxed.as_mut().poll(task))) {
            Ok(Poll::Ready(mut resp)) => {
                if resp.uid != self.uid {
                    resp.uid.clone_from(&self.uid);
                }
                self.encode(&resp);
                self.spare = Some(boxed);
            }
            // The set polls it again before it waits, so it registers the set's waker.
            Ok(Poll::Pending) => self.in_flight.push(Running {
                uid: self.uid.clone(),
                future: boxed,
            }),
            Err(_) => {
                let uid = mem::take(&mut self.uid);
                self.answer_panic(uid);
            }
        }
    }

    /// Encodes every finished response; leaves the running ones with the waker registered.
    pub(super) fn collect_answers(&mut self, task: &mut task::Context<'_>) {
        while !self.in_flight.is_empty() {
            match self.in_flight.poll_next_unpin(task) {
                Poll::Ready(Some((uid, Some(mut resp)))) => {
                    resp.uid = uid;
                    self.encode(&resp);
                }
                Poll::Ready(Some((uid, None))) => self.answer_panic(uid),
                Poll::Ready(None) | Poll::Pending => return,
            }
        }
    }

    pub(super) fn answer_panic(&mut self, uid: String) {
        warn!(peer = %self.peer, %uid, "handler panicked; answering with an error");
        self.encode(&rejection(uid, "internal server error"));
    }
}

/// Calls the handler; a plain function so that its future's type can be named (`F`).
pub(super) fn start_handler<H: Handler>(
    handler: &H,
    req: Message,
) -> impl Future<Output = Resp> + Send + '_ {
    handler.handle(req)
}

/// A request whose handler did not answer on its first poll, with its `Uid`. Yields the `Uid`
/// and the response, or `None` if the handler panicked.
pub(super) struct Running<F> {
    pub(super) uid: String,
    pub(super) future: Pin<Box<F>>,
}

impl<F: Future<Output = Resp>> Future for Running<F> {
    type Output = (String, Option<Resp>);

    fn poll(mut self: Pin<&mut Self>, task: &mut task::Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let polled = panic::catch_unwind(AssertUnwindSafe(|| this.future.as_mut().poll(task)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(resp)) => Poll::Ready((mem::take(&mut this.uid), Some(resp))),
            // The set drops a future once it is ready: a panicked one is never polled again.
            Err(_) => Poll::Ready((mem::take(&mut this.uid), None)),
        }
    }
}

/// An answer with `Err` set to `why`.
pub(super) fn rejection(uid: String, why: &str) -> Resp {
    Resp {
        uid,
        val: String::new(),
        ts: rfc3339_nanos(SystemTime::now()),
        err: Some(why.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::time::timeout;

    use tokio::net::TcpStream;

    use super::*;
    use crate::server::{Server, ServerConfig};

    /// Panics on purpose when called or after waiting once, by the request's `Val`; otherwise
    /// waits once (so the request runs in the set of pending ones) and answers with a `Uid`
    /// of its own, which the server must replace.
    struct Picky;

    impl Handler for Picky {
        fn handle(&self, req: Message) -> impl Future<Output = Resp> + Send {
            assert_ne!(
                req.val, "panic when called",
                "the handler panics on purpose"
            );
            async move {
                tokio::task::yield_now().await;
                assert_ne!(
                    req.val, "panic after waiting",
                    "the handler panics on purpose"
                );
                Resp {
                    uid: "not the request's".into(),
                    val: req.val,
                    ..Resp::default()
                }
            }
        }
    }

    /// Sends `requests` on one connection to a server running [`Picky`] and reads as many
    /// responses.
    async fn exchange(requests: &[&str]) -> Vec<Resp> {
        let server = Server::bind("127.0.0.1:0", ServerConfig::default())
            .await
            .expect("binds")
            .with_handler(Picky)
            .spawn();
        let stream = TcpStream::connect(server.local_addr())
            .await
            .expect("connects");
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut got = Vec::new();
        let all = async {
            for request in requests {
                write.write_all(request.as_bytes()).await.expect("writes");
                let line = lines.next_line().await.expect("reads").expect("a response");
                got.push(serde_json::from_str(&line).expect("a response"));
            }
        };
        timeout(Duration::from_secs(10), all)
            .await
            .expect("answered in time");
        got
    }

    /// A request whose handler panics (`val` says when) is answered with an error, and the
    /// connection goes on to answer the next one.
    async fn panic_is_answered_and_the_connection_goes_on(val: &str) {
        let first = format!(r#"{{"Uid":"a","Val":"{val}"}}"#);
        let got = exchange(&[&first, r#"{"Uid":"b","Val":"still open"}"#]).await;
        assert_eq!(got[0].uid, "a");
        assert_eq!(got[0].err.as_deref(), Some("internal server error"));
        assert_eq!(
            (got[1].uid.as_str(), got[1].val.as_str()),
            ("b", "still open")
        );
        assert_eq!(got[1].err, None);
    }

    #[tokio::test]
    async fn a_handler_that_panics_when_called_is_answered_with_an_error() {
        panic_is_answered_and_the_connection_goes_on("panic when called").await;
    }

    #[tokio::test]
    async fn a_handler_that_panics_after_waiting_is_answered_with_an_error() {
        panic_is_answered_and_the_connection_goes_on("panic after waiting").await;
    }
}
