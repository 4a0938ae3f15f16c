//! Output files that appear complete or not at all, even when the process is killed mid-write.
//!
//! On Linux the data goes to an anonymous `O_TMPFILE` in the destination directory: it has no name
//! until it is finished, so `kill -9` leaves nothing behind. When done it is synced, linked in under
//! a temporary name (`linkat` through `/proc/self/fd`) and renamed over the destination. Where
//! `O_TMPFILE` is unsupported, a named temp file `.NAME.joulecut-tmp-PID` is used instead; temps of
//! processes that no longer exist are swept before each write to the same destination.
//!
//! A directory output (sharded checkpoint) is assembled the same way: its files stay anonymous
//! until every one is complete, then they are linked into `.DIR.joulecut-tmp-PID` and that
//! directory is renamed to `DIR`.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Marker between a destination's name and the writer's PID in temporary names.
const TMP_MARK: &str = ".joulecut-tmp-";

/// A file being written for one destination; see the module docs.
#[derive(Debug)]
pub struct TmpFile {
    file: File,
    /// `Some(path)` for the named fallback (removed on drop unless persisted).
    named: Option<PathBuf>,
}

/// The temporary name used while writing `path` (the named fallback, and the brief link before the
/// final rename).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{TMP_MARK}{}", std::process::id()))
}

/// The directory a destination lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the temporaries of every destination in `path`'s folder (`.NAME.joulecut-tmp-PID`,
/// files or directories) whose writer process no longer exists: what a write killed with
/// `kill -9` left behind, cleaned up by the next write of any file in that folder. Returns how
/// many were removed.
pub fn sweep_stale(path: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent_dir(path)) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let pid = n
            .strip_prefix('.')
            .and_then(|rest| rest.rsplit_once(TMP_MARK))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        let Some(pid) = pid else {
            continue;
        };
        if pid == std::process::id() || pid_alive(pid) {
            continue;
        }
        let p = e.path();
        let ok = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p).is_ok()
        } else {
            std::fs::remove_file(&p).is_ok()
        };
        removed += usize::from(ok);
    }
    removed
}

