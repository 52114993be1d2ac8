//! Cgroups for exec instances (SPEC §3: limits enforced where the host allows it).
//!
//! Each limited instance gets its own group below the agent's own cgroup, named like
//! its container would be (`mcp.<service>.<component>.<node>`): on cgroup v2 one
//! directory (`memory.max`, `memory.swap.max` 0, `cpu.max`), with the controllers
//! enabled in the agent's cgroup's `cgroup.subtree_control`; on v1 one directory per
//! hierarchy (`memory.limit_in_bytes` and `memory.memsw.limit_in_bytes`,
//! `cpu.cfs_quota_us`), which needs root. A controller bound to a v1 hierarchy is
//! taken from there (hybrid hosts). The supervisor moves each process it starts into
//! the group right after spawning it, and reads the kernel's `oom_kill` counter when
//! the process dies. When a group cannot be made, `create` says why and the deploy
//! goes on with that warning.
//!
//! Parsing `/proc/self/cgroup` and `/proc/self/mountinfo` is pure and tested; the rest
//! is file writes.

use std::path::{Path, PathBuf};

use mcp_types::limits::nano_cpus;
use mcp_types::Limits;
use serde::{Deserialize, Serialize};

/// The CFS period the quota is a share of, in microseconds (the kernel's default).
const CPU_PERIOD_US: i64 = 100_000;

/// One directory of an instance's group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDir {
    /// 1 or 2: the cgroup version of its hierarchy.
    pub v: u8,
    pub path: PathBuf,
    /// The controllers it limits there: "memory", "cpu".
    pub controllers: Vec<String>,
}

/// An instance's cgroup: one directory (v2) or one per hierarchy (v1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub dirs: Vec<GroupDir>,
}

/// One line of `/proc/self/cgroup`: the hierarchy's controllers (empty for v2) and
/// the process's path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub controllers: Vec<String>,
    pub path: String,
}

/// `/proc/self/cgroup`: `ID:CONTROLLERS:PATH` per line (`0::PATH` for v2).
pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(Membership {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// A cgroup filesystem from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// 1 (`cgroup`) or 2 (`cgroup2`).
    pub v: u8,
    /// The path inside the hierarchy that is mounted (not "/" in a cgroup namespace).
    pub root: String,
    pub point: PathBuf,
    /// v1: the controllers of the hierarchy (from the super options).
    pub controllers: Vec<String>,
}

/// The cgroup mounts of `/proc/self/mountinfo`
/// (`ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPER`).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let head: Vec<&str> = head.split(' ').collect();
            let tail: Vec<&str> = tail.split(' ').collect();
            let v = match *tail.first()? {
                "cgroup" => 1,
                "cgroup2" => 2,
                _ => return None,
            };
            let controllers = if v == 1 {
                tail.get(2)?
                    .split(',')
                    .filter(|o| ["memory", "cpu"].contains(o))
                    .map(str::to_string)
                    .collect()
            } else {
                Vec::new()
            };
            Some(Mount {
                v,
                root: unescape(head.get(3)?),
                point: PathBuf::from(unescape(head.get(4)?)),
                controllers,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Where a controller's groups go: (version, the agent's own cgroup directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub v: u8,
    pub dir: PathBuf,
    pub controllers: Vec<String>,
}

/// For each controller in `wanted`: the agent's cgroup directory in the hierarchy
/// that has it (a v1 hierarchy binding it, else the v2 one whose root lists it in
/// `v2_controllers`), or why there is none. Pure.
pub fn places(
    memberships: &[Membership],
    mounts: &[Mount],
    v2_controllers: &str,
    wanted: &[&str],
) -> Result<Vec<Place>, String> {
    let mut out: Vec<Place> = Vec::new();
    for controller in wanted {
        let v1 = mounts
            .iter()
            .find(|m| m.v == 1 && m.controllers.iter().any(|c| c == controller));
        let place = match v1 {
            Some(mount) => {
                let member = memberships
                    .iter()
                    .find(|m| m.controllers.iter().any(|c| c == controller))
                    .ok_or_else(|| {
                        format!("cgroup v1: this process is in no {controller} hierarchy")
                    })?;
                Place {
                    v: 1,
                    dir: within(mount, &member.path),
                    controllers: vec![controller.to_string()],
                }
            }
            None => {
                let mount = mounts.iter().find(|m| m.v == 2).ok_or_else(|| {
                    format!("no cgroup hierarchy offers the {controller} controller")
                })?;
                if !v2_controllers.split_whitespace().any(|c| c == *controller) {
                    return Err(format!(
                        "cgroup v2 at {} does not offer the {controller} controller",
                        mount.point.display()
                    ));
                }
                let member = memberships
                    .iter()
                    .find(|m| m.controllers.is_empty())
                    .ok_or_else(|| "cgroup v2: this process has no v2 cgroup".to_string())?;
                Place {
                    v: 2,
                    dir: within(mount, &member.path),
                    controllers: vec![controller.to_string()],
                }
            }
        };
        match out.iter_mut().find(|p| p.dir == place.dir) {
            Some(same) => same.controllers.extend(place.controllers),
            None => out.push(place),
        }
    }
    Ok(out)
}

/// The directory of cgroup `path` under `mount` (whose root may be below "/").
fn within(mount: &Mount, path: &str) -> PathBuf {
    let relative = path
        .strip_prefix(mount.root.trim_end_matches('/'))
        .unwrap_or(path)
        .trim_start_matches('/');
    if relative.is_empty() {
        mount.point.clone()
    } else {
        mount.point.join(relative)
    }
}

/// The controllers `limits` needs.
fn wanted(limits: &Limits) -> Vec<&'static str> {
    let mut out = Vec::new();
    if limits.memory.is_some() {
        out.push("memory");
    }
    if limits.cpu.is_some() {
        out.push("cpu");
    }
    out
}

/// Where this host puts groups for `limits`, or why it cannot.
fn probe(limits: &Limits) -> Result<Vec<Place>, String> {
    let read =
        |path: &str| std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"));
    let memberships = parse_proc_cgroup(&read("/proc/self/cgroup")?);
    let mounts = parse_mountinfo(&read("/proc/self/mountinfo")?);
    let v2_controllers = mounts
        .iter()
        .find(|m| m.v == 2)
        .and_then(|m| std::fs::read_to_string(m.point.join("cgroup.controllers")).ok())
        .unwrap_or_default();
    places(&memberships, &mounts, &v2_controllers, &wanted(limits))
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
}

/// What a cgroup permission error means for the operator.
fn hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (cgroup v1 needs the agent to run as root; v2 a cgroup delegated to it)"
        }
        std::io::ErrorKind::ReadOnlyFilesystem => " (the cgroup filesystem is read-only here)",
        _ => "",
    }
}

