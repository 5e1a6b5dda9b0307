//! Memory a connection needs only while it is busy, recycled per worker: read and head
//! buffers, and the allocation a request's future runs in.
//!
//! Why: a connection waiting for its next request should cost next to nothing (thousands of
//! idle keep-alive clients are normal). Its task keeps only a small future; the buffers and the
//! large future that reads and answers requests (parser state, the proxy's state machine, the
//! response writer — several KiB) are taken from here when bytes arrive and given back when the
//! connection is idle again. Recycling, not allocating, keeps the hit path allocation-free.
//!
//! After a burst the memory is given back (issue 15): thousands of clients arriving at once
//! make as many connections busy at once, and what they took must not stay with the worker
//! once they are idle. Each free list is bounded (256 blocks) and [`Pools::trim`] (run every
//! [`TRIM_INTERVAL`] by the worker) frees the entries no connection took during the last
//! interval — the list's low-water mark — so a steady load keeps exactly what it cycles through
//! and a burst's surplus is freed one interval after it. Freed memory goes to the allocator,
//! which keeps it in holes between the idle connections' long-lived allocations (the burst
//! allocated them interleaved); [`Pools::trim`] then asks glibc to return the free pages to
//! the system (`malloc_trim`) when enough was freed since it last did, so that RSS follows.

use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};
use std::time::Duration;

/// Capacity of a new read buffer; it grows up to the head limits when a head needs it.
pub const READ_BUF: usize = 4096;
/// Capacity of a new response-head buffer.
pub const OUT_BUF: usize = 1024;
/// Read buffers that grew past this are not kept (a large head is rare).
const MAX_KEPT_READ_BUF: usize = 16 * 1024;
/// Buffers and future blocks kept per kind at most: as many as requests one worker typically
/// has in flight at once. Beyond that a burst allocates and frees, as without the pool.
const MAX_KEPT: usize = 256;
/// How often the worker trims its pools ([`Pools::trim`]): a burst's memory is back with the
/// allocator one to two intervals after the burst.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes the pools must have freed since the last `malloc_trim` before the next: a burst's
/// worth, so that a steady load never pays for it (one call walks every malloc arena).
const RETURN_TO_SYSTEM_AFTER: usize = 1024 * 1024;

/// A stack of free entries that remembers how low it ran since the last trim.
struct FreeList<T> {
    items: Vec<T>,
    /// The fewest entries the list held since the last trim: that many were not needed.
    low: usize,
}

impl<T> Default for FreeList<T> {
    fn default() -> Self {
        FreeList {
            items: Vec::new(),
            low: 0,
        }
    }
}

impl<T> FreeList<T> {
    fn pop(&mut self) -> Option<T> {
        let item = self.items.pop();
        self.low = self.low.min(self.items.len());
        item
    }

    /// Keeps `item` unless the list is full; gives it back when it is.
    fn push(&mut self, item: T) -> Option<T> {
        if self.items.len() < MAX_KEPT {
            self.items.push(item);
            None
        } else {
            Some(item)
        }
    }

    /// Removes the entries nobody took since the last trim (the bottom of the stack: the
    /// longest unused) and starts a new interval.
    fn trim(&mut self) -> std::vec::Drain<'_, T> {
        let unused = self.low.min(self.items.len());
        self.low = self.items.len() - unused;
        self.items.drain(..unused)
    }
}

/// One worker's recycled connection memory.
#[derive(Default)]
pub struct Pools {
    read: RefCell<FreeList<Vec<u8>>>,
    out: RefCell<FreeList<Vec<u8>>>,
    /// Free blocks per layout (a handful of future types use the pool).
    blocks: RefCell<Vec<(Layout, FreeList<NonNull<u8>>)>>,
    /// Bytes freed to the allocator since the allocator was last asked to return free pages.
    freed: Cell<usize>,
    /// Futures running in blocks of the pool now (connections busy).
    placed: Cell<usize>,
}

