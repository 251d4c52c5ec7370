//! Building and validating a pipeline's DAG.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::events::EventBus;
use crate::pipeline::{Edge, Pipeline, Topology};
use crate::{DynStage, Stage};

/// Default capacity of every channel between stages.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 32;

/// Run-time settings of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Capacity of channels between stages, of the input and of the output (per edge
    /// overrides with [`PipelineBuilder::connect_with_capacity`]).
    pub channel_capacity: usize,
    /// Hard ceiling on a run's duration; `None` for no limit.
    pub execution_timeout: Option<Duration>,
    /// A run in which no stage receives, sends or reports a heartbeat for this long is
    /// cancelled; `None` disables the check. For runs of [`Pipeline::execute`].
    pub idle_timeout: Option<Duration>,
    /// The idle timeout of live runs ([`Pipeline::start`]); `None` (the default) disables it:
    /// a caller who says nothing for minutes is not a hang, and the transport that owns the
    /// session decides when it has been quiet too long.
    pub session_idle_timeout: Option<Duration>,
    /// How long [`Pipeline::shutdown`] waits for in-flight runs before cancelling them.
    pub shutdown_grace: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            execution_timeout: None,
            idle_timeout: Some(Duration::from_secs(30)),
            session_idle_timeout: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Why a pipeline could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The pipeline has no stages.
    #[error("pipeline has no stages")]
    NoStages,
    /// Two stages share a name.
    #[error("duplicate stage name `{0}`")]
    DuplicateStage(String),
    /// An edge names a stage that was never added.
    #[error("edge {from} -> {to} refers to unknown stage `{missing}`")]
    UnknownStage {
        /// Edge source.
        from: String,
        /// Edge target.
        to: String,
        /// The missing name.
        missing: String,
    },
    /// The same edge was added twice.
    #[error("duplicate edge {from} -> {to}")]
    DuplicateEdge {
        /// Edge source.
        from: String,
        /// Edge target.
        to: String,
    },
    /// The edges form a cycle; `path` lists it, first stage repeated at the end.
    #[error("cycle: {}", .path.join(" -> "))]
    Cycle {
        /// The stages of the cycle, e.g. `["a", "b", "a"]`.
        path: Vec<String>,
    },
    /// A stage has several inputs but does not accept fan-in; put a merge stage in front.
    #[error("stage `{stage}` has {} inputs ({}) but does not accept fan-in; add a merge stage", .inputs.len(), .inputs.join(", "))]
    FanInWithoutMerge {
        /// The stage.
        stage: String,
        /// Its upstream stages.
        inputs: Vec<String>,
    },
    /// A competing-consumer branch feeds a stage that has other inputs too.
    #[error("stage `{stage}` is a competing consumer of `{from}` and cannot have other inputs")]
    CompetingFanIn {
        /// The consumer.
        stage: String,
        /// Its competing source.
        from: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

#[derive(Debug, Clone)]
pub(crate) struct EdgeSpec {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) capacity: Option<usize>,
    pub(crate) competing: bool,
}

/// Builds a [`Pipeline`]: add stages, connect them, [`build`](Self::build).
///
/// ```
/// use promptkit_pipeline::{Pipeline, stages};
///
/// let pipeline = Pipeline::builder()
///     .stage(stages::passthrough("source"))
///     .stage(stages::map("left", Ok))
///     .stage(stages::map("right", Ok))
///     .stage(stages::merge("join"))
///     .branch("source", ["left", "right"]) // both branches see every element
///     .merge(["left", "right"], "join")
///     .build()?;
/// assert_eq!(pipeline.stage_names(), ["source", "left", "right", "join"]);
/// # Ok::<(), promptkit_pipeline::BuildError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct PipelineBuilder {
    stages: Vec<Arc<dyn DynStage>>,
    edges: Vec<EdgeSpec>,
    cursor: Option<String>,
    config: PipelineConfig,
    bus: Option<EventBus>,
    base_metadata: Map<String, Value>,
}

