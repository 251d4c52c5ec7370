//! Stages built from closures.

use std::future::Future;

use crate::element::Element;
use crate::{Stage, StageContext, StageError, StageInput, StageKind, StageOutput};

/// Forwards every element unchanged.
#[derive(Debug, Clone)]
pub struct PassThrough {
    name: String,
}

/// A stage that forwards every element unchanged.
pub fn passthrough(name: impl Into<String>) -> PassThrough {
    PassThrough { name: name.into() }
}

impl Stage for PassThrough {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> StageKind {
        StageKind::Observe
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while let Some(e) = input.recv().await {
            output.send(e).await?;
        }
        Ok(())
    }
}

/// See [`map`].
#[derive(Debug, Clone)]
pub struct MapStage<F> {
    name: String,
    f: F,
}

/// A stage applying `f` to every element (control elements included). An `Err` from `f` is
/// fatal for the run.
pub fn map<F>(name: impl Into<String>, f: F) -> MapStage<F>
where
    F: Fn(Element) -> Result<Element, StageError> + Send + Sync + 'static,
{
    MapStage {
        name: name.into(),
        f,
    }
}

impl<F> Stage for MapStage<F>
where
    F: Fn(Element) -> Result<Element, StageError> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while let Some(e) = input.recv().await {
            output.send((self.f)(e)?).await?;
        }
        Ok(())
    }
}

/// See [`map_async`].
#[derive(Debug, Clone)]
pub struct MapAsyncStage<F> {
    name: String,
    f: F,
}

/// A stage applying the async function `f` to every element, one at a time, in order.
pub fn map_async<F, Fut>(name: impl Into<String>, f: F) -> MapAsyncStage<F>
where
    F: Fn(Element) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Element, StageError>> + Send + 'static,
{
    MapAsyncStage {
        name: name.into(),
        f,
    }
}

impl<F, Fut> Stage for MapAsyncStage<F>
where
    F: Fn(Element) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Element, StageError>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while let Some(e) = input.recv().await {
            output.send((self.f)(e).await?).await?;
        }
        Ok(())
    }
}

/// See [`filter`].
#[derive(Debug, Clone)]
pub struct FilterStage<F> {
    name: String,
    f: F,
}

/// A stage forwarding the elements for which `keep` is true.
pub fn filter<F>(name: impl Into<String>, keep: F) -> FilterStage<F>
where
    F: Fn(&Element) -> bool + Send + Sync + 'static,
{
    FilterStage {
        name: name.into(),
        f: keep,
    }
}

impl<F> Stage for FilterStage<F>
where
    F: Fn(&Element) -> bool + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while let Some(e) = input.recv().await {
            if (self.f)(&e) {
                output.send(e).await?;
            }
        }
        Ok(())
    }
}

/// See [`filter_map`].
#[derive(Debug, Clone)]
pub struct FilterMapStage<F> {
    name: String,
    f: F,
}

/// A stage forwarding `f(element)` when it is `Some`.
pub fn filter_map<F>(name: impl Into<String>, f: F) -> FilterMapStage<F>
where
    F: Fn(Element) -> Option<Element> + Send + Sync + 'static,
{
    FilterMapStage {
        name: name.into(),
        f,
    }
}

impl<F> Stage for FilterMapStage<F>
where
    F: Fn(Element) -> Option<Element> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while let Some(e) = input.recv().await {
            if let Some(e) = (self.f)(e) {
                output.send(e).await?;
            }
        }
        Ok(())
    }
}

/// See [`flat_map`].
#[derive(Debug, Clone)]
pub struct FlatMapStage<F> {
    name: String,
    f: F,
}

/// A stage forwarding every element `f` returns for each input element (1:N).
pub fn flat_map<F, I>(name: impl Into<String>, f: F) -> FlatMapStage<F>
where
    F: Fn(Element) -> I + Send + Sync + 'static,
    I: IntoIterator<Item = Element>,
{
    FlatMapStage {
        name: name.into(),
        f,
    }
}

impl<F, I> Stage for FlatMapStage<F>
where
    F: Fn(Element) -> I + Send + Sync + 'static,
    I: IntoIterator<Item = Element>,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while let Some(e) = input.recv().await {
            // Collect first: the iterator need not be `Send` across the awaits.
            let out: Vec<Element> = (self.f)(e).into_iter().collect();
            for e in out {
                output.send(e).await?;
            }
        }
        Ok(())
    }
}

/// See [`inspect`].
#[derive(Debug, Clone)]
pub struct InspectStage<F> {
    name: String,
    f: F,
}

/// A stage calling `f` on every element and forwarding it unchanged.
pub fn inspect<F>(name: impl Into<String>, f: F) -> InspectStage<F>
where
    F: Fn(&Element) + Send + Sync + 'static,
{
    InspectStage {
        name: name.into(),
        f,
    }
}

impl<F> Stage for InspectStage<F>
where
    F: Fn(&Element) + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> StageKind {
        StageKind::Observe
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        while let Some(e) = input.recv().await {
            (self.f)(&e);
            output.send(e).await?;
        }
        Ok(())
    }
}
