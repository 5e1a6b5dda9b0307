//! Whether the volume can hold `capacity`: the warning `corvid check` prints and start-up
//! logs when it cannot. (It is a warning, not an error: the tier still works, as a smaller
//! cache — see [`super::outage`] — and free space changes while corvid runs anyway.)

use std::io;
use std::path::Path;

/// Bytes an unprivileged writer may still allocate on the volume holding `path` (`statvfs`'s
/// `f_bavail × f_frsize`).
pub fn available(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: all-zero is a valid `statvfs` (plain integers); statvfs(3) fills it in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path alive for the call; `st` is a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(
        clippy::useless_conversion,
        reason = "fsblkcnt_t and c_ulong are 32-bit on some targets"
    )]
    let (blocks, size) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Ok(blocks.saturating_mul(size))
}

/// The warning for a tier larger than the volume of `dir` can hold: `capacity` plus one
/// segment (the spare made ahead, see `rollover.rs`) against the volume's free space plus
/// what the tier's segment files already take there. `dir` need not exist yet (the nearest
/// existing ancestor is asked). `None` when it fits or cannot be told.
#[expect(
    clippy::disallowed_methods,
    reason = "`corvid check` and start-up only, before the workers start"
)]
pub fn capacity_warning(dir: &Path, capacity: u64, segment_size: u64) -> Option<String> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let free = available(existing).ok()?;
    let held: u64 = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    super::segment::parse_file_name(&e.file_name().to_string_lossy()).is_some()
                })
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let room = free.saturating_add(held);
    (capacity.saturating_add(segment_size) > room).then(|| {
        format!(
            "cache.disk.capacity ({capacity} bytes, plus one {segment_size}-byte segment made \
             ahead) exceeds what the volume of {} can give the disk tier ({free} bytes free + \
             {held} in its segments): when the volume is full the tier reclaims its oldest \
             segments and holds less than its capacity",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capacity_beyond_the_volume_is_warned_about_and_a_small_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not/yet");
        assert!(capacity_warning(&missing, 1 << 20, 1 << 16).is_none());
        let w = capacity_warning(&missing, u64::MAX - 10, 1 << 16).expect("warned");
        assert!(w.contains("not/yet"), "{w}");
    }
}