impl std::fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field(
                "stages",
                &self.stages.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("edges", &self.edges.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PipelineBuilder {
    /// An empty builder with default configuration.
    pub fn new() -> Self {
        Self {
            stages: Vec::new(),
            edges: Vec::new(),
            cursor: None,
            config: PipelineConfig::default(),
            bus: None,
            base_metadata: Map::new(),
        }
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: PipelineConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the default channel capacity.
    pub fn channel_capacity(mut self, capacity: usize) -> Self {
        self.config.channel_capacity = capacity;
        self
    }

    /// Sets the execution timeout.
    pub fn execution_timeout(mut self, timeout: Duration) -> Self {
        self.config.execution_timeout = Some(timeout);
        self
    }

    /// Sets (or disables, with `None`) the idle timeout.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Sets (or disables, with `None`) the idle timeout of live runs.
    pub fn session_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.session_idle_timeout = timeout;
        self
    }

    /// Publishes lifecycle and stage events to `bus`.
    pub fn events(mut self, bus: EventBus) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Attributes merged into every input and output element (the element's own win).
    pub fn base_metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.base_metadata = metadata;
        self
    }

    /// Adds a stage without connecting it. It becomes the cursor for [`then`](Self::then).
    pub fn stage(mut self, stage: impl Stage) -> Self {
        self.cursor = Some(Stage::name(&stage).to_owned());
        self.stages.push(Arc::new(stage));
        self
    }

    /// Adds a stage that is already shared (`Arc<dyn DynStage>`).
    pub fn stage_shared(mut self, stage: Arc<dyn DynStage>) -> Self {
        self.cursor = Some(stage.name().to_owned());
        self.stages.push(stage);
        self
    }

    /// Adds a stage and connects the previously added stage to it (a chain).
    pub fn then(self, stage: impl Stage) -> Self {
        self.then_shared(Arc::new(stage))
    }

    /// [`then`](Self::then) for a shared stage.
    pub fn then_shared(mut self, stage: Arc<dyn DynStage>) -> Self {
        let name = stage.name().to_owned();
        if let Some(prev) = self.cursor.take() {
            self.edges.push(EdgeSpec {
                from: prev,
                to: name.clone(),
                capacity: None,
                competing: false,
            });
        }
        self.stages.push(stage);
        self.cursor = Some(name);
        self
    }

    /// Connects stages already added, in order (`a -> b -> c`).
    pub fn chain<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        let names: Vec<&str> = names.into_iter().collect();
        for pair in names.windows(2) {
            self = self.connect(pair[0], pair[1]);
        }
        self
    }

    /// Adds the edge `from -> to`.
    pub fn connect(self, from: &str, to: &str) -> Self {
        self.edge(from, to, None, false)
    }

    /// Adds the edge `from -> to` with its own channel capacity.
    pub fn connect_with_capacity(self, from: &str, to: &str, capacity: usize) -> Self {
        self.edge(from, to, Some(capacity), false)
    }

    /// Broadcast fan-out: every stage in `to` receives every element `from` sends, in order.
    pub fn branch<'a>(mut self, from: &str, to: impl IntoIterator<Item = &'a str>) -> Self {
        for target in to {
            self = self.edge(from, target, None, false);
        }
        self
    }

    /// Competing consumers: each element `from` sends goes to exactly one stage in `to`,
    /// whichever asks first (work distribution).
    pub fn branch_competing<'a>(
        mut self,
        from: &str,
        to: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        for target in to {
            self = self.edge(from, target, None, true);
        }
        self
    }

    /// Fan-in: connects every stage in `from` to `into`, which must accept fan-in (for
    /// example [`stages::merge`](crate::stages::merge)).
    pub fn merge<'a>(mut self, from: impl IntoIterator<Item = &'a str>, into: &str) -> Self {
        for source in from {
            self = self.edge(source, into, None, false);
        }
        self
    }

    fn edge(mut self, from: &str, to: &str, capacity: Option<usize>, competing: bool) -> Self {
        self.edges.push(EdgeSpec {
            from: from.to_owned(),
            to: to.to_owned(),
            capacity,
            competing,
        });
        self
    }

    /// Validates the graph and builds the pipeline.
    ///
    /// # Errors
    /// A [`BuildError`] for: no stages, duplicate names, edges to unknown stages, duplicate
    /// edges, cycles (naming the path), fan-in into a stage that does not accept it, a
    /// competing consumer with other inputs, or a zero capacity.
    pub fn build(self) -> Result<Pipeline, BuildError> {
        if self.stages.is_empty() {
            return Err(BuildError::NoStages);
        }
        if self.config.channel_capacity == 0 {
            return Err(BuildError::InvalidConfig(
                "channel capacity must be at least 1".into(),
            ));
        }
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, stage) in self.stages.iter().enumerate() {
            if index.insert(stage.name(), i).is_some() {
                return Err(BuildError::DuplicateStage(stage.name().to_owned()));
            }
        }
        let mut seen = HashSet::new();
        for edge in &self.edges {
            for end in [&edge.from, &edge.to] {
                if !index.contains_key(end.as_str()) {
                    return Err(BuildError::UnknownStage {
                        from: edge.from.clone(),
                        to: edge.to.clone(),
                        missing: end.clone(),
                    });
                }
            }
            if !seen.insert((edge.from.as_str(), edge.to.as_str())) {
                return Err(BuildError::DuplicateEdge {
                    from: edge.from.clone(),
                    to: edge.to.clone(),
                });
            }
            if edge.capacity == Some(0) {
                return Err(BuildError::InvalidConfig(format!(
                    "edge {} -> {} has capacity 0",
                    edge.from, edge.to
                )));
            }
        }
        let n = self.stages.len();
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut incoming: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (e, edge) in self.edges.iter().enumerate() {
            out[index[edge.from.as_str()]].push(e);
            incoming[index[edge.to.as_str()]].push(e);
        }
        if let Some(path) = find_cycle(n, &self.edges, &index, &out) {
            return Err(BuildError::Cycle {
                path: path
                    .into_iter()
                    .map(|i| self.stages[i].name().to_owned())
                    .collect(),
            });
        }
        for (i, stage) in self.stages.iter().enumerate() {
            let ins = &incoming[i];
            if ins.len() > 1 {
                if let Some(&e) = ins.iter().find(|&&e| self.edges[e].competing) {
                    return Err(BuildError::CompetingFanIn {
                        stage: stage.name().to_owned(),
                        from: self.edges[e].from.clone(),
                    });
                }
                if !stage.accepts_fan_in() {
                    return Err(BuildError::FanInWithoutMerge {
                        stage: stage.name().to_owned(),
                        inputs: ins.iter().map(|&e| self.edges[e].from.clone()).collect(),
                    });
                }
            }
        }
        let edges = self
            .edges
            .iter()
            .map(|e| Edge {
                from: index[e.from.as_str()],
                to: index[e.to.as_str()],
                capacity: e.capacity,
                competing: e.competing,
            })
            .collect();
        Ok(Pipeline::from_parts(Topology {
            stages: self.stages,
            edges,
            outgoing: out,
            incoming,
            config: self.config,
            bus: self.bus,
            base_metadata: (!self.base_metadata.is_empty()).then(|| Arc::new(self.base_metadata)),
        }))
    }
}

/// Finds a cycle and returns its stage indices with the first repeated at the end.
fn find_cycle(
    n: usize,
    edges: &[EdgeSpec],
    index: &HashMap<&str, usize>,
    out: &[Vec<usize>],
) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark = vec![Mark::New; n];
    let mut stack: Vec<usize> = Vec::new();
    // Iterative DFS: (node, next edge position).
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        let mut frames: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Active;
        stack.push(start);
        while let Some(&mut (node, ref mut pos)) = frames.last_mut() {
            if let Some(&e) = out[node].get(*pos) {
                *pos += 1;
                let next = index[edges[e].to.as_str()];
                match mark[next] {
                    Mark::Active => {
                        let from = stack.iter().position(|&s| s == next).unwrap_or(0);
                        let mut path = stack[from..].to_vec();
                        path.push(next);
                        return Some(path);
                    }
                    Mark::New => {
                        mark[next] = Mark::Active;
                        stack.push(next);
                        frames.push((next, 0));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
                frames.pop();
            }
        }
    }
    None
}
