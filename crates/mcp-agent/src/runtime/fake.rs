//! An in-memory runtime for tests: instances are entries in a map, every call is
//! recorded, and any step can be told to fail for a given component (for `pull`, a
//! given image), so the node's deploy and lifecycle logic is tested in milliseconds
//! without Docker. Built for this crate's tests and, behind the `fake-runtime`
//! feature, for other crates' tests.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use anyhow::bail;

use super::platform::Platform;
use super::{Instance, LogChunk, LogStream, Observed, PullProgress, Runtime};

/// A runtime call that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeStep {
    Pull,
    Create,
    Start,
    Stop,
    Remove,
    List,
}

/// One planted failure: `target` is a component name (an image for `Pull`, ignored
/// for `List`); `times` None fails every call, Some(n) the next n.
#[derive(Debug, Clone)]
struct Failure {
    step: FakeStep,
    target: String,
    times: Option<usize>,
}

#[derive(Default)]
struct Inner {
    instances: BTreeMap<(String, String), Observed>,
    definitions: BTreeMap<(String, String), Instance>,
    failures: Vec<Failure>,
    calls: Vec<String>,
    clock: i64,
    /// What instances with limits report as not enforced (`set_limits_warning`).
    limits_warning: String,
    /// Images' platforms, as `set_platforms` gave them; others report none.
    platforms: BTreeMap<String, Vec<Platform>>,
}

/// The fake runtime.
pub struct FakeRuntime {
    name: &'static str,
    inner: Mutex<Inner>,
}

