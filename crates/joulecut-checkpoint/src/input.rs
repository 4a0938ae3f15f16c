//! Inputs are regular files (or symlinks to them): a FIFO, socket or device given as a checkpoint
//! would block `open` forever or stream without end, so its kind is checked first, from metadata
//! that never blocks.

use std::path::Path;

/// What `path` is when it is not a regular file (`None` for a regular file or one that does not
/// exist: opening it then reports the real error).
pub fn not_regular(path: &Path) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::metadata(path).ok()?.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() || t.is_block_device() {
        Some("a device")
    } else {
        Some("not a regular file")
    }
}

/// `std::fs::read` for an input: refuses (`InvalidInput`, naming the kind) anything but a regular
/// file before opening it.
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    match not_regular(path) {
        Some(kind) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file"),
        )),
        None => read_whole(path),
    }
}

/// The file's bytes, its buffer reserved fallibly: a file larger than the memory left is an
/// `OutOfMemory` error naming the size, not an abort.
fn read_whole(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut buf = Vec::new();
    reserve(&mut buf, usize::try_from(len).unwrap_or(usize::MAX))?;
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// `buf.try_reserve_exact(n)`, as an I/O error that says how much memory was asked for.
pub fn reserve<T>(buf: &mut Vec<T>, n: usize) -> std::io::Result<()> {
    buf.try_reserve_exact(n).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!(
                "cannot allocate {} bytes of memory for it",
                n.saturating_mul(std::mem::size_of::<T>())
            ),
        )
    })
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

const SIGBUS_MESSAGE: &[u8] = b"error: an input file was truncated or replaced while joulecut read it (a bus error on its memory map); nothing was written\nhint: do not change input files during a run; run again once the file is complete\n";

extern "C" fn on_sigbus(_: libc::c_int) {
    // Only async-signal-safe calls: one write, then _exit (no destructors, no allocation).
    // SAFETY: `write` and `_exit` are async-signal-safe; the buffer is a static.
    unsafe {
        libc::write(2, SIGBUS_MESSAGE.as_ptr().cast(), SIGBUS_MESSAGE.len());
        libc::_exit(2);
    }
}

/// Turns the SIGBUS of reading a memory-mapped input that another process truncated into a clear
/// message and exit code 2, instead of the process dying by a signal. Outputs are written to
/// temporaries and renamed into place only when complete, so ending here leaves none behind.
/// Call once, early in `main`.
pub fn guard_truncated_inputs() {
    // SAFETY: installs a handler that only calls async-signal-safe functions; the sigaction
    // struct is zero-initialised and fully set before use.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        assert_eq!(not_regular(&fifo), Some("a FIFO (named pipe)"));
        assert_eq!(not_regular(dir.path()), Some("a directory"));
        assert_eq!(not_regular(Path::new("/dev/zero")), Some("a device"));
        let f = dir.path().join("x");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(not_regular(&f), None);
        assert_eq!(not_regular(&dir.path().join("missing")), None);
    }

    #[test]
    fn an_impossible_allocation_is_an_error_not_an_abort() {
        let mut v: Vec<u64> = Vec::new();
        let e = reserve(&mut v, usize::MAX / 4).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory);
        assert!(e.to_string().contains("cannot allocate"), "{e}");
        reserve(&mut v, 16).unwrap();
        assert!(v.capacity() >= 16);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"bytes").unwrap();
        assert_eq!(read(&f).unwrap(), b"bytes");
    }
}
