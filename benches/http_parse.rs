//! Hot-path costs of the HTTP/1.1 layer: request head parsing with a warm, reused head, chunked
//! body decoding, and response head writing into a reused buffer.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use corvid::http::chunked::ChunkedDecoder;
use corvid::http::request::{parse_request, Limits, RequestHead};
use corvid::http::response::{
    end_head, write_header, write_header_u64, write_status_line, DateCache,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BROWSER_GET: &[u8] =
    b"GET /bucket/photos/2024/holiday/IMG_0001.jpg?versionId=3HL4kqtJlcpXroDTDmJ HTTP/1.1\r\n\
Host: s3.eu-west-1.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5\r\n\
Accept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/gallery\r\n\
Connection: keep-alive\r\n\
If-None-Match: \"9b2cf535f27731c974343645a3985328\"\r\n\
Range: bytes=0-1048575\r\n\
Cache-Control: no-cache\r\n\r\n";

const CURL_GET: &[u8] = b"GET /bucket/key HTTP/1.1\r\nHost: localhost:9000\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

fn request_heads(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse_request");
    for (name, req) in [
        ("browser_get_10_headers", BROWSER_GET),
        ("curl_get", CURL_GET),
    ] {
        let mut head = RequestHead::default();
        parse_request(req, &limits, &mut head).unwrap().unwrap(); // warm
        g.throughput(Throughput::Bytes(req.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| parse_request(black_box(req), &limits, &mut head).unwrap())
        });
    }
    g.finish();
}

fn chunked_body(c: &mut Criterion) {
    const CHUNK: usize = 16 * 1024;
    const TOTAL: usize = 1024 * 1024;
    let mut body = Vec::with_capacity(TOTAL + 4096);
    for _ in 0..TOTAL / CHUNK {
        body.extend_from_slice(format!("{CHUNK:x}\r\n").as_bytes());
        body.extend(std::iter::repeat_n(b'x', CHUNK));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut g = c.benchmark_group("chunked");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.bench_function("decode_1MiB_in_16KiB_chunks", |b| {
        b.iter(|| {
            let mut dec = ChunkedDecoder::default();
            let mut at = 0;
            let mut payload = 0;
            while !dec.is_done() {
                let step = dec.decode(black_box(&body[at..])).unwrap();
                payload += step.data.len();
                at += step.consumed;
            }
            assert_eq!(payload, TOTAL);
        })
    });
    g.finish();
}

fn response_head(c: &mut Criterion) {
    let mut out = Vec::with_capacity(1024);
    let mut dates = DateCache::default();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    c.bench_function("write_response_head_8_headers", |b| {
        b.iter(|| {
            out.clear();
            write_status_line(&mut out, 200);
            write_header(&mut out, "Date", dates.get(now));
            write_header(&mut out, "Server", b"corvid");
            write_header(&mut out, "Content-Type", b"image/jpeg");
            write_header_u64(&mut out, "Content-Length", black_box(1_048_576));
            write_header(&mut out, "ETag", b"\"9b2cf535f27731c974343645a3985328\"");
            write_header(&mut out, "Last-Modified", b"Tue, 14 Nov 2023 22:13:20 GMT");
            write_header(&mut out, "Accept-Ranges", b"bytes");
            write_header(&mut out, "x-corvid-cache", b"hit");
            end_head(&mut out);
            black_box(out.len())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = request_heads, chunked_body, response_head
}
criterion_main!(benches);
