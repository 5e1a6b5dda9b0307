//! Running one warm job (a task of the worker that started it; see `super` for the rules):
//! ListObjectsV2 pages of the prefix from the origin, one after the other
//! (`continuation-token`), each object handed to `object::warm` as soon as a place among the
//! job's `concurrency` is free, counted, and logged.
//!
//! The places are tokens in a bounded channel: taking one before each origin request the job
//! itself starts (a listing page, an object's fill, which has at most one request in flight)
//! and giving it back after is what bounds the job's origin requests in flight. The listing is
//! read from the origin directly (never from a fleet member: every member lists the same), a
//! page at most [`MAX_PAGE_BYTES`] long.
//!
//! Each object a job fetched (filled, or failed) is one access log line (`warm` = the job's
//! id, `client` = the address that started it, `path` the object's path under the bucket's
//! prefix, `cache` `MISS`); objects skipped as fresh are counted only.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use monoio::time::Instant;

use super::Job;
use crate::access_log::Line;
use crate::context::Worker;
use crate::error::{Error, Kind};
use crate::metrics::WarmOutcome;
use crate::object::origin_error;
use crate::object::upstream::{fetch_origin, Asked};
use crate::object::warm::{self, Outcome, Warmed};
use crate::s3::client::Body;
use crate::s3::listing::{page_query, parse_page, Page};

/// Longest listing page read (1,000 keys of 1 KiB each, with their XML, fit easily).
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// Starts `job` (warming objects of config bucket `bucket`) as a task of worker `w`;
/// `client`: who asked, for the access log.
pub fn spawn(w: &Rc<Worker>, bucket: usize, job: Arc<Job>, client: SocketAddr) {
    let w = Rc::clone(w);
    monoio::spawn(async move {
        let error = run(&w, bucket, &job, client).await.err();
        if let Some(e) = &error {
            log::warn!("warm job {}: the listing failed: {e}", job.id);
        }
        job.finish(error.map(|e| e.message().to_owned()), w.clock().now_ms());
    });
}

/// Whether `job` must start nothing more.
fn stopped(w: &Worker, job: &Job) -> bool {
    job.cancelled() || w.shared.is_shutting_down()
}

/// Lists and warms until the listing ends, fails or the job is stopped, then waits for the
/// fills under way.
async fn run(
    w: &Rc<Worker>,
    bucket: usize,
    job: &Arc<Job>,
    client: SocketAddr,
) -> Result<(), Error> {
    let n = job.concurrency;
    let (give, take) = flume::bounded::<()>(n);
    for _ in 0..n {
        let _ = give.try_send(());
    }
    let mut token: Option<String> = None;
    let listed: Result<(), Error> = 'pages: loop {
        if stopped(w, job) {
            break Ok(());
        }
        let _ = take.recv_async().await;
        let page = list_page(w, bucket, &job.prefix, token.as_deref()).await;
        let _ = give.try_send(());
        let page = match page {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        job.page(page.objects.iter().map(|o| o.size));
        for object in page.objects {
            let _ = take.recv_async().await;
            if stopped(w, job) {
                let _ = give.try_send(());
                break 'pages Ok(());
            }
            let (w, job, give) = (Rc::clone(w), Arc::clone(job), give.clone());
            monoio::spawn(async move {
                let t0 = Instant::now();
                let stop = || stopped(&w, &job);
                let out = warm::object(&w, bucket, &object.key, &stop).await;
                record(&w, bucket, &job, &object.key, object.size, &out, t0, client);
                let _ = give.try_send(());
            });
        }
        if !page.truncated {
            job.listing_done();
            break Ok(());
        }
        token = page.next_token;
    };
    // Every place back: no fill of this job is under way any more.
    for _ in 0..n {
        let _ = take.recv_async().await;
    }
    listed
}

/// One ListObjectsV2 page of `prefix` after `token`, from the bucket's origin.
async fn list_page(
    w: &Rc<Worker>,
    bucket: usize,
    prefix: &str,
    token: Option<&str>,
) -> Result<Page, Error> {
    let query = page_query(prefix, token);
    let asked = Asked {
        route: None,
        is_head: false,
        key: "",
        query: &query,
        headers: &[],
        want_entry: false,
        slice: None,
    };
    let (head, mut body) = fetch_origin(w, bucket, &asked).await?;
    if head.status != 200 {
        return Err(origin_error::read_and_map(w, bucket, &head, body).await);
    }
    parse_page(&read_page(&mut body).await?)
}

/// A listing body, whole (at most [`MAX_PAGE_BYTES`]).
async fn read_page(body: &mut Body) -> Result<Vec<u8>, Error> {
    let mut all: Vec<u8> = Vec::with_capacity(64 << 10);
    while !body.is_done() {
        if all.len() >= MAX_PAGE_BYTES {
            return Err(Error::upstream(
                Kind::BadGateway,
                "a listing page from the origin is too large",
            ));
        }
        all.reserve(64 << 10);
        let (res, a) = body.read_into(all).await;
        all = a;
        if res? == 0 {
            break;
        }
    }
    Ok(all)
}

/// Counts what happened to one listed object (job, metrics) and logs a fetch.
#[allow(
    clippy::too_many_arguments,
    reason = "one object's outcome and where it is recorded, each needed once"
)]
fn record(
    w: &Worker,
    bucket: usize,
    job: &Job,
    key: &str,
    size: u64,
    out: &Outcome,
    t0: Instant,
    client: SocketAddr,
) {
    let (outcome, status) = match &out.warmed {
        Warmed::Skipped => (WarmOutcome::Skipped, None),
        Warmed::Filled => (WarmOutcome::Filled, Some(200)),
        Warmed::Failed(status, why) => {
            job.failed_key(key, why);
            (WarmOutcome::Failed, Some(status.unwrap_or(502)))
        }
        // Not handled: the job stopped first.
        Warmed::Stopped => return,
    };
    job.handled(outcome, size);
    w.metrics().warmed(bucket, outcome, size);
    let (Some(status), Some(access)) = (status, &w.access) else {
        return;
    };
    let cfg = &w.shared.config.buckets[bucket];
    let path = format!("{}/{}", cfg.prefix, crate::router::encode_key(key));
    access.record(&Line {
        time_ms: w.clock().now_ms(),
        id: job.id.as_bytes(),
        client,
        method: "GET",
        bucket: Some(&cfg.name),
        path: path.as_bytes(),
        status,
        bytes: if outcome == WarmOutcome::Filled {
            size
        } else {
            0
        },
        took: t0.elapsed(),
        cache: Some("MISS"),
        layer: None,
        upstream: out.upstream,
        slices: None,
        peer: None,
        user_agent: None,
        warm: Some(&job.id),
    });
}
