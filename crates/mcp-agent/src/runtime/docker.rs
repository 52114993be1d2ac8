//! Docker and Podman through the Docker Engine API on a Unix socket (bollard). The API
//! version is negotiated, so old engines (Debian's Docker 20.10, API 1.41) work.
//!
//! `list` runs on every heartbeat, so it costs one `list_containers` call: a running
//! container's start time (which the list does not carry) comes from an inspect that
//! `StartedCache` remembers while the list shows no restart could have happened.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, Context};
use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy as DockerRestart,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListImagesOptions,
    LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use mcp_types::limits::nano_cpus;
use mcp_types::RestartPolicy;

use super::oom::{self, OomLog};
use super::platform::Platform;
use super::{
    container_name, Instance, LogChunk, LogStream, Observed, PullProgress, Runtime,
    LABEL_COMPONENT, LABEL_DIGEST, LABEL_NODE, LABEL_SERVICE,
};

/// A Docker Engine API endpoint (Docker itself, or Podman's compatible service).
pub struct DockerRuntime {
    docker: Docker,
    node: String,
    name: &'static str,
    started: Mutex<StartedCache>,
    /// OOM kills by container, from the engine's events.
    ooms: OomLog,
    _oom_watcher: oom::Watcher,
}

/// Start times of running containers, by container ID, so `list` need not inspect
/// every container on every heartbeat.
///
/// The list carries a status text ("Up 5 minutes") but no start time. A remembered
/// start time is trusted when the container had run a minute or more when last seen,
/// that was under a minute ago, and the status text now says it has run a minute or
/// more: a restart since it was last seen would have it up for less than a minute,
/// which Docker and Podman write in seconds. So a container is inspected in its first
/// minute, after a gap in listing, or when the text is not understood; otherwise never.
#[derive(Debug, Default)]
pub struct StartedCache {
    /// id -> (started_at, last seen), in Unix seconds.
    entries: HashMap<String, (i64, i64)>,
}

/// The uptime below which the status text counts seconds.
const SECONDS_TEXT: i64 = 60;

/// Does a running container's status text ("Up 5 minutes", "Up About an hour",
/// "Up 3 days (healthy)") say it has run for a minute or more?
fn up_a_minute_or_more(status: &str) -> bool {
    let status = status.to_ascii_lowercase();
    status.starts_with("up ")
        && ["minute", "hour", "day", "week", "month", "year"]
            .iter()
            .any(|unit| status.contains(unit))
}

impl StartedCache {
    /// The remembered start time of running container `id`, whose status text `now`
    /// is `status`, if it may be trusted.
    pub fn get(&mut self, id: &str, status: &str, now: i64) -> Option<i64> {
        let (started_at, seen) = self.entries.get_mut(id)?;
        let trusted = *seen - *started_at >= SECONDS_TEXT
            && now - *seen < SECONDS_TEXT
            && up_a_minute_or_more(status);
        if !trusted {
            return None;
        }
        *seen = now;
        Some(*started_at)
    }

    pub fn put(&mut self, id: &str, started_at: i64, now: i64) {
        self.entries.insert(id.to_string(), (started_at, now));
    }

    /// Forgets containers that are gone or no longer running.
    pub fn keep_only(&mut self, running: &[&str]) {
        self.entries.retain(|id, _| running.contains(&id.as_str()));
    }
}

/// Seconds a container gets to stop before it is killed.
const STOP_TIMEOUT_S: i32 = 10;

impl DockerRuntime {
    /// Connects to the socket and negotiates the API version.
    pub async fn connect(socket: &Path, node: &str, name: &'static str) -> anyhow::Result<Self> {
        let path = socket
            .to_str()
            .context("runtime socket path is not UTF-8")?;
        let docker = Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
            .with_context(|| format!("connect to {name} at {path}"))?
            .negotiate_version()
            .await
            .with_context(|| format!("negotiate API version with {name} at {path}"))?;
        docker
            .ping()
            .await
            .with_context(|| format!("ping {name} at {path}"))?;
        let ooms = OomLog::default();
        let watcher = oom::watch(docker.clone(), node, ooms.clone());
        Ok(DockerRuntime {
            docker,
            node: node.to_string(),
            name,
            started: Mutex::new(StartedCache::default()),
            ooms,
            _oom_watcher: watcher,
        })
    }

