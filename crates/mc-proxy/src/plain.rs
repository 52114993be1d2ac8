//! The two plain-HTTP listeners of proxy.toml: `metrics_listen` (Prometheus
//! text at `/metrics`) and `http_listen` (every request redirected to HTTPS,
//! but ACME HTTP-01 paths: the key authorization of a pending challenge of the
//! request's host and token, else 404).
//! Small HTTP/1.1 servers on hyper, each request answered from memory.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::challenge::Challenges;
use crate::hostname;
use crate::metrics::Metrics;

/// A plain listener's time to read a request head, and its idle limit.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

type Handler = Arc<dyn Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The `/metrics` answer.
pub fn metrics_handler(
    metrics: Arc<Metrics>,
) -> impl Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static {
    move |req| match req.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, metrics.render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "only /metrics here\n"),
    }
}

/// Redirects to `https://HOST[:https_port]/path` (308, so the method stays);
/// answers `/.well-known/acme-challenge/<token>` from `challenges`.
pub fn redirect_handler(
    https_port: u16,
    challenges: Arc<Challenges>,
) -> impl Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static {
    move |req| {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .and_then(|a| hostname::normalize(a.host()).ok());
        if let Some(token) = req
            .uri()
            .path()
            .strip_prefix("/.well-known/acme-challenge/")
        {
            let answer = host
                .as_deref()
                .filter(|_| req.method() == http::Method::GET || req.method() == http::Method::HEAD)
                .and_then(|h| challenges.http01(h, token));
            return match answer {
                Some(key_authorization) => {
                    let mut r = text(StatusCode::OK, key_authorization);
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    r
                }
                None => text(StatusCode::NOT_FOUND, "no such challenge\n"),
            };
        }
        let Some(host) = host else {
            return text(
                StatusCode::BAD_REQUEST,
                "a Host header naming the site is required\n",
            );
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let location = match https_port {
            443 => format!("https://{host}{path}"),
            port => format!("https://{host}:{port}{path}"),
        };
        match HeaderValue::from_str(&location) {
            Ok(v) => {
                let mut r = text(StatusCode::PERMANENT_REDIRECT, "");
                r.headers_mut().insert(header::LOCATION, v);
                r
            }
            Err(_) => text(StatusCode::BAD_REQUEST, "bad request target\n"),
        }
    }
}

/// Serves `handler` on `listener` until `shutdown`; `what` names it in logs.
pub async fn serve(
    what: &'static str,
    listener: TcpListener,
    handler: impl Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    let handler: Handler = Arc::new(handler);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    warn!(what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::proxy::stopped(&mut shutdown) => return,
        };
        let handler = Arc::clone(&handler);
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = handler(&req);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r { debug!(what, %peer, error = %e, "plain connection ended") },
                () = crate::proxy::stopped(&mut stop) => {}
            }
        });
    }
}
