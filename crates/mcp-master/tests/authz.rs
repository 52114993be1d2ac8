//! Authorization fails closed, checked on a real master over TLS: every operator RPC in
//! proto/ is called without a token (refused, Login excepted) and as a viewer (every
//! mutating RPC refused with PermissionDenied, every read let through).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mcp_proto::master::v1::{self as wire, master_client::MasterClient};
use mcp_proto::tonic::metadata::MetadataValue;
use mcp_proto::tonic::transport::Channel;
use mcp_proto::tonic::{Code, Request, Status};
use mcp_proto::transport::{ClientTls, ClientTransport};

const ADDRESS: &str = "127.0.0.41:9443";

struct Master {
    channel: Channel,
    _dir: tempfile::TempDir,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn start() -> Master {
    let dir = tempfile::tempdir().unwrap();
    mcp_master::security::init(dir.path()).unwrap();
    let hash =
        |p: &str| mcp_pki::password::hash_password(&mcp_pki::Secret::new(p.to_string())).unwrap();
    let text = format!(
        "node = \"rift\"\nlisten = \"{ADDRESS}\"\ndata_dir = \"{}\"\ndomain = \"metacircular.net\"\n\
         [users.root]\npassword_hash = \"{}\"\nrole = \"admin\"\n\
         [users.eve]\npassword_hash = \"{}\"\nrole = \"viewer\"\n",
        dir.path().display(),
        hash("root-pw"),
        hash("eve-pw"),
    );
    let config = mcp_master::config::Config::parse("master.toml", &text).unwrap();
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if let Err(e) = mcp_master::run(config, shutdown).await {
            panic!("master: {e:#}");
        }
    });
    let ca = mcp_pki::cert::certs_from_pem(&ca_pem).unwrap().remove(0);
    let transport = ClientTransport {
        connect_timeout: Some(Duration::from_secs(5)),
        request_timeout: Some(Duration::from_secs(10)),
        tls: Some(ClientTls {
            config: mcp_pki::tls::client_config(&ca, None).unwrap(),
            server_name: mcp_pki::MASTER_NAME.to_string(),
        }),
    };
    let mut channel = None;
    for _ in 0..200 {
        if let Ok(c) = transport.connect(ADDRESS).await {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Master {
        channel: channel.expect("the master listens"),
        _dir: dir,
        stop,
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
        );
    }
    request
}

/// Calls operator RPC `method` with `token`; the status it ended with (Ok: passed).
async fn call(channel: &Channel, method: &str, token: Option<&str>) -> Result<(), Status> {
    let mut c = MasterClient::new(channel.clone());
    let service = |s: &str| wire::ServiceRequest {
        service: s.to_string(),
    };
    match method {
        "Login" => c
            .login(with_token(
                wire::LoginRequest {
                    user: "nobody".into(),
                    password: "x".into(),
                },
                token,
            ))
            .await
            .map(|_| ()),
        "Deploy" => c
            .deploy(with_token(wire::DeployRequest::default(), token))
            .await
            .map(|_| ()),
        "Stop" => c.stop(with_token(service("x"), token)).await.map(|_| ()),
        "Start" => c.start(with_token(service("x"), token)).await.map(|_| ()),
        "Restart" => c.restart(with_token(service("x"), token)).await.map(|_| ()),
        "Remove" => c.remove(with_token(service("x"), token)).await.map(|_| ()),
        "List" => c
            .list(with_token(wire::ListRequest {}, token))
            .await
            .map(|_| ()),
        "Status" => c
            .status(with_token(wire::StatusRequest::default(), token))
            .await
            .map(|_| ()),
        "Logs" => c
            .logs(with_token(
                wire::LogsRequest {
                    service: "x".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(|_| ()),
        "ListNodes" => c
            .list_nodes(with_token(wire::ListNodesRequest {}, token))
            .await
            .map(|_| ()),
        "ListRoutes" => c
            .list_routes(with_token(wire::ListRoutesRequest {}, token))
            .await
            .map(|_| ()),
        "Revoke" => c
            .revoke(with_token(wire::RevokeRequest {}, token))
            .await
            .map(|_| ()),
        other => panic!("operator RPC {other} is not walked by this test: add it"),
    }
}

#[tokio::test]
async fn every_operator_rpc_checks_token_and_role() {
    let master = start().await;
    let mut methods: Vec<&str> = mcp_proto::RPCS
        .iter()
        .filter(|(s, _)| *s == "mcp.master.v1.Master")
        .map(|(_, m)| *m)
        .collect();
    // Revoke as the viewer revokes the viewer's token: last.
    methods.sort_by_key(|m| *m == "Revoke");
    assert_eq!(methods.len(), mcp_master::authz::OPERATOR_RPCS.len());
    let viewer = MasterClient::new(master.channel.clone())
        .login(wire::LoginRequest {
            user: "eve".into(),
            password: "eve-pw".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let admin_with_viewer_password = MasterClient::new(master.channel.clone())
        .login(wire::LoginRequest {
            user: "root".into(),
            password: "eve-pw".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(admin_with_viewer_password.code(), Code::Unauthenticated);
    for method in methods {
        let access = mcp_master::authz::access_of(&format!("/mcp.master.v1.Master/{method}"))
            .expect("declared");
        let anonymous = call(&master.channel, method, None).await;
        let as_viewer = call(&master.channel, method, Some(&viewer)).await;
        let forged = call(&master.channel, method, Some("mcp1.forged.token")).await;
        match access {
            mcp_master::authz::Access::Public => {
                // Login authenticates itself: a wrong password, not a missing token.
                assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
            }
            access => {
                assert_eq!(
                    anonymous.unwrap_err().code(),
                    Code::Unauthenticated,
                    "{method}"
                );
                assert_eq!(
                    forged.unwrap_err().code(),
                    Code::Unauthenticated,
                    "{method}"
                );
                if access == mcp_master::authz::Access::Write {
                    let status = as_viewer.unwrap_err();
                    assert_eq!(
                        status.code(),
                        Code::PermissionDenied,
                        "{method}: {status:?}"
                    );
                    assert!(status.message().contains("needs admin"), "{status:?}");
                } else if let Err(status) = as_viewer {
                    assert!(
                        ![Code::Unauthenticated, Code::PermissionDenied].contains(&status.code()),
                        "{method} refused a viewer: {status:?}"
                    );
                }
            }
        }
    }
    let after = call(&master.channel, "List", Some(&viewer))
        .await
        .unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated, "revoked: {after:?}");
    assert!(after.message().contains("revoked"), "{after:?}");
    let _ = master.stop.send(true);
}
