//! MCP's wire protocols: the generated gRPC code for `mcp.agent.v1`, `mcp.master.v1` and
//! `mcproxy.admin.v1`,
//! the conversions between wire and domain types (validated at the boundary), and the
//! transport every process uses to listen and dial. The only crate that re-exports tonic.

pub mod codec;
pub mod convert;
pub mod transport;

pub use prost;
pub use tonic;

/// `mcp.agent.v1`: the master's requests to a node's agent.
pub mod agent {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mcp.agent.v1");
    }
}

/// `mcp.master.v1`: agents' registration and heartbeats, and operators' commands.
pub mod master {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mcp.master.v1");
    }
}

/// `mcproxy.admin.v1`: mc-proxy's admin API on its Unix socket.
pub mod mcproxy {
    pub mod admin {
        pub mod v1 {
            #![allow(clippy::all, missing_docs)]
            tonic::include_proto!("mcproxy.admin.v1");
        }
    }
}

include!(concat!(env!("OUT_DIR"), "/rpcs.rs"));

/// RPC names an agent of this version serves, reported at registration so the master
/// never sends an RPC an agent lacks.
pub const AGENT_RPCS: &[&str] = &[
    "Deploy",
    "Stop",
    "Start",
    "Restart",
    "Remove",
    "ListServices",
    "Logs",
    "Probe",
    "SetupEdgeRoute",
    "RemoveEdgeRoute",
    "ListEdgeRoutes",
];

/// Typed refusals a status carries besides its code and text, in its metadata, so a
/// caller acts on what was refused, never on the message's wording.
pub mod refusal {
    use tonic::metadata::MetadataValue;
    use tonic::Status;

    /// Which refusal: the metadata key and its values.
    pub const KIND: &str = "mcp-refusal";
    /// The image does not carry the node's platform (SPEC §3).
    pub const IMAGE_PLATFORM: &str = "image-platform";
    /// With [`IMAGE_PLATFORM`]: the image reference.
    pub const IMAGE: &str = "mcp-image";
    /// With [`IMAGE_PLATFORM`]: the platforms the image carries (`linux/amd64`).
    pub const PLATFORMS: &str = "mcp-image-platforms";

    /// What an image-platform refusal names.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ImagePlatform {
        pub image: String,
        pub platforms: String,
    }

    /// The FailedPrecondition status of an image-platform refusal, `message` naming
    /// both platforms.
    pub fn image_platform(message: String, refused: &ImagePlatform) -> Status {
        let mut status = Status::failed_precondition(message);
        let metadata = status.metadata_mut();
        metadata.insert(KIND, MetadataValue::from_static(IMAGE_PLATFORM));
        for (key, value) in [(IMAGE, &refused.image), (PLATFORMS, &refused.platforms)] {
            if let Ok(value) = MetadataValue::try_from(value.as_str()) {
                metadata.insert(key, value);
            }
        }
        status
    }

    /// The image-platform refusal `status` carries, if it is one.
    pub fn image_platform_of(status: &Status) -> Option<ImagePlatform> {
        let metadata = status.metadata();
        let text = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        (text(KIND)? == IMAGE_PLATFORM).then(|| ImagePlatform {
            image: text(IMAGE).unwrap_or_default(),
            platforms: text(PLATFORMS).unwrap_or_default(),
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_refusal_survives_the_trailers() {
            let refused = ImagePlatform {
                image: "mcp-test/hello:1".to_string(),
                platforms: "linux/amd64".to_string(),
            };
            let status = image_platform("image x is y; node z is w".to_string(), &refused);
            assert_eq!(status.code(), tonic::Code::FailedPrecondition);
            // As a client reads it: rebuilt from the header map the server sent.
            let mut headers = http::HeaderMap::new();
            status.add_header(&mut headers).expect("headers");
            let read = Status::from_header_map(&headers).expect("a status");
            assert_eq!(image_platform_of(&read), Some(refused));
            assert_eq!(image_platform_of(&Status::failed_precondition("x")), None);
        }
    }
}
