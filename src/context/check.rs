//! `corvid check`: what a loaded config would do at start beyond parsing ([`check`]).
//!
//! Parsing and key validation are the config's ([`Config::load`]); some faults only show when
//! a generation is built — a JWT key file that is not a key, a `rediss://` CA file that is not
//! PEM. `check` runs the same builders `serve` runs at start (`build.rs`), so a config that
//! `check` accepts is not refused by `serve` for those, and says what `serve` would warn about
//! on this machine (the open-file limit, the disk tier's volume) without making the config
//! invalid. It builds nothing that lasts (no tiers, no threads, no sockets).

use super::build::redis_options;
use crate::config::Config;
use crate::fdlimit;

/// Checks `config` as `serve` would at start: `Err` is the first fault, naming the config key
/// (the config is invalid); `Ok` has the warnings, one line each (it is valid, and runs as they
/// say). Blocking (reads key and certificate files): the CLI, never a worker.
pub fn check(config: &Config) -> Result<Vec<String>, String> {
    // The key files' contents are parsed as `serve` does at start.
    if let Some(jwt) = &config.jwt {
        crate::auth::Verifier::new(jwt)?;
    }
    // So is a rediss:// Redis's `ca_file` (the options name the key at fault).
    if let Some(redis) = &config.cache.redis {
        redis_options(redis)?;
    }
    // Warnings do not make a config invalid: they say how it will run here.
    let mut warnings = Vec::new();
    warnings.extend(fd_limit_warning(config));
    warnings.extend(crate::cache::memory::slice_warning(&config.cache));
    if let Some(d) = &config.cache.disk {
        warnings.extend(crate::cache::disk::space::capacity_warning(
            &d.dir,
            d.capacity,
            d.segment_size,
        ));
    }
    Ok(warnings)
}

/// What `corvid check` warns about the open-file limit: the budget `serve` would have, with the
/// soft limit raised to the hard one as `serve` does.
fn fd_limit_warning(config: &Config) -> Option<String> {
    let (_, hard) = fdlimit::current().ok()?;
    let workers = config.server.worker_count();
    fdlimit::Budget::new(config, workers, hard).warning(config, workers)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests may block")]
mod tests {
    use super::*;

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[[buckets]]\n\
                        name = \"b\"\nprefix = \"/b\"\nendpoint = \"http://127.0.0.1:9\"\n\
                        region = \"us-east-1\"\nbucket = \"b\"\naccess_key = \"AK\"\n\
                        secret_key = \"SK\"\n";

    fn config(extra: &str) -> Config {
        let text = format!("{BASE}{extra}");
        Config::from_toml_str(&text, &|_| None)
            .unwrap_or_else(|e| panic!("a valid config: {e}\n{text}"))
    }

    #[test]
    fn a_plain_config_passes_without_warnings() {
        assert_eq!(check(&config("")), Ok(Vec::new()));
    }

    #[test]
    fn slices_larger_than_the_memory_tiers_admission_queue_are_a_warning() {
        // 5 % of 16 MiB is 819 KiB: 1 MiB slices do not fit, 512 KiB ones do.
        let warned = check(&config(
            "\n[cache]\nmax_object_size = \"4MiB\"\nslice_size = \"1MiB\"\n\
             [cache.memory]\ncapacity = \"16MiB\"\n",
        ))
        .expect("valid");
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].starts_with("cache.slice_size"), "{warned:?}");
        for quiet in [
            "\n[cache]\nmax_object_size = \"4MiB\"\nslice_size = \"512KiB\"\n\
             [cache.memory]\ncapacity = \"16MiB\"\n",
            "\n[cache]\nmax_object_size = \"4MiB\"\nslice_size = \"1MiB\"\n\
             max_sliced_object_size = 0\n[cache.memory]\ncapacity = \"16MiB\"\n",
            "\n[cache]\nmax_object_size = \"4MiB\"\nslice_size = \"1MiB\"\n\
             [cache.memory]\ncapacity = 0\n",
        ] {
            assert_eq!(check(&config(quiet)), Ok(Vec::new()), "{quiet}");
        }
    }

    #[test]
    fn a_disk_tier_larger_than_its_volume_is_a_warning_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let warnings = check(&config(&format!(
            "\n[cache.disk]\ndir = {:?}\ncapacity = \"1000000TiB\"\n",
            dir.path().join("cache").display().to_string()
        )))
        .expect("valid");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("cache.disk.capacity"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_key_file_that_is_no_key_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("jwt.pem");
        std::fs::write(
            &pem,
            "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let e = check(&config(&format!(
            "\n[jwt]\nalgorithm = \"RS256\"\npublic_key = {:?}\n",
            pem.display().to_string()
        )))
        .expect_err("refused");
        assert!(e.contains("jwt.public_key"), "{e}");
    }

    #[test]
    fn a_redis_ca_file_that_is_not_pem_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let e = check(&config(&format!(
            "\n[cache.redis]\nurl = \"rediss://127.0.0.1:6380\"\nca_file = {:?}\n",
            ca.display().to_string()
        )))
        .expect_err("refused");
        assert!(e.starts_with("cache.redis.ca_file"), "{e}");
    }
}