impl Pools {
    /// An empty read buffer with at least [`READ_BUF`] capacity.
    pub fn read_buf(&self) -> Vec<u8> {
        self.read
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(READ_BUF))
    }

    /// An empty response-head buffer.
    pub fn out_buf(&self) -> Vec<u8> {
        self.out
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(OUT_BUF))
    }

    /// Gives buffers back (cleared here). Buffers the connection loop lost to a cancelled read
    /// come back unallocated and are dropped.
    pub fn give_back(&self, mut read: Vec<u8>, mut out: Vec<u8>) {
        if read.capacity() >= READ_BUF && read.capacity() <= MAX_KEPT_READ_BUF {
            read.clear();
            read = self.read.borrow_mut().push(read).unwrap_or_default();
        }
        self.note_freed(read.capacity());
        if out.capacity() > 0 {
            out.clear();
            out = self.out.borrow_mut().push(out).unwrap_or_default();
        }
        self.note_freed(out.capacity());
    }

    /// Runs `f` in a recycled allocation (see [`Pooled`]).
    pub fn place<F: Future>(&self, f: F) -> Pooled<'_, F> {
        let layout = block_layout::<F>();
        let block = if layout.size() == 0 {
            NonNull::<F>::dangling().cast::<u8>()
        } else {
            self.take_block(layout).unwrap_or_else(|| {
                // SAFETY: `layout` has a non-zero size (checked above).
                let p = unsafe { std::alloc::alloc(layout) };
                NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
            })
        };
        let ptr = block.cast::<F>();
        // SAFETY: `block` is valid for writes of `layout` = `block_layout::<F>()`, which fits
        // an F (its size and alignment are at least `Layout::new::<F>()`'s): fresh from the
        // allocator or a free block of exactly that layout, or dangling-but-aligned for a
        // zero-sized F. Nothing else refers to it.
        unsafe { ptr.as_ptr().write(f) };
        self.placed.set(self.placed.get() + 1);
        Pooled { pools: self, ptr }
    }

    /// As many connections are busy as the pool keeps blocks for: a connection that has
    /// answered everything should go idle at once rather than linger with its busy memory, so
    /// that a burst of clients recycles the pool's blocks instead of allocating one per client
    /// (and leaving them interleaved with the idle connections' memory).
    pub fn crowded(&self) -> bool {
        self.placed.get() >= MAX_KEPT
    }

    /// Frees what no connection took since the last trim, and when the pools freed a burst's
    /// worth since the allocator last returned free pages, has it return them now. Returns
    /// the bytes freed by this trim.
    pub fn trim(&self) -> usize {
        let mut bytes = 0;
        for b in self.read.borrow_mut().trim() {
            bytes += b.capacity();
        }
        for b in self.out.borrow_mut().trim() {
            bytes += b.capacity();
        }
        for (layout, list) in self.blocks.borrow_mut().iter_mut() {
            for block in list.trim() {
                // SAFETY: every kept block was allocated with its list's layout and is unused.
                unsafe { std::alloc::dealloc(block.as_ptr(), *layout) };
                bytes += layout.size();
            }
        }
        self.note_freed(bytes);
        if self.freed.get() >= RETURN_TO_SYSTEM_AFTER {
            self.freed.set(0);
            return_free_pages();
        }
        bytes
    }

    /// Entries kept, of every kind (for tests and diagnostics).
    pub fn kept(&self) -> usize {
        self.read.borrow().items.len()
            + self.out.borrow().items.len()
            + self
                .blocks
                .borrow()
                .iter()
                .map(|(_, l)| l.items.len())
                .sum::<usize>()
    }

    fn note_freed(&self, bytes: usize) {
        self.freed.set(self.freed.get().saturating_add(bytes));
    }

    fn take_block(&self, layout: Layout) -> Option<NonNull<u8>> {
        let mut blocks = self.blocks.borrow_mut();
        blocks.iter_mut().find(|(l, _)| *l == layout)?.1.pop()
    }

    fn give_block(&self, layout: Layout, block: NonNull<u8>) {
        let mut blocks = self.blocks.borrow_mut();
        let list = match blocks.iter().position(|(l, _)| *l == layout) {
            Some(i) => &mut blocks[i].1,
            None => {
                blocks.push((layout, FreeList::default()));
                &mut blocks.last_mut().expect("just pushed").1
            }
        };
        if let Some(block) = list.push(block) {
            // SAFETY: `block` was allocated with `layout` (see `place`) and is no longer used.
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
            drop(blocks);
            self.note_freed(layout.size());
        }
    }
}

/// The allocation a future of type `F` runs in: its own layout, except that a future of a page
/// or more gets whole pages of its own (page-aligned, rounded up to pages).
///
/// Why: in a burst these blocks are allocated between the long-lived allocations of the
/// connections arriving at the same time (their tasks and sockets). A block sharing its first
/// and last page with them keeps those pages resident after it is freed; a block of whole
/// pages leaves whole free pages behind, which `malloc_trim` returns to the system. Measured
/// with `perf/idle_conns.sh` (burst pattern); the blocks are recycled, so the hit path does not
/// pay for the alignment.
fn block_layout<F>() -> Layout {
    const PAGE: usize = 4096;
    let layout = Layout::new::<F>();
    if layout.size() < PAGE {
        return layout;
    }
    layout
        .align_to(PAGE)
        .map(|l| l.pad_to_align())
        .unwrap_or(layout)
}

/// Asks the allocator to return its free pages to the system.
///
/// glibc gives memory back by itself only from the top of a heap; the pages of a burst's
/// buffers and futures lie in holes between the idle connections' small allocations (tasks,
/// sockets) made while the burst arrived, and only `malloc_trim` releases those
/// (`MADV_DONTNEED` on every whole free page, in every arena). It is CPU work (no IO), a few
/// milliseconds for tens of MiB, and runs only after a burst (see `RETURN_TO_SYSTEM_AFTER`).
fn return_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        for (layout, list) in self.blocks.get_mut().drain(..) {
            for block in list.items {
                // SAFETY: every kept block was allocated with its list's layout and is unused.
                unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
            }
        }
    }
}

