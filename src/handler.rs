//! Request dispatch: route the request, then hand it to the internal endpoints, the object
//! path ([`crate::object`]) or the bucket-level requests ([`crate::bucket`]: listings), both
//! authorized the same way. Internal routes answer GET and HEAD only.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use monoio::io::AsyncWriteRent;

use crate::access_log::Line;
use crate::auth::{extract, AuthFailure};
use crate::context::{Current, Worker};
use crate::error::{Error, Kind};
use crate::http::conn::{App, Finished, Request, Sent};
use crate::http::env::ConnEnv;
use crate::http::request::Method;
use crate::http::writer::{Reply, Writer};
use crate::request_log::RequestLog;
use crate::router::{split_target, Route};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `server.listen`: objects and the internal routes — but not `/admin` and `/metrics`
    /// when `admin.listen` is set.
    Public,
    /// `admin.listen`: `/admin`, `/metrics`, `/health`, `/ready` only.
    Admin,
}

/// A worker's application on one of its listeners, for one connection. Each request runs on
/// the worker's generation current when it starts ([`Current`]); its `finished` bookkeeping
/// uses the same one (its bucket index means a bucket of that generation's config).
pub struct WorkerApp {
    current: Rc<Current>,
    /// The connection environment, the same in every generation.
    env: Rc<ConnEnv>,
    surface: Surface,
    /// The generation the request being answered runs on.
    serving: RefCell<Option<Rc<Worker>>>,
}

impl WorkerApp {
    pub fn new(current: Rc<Current>, surface: Surface) -> WorkerApp {
        let env = Rc::clone(&current.get().http);
        WorkerApp {
            current,
            env,
            surface,
            serving: RefCell::new(None),
        }
    }
}

impl App for WorkerApp {
    type Log = RequestLog;

    fn env(&self) -> &ConnEnv {
        &self.env
    }

    async fn handle<S: AsyncWriteRent>(
        &self,
        answer: &mut Writer<'_, S>,
        req: &Request<'_>,
        log: &mut RequestLog,
    ) -> Result<Sent, Error> {
        let w = self.current.get();
        *self.serving.borrow_mut() = Some(Rc::clone(&w));
        handle(&w, self.surface, answer, req, log).await
    }

    fn finished(&self, done: &Finished<'_, RequestLog>) {
        let w = self
            .serving
            .borrow_mut()
            .take()
            .unwrap_or_else(|| self.current.get());
        let log = done.log;
        let m = w.metrics();
        m.request(log.bucket, done.method, done.status, done.took);
        if let Some(route) = log.admin_route {
            m.admin_request(route, done.status);
        }
        if let Some(access) = &w.access {
            access.record(&access_line(&w, done));
        }
    }
}

/// The access log's line for a finished request. The path is the request target's without
/// its query, so a token passed as a query parameter is never logged.
fn access_line<'a>(w: &'a Worker, done: &'a Finished<'a, RequestLog>) -> Line<'a> {
    let log = done.log;
    let (path, user_agent) = match done.req {
        Some(req) => {
            let target = req.head.target(req.buf);
            let path = target.split('?').next().unwrap_or(target);
            (path.as_bytes(), req.header("user-agent"))
        }
        None => (&b""[..], None),
    };
    Line {
        time_ms: w.clock().now_ms(),
        id: done.id.as_bytes(),
        client: done.peer,
        method: done.method.as_str(),
        bucket: log.bucket.map(|b| w.shared.config.buckets[b].name.as_str()),
        path,
        status: done.status,
        bytes: done.bytes,
        took: done.took,
        cache: log.cache,
        layer: log.layer,
        upstream: log.upstream,
        slices: log.slices,
        peer: log.peer.as_deref(),
        user_agent,
        warm: None,
    }
}

