//! Engine overhead against the physical floor: a bare chain of tokio tasks joined by
//! bounded mpsc channels, carrying the same `Element` type, measured in the same run.
//!
//! `cargo bench -p promptkit-pipeline --bench engine`

use std::future::Future;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use promptkit_pipeline::{Element, InputSender, OutputStream, Pipeline, RunData, stages};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

const CAPACITY: usize = 32;
const BATCH: usize = 10_000;

/// Two workers, as many as this machine has cores. Measurements run inside a spawned task so
/// the driver is a worker like the stages, not the benchmark's main thread.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One thread: latency is then the pure cost of the hops (no cross-core wake-ups, whose
/// cost varies wildly on a shared 2-core machine).
fn single_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The floor: `depth` forwarding tasks over bounded channels.
fn bare_chain(depth: usize) -> (mpsc::Sender<Element>, mpsc::Receiver<Element>) {
    let (tx, mut rx) = mpsc::channel::<Element>(CAPACITY);
    for _ in 0..depth {
        let (next_tx, next_rx) = mpsc::channel(CAPACITY);
        let mut input = rx;
        tokio::spawn(async move {
            while let Some(e) = input.recv().await {
                if next_tx.send(e).await.is_err() {
                    break;
                }
            }
        });
        rx = next_rx;
    }
    (tx, rx)
}

/// The floor for broadcast: one task cloning into `branches` channels, each forwarded by its
/// own task into a shared output.
fn bare_broadcast(branches: usize) -> (mpsc::Sender<Element>, mpsc::Receiver<Element>) {
    let (tx, mut rx) = mpsc::channel::<Element>(CAPACITY);
    let (out_tx, out_rx) = mpsc::channel(CAPACITY);
    let mut branch_txs = Vec::new();
    for _ in 0..branches {
        let (btx, mut brx) = mpsc::channel::<Element>(CAPACITY);
        branch_txs.push(btx);
        let out = out_tx.clone();
        tokio::spawn(async move {
            while let Some(e) = brx.recv().await {
                if out.send(e).await.is_err() {
                    break;
                }
            }
        });
    }
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            for b in &branch_txs {
                let _ = b.send(e.clone()).await;
            }
        }
    });
    (tx, out_rx)
}

fn chain_pipeline(depth: usize) -> Pipeline {
    let mut b = Pipeline::builder()
        .channel_capacity(CAPACITY)
        .idle_timeout(None);
    for i in 0..depth {
        b = b.then(stages::passthrough(format!("s{i}")));
    }
    b.build().expect("pipeline")
}

fn broadcast_pipeline(branches: usize) -> Pipeline {
    let names: Vec<String> = (0..branches).map(|i| format!("b{i}")).collect();
    let mut b = Pipeline::builder()
        .channel_capacity(CAPACITY)
        .idle_timeout(None)
        .stage(stages::passthrough("source"));
    for n in &names {
        b = b.stage(stages::passthrough(n.clone()));
    }
    b.branch("source", names.iter().map(String::as_str))
        .build()
        .expect("pipeline")
}

fn start(rt: &Runtime, p: &Pipeline) -> (InputSender, OutputStream) {
    rt.block_on(async {
        let (input, execution) = p.start(RunData::default()).expect("start");
        let (output, _handle) = execution.into_parts();
        (input, output)
    })
}

/// Sends one element and waits for it at the end, `iters` times.
fn latency(c: &mut Criterion) {
    let rt = single_thread_runtime();
    let mut group = c.benchmark_group("latency_one_element");
    for depth in [1_usize, 10] {
        let (tx, mut rx) = rt.block_on(async { bare_chain(depth) });
        group.bench_function(BenchmarkId::new("bare_mpsc", depth), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        tx.send(Element::text("x")).await.expect("send");
                        rx.recv().await.expect("recv");
                    }
                    start.elapsed()
                })
            });
        });
        let pipeline = chain_pipeline(depth);
        let (input, mut output) = start(&rt, &pipeline);
        group.bench_function(BenchmarkId::new("pipeline", depth), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        input.send(Element::text("x")).await.expect("send");
                        output.recv().await.expect("recv");
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

/// The sending end of a measured topology.
trait Push: Clone + Send + Sync + 'static {
    fn push(&self, e: Element) -> impl Future<Output = ()> + Send;
}

