//! Executors: where tools run.

mod function;
#[cfg(feature = "http")]
mod http;
mod mock;
mod subprocess;

pub use function::FunctionTool;
#[cfg(feature = "http")]
pub(crate) use http::host_allowed;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use http::{HttpConfig, HttpExecutor, Redirects};
pub use mock::{MockConfig, MockExecutor};
pub use subprocess::{SubprocessConfig, SubprocessExecutor};
