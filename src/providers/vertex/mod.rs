//! Vertex AI (Gemini): translation between the OpenAI chat format and Gemini's
//! `generateContent`, both ways, and Google's error format.

pub mod contents;
pub mod credentials;
pub mod errors;
pub mod labels;
pub mod provider;
pub mod request;
pub mod response;
pub mod stream;
