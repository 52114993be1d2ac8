//! An image's platforms against the node's arch (SPEC §3: an agent refuses, before
//! creating anything, an image whose platform is not the node's arch, naming both).
//! Pure: the runtime reads the platforms, this decides.
//!
//! The node's arch is the one it reports (its config's `arch`, else the host's), not
//! the host's: in `mcp dev` hyperborea reports arm64 on an amd64 host and refuses an
//! amd64-only image, as a Raspberry Pi would.

use std::fmt;

use mcp_types::Arch;

/// One platform an image carries: `linux/amd64`, `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.to_string(),
        }
    }

    /// The arch MCP knows this platform as, under the names engines and registries
    /// use for it (Go's `amd64`/`arm64`, the kernel's `x86_64`/`aarch64`).
    pub fn arch(&self) -> Option<Arch> {
        match self.architecture.to_ascii_lowercase().as_str() {
            "amd64" | "x86_64" | "x86-64" | "x64" => Some(Arch::Amd64),
            "arm64" | "aarch64" | "arm64/v8" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// Whether a node of `arch` runs it: a Linux image (or one that names no OS) of
    /// that arch, any variant (arm64 images say `v8` or nothing).
    pub fn runs_on(&self, arch: Arch) -> bool {
        let linux = self.os.is_empty() || self.os.eq_ignore_ascii_case("linux");
        linux && self.arch() == Some(arch)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = if self.os.is_empty() {
            "linux"
        } else {
            &self.os
        };
        write!(f, "{os}/{}", self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// An image none of whose platforms is the node's arch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image {image} is {}; node {node} is {arch}", list(.platforms))]
pub struct PlatformMismatch {
    pub image: String,
    /// What the image carries (one, or a multi-platform image's list).
    pub platforms: Vec<Platform>,
    pub node: String,
    pub arch: Arch,
}

impl PlatformMismatch {
    /// The image's platforms as one text: `linux/amd64`, or `linux/amd64, linux/s390x`.
    pub fn platforms_text(&self) -> String {
        list(&self.platforms)
    }
}

fn list(platforms: &[Platform]) -> String {
    platforms
        .iter()
        .map(Platform::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks an image's platforms against the node's arch. No platforms means the
/// runtime cannot say (the exec driver has no images): nothing to check.
pub fn check(
    image: &str,
    platforms: &[Platform],
    node: &str,
    arch: Arch,
) -> Result<(), PlatformMismatch> {
    if platforms.is_empty() || platforms.iter().any(|p| p.runs_on(arch)) {
        return Ok(());
    }
    Err(PlatformMismatch {
        image: image.to_string(),
        platforms: platforms.to_vec(),
        node: node.to_string(),
        arch,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(os: &str, arch: &str, variant: &str) -> Platform {
        Platform::new(os, arch, variant)
    }

    #[test]
    fn platforms_match_the_nodes_arch_under_every_name() {
        let cases = [
            (p("linux", "amd64", ""), Arch::Amd64, true),
            (p("linux", "x86_64", ""), Arch::Amd64, true),
            (p("", "amd64", ""), Arch::Amd64, true),
            (p("linux", "amd64", ""), Arch::Arm64, false),
            (p("linux", "arm64", "v8"), Arch::Arm64, true),
            (p("linux", "aarch64", ""), Arch::Arm64, true),
            (p("Linux", "ARM64", ""), Arch::Arm64, true),
            (p("linux", "arm", "v7"), Arch::Arm64, false),
            (p("windows", "amd64", ""), Arch::Amd64, false),
            (p("linux", "s390x", ""), Arch::Amd64, false),
        ];
        for (platform, arch, want) in cases {
            assert_eq!(platform.runs_on(arch), want, "{platform} on {arch}");
        }
    }

    #[test]
    fn a_mismatch_names_both() {
        let err = check(
            "mcp-test/hello:1",
            &[p("linux", "amd64", "")],
            "hyperborea",
            Arch::Arm64,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "image mcp-test/hello:1 is linux/amd64; node hyperborea is arm64"
        );
        let multi = [p("linux", "amd64", ""), p("linux", "arm", "v7")];
        let err = check("x:1", &multi, "pi", Arch::Arm64).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image x:1 is linux/amd64, linux/arm/v7; node pi is arm64"
        );
    }

    #[test]
    fn a_multi_platform_image_passes_with_the_nodes_platform() {
        let multi = [p("linux", "amd64", ""), p("linux", "arm64", "v8")];
        assert!(check("x:1", &multi, "pi", Arch::Arm64).is_ok());
        assert!(check("x:1", &multi, "orion", Arch::Amd64).is_ok());
        // A runtime that cannot say: nothing to check.
        assert!(check("x:1", &[], "pi", Arch::Arm64).is_ok());
    }
}
