//! Runs an [`OpDesc`] as plain Win32 calls, on the blocking pool: the IOCP backend's
//! translation of the descriptions Windows has no overlapped form for (opens, path calls,
//! `FlushFileBuffers`, stat, vectored file IO), as `iocp.rs` is the translation of the rest.
//!
//! It returns what a completion carries: the result, or `-code` with a Win32 error code (see
//! `platform::windows`). Paths arrive as the bytes `OsStr::as_encoded_bytes` gave (WTF-8 on
//! Windows) and go to the `…W` calls as UTF-16; open flags and file types arrive with their
//! Unix meanings (`platform::c`) and are translated here, in one place.

use std::ffi::{CStr, OsStr};
use std::os::windows::ffi::OsStrExt;

use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_BROKEN_PIPE, ERROR_CALL_NOT_IMPLEMENTED, ERROR_HANDLE_EOF,
    ERROR_IO_PENDING, FILETIME, GENERIC_READ, GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateDirectoryW, CreateFileW, DeleteFileW, FileAllocationInfo, FileEndOfFileInfo,
    FlushFileBuffers, GetFileInformationByHandle, MoveFileExW, ReadFile, RemoveDirectoryW,
    SetFileInformationByHandle, WriteFile, BY_HANDLE_FILE_INFORMATION, CREATE_ALWAYS, CREATE_NEW,
    FILE_ALLOCATION_INFO, FILE_APPEND_DATA, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_NORMAL,
    FILE_ATTRIBUTE_READONLY, FILE_ATTRIBUTE_REPARSE_POINT, FILE_END_OF_FILE_INFO,
    FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_NO_BUFFERING, FILE_FLAG_OPEN_REPARSE_POINT,
    FILE_FLAG_OVERLAPPED, FILE_GENERIC_WRITE, FILE_READ_ATTRIBUTES, FILE_SHARE_DELETE,
    FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_WRITE_DATA, MOVEFILE_REPLACE_EXISTING, OPEN_ALWAYS,
    OPEN_EXISTING, TRUNCATE_EXISTING,
};
use windows_sys::Win32::System::Threading::CreateEventW;
use windows_sys::Win32::System::IO::{GetOverlappedResult, OVERLAPPED};

use super::offload::JobCancel;
use super::OpDesc;
use crate::platform::windows::{handle, raw_from};
use crate::platform::{self, c, FileStat, Timestamp};

/// The last Win32 error as a completion result.
fn last_error() -> i32 {
    // SAFETY: no arguments.
    -(unsafe { GetLastError() } as i32)
}

/// A NUL-terminated UTF-16 path from a description's path bytes.
///
/// # Safety
///
/// `path` points to a NUL-terminated string of bytes that `OsStr::as_encoded_bytes` gave.
unsafe fn wide(path: *const c::c_char) -> Vec<u16> {
    // SAFETY: a NUL-terminated string per the caller.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    // SAFETY: the bytes are an OsStr's encoded bytes (the op layer built the string from
    // one, adding only the terminating NUL).
    let os = unsafe { OsStr::from_encoded_bytes_unchecked(bytes) };
    os.encode_wide().chain(Some(0)).collect()
}

/// Only paths relative to the current directory (or absolute) exist on Windows here.
fn check_dir(dirfd: i32) -> Result<(), i32> {
    if dirfd == c::AT_FDCWD {
        Ok(())
    } else {
        Err(-c::EINVAL)
    }
}

/// A positional read or write of one buffer on the pool thread, waiting for it: an
/// OVERLAPPED with its own event (whose low bit keeps the completion port out of it: the
/// handle may be associated with a runtime's port, which must not see this packet).
///
/// # Safety
///
/// `buf` is valid for `len` bytes of the access.
unsafe fn rw_at(fd: i32, buf: *mut u8, len: u32, offset: u64, write: bool) -> i32 {
    // SAFETY: creates an unnamed manual-reset event; no pointers but null ones.
    let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    if event.is_null() {
        return last_error();
    }
    // SAFETY: OVERLAPPED is plain integers and pointers; all-zeroes is its initial state.
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.Anonymous.Anonymous.Offset = offset as u32;
    ov.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
    ov.hEvent = (event as usize | 1) as HANDLE;
    let mut n = 0u32;
    // SAFETY: buf is valid per the caller; ov lives until the result is collected below.
    let ok = unsafe {
        if write {
            WriteFile(handle(fd), buf, len, &mut n, &mut ov)
        } else {
            ReadFile(handle(fd), buf, len, &mut n, &mut ov)
        }
    };
    // SAFETY: no arguments.
    let res = if ok != 0 || unsafe { GetLastError() } == ERROR_IO_PENDING {
        // SAFETY: ov is the OVERLAPPED of the call above; wait for it.
        if unsafe { GetOverlappedResult(handle(fd), &ov, &mut n, 1) } != 0 {
            n as i32
        } else {
            last_error()
        }
    } else {
        last_error()
    };
    // SAFETY: the event is ours; the IO has finished with it.
    unsafe { CloseHandle(event) };
    // End of file (or of a pipe's writer) reads as 0 bytes, as on Unix.
    if !write && (res == -(ERROR_HANDLE_EOF as i32) || res == -(ERROR_BROKEN_PIPE as i32)) {
        return 0;
    }
    res
}

