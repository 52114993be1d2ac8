//! Authorization that fails closed: one layer in front of the operator service
//! (`mcp.master.v1.Master`) reads the RPC's path, finds the access it declares in
//! [`OPERATOR_RPCS`], checks the bearer token and the role, and only then lets the call
//! through, with the operator's claims in the request's extensions. An RPC that
//! declares nothing is refused, so a new RPC is closed until someone decides who may
//! call it. Node-facing RPCs (`mcp.master.v1.Nodes`) never see a token: they are
//! authenticated by the node's certificate in their handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use mcp_pki::token::{Claims, Role};
use mcp_proto::tonic::body::Body;
use mcp_proto::tonic::codegen::{http, BoxFuture, Service};
use mcp_proto::tonic::server::NamedService;
use mcp_proto::tonic::Status;

use crate::state::MasterState;

/// Who may call an operator RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the call authenticates itself (Login).
    Public,
    /// Any valid token: viewer or admin.
    Read,
    /// A token with the admin role.
    Write,
}

/// The gRPC service the table is for.
pub const SERVICE: &str = "mcp.master.v1.Master";

/// Every operator RPC and the access it declares.
pub const OPERATOR_RPCS: &[(&str, Access)] = &[
    ("Login", Access::Public),
    // Any valid token may revoke itself (`mcp logout`).
    ("Revoke", Access::Read),
    ("Deploy", Access::Write),
    ("Stop", Access::Write),
    ("Start", Access::Write),
    ("Restart", Access::Write),
    ("Remove", Access::Write),
    ("List", Access::Read),
    ("Status", Access::Read),
    ("Logs", Access::Read),
    ("ListNodes", Access::Read),
    ("ListRoutes", Access::Read),
];

/// The access `path` (`/mcp.master.v1.Master/Deploy`) declares; None: refuse.
pub fn access_of(path: &str) -> Option<Access> {
    let method = path
        .strip_prefix('/')?
        .strip_prefix(SERVICE)?
        .strip_prefix('/')?;
    OPERATOR_RPCS
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, access)| *access)
}

/// Checks a call's token against the access its RPC declares.
pub async fn authorize(
    state: &MasterState,
    path: &str,
    authorization: Option<&http::HeaderValue>,
) -> Result<Option<Claims>, Status> {
    let method = path.rsplit('/').next().unwrap_or(path);
    let access = access_of(path).ok_or_else(|| {
        Status::permission_denied(format!(
            "{method} declares no access in the master's authorization table: refused"
        ))
    })?;
    if access == Access::Public {
        return Ok(None);
    }
    let header = authorization
        .ok_or_else(|| Status::unauthenticated("no token: run `mcp login`"))?
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    let token =
        mcp_pki::token::parse_bearer(header).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let claims = state
        .security
        .check(token)
        .await
        .map_err(Status::unauthenticated)?;
    if access == Access::Write && claims.role != Role::Admin {
        return Err(Status::permission_denied(format!(
            "{} has the {} role; {method} needs admin",
            claims.user,
            claims.role.as_str()
        )));
    }
    Ok(Some(claims))
}

/// The operator service behind the authorization check.
#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    state: Arc<MasterState>,
}

impl<S> Authorized<S> {
    pub fn new(inner: S, state: Arc<MasterState>) -> Authorized<S> {
        Authorized { inner, state }
    }
}

impl<S> Service<http::Request<Body>> for Authorized<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was made ready is the one that serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            let path = request.uri().path().to_string();
            let decided = authorize(&state, &path, request.headers().get("authorization")).await;
            match decided {
                Ok(claims) => {
                    if let Some(claims) = claims {
                        request.extensions_mut().insert(claims);
                    }
                    inner.call(request).await
                }
                Err(status) => {
                    tracing::info!(rpc = %path, "refused: {}", status.message());
                    Ok(status.into_http())
                }
            }
        })
    }
}

impl<S: NamedService> NamedService for Authorized<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_rpc_declares_its_access() {
        let in_proto: Vec<&str> = mcp_proto::RPCS
            .iter()
            .filter(|(service, _)| *service == SERVICE)
            .map(|(_, method)| *method)
            .collect();
        assert!(!in_proto.is_empty());
        for method in &in_proto {
            assert!(
                access_of(&format!("/{SERVICE}/{method}")).is_some(),
                "{method} is in proto/ but declares no access"
            );
        }
        for (method, _) in OPERATOR_RPCS {
            assert!(in_proto.contains(method), "{method} is not in proto/");
        }
    }

    #[test]
    fn undeclared_and_foreign_paths_are_refused() {
        assert_eq!(
            access_of("/mcp.master.v1.Master/Deploy"),
            Some(Access::Write)
        );
        assert_eq!(access_of("/mcp.master.v1.Master/Frobnicate"), None);
        assert_eq!(access_of("/mcp.master.v1.Nodes/Register"), None);
        assert_eq!(access_of("/mcp.master.v1.MasterX/Deploy"), None);
        assert_eq!(access_of(""), None);
    }
}
