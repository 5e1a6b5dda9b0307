//! A response head and a cached body written with one `writev`, without copying the body.
//!
//! The hit path's rule is: allocate nothing beyond the response head and never copy the body.
//! [`HeadBody`] owns the head buffer (reused per connection), a reference-counted slice of the
//! cached body, and the two `iovec`s that point into them. The `iovec`s live in a `Box` that
//! is allocated once per connection and reused, so the pointer the kernel reads stays put
//! while monoio owns the value, and a hit allocates nothing.

use std::cell::RefCell;

use bytes::Bytes;
use monoio::buf::IoVecBuf;
use monoio::io::AsyncWriteRent;

/// Head + body for one vectored write; reusable across requests.
pub struct HeadBody {
    pub head: Vec<u8>,
    body: Bytes,
    iov: Box<[libc::iovec; 2]>,
    /// Bytes already written (for partial writes).
    done: usize,
}

impl Default for HeadBody {
    fn default() -> Self {
        HeadBody {
            head: Vec::with_capacity(1024),
            body: Bytes::new(),
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
    pub fn set(&mut self, head: &mut Vec<u8>, body: Bytes) {
        std::mem::swap(&mut self.head, head);
        self.body = body;
        self.done = 0;
        self.sync();
    }

    /// Gives the head buffer back (cleared) and drops the body reference.
    pub fn take_head(&mut self, head: &mut Vec<u8>) {
        std::mem::swap(&mut self.head, head);
        head.clear();
        self.body = Bytes::new();
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
        self.iov[0] = libc::iovec {
            iov_base: self.head[h..].as_ptr() as *mut libc::c_void,
            iov_len: self.head.len() - h,
        };
        self.iov[1] = libc::iovec {
            iov_base: self.body[b..].as_ptr() as *mut libc::c_void,
            iov_len: self.body.len() - b,
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
// them). Each entry's length stays within its buffer. The pointer skips an empty first entry
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
        hb.set(&mut head, Bytes::from_static(b"body!"));
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
}
