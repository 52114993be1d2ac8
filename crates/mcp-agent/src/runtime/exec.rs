//! The `exec` driver: plain processes, each watched by its own supervisor process (the
//! agent binary run as `mcp-agent supervise DIR`, as Nomad's executor does). The
//! supervisor is in its own process group and outlives the agent, so killing the agent
//! leaves every process running; a restarted agent finds them again through the files
//! in DIR. The supervisor applies the restart policy.
//!
//! Per instance, `<data_dir>/exec/<service>.<component>/` holds `instance.json` (what to
//! run), `supervisor.pid`, `state.json` (written by the supervisor) and `output.log`.
//! Both JSON files carry a format version `v` (absent: the first agents' format, 0);
//! supervisors outlive agent upgrades, so every version reads every older file.
//! A PID from these files is trusted or signalled only while `/proc/<pid>/cmdline`
//! still shows the process it was (the supervisor, or the instance's command).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mcp_pki::ca::write_file;
use mcp_types::RestartPolicy;
use serde::{Deserialize, Serialize};

use super::cgroup::Group;
use super::{
    container_name, instance_name, Instance, LogChunk, LogStream, Observed, PullProgress, Runtime,
};
use crate::process;

/// The format of `instance.json` and `state.json` this agent writes.
pub const EXEC_FORMAT: u32 = 1;

/// What the supervisor runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Format version (`EXEC_FORMAT`; 0 when absent).
    #[serde(default)]
    pub v: u32,
    pub service: String,
    pub component: String,
    pub node: String,
    pub digest: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub restart: RestartPolicy,
    pub workdir: Option<PathBuf>,
    /// The instance's cgroup (SPEC §3 limits); empty without limits or where the
    /// host gives none.
    #[serde(default)]
    pub cgroup: Group,
    /// Why the limits are not enforced; empty when they are.
    #[serde(default)]
    pub limits_warning: String,
}

/// What the supervisor reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecState {
    /// Format version (`EXEC_FORMAT`; 0 when absent).
    #[serde(default)]
    pub v: u32,
    /// "running", "restarting" or "exited".
    pub state: String,
    pub child_pid: Option<u32>,
    pub started_at: i64,
    pub exit_code: Option<i32>,
    pub restarts: u32,
    pub detail: String,
    /// Times the process was killed at its memory limit, and the last (Unix seconds).
    #[serde(default)]
    pub oom_kills: u32,
    #[serde(default)]
    pub last_oom_at: i64,
    /// The process could not be moved into its cgroup: why.
    #[serde(default)]
    pub cgroup_error: String,
}

pub const SPEC_FILE: &str = "instance.json";
pub const STATE_FILE: &str = "state.json";
pub const PID_FILE: &str = "supervisor.pid";
pub const LOG_FILE: &str = "output.log";

/// The exec driver.
pub struct ExecRuntime {
    root: PathBuf,
    node: String,
    /// The binary that runs `supervise`: the agent itself.
    supervisor_exe: PathBuf,
}

impl ExecRuntime {
    pub fn new(root: PathBuf, node: &str, supervisor_exe: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
        Ok(ExecRuntime {
            root,
            node: node.to_string(),
            supervisor_exe,
        })
    }

    fn dir(&self, service: &str, component: &str) -> PathBuf {
        self.root.join(instance_name(service, component))
    }

    fn supervisor_pid(&self, dir: &Path) -> Option<u32> {
        let pid = process::read_pid(&dir.join(PID_FILE))?;
        let dir_text = dir.to_string_lossy();
        process::alive_with_cmdline(pid, &["supervise", &dir_text]).then_some(pid)
    }
}

