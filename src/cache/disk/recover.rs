//! Recovery: rebuilding the index from the segment files at start-up.
//!
//! Recovery is the only reader of the whole log, and the only place that must assume the files
//! are damaged, so it is kept apart from the writer. Rules, in order:
//!
//! 1. Only files named `seg-<16 hex digits>.corvid` whose segment header checks and names the
//!    same id are segments; anything else in the directory is counted and left alone, except
//!    corvid's own leftovers: `seg-<16 hex digits>.corvid.tmp` (a segment whose creation a
//!    crash interrupted, see [`Segment::create`]) is deleted.
//! 2. Segments are replayed in id order and records in offset order, which is write order
//!    (ids only grow; offsets are reserved in increasing order), so later records win.
//! 3. Per record ([`format::decode`]):
//!    - all-zero header: the end of what was written in this segment;
//!    - header that does not check (magic, version, CRC, implausible lengths): the scan of this
//!      segment ends, counted as one corrupt record (what followed cannot be located);
//!    - header checks but the record runs past the end of the file: torn (a truncated file);
//!    - header checks but key/value do not: the record is dropped and the scan continues
//!      after it. It is counted as torn if nothing was written after it (the typical shape of
//!      a write cut short by a power failure), else as corrupt.
//! 4. A value record replaces the key's entry; a tombstone removes it; a touch record sets the
//!    expiry of the key's entry *only if* that entry is the one the touch names (segment id and
//!    offset), so a touch can never extend some other version of the key.
//! 5. Entries still expired after all touches are applied are dropped.
//! 6. A segment in which nothing was written — its first record slot is all zeros — is
//!    deleted. That is the spare a running cache keeps ready for its next roll-over
//!    (`rollover.rs`), or a segment installed just before a crash. Nothing in it could
//!    be served (the scan of a segment ends at the first all-zero header), it holds no
//!    tombstone, and a fresh process never appends to a recovered segment, so keeping it would
//!    only cost a segment of capacity until reclaim reached it.
//!
//! Every record's value is checksummed, so recovery reads every byte of every segment. That is
//! the price of "never serve damaged data" without paying a CRC on each hit; see the bench for
//! the cost per million entries.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::format::{self, DecodeError, Kind, SEGMENT_HEADER_LEN};
use super::index::{Index, Slot};
use super::segment::{self, Segment};
use super::{now_ms, RecoveryReport};

/// What recovery hands to [`super::DiskCache::open`].
pub struct Recovered {
    /// Valid segments, oldest first.
    pub segments: VecDeque<Arc<Segment>>,
    pub index: Index,
    /// First id not used by any file in the directory (valid or not), so a new segment never
    /// collides with a stray file.
    pub next_id: u64,
    pub live_entries: u64,
    pub live_bytes: u64,
    pub report: RecoveryReport,
}

/// Scans `dir` (which must exist) and rebuilds the index.
#[expect(
    clippy::disallowed_methods,
    reason = "recovery runs at start-up, in `DiskCache::open`, before the workers start"
)]
pub fn recover(dir: &Path) -> io::Result<Recovered> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let mut named = Vec::new();
    let mut next_id = 1u64;
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        if ent.file_name() == super::LOCK_FILE {
            continue;
        }
        let tmp = ent
            .file_name()
            .to_str()
            .and_then(segment::parse_tmp_file_name);
        if let Some(id) = tmp.filter(|_| ent.file_type().is_ok_and(|t| t.is_file())) {
            next_id = next_id.max(id.saturating_add(1));
            std::fs::remove_file(ent.path())?;
            report.removed_empty += 1;
            continue;
        }
        let id = ent.file_name().to_str().and_then(segment::parse_file_name);
        if let Some(id) = id {
            next_id = next_id.max(id.saturating_add(1));
        }
        match id {
            Some(id) if ent.file_type()?.is_file() => named.push((id, ent.path())),
            _ => report.ignored_files += 1,
        }
    }
    named.sort_unstable_by_key(|(id, _)| *id);

    let mut index = Index::new();
    let mut segments = VecDeque::with_capacity(named.len());
    for (id, path) in named {
        match Segment::open_existing(&path, id)? {
            Some(seg) => {
                let seg = Arc::new(seg);
                if replay(&seg, &mut index, &mut report) {
                    segments.push_back(seg);
                } else {
                    drop(seg);
                    std::fs::remove_file(&path)?;
                    report.removed_empty += 1;
                }
            }
            None => report.ignored_files += 1,
        }
    }
    report.segments = segments.len();

    // Expiry is judged once, after every touch has been applied.
    let now = now_ms();
    let (mut live_entries, mut live_bytes) = (0u64, 0u64);
    for shard in index.shards_mut() {
        let before = shard.len();
        shard.retain(|_, slot| slot.expires_at_ms > now);
        report.dropped_expired += (before - shard.len()) as u64;
        for (key, slot) in shard.iter() {
            live_entries += 1;
            live_bytes += slot.padded_len();
            let mut p = slot
                .segment
                .published
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            p.keys.push((key.clone(), slot.offset));
        }
    }
    report.entries = live_entries;
    report.bytes = live_bytes;
    report.elapsed = started.elapsed();
    Ok(Recovered {
        segments,
        index,
        next_id,
        live_entries,
        live_bytes,
        report,
    })
}

