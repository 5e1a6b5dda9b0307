//! Redis tier client: sequential GET latency (1 KiB, 64 KiB) and throughput of 64 concurrent
//! tasks on one worker, against a redis-server this bench starts on a free loopback port.
//!
//! `cargo bench --bench redis` (skips with a message when `redis-server` is not on PATH).
//!
//! The throughput part also measures the alternative design the client did not take — each
//! connection carries one request at a time, a small pool of N per worker — as N tasks that each
//! own a client, so that the two can be compared on the same machine.
#![allow(
    clippy::disallowed_methods,
    reason = "a bench drives corvid from its own threads, not from a worker: it may block"
)]
#![allow(clippy::print_stdout, reason = "the report is the bench's output")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corvid::cache::redis::{RedisClient, RedisOptions};
use corvid::config::RedisTarget;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server() -> Option<(Server, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Some((server, port))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

async fn sequential(c: &RedisClient, key: &[u8], size: usize, n: usize) {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let v = c.get(key).await.unwrap().unwrap();
        lat.push(t.elapsed());
        assert_eq!(v.len(), size);
    }
    lat.sort();
    let mean = lat.iter().sum::<Duration>() / n as u32;
    println!(
        "GET {:>6} B sequential: n={n} mean {:>6.1} µs  p50 {:>6.1} µs  p99 {:>6.1} µs",
        size,
        mean.as_secs_f64() * 1e6,
        percentile(&lat, 0.5).as_secs_f64() * 1e6,
        percentile(&lat, 0.99).as_secs_f64() * 1e6,
    );
}

/// `tasks` tasks, each doing `per_task` GETs on `clients[i % clients.len()]`.
async fn concurrent(
    label: &str,
    clients: &[RedisClient],
    tasks: usize,
    key: &[u8],
    per_task: usize,
) {
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..tasks {
        let c = clients[i % clients.len()].clone();
        let key = key.to_vec();
        handles.push(monoio::spawn(async move {
            for _ in 0..per_task {
                c.get(&key).await.unwrap().unwrap();
            }
        }));
    }
    for h in handles {
        h.await;
    }
    let took = start.elapsed();
    let ops = (tasks * per_task) as f64;
    println!(
        "{label:<58} {:>9.0} GET/s ({} ops in {:.2} s)",
        ops / took.as_secs_f64(),
        tasks * per_task,
        took.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it, as a
    // build check, and the full run (~40 s) is not wanted there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("redis bench: not run outside `cargo bench`");
        return;
    }
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("redis bench skipped: redis-server is not on PATH");
        return;
    }
    let (_server, port) = start_server().expect("start redis-server");
    let target: RedisTarget = format!("redis://127.0.0.1:{port}").parse().unwrap();
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut opts = RedisOptions::new(target.clone());
        opts.timeout = Duration::from_secs(2);
        let c = RedisClient::new(opts.clone()).unwrap();
        let small = vec![7u8; 1024];
        let large = vec![9u8; 64 * 1024];
        c.set(b"small", &small, Duration::from_secs(600))
            .await
            .unwrap();
        c.set(b"large", &large, Duration::from_secs(600))
            .await
            .unwrap();
        // Warm-up: connection set up, buffers grown.
        for _ in 0..200 {
            c.get(b"large").await.unwrap();
        }

        sequential(&c, b"small", small.len(), 20_000).await;
        sequential(&c, b"large", large.len(), 5_000).await;

        for (key, per_task) in [(&b"small"[..], 2_000), (&b"large"[..], 300)] {
            let size = if key == b"small" { "1 KiB" } else { "64 KiB" };
            concurrent(
                &format!("{size}: 64 tasks, 1 pipelined connection"),
                std::slice::from_ref(&c),
                64,
                key,
                per_task,
            )
            .await;
            let mut two = opts.clone();
            two.connections = 2;
            let two = RedisClient::new(two).unwrap();
            concurrent(
                &format!("{size}: 64 tasks, 2 pipelined connections"),
                std::slice::from_ref(&two),
                64,
                key,
                per_task,
            )
            .await;
            for n in [1, 4, 8] {
                let pool: Vec<RedisClient> = (0..n)
                    .map(|_| RedisClient::new(opts.clone()).unwrap())
                    .collect();
                concurrent(
                    &format!("{size}: pool of {n} one-at-a-time connections"),
                    &pool,
                    n,
                    key,
                    per_task * 64 / n,
                )
                .await;
            }
        }
    });
}
