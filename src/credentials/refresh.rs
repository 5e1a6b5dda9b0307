//! The `corvid-credentials` thread: renews every bucket's temporary credentials before they
//! expire (schedule and backoff in the module doc of [`super`]).
//!
//! One thread for all buckets: it sleeps on a crossbeam channel until the earliest bucket is
//! due, so [`Refresher::stop`] (from `Server::halt`) wakes it at once.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{describe_expiry, process_env, Cell, Lease};

/// Renew at most this long before expiry.
pub const MAX_MARGIN: Duration = Duration::from_secs(300);
/// First retry after a failure; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The running refresh thread; stopped by [`Refresher::stop`] or on drop.
pub struct Refresher {
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Refresher {
    /// Starts the thread for the cells that have a source (static keys need none); `None` when
    /// there is nothing to refresh.
    pub fn start(cells: &[Arc<Cell>]) -> Result<Option<Refresher>, String> {
        let now = Instant::now();
        let slots: Vec<Slot> = cells
            .iter()
            .filter(|c| c.source.is_some())
            .map(|c| {
                let lease = c.lease();
                Slot {
                    next: lease.as_deref().map_or(Some(now + MIN_BACKOFF), |l| {
                        renew_at(l, now, SystemTime::now())
                    }),
                    failing: lease.is_none(),
                    backoff: MIN_BACKOFF,
                    cell: Arc::clone(c),
                }
            })
            .collect();
        if slots.is_empty() {
            return Ok(None);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let handle = std::thread::Builder::new()
            .name("corvid-credentials".into())
            .spawn(move || run(slots, rx))
            .map_err(|e| format!("cannot start the credentials thread: {e}"))?;
        Ok(Some(Refresher {
            stop: Some(tx),
            handle: Some(handle),
        }))
    }

    /// Stops the thread and waits for it (an attempt in progress finishes first, bounded by
    /// the sources' timeouts).
    #[expect(
        clippy::disallowed_methods,
        reason = "joins the credentials thread from the thread that stops the server"
    )]
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                log::error!("the credentials thread panicked");
            }
        }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Slot {
    cell: Arc<Cell>,
    /// When to fetch next; `None`: never (credentials without expiry).
    next: Option<Instant>,
    failing: bool,
    backoff: Duration,
}

/// When to renew `lease`, obtained at `now` (`SystemTime` `wall`): `expiry - margin`, margin =
/// min(5 min, half the remaining lifetime) + jitter of up to a tenth of it.
pub fn renew_at(lease: &Lease, now: Instant, wall: SystemTime) -> Option<Instant> {
    let expires = lease.expires_at?;
    let remaining = expires.duration_since(wall).unwrap_or_default();
    let margin = (remaining / 2).min(MAX_MARGIN);
    let jitter = margin.mul_f64(jitter_fraction() / 10.0);
    Some(now + remaining.saturating_sub(margin + jitter))
}

/// A fraction in [0, 1) that differs between calls and processes (no `rand` for one number).
fn jitter_fraction() -> f64 {
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = (n as u64 ^ u64::from(std::process::id())).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

#[expect(
    clippy::disallowed_methods,
    reason = "the credentials refresh thread, never a worker: it waits on its stop channel"
)]
fn run(mut slots: Vec<Slot>, stop: Receiver<()>) {
    loop {
        let now = Instant::now();
        let wait = slots
            .iter()
            .filter_map(|s| s.next)
            .min()
            .map(|t| t.saturating_duration_since(now));
        let woke = match wait {
            Some(d) => stop.recv_timeout(d),
            None => stop.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match woke {
            Err(RecvTimeoutError::Timeout) => {}
            // Stop: the sender was dropped (or sent).
            _ => return,
        }
        let now = Instant::now();
        for s in slots
            .iter_mut()
            .filter(|s| s.next.is_some_and(|t| t <= now))
        {
            attempt(s);
        }
    }
}

fn attempt(s: &mut Slot) {
    let cell = &s.cell;
    match cell.fetch(&process_env) {
        Ok(lease) => {
            if s.failing {
                log::info!(
                    "bucket {}: credentials from {} obtained again ({})",
                    cell.bucket,
                    cell.source_name(),
                    describe_expiry(&lease)
                );
            } else {
                log::debug!(
                    "bucket {}: credentials renewed ({})",
                    cell.bucket,
                    describe_expiry(&lease)
                );
            }
            // At most one fetch a second, even if an endpoint hands out credentials that are
            // (nearly) expired already.
            let now = Instant::now();
            s.next = renew_at(&lease, now, SystemTime::now()).map(|t| t.max(now + MIN_BACKOFF));
            s.failing = false;
            s.backoff = MIN_BACKOFF;
            cell.set(lease);
        }
        Err(e) => {
            let now = Instant::now();
            let wall = SystemTime::now();
            let current = cell.lease();
            if !s.failing {
                let until = match current.as_deref().and_then(|l| l.expires_at) {
                    Some(exp) if exp > wall => format!(
                        "keeping the current ones, valid for {} s more",
                        exp.duration_since(wall).unwrap_or_default().as_secs()
                    ),
                    _ => "requests get 503 until a refresh succeeds".to_owned(),
                };
                log::warn!(
                    "bucket {}: credentials refresh failed: {e}; {until}",
                    cell.bucket
                );
            }
            s.failing = true;
            // Not past the expiry of what is still in use: one more try just before it.
            let mut delay = s.backoff;
            if let Some(left) = current
                .as_deref()
                .and_then(|l| l.expires_at)
                .and_then(|exp| exp.duration_since(wall).ok())
            {
                if left > Duration::from_millis(200) {
                    delay = delay.min(left - Duration::from_millis(100));
                }
            }
            s.next = Some(now + delay);
            s.backoff = (s.backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::sigv4::Credentials;

    fn lease(expires_in: Option<Duration>, wall: SystemTime) -> Lease {
        Lease {
            credentials: Credentials {
                access_key: "a".into(),
                secret_key: "s".into(),
                session_token: None,
            },
            expires_at: expires_in.map(|d| wall + d),
        }
    }

    #[test]
    fn schedule() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        assert_eq!(renew_at(&lease(None, wall), now, wall), None);
        // One hour: 5 min (to 5.5 min with jitter) before expiry.
        let t = renew_at(&lease(Some(Duration::from_secs(3600)), wall), now, wall).unwrap();
        let d = t - now;
        assert!(
            d <= Duration::from_secs(3300) && d >= Duration::from_secs(3270),
            "{d:?}"
        );
        // Three seconds: after 1.35..1.5 s.
        let t = renew_at(&lease(Some(Duration::from_secs(3)), wall), now, wall).unwrap();
        let d = t - now;
        assert!(
            d <= Duration::from_millis(1500) && d >= Duration::from_millis(1350),
            "{d:?}"
        );
        // Already expired: at once.
        let past = Lease {
            expires_at: Some(wall - Duration::from_secs(1)),
            ..lease(None, wall)
        };
        assert_eq!(renew_at(&past, now, wall), Some(now));
        for _ in 0..100 {
            let f = jitter_fraction();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
