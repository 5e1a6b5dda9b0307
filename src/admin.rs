//! The admin API: purges (hard and soft) and cache statistics, behind `[admin]`.
//!
//! Routes (INTERFACE.md):
//!
//! | route | answer |
//! |---|---|
//! | `POST /admin/cache/purge` | everything, every tier |
//! | `POST /admin/cache/purge/{bucket}` | one bucket (404 unknown); `?prefix=p`: keys starting with `p` |
//! | `POST /admin/cache/purge/{bucket}/{key...}` | one object, every variant (404 when not cached) |
//! | `...?soft=true` on any purge | mark stale instead of remove: the next request revalidates |
//! | `GET /admin/cache/stats` | totals, `layers`, `buckets` (see `cache::stats`) |
//! | `GET /admin/cache/stats/{bucket}` | one bucket (404 unknown) |
//! | `POST /admin/reload` | re-read the config file ([`crate::context::reload`]): 200 what applied, 422 why refused |
//! | `GET /admin/cluster` | the fleet's members and their state (`crate::fleet`; 404 without `[cluster]`) |
//! | `POST /admin/cache/warm/{bucket}` | start warming the bucket (`?prefix=p`: keys starting with `p`): 202 `{"job": ID, ...}` (`crate::warm`; 404 unknown bucket, 503 too many jobs running) |
//! | `GET /admin/cache/warm/{ID}` | that job's progress (404 unknown or forgotten job) |
//! | `DELETE /admin/cache/warm/{ID}` | cancel it: its progress, `state` `cancelling` then `cancelled` |
//!
//! Who may: first the client's network (`admin.allow_networks`, 403 before any token work),
//! then a JWT from `[jwt]`'s sources carrying `admin.claim` (none or invalid → 401, valid
//! without the claim → 403). Without `[admin]` the routes do not exist (404).
//!
//! A purge answers `{"purged": N, "bytes": B, "soft": bool, "layers": {"memory": {"entries",
//! "bytes"}, "disk": {...}, "redis": {"entries", "reachable"}}, "instances": R}`: entries and
//! bytes per tier (an entry held by two tiers counts in both) and in total, whether Redis was
//! reachable (`null` without a Redis tier), and how many instances heard the announcement
//! (`null` without Redis). It reaches every instance sharing the Redis tier through the purge
//! broadcast; an instance not subscribed at that moment misses it (see README).
//!
//! In a fleet (`[cluster]`, `crate::fleet`) a purge is also repeated on every other member at
//! once (the same path and query, signed with the peer header, which stands for the admin
//! token there and reaches the admin routes on the members' listener even when `admin.listen`
//! is separate), since an object is held by its owner, not by the member an operator asked:
//! the answer adds `"peers": {"purged": [...], "not_cached": [...], "failed": [...]}` by
//! member name, and an object purge is a 404 only when no member held the object.
//!
//! Path segments are percent-decoded once, like object keys (`+` is a literal plus); the
//! `prefix` query value too.

use std::rc::Rc;
use std::sync::Arc;

use monoio::io::AsyncWriteRent;
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::auth::{extract, AuthFailure};
use crate::cache::purge::{Mode, Purged, Scope};
use crate::context::reload::Outcome;
use crate::context::Worker;
use crate::error::{Error, Kind};
use crate::http::conn::{Request, Sent};
use crate::http::request::Method;
use crate::http::writer::{Reply, Writer};

/// The bounded `route` label of `corvid_admin_requests_total`.
pub fn route_label(rest: &str) -> &'static str {
    if rest.starts_with("/cache/purge") {
        "purge"
    } else if rest.starts_with("/cache/stats") {
        "stats"
    } else if rest.starts_with("/reload") {
        "reload"
    } else if rest.starts_with("/cluster") {
        "cluster"
    } else if rest.starts_with("/cache/warm") {
        "warm"
    } else {
        "other"
    }
}

