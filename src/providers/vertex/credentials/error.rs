//! Why a request could not get its Vertex AI credentials, worded for the gateway's caller:
//! no message ever holds a private key, an access token or an API key.

use std::fmt;
use std::sync::Arc;

/// Whose problem a [`CredentialsError`] is, so the provider can pick the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialsErrorKind {
    /// No usable token right now, for a reason that may pass: the token endpoint or the
    /// metadata server is unreachable, slow, overloaded (429, 5xx) or answered something
    /// unreadable. The refresher keeps retrying; suggested answer: 503 with `Retry-After`.
    Unavailable,
    /// Google refused the credentials (400/401/403 from the token endpoint: a deleted or
    /// disabled key or account, a bad signature, a clock far off), or the metadata server
    /// has no service account. An operator has to act; suggested answer: 502.
    Rejected,
    /// The token source was used outside a Tokio runtime, so it could not start its
    /// refresher: a gateway bug; suggested answer: 500.
    NoRuntime,
}

/// A failure to produce credentials for an upstream request.
///
/// Cheap to clone (the message is shared): the refresher keeps the last failure and hands
/// it to every caller until a token comes back.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialsError {
    kind: CredentialsErrorKind,
    message: Arc<str>,
}

impl CredentialsError {
    pub(super) fn new(kind: CredentialsErrorKind, message: impl Into<Arc<str>>) -> Self {
        CredentialsError {
            kind,
            message: message.into(),
        }
    }

    pub(super) fn unavailable(message: impl Into<Arc<str>>) -> Self {
        Self::new(CredentialsErrorKind::Unavailable, message)
    }

    pub(super) fn rejected(message: impl Into<Arc<str>>) -> Self {
        Self::new(CredentialsErrorKind::Rejected, message)
    }

    /// Whose problem it is; see [`CredentialsErrorKind`].
    pub fn kind(&self) -> CredentialsErrorKind {
        self.kind
    }

    /// What went wrong, without secrets, fit for the caller's error body and the log.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same kind, with `context` put before the message.
    pub(super) fn context(&self, context: &str) -> Self {
        Self::new(self.kind, format!("{context}: {}", self.message))
    }
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Vertex AI credentials: {}", self.message)
    }
}

impl fmt::Debug for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsError")
            .field("kind", &self.kind)
            .field("message", &&*self.message)
            .finish()
    }
}

impl std::error::Error for CredentialsError {}

impl From<CredentialsError> for crate::error::GatewayError {
    /// Both kinds may pass over to a fallback version on another provider; a gateway bug
    /// may not.
    fn from(err: CredentialsError) -> Self {
        use crate::error::{ErrorKind, GatewayError};
        let kind = match err.kind {
            CredentialsErrorKind::Unavailable => ErrorKind::UpstreamCredentialsUnavailable,
            CredentialsErrorKind::Rejected => ErrorKind::UpstreamCredentialsRejected,
            CredentialsErrorKind::NoRuntime => {
                return GatewayError::new(ErrorKind::Internal, err.to_string());
            }
        };
        GatewayError::new(kind, err.to_string()).retryable()
    }
}