/// A future running in a block of [`Pools`]: polled in place (the block never moves, so
/// pinning holds), dropped in place, and its block returned to the pool when this is dropped.
pub struct Pooled<'p, F: Future> {
    pools: &'p Pools,
    ptr: NonNull<F>,
}

impl<F: Future> Future for Pooled<'_, F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `ptr` points to a live F written in `place`, owned by this `Pooled` alone
        // and never moved until it is dropped in place in `drop`, so pinning it is sound.
        let f = unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) };
        f.poll(cx)
    }
}

impl<F: Future> Drop for Pooled<'_, F> {
    fn drop(&mut self) {
        let layout = block_layout::<F>();
        // SAFETY: `ptr` holds a live F (written in `place`, dropped only here).
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        self.pools.placed.set(self.pools.placed.get() - 1);
        if layout.size() > 0 {
            self.pools.give_block(layout, self.ptr.cast());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn futures_run_in_recycled_blocks_and_are_dropped() {
        let pools = Pools::default();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let drops = Rc::new(Cell::new(0));
        struct Guard(Rc<Cell<u32>>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        rt.block_on(async {
            let mut addrs = Vec::new();
            for i in 0..3u64 {
                let g = Guard(Rc::clone(&drops));
                let big = [i as u8; 512];
                let f = pools.place(async move {
                    monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                    let _g = g;
                    big.iter().map(|&b| b as u64).sum::<u64>()
                });
                addrs.push(f.ptr.as_ptr() as usize);
                assert_eq!(f.await, 512 * i);
            }
            assert_eq!(drops.get(), 3);
            assert!(addrs.windows(2).all(|w| w[0] == w[1]), "one block reused");
            // A future dropped before completion is dropped in place too.
            let g = Guard(Rc::clone(&drops));
            let f = pools.place(async move {
                let _g = g;
                std::future::pending::<()>().await
            });
            drop(f);
            assert_eq!(drops.get(), 4);
        });
    }

    /// A burst takes more than the pool keeps; afterwards the pool holds at most its bound,
    /// and once no connection takes from it for a whole trim interval it holds nothing. A
    /// steady load keeps what it cycles through.
    #[test]
    fn a_burst_is_given_back_and_a_steady_load_keeps_its_memory() {
        let pools = Pools::default();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        // A future of over a page held across an await, like a connection's busy phase.
        async fn job(v: u8) -> usize {
            let a = [v; 5000];
            std::future::ready(()).await;
            a.len()
        }
        rt.block_on(async {
            // A burst: 3 × MAX_KEPT connections busy at once.
            let mut busy = Vec::new();
            for _ in 0..3 * MAX_KEPT {
                let f = pools.place(job(0));
                busy.push((f, pools.read_buf(), pools.out_buf()));
            }
            assert!(
                pools.crowded(),
                "as many busy as the pool keeps: go idle at once"
            );
            for (f, r, o) in busy {
                assert_eq!(f.await, 5000);
                pools.give_back(r, o);
            }
            assert!(!pools.crowded());
            assert_eq!(pools.kept(), 3 * MAX_KEPT, "bounded: MAX_KEPT of each kind");
            // The interval of the burst took from the lists: nothing is trimmed yet.
            assert_eq!(pools.trim(), 0);
            assert_eq!(pools.kept(), 3 * MAX_KEPT);
            // A steady load of two connections for an interval: they keep two of each.
            for _ in 0..10 {
                let a = pools.place(job(1));
                let b = pools.place(job(1));
                let bufs = [
                    (pools.read_buf(), pools.out_buf()),
                    (pools.read_buf(), pools.out_buf()),
                ];
                assert_eq!(a.await + b.await, 10_000);
                for (r, o) in bufs {
                    pools.give_back(r, o);
                }
            }
            let freed = pools.trim();
            assert_eq!(pools.kept(), 3 * 2, "what the load cycled through is kept");
            assert!(freed >= (MAX_KEPT - 2) * (5000 + READ_BUF + OUT_BUF));
            // No load for an interval: everything is freed.
            assert!(pools.trim() > 0);
            assert_eq!(pools.kept(), 0);
        });
    }

    #[test]
    fn buffers_come_back_cleared_and_oversized_ones_are_dropped() {
        let pools = Pools::default();
        let mut r = pools.read_buf();
        r.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let p = r.as_ptr();
        pools.give_back(r, pools.out_buf());
        let r = pools.read_buf();
        assert!(r.is_empty() && r.as_ptr() == p);
        let mut big = Vec::with_capacity(MAX_KEPT_READ_BUF * 2);
        big.push(1);
        pools.give_back(big, Vec::new());
        pools.give_back(r, Vec::new());
        assert_eq!(
            pools.read.borrow().items.len(),
            1,
            "the oversized one was dropped"
        );
        assert_eq!(
            pools.out.borrow().items.len(),
            1,
            "an unallocated out buffer is not kept"
        );
    }
}
