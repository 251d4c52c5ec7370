//! A long session on one run: 205 turns of a continuous provider stage, measuring the
//! runtime's own work per turn (CPU time of the single runtime thread, allocations and
//! bytes allocated) around turn 10 and around turn 200. A session must not get slower as
//! its conversation grows: nothing may copy or scan the history per turn.
//!
//! The model answers from memory without reading the request (encoding the request body,
//! which carries the history by nature, is the provider's and is not measured here).
//!
//! `cargo bench -p promptkit-pipeline --bench session`

#![allow(clippy::print_stdout, reason = "the benchmark's report is its output")]

use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

use cpu_time::ThreadTime;
use promptkit_core::{
    BoxFuture, EventStream, FinishReason, Message, Provider, ProviderError, ProviderRequest,
    ProviderResponse, StreamEvent, Usage,
};
use promptkit_pipeline::provider::{ProviderStage, ProviderStageConfig, TurnMode};
use promptkit_pipeline::{Control, Element, Pipeline, RunData};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const TURNS: usize = 205;
const SESSIONS: usize = 7;

/// Answers every request with the same short streamed text, without reading it.
#[derive(Debug)]
struct Fixed;

fn answer() -> Vec<Result<StreamEvent, ProviderError>> {
    ["Sure, ", "here is ", "the answer."]
        .into_iter()
        .map(|t| Ok(StreamEvent::TextDelta { text: t.into() }))
        .chain([
            Ok(StreamEvent::Usage {
                usage: Usage::new(10, 5),
            }),
            Ok(StreamEvent::Finish {
                reason: FinishReason::Stop,
            }),
        ])
        .collect()
}

impl Provider for Fixed {
    fn id(&self) -> &str {
        "fixed"
    }

    fn model(&self) -> &str {
        "fixed-1"
    }

    fn predict<'a>(
        &'a self,
        _request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<ProviderResponse, ProviderError>> {
        Box::pin(async {
            Ok(ProviderResponse {
                message: Message::assistant("Sure, here is the answer."),
                model: None,
                served_by: None,
                latency: Duration::ZERO,
            })
        })
    }

    fn stream<'a>(
        &'a self,
        _request: &'a ProviderRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async {
            let events: EventStream = Box::pin(futures_util::stream::iter(answer()));
            Ok(events)
        })
    }
}

/// Per turn: CPU time (ns), allocations, bytes allocated.
type Turn = (u128, usize, usize);

async fn session() -> Vec<Turn> {
    let config = ProviderStageConfig {
        mode: TurnMode::Continuous,
        ..ProviderStageConfig::default()
    };
    let pipeline = Pipeline::builder()
        .then(ProviderStage::new(Arc::new(Fixed)).with_config(config))
        .build()
        .expect("pipeline");
    let (input, execution) = pipeline.start(RunData::for_session("long")).expect("start");
    let (mut output, handle) = execution.into_parts();
    let mut turns = Vec::with_capacity(TURNS);
    for n in 0..TURNS {
        let region = Region::new(GLOBAL);
        let started = ThreadTime::now();
        input
            .send(Element::message(Message::user(format!("question {n}"))))
            .await
            .expect("send");
        input.send(Element::end_of_turn()).await.expect("send");
        while let Some(element) = output.recv().await {
            if matches!(element.as_control(), Some(Control::EndOfTurn)) {
                break;
            }
        }
        let cpu = started.elapsed().as_nanos();
        let stats = region.change();
        turns.push((cpu, stats.allocations, stats.bytes_allocated));
    }
    drop(input);
    while output.recv().await.is_some() {}
    handle.wait().await.expect("session");
    turns
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The medians of turns `around - 5 .. around + 5` (1-based), over every session.
fn window(sessions: &[Vec<Turn>], around: usize) -> (f64, f64, f64) {
    let turns = || {
        sessions
            .iter()
            .flat_map(move |s| s[around - 6..around + 4].iter().copied())
    };
    (
        median(turns().map(|t| t.0 as f64 / 1000.0).collect()),
        median(turns().map(|t| t.1 as f64).collect()),
        median(turns().map(|t| t.2 as f64).collect()),
    )
}

fn main() {
    // `cargo test --benches` runs benches once with `--bench` absent: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sessions: Vec<Vec<Turn>> = (0..if quick { 1 } else { SESSIONS })
        .map(|_| runtime.block_on(session()))
        .collect();
    let (cpu10, allocs10, bytes10) = window(&sessions, 10);
    let (cpu200, allocs200, bytes200) = window(&sessions, 200);
    println!(
        "long session: {TURNS} turns on one run, {} sessions, medians of turns 5-14 and 195-204",
        sessions.len()
    );
    println!("| per turn | around turn 10 | around turn 200 | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| CPU µs | {cpu10:.1} | {cpu200:.1} | {:.2}x |",
        cpu200 / cpu10
    );
    println!(
        "| allocations | {allocs10:.0} | {allocs200:.0} | {:.2}x |",
        allocs200 / allocs10
    );
    println!(
        "| bytes allocated | {bytes10:.0} | {bytes200:.0} | {:.2}x |",
        bytes200 / bytes10
    );
}
