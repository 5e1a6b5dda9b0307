#!/usr/bin/env bash
# Memory per cached entry beyond its body, and RSS of a full small memory tier against its
# capacity (issue 16). Runs examples/entry_overhead.rs (release) in one process per figure:
#   entries: 50,000 objects of 1 KiB in a 1 GiB tier (all kept): RSS growth per entry - 1024
#   full:    a 16 MiB (and 64 MiB) tier under twice its capacity in distinct 1 KiB objects
# The objects carry what a typical S3 answer passes: Content-Type, ETag, Last-Modified,
# Cache-Control and two x-amz-meta-* fields.
#
#   perf/entry_overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --example entry_overhead
bin=target/release/examples/entry_overhead
"$bin" entries 50000 1024
"$bin" full 16 1024
"$bin" full 64 1024
"$bin" full 16 200
