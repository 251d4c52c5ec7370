//! Boxed future and stream aliases used by the object-safe seams.
//!
//! The seams of this crate are used as trait objects (`Arc<dyn Provider>`), so their async
//! methods return boxed futures instead of `async fn`: dynamic dispatch over `async fn` in
//! traits is not available on stable Rust. Implementors write
//! `Box::pin(async move { ... })`.

use std::future::Future;
use std::pin::Pin;

use futures_core::Stream;

/// A boxed, sendable future with a lifetime, the return type of every async seam method.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed, sendable stream with a lifetime.
pub type BoxStream<'a, T> = Pin<Box<dyn Stream<Item = T> + Send + 'a>>;

/// A boxed error that can cross thread boundaries, used as the `source` of typed errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
