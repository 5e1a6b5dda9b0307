//! The cost of one `/metrics` scrape (rendering every series) with 1, 10 and 100 buckets and two
//! workers' counters, after some traffic has been counted. Scrapes read relaxed atomics only:
//! no lock is taken that the request path also takes.
use std::sync::Arc;
use std::time::Duration;

use corvid::cache::tiered::Tiers;
use corvid::cache::usage::Buckets;
use corvid::config::Config;
use corvid::http::request::Method;
use corvid::metrics::Registry;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn config(buckets: usize) -> Config {
    let mut text = String::from("[server]\nlisten = \"127.0.0.1:8080\"\n");
    for i in 0..buckets {
        text.push_str(&format!(
            "[[buckets]]\nname = \"bucket-{i}\"\nprefix = \"/b{i}\"\nendpoint = \"http://127.0.0.1:9\"\n\
             region = \"r\"\nbucket = \"bucket-{i}\"\naccess_key = \"a\"\nsecret_key = \"s\"\n"
        ));
    }
    text.push_str("[cache.memory]\ncapacity = \"1MiB\"\n");
    Config::from_toml_str(&text, &|_| None).unwrap()
}

fn scrape(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_scrape");
    for n in [1usize, 10, 100] {
        let cfg = config(n);
        let buckets = Buckets::new(cfg.buckets.iter().map(|b| b.name.clone()));
        let tiers = Tiers::with_buckets(&cfg.cache, Arc::clone(&buckets)).unwrap();
        let registry = Registry::new(buckets, 2);
        let slots: Vec<usize> = (0..n).collect();
        for w in 0..2 {
            for b in 0..n {
                registry.worker(w, &slots).request(
                    Some(b),
                    Method::Get,
                    200,
                    Duration::from_micros(300),
                );
                registry.worker(w, &slots).cache_miss(b);
            }
        }
        let text = registry.render(&tiers, None);
        assert!(text.contains(&format!("bucket=\"bucket-{}\"", n - 1)));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| registry.render(&tiers, None).len())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = scrape
}
criterion_main!(benches);
