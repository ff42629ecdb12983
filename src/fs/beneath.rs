//! Opening a path beneath a directory without resolving outside it:
//! [`OpenOptions::open_beneath`].

use std::ffi::OsStr;
use std::io;
use std::path::{Component, Path};

use super::{File, OpenOptions};
use crate::op::fs::{cstring, open, Open};
use crate::op::SharedFd;
use crate::platform::{self, c, fsabi};

impl OpenOptions {
    /// Opens `path`, relative to the directory `dir`, with these options, never resolving
    /// to anything outside `dir`: not by `..`, not by an absolute path, not by a symbolic
    /// link (or a magic link such as `/proc/self/fd/N`) that points elsewhere. The check
    /// and the open are one step, so nobody who can write beneath `dir` can swap a
    /// checked directory for a link in between.
    ///
    /// - **Linux 5.6 and later**: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`
    ///   (IORING_OP_OPENAT2 on io_uring, the same call on a pool thread otherwise). `..`
    ///   and symbolic links are followed as long as they stay beneath `dir`; one that
    ///   leaves it fails with `PermissionDenied`.
    /// - **Older kernels (ENOSYS), FreeBSD, Apple platforms and Windows**: the path is
    ///   walked one component at a time, each opened relative to the one before, without
    ///   following links (`O_NOFOLLOW`; on Windows, a relative `NtCreateFile` that refuses
    ///   reparse points). This is stricter: every symbolic link on the way, even one that
    ///   stays beneath `dir`, is refused (ELOOP, or ENOTDIR for a directory component;
    ///   Windows `ERROR_CANT_RESOLVE_FILENAME`), and so is every `..` component
    ///   (`PermissionDenied`), whatever it resolves to. On FreeBSD and Apple platforms the
    ///   directories on the way must be readable (there is no `O_PATH`).
    ///
    /// An empty path is `NotFound`; `.` opens `dir` itself (again, with these options).
    ///
    /// ```
    /// use coring::fs::{File, OpenOptions};
    ///
    /// coring::start(async {
    ///     let root = File::open(".").await?;
    ///     let manifest = OpenOptions::new().read(true).open_beneath(&root, "Cargo.toml").await?;
    ///     let outside = OpenOptions::new().read(true).open_beneath(&root, "../x").await;
    ///     assert_eq!(outside.unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
    ///     manifest.close().await
    /// })
    /// .unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an absolute path (or one with a Windows drive or root), for a
    /// path with a NUL byte and for contradictory options; `PermissionDenied` for a path
    /// that resolves outside `dir`; otherwise as [`open`](OpenOptions::open).
    pub async fn open_beneath(&self, dir: &File, path: impl AsRef<Path>) -> io::Result<File> {
        let flags = self.flags()?;
        let path = path.as_ref();
        if path.has_root() || matches!(path.components().next(), Some(Component::Prefix(_))) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "open_beneath: {path:?} is absolute; give a path relative to the directory"
                ),
            ));
        }
        let cpath = cstring(path)?;
        let resolve = fsabi::RESOLVE_BENEATH | fsabi::RESOLVE_NO_MAGICLINKS;
        let beneath = open(|| {
            Open::new(cpath.clone(), flags, self.mode)
                .at(&dir.fd)
                .resolve(resolve)
        });
        let opened = match beneath.await {
            Ok(fd) => Ok(fd),
            Err(e) if e.raw_os_error() == Some(c::ENOSYS) => {
                walk(&dir.fd, path, flags, self.mode).await
            }
            Err(e) if e.raw_os_error() == Some(c::EXDEV) => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("open_beneath: {path:?} resolves outside the directory ({e})"),
            )),
            Err(e) => Err(e),
        };
        let file = File::new(opened?);
        if self.is_direct(flags) {
            file.make_direct()?;
        }
        Ok(file)
    }
}

