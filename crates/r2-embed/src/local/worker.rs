//! A dedicated thread that owns some state and answers requests in batches.
//!
//! Async callers send a request through a channel and await the answer on a
//! `tokio::sync::oneshot`, so blocking work never runs on the tokio runtime. Requests that arrive
//! while a batch runs wait in a queue; when the batch is done, the next one takes the waiting
//! requests in arrival order, whole, while their costs sum to at most `max_batch_cost` (the first
//! request always goes in, however costly), as text-embeddings-inference's queue does. An idle
//! worker starts on the first request at once, except under concurrent load: when the last batch
//! had several callers, their next requests are about to arrive together, so the worker gives
//! them up to `Limits::gather_wait` (as many as the last batch had, within the cost) to share the
//! batch instead of letting the first run alone and the rest wait a whole batch for it.
//!
//! The queue is bounded: a request that would take the units waiting (texts, for the embedder)
//! past `max_queued` is refused at once with [`Error::Overloaded`] — unless nothing is waiting,
//! so that one request larger than the limit still runs. A panicking batch answers
//! [`Error::Worker`] to every caller in it and the thread keeps serving; a caller whose future was
//! dropped is skipped. Dropping the [`Worker`] closes the channel and joins the thread (after the
//! batch in progress, if any).

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::{Error, Result};

/// What the worker thread does with requests.
pub(crate) trait Batcher: Send + 'static {
    /// A request as a caller sends it.
    type Request: Send + 'static;
    /// A request checked and ready to run (e.g. tokenized).
    type Ready;
    /// The answer to one request.
    type Response: Send + 'static;

    /// Checks and prepares one request on the worker thread (an error answers that caller only).
    fn prepare(&mut self, request: Self::Request) -> Result<Self::Ready>;

    /// The cost of a ready request, counted against `max_batch_cost`.
    fn cost(&self, ready: &Self::Ready) -> usize;

    /// Runs one batch of requests; returns one answer per request, in order. `cancelled` says
    /// whether every caller of the batch has given up, so long batches can stop early.
    fn run(
        &mut self,
        batch: &[&Self::Ready],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<Self::Response>>;
}

/// The limits of a [`Worker`]'s batches and queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A batch takes waiting requests while their costs sum to at most this much.
    pub max_batch_cost: usize,
    /// Units (given with each call) waiting at most.
    pub max_queued: usize,
    /// How long an idle worker waits for company after a batch of several callers.
    pub gather_wait: Duration,
}

/// The default of [`Limits::gather_wait`]: on loopback the callers of a batch are back within a
/// millisecond; a forward pass takes hundreds.
pub(crate) const GATHER_WAIT: Duration = Duration::from_millis(3);

struct Job<Req, Resp> {
    request: Req,
    /// The units this request adds to the queue.
    units: usize,
    reply: oneshot::Sender<Result<Resp>>,
}

/// A prepared job waiting in the worker's queue.
struct Waiting<Ready, Resp> {
    ready: Ready,
    cost: usize,
    units: usize,
    reply: oneshot::Sender<Result<Resp>>,
}

/// The handle of a worker thread answering `B::Request` with `B::Response`.
pub(crate) struct Worker<B: Batcher> {
    jobs: Option<mpsc::Sender<Job<B::Request, B::Response>>>,
    /// Units sent and not yet taken into a batch (or skipped, or refused by `prepare`).
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    thread: Option<JoinHandle<()>>,
}

impl<B: Batcher> Worker<B> {
    /// Starts thread `name`, which owns `batcher` and runs its batches within `limits`.
    pub fn spawn(name: &str, mut batcher: B, limits: Limits) -> Result<Self> {
        let (jobs, channel) = mpsc::channel::<Job<B::Request, B::Response>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let counter = queued.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || serve(&mut batcher, &channel, &counter, limits))
            .map_err(|e| Error::Worker(format!("cannot start the thread: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            queued,
            max_queued: limits.max_queued,
            thread: Some(thread),
        })
    }

