//! Free loopback ports, for every test that starts a server of its own (corvid, redis-server,
//! moto). Shared by tests/it and, through `tests/tier_support`, by tests/purge.rs and
//! tests/redis_tier.rs.

use std::net::TcpListener;

/// A port that was free a moment ago (bind 127.0.0.1:0, read, release).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}