pub fn read_state(dir: &Path) -> ExecState {
    std::fs::read(dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn read_spec(dir: &Path) -> anyhow::Result<ExecSpec> {
    let path = dir.join(SPEC_FILE);
    let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let spec: ExecSpec =
        serde_json::from_slice(&bytes).with_context(|| format!("decode {}", path.display()))?;
    if spec.v > EXEC_FORMAT {
        bail!(
            "{} is in format {}, written by a newer agent; this one knows up to {EXEC_FORMAT}",
            path.display(),
            spec.v
        );
    }
    Ok(spec)
}

/// The PID of the instance's process, when the state says it runs and that PID still
/// runs the instance's command (never a recycled PID).
fn child_pid(spec: &ExecSpec, state: &ExecState) -> Option<u32> {
    let pid = state.child_pid.filter(|_| state.state != "exited")?;
    process::runs_command(pid, &spec.command).then_some(pid)
}

async fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !process::alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !process::alive(pid)
}

#[async_trait::async_trait]
impl Runtime for ExecRuntime {
    fn name(&self) -> &'static str {
        "exec"
    }

    async fn pull(
        &self,
        _image: &str,
        _progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> anyhow::Result<()> {
        Ok(())
    }

    async fn create(&self, instance: &Instance) -> anyhow::Result<()> {
        if instance.command.is_empty() {
            bail!("an exec component needs a command");
        }
        let dir = self.dir(&instance.service, &instance.component);
        if self.supervisor_pid(&dir).is_some() {
            bail!(
                "{} is already running",
                instance_name(&instance.service, &instance.component)
            );
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let name = container_name(&instance.node, &instance.service, &instance.component);
        let (cgroup, limits_warning) = match Group::create(&name, &instance.limits) {
            Ok(group) => (group, String::new()),
            Err(why) => {
                tracing::warn!(instance = %name, "limits not enforced: {why}");
                (Group::default(), format!("limits not enforced: {why}"))
            }
        };
        let spec = ExecSpec {
            v: EXEC_FORMAT,
            service: instance.service.clone(),
            component: instance.component.clone(),
            node: instance.node.clone(),
            digest: instance.digest.clone(),
            command: instance.command.clone(),
            env: instance.env.clone(),
            restart: instance.restart,
            workdir: instance.workdir.clone(),
            cgroup,
            limits_warning,
        };
        let _ = std::fs::remove_file(dir.join(STATE_FILE));
        write_file(
            &dir.join(SPEC_FILE),
            &serde_json::to_vec_pretty(&spec)?,
            0o644,
        )
        .with_context(|| format!("write {}", dir.join(SPEC_FILE).display()))?;
        Ok(())
    }

    async fn start(&self, service: &str, component: &str) -> anyhow::Result<()> {
        let dir = self.dir(service, component);
        if self.supervisor_pid(&dir).is_some() {
            return Ok(());
        }
        read_spec(&dir)?;
        let before = read_state(&dir);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("supervisor.log"))
            .with_context(|| format!("open {}", dir.join("supervisor.log").display()))?;
        let mut child = tokio::process::Command::new(&self.supervisor_exe)
            .arg("supervise")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("spawn supervisor {}", self.supervisor_exe.display()))?;
        let pid = child.id().unwrap_or(0);
        // Reap the supervisor when it exits, so it never lingers as a zombie while
        // this agent runs. An agent restarted later leaves that to init.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        // Wait until the supervisor has started the process (or failed to).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = read_state(&dir);
            let fresh = state.started_at != before.started_at
                || state.restarts != before.restarts
                || state.state != before.state;
            if fresh && state.state == "running" {
                return Ok(());
            }
            if fresh && state.state == "exited" {
                bail!("{service}/{component} exited at once: {}", state.detail);
            }
            if !process::alive(pid) && !fresh {
                bail!(
                    "the supervisor for {service}/{component} died at start; see {}",
                    dir.join("supervisor.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("{service}/{component} did not start within 5s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(&self, service: &str, component: &str) -> anyhow::Result<()> {
        let dir = self.dir(service, component);
        if let Some(pid) = self.supervisor_pid(&dir) {
            process::signal(pid, libc::SIGTERM);
            if !wait_gone(pid, Duration::from_secs(15)).await
                && self.supervisor_pid(&dir) == Some(pid)
            {
                process::signal(pid, libc::SIGKILL);
                wait_gone(pid, Duration::from_secs(2)).await;
            }
        }
        // A supervisor killed outright leaves its process behind: end that too.
        let state = read_state(&dir);
        let Ok(spec) = read_spec(&dir) else {
            return Ok(());
        };
        if let Some(child) = child_pid(&spec, &state) {
            process::signal(child, libc::SIGTERM);
            if !wait_gone(child, Duration::from_secs(10)).await
                && process::runs_command(child, &spec.command)
            {
                process::signal(child, libc::SIGKILL);
            }
            let exited = ExecState {
                state: "exited".to_string(),
                detail: "stopped by the agent".to_string(),
                ..state
            };
            let _ = write_file(&dir.join(STATE_FILE), &serde_json::to_vec(&exited)?, 0o644);
        }
        Ok(())
    }

    async fn remove(&self, service: &str, component: &str) -> anyhow::Result<()> {
        self.stop(service, component).await?;
        let dir = self.dir(service, component);
        if let Ok(spec) = read_spec(&dir) {
            spec.cgroup.remove();
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove {}", dir.display())),
        }
    }

    async fn list(&self) -> anyhow::Result<Vec<Observed>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.root.display())),
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let Ok(spec) = read_spec(&dir) else { continue };
            if spec.node != self.node {
                continue;
            }
            let state = read_state(&dir);
            let supervised = self.supervisor_pid(&dir).is_some();
            let observed = if supervised {
                if state.state.is_empty() {
                    "created".to_string()
                } else {
                    state.state.clone()
                }
            } else if state.state.is_empty() {
                "created".to_string()
            } else if child_pid(&spec, &state).is_some() {
                // The supervisor is gone but its process still runs.
                "running".to_string()
            } else {
                "exited".to_string()
            };
            let limits_warning = if spec.limits_warning.is_empty() {
                state.cgroup_error.clone()
            } else {
                spec.limits_warning.clone()
            };
            let oom_kills = state.oom_kills.max(spec.cgroup.oom_kills().unwrap_or(0));
            out.push(Observed {
                limits_warning,
                oom_kills,
                last_oom_at: state.last_oom_at,
                service: spec.service,
                component: spec.component,
                started_at: if observed == "running" {
                    state.started_at
                } else {
                    0
                },
                state: observed,
                image: spec.command.first().cloned().unwrap_or_default(),
                digest: spec.digest,
                detail: state.detail,
            });
        }
        out.sort_by(|a, b| (&a.service, &a.component).cmp(&(&b.service, &b.component)));
        Ok(out)
    }

    async fn logs(
        &self,
        service: &str,
        component: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> anyhow::Result<LogStream> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let path = self.dir(service, component).join(LOG_FILE);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("no output recorded for {service}/{component}")
            }
            Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
        };
        let mut start = 0u64;
        if let Some(n) = tail {
            let bytes = tokio::fs::read(&path).await?;
            start = tail_offset(&bytes, n as usize) as u64;
        }
        file.seek(std::io::SeekFrom::Start(start)).await?;
        let stream =
            futures_util::stream::unfold((file, false), move |(mut file, done)| async move {
                if done {
                    return None;
                }
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match file.read(&mut buf).await {
                        Ok(0) if follow => tokio::time::sleep(Duration::from_millis(100)).await,
                        Ok(0) => return None,
                        Ok(n) => {
                            buf.truncate(n);
                            return Some((
                                Ok(LogChunk {
                                    stream: "stdout",
                                    data: buf,
                                }),
                                (file, false),
                            ));
                        }
                        Err(e) => {
                            return Some((
                                Err(anyhow::Error::from(e).context("read output.log")),
                                (file, true),
                            ))
                        }
                    }
                }
            });
        Ok(Box::pin(stream))
    }
}

