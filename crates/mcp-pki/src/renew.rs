//! Keeping an [`Identity`] fresh: at two thirds of its certificate's lifetime a
//! caller-supplied step obtains a new certificate and swaps it in (the agent asks
//! the master and writes its data dir; the master issues its own from the CA).
//! Failures are retried, more often as the end of the certificate's life nears.

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::cert::{renew_at, validity};
use crate::tls::Identity;

/// How long until `identity` is due, and how long until it expires (zero when
/// past); None when its certificate cannot be read.
pub fn schedule(identity: &Identity) -> Option<(Duration, Duration)> {
    let leaf = identity.leaf()?;
    let (not_before, not_after) = validity(&leaf).ok()?;
    let now = SystemTime::now();
    let until = |t: SystemTime| t.duration_since(now).unwrap_or(Duration::ZERO);
    Some((until(renew_at(not_before, not_after)), until(not_after)))
}

/// The wait before another attempt: a tenth of the time left, within 1 s and 60 s.
pub fn retry_after(left: Duration) -> Duration {
    (left / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The longest single sleep: the schedule is read again after it, so a wall clock
/// that jumped (a suspended machine) delays a renewal by an hour at most.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Renews `identity` through `renew` whenever it comes due, until `shutdown`.
/// `renew` must swap the new certificate into `identity` before it returns Ok.
pub async fn keep_renewed<F, Fut>(
    what: &str,
    identity: Identity,
    mut renew: F,
    mut shutdown: watch::Receiver<bool>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut last_failed = false;
    loop {
        let (due, left) = schedule(&identity).unwrap_or_else(|| {
            tracing::warn!("{what}: cannot read the certificate's validity: renewing now");
            (Duration::ZERO, Duration::ZERO)
        });
        let wait = if !due.is_zero() {
            due.min(MAX_SLEEP)
        } else if last_failed {
            retry_after(left)
        } else {
            Duration::ZERO
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if !due.is_zero() {
                last_failed = false;
                continue;
            }
        }
        let result = tokio::select! {
            result = renew() => result,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (due, left) = schedule(&identity).unwrap_or((Duration::ZERO, Duration::ZERO));
        last_failed = match result {
            Ok(()) if !due.is_zero() => {
                tracing::info!(valid_for = ?left, next_in = ?due, "{what}: certificate renewed");
                false
            }
            Ok(()) => {
                tracing::warn!("{what}: the renewed certificate is already due; retrying");
                true
            }
            Err(e) => {
                tracing::warn!(expires_in = ?left, retry = ?retry_after(left), "{what}: renew the certificate: {e}");
                true
            }
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn identity(ca: &crate::ca::Ca, name: &str, life: Duration) -> Identity {
        let issued = ca.issue(&[name.to_string()], life).unwrap();
        Identity::from_pem(&issued.cert_pem, issued.key_pem.expose(), &[]).unwrap()
    }

    /// Runs `keep_renewed` on `id` with a step that fails its first `failures`
    /// calls, then issues a certificate living `next_life`; returns the call count,
    /// the shutdown switch and the task.
    fn renewer(
        ca: &Arc<crate::ca::Ca>,
        id: &Identity,
        failures: usize,
        next_life: Duration,
    ) -> (
        Arc<AtomicUsize>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = watch::channel(false);
        let (ca, step_id, counter) = (ca.clone(), id.clone(), calls.clone());
        let step = move || {
            let (ca, id, calls) = (ca.clone(), step_id.clone(), counter.clone());
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) < failures {
                    return Err("the master is away".to_string());
                }
                let issued = ca.issue(&["orion".to_string()], next_life).unwrap();
                id.replace(&issued.cert_pem, issued.key_pem.expose(), &[])
                    .map_err(|e| e.to_string())
            }
        };
        let task = tokio::spawn(keep_renewed("test", id.clone(), step, rx));
        (calls, tx, task)
    }

    #[test]
    fn retries_sooner_near_the_end() {
        assert_eq!(retry_after(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(
            retry_after(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(
            retry_after(Duration::from_secs(86400)),
            Duration::from_secs(60)
        );
    }

    #[tokio::test]
    async fn renews_at_two_thirds_and_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(crate::ca::Ca::create(dir.path()).unwrap());
        let life = Duration::from_millis(3000);
        let id = identity(&ca, "orion", life);
        let (due, left) = schedule(&id).unwrap();
        // Issued with a backdate of a tenth: due at 2/3 of 3.3 s from not_before.
        assert!(
            due > Duration::from_millis(1000) && due < Duration::from_millis(2000),
            "{due:?}"
        );
        assert!(
            left > Duration::from_millis(2000) && left <= life,
            "{left:?}"
        );
        let first = id.leaf().unwrap();
        let (renewals, tx, task) = renewer(&ca, &id, 0, life);
        tokio::time::sleep(due + Duration::from_millis(500)).await;
        assert_eq!(renewals.load(Ordering::SeqCst), 1);
        assert_ne!(
            id.leaf().unwrap(),
            first,
            "the cell holds the new certificate"
        );
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_renewal_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(crate::ca::Ca::create(dir.path()).unwrap());
        // Validity has whole seconds: the schedule says when the first try comes.
        let life = Duration::from_millis(3000);
        let id = identity(&ca, "orion", life);
        let first = id.leaf().unwrap();
        let (calls, tx, task) = renewer(&ca, &id, 1, Duration::from_secs(60));
        let (due, _) = schedule(&id).unwrap();
        tokio::time::sleep(due + Duration::from_millis(500)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "failed once, waiting to retry"
        );
        assert_eq!(id.leaf().unwrap(), first);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "retried after a second");
        assert_ne!(id.leaf().unwrap(), first);
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn a_swap_is_seen_by_every_clone_and_a_bad_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::ca::Ca::create(dir.path()).unwrap();
        let id = identity(&ca, "orion", Duration::from_secs(60));
        let clone = id.clone();
        let next = ca
            .issue(&["orion".to_string()], Duration::from_secs(60))
            .unwrap();
        id.replace(&next.cert_pem, next.key_pem.expose(), &[])
            .unwrap();
        assert_eq!(
            clone.leaf().unwrap(),
            crate::cert::cert_from_pem(&next.cert_pem).unwrap()
        );
        let other = ca
            .issue(&["orion".to_string()], Duration::from_secs(60))
            .unwrap();
        let err = id
            .replace(&next.cert_pem, other.key_pem.expose(), &[])
            .unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        assert_eq!(
            clone.leaf().unwrap(),
            crate::cert::cert_from_pem(&next.cert_pem).unwrap(),
            "a refused swap leaves the cell as it was"
        );
    }
}
