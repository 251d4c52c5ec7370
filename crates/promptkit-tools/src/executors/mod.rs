//! Executors: where tools run.

mod function;
mod mock;
mod subprocess;

pub use function::FunctionTool;
pub use mock::{MockConfig, MockExecutor};
pub use subprocess::{SubprocessConfig, SubprocessExecutor};
