//! Which member of a fleet owns a key: rendezvous hashing (highest random weight).
//!
//! Every member scores every key — xxh3-64 of the key seeded with a hash of the member's name
//! (`host:port`) — and the highest score owns it. Chosen over a ketama ring because it needs no
//! virtual nodes to spread keys evenly, has no ring to rebuild when membership changes, and
//! moves the minimum: when a member joins a fleet of N, each key moves only if the newcomer
//! outscores its owner, i.e. ~1/(N+1) of the keys, all of them to the newcomer; when a member
//! leaves, only its keys move, spread over the others. The cost, N hashes per lookup, is paid
//! only on misses (a hit never asks), and N is small (tens of instances): ~10 ns per member for
//! a typical key. xxh3 is a published algorithm with a fixed output, so every instance (and
//! every corvid version) agrees on the owner of every key.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// One member as ownership sees it: its name's hash, computed once per membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(u64);

impl Seed {
    /// The seed of the member named `name` (its `host:port`).
    pub fn of(name: &str) -> Seed {
        Seed(xxh3_64(name.as_bytes()))
    }
}

/// The member's score for `key`.
fn score(seed: Seed, key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, seed.0)
}

/// The index in `members` of the owner of `key`; `None` when there are no members. Ties (two
/// members with equal seeds, i.e. the same name) go to the first.
pub fn owner(key: &[u8], members: &[Seed]) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (i, &m) in members.iter().enumerate() {
        let s = score(m, key);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, i));
        }
    }
    best.map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(names: &[&str]) -> Vec<Seed> {
        names.iter().map(|n| Seed::of(n)).collect()
    }

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("bucket\0photos/{i}.jpg").into_bytes())
            .collect()
    }

    #[test]
    fn every_member_gets_a_fair_share() {
        let members = seeds(&["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]);
        let mut counts = [0usize; 3];
        for k in keys(30_000) {
            counts[owner(&k, &members).unwrap()] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn a_joining_member_takes_about_one_in_n_plus_one_keys_and_only_to_itself() {
        let three = seeds(&["a:1", "b:1", "c:1"]);
        let four = seeds(&["a:1", "b:1", "c:1", "d:1"]);
        let ks = keys(20_000);
        let mut moved = 0;
        for k in &ks {
            let (before, after) = (owner(k, &three).unwrap(), owner(k, &four).unwrap());
            if before != after {
                assert_eq!(after, 3, "a key moved between old members");
                moved += 1;
            }
        }
        let fraction = moved as f64 / ks.len() as f64;
        assert!((0.22..0.28).contains(&fraction), "{fraction}");
    }

    #[test]
    fn a_leaving_member_moves_only_its_own_keys() {
        let three = seeds(&["a:1", "b:1", "c:1"]);
        let two = seeds(&["a:1", "c:1"]);
        for k in keys(5_000) {
            let before = owner(&k, &three).unwrap();
            let after = owner(&k, &two).unwrap();
            match before {
                0 => assert_eq!(after, 0),
                2 => assert_eq!(after, 1),
                _ => {}
            }
        }
    }

    #[test]
    fn the_owner_does_not_depend_on_the_order_members_are_listed_in() {
        let abc = ["a:1", "b:1", "c:1"];
        let cab = ["c:1", "a:1", "b:1"];
        for k in keys(1_000) {
            let x = abc[owner(&k, &seeds(&abc)).unwrap()];
            let y = cab[owner(&k, &seeds(&cab)).unwrap()];
            assert_eq!(x, y);
        }
        assert_eq!(owner(b"k", &[]), None);
    }

    #[test]
    fn scores_are_xxh3_seeded_by_the_member_name() {
        // Pinned so that a change of hash (which would move every key between versions of a
        // rolling upgrade) fails here. Values from the xxh3 reference (xxhsum -H3).
        assert_eq!(xxh3_64(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(Seed::of("").0, 0x2d06_8005_38d3_94c2);
    }
}
