//! Compiled providers: what a route sends its requests to.

pub mod demo;
pub mod endpoints;
pub mod openai;

use std::sync::Arc;

pub use demo::DemoProvider;
pub use openai::OpenAiProvider;

/// A provider ready to serve, shared by every route that names it.
#[derive(Clone, Debug)]
pub enum Provider {
    Openai(Arc<OpenAiProvider>),
    Demo(Arc<DemoProvider>),
}
