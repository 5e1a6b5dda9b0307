#!/usr/bin/env python3
"""Client for perf/fleet.sh: GETs objects through several corvid instances, checks every answer.

    fleet_client.py sizes  N SEED                      # "KEY=SIZE" lines of the catalog
    fleet_client.py spread PORTS KEYS ROUNDS PROCS     # every key ROUNDS times via every instance
    fleet_client.py zipf   PORTS KEYS REQUESTS S SEED PROCS

PORTS is "p1,p2,p3" (127.0.0.1). Keys are `z00000`… with sizes from `sizes` (deterministic,
1-4 KiB). `spread`: PROCS processes at once, each walking every key in its own shuffled order,
for every round through every instance (rotated per process), so the instances see concurrent
misses on the same keys. `zipf`: one Zipf(S) trace of REQUESTS over KEYS keys (seeded; rank r
is key z<r>), request i sent to instance i % len(PORTS); PROCS processes each take every
PROCS-th request. Either prints one JSON line: requests, failures (non-200 or a body of the
wrong length; the first few described), seconds.

Raw sockets and a minimal HTTP/1.1 reader (keep-alive, Content-Length bodies) rather than
http.client: several times faster, so a few hundred thousand requests fit in a minute.
"""
import bisect
import json
import multiprocessing
import random
import socket
import sys
import time


def size_of(i, seed=18):
    # Deterministic 1-4 KiB per key (a cheap integer hash, the same in every process).
    h = (i * 2654435761 + seed) & 0xFFFFFFFF
    return 1024 + h % 3073


def key_of(i):
    return f"z{i:05d}"


class Conn:
    """One keep-alive connection to 127.0.0.1:port; reconnects after a close."""

    def __init__(self, port):
        self.port = port
        self.sock = None
        self.buf = b""

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self, path):
        """(status, body length, close) of GET path."""
        if self.sock is None:
            self._connect()
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: fleet\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the head")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, close = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise ValueError(f"unexpected transfer-encoding on {path}")
        if length is None:
            raise ValueError(f"no content-length on {path} ({status})")
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the body")
            self.buf += chunk
        self.buf = self.buf[length:]
        if close:
            self.sock.close()
            self.sock = None
        return status, length


def run(job):
    """Sends job's (instance index, key index) requests; returns (requests, failures, notes)."""
    ports, requests = job
    conns = [Conn(p) for p in ports]
    failures, notes = 0, []
    for inst, k in requests:
        path = f"/perf/{key_of(k)}"
        try:
            status, length = conns[inst].get(path)
            if status != 200 or length != size_of(k):
                failures += 1
                if len(notes) < 5:
                    notes.append(f"{ports[inst]}{path}: {status}, {length} of {size_of(k)} bytes")
        except (OSError, ValueError) as e:
            failures += 1
            conns[inst].sock = None
            if len(notes) < 5:
                notes.append(f"{ports[inst]}{path}: {e!r}")
    return len(requests), failures, notes


def zipf_trace(keys, n, s, seed):
    rng = random.Random(seed)
    cdf, total = [], 0.0
    for r in range(1, keys + 1):
        total += 1.0 / r**s
        cdf.append(total)
    return [min(bisect.bisect_left(cdf, rng.random() * total), keys - 1) for _ in range(n)]


def main():
    mode = sys.argv[1]
    if mode == "sizes":
        n = int(sys.argv[2])
        for i in range(n):
            print(f"{key_of(i)}={size_of(i)}")
        return
    ports = [int(p) for p in sys.argv[2].split(",")]
    keys = int(sys.argv[3])
    if mode == "spread":
        rounds, procs = int(sys.argv[4]), int(sys.argv[5])
        jobs = []
        for p in range(procs):
            order = list(range(keys))
            random.Random(p).shuffle(order)
            reqs = []
            for _ in range(rounds):
                for j in range(len(ports)):
                    inst = (j + p) % len(ports)
                    reqs.extend((inst, k) for k in order)
            jobs.append((ports, reqs))
    elif mode == "zipf":
        n, s, seed, procs = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
        trace = zipf_trace(keys, n, s, seed)
        jobs = [
            (ports, [(i % len(ports), trace[i]) for i in range(p, n, procs)]) for p in range(procs)
        ]
    else:
        sys.exit(f"unknown mode {mode}")
    t0 = time.monotonic()
    with multiprocessing.Pool(len(jobs)) as pool:
        results = pool.map(run, jobs)
    secs = time.monotonic() - t0
    print(
        json.dumps(
            {
                "requests": sum(r[0] for r in results),
                "failures": sum(r[1] for r in results),
                "notes": [n for r in results for n in r[2]][:10],
                "seconds": round(secs, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
