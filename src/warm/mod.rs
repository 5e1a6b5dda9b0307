//! Cache warming: `POST /admin/cache/warm/{bucket}?prefix=p` starts a job that lists the prefix
//! at the origin and brings every object into the cache, with bounded concurrency, before
//! clients ask; `GET /admin/cache/warm/{id}` reports its progress, `DELETE` cancels it.
//!
//! This module owns the jobs ([`Jobs`], [`Job`]: what one is asked to do, its counters, its
//! state) and the progress JSON; [`run`] walks the listing and drives the fills. Filling one
//! object is the object path's business (`object::warm`): the same coalescing, owner routing
//! and slicing as a client's miss.
//!
//! # Where a job lives
//! A job runs as a task of the worker that answered the `POST`, with that request's config
//! generation, to its end (a reload does not stop it). Its counters are atomics behind an
//! `Arc`, in the process-wide table [`Jobs`] (in `context::Shared`), so any worker answers its
//! progress and any worker's `DELETE` reaches it. Jobs live in the process only: a restart
//! forgets them (and stops those running). In a fleet each member keeps its own jobs; a job
//! started on one member fills each object through its owner.
//!
//! # Bounds
//! - At most [`MAX_RUNNING`] jobs run at once (a further `POST` is a `503`), and [`MAX_KEPT`]
//!   are kept: a new job drops the oldest finished one beyond that.
//! - A job has at most `concurrency` origin requests in flight — its listing request included —
//!   where `concurrency` is `cache.warm_concurrency`, but never more than half the bucket's
//!   pool of origin connections (`max_idle_connections`, per worker), and at least 1: clients
//!   of the same worker keep the other half.
//!
//! # Cancelling
//! `DELETE` sets the job's flag. It is checked before every origin request the job would
//! start (a listing page, an object, a run of slices), so none starts once the `DELETE` has
//! been answered; fetches already under way finish (a coalesced client may be reading them),
//! then the state goes from `cancelling` to `cancelled`. A job also stops when the process
//! shuts down.

pub mod run;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;

use crate::error::{Error, Kind};
use crate::metrics::WarmOutcome;

/// Jobs running at once, at most (per process).
pub const MAX_RUNNING: usize = 4;
/// Jobs kept (running or finished) for their progress, at most.
pub const MAX_KEPT: usize = 32;
/// Failed keys a job's progress names, at most (the counts are complete).
pub const MAX_FAILED_KEYS: usize = 10;

/// How far a job has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Listing and filling (or, once cancelled, finishing the fetches under way).
    Running = 0,
    /// Every listed object was handled.
    Done = 1,
    /// Stopped by `DELETE` (or shutdown) before the end.
    Cancelled = 2,
    /// The listing failed (the objects handled before stay counted).
    Failed = 3,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Done,
            2 => State::Cancelled,
            3 => State::Failed,
            _ => State::Running,
        }
    }
}

/// Counters of one kind of object: how many and their listed bytes.
#[derive(Default)]
struct Count {
    objects: AtomicU64,
    bytes: AtomicU64,
}

impl Count {
    fn add(&self, bytes: u64) {
        self.objects.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "objects": self.objects.load(Ordering::Relaxed),
            "bytes": self.bytes.load(Ordering::Relaxed),
        })
    }
}

