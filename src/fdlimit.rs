//! The open-file limit and what corvid fits in it.
//!
//! Every client connection, pooled origin connection and Redis connection is a descriptor. A
//! service manager's default soft limit (1024 for systemd, often less elsewhere) is far below
//! what `server.max_connections` allows, so at start [`raise_soft_limit`] lifts the soft
//! `RLIMIT_NOFILE` to the hard limit, as nginx (`worker_rlimit_nofile`), HAProxy and Envoy
//! do. [`Budget`] then splits the limit (pure arithmetic, so `corvid check` and start-up agree
//! and it is testable): a reserve for the origin and Redis pools and the process's own
//! descriptors, and the rest for client connections, evenly per worker. A worker at its share
//! closes its oldest idle connections to make room for new ones (`http::idle`), so running
//! out of descriptors degrades into shorter keep-alive, not into refusing real clients.
//!
//! Left unset, `server.max_connections` is that share: the default is what fits, so a config
//! that sets nothing starts without a warning. Only a configured value that does not fit is
//! warned about (it is then lowered to the share).

use crate::config::Config;

/// Descriptors the process holds besides connections: stdio, each worker's io_uring and
/// eventfds, the signal pipe, resolver and disk threads' files. Generous on purpose.
const BASE_RESERVE: u64 = 64;
/// Redis connections per worker: two pipelined (see `context::redis_options`) and the purge
/// subscriber (worker 0 only, counted for all).
const REDIS_PER_WORKER: u64 = 3;
/// The smallest share of client connections a worker gets, even under a tiny limit (it then
/// relies on closing idle connections and on accept errors being survivable).
const MIN_PER_WORKER: u64 = 16;

/// How the open-file limit is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The soft `RLIMIT_NOFILE` in force.
    pub limit: u64,
    /// Descriptors kept for the process itself and the origin and Redis pools.
    pub reserve: u64,
    /// Client connections one worker keeps open at most: its share of the limit, or
    /// `server.max_connections` when that is set and smaller.
    pub per_worker: usize,
}

impl Budget {
    pub fn new(config: &Config, workers: usize, limit: u64) -> Budget {
        let workers_u = workers.max(1) as u64;
        let pools: u64 = config
            .buckets
            .iter()
            .map(|b| b.max_idle_connections as u64)
            .sum();
        let redis = if config.cache.redis.is_some() {
            REDIS_PER_WORKER
        } else {
            0
        };
        let reserve = BASE_RESERVE + workers_u * (pools + redis);
        let share = (limit.saturating_sub(reserve) / workers_u).max(MIN_PER_WORKER);
        let wanted = config.server.max_connections.map_or(u64::MAX, |n| n as u64);
        let per_worker = usize::try_from(share.min(wanted)).unwrap_or(usize::MAX);
        Budget {
            limit,
            reserve,
            per_worker,
        }
    }

    /// What `corvid check` and the start-up log say when a configured `server.max_connections`
    /// does not fit (never when it is left unset: the default is what fits).
    pub fn warning(&self, config: &Config, workers: usize) -> Option<String> {
        let configured = config.server.max_connections?;
        let wanted = configured as u64 * workers as u64;
        (self.per_worker < configured).then(|| {
            format!(
                "server.max_connections = {} x {workers} worker(s) = {wanted} client connections, \
                 plus {} descriptors for the origin and Redis pools and corvid itself, do not \
                 fit the open-file limit of {}: at most {} client connections per worker will be \
                 kept open (the oldest idle ones are closed to make room); raise the limit \
                 (LimitNOFILE= in systemd, ulimit -n) or lower max_connections",
                configured, self.reserve, self.limit, self.per_worker
            )
        })
    }
}

/// The soft and hard `RLIMIT_NOFILE`.
pub fn current() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit before and after.
pub fn raise_soft_limit() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = current()?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    let lim = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit from the struct we pass, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((soft, current()?.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_connections: Option<usize>, buckets: usize, redis: bool) -> Config {
        let mut text = "[server]\nlisten = \"127.0.0.1:8080\"\n".to_string();
        if let Some(n) = max_connections {
            text.push_str(&format!("max_connections = {n}\n"));
        }
        for i in 0..buckets {
            text.push_str(&format!(
                "[[buckets]]\nname = \"b{i}\"\nprefix = \"/b{i}\"\nendpoint = \"http://127.0.0.1:9\"\n\
                 region = \"r\"\nbucket = \"bucket{i}\"\naccess_key = \"a\"\nsecret_key = \"s\"\n"
            ));
        }
        if redis {
            text.push_str("[cache.redis]\nurl = \"redis://127.0.0.1:6379\"\n");
        }
        Config::from_toml_str(&text, &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_roomy_limit_keeps_max_connections() {
        let c = config(Some(10_000), 1, true);
        let b = Budget::new(&c, 2, 1 << 20);
        // 64 + 2 workers x (64 pooled + 3 Redis)
        assert_eq!(b.reserve, 64 + 2 * 67);
        assert_eq!(b.per_worker, 10_000);
        assert_eq!(b.warning(&c, 2), None);
    }

    #[test]
    fn a_small_limit_caps_each_worker_and_warns() {
        let c = config(Some(10_000), 2, false);
        let b = Budget::new(&c, 4, 1024);
        assert_eq!(b.reserve, 64 + 4 * 128);
        assert_eq!(b.per_worker, (1024 - 64 - 512) / 4);
        let w = b.warning(&c, 4).expect("a warning");
        for needle in [
            "server.max_connections",
            "1024",
            "112 client connections per worker",
        ] {
            assert!(w.contains(needle), "{needle:?} in {w}");
        }
        // A limit below the reserve still leaves every worker a minimal share.
        assert_eq!(Budget::new(&c, 4, 100).per_worker, MIN_PER_WORKER as usize);
        // And max_connections below the share is kept as configured, without a warning.
        let small = config(Some(50), 2, false);
        let b = Budget::new(&small, 4, 1024);
        assert_eq!(b.per_worker, 50);
        assert_eq!(b.warning(&small, 4), None);
    }

    #[test]
    fn unset_max_connections_is_what_fits_and_never_warns() {
        let c = config(None, 1, false);
        // The demo's case: a limit of 20000 shared by 2 workers after the pools.
        let b = Budget::new(&c, 2, 20_000);
        assert_eq!(b.reserve, 64 + 2 * 64);
        assert_eq!(b.per_worker, (20_000 - 64 - 128) / 2);
        assert_eq!(b.warning(&c, 2), None);
        // However small the limit.
        let b = Budget::new(&c, 4, 100);
        assert_eq!(b.per_worker, MIN_PER_WORKER as usize);
        assert_eq!(b.warning(&c, 4), None);
        // And the same value configured explicitly, when it does not fit, still warns.
        let set = config(Some(10_000), 1, false);
        assert!(Budget::new(&set, 2, 20_000).warning(&set, 2).is_some());
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let (before, after) = raise_soft_limit().unwrap();
        let (soft, hard) = current().unwrap();
        assert!(after >= before);
        assert_eq!((soft, after), (hard, hard));
    }
}
