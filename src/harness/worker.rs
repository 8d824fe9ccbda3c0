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

impl Executor {
    /// Starts an executor for `stage` that serves one request at a time, in arrival order.
    pub fn spawn(clock: Clock, stage: Stage, cancel: CancellationToken) -> Self {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            loop {
                let job = tokio::select! {
                    _ = cancel.cancelled() => return,
                    job = rx.recv() => match job { Some(j) => j, None => return },
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = serve(&clock, &stage, job) => {}
                }
            }
        });
        Executor { jobs }
    }

    /// Queues a request. Events arrive on `job.events`.
    pub fn submit(&self, job: Job) -> Result<(), &'static str> {
        self.jobs.send(job).map_err(|_| "the worker has stopped")
    }
}

/// Runs one request. Deadlines are absolute, so timer error never accumulates over steps.
async fn serve(clock: &Clock, stage: &Stage, job: Job) {
    let start = clock.now();
    let queue = start.saturating_duration_since(job.arrived);
    let mut due = start + stage.prefill(job.prompt);
    clock.sleep_until(due).await;
    if job.events.send(Event::Token { index: 0 }).is_err() {
        return;
    }
    for k in 1..job.output {
        due += stage.decode(job.prompt.saturating_add(k));
        clock.sleep_until(due).await;
        if job.events.send(Event::Token { index: k }).is_err() {
            return;
        }
    }
    let compute = clock.now().saturating_duration_since(start);
    let _ = job.events.send(Event::Done { queue, compute });
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