/// Replays one segment's records into `index`. Returns `false` if nothing was ever written in
/// it (no record, intact or damaged).
fn replay(seg: &Arc<Segment>, index: &mut Index, report: &mut RecoveryReport) -> bool {
    let len = seg.len();
    let data = seg.slice(0, len);
    // The size the segment was created with bounds any record; a truncated file is still
    // judged against its original size so a cut record reads as torn, not implausible.
    let nominal = format::decode_segment_header(data)
        .map_or(len as u64, |h| h.size)
        .min(u64::from(u32::MAX)) as usize;
    let max_record = nominal.saturating_sub(SEGMENT_HEADER_LEN);
    let mut off = SEGMENT_HEADER_LEN;
    while off < len {
        match format::decode(&data[off..], max_record) {
            Ok(e) => {
                apply(seg, off as u32, &e, index, report);
                off += e.header.padded_len();
            }
            Err(DecodeError::Empty) if off == SEGMENT_HEADER_LEN => return false,
            Err(DecodeError::Empty) => break,
            Err(DecodeError::ShortHeader | DecodeError::Truncated) => {
                report.dropped_torn += 1;
                break;
            }
            Err(
                DecodeError::BadHeader | DecodeError::HeaderChecksum | DecodeError::Implausible,
            ) => {
                report.dropped_corrupt += 1;
                break;
            }
            Err(DecodeError::BodyChecksum) => {
                let h = format::decode_header(&data[off..], max_record)
                    .expect("decode checked this header");
                off += h.padded_len();
                let nothing_after = data.get(off..).is_none_or(|rest| {
                    matches!(
                        format::decode_header(rest, max_record),
                        Err(DecodeError::Empty)
                    )
                });
                if nothing_after {
                    report.dropped_torn += 1;
                } else {
                    report.dropped_corrupt += 1;
                }
            }
        }
    }
    true
}

fn apply(
    seg: &Arc<Segment>,
    offset: u32,
    e: &format::Entry<'_>,
    index: &mut Index,
    report: &mut RecoveryReport,
) {
    let map = index.get_mut(e.key);
    match e.header.kind {
        Kind::Value => {
            let slot = Slot {
                segment: seg.clone(),
                offset,
                key_len: e.header.key_len,
                value_len: e.header.value_len,
                expires_at_ms: e.header.expires_at_ms,
                written_at_ms: e.header.written_at_ms,
                stamp_ms: 0,
            };
            // One hash per record (`entry`), at the price of a key allocation that is wasted
            // when the key was already present; rebuild time is dominated by hashing.
            match map.entry(Arc::from(e.key)) {
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    o.insert(slot);
                    report.superseded += 1;
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(slot);
                }
            }
        }
        Kind::Tombstone => {
            if map.remove(e.key).is_some() {
                report.removed += 1;
            }
        }
        Kind::Touch => {
            let Some((seg_id, off, stamp)) = format::decode_touch_payload(e.value) else {
                return;
            };
            if let Some(slot) = map.get_mut(e.key) {
                if (slot.segment.id, u64::from(slot.offset)) == (seg_id, off) {
                    slot.expires_at_ms = e.header.expires_at_ms;
                    if stamp != 0 {
                        slot.stamp_ms = stamp;
                    }
                }
            }
        }
    }
}
