//! A response head and a cached body written with one `writev`, without copying the body.
//!
//! The hit path's rule is: allocate nothing beyond the response head and never copy the body.
//! [`HeadBody`] owns the head buffer (reused per connection), a reference-counted view of the
//! cached body ([`Body`]), and the two `iovec`s that point into them. The `iovec`s live in a
//! `Box` that is allocated once per connection and reused, so the pointer the kernel reads
//! stays put while monoio owns the value, and a hit allocates nothing.
//!
//! A body is a `Bytes`, or bytes *lent* by a reference-counted owner that the holder releases
//! when it is done ([`Body::Lent`]): a memory-tier entry keeps a small body in its own
//! allocation and lends it with one count increment, where a `Bytes` over it would need an
//! owner record of its own (`Bytes::from_owner`: a 32-byte allocation per entry, issue 16,
//! perf/RESULTS.md "fourth step"). This module knows nothing of the owner but its release
//! function.

use std::cell::RefCell;

use bytes::Bytes;
use monoio::buf::IoVecBuf;
use monoio::io::AsyncWriteRent;

/// A body to send: shared bytes, or bytes lent by a reference-counted owner.
pub enum Body {
    Shared(Bytes),
    Lent(Lent),
}

impl Default for Body {
    fn default() -> Body {
        Body::Shared(Bytes::new())
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::Shared(b)
    }
}

