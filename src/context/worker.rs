//! One worker thread's side of a config generation: [`Worker`] (behind an `Rc`, shared by the
//! thread's tasks), its per-bucket state [`WorkerBucket`], the [`Current`] cell a thread's
//! requests take their generation from, and the per-request buffers it lends ([`Scratch`]).
//!
//! A [`Worker`] is built inside its own thread (ARCHITECTURE rule 1): upstream pools, signers
//! with their signing-key caches, the cache front with its Redis client, the Date header cache
//! and the request-id counter never cross threads. A reload makes the next one from the next
//! [`Shared`] ([`Worker::next`]): what the config decides is built anew, what lasts as long as
//! the thread (connections, the cache front, buffers, pooled connections to an unchanged
//! origin) is carried over. Apart from [`Shared`] itself, this file knows nothing of how a
//! generation is built (`build.rs`), so a worker only ever reads one.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use monoio_rustls::TlsConnector;

use super::shared::Shared;
use crate::access_log::WorkerLog;
use crate::cache::Cache;
use crate::clock::Clock;
use crate::credentials;
use crate::http::env::ConnEnv;
use crate::metrics::Recorder;
use crate::s3::client::{Pool, Timeouts};
use crate::s3::sigv4::Signer;
use crate::Error;

/// Per-bucket state of one worker.
pub struct WorkerBucket {
    /// This worker's signer (and signing-key cache) for the lease of generation `seen`; `None`
    /// until the bucket has had credentials. Read through [`WorkerBucket::signer`].
    signer: RefCell<Option<Signer>>,
    /// The credentials cell's generation `signer` was built from.
    seen: Cell<u64>,
    /// When the signer's credentials expire (`None`: never).
    expires_at: Cell<Option<SystemTime>>,
    credentials: Arc<credentials::Cell>,
    pub pool: Rc<Pool>,
    pub timeouts: Timeouts,
}

impl WorkerBucket {
    /// Bucket `i` of `shared`'s config on this worker; `reuse`: the same origin's state on the
    /// previous generation, whose connection pool is kept.
    fn new(shared: &Shared, i: usize, reuse: Option<&WorkerBucket>) -> WorkerBucket {
        let b = &shared.config.buckets[i];
        let pool = match reuse {
            Some(old) => Rc::clone(&old.pool),
            None => Pool::new(
                Arc::clone(shared.origins.get(i)),
                shared.client_tls[i]
                    .as_ref()
                    .map(|(cfg, name)| (TlsConnector::from(Arc::clone(cfg)), name.clone())),
                b.max_idle_connections,
                b.pool_idle_timeout,
            ),
        };
        WorkerBucket {
            signer: RefCell::new(None),
            seen: Cell::new(0),
            expires_at: Cell::new(None),
            credentials: Arc::clone(&shared.credentials[i]),
            pool,
            timeouts: Timeouts {
                connect: b.connect_timeout,
                first_byte: b.first_byte_timeout,
                read: b.read_timeout,
            },
        }
    }

    /// The signer for the bucket's current credentials, rebuilt when the shared cell moved to
    /// a new lease (one `Relaxed` load when it did not). `Err` is the 503 of a bucket whose
    /// credentials are missing or expired. The borrow must end before the next `.await`.
    pub fn signer(&self, now: SystemTime) -> Result<std::cell::Ref<'_, Signer>, Error> {
        let generation = self.credentials.generation();
        if generation != self.seen.get() {
            if let Some(lease) = self.credentials.lease() {
                *self.signer.borrow_mut() = Some(Signer::new(
                    lease.credentials.clone(),
                    &self.credentials.region,
                    "s3",
                ));
                self.expires_at.set(lease.expires_at);
            }
            self.seen.set(generation);
        }
        let valid = self.expires_at.get().is_none_or(|e| now < e);
        match std::cell::Ref::filter_map(self.signer.borrow(), Option::as_ref) {
            Ok(signer) if valid => Ok(signer),
            Ok(_) => Err(Error::no_credentials(&self.credentials.bucket, "expired")),
            Err(_) => Err(Error::no_credentials(&self.credentials.bucket, "none")),
        }
    }
}

/// Whether two bucket configs reach the same origin the same way (so pooled connections to it
/// stay valid across a reload).
fn same_origin(a: &crate::config::BucketConfig, b: &crate::config::BucketConfig) -> bool {
    a.endpoint == b.endpoint
        && a.addressing == b.addressing
        && a.bucket == b.bucket
        && a.ca_file == b.ca_file
        && a.max_idle_connections == b.max_idle_connections
        && a.pool_idle_timeout == b.pool_idle_timeout
}

/// The context every task of one worker shares.
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub buckets: Vec<WorkerBucket>,
    /// What this worker's connections share: timeouts, Date, request ids, shutdown, idle
    /// connections, recycled connection memory.
    pub http: Rc<ConnEnv>,
    /// Tokens this worker verified recently (no lock: per worker).
    pub tokens: crate::auth::TokenCache,
    pub connections: Rc<Cell<usize>>,
    /// Byte buffers lent per request (the decoded object key, the cache key) and given back
    /// after the answer, so the hit path allocates none once warm.
    spare_bufs: Rc<RefCell<Vec<Vec<u8>>>>,
    /// This worker's front over the three tiers (the shared ones and its Redis client).
    pub cache: Rc<Cache>,
    /// This worker's side of the access log, when `[log] access` is on.
    pub access: Option<Rc<WorkerLog>>,
    /// This worker's connections to the other members of its fleet (`[cluster]`).
    pub peers: crate::fleet::client::Peers,
}

