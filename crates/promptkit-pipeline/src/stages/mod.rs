//! Built-in generic stages: pass-through, closures, routers, merge, metrics, debug and
//! recording.

mod closure;
mod observe;
mod recording;
mod router;

pub use closure::{
    FilterMapStage, FilterStage, FlatMapStage, InspectStage, MapAsyncStage, MapStage, PassThrough,
    filter, filter_map, flat_map, inspect, map, map_async, passthrough,
};
pub use observe::{Debug, Merge, Metrics, MetricsHandle, MetricsSnapshot, debug, merge, metrics};
pub use recording::{RecordedElement, Recording, recording};
pub use router::{
    Router, RoutingStrategy, broadcast, hash_router, predicate_router, round_robin, weighted,
};
