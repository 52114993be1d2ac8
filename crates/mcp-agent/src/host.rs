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

/// The host's resources now; disk is that of the file system holding `data_dir`.
pub fn resources(data_dir: &Path) -> NodeResources {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let (memory_total, memory_free) = meminfo();
    let (disk_total, disk_free) = disk(data_dir);
    NodeResources {
        cpu_cores: cores,
        cpu_used: (load / cores).clamp(0.0, 1.0),
        memory_total,
        memory_free,
        disk_total,
        disk_free,
    }
}