/// v2: makes `dir`'s children able to use `controllers`. A cgroup holding processes
/// cannot hand controllers down, so when the kernel says busy, this agent and its
/// supervisors (processes of the same executable) move into a `mcp-agent` leaf first,
/// as a service with systemd's `Delegate=yes` must.
fn enable_v2(dir: &Path, controllers: &[String]) -> Result<(), String> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control)
        .map_err(|e| format!("cannot read {}: {e}", control.display()))?;
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == c.as_str()))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let request = missing.join(" ");
    match std::fs::write(&control, &request) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        Err(e) => {
            return Err(format!(
                "cannot enable {request} in {}: {e}{}",
                control.display(),
                hint(&e)
            ))
        }
    }
    let leaf = dir.join("mcp-agent");
    make_dir(&leaf)?;
    let exe = std::env::current_exe().ok();
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        let ours = std::fs::read_link(format!("/proc/{pid}/exe")).ok() == exe;
        if ours {
            // A process that exited meanwhile cannot move; that is fine.
            let _ = std::fs::write(leaf.join("cgroup.procs"), pid.to_string());
        }
    }
    std::fs::write(&control, &request).map_err(|e| {
        format!(
            "cannot enable {request} in {}: {e} (other processes share the agent's cgroup; give the agent a cgroup of its own, e.g. systemd Delegate=yes)",
            control.display()
        )
    })
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!(
            "cannot create cgroup {}: {e}{}",
            dir.display(),
            hint(&e)
        )),
    }
}

impl Group {
    /// Makes the group `name` for `limits` and writes the limits, or says why it
    /// cannot (then nothing is left behind). `limits` without any limit: no group.
    pub fn create(name: &str, limits: &Limits) -> Result<Group, String> {
        if limits.is_none() {
            return Ok(Group::default());
        }
        let places = probe(limits)?;
        let mut group = Group::default();
        for place in places {
            let result = (|| {
                if place.v == 2 {
                    enable_v2(&place.dir, &place.controllers)?;
                }
                let path = place.dir.join(name);
                make_dir(&path)?;
                let dir = GroupDir {
                    v: place.v,
                    path,
                    controllers: place.controllers.clone(),
                };
                group.dirs.push(dir.clone());
                dir.limit(limits)
            })();
            if let Err(why) = result {
                group.remove();
                return Err(why);
            }
        }
        Ok(group)
    }

    /// Puts process `pid` in every directory of the group.
    pub fn enter(&self, pid: u32) -> Result<(), String> {
        for dir in &self.dirs {
            write(&dir.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Removes the group's directories (they must hold no process); missing ones are
    /// not an error.
    pub fn remove(&self) {
        for dir in &self.dirs {
            if let Err(e) = std::fs::remove_dir(&dir.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(cgroup = %dir.path.display(), "remove cgroup: {e}");
                }
            }
        }
    }

    fn memory_dir(&self) -> Option<&GroupDir> {
        self.dirs
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == "memory"))
    }

