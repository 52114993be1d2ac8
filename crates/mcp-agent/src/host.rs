//! Figures about this host for heartbeats: cores, CPU use, memory and disk.

use std::path::Path;

use mcp_proto::master::v1::NodeResources;

fn meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

#[allow(unsafe_code)]
fn disk(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return (0, 0);
    };
    // SAFETY: statvfs writes into the zeroed struct we own; c_path is a valid
    // NUL-terminated string that outlives the call.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stat) != 0 {
            return (0, 0);
        }
        let block = stat.f_frsize as u64;
        (stat.f_blocks as u64 * block, stat.f_bavail as u64 * block)
    }
}

/// (busy, total) jiffies of all CPUs from /proc/stat.
fn cpu_times() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle + iowait.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// CPU use between two samples, as a fraction of all cores.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Option<(u64, u64)>,
}

impl CpuSampler {
    /// The host's resources now; CPU use is since the previous call (0 on the first);
    /// disk is that of the file system holding `data_dir`.
    pub fn resources(&mut self, data_dir: &Path) -> NodeResources {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let now = cpu_times();
        let cpu_used = match (self.last, now) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                (busy1.saturating_sub(busy0)) as f64 / (total1 - total0) as f64
            }
            _ => 0.0,
        };
        self.last = now;
        let (memory_total, memory_free) = meminfo();
        let (disk_total, disk_free) = disk(data_dir);
        NodeResources {
            cpu_cores: cores,
            cpu_used: cpu_used.clamp(0.0, 1.0),
            memory_total,
            memory_free,
            disk_total,
            disk_free,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn real_figures() {
        let mut sampler = CpuSampler::default();
        let first = sampler.resources(Path::new("/"));
        assert!(first.memory_total > 0 && first.memory_free <= first.memory_total);
        assert!(first.disk_total > 0 && first.disk_free <= first.disk_total);
        assert!(first.cpu_cores >= 1.0);
        // Burn a little CPU so the second sample has something to see.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let second = sampler.resources(Path::new("/"));
        assert!((0.0..=1.0).contains(&second.cpu_used));
    }
}
