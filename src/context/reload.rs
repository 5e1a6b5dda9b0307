//! Configuration reload: what a new config file changes, what it may change while running,
//! and what needs a restart ([`plan`], pure); the outcome an operator is told ([`Outcome`]).
//!
//! A reload (SIGHUP, `POST /admin/reload`) reads the config file again and validates it fully
//! — parsing, every key, the JWT keys, the TLS files of the origins — before anything changes;
//! a file that fails is refused, logged, counted (`corvid_config_reloads_total{outcome="error"}`)
//! and the running config stays. An accepted one becomes a new `Shared`
//! generation that every worker switches to between requests: requests already in flight
//! finish on the generation they started with, connections stay open, the cache stays.
//!
//! # What applies, what needs a restart
//! Applied at once: `[[buckets]]` (added, removed, changed endpoints, credentials, TTLs, auth,
//! claims, CORS, timeouts), `[jwt]` (keys and JWKS re-read), `[admin]` `claim` and
//! `allow_networks` (and `[admin]` added or removed), `cache.ttl`, `cache.negative_ttl`,
//! `cache.stale_if_error`, `cache.stale_while_revalidate`, `log.level`.
//!
//! Needs a restart (reported by key in the answer and the log, and kept at the running value
//! until then — never silently ignored): everything under `[server]` (listeners, workers,
//! TLS, limits, timeouts), `admin.listen`, the tiers (`cache.memory`, `cache.disk`,
//! `cache.redis`, `cache.max_object_size`, `cache.write_policy`) and the access log's
//! `log.access` and `log.sample`. The rest of the new file still applies; a zero-downtime replacement
//! (README) covers the restart.
//!
//! Buckets are matched by `name`: a bucket keeps its metric series and cache entries across
//! reloads whatever else changes; a renamed bucket is a removed one plus a new one.

use crate::config::Config;

/// The new config as it will run, and what the operator is told about it.
#[derive(Debug)]
pub struct Plan {
    /// The new file's config with the restart-only settings kept at their running values.
    pub config: Config,
    /// Settings the new file changes that apply now (`buckets.assets`, `jwt`, `cache.ttl` …).
    pub applied: Vec<String>,
    /// Settings the new file changes that need a restart (kept at the running value).
    pub restart_required: Vec<String>,
}

/// What a reload did: the answer of `POST /admin/reload` and the log line of a SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        applied: Vec<String>,
        restart_required: Vec<String>,
    },
    Refused(String),
}

impl Outcome {
    /// The JSON answer of `POST /admin/reload`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Outcome::Applied {
                applied,
                restart_required,
            } => serde_json::json!({
                "outcome": "ok",
                "applied": applied,
                "restart_required": restart_required,
            }),
            Outcome::Refused(why) => serde_json::json!({"outcome": "error", "error": why}),
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Applied {
                applied,
                restart_required,
            } => {
                let mut s = if applied.is_empty() {
                    "configuration reloaded: nothing changed".to_owned()
                } else {
                    format!("configuration reloaded: {}", applied.join(", "))
                };
                if !restart_required.is_empty() {
                    s.push_str(&format!(
                        "; needs a restart to apply (still running the old values): {}",
                        restart_required.join(", ")
                    ));
                }
                s
            }
            Outcome::Refused(why) => {
                format!("configuration reload refused, still running the previous one: {why}")
            }
        }
    }
}

