//! The per-worker verified-token cache: a token seen again is not verified again.
//!
//! Why: benches/jwt.rs (2 shared cores, release) measured a full check at ~4 µs for HS256,
//! ~30 µs RS256, ~45 µs PS256, ~90 µs ES256, ~1.3 ms ES384 (ring's P-384 is slow) and ~85 µs
//! EdDSA, against a few µs for a whole 1 KiB memory hit; clients send the same token on every
//! request until it expires. A hit here costs 80-150 ns (one hash of the token, one comparison
//! of it, the time and rule checks) and allocates nothing (tests/jwt.rs checks that).
//!
//! Design:
//! * **Per worker, no lock**: `RefCell` inside, `!Sync`; each worker holds one (in its `Rc`
//!   context). A token verified on another worker is verified once more there; that is cheaper
//!   than sharing.
//! * **Keyed by the token itself**: slots are chosen by a keyed foldhash of the token (the seed
//!   is random per cache, so nobody can aim tokens at one slot), and a hit compares the whole
//!   stored token byte for byte. Correctness therefore never rests on the hash: a collision is
//!   just a miss. A SHA-256 digest instead of the token would save the stored bytes but cost
//!   more per hit than the comparison it replaces, and a truncated fast hash alone would let a
//!   colliding forged token ride on a verified one. Entries live only in this process's memory
//!   and are never logged.
//! * **Bounded**: a fixed array of 2-way sets (capacity rounded up to a power of two, default
//!   [`DEFAULT_CAPACITY`]); a new token replaces an empty, expired or foreign slot of its set,
//!   else the entry that expires first. No allocation except the stored token and claims at
//!   insert.
//! * **Never outlives the token**: a hit re-checks `exp` and `nbf` (with the leeway) at the
//!   given `now`; an entry past them is dropped and the token verified afresh (which then
//!   fails). The per-bucket rules and the admin claim are evaluated on the stored claims on
//!   every hit, so one entry serves every bucket.
//! * **Tied to its verifier**: an entry records which [`Verifier`] admitted it; another
//!   verifier (a reload with new keys, issuer or audience) never gets its answers.
//! * Failures are not cached.

use std::cell::RefCell;
use std::hash::BuildHasher;

use super::verify::{Claims, Verified, Verifier};
use super::AuthFailure;
use crate::config::{ClaimMatch, ClaimRule};

/// Entries per worker by default.
pub const DEFAULT_CAPACITY: usize = 1024;

const WAYS: usize = 2;

struct Entry {
    verifier: u64,
    token: Box<str>,
    claims: Claims,
}

struct Inner {
    slots: Box<[Option<Entry>]>,
    hasher: foldhash::fast::RandomState,
}

/// Verified tokens of one worker. See the module docs.
pub struct TokenCache {
    inner: RefCell<Inner>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl TokenCache {
    /// A cache of at least `capacity` entries (rounded up to a power of two, at least 2).
    pub fn new(capacity: usize) -> Self {
        let n = capacity.max(WAYS).next_power_of_two();
        TokenCache {
            inner: RefCell::new(Inner {
                slots: (0..n).map(|_| None).collect(),
                hasher: foldhash::fast::RandomState::default(),
            }),
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.inner.borrow().slots.len()
    }

    /// Number of entries stored (expired ones included until replaced).
    pub fn len(&self) -> usize {
        self.inner.borrow().slots.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.inner
            .borrow_mut()
            .slots
            .iter_mut()
            .for_each(|s| *s = None);
    }

    /// [`Verifier::check`] through the cache: the token is verified (signature, time, `iss`,
    /// `aud`) unless a valid entry exists, then the bucket's `rules` are checked (→ 403).
    pub fn check(
        &self,
        verifier: &Verifier,
        token: &str,
        now: u64,
        rules: &[ClaimRule],
    ) -> Result<Verified, AuthFailure> {
        self.check_with(verifier, token, now, |c| c.check_rules(rules))
    }

    /// [`Verifier::check_admin`] through the cache.
    pub fn check_admin(
        &self,
        verifier: &Verifier,
        token: &str,
        now: u64,
        admin: &ClaimMatch,
    ) -> Result<Verified, AuthFailure> {
        self.check_with(verifier, token, now, |c| c.check_admin(admin))
    }

    /// The general form: verifies (or finds) `token`, then asks `decide` about its claims.
    /// `decide` must not use this cache (it runs while the cache is borrowed).
    pub fn check_with(
        &self,
        verifier: &Verifier,
        token: &str,
        now: u64,
        decide: impl FnOnce(&Claims) -> Result<(), AuthFailure>,
    ) -> Result<Verified, AuthFailure> {
        let mut inner = self.inner.borrow_mut();
        let set = inner.set_of(token);
        for i in set..set + WAYS {
            let Some(e) = &inner.slots[i] else { continue };
            if e.verifier != verifier.id() || *e.token != *token {
                continue;
            }
            if e.claims.valid_at(now, verifier.leeway()).is_err() {
                inner.slots[i] = None;
                break;
            }
            decide(&e.claims)?;
            return Ok(Verified {
                exp: e.claims.exp(),
                cached: true,
            });
        }
        drop(inner);
        let claims = verifier.verify(token, now)?;
        let outcome = decide(&claims);
        let exp = claims.exp();
        let mut inner = self.inner.borrow_mut();
        let slot = inner.victim(set, verifier, now);
        inner.slots[slot] = Some(Entry {
            verifier: verifier.id(),
            token: token.into(),
            claims,
        });
        outcome.map(|()| Verified { exp, cached: false })
    }
}

impl Inner {
    /// First slot of the token's set.
    fn set_of(&self, token: &str) -> usize {
        let h = self.hasher.hash_one(token.as_bytes()) as usize;
        (h & (self.slots.len() - 1)) & !(WAYS - 1)
    }

    /// The slot of `set` a new entry goes to: empty, foreign or expired first, else the entry
    /// that expires first.
    fn victim(&self, set: usize, verifier: &Verifier, now: u64) -> usize {
        let mut best = set;
        let mut best_exp = u64::MAX;
        for i in set..set + WAYS {
            match &self.slots[i] {
                None => return i,
                Some(e)
                    if e.verifier != verifier.id()
                        || e.claims.valid_at(now, verifier.leeway()).is_err() =>
                {
                    return i
                }
                Some(e) if e.claims.exp() < best_exp => {
                    best = i;
                    best_exp = e.claims.exp();
                }
                Some(_) => {}
            }
        }
        best
    }
}
