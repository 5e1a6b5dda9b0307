//! Memory a connection needs only while it is busy, recycled per worker: read and head
//! buffers, and the allocation a request's future runs in.
//!
//! Why: a connection waiting for its next request should cost next to nothing (thousands of
//! idle keep-alive clients are normal). Its task keeps only a small future; the buffers and the
//! large future that reads and answers requests (parser state, the proxy's state machine, the
//! response writer — several KiB) are taken from here when bytes arrive and given back when the
//! connection is idle again. Recycling, not allocating, keeps the hit path allocation-free.

use std::alloc::Layout;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Capacity of a new read buffer; it grows up to the head limits when a head needs it.
pub const READ_BUF: usize = 4096;
/// Capacity of a new response-head buffer.
pub const OUT_BUF: usize = 1024;
/// Read buffers that grew past this are not kept (a large head is rare).
const MAX_KEPT_READ_BUF: usize = 16 * 1024;
/// Buffers and future blocks kept per kind at most: as many as requests one worker typically
/// has in flight at once. Beyond that a burst allocates and frees, as without the pool.
const MAX_KEPT: usize = 256;

/// One worker's recycled connection memory.
#[derive(Default)]
pub struct Pools {
    read: RefCell<Vec<Vec<u8>>>,
    out: RefCell<Vec<Vec<u8>>>,
    /// Free blocks per layout (a handful of future types use the pool).
    blocks: RefCell<Vec<(Layout, Vec<NonNull<u8>>)>>,
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
            let mut list = self.read.borrow_mut();
            if list.len() < MAX_KEPT {
                read.clear();
                list.push(read);
            }
        }
        if out.capacity() > 0 {
            let mut list = self.out.borrow_mut();
            if list.len() < MAX_KEPT {
                out.clear();
                list.push(out);
            }
        }
    }

    /// Runs `f` in a recycled allocation (see [`Pooled`]).
    pub fn place<F: Future>(&self, f: F) -> Pooled<'_, F> {
        let layout = Layout::new::<F>();
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
        // SAFETY: `block` is valid for writes of `layout` = `Layout::new::<F>()` (fresh from the
        // allocator or a free block of exactly that layout, or dangling-but-aligned for a
        // zero-sized F), and nothing else refers to it.
        unsafe { ptr.as_ptr().write(f) };
        Pooled { pools: self, ptr }
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
                blocks.push((layout, Vec::new()));
                &mut blocks.last_mut().expect("just pushed").1
            }
        };
        if list.len() < MAX_KEPT {
            list.push(block);
        } else {
            // SAFETY: `block` was allocated with `layout` (see `place`) and is no longer used.
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        for (layout, list) in self.blocks.get_mut().drain(..) {
            for block in list {
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
        let layout = Layout::new::<F>();
        // SAFETY: `ptr` holds a live F (written in `place`, dropped only here).
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
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
            pools.read.borrow().len(),
            1,
            "the oversized one was dropped"
        );
        assert_eq!(
            pools.out.borrow().len(),
            1,
            "an unallocated out buffer is not kept"
        );
    }
}