/// A worker thread's [`Worker`] on the running config generation: a reload puts the next one
/// here ([`Worker::next`]) and each request takes the one current when it starts, so requests
/// in flight finish on the config they started with.
pub struct Current(RefCell<Rc<Worker>>);

impl Current {
    pub fn new(w: Rc<Worker>) -> Rc<Current> {
        Rc::new(Current(RefCell::new(w)))
    }

    pub fn get(&self) -> Rc<Worker> {
        Rc::clone(&self.0.borrow())
    }

    /// Switches to the next generation (the previous one lives on in the requests using it).
    pub fn set(&self, w: Rc<Worker>) {
        *self.0.borrow_mut() = w;
    }
}

/// Largest buffer [`Worker::recycle_buf`] keeps. An S3 key has at most 1024 bytes, so object
/// keys and cache keys (bucket name, key, forwarded parameters) nearly always fit; a longer one
/// costs its request an allocation instead of staying in the list for good.
pub const MAX_SPARE_BUF: usize = 4096;
/// Most buffers one worker's free list keeps: two per object request in flight, for up to 512
/// concurrent requests (at most 4 MiB, typically a few hundred KiB, since keys are short).
const MAX_SPARE_BUFS: usize = 1024;

/// A byte buffer lent by [`Worker::scratch`] for one request; derefs to the `Vec` and returns
/// it to the worker's free list when dropped.
pub struct Scratch<'w> {
    w: &'w Worker,
    buf: Vec<u8>,
}

impl std::ops::Deref for Scratch<'_> {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl std::ops::DerefMut for Scratch<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        self.w.recycle_buf(std::mem::take(&mut self.buf));
    }
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Rc<Worker> {
        let buckets = (0..shared.config.buckets.len())
            .map(|i| WorkerBucket::new(&shared, i, None))
            .collect();
        let cache = Cache::new(
            Arc::clone(&shared.tiers),
            &shared.config.cache,
            shared.redis.clone(),
            shared.instance_tag,
        );
        let http = ConnEnv::new(
            &shared.config.server,
            shared.limits,
            shared.instance_tag,
            id as u16,
        );
        Rc::new(Worker {
            id,
            cache: Rc::new(cache),
            peers: Default::default(),
            access: shared.access_log.as_ref().map(|a| {
                Rc::new(WorkerLog::new(
                    Arc::clone(a),
                    shared.instance_tag as u64 ^ (id as u64) << 32,
                ))
            }),
            shared,
            buckets,
            http: Rc::new(http),
            tokens: crate::auth::TokenCache::default(),
            connections: Rc::new(Cell::new(0)),
            spare_bufs: Rc::new(RefCell::new(Vec::new())),
        })
    }

    /// This worker on the next config generation (a reload): per-bucket state built for the
    /// new buckets (a bucket whose origin did not change keeps its pooled connections), the
    /// verified-token cache emptied (keys or claims may have changed); the connections, the
    /// cache front with its Redis client, the access log buffer and the recycled buffers carry
    /// over. Requests in flight keep the worker they started with.
    pub fn next(&self, shared: Arc<Shared>) -> Rc<Worker> {
        let buckets = (0..shared.config.buckets.len())
            .map(|i| {
                let b = &shared.config.buckets[i];
                let same_origin = self
                    .shared
                    .config
                    .buckets
                    .iter()
                    .position(|o| o.name == b.name && same_origin(o, b))
                    .map(|j| &self.buckets[j]);
                WorkerBucket::new(&shared, i, same_origin)
            })
            .collect();
        Rc::new(Worker {
            id: self.id,
            shared,
            buckets,
            http: Rc::clone(&self.http),
            tokens: crate::auth::TokenCache::default(),
            connections: Rc::clone(&self.connections),
            spare_bufs: Rc::clone(&self.spare_bufs),
            cache: Rc::clone(&self.cache),
            access: self.access.clone(),
            peers: Default::default(),
        })
    }

    /// An empty byte buffer from this worker's free list (or a new one, unallocated).
    pub fn spare_buf(&self) -> Vec<u8> {
        self.spare_bufs.borrow_mut().pop().unwrap_or_default()
    }

    /// Gives a buffer back for reuse. Unallocated ones, ones larger than [`MAX_SPARE_BUF`] and
    /// those past the list's bound are dropped.
    pub fn recycle_buf(&self, mut buf: Vec<u8>) {
        let mut list = self.spare_bufs.borrow_mut();
        if buf.capacity() > 0 && buf.capacity() <= MAX_SPARE_BUF && list.len() < MAX_SPARE_BUFS {
            buf.clear();
            list.push(buf);
        }
    }

    /// A spare buffer that goes back to the free list when dropped, on every return path.
    pub fn scratch(&self) -> Scratch<'_> {
        Scratch {
            w: self,
            buf: self.spare_buf(),
        }
    }

    /// This worker's counters, bucket indices mapped to this generation's metric slots.
    pub fn metrics(&self) -> Recorder<'_> {
        self.shared.metrics.worker(self.id, &self.shared.slots)
    }

    /// The clock freshness and token expiry are decided by.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }
}
