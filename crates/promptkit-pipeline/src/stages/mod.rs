//! Built-in generic stages: pass-through, closures, routers, merge, metrics, debug,
//! recording, and loading and saving conversation state.

mod closure;
mod observe;
mod recording;
mod router;
mod state;

pub use closure::{
    FilterMapStage, FilterStage, FlatMapStage, InspectStage, MapAsyncStage, MapStage, PassThrough,
    filter, filter_map, flat_map, inspect, map, map_async, passthrough,
};
pub use observe::{Debug, Merge, Metrics, MetricsHandle, MetricsSnapshot, debug, merge, metrics};
pub use recording::{RecordedElement, Recording, recording};
pub use router::{
    Router, RoutingStrategy, broadcast, hash_router, predicate_router, round_robin, weighted,
};
pub use state::{IncrementalSave, LoadedVersion, SUMMARY_METADATA_KEY, StateStoreLoad};