/// What an admin path asks for (after `/admin`).
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Purge(Target),
    Stats(Option<String>),
    Reload,
    Cluster,
    /// `/cache/warm/{x}`: a bucket name (POST) or a job id (GET, DELETE).
    Warm(String),
}

#[derive(Debug, PartialEq, Eq)]
enum Target {
    All,
    Bucket(String),
    Object(String, String),
}

fn decode(s: &str) -> Result<String, Error> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Error::client(Kind::BadRequest, "the admin path is not valid UTF-8"))
}

/// Parses the raw path after `/admin` (pure).
fn parse(rest: &str) -> Result<Action, Error> {
    let not_found = || Error::client(Kind::NotFound, "no such admin route");
    if rest == "/reload" {
        return Ok(Action::Reload);
    }
    if rest == "/cluster" {
        return Ok(Action::Cluster);
    }
    let rest = rest.strip_prefix("/cache/").ok_or_else(not_found)?;
    let (what, tail) = match rest.split_once('/') {
        Some((w, t)) => (w, Some(t)),
        None => (rest, None),
    };
    match (what, tail) {
        ("purge", None) => Ok(Action::Purge(Target::All)),
        ("purge", Some(t)) => match t.split_once('/') {
            None if !t.is_empty() => Ok(Action::Purge(Target::Bucket(decode(t)?))),
            Some((b, key)) if !b.is_empty() && !key.is_empty() => {
                Ok(Action::Purge(Target::Object(decode(b)?, decode(key)?)))
            }
            _ => Err(not_found()),
        },
        ("warm", Some(x)) if !x.is_empty() && !x.contains('/') => Ok(Action::Warm(decode(x)?)),
        ("stats", None) => Ok(Action::Stats(None)),
        ("stats", Some(b)) if !b.is_empty() && !b.contains('/') => {
            Ok(Action::Stats(Some(decode(b)?)))
        }
        _ => Err(not_found()),
    }
}

/// `soft` and `prefix` from the query (pure). `soft` is true for `true`/`1`.
fn query_options(query: Option<&str>) -> Result<(bool, Option<String>), Error> {
    let mut soft = false;
    let mut prefix = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "soft" => soft = matches!(value, "true" | "1"),
            "prefix" => prefix = Some(decode(value)?),
            _ => {}
        }
    }
    Ok((soft, prefix))
}

/// Network, then token, then the admin claim.
fn authorize(w: &Worker, req: &Request<'_>, query: Option<&str>) -> Result<(), Error> {
    let shared = &w.shared;
    let (Some(admin), Some(jwt), Some(verifier)) = (
        shared.config.admin.as_ref(),
        shared.config.jwt.as_ref(),
        shared.verifier.as_ref(),
    ) else {
        return Err(Error::client(
            Kind::NotFound,
            "the admin API is not configured ([admin])",
        ));
    };
    if !admin.network_allowed(req.peer.ip()) {
        return Err(Error::client(
            Kind::Forbidden,
            "the admin API is not open to this client's network",
        ));
    }
    let header = |name: &str| req.header_values(name);
    let checked = extract(&jwt.token_sources, header, query.unwrap_or("")).and_then(|found| {
        let now = w.clock().now_secs();
        w.tokens
            .check_admin(verifier, &found.token, now, &admin.claim)
            .map(|_| ())
    });
    checked.map_err(|f: AuthFailure| {
        w.metrics().auth_failure(f);
        f.into()
    })
}

