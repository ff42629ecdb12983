//! `coring::io` (copy, copy_bidirectional, BufReader) and the whole-file calls of
//! `coring::fs` (read, read_to_string, write, copy).

mod common;

use common::TempDir;
use coring::io::{copy, copy_bidirectional, BufReader};
use coring::net::{TcpListener, TcpStream};

/// A connected TCP pair on loopback.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = coring::spawn(async move { listener.accept().await.unwrap().0 });
    let a = TcpStream::connect(addr).await.unwrap();
    (a, accept.await.unwrap())
}

/// Everything `s` receives until end of stream.
async fn read_all(s: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    BufReader::new(s).read_to_end(&mut out).await.unwrap();
    out
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

coring_test!(copy_moves_every_byte_until_end_of_stream, async {
    let (src_w, src_r) = tcp_pair().await;
    let (dst_w, dst_r) = tcp_pair().await;
    let data = pattern(300_000, 7);
    let sent = data.clone();
    let writer = coring::spawn(async move {
        let (res, _) = src_w.write_all(sent).await;
        res.unwrap();
        // End of stream for the copy.
        drop(src_w);
    });
    let copier = coring::spawn(async move {
        let n = copy(&src_r, &dst_w).await.unwrap();
        dst_w.shutdown(std::net::Shutdown::Write).await.unwrap();
        n
    });
    let got = read_all(&dst_r).await;
    writer.await.unwrap();
    assert_eq!(copier.await.unwrap(), data.len() as u64);
    assert_eq!(got, data);
});

coring_test!(copy_bidirectional_passes_half_closes_on, async {
    // client <-> (proxy_a | proxy_b) <-> server
    let (client, proxy_a) = tcp_pair().await;
    let (proxy_b, server) = tcp_pair().await;
    let proxy = coring::spawn(async move { copy_bidirectional(&proxy_a, &proxy_b).await });
    let up = pattern(100_000, 1);
    let down = pattern(70_000, 2);
    let (up2, down2) = (up.clone(), down.clone());
    let server_task = coring::spawn(async move {
        // The server reads the whole request (the client's half-close arrives as end of
        // stream), then answers and closes its side.
        let got = read_all(&server).await;
        let (res, _) = server.write_all(down2).await;
        res.unwrap();
        server.shutdown(std::net::Shutdown::Write).await.unwrap();
        got
    });
    let (res, _) = client.write_all(up2).await;
    res.unwrap();
    client.shutdown(std::net::Shutdown::Write).await.unwrap();
    let answer = read_all(&client).await;
    assert_eq!(server_task.await.unwrap(), up);
    assert_eq!(answer, down);
    let (a_to_b, b_to_a) = proxy.await.unwrap().unwrap();
    assert_eq!((a_to_b, b_to_a), (up.len() as u64, down.len() as u64));
});

coring_test!(buf_reader_reads_lines_and_delimited_records, async {
    let (w, r) = tcp_pair().await;
    let writer = coring::spawn(async move {
        // Lines cut across sends, a record separator, a last line without newline.
        for part in [&b"first li"[..], b"ne\nsecond\n", b"a;b;", b"c\nlast"] {
            let (res, _) = w.write_all(part.to_vec()).await;
            res.unwrap();
            coring::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    });
    // A small buffer, so lines straddle fills.
    let mut reader = BufReader::with_capacity(4, &r);
    let mut line = String::new();
    assert_eq!(reader.read_line(&mut line).await.unwrap(), 11);
    assert_eq!(line, "first line\n");
    line.clear();
    assert_eq!(reader.read_line(&mut line).await.unwrap(), 7);
    assert_eq!(line, "second\n");
    let mut rec = Vec::new();
    assert_eq!(reader.read_until(b';', &mut rec).await.unwrap(), 2);
    assert_eq!(rec, b"a;");
    rec.clear();
    assert_eq!(reader.read_until(b';', &mut rec).await.unwrap(), 2);
    // An owned read takes what is buffered first.
    let (res, buf) = reader.read(Vec::with_capacity(1)).await;
    assert_eq!(res.unwrap(), 1);
    assert_eq!(buf, b"c");
    writer.await.unwrap();
    let mut rest = Vec::new();
    // The writer is gone: the rest is "\nlast" and then end of stream.
    assert_eq!(reader.read_to_end(&mut rest).await.unwrap(), 5);
    assert_eq!(rest, b"\nlast");
    line.clear();
    assert_eq!(reader.read_line(&mut line).await.unwrap(), 0);
    let (res, buf) = reader.read(Vec::with_capacity(8)).await;
    assert_eq!(res.unwrap(), 0);
    assert!(buf.is_empty());
});

coring_test!(buf_reader_refuses_a_line_that_is_not_utf8, async {
    let (w, r) = tcp_pair().await;
    let (res, _) = w.write_all(b"ok\n\xff\xfe\nafter\n".to_vec()).await;
    res.unwrap();
    drop(w);
    let mut reader = BufReader::new(&r);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let e = reader.read_line(&mut line).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    // Unchanged by the bad line, which is consumed.
    assert_eq!(line, "ok\n");
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line, "ok\nafter\n");
    let (_, rest) = reader.into_parts();
    assert!(rest.is_empty());
});

coring_test!(whole_file_calls, async {
    let dir = TempDir::new("io");
    let p = dir.path("f");
    let data = pattern(200_000, 3);
    let (res, back) = coring::fs::write(&p, data.clone()).await;
    res.unwrap();
    assert_eq!(back, data);
    assert_eq!(coring::fs::read(&p).await.unwrap(), data);
    // Overwrite with less: truncated, as std::fs::write.
    let (res, _) = coring::fs::write(&p, b"short\n".to_vec()).await;
    res.unwrap();
    assert_eq!(coring::fs::read_to_string(&p).await.unwrap(), "short\n");
    // An empty file.
    let (res, _) = coring::fs::write(&p, Vec::new()).await;
    res.unwrap();
    assert!(coring::fs::read(&p).await.unwrap().is_empty());
    // Copy: content and length.
    let (res, _) = coring::fs::write(&p, data.clone()).await;
    res.unwrap();
    let q = dir.path("g");
    assert_eq!(coring::fs::copy(&p, &q).await.unwrap(), data.len() as u64);
    assert_eq!(std::fs::read(&q).unwrap(), data);
    // ... and the permission bits (Unix modes; Windows has only read-only).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        coring::fs::copy(&p, &q).await.unwrap();
        let mode = std::fs::metadata(&q).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }
    // Not UTF-8, and missing files.
    let (res, _) = coring::fs::write(&p, vec![0xff, 0xfe]).await;
    res.unwrap();
    let e = coring::fs::read_to_string(&p).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    let missing = dir.path("missing");
    assert_eq!(
        coring::fs::read(&missing).await.unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert_eq!(
        coring::fs::copy(&missing, &q).await.unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
});
