//! Images that nodes refused for their platform (SPEC §3), remembered for a while so
//! the next deploy of the same image is placed past those nodes at once instead of
//! being refused again. Memory only (the master keeps no durable fleet state): an
//! entry lasts [`KEEP`], and a node's entries go when it registers again (its agent
//! restarted, perhaps with another arch).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mcp_placement::{ImageRefusal, Rejection};
use mcp_types::{Arch, Driver, ServiceDef};

/// How long a refusal is remembered.
pub const KEEP: Duration = Duration::from_secs(10 * 60);

/// (image, node) -> what the image carries, the node's arch, when it refused.
type Entries = HashMap<(String, String), (String, Arch, Instant)>;

/// The refusals of the last [`KEEP`].
#[derive(Debug, Default)]
pub struct Refusals {
    entries: Mutex<Entries>,
}

impl Refusals {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `node` (of `arch`) refused `image`, which carries `platforms`.
    pub fn remember(&self, image: &str, node: &str, platforms: &str, arch: Arch) {
        self.remember_at(image, node, platforms, arch, Instant::now());
    }

    fn remember_at(&self, image: &str, node: &str, platforms: &str, arch: Arch, at: Instant) {
        let mut entries = self.entries();
        entries.retain(|_, (_, _, when)| at.saturating_duration_since(*when) < KEEP);
        entries.insert(
            (image.to_string(), node.to_string()),
            (platforms.to_string(), arch, at),
        );
    }

    /// The nodes that refused one of `def`'s container images within [`KEEP`], each
    /// with its reason, for [`mcp_placement::Snapshot::place_excluding`].
    pub fn of(&self, def: &ServiceDef) -> Vec<(String, Rejection)> {
        self.of_at(def, Instant::now())
    }

    fn of_at(&self, def: &ServiceDef, now: Instant) -> Vec<(String, Rejection)> {
        let entries = self.entries();
        if entries.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<(String, Rejection)> = Vec::new();
        let images = def
            .components
            .iter()
            .filter(|c| c.driver == Driver::Container)
            .filter_map(|c| c.image.as_deref());
        for image in images {
            for ((refused, node), (platforms, arch, when)) in entries.iter() {
                let fresh = now.saturating_duration_since(*when) < KEEP;
                if refused == image && fresh && !out.iter().any(|(n, _)| n == node) {
                    out.push((node.clone(), rejection(image, platforms, *arch)));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Forgets what `node` refused: it registered again.
    pub fn forget_node(&self, node: &str) {
        let mut entries = self.entries();
        if !entries.is_empty() {
            entries.retain(|(_, n), _| n != node);
        }
    }
}

/// The placement rejection of a node that refused `image`.
pub fn rejection(image: &str, platforms: &str, arch: Arch) -> Rejection {
    Rejection::ImagePlatform(Box::new(ImageRefusal {
        image: image.to_string(),
        platforms: platforms.to_string(),
        node: arch,
    }))
}

/// How the operator hears of it: `hyperborea refused image mcp-test/hello:1
/// (linux/amd64, node arm64)`.
pub fn refused_text(node: &str, why: &Rejection) -> String {
    match why {
        Rejection::ImagePlatform(r) => format!(
            "{node} refused image {} ({}, node {})",
            r.image, r.platforms, r.node
        ),
        other => format!("{node}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn def(image: &str) -> ServiceDef {
        mcp_types::parse_definition(
            "t.toml",
            &format!("name = \"t\"\n[[components]]\nname = \"web\"\nimage = \"{image}\"\n"),
        )
        .unwrap()
    }

    #[test]
    fn refusals_are_kept_per_image_and_node_for_a_while() {
        let r = Refusals::default();
        let t0 = Instant::now();
        r.remember_at("a:1", "hyperborea", "linux/amd64", Arch::Arm64, t0);
        let got = r.of_at(&def("a:1"), t0 + Duration::from_secs(1));
        assert_eq!(got.len(), 1);
        assert_eq!(
            refused_text(&got[0].0, &got[0].1),
            "hyperborea refused image a:1 (linux/amd64, node arm64)"
        );
        // Another image is not refused.
        assert!(r.of_at(&def("b:1"), t0).is_empty());
        // Expired.
        assert!(r.of_at(&def("a:1"), t0 + KEEP).is_empty());
        // A node that registers again is forgotten.
        r.forget_node("hyperborea");
        assert!(r.of_at(&def("a:1"), t0).is_empty());
    }
}