    /// The kernel's count of OOM kills in the group; None without a memory group.
    pub fn oom_kills(&self) -> Option<u32> {
        let dir = self.memory_dir()?;
        let file = if dir.v == 2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(dir.path.join(file)).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// The memory limit the kernel holds for the group, in bytes.
    pub fn memory_limit(&self) -> Option<u64> {
        let dir = self.memory_dir()?;
        let file = if dir.v == 2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::read_to_string(dir.path.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl GroupDir {
    fn limit(&self, limits: &Limits) -> Result<(), String> {
        let has = |c: &str| self.controllers.iter().any(|x| x == c);
        let file = |name: &str| self.path.join(name);
        if let Some(memory) = limits.memory.filter(|_| has("memory")) {
            let bytes = memory.0.to_string();
            if self.v == 2 {
                write(&file("memory.max"), &bytes)?;
                // No swap beyond the limit, where the kernel accounts swap.
                if file("memory.swap.max").exists() {
                    write(&file("memory.swap.max"), "0")?;
                }
            } else {
                write(&file("memory.limit_in_bytes"), &bytes)?;
                if file("memory.memsw.limit_in_bytes").exists() {
                    write(&file("memory.memsw.limit_in_bytes"), &bytes)?;
                }
            }
        }
        if let Some(cpu) = limits.cpu.filter(|_| has("cpu")) {
            let quota = (nano_cpus(cpu) / 10_000).max(1_000); // µs per period; the kernel's least is 1 ms
            if self.v == 2 {
                write(&file("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                write(&file("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&file("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HYBRID_CGROUP: &str =
        "9:name=systemd:/\n4:memory:/process_api/9bed\n3:cpuset:/\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTS: &str =
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
22 1 8:1 / / rw - ext4 /dev/root rw\n";
    const V2_CGROUP: &str = "0::/system.slice/mcp-agent.service\n";
    const V2_MOUNTS: &str =
        "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn proc_cgroup_lines() {
        let m = parse_proc_cgroup(HYBRID_CGROUP);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].controllers, vec!["memory"]);
        assert_eq!(m[1].path, "/process_api/9bed");
        assert!(m[4].controllers.is_empty());
        let combined = parse_proc_cgroup("2:cpu,cpuacct:/a:b\n");
        assert_eq!(combined[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(combined[0].path, "/a:b");
    }

    #[test]
    fn mounts_of_every_kind() {
        let m = parse_mountinfo(HYBRID_MOUNTS);
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[0].controllers, vec!["cpu"]);
        assert!(m[1].controllers.is_empty(), "cpuacct is no limit");
        assert_eq!(m[3].v, 2);
        let combined = parse_mountinfo(
            "1 2 0:3 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct\n",
        );
        assert_eq!(
            combined[0].point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(combined[0].controllers, vec!["cpu"]);
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\x"), "/a\\x");
    }

    #[test]
    fn places_per_host() {
        let memory_and_cpu = ["memory", "cpu"];
        // Hybrid: both controllers on v1, each in its own hierarchy.
        let hybrid = places(
            &parse_proc_cgroup(HYBRID_CGROUP),
            &parse_mountinfo(HYBRID_MOUNTS),
            "hugetlb",
            &memory_and_cpu,
        )
        .unwrap();
        assert_eq!(
            hybrid,
            vec![
                Place {
                    v: 1,
                    dir: "/sys/fs/cgroup/memory/process_api/9bed".into(),
                    controllers: vec!["memory".into()],
                },
                Place {
                    v: 1,
                    dir: "/sys/fs/cgroup/cpu".into(),
                    controllers: vec!["cpu".into()],
                },
            ]
        );
        // Pure v2: one directory for both.
        let v2 = places(
            &parse_proc_cgroup(V2_CGROUP),
            &parse_mountinfo(V2_MOUNTS),
            "cpuset cpu io memory pids",
            &memory_and_cpu,
        )
        .unwrap();
        assert_eq!(
            v2,
            vec![Place {
                v: 2,
                dir: "/sys/fs/cgroup/system.slice/mcp-agent.service".into(),
                controllers: vec!["memory".into(), "cpu".into()],
            }]
        );
        // v2 without the memory controller, and no cgroups at all.
        let err = places(
            &parse_proc_cgroup(V2_CGROUP),
            &parse_mountinfo(V2_MOUNTS),
            "cpu pids",
            &["memory"],
        )
        .unwrap_err();
        assert!(
            err.contains("does not offer the memory controller"),
            "{err}"
        );
        let err = places(&[], &[], "", &["cpu"]).unwrap_err();
        assert!(err.contains("no cgroup hierarchy offers the cpu"), "{err}");
        // A cgroup namespace: the mount's root is the process's own path.
        let ns = Mount {
            v: 2,
            root: "/system.slice/x".into(),
            point: "/sys/fs/cgroup".into(),
            controllers: vec![],
        };
        assert_eq!(
            within(&ns, "/system.slice/x"),
            PathBuf::from("/sys/fs/cgroup")
        );
        assert_eq!(
            within(&ns, "/system.slice/x/y"),
            PathBuf::from("/sys/fs/cgroup/y")
        );
    }

    #[test]
    fn no_limits_no_group() {
        let group = Group::create("mcp.none", &Limits::default()).unwrap();
        assert!(group.dirs.is_empty());
        assert_eq!(group.oom_kills(), None);
    }
}
