//! The wall clock the cache decides freshness by, injectable so tests advance time instead of
//! sleeping past TTLs.
//!
//! Everything that compares a time with an entry's freshness (the request path's decision,
//! `Age`, soft purges, token expiry) reads [`Clock::now_ms`] of the process's clock
//! (`Shared::clock`, also held by the cache tiers). Production uses [`Clock::system`]; tests
//! that run corvid in-process (`runtime::Server::start_with`) pass a [`Clock::manual`] and
//! move it with [`Clock::advance`]. It is an enum rather than a trait object so that the hit
//! path's reads stay one predictable branch and an inlined `clock_gettime` (vDSO), no
//! indirect call.
//!
//! What does not follow it, by design: timeouts and the idle sweep (monoio's timer, monotonic),
//! the `Date` header corvid writes for its own answers, and the disk tier's recovery (it drops
//! expired entries by the real time at start-up).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the system clock, or a manual one for tests.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// A clock that only moves when told to (shared by every clone).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn system() -> Clock {
        Clock::System
    }

    /// A manual clock reading `start_ms` until advanced.
    pub fn manual(start_ms: u64) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(start_ms)))
    }

    /// A manual clock starting at the system's current time (so dates that origins send, which
    /// are real, stay meaningful).
    pub fn manual_from_now() -> Clock {
        Clock::manual(system_now_ms())
    }

    #[inline]
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => system_now_ms(),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// Moves a manual clock forward; the system clock cannot be moved (a no-op, logged).
    pub fn advance(&self, by: Duration) {
        match self {
            Clock::System => log::warn!("the system clock cannot be advanced"),
            Clock::Manual(t) => {
                t.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
            }
        }
    }
}

/// Milliseconds since the Unix epoch by the system clock (0 before it).
#[inline]
pub fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let c = Clock::manual(1_000);
        let d = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        d.advance(Duration::from_millis(2_500));
        assert_eq!(c.now_ms(), 3_500);
        assert_eq!(c.now_secs(), 3);
    }

    #[test]
    fn system_clock_is_the_real_time() {
        let before = system_now_ms();
        let now = Clock::system().now_ms();
        assert!(now >= before && now - before < 60_000);
    }
}
