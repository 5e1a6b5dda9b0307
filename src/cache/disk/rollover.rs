//! Roll-over off the inserting thread: the segment thread creates the next segment before it
//! is needed (the *spare*) and releases the segments reclaim retires.
//!
//! An insert that fills the active segment must install a new one and, at capacity, drop the
//! oldest. Done on the inserting thread — a worker, in write-through mode — that cost every
//! other connection of the worker the time of a file creation, `ftruncate` and `mmap`, plus
//! the `munmap` and `close` that free the victim's pages: milliseconds per roll-over (see the
//! numbers in [`super`]). So one thread per [`super::DiskCache`] does both:
//!
//! - **Spare.** Whenever no spare exists or is being made, the roll-over (and `open`) reserves
//!   the next segment id and asks this thread to create that segment; the thread hands it
//!   back under the ring lock. The next roll-over swaps it in: a pointer move. If it is not
//!   ready in time, the roll-over creates a segment inline as before and counts it
//!   ([`super::DiskCache::inline_rollovers`]); the late spare, whose id is now older than the
//!   active segment's, is deleted on arrival (segment ids must follow write order).
//! - **Release.** Reclaim still unlinks a victim and removes its index entries on the inserting
//!   thread (tens of microseconds, and it keeps "file gone" meaning "entries gone"); dropping
//!   the last reference — the `munmap` and `close` that actually free the file's pages — is
//!   sent here. A reader still holding a value keeps the mapping until it lets go, wherever
//!   that happens.
//!
//! A spare is a file whose only written bytes are its 64-byte segment header; its blocks are
//! reserved (see [`Segment::create`]), so a full volume shows when the spare is made, on this
//! thread, and the tier stops admitting before any write needs it ([`super::outage`]). It is not
//! counted in `disk_bytes` or `segments()` until it becomes active (when reclaim makes room for
//! it, as for any new segment). A crash leaves it on disk as a valid, empty segment, which
//! recovery removes ([`super::recover`]); a crash while creating it leaves a `.tmp` file (see
//! [`Segment::create`]), which recovery removes too.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::outage::is_out_of_space;
use super::segment::Segment;
use super::Ring;

enum Job {
    /// Create segment `id` as the spare.
    Prepare(u64),
    /// Drop these retired segments (unmap and close them, freeing their pages).
    Release(Vec<Arc<Segment>>),
    /// Delete this unused spare (made before a write failed) and drop it.
    Discard(Arc<Segment>),
    /// Answer once every earlier job is done.
    Settle(Sender<()>),
}

/// The segment thread of one cache; stopped and joined on drop.
pub(super) struct SegmentThread {
    tx: Option<Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl SegmentThread {
    pub fn start(dir: PathBuf, size: u64, ring: Arc<Mutex<Ring>>) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let handle = std::thread::Builder::new()
            .name("corvid-disk-segments".into())
            .spawn(move || {
                // Jobs taken off the channel early (while freeing space for a spare), to be
                // done next, in their order.
                let mut later: VecDeque<Job> = VecDeque::new();
                while let Some(job) = next_job(&rx, &mut later) {
                    match job {
                        Job::Prepare(id) => {
                            let free = || free_queued(&rx, &mut later);
                            prepare_or_free(&dir, size, &ring, id, free)
                        }
                        other => run(other),
                    }
                }
            })?;
        Ok(SegmentThread {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Asks for segment `id` to be created as the spare; `false` if the thread is gone.
    pub fn prepare(&self, id: u64) -> bool {
        self.send(Job::Prepare(id)).is_ok()
    }

    /// Drops `segments` on the segment thread (here if it is gone).
    pub fn release(&self, segments: Vec<Arc<Segment>>) {
        if segments.is_empty() {
            return;
        }
        if let Err(job) = self.send(Job::Release(segments)) {
            drop(job);
        }
    }

    /// Deletes an unused spare on the segment thread (here if it is gone).
    pub fn discard(&self, seg: Arc<Segment>) {
        if let Err(Job::Discard(seg)) = self.send(Job::Discard(seg)) {
            remove(&seg);
        }
    }

    /// Blocks until every job sent so far is done.
    #[expect(
        clippy::disallowed_methods,
        reason = "waits for the segment thread: tests, benches and shutdown only, never a worker"
    )]
    pub fn settle(&self) {
        let (done, wait) = crossbeam_channel::bounded(1);
        if self.send(Job::Settle(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    fn send(&self, job: Job) -> Result<(), Job> {
        match &self.tx {
            Some(tx) => tx.send(job).map_err(|e| e.into_inner()),
            None => Err(job),
        }
    }
}

impl Drop for SegmentThread {
    #[expect(
        clippy::disallowed_methods,
        reason = "the last `DiskCache` is dropped after the workers are joined (`Server` holds one)"
    )]
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has done what it was given.
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                log::error!("disk cache: the segment thread panicked");
            }
        }
    }
}

