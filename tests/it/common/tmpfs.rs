//! A small tmpfs mounted for one test: a volume that really fills up.

use std::path::Path;

/// A tmpfs mounted on a temporary directory, unmounted on drop (a failing test included).
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: `24m`). `None`, with the reason printed,
    /// when this process may not mount (not root, or no `CAP_SYS_ADMIN` in a container).
    pub fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().expect("mount point");
        let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
        let target = c(dir.path().to_str().expect("UTF-8 temp path"));
        let (fstype, data) = (c("tmpfs"), c(&format!("size={size}")));
        // SAFETY: NUL-terminated strings alive for the call; mount(2) only reads them.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            eprintln!(
                "skipped: cannot mount a tmpfs: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target =
            std::ffi::CString::new(self.dir.path().to_str().unwrap_or_default()).expect("no NUL");
        // SAFETY: a NUL-terminated path alive for the call. MNT_DETACH: a process still holding
        // files there (a corvid not yet reaped) cannot keep the mount past the test.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}