pub async fn handle<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    surface: Surface,
    answer: &mut Writer<'_, S>,
    req: &Request<'_>,
    log: &mut RequestLog,
) -> Result<Sent, Error> {
    let (path, query) = split_target(req.head.target(req.buf))?;
    // The object key is decoded into a recycled buffer, given back after the answer.
    let mut spare = w.scratch();
    let router = &w.shared.router;
    // Only with a virtual-host bucket configured does `Host` take part in routing.
    let route = if router.has_hosts() {
        router.route_host(req.header("host"), path, &mut spare)?
    } else {
        router.route_reusing(path, &mut spare)?
    };
    drop(spare);
    let separate_admin = w
        .shared
        .config
        .admin
        .as_ref()
        .is_some_and(|a| a.listen.is_some());
    // A fleet member's purge reaches the admin routes where members reach each other.
    let peer_admin = matches!(route, Route::Admin { .. }) && from_peer(w, req)?;
    let elsewhere = match (&route, surface) {
        (Route::Admin { .. }, Surface::Public) if peer_admin => false,
        (Route::Admin { .. } | Route::Metrics, Surface::Public) => separate_admin,
        (Route::Object { .. } | Route::Bucket { .. }, Surface::Admin) => true,
        _ => false,
    };
    if elsewhere {
        if let Route::Object { key, .. } = route {
            w.recycle_buf(key.into_bytes());
        }
        return Err(Error::client(Kind::NotFound, "not served on this listener"));
    }
    if !matches!(
        route,
        Route::Object { .. } | Route::Bucket { .. } | Route::Admin { .. }
    ) && !matches!(req.method(), Method::Get | Method::Head)
    {
        return Err(Error::method_not_allowed("GET, HEAD"));
    }
    match route {
        Route::Health => {
            let reply = Reply {
                status: 200,
                content_type: "application/json",
                body: br#"{"status":"ok"}"#,
                extra: &[],
            };
            answer.reply(req, reply).await
        }
        Route::Ready => ready(w, answer, req, query).await,
        Route::Metrics => {
            let text = w
                .shared
                .metrics
                .render(&w.shared.tiers, w.shared.fleet.as_ref().map(|f| f.counts()));
            let reply = Reply::no_store(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                text.as_bytes(),
            );
            answer.reply(req, reply).await
        }
        Route::Admin { rest } => {
            log.admin_route = Some(crate::admin::route_label(&rest));
            crate::admin::handle(w, answer, req, &rest, query, peer_admin).await
        }
        Route::Object { bucket, key } => {
            log.bucket = Some(bucket);
            let sent = object(w, answer, req, log, bucket, Some(&key), query).await;
            w.recycle_buf(key.into_bytes());
            with_cors(w, answer, req, bucket, sent).await
        }
        Route::Bucket { bucket } => {
            log.bucket = Some(bucket);
            let sent = object(w, answer, req, log, bucket, None, query).await;
            with_cors(w, answer, req, bucket, sent).await
        }
    }
}

/// An error answer of a bucket with CORS carries its CORS headers too (`Vary: Origin` at
/// least: see `cors`); other errors are the connection loop's.
async fn with_cors<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    answer: &mut Writer<'_, S>,
    req: &Request<'_>,
    bucket: usize,
    sent: Result<Sent, Error>,
) -> Result<Sent, Error> {
    match (sent, &w.shared.config.buckets[bucket].cors) {
        (Err(e), Some(cfg)) => {
            let request = (req.id, req.close, req.is_head());
            let origin = req.header_str("origin");
            let written = answer
                .error(request, &e, |a| crate::cors::write_headers(a, cfg, origin))
                .await;
            Ok(Sent {
                status: e.status(),
                abort: written.is_err(),
            })
        }
        (sent, _) => sent,
    }
}

/// A request for an object of `bucket` (`key`), or for the bucket itself (`None`: listings,
/// `crate::bucket`): authorized when the bucket says so, then served.
async fn object<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    answer: &mut Writer<'_, S>,
    req: &Request<'_>,
    log: &mut RequestLog,
    bucket: usize,
    key: Option<&str>,
    query: Option<&str>,
) -> Result<Sent, Error> {
    let from_peer = from_peer(w, req)?;
    // Every request of a private bucket is checked, cache hits and coalesced followers
    // included: this runs before any cache lookup. A member's request was checked where its
    // client arrived.
    if w.shared.config.buckets[bucket].auth && !from_peer {
        if let Err(f) = authorize(w, req, query, bucket) {
            w.metrics().auth_failure(f);
            return Err(f.into());
        }
    }
    let Some(key) = key else {
        // The bucket itself (a listing, HeadBucket…): its own query rules (`bucket::query`).
        let mut x = crate::object::exchange::Exchange {
            w,
            answer,
            req,
            bucket,
            log,
            from_peer,
            overrides: Default::default(),
        };
        return crate::bucket::serve(&mut x, query).await;
    };
    // Decoded into a recycled buffer, like the cache key: a hit allocates nothing.
    let mut decoded = None;
    // In a block, so that the parsed query's overrides list is not kept in this future's state
    // across the answer (each byte of it is moved with the future: callgrind). Most requests
    // have no query: nothing to parse then (~230 instructions of a hit, callgrind).
    let (forwarded, overrides) = match query {
        None => Default::default(),
        Some(query) => {
            let q = crate::router::object_query(Some(query), &mut *decoded.insert(w.scratch()))?;
            (
                q.forwarded,
                crate::object::overrides::Overrides::of(&q.overrides),
            )
        }
    };
    let mut x = crate::object::exchange::Exchange {
        w,
        answer,
        req,
        bucket,
        log,
        from_peer,
        overrides,
    };
    crate::object::serve(&mut x, key, &forwarded).await
}

