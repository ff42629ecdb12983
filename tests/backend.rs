//! Which backend a runtime gets on each platform, and what forcing an unavailable one
//! says. Not per backend: these tests are about the choice itself, and run on every
//! platform with that platform's expectations.

mod common;

use std::io::ErrorKind;

use coring::{BackendKind, Builder};

/// What `Builder::backend(kind).build()` says for a backend this platform lacks.
fn unsupported(kind: BackendKind) -> String {
    let err = Builder::new().backend(kind).build().map(drop).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{kind}: {err}");
    err.to_string()
}

#[test]
fn auto_selects_the_platform_backend() {
    // CORING_BACKEND may force another choice in this process's environment.
    if std::env::var_os("CORING_BACKEND").is_some() {
        return;
    }
    let rt = Builder::new().build().unwrap();
    let description = rt.backend_description();
    if cfg!(windows) {
        assert_eq!(rt.backend(), BackendKind::Iocp);
        assert!(description.starts_with("iocp"), "{description}");
        assert_eq!(rt.fallback_reason(), None);
    } else if cfg!(target_os = "linux") {
        // io_uring where the kernel allows it, else the fallback with its reason.
        match rt.backend() {
            BackendKind::IoUring => assert_eq!(rt.fallback_reason(), None),
            BackendKind::Fallback => assert!(rt.fallback_reason().is_some()),
            other => panic!("Auto chose {other} on Linux"),
        }
    } else {
        assert_eq!(rt.backend(), BackendKind::Fallback);
        assert_eq!(
            rt.fallback_reason(),
            Some("io_uring is only available on Linux")
        );
    }
}

#[test]
fn unavailable_backends_are_unsupported_with_a_message() {
    if cfg!(windows) {
        assert!(unsupported(BackendKind::IoUring).contains("only available on Linux"));
        assert!(unsupported(BackendKind::Fallback).contains("does not exist on Windows"));
    } else {
        assert!(unsupported(BackendKind::Iocp).contains("only on Windows"));
        if !cfg!(target_os = "linux") {
            assert!(unsupported(BackendKind::IoUring).contains("only available on Linux"));
        }
    }
}

#[test]
fn backend_names_parse_and_print() {
    for kind in [
        BackendKind::Auto,
        BackendKind::IoUring,
        BackendKind::Fallback,
        BackendKind::Iocp,
    ] {
        assert_eq!(BackendKind::parse(&kind.to_string()).unwrap(), kind);
    }
    let err = BackendKind::parse("kqueue2").unwrap_err();
    assert!(err.to_string().contains("iocp"), "{err}");
}

// Registration is io_uring's optimisation: where there are no tables (the fallback, IOCP)
// it succeeds and changes nothing, and IO on the registered file and buffers works.
coring_test!(
    registration_without_tables_succeeds_and_changes_nothing,
    |builder| {
        let rt = builder.build().unwrap();
        let tables = rt.backend() == BackendKind::IoUring;
        common::block_on_bounded(&rt, async {
            let dir = common::TempDir::new("backend-register");
            let path = dir.path("f");
            std::fs::write(&path, b"registered").unwrap();
            let file = coring::fs::File::open(&path).await.unwrap();
            file.register().unwrap();
            assert_eq!(file.is_registered(), tables);
            let pool = coring::buf::FixedBufPool::new(2, 64);
            pool.register().unwrap();
            assert_eq!(pool.is_registered(), tables);
            let buf = pool.try_take().unwrap();
            let (res, buf) = file.read_fixed_at(buf, 0).await;
            assert_eq!(&buf[..res.unwrap()], b"registered");
        });
    }
);
