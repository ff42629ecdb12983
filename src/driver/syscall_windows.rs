//! Runs an [`OpDesc`] as plain Win32 calls, on the blocking pool: the IOCP backend's
//! translation of the descriptions Windows has no overlapped form for (opens, path calls,
//! `FlushFileBuffers`, stat, vectored file IO, fallocate's modes, links, directories), as
//! `iocp.rs` is the translation of the rest.
//!
//! It returns what a completion carries: the result, or `-code` with a Win32 error code (see
//! `platform::windows`). Paths arrive as the bytes `OsStr::as_encoded_bytes` gave (WTF-8 on
//! Windows) and go to the `…W` calls as UTF-16; open flags and file types arrive with their
//! Unix meanings (`platform::c`) and are translated here, in one place.

use std::ffi::{CStr, OsStr};
use std::os::windows::ffi::OsStrExt;

use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::{
    NtCreateFile, FILE_CREATE, FILE_DIRECTORY_FILE, FILE_OPEN, FILE_OPEN_FOR_BACKUP_INTENT,
    FILE_OPEN_IF, FILE_OPEN_REPARSE_POINT,
};
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, RtlNtStatusToDosError, ERROR_BROKEN_PIPE,
    ERROR_CALL_NOT_IMPLEMENTED, ERROR_HANDLE_EOF, ERROR_INVALID_FUNCTION, ERROR_INVALID_PARAMETER,
    ERROR_IO_PENDING, ERROR_NOT_SUPPORTED, FILETIME, GENERIC_READ, GENERIC_WRITE, HANDLE,
    INVALID_HANDLE_VALUE, UNICODE_STRING,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateDirectoryW, CreateFileW, CreateHardLinkW, CreateSymbolicLinkW, DeleteFileW,
    FileAllocationInfo, FileEndOfFileInfo, FileStandardInfo, FlushFileBuffers, GetFileAttributesW,
    GetFileInformationByHandle, GetFileInformationByHandleEx, MoveFileExW, ReadFile,
    RemoveDirectoryW, SetFileInformationByHandle, WriteFile, BY_HANDLE_FILE_INFORMATION,
    CREATE_ALWAYS, CREATE_NEW, FILE_ALLOCATION_INFO, FILE_APPEND_DATA, FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_READONLY, FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_END_OF_FILE_INFO, FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_NO_BUFFERING,
    FILE_FLAG_OPEN_REPARSE_POINT, FILE_FLAG_OVERLAPPED, FILE_GENERIC_WRITE, FILE_READ_ATTRIBUTES,
    FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_STANDARD_INFO, FILE_WRITE_DATA,
    INVALID_FILE_ATTRIBUTES, MOVEFILE_REPLACE_EXISTING, OPEN_ALWAYS, OPEN_EXISTING,
    SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE, SYMBOLIC_LINK_FLAG_DIRECTORY, SYNCHRONIZE,
    TRUNCATE_EXISTING,
};
use windows_sys::Win32::System::Ioctl::{
    FILE_ZERO_DATA_INFORMATION, FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA,
};
use windows_sys::Win32::System::Threading::CreateEventW;
use windows_sys::Win32::System::IO::{
    DeviceIoControl, GetOverlappedResult, IO_STATUS_BLOCK, OVERLAPPED,
};

use super::offload::JobCancel;
use super::OpDesc;
use crate::platform::fsabi::{
    FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, RENAME_NOREPLACE,
};
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

