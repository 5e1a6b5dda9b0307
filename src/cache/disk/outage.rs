//! The disk tier's "not admitting" state: what happens when no segment can be made (a full
//! volume, a removed directory, an I/O error), and how it is told.
//!
//! A full disk or a vanished directory is an ordinary, recoverable condition of a cache, not a
//! fault of each request: while it lasts, writes that need a new segment are refused at once
//! (counted, not logged, not retried on the worker), reads are served as usual, and requests
//! are answered from the origin and the other tiers. The condition is logged once when it
//! begins (with its cause) and once when it ends (with how long it lasted and how many writes
//! were refused), so a disk that stays full under load costs two log lines, not one per
//! request.
//!
//! It ends when a segment can be made again: every [`RETRY_AFTER`] a refused write asks the
//! segment thread for one, and when the volume is out of space the oldest segment is reclaimed
//! first and the tier's capacity lowered to what it holds now (so `capacity` larger than the
//! volume, or another process filling a shared disk, turns into a smaller cache instead of a
//! cache that stops). The lowered capacity stays until the next start.

use std::io;
use std::time::{Duration, Instant};

/// How often, at most, a refused write asks for a new segment.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One period of not admitting.
struct Episode {
    since: Instant,
    /// `ENOSPC`/`EDQUOT`: reclaiming can help.
    out_of_space: bool,
    /// When a refused write may next ask for a segment.
    retry_at: Instant,
    refused: u64,
    reclaimed: u64,
    unpersisted: u64,
}

/// The state, kept in the ring (under its lock).
pub(super) struct Outage {
    /// For the log lines.
    dir: String,
    current: Option<Episode>,
    /// Writes refused since open (`corvid_cache_disk_refused_writes_total`).
    refused_total: u64,
    /// Removals and soft purges not written to the log since open.
    unpersisted_total: u64,
}

/// Whether `e` says the volume (or the user's quota on it) is full.
pub fn is_out_of_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

impl Outage {
    pub fn new(dir: &std::path::Path) -> Outage {
        Outage {
            dir: dir.display().to_string(),
            current: None,
            refused_total: 0,
            unpersisted_total: 0,
        }
    }

    /// Whether the tier is not admitting writes that need a new segment.
    pub fn active(&self) -> bool {
        self.current.is_some()
    }

    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }

    /// A segment could not be made (or written): begins an episode unless one is under way,
    /// logging it once.
    pub fn begin(&mut self, e: &io::Error, now: Instant) {
        if let Some(ep) = &mut self.current {
            // The cause may change (a directory removed, then a full disk): reclaim when it can help.
            ep.out_of_space |= is_out_of_space(e);
            return;
        }
        let out_of_space = is_out_of_space(e);
        log::warn!(
            "disk tier {}: not admitting writes: {e}; serving from the origin and the other \
             tiers until {} (retrying every {:?})",
            self.dir,
            if out_of_space {
                "space comes back (the oldest segments are reclaimed to make room)"
            } else {
                "the directory can be written again"
            },
            RETRY_AFTER
        );
        self.current = Some(Episode {
            since: now,
            out_of_space,
            // Out of space, the first refused write reclaims at once: waiting cannot help.
            retry_at: if out_of_space { now } else { now + RETRY_AFTER },
            refused: 0,
            reclaimed: 0,
            unpersisted: 0,
        });
    }

    /// A segment is ready again: ends the episode, logging it once.
    pub fn end(&mut self, now: Instant, capacity: u64) {
        let Some(ep) = self.current.take() else {
            return;
        };
        log::warn!(
            "disk tier {}: admitting writes again after {:.1?} ({} writes refused, {} removals \
             not persisted, {} segments reclaimed; capacity now {} bytes)",
            self.dir,
            now.saturating_duration_since(ep.since),
            ep.refused,
            ep.unpersisted,
            ep.reclaimed,
            capacity
        );
    }

    /// Counts a refused write.
    pub fn refuse(&mut self) {
        self.refused_total += 1;
        if let Some(ep) = &mut self.current {
            ep.refused += 1;
        }
    }

    /// Counts a removal or soft purge that could not be written to the log (it holds in the
    /// running index; a restart would undo it).
    pub fn unpersisted(&mut self) {
        self.unpersisted_total += 1;
        if let Some(ep) = &mut self.current {
            ep.unpersisted += 1;
        }
    }

    pub fn unpersisted_total(&self) -> u64 {
        self.unpersisted_total
    }

    /// Whether a refused write should ask for a segment now (at most once per
    /// [`RETRY_AFTER`]); if so, the next one waits that long.
    pub fn retry_due(&mut self, now: Instant) -> bool {
        match &mut self.current {
            Some(ep) if now >= ep.retry_at => {
                ep.retry_at = now + RETRY_AFTER;
                true
            }
            _ => false,
        }
    }

    /// Whether reclaiming segments can end the episode.
    pub fn out_of_space(&self) -> bool {
        self.current.as_ref().is_some_and(|ep| ep.out_of_space)
    }

    /// Makes the next refused write retry at once, as if [`RETRY_AFTER`] had passed (tests
    /// decide when, instead of waiting for it).
    #[cfg(test)]
    pub fn retry_now(&mut self) {
        if let Some(ep) = &mut self.current {
            ep.retry_at = Instant::now();
        }
    }

    pub fn reclaimed(&mut self, n: u64) {
        if let Some(ep) = &mut self.current {
            ep.reclaimed += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_spaced_and_out_of_space_retries_at_once() {
        let t0 = Instant::now();
        let mut o = Outage::new(std::path::Path::new("/x"));
        assert!(!o.retry_due(t0), "nothing to retry outside an episode");
        o.begin(&io::Error::from_raw_os_error(libc::ENOENT), t0);
        assert!(o.active() && !o.out_of_space());
        assert!(!o.retry_due(t0));
        assert!(o.retry_due(t0 + RETRY_AFTER));
        assert!(!o.retry_due(t0 + RETRY_AFTER));
        o.begin(&io::Error::from_raw_os_error(libc::ENOSPC), t0);
        assert!(o.out_of_space(), "the cause is updated within an episode");
        o.refuse();
        o.end(t0, 0);
        assert!(!o.active());
        o.refuse();
        assert_eq!(o.refused_total(), 2);
        o.begin(&io::Error::from_raw_os_error(libc::ENOSPC), t0);
        assert!(
            o.retry_due(t0),
            "out of space: reclaim at the first refusal"
        );
    }
}