#[cfg(target_os = "linux")]
fn open_anonymous(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .mode(0o644)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

#[cfg(not(target_os = "linux"))]
fn open_anonymous(_dir: &Path) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Gives an anonymous (`O_TMPFILE`) file the name `to` (which must not exist).
#[cfg(target_os = "linux")]
fn link_anonymous(file: &File, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("no NUL in a /proc path");
    let to_c = std::ffi::CString::new(to.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn link_anonymous(_file: &File, _to: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

impl TmpFile {
    /// A file that will become `dest`: anonymous where the filesystem allows it, named otherwise.
    pub fn for_dest(dest: &Path) -> io::Result<TmpFile> {
        sweep_stale(dest);
        match open_anonymous(parent_dir(dest)) {
            Ok(file) => Ok(TmpFile { file, named: None }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
            Err(_) => Self::named_for(dest),
        }
    }

    /// A file that will become `dest_dir/name` once the directory `dest_dir` (which need not exist
    /// yet) is committed: it lives anonymously in `dest_dir`'s parent until then.
    pub fn for_dir_entry(dest_dir: &Path, name: &str) -> io::Result<TmpFile> {
        let parent = parent_dir(dest_dir);
        match open_anonymous(parent) {
            Ok(file) => Ok(TmpFile { file, named: None }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
            Err(_) => {
                let dir_name = dest_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Self::named_for(&parent.join(format!("{dir_name}-{name}")))
            }
        }
    }

    /// The named fallback (`.NAME.joulecut-tmp-PID` beside `dest`), after sweeping stale ones.
    pub fn named_for(dest: &Path) -> io::Result<TmpFile> {
        sweep_stale(dest);
        let path = temp_path(dest);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(TmpFile {
            file,
            named: Some(path),
        })
    }

    /// Whether this is an anonymous `O_TMPFILE` (no name on disk yet).
    pub fn is_anonymous(&self) -> bool {
        self.named.is_none()
    }

    /// The open file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Syncs the data and gives the file the name `to`, which must not exist yet.
    pub fn link_as(mut self, to: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        match self.named.take() {
            None => link_anonymous(&self.file, to),
            Some(p) => std::fs::rename(&p, to).inspect_err(|_| {
                let _ = std::fs::remove_file(&p);
            }),
        }
    }

    /// Syncs the data and atomically replaces `dest` with it.
    pub fn persist(mut self, dest: &Path) -> io::Result<()> {
        self.file.sync_all()?;
        let named = match self.named.take() {
            Some(p) => p,
            None => {
                sweep_stale(dest);
                let tmp = temp_path(dest);
                let _ = std::fs::remove_file(&tmp);
                link_anonymous(&self.file, &tmp)?;
                tmp
            }
        };
        std::fs::rename(&named, dest).inspect_err(|_| {
            let _ = std::fs::remove_file(&named);
        })?;
        sync_dir(parent_dir(dest));
        Ok(())
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if let Some(p) = self.named.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Best-effort fsync of a directory (makes a rename durable).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Fails unless `dest` is absent or an empty directory (a directory output never merges into, or
/// deletes, existing files).
pub fn check_dir_dest(dest: &Path) -> io::Result<()> {
    if dest.exists() {
        let empty_dir = dest.is_dir() && std::fs::read_dir(dest)?.next().is_none();
        if !empty_dir {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the output directory exists and is not empty",
            ));
        }
    }
    Ok(())
}

/// Publishes a directory of files at `dest` all at once: files are placed in a temporary sibling
/// directory, which is renamed to `dest` when complete. `dest` must not exist or be empty. Create
/// it only when the files' data is complete (see [`TmpFile::for_dir_entry`]), so a kill during the
/// long part leaves nothing.
#[derive(Debug)]
pub struct DirCommit {
    dest: PathBuf,
    tmp: PathBuf,
    done: bool,
}

impl DirCommit {
    /// Creates the temporary directory for `dest` (after sweeping stale ones).
    pub fn new(dest: &Path) -> io::Result<DirCommit> {
        check_dir_dest(dest)?;
        sweep_stale(dest);
        let tmp = temp_path(dest);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir(&tmp)?;
        Ok(DirCommit {
            dest: dest.to_path_buf(),
            tmp,
            done: false,
        })
    }

    /// Where a file named `name` goes before the commit.
    pub fn path_of(&self, name: impl Into<OsString>) -> PathBuf {
        self.tmp.join(name.into())
    }

    /// Renames the directory into place.
    pub fn commit(mut self) -> io::Result<()> {
        sync_dir(&self.tmp);
        std::fs::rename(&self.tmp, &self.dest)?;
        sync_dir(parent_dir(&self.dest));
        self.done = true;
        Ok(())
    }
}

impl Drop for DirCommit {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn anonymous_file_has_no_name_until_persisted() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.bin");
        let mut t = TmpFile::for_dest(&dest).unwrap();
        t.file().write_all(b"hello").unwrap();
        if t.is_anonymous() {
            assert!(entries(d.path()).is_empty());
        }
        std::fs::write(&dest, b"old").unwrap();
        t.persist(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(entries(d.path()), vec!["out.bin"]);
    }

    #[test]
    fn dropped_writes_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("x.safetensors");
        for t in [
            TmpFile::for_dest(&dest).unwrap(),
            TmpFile::named_for(&dest).unwrap(),
        ] {
            drop(t);
        }
        assert!(entries(d.path()).is_empty());
    }

    #[test]
    fn named_fallback_persists_and_sweeps_dead_writers() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("m.safetensors");
        // A temp of a process that is gone (PIDs above pid_max never exist), and one of ours.
        let dead = d.path().join(format!(".m.safetensors{TMP_MARK}4294967294"));
        std::fs::write(&dead, b"partial").unwrap();
        let dead_dir = d.path().join(format!(".m.safetensors{TMP_MARK}4294967293"));
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("a"), b"x").unwrap();
        // a killed write of another file in the folder is swept too (issue 22: cleaned up by the
        // next write in that folder); a live writer's temp is left alone
        let other = d.path().join(format!(".other{TMP_MARK}4294967294"));
        std::fs::write(&other, b"dead writer").unwrap();
        let live = d
            .path()
            .join(format!(".live{TMP_MARK}{}", std::process::id()));
        std::fs::write(&live, b"live writer").unwrap();
        let mut t = TmpFile::named_for(&dest).unwrap();
        assert!(!t.is_anonymous());
        assert!(!dead.exists() && !dead_dir.exists(), "stale temps swept");
        assert!(!other.exists(), "another destination's stale temp is swept");
        assert!(live.exists(), "a live writer's temp is left alone");
        std::fs::remove_file(&live).unwrap();
        t.file().write_all(b"data").unwrap();
        t.persist(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"data");
        assert_eq!(entries(d.path()), vec!["m.safetensors".to_string()]);
    }

    #[test]
    fn directory_commit_is_all_or_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("model");
        {
            let c = DirCommit::new(&dest).unwrap();
            std::fs::write(c.path_of("a.json"), b"{}").unwrap();
            // dropped without commit
        }
        assert!(entries(d.path()).is_empty());
        let mut f = TmpFile::for_dir_entry(&dest, "s.safetensors").unwrap();
        f.file().write_all(b"abc").unwrap();
        if f.is_anonymous() {
            assert!(entries(d.path()).is_empty());
        }
        let c = DirCommit::new(&dest).unwrap();
        f.link_as(&c.path_of("s.safetensors")).unwrap();
        c.commit().unwrap();
        assert_eq!(entries(&dest), vec!["s.safetensors"]);
        // A non-empty destination is refused.
        let e = DirCommit::new(&dest).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    }
}
