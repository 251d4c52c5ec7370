//! The elevenlabs protocol (written by its client's author).

use std::sync::Arc;

use axum::Router;

use super::Shared;

pub(crate) fn routes(_shared: Arc<Shared>) -> Router {
    Router::new()
}
