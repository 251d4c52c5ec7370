//! Events on the bus, the JSON Lines store, recording and replay.

use std::time::Duration;

use promptkit_core::ErrorChain;
use promptkit_core::Message;
use promptkit_pipeline::events::{EventBus, EventKind, EventStore, Replay, ReplaySpeed};
use promptkit_pipeline::stages::{self, RecordedElement};
use promptkit_pipeline::{
    Element, Pipeline, RunData, Stage, StageContext, StageError, StageInput, StageOutput,
};

struct Boom;

impl Stage for Boom {
    fn name(&self) -> &str {
        "boom"
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        _output: StageOutput,
    ) -> Result<(), StageError> {
        input.recv().await;
        Err(StageError::new("exploded"))
    }
}

#[tokio::test]
async fn lifecycle_events_with_a_monotonic_per_run_sequence() {
    let bus = EventBus::new();
    let mut sub = bus.subscribe();
    let pipeline = Pipeline::builder()
        .events(bus.clone())
        .then(stages::passthrough("a"))
        .then(stages::passthrough("b"))
        .build()
        .unwrap();
    pipeline
        .execute_sync(RunData::for_session("s1"), [Element::text("x")])
        .await
        .unwrap();
    let events = sub.drain();
    let types: Vec<&str> = events.iter().map(|e| e.data.type_name()).collect();
    assert_eq!(types.first(), Some(&"pipeline.started"));
    assert_eq!(types.last(), Some(&"pipeline.completed"));
    assert_eq!(types.iter().filter(|t| **t == "stage.started").count(), 2);
    assert_eq!(types.iter().filter(|t| **t == "stage.completed").count(), 2);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e.session_id.as_deref() == Some("s1")));
    assert!(events.iter().all(|e| e.run_id == events[0].run_id));
}

#[tokio::test]
async fn a_failing_stage_emits_stage_and_pipeline_failed() {
    let bus = EventBus::new();
    let mut sub = bus.subscribe();
    let pipeline = Pipeline::builder()
        .events(bus.clone())
        .then(Boom)
        .build()
        .unwrap();
    let failure = pipeline
        .execute_sync(RunData::default(), [Element::text("x")])
        .await
        .unwrap_err();
    assert_eq!(
        ErrorChain(&failure).to_string(),
        "stage `boom` failed: exploded"
    );
    let events = sub.drain();
    assert!(events.iter().any(|e| matches!(&e.data,
        EventKind::StageFailed { stage, error, .. } if stage == "boom" && error == "exploded")));
    assert!(events.iter().any(|e| matches!(&e.data,
        EventKind::PipelineFailed { error, .. } if error == "stage `boom` failed: exploded")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_recorded_session_reproduces_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path()).unwrap();
    let bus = EventBus::new();
    let recorder = store.record(bus.subscribe());
    let mut live = bus.subscribe();
    let pipeline = Pipeline::builder()
        .events(bus.clone())
        .then(stages::passthrough("a"))
        .then(stages::map("b", Ok))
        .build()
        .unwrap();
    for turn in 0..3 {
        pipeline
            .execute_sync(
                RunData::for_session("session/../../1"),
                [Element::message(Message::user(format!("turn {turn}")))],
            )
            .await
            .unwrap();
    }
    drop(pipeline);
    drop(bus);
    let written = recorder.await.unwrap().unwrap();
    let original: Vec<_> = live.drain().into_iter().map(|e| (*e).clone()).collect();
    assert_eq!(written as usize, original.len());
    assert_eq!(store.sessions().unwrap(), ["session/../../1"]);
    assert!(store.path_for("session/../../1").starts_with(dir.path()));

    let replay = Replay::from_store(&store, "session/../../1").unwrap();
    assert_eq!(replay.events(), original.as_slice());
    let bus = EventBus::new();
    let mut sub = bus.subscribe();
    replay
        .speed(ReplaySpeed::Scaled(1000.0))
        .publish_to(&bus)
        .await;
    let replayed: Vec<_> = sub.drain().into_iter().map(|e| (*e).clone()).collect();
    assert_eq!(
        replayed, original,
        "replay reproduces every event, in order, unchanged"
    );
}

#[tokio::test(start_paused = true)]
async fn replay_keeps_the_original_timing_scaled() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path()).unwrap();
    let mut events = Vec::new();
    for (i, ms) in [0_i64, 1000, 3000].into_iter().enumerate() {
        events.push(promptkit_pipeline::events::Event {
            seq: i as u64 + 1,
            at: promptkit_core::Timestamp::from_unix_millis(1_700_000_000_000 + ms).unwrap(),
            run_id: "r".into(),
            session_id: Some("s".into()),
            turn_id: None,
            data: EventKind::Custom {
                name: format!("e{i}"),
                data: serde_json::Value::Null,
            },
        });
    }
    for e in &events {
        store.append(e).unwrap();
    }
    let started = tokio::time::Instant::now();
    let mut at = Vec::new();
    Replay::from_store(&store, "s")
        .unwrap()
        .speed(ReplaySpeed::Scaled(2.0))
        .play(|_| at.push(started.elapsed()))
        .await;
    assert_eq!(
        at,
        [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_millis(1500)
        ]
    );
}

#[tokio::test]
async fn a_corrupt_event_file_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path()).unwrap();
    std::fs::write(store.path_for("s"), "{\"seq\":1}\nnot json\n").unwrap();
    let err = store.load("s").unwrap_err();
    assert!(
        err.to_string().contains("s.jsonl:1: not a valid event"),
        "{err}"
    );
    assert!(store.load("missing").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_stage_writes_elements_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = EventStore::open(dir.path()).unwrap();
    let pipeline = Pipeline::builder()
        .then(stages::recording("recording_input", store.clone()))
        .then(stages::passthrough("work"))
        .build()
        .unwrap();
    let result = pipeline
        .execute_sync(
            RunData::for_session("rec"),
            [
                Element::message(Message::user("hello")),
                Element::text("delta"),
                Element::end_of_turn(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(result.elements, 3, "recording forwards everything");
    let events = store.load("rec").unwrap();
    assert_eq!(events.len(), 3);
    let recorded: Vec<RecordedElement> = events
        .into_iter()
        .map(|e| match e.data {
            EventKind::ElementRecorded { stage, element } => {
                assert_eq!(stage, "recording_input");
                element
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(
        matches!(&recorded[0], RecordedElement::Message { message, .. } if message.text() == "hello")
    );
    assert!(matches!(&recorded[1], RecordedElement::Text { text } if text == "delta"));
    assert!(
        matches!(&recorded[2], RecordedElement::Control { signal, .. } if signal == "end_of_turn")
    );
}
