//! Behaviour of the engine: topology, backpressure, failure, cancellation, timeouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use promptkit_core::{ErrorChain, Message, Usage};
use promptkit_pipeline::{
    BuildError, Control, Element, Interrupt, Pipeline, PipelineError, RunData, Stage, StageContext,
    StageError, StageInput, StageKind, StageOutput, TrySendError, stages,
};
use serde_json::json;

/// Emits `count` numbered text elements, ignoring its input.
struct Source {
    name: &'static str,
    count: usize,
    sent: Arc<AtomicUsize>,
}

impl Stage for Source {
    fn name(&self) -> &str {
        self.name
    }

    fn kind(&self) -> StageKind {
        StageKind::Generate
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while input.recv().await.is_some() {}
        for i in 0..self.count {
            output.send(Element::text(i.to_string())).await?;
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// Counts live stage futures: incremented when `run` starts, decremented when it is dropped.
#[derive(Clone, Default)]
struct Live(Arc<AtomicUsize>);

struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Live {
    fn enter(&self) -> LiveGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        LiveGuard(Arc::clone(&self.0))
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Forwards forever (until cancelled), never finishing on its own: waits on a signal that
/// never comes after its input ends.
struct Forever {
    name: &'static str,
    live: Live,
}

impl Stage for Forever {
    fn name(&self) -> &str {
        self.name
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        let _guard = self.live.enter();
        while let Some(e) = input.recv().await {
            output.send(e).await?;
        }
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// One `Forever` stage named "forever".
fn forever_pipeline(live: &Live) -> Pipeline {
    Pipeline::builder()
        .then(Forever {
            name: "forever",
            live: live.clone(),
        })
        .build()
        .unwrap()
}

fn texts(elements: &[Element]) -> Vec<String> {
    elements
        .iter()
        .filter_map(|e| e.as_text().map(str::to_owned))
        .collect()
}

async fn run_texts(pipeline: &Pipeline, input: Vec<Element>) -> Vec<String> {
    let (elements, result) = pipeline
        .execute(RunData::default(), futures_util::stream::iter(input))
        .unwrap()
        .finish()
        .await;
    result.unwrap();
    texts(&elements)
}

#[test]
fn build_rejects_bad_graphs_with_clear_errors() {
    assert_eq!(
        Pipeline::builder().build().unwrap_err(),
        BuildError::NoStages
    );

    let dup = Pipeline::builder()
        .stage(stages::passthrough("a"))
        .stage(stages::passthrough("a"))
        .build()
        .unwrap_err();
    assert_eq!(dup, BuildError::DuplicateStage("a".into()));

    let dangling = Pipeline::builder()
        .stage(stages::passthrough("a"))
        .connect("a", "nowhere")
        .build()
        .unwrap_err();
    assert_eq!(
        dangling.to_string(),
        "edge a -> nowhere refers to unknown stage `nowhere`"
    );

    let twice = Pipeline::builder()
        .stage(stages::passthrough("a"))
        .stage(stages::passthrough("b"))
        .connect("a", "b")
        .connect("a", "b")
        .build()
        .unwrap_err();
    assert!(matches!(twice, BuildError::DuplicateEdge { .. }));

    let fan_in = Pipeline::builder()
        .stage(stages::passthrough("a"))
        .stage(stages::passthrough("b"))
        .stage(stages::passthrough("c"))
        .merge(["a", "b"], "c")
        .build()
        .unwrap_err();
    assert_eq!(
        fan_in.to_string(),
        "stage `c` has 2 inputs (a, b) but does not accept fan-in; add a merge stage"
    );

    let zero = Pipeline::builder()
        .stage(stages::passthrough("a"))
        .stage(stages::passthrough("b"))
        .connect_with_capacity("a", "b", 0)
        .build()
        .unwrap_err();
    assert!(matches!(zero, BuildError::InvalidConfig(_)));
}

#[test]
fn a_cycle_error_names_its_path() {
    let err = Pipeline::builder()
        .stage(stages::passthrough("in"))
        .stage(stages::passthrough("a"))
        .stage(stages::passthrough("b"))
        .stage(stages::passthrough("c"))
        .chain(["in", "a", "b", "c", "a"])
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::Cycle {
            path: vec!["a".into(), "b".into(), "c".into(), "a".into()]
        }
    );
    assert_eq!(err.to_string(), "cycle: a -> b -> c -> a");

    let self_loop = Pipeline::builder()
        .stage(stages::passthrough("x"))
        .connect("x", "x")
        .build()
        .unwrap_err();
    assert_eq!(self_loop.to_string(), "cycle: x -> x");
}

#[tokio::test]
async fn a_chain_streams_elements_in_order() {
    let pipeline = Pipeline::builder()
        .then(stages::passthrough("a"))
        .then(stages::map("upper", |e: Element| {
            Ok(e.as_text()
                .map_or(e.clone(), |t| Element::text(t.to_uppercase())))
        }))
        .then(stages::filter("no-b", |e: &Element| {
            e.as_text() != Some("B")
        }))
        .then(stages::flat_map("twice", |e: Element| [e.clone(), e]))
        .build()
        .unwrap();
    let out = run_texts(&pipeline, ["a", "b", "c"].map(Element::text).to_vec()).await;
    assert_eq!(out, ["A", "A", "C", "C"]);
}

/// However the input arrives (all in memory, more than a channel holds, still pending, or
/// for several root stages), every root stage gets all of it, in order.
#[tokio::test]
async fn every_root_gets_the_whole_input_however_it_arrives() {
    let tagging = |tag: &'static str| {
        stages::map(tag, move |e: Element| {
            Ok(Element::text(format!(
                "{tag}{}",
                e.as_text().unwrap_or_default()
            )))
        })
    };
    let one_root = Pipeline::builder()
        .channel_capacity(2)
        .then(tagging("a"))
        .build()
        .unwrap();
    let two_roots = Pipeline::builder()
        .channel_capacity(8)
        .stage(tagging("a"))
        .stage(tagging("b"))
        .build()
        .unwrap();
    let numbers =
        |n: usize| -> Vec<Element> { (0..n).map(|i| Element::text(i.to_string())).collect() };
    let expected =
        |tag: &str, n: usize| -> Vec<String> { (0..n).map(|i| format!("{tag}{i}")).collect() };

    // In memory, within and beyond the channel's capacity.
    assert_eq!(run_texts(&one_root, numbers(2)).await, expected("a", 2));
    assert_eq!(run_texts(&one_root, numbers(9)).await, expected("a", 9));
    // Several roots: each gets every element.
    let out = run_texts(&two_roots, numbers(5)).await;
    let of =
        |tag: &str| -> Vec<String> { out.iter().filter(|t| t.starts_with(tag)).cloned().collect() };
    assert_eq!(of("a"), expected("a", 5));
    assert_eq!(of("b"), expected("b", 5));
    // Still pending when the run starts: fed as it comes.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let input =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    let execution = one_root.execute(RunData::default(), input).unwrap();
    let feeder = tokio::spawn(async move {
        for e in numbers(4) {
            tx.send(e).await.unwrap();
        }
    });
    let (elements, result) = execution.finish().await;
    result.unwrap();
    feeder.await.unwrap();
    assert_eq!(texts(&elements), expected("a", 4));
}

#[tokio::test]
async fn broadcast_delivers_every_element_to_every_branch_in_order() {
    let pipeline = Pipeline::builder()
        .stage(stages::passthrough("source"))
        .stage(stages::map("left", |e: Element| {
            Ok(Element::text(format!(
                "L{}",
                e.as_text().unwrap_or_default()
            )))
        }))
        .stage(stages::map("right", |e: Element| {
            Ok(Element::text(format!(
                "R{}",
                e.as_text().unwrap_or_default()
            )))
        }))
        .stage(stages::merge("join"))
        .branch("source", ["left", "right"])
        .merge(["left", "right"], "join")
        .build()
        .unwrap();
    let input: Vec<Element> = (0..200).map(|i| Element::text(i.to_string())).collect();
    let (elements, result) = pipeline
        .execute(RunData::default(), futures_util::stream::iter(input))
        .unwrap()
        .finish()
        .await;
    result.unwrap();
    let mut left = Vec::new();
    let mut right = Vec::new();
    for e in &elements {
        let text = e.as_text().unwrap();
        // The merge tags each element with its input edge: 0 = left, 1 = right.
        match e.meta.merge_input {
            Some(0) => left.push(text[1..].parse::<u32>().unwrap()),
            Some(1) => right.push(text[1..].parse::<u32>().unwrap()),
            other => panic!("untagged element {other:?}"),
        }
        assert_eq!(
            &text[..1],
            if e.meta.merge_input == Some(0) {
                "L"
            } else {
                "R"
            }
        );
    }
    let expected: Vec<u32> = (0..200).collect();
    assert_eq!(left, expected);
    assert_eq!(right, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_each_get_a_share_and_nothing_twice() {
    let pipeline = Pipeline::builder()
        .stage(stages::passthrough("source"))
        .stage(stages::map_async("w1", |e: Element| async move {
            tokio::time::sleep(Duration::from_micros(200)).await;
            Ok(e.with_attribute("worker", 1))
        }))
        .stage(stages::map_async("w2", |e: Element| async move {
            tokio::time::sleep(Duration::from_micros(200)).await;
            Ok(e.with_attribute("worker", 2))
        }))
        .stage(stages::merge("join"))
        .branch_competing("source", ["w1", "w2"])
        .merge(["w1", "w2"], "join")
        .build()
        .unwrap();
    let input: Vec<Element> = (0..400).map(|i| Element::text(i.to_string())).collect();
    let (elements, result) = pipeline
        .execute(RunData::default(), futures_util::stream::iter(input))
        .unwrap()
        .finish()
        .await;
    result.unwrap();
    let mut seen: Vec<u32> = texts(&elements)
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..400).collect::<Vec<_>>(),
        "every element exactly once"
    );
    let by_w1 = elements
        .iter()
        .filter(|e| e.meta.attribute("worker") == Some(&json!(1)))
        .count();
    assert!(
        by_w1 > 0 && by_w1 < 400,
        "both workers took part: w1 took {by_w1}"
    );
}

/// A slow sink bounds how far the producer runs ahead: at most the capacities of the
/// channels between them (plus the one element each stage holds).
#[tokio::test]
async fn backpressure_bounds_the_producer_to_the_channel_capacities() {
    let sent = Arc::new(AtomicUsize::new(0));
    let capacity = 4;
    let pipeline = Pipeline::builder()
        .channel_capacity(capacity)
        .idle_timeout(None)
        .then(Source {
            name: "source",
            count: 1000,
            sent: Arc::clone(&sent),
        })
        .then(stages::passthrough("middle"))
        .build()
        .unwrap();
    let mut execution = pipeline
        .execute(RunData::default(), futures_util::stream::empty())
        .unwrap();
    // Read nothing for a while: the producer must stall.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ahead = sent.load(Ordering::SeqCst);
    // source -> middle (4) + middle holding one + middle -> output (4) + one blocked send.
    let bound = 2 * capacity + 2;
    assert!(
        ahead <= bound,
        "producer ran {ahead} elements ahead, bound {bound}"
    );
    assert!(
        ahead >= capacity,
        "producer should fill the first channel, got {ahead}"
    );
    // Reading one element lets it advance by about one.
    execution.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = sent.load(Ordering::SeqCst);
    assert!(after <= bound + 1, "after one read: {after}");
    // Drain the rest; all 1000 arrive.
    let mut got = 1;
    while execution.recv().await.is_some() {
        got += 1;
    }
    assert_eq!(got, 1000);
    assert_eq!(sent.load(Ordering::SeqCst), 1000);
}

#[tokio::test]
async fn per_edge_capacity_overrides_the_default() {
    let sent = Arc::new(AtomicUsize::new(0));
    let pipeline = Pipeline::builder()
        .channel_capacity(1)
        .idle_timeout(None)
        .stage(Source {
            name: "source",
            count: 500,
            sent: Arc::clone(&sent),
        })
        .stage(stages::passthrough("sink"))
        .connect_with_capacity("source", "sink", 64)
        .build()
        .unwrap();
    let execution = pipeline
        .execute(RunData::default(), futures_util::stream::empty())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ahead = sent.load(Ordering::SeqCst);
    assert!(
        (64..=68).contains(&ahead),
        "the wide edge lets the producer run ~64 ahead, got {ahead}"
    );
    drop(execution);
}

struct Fails {
    after: usize,
}

impl Stage for Fails {
    fn name(&self) -> &str {
        "fails"
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        let mut n = 0;
        while let Some(e) = input.recv().await {
            if n == self.after {
                return Err(StageError::new("bad element"));
            }
            n += 1;
            output.send(e).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_first_fatal_error_cancels_siblings_and_is_returned() {
    let live = Live::default();
    let pipeline = Pipeline::builder()
        .idle_timeout(None)
        .stage(stages::passthrough("source"))
        .stage(Fails { after: 2 })
        .stage(Forever {
            name: "sibling",
            live: live.clone(),
        })
        .branch("source", ["fails", "sibling"])
        .build()
        .unwrap();
    let input: Vec<Element> = (0..10).map(|i| Element::text(i.to_string())).collect();
    let (_, result) = tokio::time::timeout(
        Duration::from_secs(5),
        pipeline
            .execute(RunData::default(), futures_util::stream::iter(input))
            .unwrap()
            .finish(),
    )
    .await
    .expect("a failing stage must end the run, not hang it");
    match result.unwrap_err() {
        PipelineError::StageFailed { stage, source } => {
            assert_eq!(stage, "fails");
            assert_eq!(source.message(), "bad element");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(live.count(), 0, "the never-ending sibling was cancelled");
}

struct Panics;

impl Stage for Panics {
    fn name(&self) -> &str {
        "panics"
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        _output: StageOutput,
    ) -> Result<(), StageError> {
        if input.recv().await.is_some() {
            panic!("stage bug");
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_panicking_stage_becomes_a_typed_error_naming_it() {
    let live = Live::default();
    let pipeline = Pipeline::builder()
        .stage(stages::passthrough("source"))
        .stage(Panics)
        .stage(Forever {
            name: "other",
            live: live.clone(),
        })
        .branch("source", ["panics", "other"])
        .build()
        .unwrap();
    let failure = pipeline
        .execute_sync(RunData::default(), [Element::text("x")])
        .await
        .unwrap_err();
    match &failure.error {
        PipelineError::StagePanicked { stage, message } => {
            assert_eq!(stage, "panics");
            assert_eq!(message, "stage bug");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(failure.to_string(), "stage `panics` panicked: stage bug");
    assert_eq!(live.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_leaves_no_task_running() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let live = Live::default();
    let pipeline = Pipeline::builder()
        .stage(stages::passthrough("a"))
        .stage(Forever {
            name: "b",
            live: live.clone(),
        })
        .stage(Forever {
            name: "c",
            live: live.clone(),
        })
        .chain(["a", "b", "c"])
        .build()
        .unwrap();
    let (input, execution) = pipeline.start(RunData::default()).unwrap();
    input.send(Element::text("hello")).await.unwrap();
    let (mut output, handle) = execution.into_parts();
    assert_eq!(output.recv().await.unwrap().as_text(), Some("hello"));
    assert_eq!(live.count(), 2);
    assert!(metrics.num_alive_tasks() > baseline);
    handle.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), handle.wait())
        .await
        .unwrap();
    assert!(
        matches!(result, Err(PipelineError::Cancelled)),
        "{result:?}"
    );
    assert_eq!(live.count(), 0, "every stage future was dropped");
    // The supervisor reports only after every stage task ended; give the runtime a moment
    // to reap the supervisor itself.
    for _ in 0..100 {
        if metrics.num_alive_tasks() == baseline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        baseline,
        "no task outlives its run"
    );
    assert_eq!(pipeline.active_runs(), 0);
    drop(input);
    drop(output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_output_cancels_an_abandoned_run() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let live = Live::default();
    let pipeline = forever_pipeline(&live);
    let (input, execution) = pipeline.start(RunData::default()).unwrap();
    input.send(Element::text("x")).await.unwrap();
    drop(execution);
    for _ in 0..200 {
        if metrics.num_alive_tasks() == baseline && live.count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(live.count(), 0);
    assert_eq!(metrics.num_alive_tasks(), baseline);
}

/// How [`Slow`] shows it is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    /// An element after every step.
    Elements,
    /// A heartbeat after every step, then one element.
    Heartbeats,
    /// Every step is a wait marked busy (a model call), then one element.
    Busy,
}

/// A stage that works slowly: `count` steps of `step`, reporting as `report` says.
struct Slow {
    step: Duration,
    count: usize,
    report: Report,
}

impl Stage for Slow {
    fn name(&self) -> &str {
        "slow"
    }

    async fn run(
        &self,
        cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while input.recv().await.is_some() {}
        for i in 0..self.count {
            match self.report {
                Report::Elements => {
                    tokio::time::sleep(self.step).await;
                    output.send(Element::text(i.to_string())).await?;
                }
                Report::Heartbeats => {
                    tokio::time::sleep(self.step).await;
                    cx.heartbeat();
                }
                Report::Busy => cx.busy(tokio::time::sleep(self.step)).await,
            }
        }
        if self.report != Report::Elements {
            output.send(Element::text("done")).await?;
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_is_reset_by_a_slow_but_progressing_stage() {
    // 10 steps of 60 ms: the whole run takes 600 ms, far past the 100 ms idle timeout,
    // but no gap between two progress marks reaches it.
    let pipeline = Pipeline::builder()
        .idle_timeout(Some(Duration::from_millis(100)))
        .then(Slow {
            step: Duration::from_millis(60),
            count: 10,
            report: Report::Elements,
        })
        .build()
        .unwrap();
    let result = pipeline.execute_sync(RunData::default(), []).await.unwrap();
    assert_eq!(result.elements, 10);

    // Heartbeats alone (a long model call) count as progress too.
    let pipeline = Pipeline::builder()
        .idle_timeout(Some(Duration::from_millis(100)))
        .then(Slow {
            step: Duration::from_millis(60),
            count: 10,
            report: Report::Heartbeats,
        })
        .build()
        .unwrap();
    let result = pipeline.execute_sync(RunData::default(), []).await.unwrap();
    assert_eq!(result.text, "done");

    // A stage silent for longer than the limit is cut off.
    let pipeline = Pipeline::builder()
        .idle_timeout(Some(Duration::from_millis(100)))
        .then(Slow {
            step: Duration::from_millis(300),
            count: 2,
            report: Report::Elements,
        })
        .build()
        .unwrap();
    let failure = pipeline
        .execute_sync(RunData::default(), [])
        .await
        .unwrap_err();
    assert!(
        matches!(failure.error, PipelineError::IdleTimeout(d) if d == Duration::from_millis(100)),
        "{}",
        failure.error
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_marked_busy_is_not_idle_and_an_unmarked_one_is() {
    // One silent 2 s wait against a 100 ms idle timeout: marked busy, the run goes on (the
    // wait's own timeout is the caller's business) and needs no periodic heartbeat.
    let run = |report| async move {
        Pipeline::builder()
            .idle_timeout(Some(Duration::from_millis(100)))
            .then(Slow {
                step: Duration::from_secs(2),
                count: 1,
                report,
            })
            .build()
            .unwrap()
            .execute_sync(RunData::default(), [])
            .await
    };
    assert_eq!(run(Report::Busy).await.unwrap().text, "done");
    let failure = run(Report::Elements).await.unwrap_err();
    assert!(
        matches!(failure.error, PipelineError::IdleTimeout(_)),
        "{}",
        failure.error
    );
}

#[tokio::test(start_paused = true)]
async fn execution_timeout_is_a_hard_ceiling() {
    let pipeline = Pipeline::builder()
        .execution_timeout(Duration::from_millis(250))
        .then(Slow {
            step: Duration::from_millis(50),
            count: 100,
            report: Report::Elements,
        })
        .build()
        .unwrap();
    let failure = pipeline
        .execute_sync(RunData::default(), [])
        .await
        .unwrap_err();
    assert!(matches!(failure.error, PipelineError::ExecutionTimeout(_)));
    // What arrived before the timeout is kept.
    assert!(
        failure.partial.elements >= 3,
        "{}",
        failure.partial.elements
    );
}

#[tokio::test]
async fn base_metadata_is_merged_into_every_element_and_the_element_wins() {
    let base = json!({"tenant": "acme", "region": "eu"})
        .as_object()
        .cloned()
        .unwrap();
    let pipeline = Pipeline::builder()
        .base_metadata(base)
        .then(stages::inspect("check", |e: &Element| {
            // Input elements carry the base metadata inside the pipeline too.
            assert_eq!(e.meta.attribute("tenant"), Some(&json!("acme")));
        }))
        .then(stages::flat_map("add", |e: Element| {
            // A stage-produced element without attributes.
            [e, Element::text("made-here")]
        }))
        .build()
        .unwrap();
    let (elements, result) = pipeline
        .execute(
            RunData::default(),
            futures_util::stream::iter([Element::text("own").with_attribute("region", "us")]),
        )
        .unwrap()
        .finish()
        .await;
    result.unwrap();
    assert_eq!(elements.len(), 2);
    assert_eq!(
        elements[0].meta.attribute("region"),
        Some(&json!("us")),
        "element wins"
    );
    assert_eq!(elements[0].meta.attribute("tenant"), Some(&json!("acme")));
    assert_eq!(elements[1].meta.attribute("region"), Some(&json!("eu")));
    assert_eq!(elements[1].meta.attribute("tenant"), Some(&json!("acme")));
}

#[tokio::test]
async fn execute_sync_collects_messages_response_usage_and_errors() {
    let pipeline = Pipeline::builder()
        .then(stages::flat_map("model", |e: Element| {
            let mut answer = Message::assistant(format!(
                "echo: {}",
                e.as_message().map(Message::text).unwrap_or_default()
            ));
            answer.usage = Some(Usage::new(10, 3));
            vec![
                e,
                Element::text("echo: "),
                Element::error("model", "slow upstream"),
                Element::message(answer),
            ]
        }))
        .build()
        .unwrap();
    let mut history = Message::assistant("earlier");
    history.usage = Some(Usage::new(100, 100));
    let result = pipeline
        .execute_sync(
            RunData::default(),
            [
                Element::message(history).as_history(),
                Element::message(Message::user("hi")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(result.messages.len(), 4);
    assert_eq!(result.response.as_ref().unwrap().text(), "echo: hi");
    // History is not counted again.
    assert_eq!(result.usage, Usage::new(20, 6));
    assert_eq!(result.errors.len(), 2);
    assert_eq!(result.errors[0].message, "slow upstream");
    assert_eq!(result.text, "echo: echo: ");
}

#[tokio::test]
async fn a_failed_run_keeps_what_was_already_produced() {
    let pipeline = Pipeline::builder()
        .then(stages::passthrough("in"))
        .then(Fails { after: 2 })
        .build()
        .unwrap();
    let failure = pipeline
        .execute_sync(
            RunData::default(),
            [
                Element::message(Message::user("one")),
                Element::message(Message::assistant("two")),
                Element::message(Message::user("three")),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(failure.partial.messages.len(), 2);
    assert_eq!(failure.partial.response.unwrap().text(), "two");
}

#[tokio::test]
async fn routers_pick_targets_and_broadcast_control() {
    let pipeline = Pipeline::builder()
        .stage(stages::predicate_router(
            "route",
            [("numbers", |e: &Element| {
                e.as_text().is_some_and(|t| t.parse::<i32>().is_ok())
            })],
            Some("words"),
        ))
        .stage(stages::map("numbers", |e: Element| {
            Ok(e.with_attribute("to", "numbers"))
        }))
        .stage(stages::map("words", |e: Element| {
            Ok(e.with_attribute("to", "words"))
        }))
        .stage(stages::merge("join"))
        .branch("route", ["numbers", "words"])
        .merge(["numbers", "words"], "join")
        .build()
        .unwrap();
    let (elements, result) = pipeline
        .execute(
            RunData::default(),
            futures_util::stream::iter(vec![
                Element::text("1"),
                Element::text("one"),
                Element::end_of_turn(),
            ]),
        )
        .unwrap()
        .finish()
        .await;
    result.unwrap();
    let routed = |text: &str| {
        elements
            .iter()
            .find(|e| e.as_text() == Some(text))
            .and_then(|e| e.meta.attribute("to").cloned())
    };
    assert_eq!(routed("1"), Some(json!("numbers")));
    assert_eq!(routed("one"), Some(json!("words")));
    assert_eq!(
        elements
            .iter()
            .filter(|e| e.kind_name() == "end_of_turn")
            .count(),
        2,
        "control elements reach every branch"
    );
}

async fn distribution(router: stages::Router, n: usize) -> (usize, usize) {
    let pipeline = Pipeline::builder()
        .stage(router)
        .stage(stages::map("a", |e: Element| {
            Ok(e.with_attribute("to", "a"))
        }))
        .stage(stages::map("b", |e: Element| {
            Ok(e.with_attribute("to", "b"))
        }))
        .stage(stages::merge("join"))
        .branch("r", ["a", "b"])
        .merge(["a", "b"], "join")
        .build()
        .unwrap();
    let input: Vec<Element> = (0..n)
        .map(|i| Element::text(format!("k{}", i % 7)))
        .collect();
    let (elements, result) = pipeline
        .execute(RunData::default(), futures_util::stream::iter(input))
        .unwrap()
        .finish()
        .await;
    result.unwrap();
    let a = elements
        .iter()
        .filter(|e| e.meta.attribute("to") == Some(&json!("a")))
        .count();
    (a, elements.len() - a)
}

#[tokio::test]
async fn round_robin_weighted_hash_and_broadcast_routers() {
    assert_eq!(distribution(stages::round_robin("r"), 100).await, (50, 50));
    assert_eq!(
        distribution(stages::weighted("r", [("a", 3), ("b", 1)]), 100).await,
        (75, 25)
    );
    assert_eq!(distribution(stages::broadcast("r"), 10).await, (10, 10));
    // Hash: equal keys go to the same branch every time.
    let pipeline_for_keys = distribution(
        stages::hash_router("r", |e: &Element| e.as_text().map(str::to_owned)),
        70,
    )
    .await;
    assert_eq!(
        pipeline_for_keys.0 % 10,
        0,
        "each of the 7 keys (10 each) goes one way: {pipeline_for_keys:?}"
    );
}

#[tokio::test]
async fn a_router_naming_a_missing_branch_fails_clearly() {
    let pipeline = Pipeline::builder()
        .then(stages::predicate_router(
            "r",
            [("ghost", |_: &Element| true)],
            None,
        ))
        .then(stages::passthrough("real"))
        .build()
        .unwrap();
    let failure = pipeline
        .execute_sync(RunData::default(), [Element::text("x")])
        .await
        .unwrap_err();
    assert_eq!(
        ErrorChain(&failure).to_string(),
        "stage `r` failed: router `r` has no edge to `ghost` (its targets: real)"
    );
}

#[tokio::test]
async fn metrics_count_by_kind() {
    let (metrics, handle) = stages::metrics("metrics");
    let pipeline = Pipeline::builder()
        .then(stages::passthrough("a"))
        .then(metrics)
        .then(stages::debug("tail"))
        .build()
        .unwrap();
    pipeline
        .execute_sync(
            RunData::default(),
            [
                Element::text("x"),
                Element::text("y"),
                Element::message(Message::user("m")),
                Element::error("a", "e"),
            ],
        )
        .await
        .unwrap();
    let snap = handle.snapshot();
    assert_eq!(snap.elements, 4);
    assert_eq!(snap.by_kind["text"], 2);
    assert_eq!(snap.by_kind["message"], 1);
    assert_eq!(snap.errors, 1);
    assert!(snap.min_latency.unwrap() <= snap.max_latency.unwrap());
    assert!(snap.mean_latency().is_some());
}

#[tokio::test]
async fn one_pipeline_runs_concurrently_with_separate_turn_contexts() {
    let pipeline = Pipeline::builder()
        .then(stages::map_async("tag", |e: Element| async move {
            tokio::task::yield_now().await;
            Ok(e)
        }))
        .then(TagSession)
        .build()
        .unwrap();
    let mut runs = Vec::new();
    for i in 0..20 {
        let p = pipeline.clone();
        runs.push(tokio::spawn(async move {
            p.execute_sync(RunData::for_session(format!("s{i}")), [Element::text("x")])
                .await
                .unwrap()
                .text
        }));
    }
    for (i, run) in runs.into_iter().enumerate() {
        assert_eq!(run.await.unwrap(), format!("s{i}"));
    }
}

/// Replaces text with the run's session id.
struct TagSession;

impl Stage for TagSession {
    fn name(&self) -> &str {
        "session"
    }

    async fn run(
        &self,
        cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while input.recv().await.is_some() {
            let session = cx.run().read().session_id.clone().unwrap_or_default();
            output.send(Element::text(session)).await?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_grace_period_then_cancels() {
    let live = Live::default();
    let pipeline = forever_pipeline(&live);
    // A quick run finishes within the grace period.
    let quick = pipeline.clone();
    let quick_run = tokio::spawn(async move { quick.execute_sync(RunData::default(), []).await });
    let (input, execution) = pipeline.start(RunData::default()).unwrap();
    input.send(Element::text("x")).await.unwrap();
    let (_output, handle) = execution.into_parts();
    let started = std::time::Instant::now();
    pipeline
        .shutdown_with_grace(Duration::from_millis(150))
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "waited the grace period"
    );
    assert_eq!(pipeline.active_runs(), 0);
    assert_eq!(live.count(), 0);
    assert!(matches!(handle.wait().await, Err(PipelineError::Cancelled)));
    // The quick run has no input and never ends on its own either (Forever), so it was
    // cancelled too.
    assert!(quick_run.await.unwrap().is_err());
    // No new runs after shutdown.
    assert!(matches!(
        pipeline.start(RunData::default()),
        Err(PipelineError::ShuttingDown)
    ));
}

/// Records what reaches it, slowly (like a save stage writing to a database).
struct SlowRecorder {
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Stage for SlowRecorder {
    fn name(&self) -> &str {
        "save"
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while let Some(e) = input.recv().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.seen
                .lock()
                .unwrap()
                .push(e.as_text().unwrap_or_default().to_owned());
            output.send(e).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn after_a_failure_downstream_stages_drain_what_they_received_and_upstream_stops() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let live = Live::default();
    let pipeline = Pipeline::builder()
        .stage(Forever {
            name: "source",
            live: live.clone(),
        })
        .stage(Fails { after: 2 })
        .stage(SlowRecorder {
            seen: Arc::clone(&seen),
        })
        .chain(["source", "fails", "save"])
        .build()
        .unwrap();
    let input: Vec<Element> = (0..5).map(|i| Element::text(i.to_string())).collect();
    let failure = pipeline
        .execute_sync(RunData::default(), input)
        .await
        .unwrap_err();
    assert!(
        matches!(failure.error, PipelineError::StageFailed { ref stage, .. } if stage == "fails")
    );
    // What the failed stage forwarded before failing was still recorded downstream.
    assert_eq!(*seen.lock().unwrap(), ["0", "1"]);
    assert_eq!(failure.partial.text, "01");
    assert_eq!(live.count(), 0, "the upstream stage was cancelled");
}

#[test]
fn a_run_dropped_with_its_runtime_reports_it_was_lost_not_done() {
    let live = Live::default();
    let pipeline = forever_pipeline(&live);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (input, output, handle) = runtime.block_on(async {
        let (input, execution) = pipeline.start(RunData::default()).unwrap();
        input.send(Element::text("x")).await.unwrap();
        let (output, handle) = execution.into_parts();
        // The stage is running when the runtime goes.
        while live.count() == 0 {
            tokio::task::yield_now().await;
        }
        (input, output, handle)
    });
    drop(runtime);
    assert_eq!(
        live.count(),
        0,
        "the stage future was dropped with the runtime"
    );
    let result = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(handle.wait());
    assert!(matches!(result, Err(PipelineError::Lost)), "{result:?}");
    drop((input, output));
}

/// 20 ms of 16 kHz mono PCM16.
fn frame() -> promptkit_core::AudioFrame {
    promptkit_core::AudioFrame::new(vec![0_u8; 640], promptkit_core::AudioFormat::PCM16_16K_MONO)
}

/// Speaks a turn per end-of-turn element: `frames` audio frames of 20 ms, stamped with the
/// turn and the run's interrupt epoch when the answer starts, as fast as the channel takes
/// them; it stops when the run is interrupted.
struct Speaker {
    frames: usize,
}

impl Stage for Speaker {
    fn name(&self) -> &str {
        "tts"
    }

    async fn run(
        &self,
        cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while let Some(element) = input.recv().await {
            if !matches!(element.as_control(), Some(Control::EndOfTurn)) {
                continue;
            }
            let turn = cx.run().begin_turn();
            let epoch = cx.run().epoch();
            for _ in 0..self.frames {
                if cx.run().epoch() != epoch {
                    break;
                }
                let audio = Element::audio(frame())
                    .with_turn(Some(turn))
                    .with_epoch(epoch);
                output.send(audio).await?;
            }
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_overtakes_queued_audio_and_the_next_turn_flows() {
    // 2 s of audio fits in the two edges toward the consumer (50 frames each), which plays
    // in real time: without the epoch, the interrupt would wait behind all of it.
    let pipeline = Pipeline::builder()
        .channel_capacity(50)
        .then(Speaker { frames: 200 })
        .then(stages::passthrough("pacer"))
        .build()
        .unwrap();
    let (input, execution) = pipeline.start(RunData::default()).unwrap();
    let (mut output, handle) = execution.into_parts();
    input.send(Element::end_of_turn()).await.unwrap();

    let mut played = 0;
    while played < 10 {
        let element = output.recv().await.unwrap();
        if element.as_audio().is_some() {
            assert_eq!(element.meta.turn_id, Some(1));
            played += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // By now both edges are full of the first answer's audio.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let interrupt = input.interrupt(Interrupt::of_turn(1)).await.unwrap();
    assert_eq!(interrupt.epoch, 1);
    input.send(Element::end_of_turn()).await.unwrap();

    let first = output.recv().await.unwrap();
    assert_eq!(
        first.as_control(),
        Some(&Control::Interrupt(interrupt)),
        "the interrupt is the first thing the consumer sees: {}",
        first.kind_name()
    );
    let mut next_turn = 0;
    while next_turn < 20 {
        let element = output.recv().await.unwrap();
        if element.as_audio().is_some() {
            assert_eq!(
                element.meta.turn_id,
                Some(2),
                "no frame of the interrupted answer follows the interrupt"
            );
            next_turn += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        } else {
            assert!(
                !matches!(element.as_control(), Some(Control::Interrupt(_))),
                "the in-band marker of an interrupt already surfaced is not repeated"
            );
        }
    }
    drop(input);
    drop(output);
    let _ = handle.wait().await;
}

/// Never reads its input; sends `count` elements with `try_send` and reports what happened.
struct Eager {
    count: usize,
    results: Arc<std::sync::Mutex<Vec<&'static str>>>,
}

impl Stage for Eager {
    fn name(&self) -> &str {
        "eager"
    }

    async fn run(
        &self,
        _cx: StageContext,
        _input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        for i in 0..self.count {
            let outcome = match output.try_send(Element::text(i.to_string())) {
                Ok(()) => "sent",
                Err(TrySendError::Full(e)) => {
                    assert_eq!(e.as_text(), Some(i.to_string().as_str()), "returned whole");
                    "full"
                }
                Err(_) => "closed",
            };
            self.results.lock().unwrap().push(outcome);
        }
        Ok(())
    }
}

#[tokio::test]
async fn try_send_drops_instead_of_waiting_when_a_channel_is_full() {
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pipeline = Pipeline::builder()
        .channel_capacity(3)
        .then(Eager {
            count: 5,
            results: Arc::clone(&results),
        })
        .build()
        .unwrap();
    let (input, execution) = pipeline.start(RunData::default()).unwrap();
    let (mut output, handle) = execution.into_parts();
    // Nobody reads the output while the stage sends: the stage never waits.
    tokio::time::timeout(Duration::from_secs(5), async {
        while results.lock().unwrap().len() < 5 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("try_send never waits");
    assert_eq!(
        *results.lock().unwrap(),
        ["sent", "sent", "sent", "full", "full"]
    );
    let mut received = Vec::new();
    while let Some(e) = output.recv().await {
        received.extend(e.as_text().map(str::to_owned));
    }
    assert_eq!(received, ["0", "1", "2"]);
    handle.wait().await.unwrap();

    // The run's input too: the root stage above never reads, so its channel fills.
    let full = Pipeline::builder()
        .channel_capacity(2)
        .then(Forever {
            name: "forever",
            live: Live::default(),
        })
        .build()
        .unwrap();
    let (input2, execution) = full.start(RunData::default()).unwrap();
    // The start signal took one slot; the stage forwards it and then blocks on nothing: give
    // it a moment, then fill the channel.
    tokio::task::yield_now().await;
    let mut outcomes = Vec::new();
    for i in 0..4 {
        outcomes.push(match input2.try_send(Element::text(i.to_string())) {
            Ok(()) => "sent",
            Err(TrySendError::Full(_)) => "full",
            Err(_) => "closed",
        });
    }
    assert!(outcomes.contains(&"full"), "{outcomes:?}");
    assert!(!outcomes.contains(&"closed"), "{outcomes:?}");
    execution.handle().cancel();
    drop((input, input2));
}

/// Spawns a helper that never ends on its own and counts its drop.
struct Spawner {
    dropped: Arc<AtomicUsize>,
    spawned: Arc<tokio::sync::Notify>,
}

struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Stage for Spawner {
    fn name(&self) -> &str {
        "spawner"
    }

    async fn run(
        &self,
        cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        let guard = Dropped(Arc::clone(&self.dropped));
        let helper = cx.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        drop(helper);
        self.spawned.notify_one();
        while let Some(e) = input.recv().await {
            output.send(e).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_stage_helper_task_ends_with_its_run() {
    for cancel in [false, true] {
        let dropped = Arc::new(AtomicUsize::new(0));
        let spawned = Arc::new(tokio::sync::Notify::new());
        let pipeline = Pipeline::builder()
            .then(Spawner {
                dropped: Arc::clone(&dropped),
                spawned: Arc::clone(&spawned),
            })
            .build()
            .unwrap();
        let (input, execution) = pipeline.start(RunData::default()).unwrap();
        spawned.notified().await;
        assert_eq!(dropped.load(Ordering::SeqCst), 0, "the helper runs");
        let (output, handle) = execution.into_parts();
        if cancel {
            handle.cancel();
        } else {
            drop(input);
        }
        let mut output = output;
        while output.recv().await.is_some() {}
        let _ = handle.wait().await;
        // The abort has been requested by the time the run reports; let the runtime drop it.
        tokio::time::timeout(Duration::from_secs(5), async {
            while dropped.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the helper outlived its run (cancel: {cancel})"));
    }
}

#[tokio::test]
async fn a_shutdown_closes_live_inputs_and_lets_stages_finish() {
    let pipeline = Pipeline::builder()
        .then(stages::passthrough("echo"))
        .build()
        .unwrap();
    let (input, execution) = pipeline.start(RunData::default()).unwrap();
    input.send(Element::text("queued")).await.unwrap();
    let (mut output, handle) = execution.into_parts();
    // The caller still holds its sender: only the shutdown can end the input.
    let shutdown = tokio::spawn({
        let pipeline = pipeline.clone();
        async move { pipeline.shutdown_with_grace(Duration::from_secs(30)).await }
    });
    let mut texts = Vec::new();
    while let Some(e) = output.recv().await {
        texts.extend(e.as_text().map(str::to_owned));
    }
    assert_eq!(texts, ["queued"], "what was queued is still delivered");
    handle
        .wait()
        .await
        .expect("the run ended cleanly, not cancelled");
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("the shutdown did not need its grace period")
        .unwrap();
    assert!(input.send(Element::text("late")).await.is_err());
}
