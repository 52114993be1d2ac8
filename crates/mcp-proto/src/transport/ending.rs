//! Endless streams end at shutdown. A heartbeat stream or `logs -f` never finishes
//! on its own, so waiting for it is pointless: the responses of the RPCs named in
//! `ENDLESS_RPCS` end as soon as shutdown begins, with `unavailable` ("shutting
//! down") in their trailers, and the client reconnects elsewhere or later. Every
//! other RPC keeps the grace period.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::watch;
use tonic::body::Body;
use tonic::service::Routes;

use super::stopped;

/// The RPCs whose streams end at once at shutdown.
pub const ENDLESS_RPCS: &[&str] = &[
    "/mcp.master.v1.Nodes/Heartbeats",
    "/mcp.master.v1.Master/Logs",
    "/mcp.agent.v1.Agent/Logs",
];

/// Routes whose endless responses watch the shutdown signal.
#[derive(Clone)]
pub(crate) struct EndStreams {
    pub(crate) inner: Routes,
    pub(crate) endless: Arc<[&'static str]>,
    pub(crate) shutdown: watch::Receiver<bool>,
}

type Answer = Result<http::Response<Body>, std::convert::Infallible>;

impl tower_service::Service<http::Request<Body>> for EndStreams {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let endless = self.endless.contains(&request.uri().path());
        let response = self.inner.call(request);
        let shutdown = self.shutdown.clone();
        Box::pin(async move {
            let response = response.await?;
            Ok(if endless {
                response.map(|body| Body::new(Ending::new(body, shutdown)))
            } else {
                response
            })
        })
    }
}

/// A response body that ends with `unavailable` when shutdown begins.
struct Ending {
    inner: Body,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
}

impl Ending {
    fn new(inner: Body, mut shutdown: watch::Receiver<bool>) -> Ending {
        Ending {
            inner,
            stop: Box::pin(async move { stopped(&mut shutdown).await }),
            done: false,
        }
    }
}

impl HttpBody for Ending {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.stop.as_mut().poll(cx).is_ready() {
            this.done = true;
            let status = tonic::Status::unavailable("shutting down");
            let mut trailers = http::HeaderMap::new();
            let _ = status.add_header(&mut trailers);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.done = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            SizeHint::with_exact(0)
        } else {
            SizeHint::default()
        }
    }
}