impl Body {
    /// The bytes to send.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Body::Shared(b) => b,
            Body::Lent(l) => l.as_slice(),
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes lent by a reference-counted owner: one counted reference to the owner (taken by
/// whoever made the `Lent`), given up by `release` when the `Lent` is dropped. Making one
/// allocates nothing.
pub struct Lent {
    ptr: *const u8,
    len: usize,
    owner: *const (),
    release: unsafe fn(*const ()),
}

impl Lent {
    /// Lends the `len` bytes at `ptr`, kept alive by the counted reference `owner`.
    ///
    /// # Safety
    /// `owner` is one counted reference that `release(owner)` gives up, and nothing else
    /// gives it up; the `len` bytes at `ptr` are initialised, are not written and do not move
    /// while that reference is held (they belong to the owner's allocation).
    pub unsafe fn new(
        ptr: *const u8,
        len: usize,
        owner: *const (),
        release: unsafe fn(*const ()),
    ) -> Lent {
        Lent {
            ptr,
            len,
            owner,
            release,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `new`'s contract: the bytes stay valid and unchanged while `self` holds the
        // owner's reference, which it gives up only in `drop`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // SAFETY: `new`'s contract: `self` holds one reference to `owner`, given up once, here.
        unsafe { (self.release)(self.owner) }
    }
}

/// Head + body for one vectored write; reusable across requests.
pub struct HeadBody {
    pub head: Vec<u8>,
    body: Body,
    iov: Box<[libc::iovec; 2]>,
    /// Bytes already written (for partial writes).
    done: usize,
}

impl Default for HeadBody {
    fn default() -> Self {
        HeadBody {
            head: Vec::with_capacity(1024),
            body: Body::default(),
            iov: Box::new([empty_iovec(), empty_iovec()]),
            done: 0,
        }
    }
}

/// At most this many vectored-write holders are kept per worker for reuse.
const MAX_POOLED_HEAD_BODIES: usize = 1024;

/// A worker's free list of [`HeadBody`] holders, so that a hit allocates no `iovec` box.
#[derive(Default)]
pub struct HeadBodies(RefCell<Vec<HeadBody>>);

impl HeadBodies {
    pub fn take(&self) -> HeadBody {
        self.0.borrow_mut().pop().unwrap_or_default()
    }

    pub fn give_back(&self, hb: HeadBody) {
        let mut list = self.0.borrow_mut();
        if list.len() < MAX_POOLED_HEAD_BODIES {
            list.push(hb);
        }
    }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

impl HeadBody {
    /// Prepares to send `head` (taken from the caller's buffer) and `body`.
    pub fn set(&mut self, head: &mut Vec<u8>, body: Body) {
        std::mem::swap(&mut self.head, head);
        self.body = body;
        self.done = 0;
        self.sync();
    }

    /// Gives the head buffer back (cleared) and drops the body reference.
    pub fn take_head(&mut self, head: &mut Vec<u8>) {
        std::mem::swap(&mut self.head, head);
        head.clear();
        self.body = Body::default();
        self.done = 0;
        self.sync();
    }

    fn total(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Points the iovecs at what is left to write.
    fn sync(&mut self) {
        let h = self.done.min(self.head.len());
        let b = self.done - h;
        let body = self.body.as_slice();
        self.iov[0] = libc::iovec {
            iov_base: self.head[h..].as_ptr() as *mut libc::c_void,
            iov_len: self.head.len() - h,
        };
        self.iov[1] = libc::iovec {
            iov_base: body[b..].as_ptr() as *mut libc::c_void,
            iov_len: body.len() - b,
        };
    }

    /// Writes everything; the value comes back for reuse.
    pub async fn write_all<S: AsyncWriteRent>(mut self, io: &mut S) -> (std::io::Result<()>, Self) {
        while self.done < self.total() {
            let (res, back) = io.writev(self).await;
            self = back;
            match res {
                Ok(0) => {
                    return (
                        Err(std::io::Error::new(
                            std::io::ErrorKind::WriteZero,
                            "client stopped reading",
                        )),
                        self,
                    )
                }
                Ok(n) => {
                    self.done += n;
                    self.sync();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), self),
            }
        }
        (Ok(()), self)
    }
}

// SAFETY: `read_iovec_ptr` returns a pointer into `self.iov`, a `Box` whose heap address does
// not change when `HeadBody` is moved, and `sync` keeps both entries pointing into `self.head`
// and `self.body` (heap buffers that are neither reallocated nor freed while monoio owns the
// value, since only `set`/`take_head`/`write_all`, which need `&mut self` or ownership, change
// them; a lent body's bytes stay put while its owner's reference is held, `Lent::new`). Each entry's length stays within its buffer. The pointer skips an empty first entry
// and the count covers only the entries from there on (at most two, both inside `iov`).
unsafe impl IoVecBuf for HeadBody {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        // Skip a finished head: some writers (monoio-rustls) only look at the first entry and
        // would see nothing to write.
        let first = usize::from(self.iov[0].iov_len == 0);
        self.iov[first..].as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.iter().filter(|v| v.iov_len > 0).count().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iovecs_track_partial_writes() {
        let mut hb = HeadBody::default();
        let mut head = b"HEAD".to_vec();
        hb.set(&mut head, Bytes::from_static(b"body!").into());
        assert_eq!(hb.total(), 9);
        assert_eq!(hb.read_iovec_len(), 2);
        hb.done = 2;
        hb.sync();
        assert_eq!(hb.iov[0].iov_len, 2);
        assert_eq!(hb.iov[1].iov_len, 5);
        hb.done = 6;
        hb.sync();
        assert_eq!(hb.iov[0].iov_len, 0);
        assert_eq!(hb.iov[1].iov_len, 3);
        assert_eq!(hb.read_iovec_len(), 1);
        assert_eq!(hb.read_iovec_ptr(), &hb.iov[1] as *const libc::iovec);
        // SAFETY: the iovec points into the body, which has 3 bytes left from there.
        let rest = unsafe { std::slice::from_raw_parts(hb.iov[1].iov_base as *const u8, 3) };
        assert_eq!(rest, b"dy!");
        let mut back = Vec::new();
        hb.take_head(&mut back);
        assert!(back.is_empty() && back.capacity() >= 4);
    }

    /// A lent body is written from its owner's bytes and gives the owner's reference back
    /// exactly once, when the holder is done with it.
    #[test]
    fn lent_bodies_release_their_owner_once() {
        unsafe fn release(p: *const ()) {
            // SAFETY: `p` came from `Arc::into_raw` below, and is released once.
            drop(unsafe { std::sync::Arc::from_raw(p.cast::<Vec<u8>>()) });
        }
        let owner = std::sync::Arc::new(b"lent body".to_vec());
        let raw = std::sync::Arc::into_raw(owner.clone());
        // SAFETY: `raw` is one counted reference, released by `release`; the Vec is never
        // written while it is held.
        let lent = unsafe { Lent::new(owner[5..].as_ptr(), 4, raw.cast(), release) };
        assert_eq!(std::sync::Arc::strong_count(&owner), 2);
        let mut hb = HeadBody::default();
        let mut head = b"H".to_vec();
        hb.set(&mut head, Body::Lent(lent));
        assert_eq!(hb.total(), 5);
        hb.done = 3;
        hb.sync();
        // SAFETY: the iovec points into the owner's bytes, 2 of them left from there.
        let rest = unsafe { std::slice::from_raw_parts(hb.iov[1].iov_base as *const u8, 2) };
        assert_eq!(rest, b"dy");
        assert_eq!(std::sync::Arc::strong_count(&owner), 2);
        hb.take_head(&mut head);
        assert_eq!(std::sync::Arc::strong_count(&owner), 1);
    }
}