/// One warm job: what it was asked, its counters and state.
pub struct Job {
    pub id: String,
    /// The bucket's configured name.
    pub bucket: String,
    pub prefix: String,
    /// Origin requests in flight at most.
    pub concurrency: usize,
    pub started_unix_ms: u64,
    finished_unix_ms: AtomicU64,
    state: AtomicU8,
    cancel: AtomicBool,
    pages: AtomicU64,
    listing_done: AtomicBool,
    listed: Count,
    /// Per [`WarmOutcome`].
    outcomes: [Count; 3],
    /// The listing's error, for a failed job.
    error: Mutex<Option<String>>,
    /// The first [`MAX_FAILED_KEYS`] keys that failed, and why.
    failed_keys: Mutex<Vec<(String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Job {
    /// Whether the job was asked to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// One listing page with these objects' sizes.
    pub fn page(&self, sizes: impl Iterator<Item = u64>) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        for size in sizes {
            self.listed.add(size);
        }
    }

    pub fn listing_done(&self) {
        self.listing_done.store(true, Ordering::Relaxed);
    }

    /// One listed object handled.
    pub fn handled(&self, outcome: WarmOutcome, size: u64) {
        self.outcomes[outcome as usize].add(size);
    }

    /// A listed object that could not be warmed.
    pub fn failed_key(&self, key: &str, why: &str) {
        let mut keys = lock(&self.failed_keys);
        if keys.len() < MAX_FAILED_KEYS {
            keys.push((key.to_owned(), why.to_owned()));
        }
    }

    /// The end of the job: `error` is the listing's failure.
    pub fn finish(&self, error: Option<String>, now_unix_ms: u64) {
        let state = match (&error, self.cancelled()) {
            (Some(_), _) => State::Failed,
            (None, true) => State::Cancelled,
            (None, false) => State::Done,
        };
        *lock(&self.error) = error;
        self.finished_unix_ms.store(now_unix_ms, Ordering::Relaxed);
        self.state.store(state as u8, Ordering::Release);
    }

    /// The progress JSON (`GET /admin/cache/warm/{id}`; README "Cache warming").
    pub fn progress(&self) -> serde_json::Value {
        let state = match (self.state(), self.cancelled()) {
            (State::Running, true) => "cancelling",
            (State::Running, false) => "running",
            (State::Done, _) => "done",
            (State::Cancelled, _) => "cancelled",
            (State::Failed, _) => "failed",
        };
        let finished = self.finished_unix_ms.load(Ordering::Relaxed);
        let failed_keys: Vec<_> = lock(&self.failed_keys)
            .iter()
            .map(|(k, why)| json!({"key": k, "error": why}))
            .collect();
        json!({
            "job": self.id,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "state": state,
            "concurrency": self.concurrency,
            "pages": self.pages.load(Ordering::Relaxed),
            "listing_done": self.listing_done.load(Ordering::Relaxed),
            "listed": self.listed.json(),
            "filled": self.outcomes[WarmOutcome::Filled as usize].json(),
            "skipped": self.outcomes[WarmOutcome::Skipped as usize].json(),
            "failed": self.outcomes[WarmOutcome::Failed as usize].json(),
            "failed_keys": failed_keys,
            "error": *lock(&self.error),
            "started_unix_ms": self.started_unix_ms,
            "finished_unix_ms": (finished > 0).then_some(finished),
        })
    }
}

/// The process's warm jobs (see the module docs for the bounds).
pub struct Jobs {
    kept: Mutex<VecDeque<Arc<Job>>>,
    next: AtomicU64,
    /// The process's instance tag: ids differ from one process to the next.
    tag: u32,
}

impl Jobs {
    pub fn new(tag: u32) -> Jobs {
        Jobs {
            kept: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(1),
            tag,
        }
    }