/// What `new` changes against `running`, and the config to run (see the module docs).
pub fn plan(running: &Config, mut new: Config) -> Plan {
    let mut applied = Vec::new();
    let mut restart = Vec::new();

    // Restart-only: noted when different, then put back to the running value.
    macro_rules! keep {
        ($label:expr, $($field:tt)+) => {
            if new.$($field)+ != running.$($field)+ {
                restart.push(String::from($label));
                new.$($field)+ = running.$($field)+.clone();
            }
        };
    }
    keep!("server.listen", server.listen);
    keep!("server.workers", server.workers);
    keep!("server.tls", server.tls);
    keep!("server.header_timeout", server.header_timeout);
    keep!("server.idle_timeout", server.idle_timeout);
    keep!("server.max_header_bytes", server.max_header_bytes);
    keep!("server.max_headers", server.max_headers);
    keep!("server.max_request_line", server.max_request_line);
    keep!("server.send_timeout", server.send_timeout);
    keep!("server.shutdown_grace", server.shutdown_grace);
    keep!("server.max_connections", server.max_connections);
    keep!("cache.memory", cache.memory);
    keep!("cache.disk", cache.disk);
    keep!("cache.redis", cache.redis);
    keep!("cache.max_object_size", cache.max_object_size);
    keep!("cache.write_policy", cache.write_policy);
    keep!("log.access", log.access);
    keep!("log.sample", log.sample_ppm);
    let (old_listen, new_listen) = (
        running.admin.as_ref().and_then(|a| a.listen),
        new.admin.as_ref().and_then(|a| a.listen),
    );
    if old_listen != new_listen {
        restart.push("admin.listen".to_owned());
        // With `[admin]` removed while its listener runs, the listener stays (answering 404
        // for the admin routes, which no longer exist) until a restart.
        if let Some(a) = new.admin.as_mut() {
            a.listen = old_listen;
        }
    }

    // Applied: named for the operator.
    macro_rules! note {
        ($label:expr, $($field:tt)+) => {
            if new.$($field)+ != running.$($field)+ {
                applied.push(String::from($label));
            }
        };
    }
    note!("cache.ttl", cache.ttl);
    note!("cache.negative_ttl", cache.negative_ttl);
    note!("cache.stale_if_error", cache.stale_if_error);
    note!("cache.stale_while_revalidate", cache.stale_while_revalidate);
    note!("jwt", jwt);
    note!("log.level", log.level);
    note!("cluster", cluster);
    let admin_rest = |c: &Config| {
        c.admin
            .as_ref()
            .map(|a| (a.claim.clone(), a.allow_networks.clone()))
    };
    if admin_rest(&new) != admin_rest(running) {
        applied.push("admin".to_owned());
    }
    for b in &new.buckets {
        match running.buckets.iter().find(|o| o.name == b.name) {
            None => applied.push(format!("buckets.{} (added)", b.name)),
            Some(o) if o != b => applied.push(format!("buckets.{} (changed)", b.name)),
            Some(_) => {}
        }
    }
    for o in &running.buckets {
        if !new.buckets.iter().any(|b| b.name == o.name) {
            applied.push(format!("buckets.{} (removed)", o.name));
        }
    }
    Plan {
        config: new,
        applied,
        restart_required: restart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_server: &str, buckets: &str, rest: &str) -> Config {
        let text =
            format!("[server]\nlisten = \"127.0.0.1:8080\"\n{extra_server}\n{buckets}\n{rest}\n");
        Config::from_toml_str(&text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn bucket(name: &str, prefix: &str, ttl: &str) -> String {
        format!(
            "[[buckets]]\nname = \"{name}\"\nprefix = \"{prefix}\"\nendpoint = \"http://127.0.0.1:9000\"\n\
             region = \"us-east-1\"\nbucket = \"b\"\naccess_key = \"a\"\nsecret_key = \"s\"\n{ttl}\n"
        )
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let c = config("", &bucket("a", "/a", ""), "");
        let p = plan(&c, c.clone());
        assert!(
            p.applied.is_empty() && p.restart_required.is_empty(),
            "{p:?}"
        );
        assert_eq!(p.config, c);
    }

    #[test]
    fn buckets_are_matched_by_name() {
        let running = config("", &(bucket("a", "/a", "") + &bucket("b", "/b", "")), "");
        let new = config(
            "",
            &(bucket("c", "/c", "") + &bucket("a", "/a", "ttl = \"5m\"")),
            "",
        );
        let p = plan(&running, new.clone());
        assert_eq!(
            p.applied,
            [
                "buckets.c (added)",
                "buckets.a (changed)",
                "buckets.b (removed)"
            ]
        );
        assert!(p.restart_required.is_empty());
        assert_eq!(p.config, new);
    }

    #[test]
    fn restart_only_settings_are_reported_and_kept() {
        let running = config(
            "workers = 2",
            &bucket("a", "/a", ""),
            "[cache]\nttl = \"1h\"\n",
        );
        let mut new = config(
            "workers = 4\nidle_timeout = \"5s\"",
            &bucket("a", "/a", ""),
            "[cache]\nttl = \"2h\"\nmemory = { capacity = \"1MiB\" }\n[log]\naccess = \"stderr\"\n",
        );
        new.server.listen = "127.0.0.1:9999".parse().unwrap();
        let p = plan(&running, new);
        assert_eq!(
            p.restart_required,
            [
                "server.listen",
                "server.workers",
                "server.idle_timeout",
                "cache.memory",
                "log.access"
            ]
        );
        assert_eq!(p.applied, ["cache.ttl"]);
        // Runs with the old values of what needs a restart, the new ones of the rest.
        assert_eq!(p.config.server, running.server);
        assert_eq!(p.config.cache.memory, running.cache.memory);
        assert_eq!(p.config.log, running.log);
        assert_eq!(p.config.cache.ttl, std::time::Duration::from_secs(7200));
    }

    #[test]
    fn the_log_level_applies_the_access_log_waits() {
        let running = config("", &bucket("a", "/a", ""), "");
        let new = config(
            "",
            &bucket("a", "/a", ""),
            "[log]\nlevel = \"debug\"\nsample = 0.5\n",
        );
        let p = plan(&running, new);
        assert_eq!(p.applied, ["log.level"]);
        assert_eq!(p.restart_required, ["log.sample"]);
        assert_eq!(p.config.log.level, Some(log::LevelFilter::Debug));
        assert_eq!(p.config.log.sample_ppm, 1_000_000);
        let bad = "[server]\nlisten = \"127.0.0.1:1\"\n[log]\nlevel = \"loud\"\n";
        let e = Config::from_toml_str(&format!("{bad}{}", bucket("a", "/a", "")), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.level") && e.contains("loud"), "{e}");
    }

    #[test]
    fn the_outcome_says_what_applies_and_what_waits() {
        let o = Outcome::Applied {
            applied: vec!["cache.ttl".into()],
            restart_required: vec!["server.workers".into()],
        };
        let j = o.to_json();
        assert_eq!(j["outcome"], "ok");
        assert_eq!(j["restart_required"][0], "server.workers");
        assert!(o.describe().contains("needs a restart"), "{}", o.describe());
        let r = Outcome::Refused("buckets[0].region: required".into());
        assert_eq!(r.to_json()["error"], "buckets[0].region: required");
    }
}