impl FakeRuntime {
    /// `name` is what `Runtime::name` says ("docker", "exec", ...).
    pub fn new(name: &'static str) -> FakeRuntime {
        FakeRuntime {
            name,
            inner: Mutex::new(Inner {
                clock: 1_700_000_000,
                ..Inner::default()
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says limits cannot be enforced, for `why`, for instances created from now on
    /// (as the exec driver says on a host without cgroups for it).
    pub fn set_limits_warning(&self, why: &str) {
        self.inner().limits_warning = why.to_string();
    }

    /// Says `image` carries `platforms` from now on.
    pub fn set_platforms(&self, image: &str, platforms: Vec<Platform>) {
        self.inner().platforms.insert(image.to_string(), platforms);
    }

    /// Makes every later `step` for `target` fail.
    pub fn fail(&self, step: FakeStep, target: &str) {
        self.plant(step, target, None);
    }

    /// Makes the next `step` for `target` fail, once.
    pub fn fail_once(&self, step: FakeStep, target: &str) {
        self.plant(step, target, Some(1));
    }

    fn plant(&self, step: FakeStep, target: &str, times: Option<usize>) {
        self.inner().failures.push(Failure {
            step,
            target: target.to_string(),
            times,
        });
    }

    /// Forgets every planted failure.
    pub fn heal(&self) {
        self.inner().failures.clear();
    }

    /// Adds an instance made by someone else (an older agent, a crash): it is listed
    /// as it is given.
    pub fn seed(&self, observed: Observed) {
        let key = (observed.service.clone(), observed.component.clone());
        self.inner().instances.insert(key, observed);
    }

    /// Every instance, as `list` shows it.
    pub fn instances(&self) -> Vec<Observed> {
        self.inner().instances.values().cloned().collect()
    }

    /// One instance.
    pub fn get(&self, service: &str, component: &str) -> Option<Observed> {
        let key = (service.to_string(), component.to_string());
        self.inner().instances.get(&key).cloned()
    }

    /// What the instance was last created from (None for seeded instances).
    pub fn definition(&self, service: &str, component: &str) -> Option<Instance> {
        let key = (service.to_string(), component.to_string());
        self.inner().definitions.get(&key).cloned()
    }

    /// Every call so far, as `"<step> <service>/<component>"` (`"pull <image>"`,
    /// `"list"`).
    pub fn calls(&self) -> Vec<String> {
        self.inner().calls.clone()
    }

    /// How many calls began with `prefix` (e.g. `"create hello/"`).
    pub fn count(&self, prefix: &str) -> usize {
        self.inner()
            .calls
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    /// Records the call, then fails it when a failure was planted for it.
    fn enter(&self, step: FakeStep, target: &str, call: String) -> anyhow::Result<()> {
        let mut inner = self.inner();
        inner.calls.push(call.clone());
        let planted = inner
            .failures
            .iter_mut()
            .position(|f| f.step == step && (step == FakeStep::List || f.target == target));
        if let Some(i) = planted {
            let failure = &mut inner.failures[i];
            if let Some(n) = failure.times.as_mut() {
                *n -= 1;
                if *n == 0 {
                    inner.failures.remove(i);
                }
            }
            bail!("fake runtime: {call} failed as planted");
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn pull(
        &self,
        image: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> anyhow::Result<()> {
        self.enter(FakeStep::Pull, image, format!("pull {image}"))?;
        progress(PullProgress {
            status: "image present".to_string(),
            current: 1,
            total: 1,
        });
        Ok(())
    }

    async fn platforms(&self, image: &str) -> anyhow::Result<Vec<Platform>> {
        Ok(self
            .inner()
            .platforms
            .get(image)
            .cloned()
            .unwrap_or_default())
    }

    async fn create(&self, instance: &Instance) -> anyhow::Result<()> {
        let (service, component) = (&instance.service, &instance.component);
        self.enter(
            FakeStep::Create,
            component,
            format!("create {service}/{component}"),
        )?;
        let mut inner = self.inner();
        let key = (service.clone(), component.clone());
        if inner.instances.contains_key(&key) {
            bail!("fake runtime: {service}/{component} already exists");
        }
        let image = instance
            .image
            .clone()
            .or_else(|| instance.command.first().cloned())
            .unwrap_or_default();
        let limits_warning = if instance.limits.is_none() {
            String::new()
        } else {
            inner.limits_warning.clone()
        };
        inner.instances.insert(
            key.clone(),
            Observed {
                service: service.clone(),
                component: component.clone(),
                state: "created".to_string(),
                image,
                started_at: 0,
                digest: instance.digest.clone(),
                detail: String::new(),
                limits_warning,
                ..Observed::default()
            },
        );
        inner.definitions.insert(key, instance.clone());
        Ok(())
    }

    async fn start(&self, service: &str, component: &str) -> anyhow::Result<()> {
        self.enter(
            FakeStep::Start,
            component,
            format!("start {service}/{component}"),
        )?;
        let mut inner = self.inner();
        inner.clock += 1;
        let now = inner.clock;
        let key = (service.to_string(), component.to_string());
        let Some(observed) = inner.instances.get_mut(&key) else {
            bail!("fake runtime: no instance {service}/{component} to start");
        };
        if observed.state != "running" {
            observed.state = "running".to_string();
            observed.started_at = now;
        }
        Ok(())
    }

    async fn stop(&self, service: &str, component: &str) -> anyhow::Result<()> {
        self.enter(
            FakeStep::Stop,
            component,
            format!("stop {service}/{component}"),
        )?;
        let key = (service.to_string(), component.to_string());
        if let Some(observed) = self.inner().instances.get_mut(&key) {
            observed.state = "exited".to_string();
            observed.started_at = 0;
        }
        Ok(())
    }

    async fn remove(&self, service: &str, component: &str) -> anyhow::Result<()> {
        self.enter(
            FakeStep::Remove,
            component,
            format!("remove {service}/{component}"),
        )?;
        let key = (service.to_string(), component.to_string());
        let mut inner = self.inner();
        inner.instances.remove(&key);
        inner.definitions.remove(&key);
        Ok(())
    }

    async fn list(&self) -> anyhow::Result<Vec<Observed>> {
        self.enter(FakeStep::List, "", "list".to_string())?;
        Ok(self.instances())
    }

    async fn logs(
        &self,
        service: &str,
        component: &str,
        _follow: bool,
        _tail: Option<u32>,
    ) -> anyhow::Result<LogStream> {
        let chunk = LogChunk {
            stream: "stdout",
            data: format!("{service}/{component}\n").into_bytes(),
        };
        Ok(Box::pin(futures_util::stream::iter([Ok(chunk)])))
    }
}
