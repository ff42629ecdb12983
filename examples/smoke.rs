use coring::buf::IoBuf;
use coring::fs::File;
use coring::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    coring::start(async {
        let f = File::create("/tmp/coring-smoke").await.unwrap();
        let (r, _) = f.write_all_at(b"hello world".to_vec(), 0).await;
        r.unwrap();
        f.sync_all().await.unwrap();
        let (r, buf) = f.read_at(Vec::with_capacity(64), 0).await;
        println!("read on write-only: {:?} {}", r, buf.len());
        f.close().await.unwrap();
        let f = File::open("/tmp/coring-smoke").await.unwrap();
        let (r, buf) = f.read_at(Vec::with_capacity(64), 0).await;
        println!("read {:?} {:?}", r, String::from_utf8_lossy(&buf));
        println!("meta {:?}", f.metadata().await.unwrap());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let srv = coring::spawn(async move {
            let (s, peer) = l.accept().await.unwrap();
            println!("accepted {peer}");
            let (r, buf) = s.read(Vec::with_capacity(100)).await;
            println!("server read {:?}", r);
            let (r, _) = s.write_all(buf).await;
            r.unwrap();
        });
        let c = TcpStream::connect(addr).await.unwrap();
        let (r, _) = c.write_all("ping").await;
        r.unwrap();
        let (r, buf) = c.read(Vec::with_capacity(100)).await;
        println!("client got {:?} {:?}", r, String::from_utf8_lossy(&buf));
        srv.await.unwrap();
        let t = Instant::now();
        coring::time::sleep(Duration::from_millis(50)).await;
        println!("slept {:?}", t.elapsed());
        let r = coring::time::timeout(Duration::from_millis(50), c.read(Vec::with_capacity(10).slice(..))).await;
        println!("timeout read: {:?}", r.is_err());
        let h = coring::spawn(async { panic!("boom") });
        println!("panic join: {:?}", h.await);
    });
}