/// Whether `req` comes from a member of this instance's fleet: a request that says so (an
/// `x-corvid-peer` header) is one, or is refused (403, `reason="peer"`), never served as a
/// client's. The header is also the hop marker (`crate::fleet::peer_auth`).
fn from_peer(w: &Worker, req: &Request<'_>) -> Result<bool, Error> {
    // A client's request has no `x-corvid-` field: known from the parse, no scan.
    if !req.head.has_own_fields() {
        return Ok(false);
    }
    let Some(value) = req.header(crate::fleet::peer_auth::HEADER) else {
        return Ok(false);
    };
    let verified = w.shared.fleet.as_ref().is_some_and(|f| {
        let target = req.head.target(req.buf);
        match f.verify(value, req.method().as_str(), target, w.clock().now_secs()) {
            Ok(()) => true,
            Err(why) => {
                log::warn!("request {}: peer header refused: {why:?}", req.id.as_str());
                false
            }
        }
    });
    if !verified {
        w.metrics().auth_failure(AuthFailure::Peer);
        return Err(AuthFailure::Peer.into());
    }
    w.metrics().peer_served();
    Ok(true)
}

/// Checks the token of a request for `bucket` (which has `auth = true`): found in the
/// configured sources, verified (through this worker's token cache), the bucket's claim rules
/// held. The token itself goes no further: the query keeps only `versionId` (forwarded) and
/// the `response-*` overrides (applied by corvid: `router::object_query`), so a query token
/// never reaches the origin or the cache key, and headers are never forwarded.
fn authorize(
    w: &Worker,
    req: &Request<'_>,
    query: Option<&str>,
    bucket: usize,
) -> Result<(), AuthFailure> {
    // Config guarantees [jwt] when a bucket has auth = true; without a verifier, refuse.
    let (Some(jwt), Some(verifier)) = (w.shared.config.jwt.as_ref(), w.shared.verifier.as_ref())
    else {
        return Err(AuthFailure::Signature);
    };
    let found = extract(
        &jwt.token_sources,
        |name| req.header_values(name),
        query.unwrap_or(""),
    )?;
    let now = w.clock().now_secs();
    w.tokens
        .check(
            verifier,
            &found.token,
            now,
            &w.shared.config.buckets[bucket].claims,
        )
        .map(|_| ())
}

/// `/ready`: 200 while workers run, every origin answered the last check and every bucket has
/// valid credentials (`"credentials": "ok" | "none" | "expired"` per bucket); 503 otherwise or
/// while shutting down. The body details each bucket.
///
/// `/ready?origins=ignore` leaves the origins and credentials out: 200 while this instance
/// serves. For a load balancer or a fleet that should keep sending requests to an instance whose
/// origin is down — its cache still answers what it holds, and a miss gets a 502/504 — rather
/// than take every instance out at once when the origin they share fails (the fleet's own
/// health checks use it: `crate::fleet`).
async fn ready<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    answer: &mut Writer<'_, S>,
    req: &Request<'_>,
    query: Option<&str>,
) -> Result<Sent, Error> {
    let shared = &w.shared;
    let origins_count = !query
        .unwrap_or("")
        .split('&')
        .any(|p| p == "origins=ignore");
    let mut buckets = serde_json::Map::new();
    let mut all = true;
    let now = std::time::SystemTime::now();
    for (i, b) in shared.config.buckets.iter().enumerate() {
        let o = shared.origins.get(i);
        let cell = &shared.credentials[i];
        let credentials = cell.state(now);
        all &= !origins_count || (o.reachable() && credentials == crate::credentials::State::Ok);
        buckets.insert(
            b.name.clone(),
            serde_json::json!({
                "endpoint": b.endpoint.authority(),
                "reachable": o.reachable(),
                "checked_at_unix_ms": o.checked_at_ms(),
                "error": o.last_error(),
                "credentials": credentials.as_str(),
                "credentials_source": cell.source_name(),
            }),
        );
    }
    let shutting_down = shared.shutting_down.load(Ordering::Relaxed);
    let ok = all && !shutting_down;
    let body = serde_json::json!({
        "status": if shutting_down { "shutting_down" } else if ok { "ready" } else { "not_ready" },
        "workers": shared.workers,
        "buckets": buckets,
    })
    .to_string();
    let status = if ok { 200 } else { 503 };
    let reply = Reply::no_store(status, "application/json", body.as_bytes());
    answer.reply(req, reply).await
}
