//! Request dispatch: route the request, then hand it to the internal endpoints or the object
//! proxy. Internal routes answer GET and HEAD only.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::error::{Error, Kind};
use crate::http::conn::{App, Request, RequestLog, Sent};
use crate::http::env::ConnEnv;
use crate::http::request::Method;
use crate::http::respond::{self, Reply};
use crate::router::{split_target, Route};
use crate::runtime::worker::Worker;

/// The public application of a worker: internal endpoints and the object proxy.
pub struct ObjectApp(pub Rc<Worker>);

impl App for ObjectApp {
    fn env(&self) -> &ConnEnv {
        &self.0.http
    }

    async fn handle<S: AsyncReadRent + AsyncWriteRent>(
        &self,
        io: &mut S,
        out: &mut Vec<u8>,
        req: &Request<'_>,
        log: &mut RequestLog,
    ) -> Result<Sent, Error> {
        handle(&self.0, io, out, req, log).await
    }

    fn finished(&self, log: &RequestLog, method: Method, status: u16, took: Duration) {
        self.0.metrics().request(log.bucket, method, status, took);
    }
}

pub async fn handle<S: AsyncReadRent + AsyncWriteRent>(
    w: &Rc<Worker>,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    log: &mut RequestLog,
) -> Result<Sent, Error> {
    let (path, query) = split_target(req.head.target(req.buf))?;
    // The object key is decoded into a recycled buffer, given back after the answer.
    let mut spare = w.scratch();
    let route = w.shared.router.route_reusing(path, &mut spare)?;
    drop(spare);
    if !matches!(route, Route::Object { .. }) && !matches!(req.method(), Method::Get | Method::Head)
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
            respond::simple(&w.http, io, out, req, reply).await
        }
        Route::Ready => ready(w, io, out, req).await,
        Route::Metrics => {
            let text = w.shared.metrics.render(&w.shared.tiers);
            respond::simple(
                &w.http,
                io,
                out,
                req,
                Reply {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: text.as_bytes(),
                    extra: &[("Cache-Control", "no-store")],
                },
            )
            .await
        }
        Route::Admin { .. } => Err(Error::client(
            Kind::NotFound,
            "the admin API is not available in this version",
        )),
        Route::Object { bucket, key } => {
            log.bucket = Some(bucket);
            let mut x = crate::proxy::Exchange {
                w,
                io,
                out,
                req,
                bucket,
            };
            let sent = crate::proxy::serve_object(&mut x, &key, query).await;
            w.recycle_buf(key.into_bytes());
            sent
        }
    }
}

/// `/ready`: 200 while workers run and every origin answered the last check; 503 otherwise or
/// while shutting down. The body details each bucket.
async fn ready<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
) -> Result<Sent, Error> {
    let shared = &w.shared;
    let mut buckets = serde_json::Map::new();
    let mut all = true;
    for (i, b) in shared.config.buckets.iter().enumerate() {
        let o = shared.origins.get(i);
        all &= o.reachable();
        buckets.insert(
            b.name.clone(),
            serde_json::json!({
                "endpoint": b.endpoint.authority(),
                "reachable": o.reachable(),
                "checked_at_unix_ms": o.checked_at_ms(),
                "error": o.last_error(),
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
    respond::simple(
        &w.http,
        io,
        out,
        req,
        Reply {
            status,
            content_type: "application/json",
            body: body.as_bytes(),
            extra: &[("Cache-Control", "no-store")],
        },
    )
    .await
}
