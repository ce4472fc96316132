//! The Vertex-native client surface (what `google-genai` sends): Gemini requests in, and
//! their translation for versions that speak OpenAI (vLLM, TGI, Ollama, llama.cpp), with the
//! answers, streams and errors put back in Gemini's terms.

pub mod carried;
pub mod errors;
pub mod request;
pub mod response;
pub mod stream;

/// True when `body` is a JSON object: serde would read a struct from an array too, field by
/// position, so bodies are checked before they are read.
pub(crate) fn is_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}
