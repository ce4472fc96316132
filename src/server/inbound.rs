//! The request body type of the API stack: read by the lean HTTP/1.1 server, or by hyper (h2).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1::body::{LeanBody, LeanBodyError};

pub enum InboundBody {
    /// HTTP/1.1, read by the gateway's own connection loop.
    Lean(LeanBody),
    /// HTTP/2, read by hyper.
    Hyper(Incoming),
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error(transparent)]
    Lean(#[from] LeanBodyError),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

impl From<Incoming> for InboundBody {
    fn from(body: Incoming) -> Self {
        InboundBody::Hyper(body)
    }
}

impl Body for InboundBody {
    type Data = Bytes;
    type Error = InboundError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InboundError>>> {
        match self.get_mut() {
            InboundBody::Lean(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            InboundBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            InboundBody::Lean(body) => body.is_end_stream(),
            InboundBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            InboundBody::Lean(body) => body.size_hint(),
            InboundBody::Hyper(body) => body.size_hint(),
        }
    }
}
