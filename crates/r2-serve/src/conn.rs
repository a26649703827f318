//! The accept loop and the connections behind [`crate::serve`]: the cap on open connections, the
//! header, keep-alive (idle) and send timeouts, and the bounded graceful drain.
//!
//! Each connection is served by hyper's HTTP/1 server over a [`TimedIo`], which enforces the
//! timeouts at the socket: while no request of the connection is being served, a read that
//! waits past its deadline fails (hyper then closes the connection); a write that makes no
//! progress for the send timeout fails too. The body timeout is the job of the `read_body`
//! middleware, which knows where a body starts and ends.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use crate::{Holding, ServeOptions};

/// The socket-level timeouts of a connection.
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    /// For a request head: from the connection's start for the first one, from its first byte
    /// for the next ones.
    header: Duration,
    /// For the first byte of the next request on a keep-alive connection, from the end of the
    /// previous answer.
    idle: Duration,
    /// For a write to make progress (a client that does not take its answer).
    send: Duration,
}

/// Serves `app` on `listener` with the limits of `options` until `shutdown` resolves, then drains.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    app: axum::Router,
    options: &ServeOptions,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let timeouts = Timeouts {
        header: options.header_timeout,
        idle: options.idle_timeout,
        send: options.send_timeout,
    };
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Finished connections are reaped as new ones come, so at most `max_connections` + 1
        // results wait here.
        while connections.try_join_next().is_some() {}
        // Past the cap, new connections wait in the listen backlog until a slot frees up.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else {
            break; // the semaphore is never closed
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: wait for some to be given back rather than
                // spinning (the slot is given back meanwhile).
                tracing::warn!(error = %e, "r2 serve: cannot accept a connection; retrying");
                drop(slot);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Streamed pieces go out at once, not after the previous one is acknowledged.
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            slot,
            app.clone(),
            timeouts,
            stopped.clone(),
        ));
    }
    // Stop accepting: connections from now on are refused.
    drop(listener);
    let _ = stop.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(options.drain_timeout, drain)
        .await
        .is_err()
    {
        // Past the drain timeout: close what is left.
        connections.shutdown().await;
    }
    Ok(())
}

/// Errors of one incoming connection (not of the listener), after which accepting goes on.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it closes, or until shutdown: then the request in flight (if any)
/// is finished and the connection closed (the caller aborts it past the drain timeout).
async fn connection(
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    app: axum::Router,
    timeouts: Timeouts,
    mut stopped: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(InFlight::default());
    let io = TokioIo::new(TimedIo::new(stream, Arc::clone(&in_flight), timeouts));
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut app = app.clone();
        let guard = RequestGuard::begin(&in_flight);
        async move {
            let response =
                match tower_service::Service::call(&mut app, request.map(Body::new)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
            // The request counts as in flight until its answer has been sent (or dropped).
            Ok::<_, Infallible>(response.map(|body| Body::new(Holding::new(body, guard))))
        }
    });
    let mut builder = http1::Builder::new();
    // The timeouts are the socket's (`TimedIo`).
    builder.header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let stop = async move {
        // Dropping the `Ref` at once: it must not be held across an await.
        let _ = stopped.wait_for(|&stop| stop).await.map(|_| ());
    };
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stop => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// The instant `after` from now; for a timeout too long to add, thirty years from now (as tokio
/// does), rather than a panic.
fn deadline(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// The requests of one connection being served.
#[derive(Default)]
struct InFlight {
    /// Requests from the call of the service until their answer is finished or dropped.
    active: AtomicUsize,
    /// How many requests have ended.
    ended: AtomicU64,
    /// The connection's task, as of its last read that had to wait: woken when a request ends,
    /// so that the wait for the next request (and its deadline) starts even though hyper would
    /// not read again before the client sends something.
    reader: AtomicWaker,
}

/// One request in flight on its connection, until dropped.
struct RequestGuard(Arc<InFlight>);

impl RequestGuard {
    fn begin(in_flight: &Arc<InFlight>) -> Self {
        in_flight.active.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(in_flight))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // `ended` first: whoever sees no request active also sees that one ended.
        self.0.ended.fetch_add(1, Ordering::SeqCst);
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.reader.wake();
    }
}

/// A TCP stream with the connection's timeouts.
///
/// Reads: while no request of the connection is in flight, the wait for data has a deadline —
/// the header timeout from the connection's start for the first request; after an answer, the
/// idle timeout until the next request's first byte, then the header timeout from that byte. A
/// read past its deadline fails with `TimedOut`. While a request is in flight reads have no
/// deadline here (the body timeout is the `read_body` middleware's).
///
/// Writes: a write (or flush) that makes no progress for the send timeout fails with `TimedOut`.
struct TimedIo {
    stream: TcpStream,
    in_flight: Arc<InFlight>,
    timeouts: Timeouts,
    read_deadline: Pin<Box<Sleep>>,
    /// `InFlight::ended` when the current wait for a request began.
    seen_ended: u64,
    /// Whether bytes of the awaited request have come (so its deadline is the header timeout's).
    head_started: bool,
    write_deadline: Pin<Box<Sleep>>,
    /// Whether a write is waiting for the client (and `write_deadline` is armed).
    write_waiting: bool,
}

impl TimedIo {
    fn new(stream: TcpStream, in_flight: Arc<InFlight>, timeouts: Timeouts) -> Self {
        Self {
            stream,
            in_flight,
            timeouts,
            read_deadline: Box::pin(tokio::time::sleep_until(deadline(timeouts.header))),
            seen_ended: 0,
            // The first request's head has the header timeout from the start.
            head_started: true,
            write_deadline: Box::pin(tokio::time::sleep_until(deadline(timeouts.send))),
            write_waiting: false,
        }
    }

    /// Starts the idle wait when a request has ended since the current wait began.
    fn note_ended_requests(&mut self) {
        let ended = self.in_flight.ended.load(Ordering::SeqCst);
        if ended != self.seen_ended {
            self.seen_ended = ended;
            self.head_started = false;
            self.read_deadline
                .as_mut()
                .reset(deadline(self.timeouts.idle));
        }
    }

    /// A write's result, with the send timeout applied to a write that has to wait.
    fn sent<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => {
                if !self.write_waiting {
                    self.write_waiting = true;
                    self.write_deadline
                        .as_mut()
                        .reset(deadline(self.timeouts.send));
                }
                if self.write_deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client did not take the answer within the send timeout",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.write_waiting = false;
                ready
            }
        }
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let waiting_for_request = this.in_flight.active.load(Ordering::SeqCst) == 0;
        if waiting_for_request {
            this.note_ended_requests();
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if waiting_for_request && !this.head_started && buf.filled().len() > before {
                    this.head_started = true;
                    this.read_deadline
                        .as_mut()
                        .reset(deadline(this.timeouts.header));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if waiting_for_request => {
                this.in_flight.reader.register(cx.waker());
                if this.read_deadline.as_mut().poll(cx).is_ready() {
                    let what = if this.head_started {
                        "no complete request head within the header timeout"
                    } else {
                        "no request within the idle timeout"
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
            Poll::Pending => {
                this.in_flight.reader.register(cx.waker());
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.sent(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.sent(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.sent(result, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_too_long_to_add_is_a_far_deadline_not_a_panic() {
        let now = Instant::now();
        assert!(deadline(Duration::MAX) > now + Duration::from_secs(365 * 86_400));
        assert!(deadline(Duration::from_secs(1)) <= Instant::now() + Duration::from_secs(1));
    }
}