/// Answers an admin request; `rest` is the raw path after `/admin`.
pub async fn handle<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    answer: &mut Writer<'_, S>,
    req: &Request<'_>,
    rest: &str,
    query: Option<&str>,
    from_peer: bool,
) -> Result<Sent, Error> {
    // A fleet member's request (verified by the handler) repeats a purge an admin asked of it.
    if !from_peer {
        authorize(w, req, query)?;
    }
    let action = parse(rest)?;
    let body = match action {
        Action::Purge(target) => {
            if req.method() != Method::Post {
                return Err(Error::method_not_allowed("POST"));
            }
            let (mut body, found) = purge(w, target, query).await?;
            let mut found_elsewhere = false;
            if let (false, Some(fleet)) = (from_peer, w.shared.fleet.as_ref()) {
                let target = req.head.target(req.buf);
                let (purged, not_cached, failed) = fan_out(w, fleet, target).await;
                found_elsewhere = !purged.is_empty();
                body["peers"] =
                    json!({"purged": purged, "not_cached": not_cached, "failed": failed});
            }
            // An object purge found nowhere is a 404 (in a fleet the object is usually held by
            // its owner, not by the member asked).
            if !found && !found_elsewhere {
                return Err(Error::client(Kind::NotFound, "the object was not cached"));
            }
            body.to_string()
        }
        Action::Stats(bucket) => {
            if !matches!(req.method(), Method::Get | Method::Head) {
                return Err(Error::method_not_allowed("GET, HEAD"));
            }
            stats(w, bucket)?
        }
        Action::Cluster => {
            if !matches!(req.method(), Method::Get | Method::Head) {
                return Err(Error::method_not_allowed("GET, HEAD"));
            }
            cluster(w)?
        }
        Action::Warm(name) => {
            let (status, body) = warm(w, req, &name, query)?;
            let reply = Reply::no_store(status, "application/json", body.as_bytes());
            return answer.reply(req, reply).await;
        }
        Action::Reload => {
            if req.method() != Method::Post {
                return Err(Error::method_not_allowed("POST"));
            }
            let (status, body) = reload(w).await;
            let reply = Reply::no_store(status, "application/json", body.as_bytes());
            return answer.reply(req, reply).await;
        }
    };
    let reply = Reply::no_store(200, "application/json", body.as_bytes());
    answer.reply(req, reply).await
}

/// `/admin/cache/warm/{x}` (`crate::warm`): `POST` starts a job warming bucket `x` (202 and
/// its progress, which names its id), `GET`/`HEAD` answers job `x`'s progress, `DELETE`
/// cancels it and answers its progress.
fn warm(
    w: &Rc<Worker>,
    req: &Request<'_>,
    x: &str,
    query: Option<&str>,
) -> Result<(u16, String), Error> {
    let jobs = &w.shared.warm_jobs;
    let job = || {
        jobs.get(x)
            .ok_or_else(|| Error::client(Kind::NotFound, format!("no warm job {x:?}")))
    };
    match req.method() {
        Method::Post => {
            let buckets = &w.shared.config.buckets;
            let bucket = buckets
                .iter()
                .position(|b| b.name == x)
                .ok_or_else(|| unknown_bucket(x))?;
            if !w.cache.enabled() {
                return Err(Error::client(
                    Kind::BadRequest,
                    "every cache tier is disabled: there is nothing to warm",
                ));
            }
            let (_, prefix) = query_options(query)?;
            let concurrency = crate::warm::concurrency(
                w.shared.config.cache.warm_concurrency,
                buckets[bucket].max_idle_connections,
            );
            let prefix = prefix.unwrap_or_default();
            let job = jobs.add(x, &prefix, concurrency, w.clock().now_ms())?;
            log::info!(
                "warm job {} started: bucket {x}, prefix {prefix:?}, concurrency {concurrency}",
                job.id
            );
            crate::warm::run::spawn(w, bucket, std::sync::Arc::clone(&job), req.peer);
            Ok((202, job.progress().to_string()))
        }
        Method::Get | Method::Head => Ok((200, job()?.progress().to_string())),
        Method::Delete => {
            let job = job()?;
            job.cancel();
            Ok((200, job.progress().to_string()))
        }
        _ => Err(Error::method_not_allowed("GET, HEAD, POST, DELETE")),
    }
}

