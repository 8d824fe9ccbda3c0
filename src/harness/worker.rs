//! A worker: a FIFO executor that runs each request's prefill and decode steps as the
//! compute model says, and a QUIC server that feeds it and streams tokens back.

use crate::clock::Clock;
use crate::compute::Stage;
use crate::net::framed::{FrameIoError, read_frame, write_frame};
use crate::net::wire::{Done, Frame};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the executor tells the requester.
#[derive(Debug)]
pub enum Event {
    /// Output token `index` is ready.
    Token { index: u32 },
    /// The request is complete: time it waited in the queue and time it was computed,
    /// both on this node's clock.
    Done { queue: Duration, compute: Duration },
}

/// One request for the executor.
pub struct Job {
    pub prompt: u32,
    pub output: u32,
    pub arrived: Instant,
    pub events: mpsc::UnboundedSender<Event>,
}

/// Handle to a running executor.
#[derive(Clone)]
pub struct Executor {
    jobs: mpsc::UnboundedSender<Job>,
}

/// A request the executor is decoding.
struct Running {
    job: Job,
    /// Tokens produced so far (the prefill produced the first).
    produced: u32,
    started: Instant,
    queue: Duration,
}

impl Executor {
    /// Starts an executor for `stage` with continuous batching up to `max_batch` requests:
    /// the decode steps of the requests in flight run together, each step taking what the
    /// compute model says for that batch; waiting requests are admitted in arrival order
    /// between steps, each with its prefill (vLLM's schedule without chunked prefill). With
    /// `max_batch` 1 it serves one request at a time, first come, first served.
    pub fn spawn(clock: Clock, stage: Stage, max_batch: u32, cancel: CancellationToken) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {}
                _ = schedule(&clock, &stage, max_batch.max(1) as usize, rx) => {}
            }
        });
        Executor { jobs }
    }

    /// Queues a request. Events arrive on `job.events`.
    pub fn submit(&self, job: Job) -> Result<(), &'static str> {
        self.jobs.send(job).map_err(|_| "the worker has stopped")
    }
}

/// The scheduler loop. Deadlines are absolute (each step starts where the last one ended),
/// so timer error never accumulates over steps.
async fn schedule(
    clock: &Clock,
    stage: &Stage,
    max_batch: usize,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    let mut waiting: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    let mut running: Vec<Running> = Vec::new();
    let mut t = clock.now();
    loop {
        while let Ok(job) = rx.try_recv() {
            waiting.push_back(job);
        }
        if running.is_empty() && waiting.is_empty() {
            match rx.recv().await {
                Some(job) => waiting.push_back(job),
                None => return,
            }
            t = clock.now();
            continue;
        }
        // Admit what fits, each with its prefill, which yields its first token.
        while running.len() < max_batch
            && let Some(job) = waiting.pop_front()
        {
            if job.events.is_closed() {
                continue;
            }
            let started = t.max(job.arrived);
            let queue = started.saturating_duration_since(job.arrived);
            t = started + stage.prefill(job.prompt);
            clock.sleep_until(t).await;
            if job.events.send(Event::Token { index: 0 }).is_err() {
                continue;
            }
            let r = Running {
                job,
                produced: 1,
                started,
                queue,
            };
            if r.produced >= r.job.output {
                finish(clock, r);
            } else {
                running.push(r);
            }
        }
        if running.is_empty() {
            continue;
        }
        // One decode step for the whole batch.
        let contexts: Vec<u32> = running
            .iter()
            .map(|r| r.job.prompt.saturating_add(r.produced))
            .collect();
        t += stage.decode_batch(&contexts);
        clock.sleep_until(t).await;
        let mut still = Vec::with_capacity(running.len());
        for mut r in running.drain(..) {
            if r.job
                .events
                .send(Event::Token { index: r.produced })
                .is_err()
            {
                continue;
            }
            r.produced += 1;
            if r.produced >= r.job.output {
                finish(clock, r);
            } else {
                still.push(r);
            }
        }
        running = still;
    }
}

fn finish(clock: &Clock, r: Running) {
    let compute = clock.now().saturating_duration_since(r.started);
    let _ = r.job.events.send(Event::Done {
        queue: r.queue,
        compute,
    });
}

/// Counters of a worker's server.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub streams: AtomicU64,
    pub malformed: AtomicU64,
}

/// Serves requests arriving on a QUIC endpoint until cancelled.
pub fn spawn_server(
    endpoint: quinn::Endpoint,
    name: String,
    executor: Executor,
    clock: Clock,
    max_frame: u32,
    cancel: CancellationToken,
) -> Arc<ServerStats> {
    let stats = Arc::new(ServerStats::default());
    let out = stats.clone();
    tokio::spawn(async move {
        loop {
            let incoming = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                i = endpoint.accept() => match i { Some(i) => i, None => break },
            };
            let (name, executor, clock, stats, cancel) = (
                name.clone(),
                executor.clone(),
                clock.clone(),
                stats.clone(),
                cancel.clone(),
            );
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                loop {
                    let (send, recv) = tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return,
                        s = conn.accept_bi() => match s { Ok(s) => s, Err(_) => return },
                    };
                    stats.streams.fetch_add(1, Ordering::Relaxed);
                    let (name, executor, clock, stats) =
                        (name.clone(), executor.clone(), clock.clone(), stats.clone());
                    tokio::spawn(async move {
                        if let Err(e) =
                            handle_stream(send, recv, &name, &executor, &clock, max_frame).await
                            && matches!(e, FrameIoError::Wire(_) | FrameIoError::Truncated)
                        {
                            stats.malformed.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
        }
    });
    out
}

async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    name: &str,
    executor: &Executor,
    clock: &Clock,
    max_frame: u32,
) -> Result<(), FrameIoError> {
    let mut buf = Vec::new();
    let request = match read_frame(&mut recv, max_frame).await {
        Ok(Some(Frame::Request(r))) => r,
        Ok(other) => {
            let message = match other {
                None => "the stream ended before a request".to_string(),
                Some(f) => format!("expected a Request frame, got {:?}", f.kind()),
            };
            let _ = write_frame(&mut send, &Frame::Error { code: 1, message }, &mut buf).await;
            let _ = send.finish();
            return Err(FrameIoError::Truncated);
        }
        Err(e) => {
            let code = match &e {
                FrameIoError::Wire(w) => w.code(),
                _ => 0x12,
            };
            let _ = send.reset(code.into());
            let _ = recv.stop(code.into());
            return Err(e);
        }
    };
    let arrived = clock.now();
    let (events, mut rx) = mpsc::unbounded_channel();
    let job = Job {
        prompt: request.prompt.len() as u32,
        output: request.output_tokens.max(1),
        arrived,
        events,
    };
    if let Err(e) = executor.submit(job) {
        write_frame(
            &mut send,
            &Frame::Error {
                code: 2,
                message: e.to_string(),
            },
            &mut buf,
        )
        .await?;
        let _ = send.finish();
        return Ok(());
    }
    while let Some(event) = rx.recv().await {
        let frame = match event {
            Event::Token { index } => Frame::Token {
                index,
                token: index.wrapping_mul(2_654_435_761) % 32_000,
            },
            Event::Done { queue, compute } => Frame::Done(Done {
                node: name.to_string(),
                queue_ns: queue.as_nanos() as u64,
                compute_ns: compute.as_nanos() as u64,
            }),
        };
        write_frame(&mut send, &frame, &mut buf).await?;
    }
    let _ = send.finish();
    Ok(())
}
