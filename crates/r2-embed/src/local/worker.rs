//! A dedicated thread that owns some state and answers jobs one at a time.
//!
//! Async callers send a job through a channel and await the answer on a `tokio::sync::oneshot`,
//! so blocking work never runs on the tokio runtime. A panicking job answers
//! [`Error::Worker`](crate::Error::Worker) and the thread keeps serving; a caller whose future was
//! dropped is detected and its job skipped. Dropping the [`Worker`] closes the channel and joins
//! the thread (after the job in progress, if any).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::{Error, Result};

struct Job<Req, Resp> {
    request: Req,
    reply: oneshot::Sender<Result<Resp>>,
}

/// The handle of a worker thread answering `Req` with `Resp`.
pub(crate) struct Worker<Req, Resp> {
    jobs: Option<mpsc::Sender<Job<Req, Resp>>>,
    thread: Option<JoinHandle<()>>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Worker<Req, Resp> {
    /// Starts thread `name`, which owns `state` and runs `handle` for each job.
    ///
    /// `handle` gets a probe that says whether the caller has given up (its future was dropped), so
    /// long jobs can stop early.
    pub fn spawn<S, F>(name: &str, mut state: S, mut handle: F) -> Result<Self>
    where
        S: Send + 'static,
        F: FnMut(&mut S, Req, &dyn Fn() -> bool) -> Result<Resp> + Send + 'static,
    {
        let (jobs, queue) = mpsc::channel::<Job<Req, Resp>>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Ok(Job { request, reply }) = queue.recv() {
                    if reply.is_closed() {
                        continue;
                    }
                    let cancelled = || reply.is_closed();
                    let answer =
                        catch_unwind(AssertUnwindSafe(|| handle(&mut state, request, &cancelled)))
                            .unwrap_or_else(|payload| {
                                Err(Error::Worker(format!(
                                    "it panicked while embedding: {}",
                                    panic_message(payload.as_ref())
                                )))
                            });
                    // The caller may have given up meanwhile; then nobody needs the answer.
                    let _ = reply.send(answer);
                }
            })
            .map_err(|e| Error::Worker(format!("cannot start the thread: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Runs `request` on the worker thread and waits (asynchronously) for the answer.
    pub async fn call(&self, request: Req) -> Result<Resp> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or_else(|| Error::Worker("it was shut down".to_owned()))?
            .send(Job { request, reply })
            .map_err(|_| Error::Worker("it is no longer running".to_owned()))?;
        answer.await.map_err(|_| {
            Error::Worker("it stopped before answering (it panicked or was shut down)".to_owned())
        })?
    }
}

impl<Req, Resp> Drop for Worker<Req, Resp> {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once the job in progress is done.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn answers_jobs_in_order() {
        let worker = Worker::spawn("test-worker", 0u32, |count, x: u32, _| {
            *count += 1;
            Ok((*count, x * 2))
        })
        .unwrap();
        let rt = runtime();
        assert_eq!(rt.block_on(worker.call(5)).unwrap(), (1, 10));
        assert_eq!(rt.block_on(worker.call(7)).unwrap(), (2, 14));
    }

    #[test]
    fn a_panicking_job_is_an_error_not_a_hang() {
        let worker = Worker::spawn("test-worker", (), |_, x: u32, _| {
            if x == 0 {
                panic!("boom at zero");
            }
            Ok(x)
        })
        .unwrap();
        let rt = runtime();
        match rt.block_on(worker.call(0)) {
            Err(Error::Worker(msg)) => assert!(msg.contains("boom at zero"), "{msg}"),
            other => panic!("expected Error::Worker, got {other:?}"),
        }
        // The thread keeps serving after a panic.
        assert_eq!(rt.block_on(worker.call(3)).unwrap(), 3);
    }

    #[test]
    fn dropping_the_worker_ends_the_thread() {
        let dropped = Arc::new(AtomicBool::new(false));
        let worker =
            Worker::spawn("test-worker", Flag(dropped.clone()), |_, x: u32, _| Ok(x)).unwrap();
        assert_eq!(runtime().block_on(worker.call(1)).unwrap(), 1);
        assert!(!dropped.load(Ordering::SeqCst));
        drop(worker);
        // The state is dropped by the thread as it ends, and drop joins the thread.
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_dropped_caller_is_seen_by_the_job() {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let worker = Worker::spawn("test-worker", (), move |_, _: (), cancelled| {
            started_tx.send(()).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !cancelled() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            seen_tx.send(cancelled()).unwrap();
            Ok(())
        })
        .unwrap();
        let rt = runtime();
        rt.block_on(async {
            let call = worker.call(());
            tokio::select! {
                _ = call => panic!("the job should not finish"),
                _ = tokio::task::spawn_blocking(move || started_rx.recv().unwrap()) => {}
            }
        });
        assert!(seen_rx.recv().unwrap());
    }
}