/// Byte offset where the last `n` lines of `bytes` start.
pub fn tail_offset(bytes: &[u8], n: usize) -> usize {
    if n == 0 {
        return bytes.len();
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `mcp-agent supervise DIR`: runs the instance in DIR until told to stop, applying its
/// restart policy. Exits when the process exits for good or on SIGTERM/SIGINT.
pub async fn supervise(dir: &Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let spec = read_spec(dir)?;
    write_file(
        &dir.join(PID_FILE),
        std::process::id().to_string().as_bytes(),
        0o644,
    )
    .context("write supervisor.pid")?;
    let mut term = signal(SignalKind::terminate()).context("watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watch SIGINT")?;
    let write = |state: &ExecState| {
        if let Ok(bytes) = serde_json::to_vec(state) {
            let _ = write_file(&dir.join(STATE_FILE), &bytes, 0o644);
        }
    };
    let mut state = ExecState {
        v: EXEC_FORMAT,
        ..ExecState::default()
    };
    let mut backoff = Duration::from_millis(100);
    let program = spec.command.first().context("empty command")?;
    loop {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))
            .context("open output.log")?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(&spec.command[1..])
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(false);
        if let Some(workdir) = &spec.workdir {
            command.current_dir(workdir);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                state.state = "exited".to_string();
                state.child_pid = None;
                state.exit_code = Some(127);
                state.detail = format!("cannot run {program:?}: {e}");
                write(&state);
                break;
            }
        };
        let ran_since = Instant::now();
        // Into its cgroup at once: what it allocated before stays charged outside.
        if let Some(pid) = child.id() {
            state.cgroup_error = match spec.cgroup.enter(pid) {
                Ok(()) => String::new(),
                Err(why) => format!("limits not enforced: {why}"),
            };
        }
        state.state = "running".to_string();
        state.child_pid = child.id();
        state.started_at = now_s();
        state.exit_code = None;
        state.detail = String::new();
        write(&state);
        let status = tokio::select! {
            status = child.wait() => status,
            _ = term.recv() => { stop_child(&mut child).await; finish(&mut state, "stopped"); write(&state); break }
            _ = int.recv() => { stop_child(&mut child).await; finish(&mut state, "stopped"); write(&state); break }
        };
        let code = status.ok().and_then(|s| s.code()).unwrap_or(-1);
        state.exit_code = Some(code);
        state.child_pid = None;
        state.detail = format!("exited with code {code}");
        if let Some(kills) = spec.cgroup.oom_kills().filter(|n| *n > state.oom_kills) {
            state.oom_kills = kills;
            state.last_oom_at = now_s();
            state.detail = format!("killed at its memory limit (out of memory; {kills} so far)");
        }
        let again = match spec.restart {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        };
        if !again {
            state.state = "exited".to_string();
            write(&state);
            break;
        }
        backoff = if ran_since.elapsed() > Duration::from_secs(10) {
            Duration::from_millis(100)
        } else {
            (backoff * 2).min(Duration::from_secs(5))
        };
        state.state = "restarting".to_string();
        state.restarts += 1;
        write(&state);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = term.recv() => { state.state = "exited".to_string(); write(&state); break }
            _ = int.recv() => { state.state = "exited".to_string(); write(&state); break }
        }
    }
    let _ = std::fs::remove_file(dir.join(PID_FILE));
    Ok(())
}