/// A description's path as a `Path`.
///
/// # Safety
///
/// As [`wide`]; the path lives as long as the description's memory.
unsafe fn os_path<'a>(path: *const c::c_char) -> &'a std::path::Path {
    // SAFETY: a NUL-terminated string per the caller.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    // SAFETY: the bytes are an OsStr's encoded bytes (see `wide`).
    std::path::Path::new(unsafe { OsStr::from_encoded_bytes_unchecked(bytes) })
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

/// The access rights, creation disposition (`CreateFileW`'s) and attributes of an
/// `open(2)` with `flags` and `mode`.
fn open_args(flags: i32, mode: u32) -> (u32, u32, u32) {
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
    (access, creation, attributes | direct)
}

/// `open(2)` flags as `CreateFileW` arguments. Directories open too (backup semantics), as
/// `open(2)` opens them for reading. `O_DIRECT` is `FILE_FLAG_NO_BUFFERING`. `O_NOFOLLOW`
/// opens a final reparse point itself and refuses it ([`checked_open`]).
fn open(path: &[u16], flags: i32, mode: u32) -> i32 {
    let (access, creation, attributes) = open_args(flags, mode);
    let nofollow = if flags & c::O_NOFOLLOW != 0 {
        FILE_FLAG_OPEN_REPARSE_POINT
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
            attributes | FILE_FLAG_OVERLAPPED | FILE_FLAG_BACKUP_SEMANTICS | nofollow,
            std::ptr::null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return last_error();
    }
    checked_open(h, flags, false)
}

/// `openat(dir, name, flags, mode)`: a relative `NtCreateFile` from the directory handle
/// `dir`, so the path is resolved from that directory, wherever it is now. `O_NOFOLLOW`
/// and `O_DIRECTORY` as in [`checked_open`]. `O_TRUNC` truncates only after those checks
/// (an open that is refused changes nothing).
fn open_at(dir: HANDLE, path: &[u16], flags: i32, mode: u32) -> i32 {
    let (access, creation, attributes) = open_args(flags, mode);
    let disposition = match creation {
        CREATE_NEW => FILE_CREATE,
        CREATE_ALWAYS | OPEN_ALWAYS => FILE_OPEN_IF,
        _ => FILE_OPEN,
    };
    let mut options = FILE_OPEN_FOR_BACKUP_INTENT;
    if flags & c::O_NOFOLLOW != 0 {
        options |= FILE_OPEN_REPARSE_POINT;
    }
    if flags & c::O_DIRECTORY != 0 {
        options |= FILE_DIRECTORY_FILE;
    }
    // Without the terminating NUL; a name longer than a UNICODE_STRING holds is invalid.
    // NT names have no ".": the directory itself is the empty name relative to it.
    let name = match &path[..path.len().saturating_sub(1)] {
        [dot] if *dot == u16::from(b'.') => &[],
        name => name,
    };
    let Ok(bytes) = u16::try_from(name.len() * 2) else {
        return -(ERROR_INVALID_PARAMETER as i32);
    };
    let name = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: name.as_ptr().cast_mut(),
    };
    /// `OBJ_CASE_INSENSITIVE`: names compare as `CreateFileW` compares them.
    const OBJ_CASE_INSENSITIVE: u32 = 0x40;
    let attrs = OBJECT_ATTRIBUTES {
        Length: std::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: dir,
        ObjectName: &name,
        Attributes: OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: std::ptr::null(),
        SecurityQualityOfService: std::ptr::null(),
    };
    let mut h: HANDLE = std::ptr::null_mut();
    // SAFETY: plain integers and pointers; all-zeroes is valid.
    let mut iosb: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    // SAFETY: every pointer is to a live local (the name to the caller's buffer) for the
    // whole call; no allocation size or extended attributes. Without a
    // FILE_SYNCHRONOUS_IO_* option the handle is for overlapped IO, as CreateFileW's with
    // FILE_FLAG_OVERLAPPED.
    let status = unsafe {
        NtCreateFile(
            &mut h,
            access | SYNCHRONIZE | FILE_READ_ATTRIBUTES,
            &attrs,
            &mut iosb,
            std::ptr::null(),
            attributes,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            disposition,
            options,
            std::ptr::null(),
            0,
        )
    };
    if status < 0 {
        // SAFETY: no pointers.
        return -(unsafe { RtlNtStatusToDosError(status) } as i32);
    }
    checked_open(h, flags, flags & c::O_TRUNC != 0)
}