/// Vectored positional IO as consecutive calls, stopping at the first short one.
///
/// # Safety
///
/// `iov` points to `iovcnt` buffers valid for the access.
unsafe fn rw_vectored(fd: i32, iov: *const c::iovec, iovcnt: u32, offset: u64, write: bool) -> i32 {
    // SAFETY: per the caller.
    let iov = unsafe { std::slice::from_raw_parts(iov, iovcnt as usize) };
    let mut done: u64 = 0;
    for v in iov {
        let len = u32::try_from(v.iov_len).unwrap_or(u32::MAX);
        // SAFETY: each buffer is valid per the caller.
        let n = unsafe { rw_at(fd, v.iov_base.cast(), len, offset + done, write) };
        if n < 0 {
            return if done > 0 { done as i32 } else { n };
        }
        done += n as u64;
        if (n as u32) < len || done > i32::MAX as u64 {
            break;
        }
    }
    done.min(i32::MAX as u64) as i32
}

/// `open(2)` flags as `CreateFileW` arguments. Directories open too (backup semantics), as
/// `open(2)` opens them for reading. `O_DIRECT` is `FILE_FLAG_NO_BUFFERING`.
fn open(path: &[u16], flags: i32, mode: u32) -> i32 {
    let access = match flags & c::O_ACCMODE {
        c::O_RDONLY => GENERIC_READ,
        c::O_WRONLY => GENERIC_WRITE,
        _ => GENERIC_READ | GENERIC_WRITE,
    };
    // Appending: write access without the right to write at a position, as std does.
    let access = if flags & c::O_APPEND != 0 {
        (access & !GENERIC_WRITE) | (FILE_GENERIC_WRITE & !FILE_WRITE_DATA) | FILE_APPEND_DATA
    } else {
        access
    };
    let creation = match (
        flags & c::O_CREAT != 0,
        flags & c::O_EXCL != 0,
        flags & c::O_TRUNC != 0,
    ) {
        (true, true, _) => CREATE_NEW,
        (true, false, true) => CREATE_ALWAYS,
        (true, false, false) => OPEN_ALWAYS,
        (false, _, true) => TRUNCATE_EXISTING,
        (false, _, false) => OPEN_EXISTING,
    };
    let attributes = if mode & 0o222 == 0 {
        FILE_ATTRIBUTE_READONLY
    } else {
        FILE_ATTRIBUTE_NORMAL
    };
    // Direct IO bypasses the cache; write-through (FILE_FLAG_WRITE_THROUGH) is not implied,
    // as O_DIRECT does not imply O_SYNC.
    let direct = if flags & c::O_DIRECT != 0 {
        FILE_FLAG_NO_BUFFERING
    } else {
        0
    };
    // SAFETY: path is NUL-terminated UTF-16; no security attributes or template.
    let h = unsafe {
        CreateFileW(
            path.as_ptr(),
            access,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            std::ptr::null(),
            creation,
            attributes | direct | FILE_FLAG_OVERLAPPED | FILE_FLAG_BACKUP_SEMANTICS,
            std::ptr::null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return last_error();
    }
    match raw_from(h as isize) {
        Ok(fd) => fd,
        Err(_) => {
            // SAFETY: the handle is ours and named nowhere else.
            unsafe { CloseHandle(h) };
            -c::EIO
        }
    }
}

/// Seconds and nanoseconds since the Unix epoch of a FILETIME (100 ns since 1601).
fn timestamp(t: FILETIME) -> Option<Timestamp> {
    let ticks = (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    if ticks == 0 {
        return None;
    }
    const EPOCH_DIFF: i64 = 11_644_473_600; // seconds from 1601 to 1970
    let secs = (ticks / 10_000_000) as i64 - EPOCH_DIFF;
    Some(Timestamp {
        sec: secs,
        nsec: ((ticks % 10_000_000) * 100) as u32,
    })
}

/// What a handle's information says, in the portable form.
fn file_stat(h: HANDLE, out: &mut FileStat) -> i32 {
    // SAFETY: plain integers; all-zeroes is valid.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: info is a live local of the right type.
    if unsafe { GetFileInformationByHandle(h, &mut info) } == 0 {
        return last_error();
    }
    let attrs = info.dwFileAttributes;
    let kind = if attrs & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        c::S_IFLNK
    } else if attrs & FILE_ATTRIBUTE_DIRECTORY != 0 {
        c::S_IFDIR
    } else {
        c::S_IFREG
    };
    let write = if attrs & FILE_ATTRIBUTE_READONLY != 0 {
        0
    } else {
        0o222
    };
    let size = (u64::from(info.nFileSizeHigh) << 32) | u64::from(info.nFileSizeLow);
    *out = FileStat {
        size,
        kind,
        perm: 0o444 | write | if kind == c::S_IFDIR { 0o111 } else { 0 },
        ino: (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
        nlink: u64::from(info.nNumberOfLinks),
        uid: 0,
        gid: 0,
        blksize: 4096,
        blocks: size.div_ceil(512),
        modified: timestamp(info.ftLastWriteTime),
        accessed: timestamp(info.ftLastAccessTime),
        created: timestamp(info.ftCreationTime),
    };
    0
}

/// Stat of a path: opened for its attributes only (a final symlink itself with
/// `AT_SYMLINK_NOFOLLOW`).
fn stat_path(path: &[u16], flags: i32, out: &mut FileStat) -> i32 {
    let mut open_flags = FILE_FLAG_BACKUP_SEMANTICS;
    if flags & c::AT_SYMLINK_NOFOLLOW != 0 {
        open_flags |= FILE_FLAG_OPEN_REPARSE_POINT;
    }
    // SAFETY: path is NUL-terminated UTF-16; no security attributes or template.
    let h = unsafe {
        CreateFileW(
            path.as_ptr(),
            FILE_READ_ATTRIBUTES,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            std::ptr::null(),
            OPEN_EXISTING,
            open_flags,
            std::ptr::null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return last_error();
    }
    let r = file_stat(h, out);
    // SAFETY: the handle is ours.
    unsafe { CloseHandle(h) };
    r
}

/// `posix_fallocate`: space for `offset..offset + len`, growing the file to cover it.
fn fallocate(fd: i32, mode: i32, offset: u64, len: u64) -> i32 {
    if mode != 0 {
        return -c::EOPNOTSUPP;
    }
    // An empty range is invalid, as for posix_fallocate(2).
    let Some(end) = offset
        .checked_add(len)
        .filter(|&e| len > 0 && e <= i64::MAX as u64)
    else {
        return -c::EINVAL;
    };
    let mut st = platform::empty_stat();
    let r = file_stat(handle(fd), &mut st);
    if r < 0 {
        return r;
    }
    if end > st.size {
        let alloc = FILE_ALLOCATION_INFO {
            AllocationSize: end as i64,
        };
        // SAFETY: passes a live struct of the class it names, and its size.
        let reserved = unsafe {
            SetFileInformationByHandle(
                handle(fd),
                FileAllocationInfo,
                (&alloc as *const FILE_ALLOCATION_INFO).cast(),
                std::mem::size_of::<FILE_ALLOCATION_INFO>() as u32,
            )
        } != 0;
        // Wine does not implement the allocation class (ERROR_CALL_NOT_IMPLEMENTED): the
        // size set below still extends the file, as posix_fallocate's contract asks.
        let e = last_error();
        if !reserved && e != -(ERROR_CALL_NOT_IMPLEMENTED as i32) {
            return e;
        }
    }
    // Grown to `end`, or set to the size it has: that still needs write access, so a file
    // open only for reading is refused, as fallocate(2) refuses it.
    let eof = FILE_END_OF_FILE_INFO {
        EndOfFile: end.max(st.size) as i64,
    };
    // SAFETY: as above.
    if unsafe {
        SetFileInformationByHandle(
            handle(fd),
            FileEndOfFileInfo,
            (&eof as *const FILE_END_OF_FILE_INFO).cast(),
            std::mem::size_of::<FILE_END_OF_FILE_INFO>() as u32,
        )
    } == 0
    {
        return last_error();
    }
    0
}

/// Runs `desc` to its end on a pool thread; returns its result or `-code`.
///
/// Nothing here waits for a descriptor to become ready (no pipes or sockets come here:
/// the IOCP backend runs those overlapped), so `cancel` has nothing to interrupt: each
/// call runs to its end, as a regular file's read does on Unix.
///
/// # Safety
///
/// Every pointer in `desc` must be valid for the access the call makes, for the whole
/// call (the driver keeps the owning op alive until the completion is reaped).
pub(crate) unsafe fn execute_blocking(desc: &OpDesc, _cancel: &JobCancel) -> i32 {
    match *desc {
        OpDesc::Nop => 0,
        OpDesc::Read {
            fd,
            buf,
            len,
            offset,
            ..
        } => {
            // SAFETY: the buffers are valid for the call (the caller's contract).
            unsafe { rw_at(fd.raw, buf, len, offset, false) }
        }
        OpDesc::Write {
            fd,
            buf,
            len,
            offset,
            ..
        } => {
            // SAFETY: the buffers are valid for the call (the caller's contract).
            unsafe { rw_at(fd.raw, buf.cast_mut(), len, offset, true) }
        }
        OpDesc::Readv {
            fd,
            iov,
            iovcnt,
            offset,
        } => {
            // SAFETY: the buffers are valid for the call (the caller's contract).
            unsafe { rw_vectored(fd.raw, iov, iovcnt, offset, false) }
        }
        OpDesc::Writev {
            fd,
            iov,
            iovcnt,
            offset,
        } => {
            // SAFETY: the buffers are valid for the call (the caller's contract).
            unsafe { rw_vectored(fd.raw, iov, iovcnt, offset, true) }
        }
        // Windows has no data-only flush: both are FlushFileBuffers.
        OpDesc::Fsync { fd, .. } => {
            // SAFETY: no pointers.
            if unsafe { FlushFileBuffers(handle(fd.raw)) } == 0 {
                last_error()
            } else {
                0
            }
        }
        OpDesc::Fallocate {
            fd,
            mode,
            offset,
            len,
        } => fallocate(fd.raw, mode, offset, len),
        OpDesc::OpenAt {
            dirfd,
            path,
            flags,
            mode,
        } => match check_dir(dirfd) {
            // SAFETY: the description's path is a NUL-terminated string of OsStr bytes.
            Ok(()) => open(&unsafe { wide(path) }, flags, mode),
            Err(e) => e,
        },
        OpDesc::Close { fd } => platform::close(fd),
        OpDesc::Statx {
            dirfd,
            path,
            flags,
            buf,
            ..
        } => {
            // SAFETY: buf points to the op's stat buffer, valid and unaliased meanwhile.
            let out = unsafe { &mut *buf };
            if flags & platform::STAT_EMPTY_PATH != 0 {
                file_stat(handle(dirfd), out)
            } else {
                match check_dir(dirfd) {
                    // SAFETY: as for the open.
                    Ok(()) => stat_path(&unsafe { wide(path) }, flags, out),
                    Err(e) => e,
                }
            }
        }
        OpDesc::UnlinkAt { dirfd, path, flags } => {
            if let Err(e) = check_dir(dirfd) {
                return e;
            }
            // SAFETY: as for the open.
            let path = unsafe { wide(path) };
            // SAFETY: path is NUL-terminated UTF-16.
            let ok = unsafe {
                if flags & c::AT_REMOVEDIR != 0 {
                    RemoveDirectoryW(path.as_ptr())
                } else {
                    DeleteFileW(path.as_ptr())
                }
            };
            if ok == 0 {
                last_error()
            } else {
                0
            }
        }
        OpDesc::RenameAt {
            olddirfd,
            oldpath,
            newdirfd,
            newpath,
            flags,
        } => {
            if let Err(e) = check_dir(olddirfd).and(check_dir(newdirfd)) {
                return e;
            }
            if flags != 0 {
                return -c::EINVAL;
            }
            // SAFETY: as for the open.
            let (from, to) = unsafe { (wide(oldpath), wide(newpath)) };
            // rename(2) replaces an existing target.
            // SAFETY: both paths are NUL-terminated UTF-16.
            if unsafe { MoveFileExW(from.as_ptr(), to.as_ptr(), MOVEFILE_REPLACE_EXISTING) } == 0 {
                last_error()
            } else {
                0
            }
        }
        OpDesc::MkdirAt { dirfd, path, .. } => {
            if let Err(e) = check_dir(dirfd) {
                return e;
            }
            // SAFETY: as for the open.
            let path = unsafe { wide(path) };
            // SAFETY: path is NUL-terminated UTF-16; default security.
            if unsafe { CreateDirectoryW(path.as_ptr(), std::ptr::null()) } == 0 {
                last_error()
            } else {
                0
            }
        }
        // Sockets run overlapped on the completion port and never come here.
        OpDesc::Accept { .. }
        | OpDesc::Connect { .. }
        | OpDesc::Recv { .. }
        | OpDesc::RecvMulti { .. }
        | OpDesc::Send { .. }
        | OpDesc::RecvMsg { .. }
        | OpDesc::SendMsg { .. }
        | OpDesc::Shutdown { .. } => {
            debug_assert!(
                false,
                "coring: a socket operation reached the blocking pool"
            );
            -c::EOPNOTSUPP
        }
    }
}