    /// Queues `request` (`units` of the queue's limit) and waits (asynchronously) for its answer.
    ///
    /// The queue's limit is checked at once, when the future is first polled.
    pub async fn call(&self, request: B::Request, units: usize) -> Result<B::Response> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Worker("it was shut down".to_owned()))?;
        let mut current = self.queued.load(Ordering::Acquire);
        loop {
            if current > 0 && current.saturating_add(units) > self.max_queued {
                return Err(Error::Overloaded {
                    queued: current,
                    limit: self.max_queued,
                });
            }
            match self.queued.compare_exchange_weak(
                current,
                current + units,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        let (reply, answer) = oneshot::channel();
        if jobs
            .send(Job {
                request,
                units,
                reply,
            })
            .is_err()
        {
            self.queued.fetch_sub(units, Ordering::AcqRel);
            return Err(Error::Worker("it is no longer running".to_owned()));
        }
        answer.await.map_err(|_| {
            Error::Worker("it stopped before answering (it panicked or was shut down)".to_owned())
        })?
    }
}

/// The worker thread's loop: gather what has arrived, run the next batch, answer, repeat.
fn serve<B: Batcher>(
    batcher: &mut B,
    channel: &mpsc::Receiver<Job<B::Request, B::Response>>,
    queued: &AtomicUsize,
    limits: Limits,
) {
    let max_batch_cost = limits.max_batch_cost;
    let mut last_batch_calls = 0;
    let mut waiting: VecDeque<Waiting<B::Ready, B::Response>> = VecDeque::new();
    let release = |units: usize| {
        queued.fetch_sub(units, Ordering::AcqRel);
    };
    loop {
        // Block only when nothing waits; then take whatever else has arrived meanwhile.
        if waiting.is_empty() {
            match channel.recv() {
                Ok(job) => admit(batcher, job, &mut waiting, &release),
                Err(_) => return,
            }
            if last_batch_calls > 1 {
                let until = Instant::now() + limits.gather_wait;
                while waiting.len() < last_batch_calls
                    && waiting.iter().map(|w| w.cost).sum::<usize>() < max_batch_cost
                {
                    let left = until.saturating_duration_since(Instant::now());
                    match channel.recv_timeout(left) {
                        Ok(job) => admit(batcher, job, &mut waiting, &release),
                        // A closed channel ends the loop at its next `recv`.
                        Err(_) => break,
                    }
                }
            }
        }
        while let Ok(job) = channel.try_recv() {
            admit(batcher, job, &mut waiting, &release);
        }
        // Callers that gave up while waiting are skipped.
        waiting.retain(|w| {
            let keep = !w.reply.is_closed();
            if !keep {
                release(w.units);
            }
            keep
        });
        let Some(first) = waiting.pop_front() else {
            continue;
        };
        let mut cost = first.cost;
        let mut batch = vec![first];
        while let Some(next) = waiting.front() {
            match cost.checked_add(next.cost) {
                Some(total) if total <= max_batch_cost => {
                    cost = total;
                    batch.extend(waiting.pop_front());
                }
                _ => break,
            }
        }
        release(batch.iter().map(|w| w.units).sum());
        last_batch_calls = batch.len();

        let readies: Vec<&B::Ready> = batch.iter().map(|w| &w.ready).collect();
        let cancelled = || batch.iter().all(|w| w.reply.is_closed());
        let answers = catch_unwind(AssertUnwindSafe(|| batcher.run(&readies, &cancelled)))
            .unwrap_or_else(|payload| {
                Err(Error::Worker(format!(
                    "it panicked while embedding: {}",
                    panic_message(payload.as_ref())
                )))
            })
            .and_then(|answers| {
                if answers.len() == batch.len() {
                    Ok(answers)
                } else {
                    Err(Error::Worker(format!(
                        "a batch of {} requests got {} answers",
                        batch.len(),
                        answers.len()
                    )))
                }
            });
        drop(readies);
        match answers {
            Ok(answers) => {
                for (w, answer) in batch.into_iter().zip(answers) {
                    // The caller may have given up meanwhile; then nobody needs the answer.
                    let _ = w.reply.send(Ok(answer));
                }
            }
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Prepares `job` into the queue, or answers it at once (its caller is gone, or it is invalid).
fn admit<B: Batcher>(
    batcher: &mut B,
    job: Job<B::Request, B::Response>,
    waiting: &mut VecDeque<Waiting<B::Ready, B::Response>>,
    release: &dyn Fn(usize),
) {
    let Job {
        request,
        units,
        reply,
    } = job;
    if reply.is_closed() {
        release(units);
        return;
    }
    let prepared =
        catch_unwind(AssertUnwindSafe(|| batcher.prepare(request))).unwrap_or_else(|payload| {
            Err(Error::Worker(format!(
                "it panicked while preparing a request: {}",
                panic_message(payload.as_ref())
            )))
        });
    match prepared {
        Ok(ready) => {
            let cost = batcher.cost(&ready);
            waiting.push_back(Waiting {
                ready,
                cost,
                units,
                reply,
            });
        }
        Err(e) => {
            release(units);
            let _ = reply.send(Err(e));
        }
    }
}

impl<B: Batcher> Drop for Worker<B> {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once the batch in progress is done.
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
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    /// Doubles numbers; records every batch; panics on 0; blocks while `hold` is set; a request
    /// costs its value.
    #[derive(Default)]
    struct Doubler {
        batches: Arc<Mutex<Vec<Vec<u32>>>>,
        hold: Arc<AtomicBool>,
        started: Option<std::sync::mpsc::Sender<()>>,
        /// Held for its `Drop`.
        _dropped: Option<Flag>,
    }

    /// Set when dropped.
    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    impl Batcher for Doubler {
        type Request = u32;
        type Ready = u32;
        type Response = u32;

        fn prepare(&mut self, request: u32) -> Result<u32> {
            if request == 99 {
                return Err(Error::EmptyText { index: 0 });
            }
            Ok(request)
        }

        fn cost(&self, ready: &u32) -> usize {
            *ready as usize
        }

        fn run(&mut self, batch: &[&u32], cancelled: &dyn Fn() -> bool) -> Result<Vec<u32>> {
            self.batches
                .lock()
                .unwrap()
                .push(batch.iter().map(|&&x| x).collect());
            if let Some(started) = &self.started {
                let _ = started.send(());
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.hold.load(Ordering::SeqCst) && !cancelled() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if batch.contains(&&0) {
                panic!("boom at zero");
            }
            Ok(batch.iter().map(|&&x| x * 2).collect())
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    const WIDE: Limits = Limits {
        max_batch_cost: 100,
        max_queued: 100,
        gather_wait: GATHER_WAIT,
    };

    /// Calls `values` one after another, `pause` apart, without waiting for the answers; returns
    /// the answers.
    fn staggered(worker: &Arc<Worker<Doubler>>, values: &[u32], pause: Duration) -> Vec<u32> {
        let rt = runtime();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for &v in values {
                let worker = worker.clone();
                tasks.push(tokio::spawn(async move { worker.call(v, 1).await }));
                tokio::task::yield_now().await;
                std::thread::sleep(pause);
            }
            let mut answers = Vec::new();
            for t in tasks {
                answers.push(t.await.unwrap().unwrap());
            }
            answers
        })
    }

    #[test]
    fn after_a_lone_batch_nobody_waits_for_company() {
        let doubler = Doubler::default();
        let batches = doubler.batches.clone();
        let limits = Limits {
            gather_wait: Duration::from_secs(2),
            ..WIDE
        };
        let worker = Arc::new(Worker::spawn("test-worker", doubler, limits).unwrap());
        let rt = runtime();
        // A lone call: the next one 50 ms later runs alone too, at once.
        assert_eq!(rt.block_on(worker.call(1, 1)).unwrap(), 2);
        let started = Instant::now();
        assert_eq!(staggered(&worker, &[2], Duration::ZERO), [4]);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a lone call waited"
        );
        // Two calls 50 ms apart after a lone batch: the first does not wait for the second.
        assert_eq!(
            staggered(&worker, &[3, 4], Duration::from_millis(50)),
            [6, 8]
        );
        assert_eq!(batches.lock().unwrap()[2..], [vec![3], vec![4]]);
    }

    #[test]
    fn two_callers_after_a_shared_batch_share_the_next_one_though_they_arrive_apart() {
        let limits = Limits {
            gather_wait: Duration::from_secs(2),
            ..WIDE
        };
        let (worker, batches, hold, started_rx) = held_worker(limits);
        // A batch of [1] holds the worker while 2 and 3 queue: they share the next batch.
        let answers = hold_then_queue(&worker, &hold, started_rx, &[2, 3]);
        assert_eq!(
            answers.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [4, 6]
        );
        // The last batch had two callers: two calls 100 ms apart are gathered into one batch.
        assert_eq!(
            staggered(&worker, &[4, 5], Duration::from_millis(100)),
            [8, 10]
        );
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches, [vec![1], vec![2, 3], vec![4, 5]]);
    }

    #[test]
    fn answers_requests_in_order() {
        let worker = Worker::spawn("test-worker", Doubler::default(), WIDE).unwrap();
        let rt = runtime();
        assert_eq!(rt.block_on(worker.call(5, 1)).unwrap(), 10);
        assert_eq!(rt.block_on(worker.call(7, 1)).unwrap(), 14);
        assert!(matches!(
            rt.block_on(worker.call(99, 1)),
            Err(Error::EmptyText { index: 0 })
        ));
        assert_eq!(worker.queued.load(Ordering::SeqCst), 0);
    }

    /// A worker whose batches are held until `hold` is cleared, with its recorded batches, the flag,
    /// and a channel that says when a batch started.
    #[allow(clippy::type_complexity)]
    fn held_worker(
        limits: Limits,
    ) -> (
        Arc<Worker<Doubler>>,
        Arc<Mutex<Vec<Vec<u32>>>>,
        Arc<AtomicBool>,
        std::sync::mpsc::Receiver<()>,
    ) {
        let (started, started_rx) = std::sync::mpsc::channel();
        let doubler = Doubler {
            started: Some(started),
            hold: Arc::new(AtomicBool::new(true)),
            ..Doubler::default()
        };
        let (batches, hold) = (doubler.batches.clone(), doubler.hold.clone());
        let worker = Arc::new(Worker::spawn("test-worker", doubler, limits).unwrap());
        (worker, batches, hold, started_rx)
    }

    /// Holds `worker` in a first batch of `[1]` while `calls` are queued, then lets it go; returns
    /// the answers to `calls`.
    fn hold_then_queue(
        worker: &Arc<Worker<Doubler>>,
        hold: &Arc<AtomicBool>,
        started_rx: std::sync::mpsc::Receiver<()>,
        calls: &[u32],
    ) -> Vec<Result<u32>> {
        let rt = runtime();
        rt.block_on(async {
            let first = {
                let worker = worker.clone();
                tokio::spawn(async move { worker.call(1, 1).await })
            };
            tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
                .await
                .unwrap();
            let tasks: Vec<_> = calls
                .iter()
                .map(|&x| {
                    let worker = worker.clone();
                    tokio::spawn(async move { worker.call(x, 1).await })
                })
                .collect();
            // Every task has queued its request once this yield returns.
            tokio::task::yield_now().await;
            hold.store(false, Ordering::SeqCst);
            assert_eq!(first.await.unwrap().unwrap(), 2);
            let mut answers = Vec::new();
            for t in tasks {
                answers.push(t.await.unwrap());
            }
            answers
        })
    }

    /// [`hold_then_queue`] on a new worker with `limits`; returns the answers and the batches run.
    fn gather(limits: Limits, calls: &[u32]) -> (Vec<Result<u32>>, Vec<Vec<u32>>) {
        let (worker, batches, hold, started_rx) = held_worker(limits);
        let answers = hold_then_queue(&worker, &hold, started_rx, calls);
        let batches = batches.lock().unwrap().clone();
        (answers, batches)
    }

    #[test]
    fn requests_that_arrive_meanwhile_share_a_batch_within_the_cost() {
        let limits = Limits {
            max_batch_cost: 10,
            max_queued: 100,
            gather_wait: GATHER_WAIT,
        };
        let (answers, batches) = gather(limits, &[3, 4, 3, 2, 20, 1]);
        let answers: Vec<u32> = answers.into_iter().map(|a| a.unwrap()).collect();
        assert_eq!(answers, vec![6, 8, 6, 4, 40, 2]);
        // In arrival order, whole, costs summing to ≤ 10; the one costing 20 runs alone.
        assert_eq!(
            batches,
            vec![vec![1], vec![3, 4, 3], vec![2], vec![20], vec![1]]
        );
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let limits = Limits {
            max_batch_cost: 100,
            max_queued: 3,
            gather_wait: GATHER_WAIT,
        };
        let (answers, batches) = gather(limits, &[5, 6, 7, 8, 9]);
        assert_eq!(
            answers[..3]
                .iter()
                .map(|a| *a.as_ref().unwrap())
                .collect::<Vec<_>>(),
            [10, 12, 14]
        );
        for a in &answers[3..] {
            assert!(
                matches!(
                    a,
                    Err(Error::Overloaded {
                        queued: 3,
                        limit: 3
                    })
                ),
                "{a:?}"
            );
        }
        assert_eq!(batches, vec![vec![1], vec![5, 6, 7]]);
    }

    #[test]
    fn one_request_larger_than_the_queue_runs_when_nothing_waits() {
        let limits = Limits {
            max_batch_cost: 100,
            max_queued: 3,
            gather_wait: GATHER_WAIT,
        };
        let worker = Worker::spawn("test-worker", Doubler::default(), limits).unwrap();
        assert_eq!(runtime().block_on(worker.call(4, 10)).unwrap(), 8);
        assert_eq!(worker.queued.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_panicking_batch_answers_every_caller_and_the_thread_goes_on() {
        let (answers, batches) = gather(WIDE, &[3, 0, 4]);
        assert_eq!(batches[1], vec![3, 0, 4]);
        for a in &answers {
            match a {
                Err(Error::Worker(msg)) => assert!(msg.contains("boom at zero"), "{msg}"),
                other => panic!("expected Error::Worker, got {other:?}"),
            }
        }
    }

    #[test]
    fn dropping_the_worker_ends_the_thread() {
        let dropped = Arc::new(AtomicBool::new(false));
        let doubler = Doubler {
            _dropped: Some(Flag(dropped.clone())),
            ..Doubler::default()
        };
        let worker = Worker::spawn("test-worker", doubler, WIDE).unwrap();
        assert_eq!(runtime().block_on(worker.call(1, 1)).unwrap(), 2);
        assert!(!dropped.load(Ordering::SeqCst));
        drop(worker);
        // The state is dropped by the thread as it ends, and drop joins the thread.
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn dropped_callers_are_skipped_and_seen_by_the_batch() {
        let (started, started_rx) = std::sync::mpsc::channel();
        let doubler = Doubler {
            started: Some(started),
            hold: Arc::new(AtomicBool::new(true)),
            ..Doubler::default()
        };
        let (batches, hold) = (doubler.batches.clone(), doubler.hold.clone());
        let worker = Arc::new(Worker::spawn("test-worker", doubler, WIDE).unwrap());
        let rt = runtime();
        rt.block_on(async {
            // A batch whose only caller gives up stops early (`cancelled`), although held.
            let first = {
                let worker = worker.clone();
                tokio::spawn(async move { worker.call(1, 1).await })
            };
            tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
                .await
                .unwrap();
            let gone = {
                let worker = worker.clone();
                tokio::spawn(async move { worker.call(2, 1).await })
            };
            let kept = {
                let worker = worker.clone();
                tokio::spawn(async move { worker.call(3, 1).await })
            };
            tokio::task::yield_now().await;
            gone.abort();
            assert!(gone.await.unwrap_err().is_cancelled());
            first.abort();
            assert!(first.await.unwrap_err().is_cancelled());
            hold.store(false, Ordering::SeqCst);
            assert_eq!(kept.await.unwrap().unwrap(), 6);
        });
        assert_eq!(*batches.lock().unwrap(), vec![vec![1], vec![3]]);
        assert_eq!(worker.queued.load(Ordering::SeqCst), 0);
    }
}