/// Finishes an open: refuses a reparse point for `O_NOFOLLOW` (ELOOP) and anything but a
/// directory for `O_DIRECTORY` (ENOTDIR), truncates if `truncate`, and names the handle by
/// its `RawFd`; closes the handle on any failure.
fn checked_open(h: HANDLE, flags: i32, truncate: bool) -> i32 {
    let refused = if flags & (c::O_NOFOLLOW | c::O_DIRECTORY) != 0 {
        let mut st = platform::empty_stat();
        let r = file_stat(h, &mut st);
        if r < 0 {
            r
        } else if flags & c::O_NOFOLLOW != 0 && st.kind == c::S_IFLNK {
            -c::ELOOP
        } else if flags & c::O_DIRECTORY != 0 && st.kind != c::S_IFDIR {
            -c::ENOTDIR
        } else {
            0
        }
    } else {
        0
    };
    let refused = if refused == 0 && truncate {
        set_end_of_file(h, 0)
    } else {
        refused
    };
    if refused < 0 {
        // SAFETY: the handle is ours and named nowhere else.
        unsafe { CloseHandle(h) };
        return refused;
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

/// Sets the file's size (`FileEndOfFileInfo`).
fn set_end_of_file(h: HANDLE, len: u64) -> i32 {
    let eof = FILE_END_OF_FILE_INFO {
        EndOfFile: len as i64,
    };
    // SAFETY: passes a live struct of the class it names, and its size.
    if unsafe {
        SetFileInformationByHandle(
            h,
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

/// `fallocate(fd, mode, offset, len)` with Linux's modes, on Windows' calls: mode 0 is
/// [`extend`], `KEEP_SIZE` [`reserve`], `PUNCH_HOLE | KEEP_SIZE` marks the file sparse and
/// zeroes the range ([`zero_data`], which frees a sparse file's clusters), `ZERO_RANGE`
/// zeroes the range (allocated: the file is not made sparse) and, without `KEEP_SIZE`,
/// extends the file to its end. An empty range, or one past `i64::MAX`, is EINVAL.
fn fallocate(fd: i32, mode: i32, offset: u64, len: u64) -> i32 {
    let Some(end) = offset
        .checked_add(len)
        .filter(|&e| len > 0 && e <= i64::MAX as u64)
    else {
        return -c::EINVAL;
    };
    let h = handle(fd);
    const PUNCH: i32 = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    const ZERO_KEEP: i32 = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    match mode {
        0 => extend(h, end),
        FALLOC_FL_KEEP_SIZE => reserve(h, end),
        PUNCH => {
            // SAFETY: FSCTL_SET_SPARSE without input sets the sparse flag.
            let r = unsafe { ioctl(h, FSCTL_SET_SPARSE, std::ptr::null(), 0) };
            if r < 0 {
                return unsupported(r);
            }
            unsupported(zero_data(h, offset, end))
        }
        FALLOC_FL_ZERO_RANGE | ZERO_KEEP => {
            let r = unsupported(zero_data(h, offset, end));
            if r < 0 || mode == ZERO_KEEP {
                return r;
            }
            extend(h, end)
        }
        _ => unsupported(-c::EOPNOTSUPP),
    }
}

/// A result whose error says "this file system (or Wine) cannot" as
/// `ERROR_CALL_NOT_IMPLEMENTED`, the code std reports as `ErrorKind::Unsupported`
/// (`ERROR_NOT_SUPPORTED` and `ERROR_INVALID_FUNCTION`, which file systems without sparse
/// files answer, are uncategorised).
fn unsupported(res: i32) -> i32 {
    const CANNOT: [u32; 3] = [
        ERROR_NOT_SUPPORTED,
        ERROR_INVALID_FUNCTION,
        ERROR_CALL_NOT_IMPLEMENTED,
    ];
    if CANNOT.iter().any(|&code| res == -(code as i32)) {
        -(ERROR_CALL_NOT_IMPLEMENTED as i32)
    } else {
        res
    }
}

/// `posix_fallocate`: space for `..end`, growing the file to cover it.
fn extend(h: HANDLE, end: u64) -> i32 {
    let mut st = platform::empty_stat();
    let r = file_stat(h, &mut st);
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
                h,
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
    set_end_of_file(h, end.max(st.size))
}

/// `FALLOC_FL_KEEP_SIZE`: the file's allocation raised to `end` if it is below, its size
/// unchanged. `Unsupported` where the allocation class is not implemented (Wine).
fn reserve(h: HANDLE, end: u64) -> i32 {
    // SAFETY: plain integers; all-zeroes is valid.
    let mut info: FILE_STANDARD_INFO = unsafe { std::mem::zeroed() };
    // SAFETY: passes a live struct of the class it names, and its size.
    if unsafe {
        GetFileInformationByHandleEx(
            h,
            FileStandardInfo,
            (&mut info as *mut FILE_STANDARD_INFO).cast(),
            std::mem::size_of::<FILE_STANDARD_INFO>() as u32,
        )
    } == 0
    {
        return last_error();
    }
    if end <= info.AllocationSize as u64 {
        // Nothing to reserve; the handle must still be writable, as fallocate(2) asks.
        return set_end_of_file(h, info.EndOfFile as u64);
    }
    let alloc = FILE_ALLOCATION_INFO {
        AllocationSize: end as i64,
    };
    // SAFETY: passes a live struct of the class it names, and its size.
    if unsafe {
        SetFileInformationByHandle(
            h,
            FileAllocationInfo,
            (&alloc as *const FILE_ALLOCATION_INFO).cast(),
            std::mem::size_of::<FILE_ALLOCATION_INFO>() as u32,
        )
    } == 0
    {
        return unsupported(last_error());
    }
    0
}

/// Makes `offset..end` of the file read as zeros (`FSCTL_SET_ZERO_DATA`), clipped to the
/// file's size (the call never extends a file); on a sparse file the range's clusters are
/// freed.
fn zero_data(h: HANDLE, offset: u64, end: u64) -> i32 {
    let mut st = platform::empty_stat();
    let r = file_stat(h, &mut st);
    if r < 0 {
        return r;
    }
    let end = end.min(st.size);
    if offset >= end {
        // Nothing inside the file; the handle must still be writable, as fallocate(2)
        // asks.
        return set_end_of_file(h, st.size);
    }
    let range = FILE_ZERO_DATA_INFORMATION {
        FileOffset: offset as i64,
        BeyondFinalZero: end as i64,
    };
    // SAFETY: the input is a live struct of the size given.
    unsafe {
        ioctl(
            h,
            FSCTL_SET_ZERO_DATA,
            (&range as *const FILE_ZERO_DATA_INFORMATION).cast(),
            std::mem::size_of::<FILE_ZERO_DATA_INFORMATION>() as u32,
        )
    }
}

/// `DeviceIoControl(h, code, input)` without output, waited for on this thread (an
/// OVERLAPPED with its own event, kept out of the completion port as in [`rw_at`]).
///
/// # Safety
///
/// `input` is valid for reads of `len` bytes (or null with `len` 0).
unsafe fn ioctl(h: HANDLE, code: u32, input: *const std::ffi::c_void, len: u32) -> i32 {
    // SAFETY: creates an unnamed manual-reset event; no pointers but null ones.
    let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    if event.is_null() {
        return last_error();
    }
    // SAFETY: OVERLAPPED is plain integers and pointers; all-zeroes is its initial state.
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.hEvent = (event as usize | 1) as HANDLE;
    let mut n = 0u32;
    // SAFETY: input per the caller; no output; ov lives until the result is collected.
    let ok = unsafe {
        DeviceIoControl(
            h,
            code,
            input,
            len,
            std::ptr::null_mut(),
            0,
            &mut n,
            &mut ov,
        )
    };
    // SAFETY: no arguments.
    let res = if ok != 0 || unsafe { GetLastError() } == ERROR_IO_PENDING {
        // SAFETY: ov is the OVERLAPPED of the call above; wait for it.
        if unsafe { GetOverlappedResult(h, &ov, &mut n, 1) } != 0 {
            0
        } else {
            last_error()
        }
    } else {
        last_error()
    };
    // SAFETY: the event is ours; the call has finished with it.
    unsafe { CloseHandle(event) };
    res
}

/// `symlinkat(target, AT_FDCWD, link)`: `CreateSymbolicLinkW`, a directory link if
/// `target` (resolved from `link`'s directory when relative) is an existing directory.
/// Unprivileged creation (developer mode) is asked for first, and without it where the
/// system does not know that flag (as std does).
fn symlink(target: &std::path::Path, link: &std::path::Path) -> i32 {
    let resolved = match link.parent() {
        Some(dir) if target.is_relative() => dir.join(target),
        _ => target.to_path_buf(),
    };
    let resolved: Vec<u16> = resolved.as_os_str().encode_wide().chain(Some(0)).collect();
    // SAFETY: a NUL-terminated UTF-16 path.
    let attrs = unsafe { GetFileAttributesW(resolved.as_ptr()) };
    let dir = attrs != INVALID_FILE_ATTRIBUTES && attrs & FILE_ATTRIBUTE_DIRECTORY != 0;
    let flags = if dir { SYMBOLIC_LINK_FLAG_DIRECTORY } else { 0 };
    let target: Vec<u16> = target.as_os_str().encode_wide().chain(Some(0)).collect();
    let link: Vec<u16> = link.as_os_str().encode_wide().chain(Some(0)).collect();
    let create = |flags| {
        // SAFETY: both are NUL-terminated UTF-16 paths.
        unsafe { CreateSymbolicLinkW(link.as_ptr(), target.as_ptr(), flags) }
    };
    if create(flags | SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE) != 0 {
        return 0;
    }
    let e = last_error();
    if e != -(ERROR_INVALID_PARAMETER as i32) {
        return e;
    }
    if create(flags) != 0 {
        0
    } else {
        last_error()
    }
}

/// `readlinkat(AT_FDCWD, path, buf, len)`: std's `read_link` (symbolic links and
/// junctions), its encoded bytes copied into `buf`, at most `len` of them (a result of
/// `len` bytes may have been cut short, as `readlink(2)`'s).
///
/// # Safety
///
/// `buf` is valid for writes of `len` bytes.
unsafe fn read_link(path: &std::path::Path, buf: *mut u8, len: u32) -> i32 {
    match std::fs::read_link(path) {
        Ok(target) => {
            let bytes = target.as_os_str().as_encoded_bytes();
            let n = bytes.len().min(len as usize).min(i32::MAX as usize);
            // SAFETY: buf is valid for len >= n bytes per the caller.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, n) };
            n as i32
        }
        Err(e) => -e.raw_os_error().unwrap_or(c::EIO),
    }
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
        OpDesc::Ftruncate { fd, len } => set_end_of_file(handle(fd.raw), len),
        // No range flush: any flag flushes the whole file (see File::sync_range); none is
        // nothing, as on Linux.
        OpDesc::SyncFileRange { fd, flags, .. } => {
            // SAFETY: no pointers.
            if flags != 0 && unsafe { FlushFileBuffers(handle(fd.raw)) } == 0 {
                last_error()
            } else {
                0
            }
        }
        // No access-pattern hints on Windows: advice is accepted and ignored.
        OpDesc::Fadvise { .. } => 0,
        OpDesc::OpenAt {
            dirfd,
            path,
            flags,
            mode,
        } => {
            // SAFETY: the description's path is a NUL-terminated string of OsStr bytes.
            let path = unsafe { wide(path) };
            if dirfd == c::AT_FDCWD {
                open(&path, flags, mode)
            } else {
                open_at(handle(dirfd), &path, flags, mode)
            }
        }
        // No openat2: open_beneath walks the path with relative opens instead.
        OpDesc::OpenAt2 { .. } => -c::ENOSYS,
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
            // rename(2) replaces an existing target; RENAME_NOREPLACE does not; there is no
            // exchange.
            let replace = match flags {
                0 => MOVEFILE_REPLACE_EXISTING,
                RENAME_NOREPLACE => 0,
                _ => return -c::EOPNOTSUPP,
            };
            // SAFETY: as for the open.
            let (from, to) = unsafe { (wide(oldpath), wide(newpath)) };
            // SAFETY: both paths are NUL-terminated UTF-16.
            if unsafe { MoveFileExW(from.as_ptr(), to.as_ptr(), replace) } == 0 {
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
        OpDesc::SymlinkAt {
            target,
            newdirfd,
            linkpath,
        } => match check_dir(newdirfd) {
            // SAFETY: both are the description's NUL-terminated strings of OsStr bytes.
            Ok(()) => symlink(unsafe { os_path(target) }, unsafe { os_path(linkpath) }),
            Err(e) => e,
        },
        OpDesc::LinkAt {
            olddirfd,
            oldpath,
            newdirfd,
            newpath,
            ..
        } => {
            if let Err(e) = check_dir(olddirfd).and(check_dir(newdirfd)) {
                return e;
            }
            // SAFETY: as for the open.
            let (from, to) = unsafe { (wide(oldpath), wide(newpath)) };
            // SAFETY: both paths are NUL-terminated UTF-16; default security.
            if unsafe { CreateHardLinkW(to.as_ptr(), from.as_ptr(), std::ptr::null()) } == 0 {
                last_error()
            } else {
                0
            }
        }
        OpDesc::ReadLinkAt {
            dirfd,
            path,
            buf,
            len,
        } => match check_dir(dirfd) {
            // SAFETY: the path as for the open; buf is the op's buffer of len bytes.
            Ok(()) => unsafe { read_link(os_path(path), buf, len) },
            Err(e) => e,
        },
        // SAFETY: the cursor belongs to the operation, which the driver keeps alive (and
        // no one else touches) until this job's completion is reaped.
        OpDesc::ReadDir { dir, max } => unsafe { (*dir).fill(max) },
        // Sockets run overlapped on the completion port and never come here.
        OpDesc::Accept { .. }
        | OpDesc::Connect { .. }
        | OpDesc::Recv { .. }
        | OpDesc::RecvMulti { .. }
        | OpDesc::AcceptMulti { .. }
        | OpDesc::Send { .. }
        | OpDesc::RecvMsg { .. }
        | OpDesc::SendMsg { .. }
        | OpDesc::Shutdown { .. }
        // File-to-socket transfers copy through user space on Windows
        // (`Stream::send_file`): none of these is ever described there.
        | OpDesc::Splice { .. }
        | OpDesc::SendFile { .. }
        | OpDesc::Poll { .. } => {
            debug_assert!(
                false,
                "coring: a socket operation reached the blocking pool"
            );
            -c::EOPNOTSUPP
        }
    }
}
