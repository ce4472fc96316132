//! Compiled providers: what a route sends its requests to.

pub mod demo;
pub mod endpoints;
pub mod openai;
pub mod vertex;

use std::sync::Arc;

pub use demo::DemoProvider;
pub use openai::OpenAiProvider;
pub use vertex::provider::VertexProvider;

/// A provider ready to serve, shared by every route that names it.
#[derive(Clone, Debug)]
pub enum Provider {
    Openai(Arc<OpenAiProvider>),
    Vertex(Arc<VertexProvider>),
    Demo(Arc<DemoProvider>),
}

impl Provider {
    /// The `gen_ai.provider.name` of this provider's answers.
    pub fn genai_name(&self) -> &'static str {
        match self {
            Provider::Openai(provider) => provider.genai_name,
            Provider::Vertex(_) => "gcp.vertex_ai",
            Provider::Demo(_) => "tollgate.demo",
        }
    }

    /// The provider's name in the config.
    pub fn name(&self) -> &str {
        match self {
            Provider::Openai(provider) => &provider.name,
            Provider::Vertex(provider) => &provider.name,
            Provider::Demo(provider) => &provider.name,
        }
    }

    /// The connections of a provider reached over the network: its endpoints, their health
    /// and its static headers.
    pub fn connections(&self) -> Option<&OpenAiProvider> {
        match self {
            Provider::Openai(provider) => Some(provider),
            Provider::Vertex(provider) => Some(&provider.upstream),
            Provider::Demo(_) => None,
        }
    }
}