    fn node_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_NODE}={}", self.node)],
        )])
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_not_modified(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// The instance's memory limit in bytes, as the engine takes it.
fn memory_limit(instance: &Instance) -> Option<i64> {
    instance
        .limits
        .memory
        .map(|m| i64::try_from(m.0).unwrap_or(i64::MAX))
}

fn restart_policy(policy: RestartPolicy) -> RestartPolicyNameEnum {
    match policy {
        RestartPolicy::No => RestartPolicyNameEnum::NO,
        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
    }
}

/// `2024-05-01T10:11:12.123456789Z` as Unix seconds; 0 for Docker's zero time
/// (`0001-01-01T00:00:00Z`, "never"), anything before 1971, or junk.
pub fn parse_rfc3339(s: &str) -> i64 {
    const YEAR_1971: i64 = 365 * 86_400;
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(time::OffsetDateTime::unix_timestamp)
        .ok()
        .filter(|&t| t >= YEAR_1971)
        .unwrap_or(0)
}

impl DockerRuntime {
    fn started_cache(&self) -> std::sync::MutexGuard<'_, StartedCache> {
        self.started.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A running container's start time: remembered, or inspected once (0 when the
    /// inspect fails; it is tried again next time).
    async fn started_at(&self, id: &str, status: &str) -> i64 {
        let now = crate::node::now_s();
        if let Some(started_at) = self.started_cache().get(id, status, now) {
            return started_at;
        }
        let Ok(inspect) = self.docker.inspect_container(id, None).await else {
            return 0;
        };
        let started_at = inspect
            .state
            .and_then(|s| s.started_at)
            .map_or(0, |t| parse_rfc3339(&t));
        self.started_cache().put(id, started_at, now);
        started_at
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn pull(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> anyhow::Result<()> {
        if self.docker.inspect_image(image).await.is_ok() {
            progress(PullProgress {
                status: "image present".to_string(),
                current: 1,
                total: 1,
            });
            return Ok(());
        }
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let mut stream = self.docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info = item.with_context(|| format!("pull image {image}"))?;
            if let Some(detail) = info.error_detail {
                return Err(anyhow!(
                    "pull image {image}: {}",
                    detail.message.unwrap_or_default()
                ));
            }
            let (current, total) = info
                .progress_detail
                .map(|p| {
                    (
                        p.current.unwrap_or(0).max(0) as u64,
                        p.total.unwrap_or(0).max(0) as u64,
                    )
                })
                .unwrap_or((0, 0));
            progress(PullProgress {
                status: info.status.unwrap_or_default(),
                current,
                total,
            });
        }
        Ok(())
    }

    /// The image's own platform (`Os`/`Architecture`/`Variant` of its config), or,
    /// where the engine keeps a multi-platform image's list (Docker's containerd
    /// image store, API 1.47 and later), every platform in it. Docker's classic store
    /// holds one platform per image.
    async fn platforms(&self, image: &str) -> anyhow::Result<Vec<Platform>> {
        let version = self.docker.client_version();
        if (version.major_version, version.minor_version) >= (1, 47) {
            let options = ListImagesOptions {
                filters: Some(HashMap::from([(
                    "reference".to_string(),
                    vec![image.to_string()],
                )])),
                manifests: true,
                ..Default::default()
            };
            let listed = self
                .docker
                .list_images(Some(options))
                .await
                .with_context(|| format!("list the manifests of image {image}"))?;
            let listed: Vec<Platform> = listed
                .iter()
                .flat_map(|i| i.manifests.iter().flatten())
                .filter_map(|m| m.image_data.as_ref())
                .map(|d| {
                    let p = &d.platform;
                    Platform::new(
                        p.os.as_deref().unwrap_or_default(),
                        p.architecture.as_deref().unwrap_or_default(),
                        p.variant.as_deref().unwrap_or_default(),
                    )
                })
                .collect();
            if !listed.is_empty() {
                return Ok(listed);
            }
        }
        let inspect = self
            .docker
            .inspect_image(image)
            .await
            .with_context(|| format!("inspect image {image}"))?;
        let architecture = inspect.architecture.unwrap_or_default();
        if architecture.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![Platform::new(
            inspect.os.as_deref().unwrap_or_default(),
            &architecture,
            inspect.variant.as_deref().unwrap_or_default(),
        )])
    }

    async fn create(&self, instance: &Instance) -> anyhow::Result<()> {
        let image = instance
            .image
            .clone()
            .context("a container component needs an image")?;
        let labels = HashMap::from([
            (LABEL_SERVICE.to_string(), instance.service.clone()),
            (LABEL_COMPONENT.to_string(), instance.component.clone()),
            (LABEL_NODE.to_string(), instance.node.clone()),
            (LABEL_DIGEST.to_string(), instance.digest.clone()),
        ]);
        let mut exposed = Vec::new();
        let mut bindings = HashMap::new();
        for (container_port, host_port) in &instance.ports {
            let key = format!("{container_port}/tcp");
            exposed.push(key.clone());
            bindings.insert(
                key,
                Some(vec![PortBinding {
                    host_ip: Some(instance.host_ip.to_string()),
                    host_port: Some(host_port.to_string()),
                }]),
            );
        }
        let binds = instance
            .volumes
            .iter()
            .map(|(host, container, ro)| {
                format!(
                    "{}:{container}{}",
                    host.display(),
                    if *ro { ":ro" } else { "" }
                )
            })
            .collect::<Vec<_>>();
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: (!instance.command.is_empty()).then(|| instance.command.clone()),
            env: Some(
                instance
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                binds: (!binds.is_empty()).then_some(binds),
                restart_policy: Some(DockerRestart {
                    name: Some(restart_policy(instance.restart)),
                    maximum_retry_count: None,
                }),
                // SPEC §3: the hard limit, with swap equal to it (no silent swap).
                memory: memory_limit(instance),
                memory_swap: memory_limit(instance),
                nano_cpus: instance.limits.cpu.map(nano_cpus),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = container_name(&self.node, &instance.service, &instance.component);
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        self.docker
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("create container {name}"))?;
        Ok(())
    }

    async fn start(&self, service: &str, component: &str) -> anyhow::Result<()> {
        let name = container_name(&self.node, service, component);
        match self.docker.start_container(&name, None).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_modified(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("start container {name}")),
        }
    }

    async fn stop(&self, service: &str, component: &str) -> anyhow::Result<()> {
        let name = container_name(&self.node, service, component);
        let options = StopContainerOptions {
            t: Some(STOP_TIMEOUT_S),
            signal: None,
        };
        match self.docker.stop_container(&name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_modified(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("stop container {name}")),
        }
    }

    async fn remove(&self, service: &str, component: &str) -> anyhow::Result<()> {
        let name = container_name(&self.node, service, component);
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(&name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove container {name}")),
        }
    }

    async fn list(&self) -> anyhow::Result<Vec<Observed>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(self.node_filter()),
            ..Default::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .with_context(|| format!("list {} containers", self.name))?;
        let mut out = Vec::with_capacity(containers.len());
        let running: Vec<&str> = containers
            .iter()
            .filter(|c| c.state.is_some_and(|s| s.to_string() == "running"))
            .filter_map(|c| c.id.as_deref())
            .collect();
        self.started_cache().keep_only(&running);
        for c in &containers {
            let labels = c.labels.clone().unwrap_or_default();
            let (Some(service), Some(component)) =
                (labels.get(LABEL_SERVICE), labels.get(LABEL_COMPONENT))
            else {
                continue;
            };
            let state = c
                .state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".to_string());
            let status = c.status.clone().unwrap_or_default();
            let started_at = match (&c.id, state.as_str()) {
                (Some(id), "running") => self.started_at(id, &status).await,
                _ => 0,
            };
            let (oom_kills, last_oom_at) = c.id.as_deref().map_or((0, 0), |id| self.ooms.of(id));
            out.push(Observed {
                service: service.clone(),
                component: component.clone(),
                state,
                image: c.image.clone().unwrap_or_default(),
                started_at,
                digest: labels.get(LABEL_DIGEST).cloned().unwrap_or_default(),
                detail: status,
                oom_kills,
                last_oom_at,
                ..Observed::default()
            });
        }
        let ids: Vec<&str> = containers.iter().filter_map(|c| c.id.as_deref()).collect();
        self.ooms.keep_only(&ids);
        Ok(out)
    }

    async fn logs(
        &self,
        service: &str,
        component: &str,
        follow: bool,
        tail: Option<u32>,
    ) -> anyhow::Result<LogStream> {
        let name = container_name(&self.node, service, component);
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
            ..Default::default()
        };
        let stream = self.docker.logs(&name, Some(options)).map(move |item| {
            use bollard::container::LogOutput;
            let out = item.context("read container logs")?;
            Ok(match out {
                LogOutput::StdErr { message } => LogChunk {
                    stream: "stderr",
                    data: message.to_vec(),
                },
                LogOutput::StdOut { message }
                | LogOutput::Console { message }
                | LogOutput::StdIn { message } => LogChunk {
                    stream: "stdout",
                    data: message.to_vec(),
                },
            })
        });
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_rfc3339, up_a_minute_or_more, StartedCache};

    #[test]
    fn start_times_are_remembered_only_while_no_restart_could_hide() {
        let mut cache = StartedCache::default();
        assert_eq!(cache.get("a", "Up 2 hours", 10_000), None);
        // Inspected at 10_000: up since 2_000.
        cache.put("a", 2_000, 10_000);
        assert_eq!(cache.get("a", "Up 2 hours", 10_030), Some(2_000));
        assert_eq!(cache.get("a", "Up 2 hours (healthy)", 10_060), Some(2_000));
        // A restart shows as seconds.
        assert_eq!(cache.get("a", "Up 1 second", 10_061), None);
        assert_eq!(cache.get("a", "Up Less than a second", 10_061), None);
        assert_eq!(cache.get("b", "Up 2 hours", 10_061), None);
        // Unseen for a minute or more: it may have restarted and run a minute since.
        assert_eq!(cache.get("a", "Up About a minute", 10_200), None);
        // In its first minute a container is never trusted from memory.
        cache.put("c", 10_000, 10_000);
        assert_eq!(cache.get("c", "Up About a minute", 10_030), None);
        // Text not understood: inspect.
        cache.put("d", 2_000, 10_000);
        assert_eq!(cache.get("d", "running for 2h", 10_001), None);
        cache.keep_only(&["c"]);
        assert_eq!(cache.get("a", "Up 2 hours", 10_062), None);
    }

    #[test]
    fn uptime_texts() {
        for long in [
            "Up About a minute",
            "Up 5 minutes",
            "Up About an hour",
            "Up 3 days (healthy)",
            "Up 2 weeks",
            "Up 4 months",
        ] {
            assert!(up_a_minute_or_more(long), "{long}");
        }
        for short in [
            "Up Less than a second",
            "Up 1 second",
            "Up 59 seconds",
            "Exited (0) 5 minutes ago",
            "Created",
            "",
        ] {
            assert!(!up_a_minute_or_more(short), "{short}");
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), 0);
        assert_eq!(parse_rfc3339("2024-05-01T10:11:12.123456789Z"), 1714558272);
        assert_eq!(parse_rfc3339("2024-05-01T12:11:12+02:00"), 1714558272);
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), 0);
        assert_eq!(parse_rfc3339("junk"), 0);
    }
}