/// `POST /admin/reload`: asks the reload thread (re-reading the config file blocks, so never
/// here) and answers its outcome: 200 with what applied and what needs a restart, or 422 with
/// why the file was refused (the running config stays). 409 where there is no file to re-read
/// (an in-process server).
async fn reload(w: &Worker) -> (u16, String) {
    let Some(requests) = &w.shared.reloads else {
        let why = "this server was not started from a config file: nothing to reload";
        return (409, Outcome::Refused(why.into()).to_json().to_string());
    };
    let (reply, answer) = flume::bounded(1);
    let outcome = match requests.send(reply) {
        Ok(()) => answer.recv_async().await.ok(),
        Err(_) => None,
    };
    match outcome {
        Some(o @ Outcome::Applied { .. }) => (200, o.to_json().to_string()),
        Some(o @ Outcome::Refused(_)) => (422, o.to_json().to_string()),
        None => {
            let why = "the reload thread is gone (shutting down)";
            (503, Outcome::Refused(why.into()).to_json().to_string())
        }
    }
}

/// `GET /admin/cluster`: this instance's member name and every member with its state.
fn cluster(w: &Worker) -> Result<String, Error> {
    let Some(fleet) = w.shared.fleet.as_ref() else {
        return Err(Error::client(
            Kind::NotFound,
            "this instance is no fleet member ([cluster])",
        ));
    };
    let members: Vec<_> = fleet
        .view()
        .members
        .iter()
        .map(|m| json!({"addr": &*m.name, "self": m.is_self, "up": m.is_up()}))
        .collect();
    Ok(json!({"peer": &*fleet.me, "members": members}).to_string())
}

fn unknown_bucket(name: &str) -> Error {
    Error::client(Kind::NotFound, format!("no bucket named {name:?}"))
}

