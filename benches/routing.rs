//! Routing cost per request: the prefix match among 1, 10 and 100 buckets, and decoding a
//! long percent-encoded key (the worst realistic case for `decode_key`).
use corvid::router::{decode_key, encode_key, Router};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

fn prefixes(n: usize) -> Vec<String> {
    // A mix of depths, like a real deployment: /bucket-i and /team-j/bucket-i.
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                format!("/team-{}/bucket-{i}", i % 7)
            } else {
                format!("/bucket-{i}")
            }
        })
        .collect()
}

fn route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for n in [1usize, 10, 100] {
        let owned = prefixes(n);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let router = Router::new(&refs);
        // The last prefix, with a typical multi-segment key.
        let path = format!("{}/images/2024/06/photo%20of%20a%20cat.jpg", refs[n - 1]);
        assert!(router.route(&path).is_ok());
        group.bench_with_input(BenchmarkId::from_parameter(n), &path, |b, path| {
            b.iter(|| router.route(black_box(path)))
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    // ~700 encoded bytes (the long-key case): unicode, spaces and reserved characters.
    let key: String = "dir/sub dir/ünïcødé-file (1)+[x]&y=z.txt/".repeat(9);
    let encoded = encode_key(&key);
    assert!(encoded.len() >= 700, "{}", encoded.len());
    assert_eq!(decode_key(&encoded).unwrap(), key);
    c.bench_function(&format!("decode_key/{}B", encoded.len()), |b| {
        b.iter(|| decode_key(black_box(&encoded)))
    });
}

criterion_group!(benches, route, decode);
criterion_main!(benches);