fn finish(state: &mut ExecState, detail: &str) {
    state.state = "exited".to_string();
    state.child_pid = None;
    state.detail = detail.to_string();
}

async fn stop_child(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        process::signal(pid, libc::SIGTERM);
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A process the test started; killed and reaped on drop.
    struct Child(std::process::Child);

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// `sleep <seconds>`, once it has exec'd (before, its cmdline is the test's).
    fn sleep(seconds: &str) -> Child {
        let child = Child(
            std::process::Command::new("sleep")
                .arg(seconds)
                .spawn()
                .expect("run sleep"),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !process::alive_with_cmdline(child.0.id(), &["sleep"]) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    fn instance(command: &[&str]) -> Instance {
        Instance {
            service: "tick".to_string(),
            component: "loop".to_string(),
            node: "node-a".to_string(),
            digest: "v1:0".to_string(),
            image: None,
            command: command.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            ports: Vec::new(),
            host_ip: "127.0.0.1".parse().unwrap(),
            volumes: Vec::new(),
            restart: RestartPolicy::No,
            workdir: None,
            limits: Default::default(),
        }
    }

    /// Points the instance's files at `pid`, as if its supervisor had died and the
    /// PID had been given to another process since.
    fn claim(dir: &Path, pid: u32) {
        let state = ExecState {
            v: EXEC_FORMAT,
            state: "running".to_string(),
            child_pid: Some(pid),
            started_at: 1,
            ..ExecState::default()
        };
        std::fs::write(dir.join(STATE_FILE), serde_json::to_vec(&state).unwrap()).unwrap();
        std::fs::write(dir.join(PID_FILE), pid.to_string()).unwrap();
    }

    #[tokio::test]
    async fn a_recycled_pid_is_never_signalled_nor_trusted() {
        let root = tempfile::tempdir().unwrap();
        let exec =
            ExecRuntime::new(root.path().to_path_buf(), "node-a", "/nonexistent".into()).unwrap();
        exec.create(&instance(&["/opt/tick/run", "--fast"]))
            .await
            .unwrap();
        let dir = exec.dir("tick", "loop");
        let mut unrelated = sleep("300");
        claim(&dir, unrelated.0.id());

        let listed = exec.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].state, "exited", "{listed:?}");
        exec.stop("tick", "loop").await.unwrap();
        exec.remove("tick", "loop").await.unwrap();
        assert!(!dir.exists());
        assert!(
            unrelated.0.try_wait().unwrap().is_none(),
            "the unrelated process was signalled"
        );
    }

    #[tokio::test]
    async fn an_orphaned_instance_process_is_still_stopped() {
        let root = tempfile::tempdir().unwrap();
        let exec =
            ExecRuntime::new(root.path().to_path_buf(), "node-a", "/nonexistent".into()).unwrap();
        exec.create(&instance(&["sleep", "301"])).await.unwrap();
        let dir = exec.dir("tick", "loop");
        let mut orphan = sleep("301");
        claim(&dir, orphan.0.id());
        assert_eq!(exec.list().await.unwrap()[0].state, "running");
        exec.stop("tick", "loop").await.unwrap();
        let status = orphan.0.wait().unwrap();
        assert!(!status.success(), "ended by a signal: {status:?}");
        assert_eq!(read_state(&dir).state, "exited");
    }

    #[test]
    fn exec_files_of_every_version_read() {
        let dir = tempfile::tempdir().unwrap();
        // As the first agents wrote them: no "v".
        std::fs::write(
            dir.path().join(SPEC_FILE),
            r#"{"service":"tick","component":"loop","node":"node-a","digest":"ee0c5eda04f26fe4","command":["sleep","1000"],"env":[["MCP_SERVICE","tick"]],"restart":"unless-stopped","workdir":null}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(STATE_FILE),
            r#"{"state":"running","child_pid":12,"started_at":5,"exit_code":null,"restarts":0,"detail":""}"#,
        )
        .unwrap();
        let spec = read_spec(dir.path()).unwrap();
        assert_eq!((spec.v, spec.command.len()), (0, 2));
        assert_eq!(read_state(dir.path()).child_pid, Some(12));
        let newer = serde_json::json!({
            "v": EXEC_FORMAT + 1, "service": "tick", "component": "loop", "node": "node-a",
            "digest": "", "command": ["x"], "env": [], "restart": "no", "workdir": null,
        });
        std::fs::write(dir.path().join(SPEC_FILE), newer.to_string()).unwrap();
        let err = format!("{:#}", read_spec(dir.path()).unwrap_err());
        assert!(err.contains("written by a newer agent"), "{err}");
    }

    #[test]
    fn tails() {
        let text = b"a\nb\nc\n";
        assert_eq!(&text[tail_offset(text, 1)..], b"c\n");
        assert_eq!(&text[tail_offset(text, 2)..], b"b\nc\n");
        assert_eq!(&text[tail_offset(text, 9)..], b"a\nb\nc\n");
        assert_eq!(&text[tail_offset(text, 0)..], b"");
        assert_eq!(&b"x"[tail_offset(b"x", 1)..], b"x");
    }
}