/// Repeats an admin purge (`target`: its path and query) on every other member of the fleet,
/// at once: the members that purged something, those that held nothing of it (an object purge's
/// 404), and those that could not be reached or refused. A
/// member that was unreachable keeps what it had: the operator sees it in `failed` and purges
/// again, or purges that member once it is back.
async fn fan_out(
    w: &Rc<Worker>,
    fleet: &Arc<crate::fleet::Fleet>,
    target: &str,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let now = w.clock().now_secs();
    let mut asked = Vec::new();
    for m in fleet.view().members.iter().filter(|m| !m.is_self) {
        let (w, fleet, m, target) = (
            Rc::clone(w),
            Arc::clone(fleet),
            Arc::clone(m),
            target.to_owned(),
        );
        asked.push(monoio::spawn(async move {
            let res = crate::fleet::client::post(&w.peers, &fleet, &m, &target, now).await;
            (m.name.to_string(), res)
        }));
    }
    let (mut purged, mut not_cached, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for handle in asked {
        match handle.await {
            (name, Ok(200)) => purged.push(name),
            // An object purge that found nothing there.
            (name, Ok(404)) => not_cached.push(name),
            (name, Ok(status)) => {
                log::warn!("purge: member {name} answered {status}");
                failed.push(name);
            }
            (name, Err(e)) => {
                log::warn!("purge: member {name} not reached: {e}");
                failed.push(name);
            }
        }
    }
    (purged, not_cached, failed)
}

async fn purge(
    w: &Rc<Worker>,
    target: Target,
    query: Option<&str>,
) -> Result<(serde_json::Value, bool), Error> {
    let (soft, prefix) = query_options(query)?;
    let known = |b: &str| w.shared.config.buckets.iter().any(|c| c.name == b);
    let (scope, label) = match target {
        Target::All => (Scope::All, "all"),
        Target::Bucket(bucket) if !known(&bucket) => return Err(unknown_bucket(&bucket)),
        Target::Bucket(bucket) => {
            let label = if prefix.is_some() { "prefix" } else { "bucket" };
            let prefix = prefix.unwrap_or_default();
            (Scope::Prefix { bucket, prefix }, label)
        }
        Target::Object(bucket, _) if !known(&bucket) => return Err(unknown_bucket(&bucket)),
        Target::Object(bucket, key) => (Scope::Object { bucket, key }, "object"),
    };
    let done = w.cache.purge_everywhere(&scope, Mode::soft(soft)).await;
    w.metrics().purge(label, soft);
    let found = label != "object" || done.purged.entries() > 0;
    Ok((purge_json(&done.purged, soft, done.receivers), found))
}

fn purge_json(p: &Purged, soft: bool, receivers: Option<u64>) -> serde_json::Value {
    let redis_configured = !matches!(p.redis, crate::cache::purge::RedisPurge::Disabled);
    json!({
        "purged": p.entries(),
        "bytes": p.bytes(),
        "soft": soft,
        "layers": {
            "memory": {"entries": p.memory.entries, "bytes": p.memory.bytes},
            "disk": {"entries": p.disk.entries, "bytes": p.disk.bytes},
            "redis": {
                "entries": p.redis.deleted(),
                "reachable": redis_configured.then_some(!p.redis.unreachable()),
                "complete": redis_configured.then_some(!p.redis.failed()),
            },
        },
        "instances": receivers,
    })
}

fn stats(w: &Worker, bucket: Option<String>) -> Result<String, Error> {
    let shared = &w.shared;
    let buckets: Vec<(String, usize)> = shared
        .config
        .buckets
        .iter()
        .zip(&shared.slots)
        .map(|(b, s)| (b.name.clone(), *s))
        .collect();
    let redis = shared.config.cache.redis.is_some();
    let stats = shared.metrics.cache_stats(&shared.tiers, redis, &buckets);
    match bucket {
        None => serde_json::to_string(&stats),
        Some(name) => match stats.buckets.get(&name) {
            Some(b) => serde_json::to_string(b),
            None => return Err(unknown_bucket(&name)),
        },
    }
    .map_err(|e| Error::internal(format!("stats: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let p = |s: &str| parse(s).map_err(|e| e.status());
        assert_eq!(p("/cache/purge"), Ok(Action::Purge(Target::All)));
        assert_eq!(
            p("/cache/purge/assets"),
            Ok(Action::Purge(Target::Bucket("assets".into())))
        );
        assert_eq!(
            p("/cache/purge/assets/img/a%20b+c.png"),
            Ok(Action::Purge(Target::Object(
                "assets".into(),
                "img/a b+c.png".into()
            )))
        );
        assert_eq!(p("/cache/stats"), Ok(Action::Stats(None)));
        assert_eq!(
            p("/cache/stats/assets"),
            Ok(Action::Stats(Some("assets".into())))
        );
        for bad in [
            "",
            "/",
            "/cache",
            "/cache/",
            "/cache/purge/",
            "/cache/purge//k",
            "/cache/stats/a/b",
            "/reload/x",
            "/cache/other",
        ] {
            assert_eq!(p(bad), Err(404), "{bad}");
        }
        assert_eq!(p("/cache/purge/%ff"), Err(400));
        assert_eq!(p("/reload"), Ok(Action::Reload));
        assert_eq!(p("/cache/warm/assets"), Ok(Action::Warm("assets".into())));
        assert_eq!(p("/cache/warm/0a1b-2"), Ok(Action::Warm("0a1b-2".into())));
        for bad in ["/cache/warm", "/cache/warm/", "/cache/warm/a/b"] {
            assert_eq!(p(bad), Err(404), "{bad}");
        }
        assert_eq!(route_label("/cache/warm/x"), "warm");
        assert_eq!(route_label("/cache/purge/x"), "purge");
        assert_eq!(route_label("/cache/stats"), "stats");
        assert_eq!(route_label("/whatever"), "other");
    }

    #[test]
    fn options() {
        assert_eq!(query_options(None).unwrap(), (false, None));
        assert_eq!(
            query_options(Some("soft=true&prefix=img%2Fa")).unwrap(),
            (true, Some("img/a".into()))
        );
        assert_eq!(query_options(Some("soft=1")).unwrap(), (true, None));
        assert_eq!(
            query_options(Some("soft=false&x=y")).unwrap(),
            (false, None)
        );
        assert!(query_options(Some("prefix=%ff")).is_err());
    }
}