/// The next job: one taken early first, else the next from the channel (waiting for it);
/// `None` once the cache is dropped.
#[expect(
    clippy::disallowed_methods,
    reason = "the segment thread waiting for work, never a worker"
)]
fn next_job(rx: &Receiver<Job>, later: &mut VecDeque<Job>) -> Option<Job> {
    later.pop_front().or_else(|| rx.recv().ok())
}

/// Does a job other than `Prepare`.
fn run(job: Job) {
    match job {
        Job::Prepare(_) => unreachable!("prepared by the loop"),
        Job::Release(segments) => drop(segments),
        Job::Discard(seg) => {
            remove(&seg);
            drop(seg);
        }
        Job::Settle(done) => {
            let _ = done.send(());
        }
    }
}

/// Releases and discards already queued, done ahead of their turn (other jobs are kept in
/// `later`, in order); whether there were any. A roll-over asks for the next spare before it
/// hands over its victims (so the spare is not late behind milliseconds of `munmap`); when the
/// volume is full, the spare fits only once those victims are gone.
fn free_queued(rx: &Receiver<Job>, later: &mut VecDeque<Job>) -> bool {
    let mut freed = false;
    while let Ok(job) = rx.try_recv() {
        match job {
            Job::Release(_) | Job::Discard(_) => {
                run(job);
                freed = true;
            }
            other => later.push_back(other),
        }
    }
    freed
}

/// [`prepare`], retrying once after `free` when the volume is full and `free` released
/// something.
fn prepare_or_free(
    dir: &std::path::Path,
    size: u64,
    ring: &Mutex<Ring>,
    id: u64,
    free: impl FnOnce() -> bool,
) {
    let made = match Segment::create(dir, id, size) {
        Err(e) if is_out_of_space(&e) && free() => Segment::create(dir, id, size),
        made => made,
    };
    deliver(ring, id, made);
}

/// Creates segment `id` as the spare and hands it over (see the module docs), with nothing
/// queued to free: what the thread does, for tests that drive it by hand.
#[cfg(test)]
pub(super) fn prepare(dir: &std::path::Path, size: u64, ring: &Mutex<Ring>, id: u64) {
    deliver(ring, id, Segment::create(dir, id, size));
}

fn deliver(ring: &Mutex<Ring>, id: u64, made: std::io::Result<Segment>) {
    let mut r = ring.lock().unwrap_or_else(|e| e.into_inner());
    let wanted = r.spare_pending == Some(id);
    if wanted {
        r.spare_pending = None;
    }
    match made {
        Ok(seg) if wanted => {
            r.spare = Some(Arc::new(seg));
            let capacity = r.capacity;
            r.outage.end(Instant::now(), capacity);
        }
        Ok(seg) => {
            // An inline roll-over overtook it: its id is older than the active segment's.
            drop(r);
            remove(&seg);
        }
        // Logged once per episode, not once per attempt (see `outage`).
        Err(e) => r.outage.begin(&e, Instant::now()),
    }
}

/// Deletes a segment nobody uses (a spare that lost its place).
#[expect(
    clippy::disallowed_methods,
    reason = "runs on the segment thread (`prepare`, `Job::Discard`), or where a `DiskCache` \
              is dropped when that thread is gone"
)]
pub(super) fn remove(seg: &Segment) {
    if let Err(e) = std::fs::remove_file(&seg.path) {
        log::warn!("disk cache: could not delete {}: {e}", seg.path.display());
    }
}
