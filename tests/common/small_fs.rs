//! A small filesystem of the test's own under a directory (a tmpfs of a
//! given size), to fill and free while a node writes to it: the full disk
//! of a real deployment, without filling the machine's. Unmounted on drop,
//! so a failing test leaves no mount behind. Root only (mount(2)).

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The file that takes up the free space; inside the mount, so removing
/// it is all that freeing takes.
const FILLER: &str = "voteswarm-test-filler";

pub struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `megabytes` on `dir` (made if missing; it must
    /// be empty, or what is in it is hidden while mounted). Panics, saying
    /// why, when not root.
    pub fn mount(dir: &Path, megabytes: u32) -> SmallFs {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "a full-disk scenario mounts a small filesystem: run it as root (sudo -E make chaos)"
        );
        std::fs::create_dir_all(dir).expect("the mount point");
        let target = c_path(dir);
        let fstype = CString::new("tmpfs").unwrap();
        // mode=0755: a node running as another user (PostgreSQL) reaches it
        // as it reached the directory it covers.
        let options = CString::new(format!("size={megabytes}m,mode=0755")).unwrap();
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount a {megabytes} MB tmpfs on {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        SmallFs {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes a file until the filesystem refuses (`ENOSPC`); the bytes it
    /// took. What is left is at most the slack in the last pages of files
    /// already open, which a writer uses up within a few writes.
    pub fn fill(&self) -> u64 {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(FILLER))
            .expect("the filler file");
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill {}: {e}", self.dir.display()),
            }
        }
        written
    }

    /// The space back, as an operator deleting what filled the disk.
    pub fn free(&self) {
        std::fs::remove_file(self.dir.join(FILLER)).expect("remove the filler");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let target = c_path(&self.dir);
        // SAFETY: a valid path. A node still holding files open (a test
        // that failed before its cluster stopped) makes the plain unmount
        // fail; detaching then removes the mount from the tree at once and
        // frees it when the last file closes.
        unsafe {
            if libc::umount2(target.as_ptr(), 0) != 0 {
                libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("a path without NUL")
}