/// Opens `path` beneath `dir` without `openat2`: one component at a time, each relative to
/// the directory before it, none followed if it is a link; `..` is refused.
pub(super) async fn walk(
    dir: &SharedFd,
    path: &Path,
    flags: i32,
    mode: u32,
) -> io::Result<SharedFd> {
    if path.as_os_str().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "open_beneath: the path is empty",
        ));
    }
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => names.push(name),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "open_beneath: {path:?} has a `..` component, which is refused where \
                         openat2 is unavailable (the path is walked one component at a time)"
                    ),
                ))
            }
            // Refused by the caller.
            Component::RootDir | Component::Prefix(_) => {
                return Err(io::Error::from_raw_os_error(c::EXDEV))
            }
        }
    }
    let (last, parents) = match names.split_last() {
        Some((last, parents)) => (*last, parents),
        None => (OsStr::new("."), &[][..]),
    };
    let mut at: Option<SharedFd> = None;
    for name in parents {
        let cname = cstring(Path::new(name))?;
        let parent = at.as_ref().unwrap_or(dir);
        let step = open(|| Open::new(cname.clone(), platform::OPEN_DIR_STEP, 0).at(parent)).await;
        at = Some(step.map_err(|e| not_followed(path, name, e))?);
    }
    let cname = cstring(Path::new(last))?;
    let parent = at.as_ref().unwrap_or(dir);
    open(|| Open::new(cname.clone(), flags | c::O_NOFOLLOW, mode).at(parent))
        .await
        .map_err(|e| not_followed(path, last, e))
}

/// Says which component of `path` was a link the walk does not follow, if that is what
/// `e` reports.
fn not_followed(path: &Path, name: &OsStr, e: io::Error) -> io::Error {
    if e.raw_os_error() != Some(c::ELOOP) {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!(
            "open_beneath: {name:?} in {path:?} is a symbolic link, which is not followed \
             where openat2 is unavailable ({e})"
        ),
    )
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::BackendKind;

    async fn walk_file(dir: &File, path: &str, flags: i32, mode: u32) -> io::Result<File> {
        walk(&dir.fd, Path::new(path), flags, mode)
            .await
            .map(File::new)
    }

    /// The walk, as kernels without openat2 run it, on both Linux backends.
    #[test]
    fn walk_confines_and_refuses_links() {
        let kinds: &[BackendKind] = if cfg!(target_os = "linux") {
            &[BackendKind::IoUring, BackendKind::Fallback]
        } else {
            &[BackendKind::Fallback]
        };
        for &kind in kinds {
            let root = std::env::temp_dir()
                .join(format!("coring-unit-walk-{}-{kind:?}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("a/b")).unwrap();
            std::fs::write(root.join("a/b/f"), b"inside").unwrap();
            std::fs::write(root.join("outside"), b"outside").unwrap();
            std::os::unix::fs::symlink("b", root.join("a/lb")).unwrap();
            std::os::unix::fs::symlink("b/f", root.join("a/lf")).unwrap();
            let rt = crate::Builder::new().backend(kind).build().unwrap();
            rt.block_on(async {
                let dir = File::open(&root).await.unwrap();
                let rd = c::O_RDONLY;
                let f = walk_file(&dir, "a/./b/f", rd, 0).await.unwrap();
                let (r, buf) = f.read_at(Vec::with_capacity(16), 0).await;
                assert_eq!(r.unwrap(), 6);
                assert_eq!(buf, b"inside");
                // `..` anywhere, even if it stays beneath.
                let e = walk_file(&dir, "a/../outside", rd, 0).await.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
                // A link as the last component, and as a directory on the way.
                let e = walk_file(&dir, "a/lf", rd, 0).await.unwrap_err();
                assert_eq!(e.raw_os_error(), None, "{e}");
                assert!(e.to_string().contains("symbolic link"), "{e}");
                let e = walk_file(&dir, "a/lb/f", rd, 0).await.unwrap_err();
                assert!(
                    matches!(e.raw_os_error(), Some(c::ENOTDIR | c::ELOOP))
                        || e.raw_os_error().is_none(),
                    "{e}"
                );
                // Creating through the walk.
                let w = c::O_WRONLY | c::O_CREAT;
                let f = walk_file(&dir, "a/new", w, 0o600).await.unwrap();
                drop(f);
                assert!(root.join("a/new").is_file());
                let e = walk_file(&dir, "", rd, 0).await.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
                // "." is the directory itself.
                let d = walk_file(&dir, ".", rd, 0).await.unwrap();
                assert!(d.metadata().await.unwrap().is_dir());
            });
            std::fs::remove_dir_all(&root).unwrap();
        }
    }
}