    /// Registers a new running job, or refuses when [`MAX_RUNNING`] are running (503).
    pub fn add(
        &self,
        bucket: &str,
        prefix: &str,
        concurrency: usize,
        now_unix_ms: u64,
    ) -> Result<Arc<Job>, Error> {
        let mut kept = lock(&self.kept);
        let running = kept.iter().filter(|j| j.state() == State::Running).count();
        if running >= MAX_RUNNING {
            return Err(Error::client(
                Kind::Unavailable,
                format!("{MAX_RUNNING} warm jobs are running already: try again when one ended"),
            ));
        }
        while kept.len() >= MAX_KEPT {
            // Fewer run than are kept: a finished one is there to drop.
            match kept.iter().position(|j| j.state() != State::Running) {
                Some(i) => drop(kept.remove(i)),
                None => break,
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job {
            id: format!("{:08x}-{n}", self.tag),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            concurrency,
            started_unix_ms: now_unix_ms,
            finished_unix_ms: AtomicU64::new(0),
            state: AtomicU8::new(State::Running as u8),
            cancel: AtomicBool::new(false),
            pages: AtomicU64::new(0),
            listing_done: AtomicBool::new(false),
            listed: Count::default(),
            outcomes: Default::default(),
            error: Mutex::new(None),
            failed_keys: Mutex::new(Vec::new()),
        });
        kept.push_back(Arc::clone(&job));
        Ok(job)
    }

    /// The job with this id, while it is kept.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        lock(&self.kept).iter().find(|j| j.id == id).cloned()
    }
}

/// The concurrency of a job on a bucket whose per-worker pool keeps `max_idle_connections`:
/// `configured`, but at most half the pool, and at least 1 (see the module docs).
pub fn concurrency(configured: usize, max_idle_connections: usize) -> usize {
    configured.min(max_idle_connections / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_bounded_by_half_the_pool() {
        assert_eq!(concurrency(4, 64), 4);
        assert_eq!(concurrency(64, 64), 32);
        assert_eq!(concurrency(8, 5), 2);
        assert_eq!(concurrency(4, 0), 1);
        assert_eq!(concurrency(4, 1), 1);
    }

    #[test]
    fn progress_moves_and_finishes() {
        let jobs = Jobs::new(0xabc);
        let job = jobs.add("b", "p/", 2, 1000).unwrap();
        assert_eq!(job.id, "00000abc-1");
        let p = job.progress();
        assert_eq!(p["state"], "running");
        assert_eq!(p["listed"]["objects"], 0);
        assert_eq!(p["finished_unix_ms"], serde_json::Value::Null);
        job.page([3, 4, 5].into_iter());
        job.handled(WarmOutcome::Filled, 3);
        job.handled(WarmOutcome::Skipped, 4);
        job.handled(WarmOutcome::Failed, 5);
        job.failed_key("p/x", "gone");
        let p = job.progress();
        assert_eq!(p["pages"], 1);
        assert_eq!(p["listed"], json!({"objects": 3, "bytes": 12}));
        assert_eq!(p["filled"], json!({"objects": 1, "bytes": 3}));
        assert_eq!(p["skipped"], json!({"objects": 1, "bytes": 4}));
        assert_eq!(p["failed"], json!({"objects": 1, "bytes": 5}));
        assert_eq!(p["failed_keys"], json!([{"key": "p/x", "error": "gone"}]));
        job.cancel();
        assert_eq!(job.progress()["state"], "cancelling");
        job.finish(None, 2000);
        assert_eq!(job.progress()["state"], "cancelled");
        assert_eq!(job.progress()["finished_unix_ms"], 2000);
        let other = jobs.add("b", "", 1, 0).unwrap();
        other.finish(Some("listing failed".into()), 1);
        assert_eq!(other.progress()["state"], "failed");
        assert_eq!(other.progress()["error"], "listing failed");
        assert!(jobs.get(&job.id).is_some());
        assert!(jobs.get("nope").is_none());
    }

    #[test]
    fn running_jobs_are_bounded_and_finished_ones_dropped_first() {
        let jobs = Jobs::new(1);
        let running: Vec<_> = (0..MAX_RUNNING)
            .map(|_| jobs.add("b", "", 1, 0).unwrap())
            .collect();
        let e = jobs.add("b", "", 1, 0).err().expect("refused");
        assert_eq!(e.status(), 503);
        for j in &running {
            j.finish(None, 1);
        }
        let mut ids = Vec::new();
        for _ in 0..MAX_KEPT + 3 {
            let j = jobs.add("b", "", 1, 0).unwrap();
            j.finish(None, 1);
            ids.push(j.id.clone());
        }
        // The oldest went first; the newest MAX_KEPT stay.
        assert!(jobs.get(&running[0].id).is_none());
        assert!(jobs.get(&ids[2]).is_none());
        assert!(jobs.get(&ids[3]).is_some());
        assert!(jobs.get(ids.last().unwrap()).is_some());
        assert_eq!(lock(&jobs.kept).len(), MAX_KEPT);
    }
}