/// The receiving end of a measured topology.
trait Pull: Send + 'static {
    fn pull(&mut self) -> impl Future<Output = Option<Element>> + Send;
}

impl Push for mpsc::Sender<Element> {
    async fn push(&self, e: Element) {
        self.send(e).await.expect("send");
    }
}

impl Push for InputSender {
    async fn push(&self, e: Element) {
        self.send(e).await.expect("send");
    }
}

impl Pull for mpsc::Receiver<Element> {
    async fn pull(&mut self) -> Option<Element> {
        self.recv().await
    }
}

impl Pull for OutputStream {
    async fn pull(&mut self) -> Option<Element> {
        self.recv().await
    }
}

/// Measures pushing `BATCH` elements from a producer task while a consumer task drains
/// `BATCH * fan_out` elements, both on runtime workers.
fn bench_batch<P: Push, Q: Pull>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    rt: &Runtime,
    push: &P,
    pull: Q,
    fan_out: usize,
) {
    let pull = std::sync::Arc::new(tokio::sync::Mutex::new(pull));
    group.bench_function(name, |b| {
        b.iter(|| {
            let push = push.clone();
            let pull = std::sync::Arc::clone(&pull);
            rt.block_on(async move {
                tokio::spawn(async move {
                    let mut pull = pull.lock().await;
                    let start = Instant::now();
                    let producer = tokio::spawn(async move {
                        for _ in 0..BATCH {
                            push.push(Element::text("x")).await;
                        }
                    });
                    for _ in 0..BATCH * fan_out {
                        pull.pull().await.expect("element");
                    }
                    producer.await.expect("producer");
                    start.elapsed()
                })
                .await
                .expect("measurement task")
            })
        });
    });
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("throughput_5_stage_chain");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let (tx, rx) = rt.block_on(async { bare_chain(5) });
    bench_batch(&mut group, "bare_mpsc", &rt, &tx, rx, 1);
    let (input, output) = start(&rt, &chain_pipeline(5));
    bench_batch(&mut group, "pipeline", &rt, &input, output, 1);
    group.finish();
}

fn broadcast(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("broadcast_4_branches");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let (tx, rx) = rt.block_on(async { bare_broadcast(4) });
    bench_batch(&mut group, "bare_mpsc", &rt, &tx, rx, 4);
    let (input, output) = start(&rt, &broadcast_pipeline(4));
    bench_batch(&mut group, "pipeline", &rt, &input, output, 4);
    group.finish();
}

/// A whole run, as a server pays it per request: launch, one element through one stage, the
/// output read to its end, the result. Against the floor of one spawned task that forwards
/// the element over a channel. With the default idle timeout, as servers run.
fn run(c: &mut Criterion) {
    let mut group = c.benchmark_group("run_one_stage");
    for (name, rt) in [
        ("current_thread", single_thread_runtime()),
        ("two_workers", runtime()),
    ] {
        group.bench_function(BenchmarkId::new("bare_task", name), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    tokio::spawn(async move {
                        let started = Instant::now();
                        for _ in 0..iters {
                            let (tx, mut rx) = mpsc::channel(CAPACITY);
                            tokio::spawn(async move {
                                let _ = tx.send(Element::text("x")).await;
                            });
                            while rx.recv().await.is_some() {}
                        }
                        started.elapsed()
                    })
                    .await
                    .expect("bench task")
                })
            });
        });
        let pipeline = Pipeline::builder()
            .then(stages::passthrough("only"))
            .build()
            .expect("pipeline");
        group.bench_function(BenchmarkId::new("pipeline", name), |b| {
            b.iter_custom(|iters| {
                let pipeline = pipeline.clone();
                rt.block_on(async {
                    tokio::spawn(async move {
                        let started = Instant::now();
                        for _ in 0..iters {
                            let execution = pipeline
                                .execute_iter(RunData::default(), [Element::text("x")])
                                .expect("execute");
                            let (mut output, handle) = execution.into_parts();
                            while output.recv().await.is_some() {}
                            handle.wait().await.expect("run");
                        }
                        started.elapsed()
                    })
                    .await
                    .expect("bench task")
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, latency, throughput, broadcast, run);
criterion_main!(benches);
