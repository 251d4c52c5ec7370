//! Routers: stages that send each element to one (or every) downstream branch.
//!
//! A router's targets are its outgoing edges, in the order they were added. Control elements
//! (end of turn, end of stream, interrupt, error) always go to every target, so each branch
//! sees turn boundaries.

use std::fmt;
use std::sync::Arc;

use crate::element::Element;
use crate::{OutputClosed, Stage, StageContext, StageError, StageInput, StageKind, StageOutput};

type Predicate = Arc<dyn Fn(&Element) -> bool + Send + Sync>;
type KeyFn = Arc<dyn Fn(&Element) -> Option<String> + Send + Sync>;

/// How a [`Router`] picks targets.
#[derive(Clone)]
#[non_exhaustive]
pub enum RoutingStrategy {
    /// The first route whose predicate matches; unmatched elements go to `default` (or are
    /// dropped when there is none).
    Predicate {
        /// `(target stage name, predicate)` in priority order.
        routes: Vec<(String, Predicate)>,
        /// Target for unmatched elements.
        default: Option<String>,
    },
    /// Targets in turn.
    RoundRobin,
    /// A stable target per key (FNV-1a hash of the key); elements without a key go to the
    /// first target.
    Hash(KeyFn),
    /// Targets in proportion to their weights, deterministically (smooth weighted
    /// round-robin). Targets without a weight get none.
    Weighted(Vec<(String, u32)>),
    /// Every element to every target.
    Broadcast,
}

impl fmt::Debug for RoutingStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Predicate { routes, default } => f
                .debug_struct("Predicate")
                .field("routes", &routes.iter().map(|(n, _)| n).collect::<Vec<_>>())
                .field("default", default)
                .finish(),
            Self::RoundRobin => f.write_str("RoundRobin"),
            Self::Hash(_) => f.write_str("Hash"),
            Self::Weighted(w) => f.debug_tuple("Weighted").field(w).finish(),
            Self::Broadcast => f.write_str("Broadcast"),
        }
    }
}

/// Routes elements to its downstream branches.
#[derive(Debug, Clone)]
pub struct Router {
    name: String,
    strategy: RoutingStrategy,
}

impl Router {
    /// A router with a strategy.
    pub fn new(name: impl Into<String>, strategy: RoutingStrategy) -> Self {
        Self {
            name: name.into(),
            strategy,
        }
    }
}

/// Routes by predicates: the first matching route wins.
pub fn predicate_router<'a, F>(
    name: impl Into<String>,
    routes: impl IntoIterator<Item = (&'a str, F)>,
    default: Option<&str>,
) -> Router
where
    F: Fn(&Element) -> bool + Send + Sync + 'static,
{
    Router::new(
        name,
        RoutingStrategy::Predicate {
            routes: routes
                .into_iter()
                .map(|(n, p)| (n.to_owned(), Arc::new(p) as Predicate))
                .collect(),
            default: default.map(str::to_owned),
        },
    )
}

/// Routes to each target in turn.
pub fn round_robin(name: impl Into<String>) -> Router {
    Router::new(name, RoutingStrategy::RoundRobin)
}

/// Routes by a key: equal keys always reach the same target.
pub fn hash_router<F>(name: impl Into<String>, key: F) -> Router
where
    F: Fn(&Element) -> Option<String> + Send + Sync + 'static,
{
    Router::new(name, RoutingStrategy::Hash(Arc::new(key)))
}

/// Routes in proportion to weights.
pub fn weighted<'a>(
    name: impl Into<String>,
    weights: impl IntoIterator<Item = (&'a str, u32)>,
) -> Router {
    Router::new(
        name,
        RoutingStrategy::Weighted(
            weights
                .into_iter()
                .map(|(n, w)| (n.to_owned(), w))
                .collect(),
        ),
    )
}

/// Sends every element to every target.
pub fn broadcast(name: impl Into<String>) -> Router {
    Router::new(name, RoutingStrategy::Broadcast)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn resolve(output: &StageOutput, router: &str, target: &str) -> Result<usize, StageError> {
    output.target_index(target).ok_or_else(|| {
        StageError::new(format!(
            "router `{router}` has no edge to `{target}` (its targets: {})",
            output.target_names().join(", ")
        ))
    })
}

impl Stage for Router {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> StageKind {
        StageKind::Transform
    }

    async fn run(
        &self,
        _cx: StageContext,
        mut input: StageInput,
        output: StageOutput,
    ) -> Result<(), StageError> {
        let n = output.target_count();
        // Resolve names to target indices once per run; a misnamed route is a fatal error.
        let (routes, default, weights) = match &self.strategy {
            RoutingStrategy::Predicate { routes, default } => {
                let mut resolved = Vec::with_capacity(routes.len());
                for (target, p) in routes {
                    resolved.push((resolve(&output, &self.name, target)?, Arc::clone(p)));
                }
                let default = default
                    .as_deref()
                    .map(|d| resolve(&output, &self.name, d))
                    .transpose()?;
                (resolved, default, Vec::new())
            }
            RoutingStrategy::Weighted(w) => {
                let mut resolved = Vec::with_capacity(w.len());
                for (target, weight) in w {
                    resolved.push((resolve(&output, &self.name, target)?, i64::from(*weight)));
                }
                (Vec::new(), None, resolved)
            }
            _ => (Vec::new(), None, Vec::new()),
        };
        let total_weight: i64 = weights.iter().map(|(_, w)| w).sum();
        let mut current: Vec<i64> = vec![0; weights.len()];
        let mut turn = 0_usize;

        while let Some(element) = input.recv().await {
            if n == 0 {
                continue;
            }
            if element.is_control() || matches!(self.strategy, RoutingStrategy::Broadcast) {
                output.send(element).await?;
                continue;
            }
            let target = match &self.strategy {
                RoutingStrategy::Predicate { .. } => routes
                    .iter()
                    .find(|(_, p)| p(&element))
                    .map(|(i, _)| *i)
                    .or(default),
                RoutingStrategy::RoundRobin => {
                    turn = turn.wrapping_add(1);
                    Some((turn - 1) % n)
                }
                RoutingStrategy::Hash(key) => Some(key(&element).map_or(0, |k| {
                    usize::try_from(fnv1a(k.as_bytes()) % n as u64).unwrap_or(0)
                })),
                RoutingStrategy::Weighted(_) => {
                    if total_weight <= 0 {
                        None
                    } else {
                        // Smooth weighted round-robin (as in nginx): deterministic, evenly spread.
                        let mut best = 0;
                        for (i, (_, w)) in weights.iter().enumerate() {
                            current[i] += w;
                            if current[i] > current[best] {
                                best = i;
                            }
                        }
                        current[best] -= total_weight;
                        Some(weights[best].0)
                    }
                }
                RoutingStrategy::Broadcast => None,
            };
            if let Some(i) = target {
                match output.send_to(i, element).await {
                    Ok(()) => {}
                    // One branch finishing early does not stop the others.
                    Err(OutputClosed) if !output.is_closed() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}
