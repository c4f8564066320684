//! The client against a real S3 server: SeaweedFS's `weed mini` (the fixture tests/setup.sh
//! installs), run in a network namespace of the test's own, where the client's requests go
//! too. Needs root (the namespace) and the fixture.

use s3kit::{Error, Store, Target, PART_SIZE};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const WEED: &str = "/var/cache/etcd-charm-test/weed/weed";
const BUCKET: &str = "etcd-backups";

/// One S3 server in this thread's own network namespace (the test body runs in the same
/// thread, so its sockets are there too). Killed by PID when dropped.
struct Weed {
    child: Option<Child>,
    dir: tempfile::TempDir,
    tls: Option<(PathBuf, PathBuf)>,
}

fn in_own_netns() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): run as root");
    let ok = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(ok.success());
}

impl Weed {
    fn start(tls: bool) -> Weed {
        assert!(
            Path::new(WEED).is_file(),
            "{WEED} is missing: run tests/setup.sh"
        );
        // Not under /tmp, which weed sees as a tmpfs of its own.
        let dir = tempfile::Builder::new()
            .prefix("weed-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            r#"{"identities":[{"name":"etcd","credentials":[{"accessKey":"etcd-access","secretKey":"etcd-secret-key"}],"actions":["Read","List","Tagging","Write"]}]}"#,
        )
        .unwrap();
        let tls = tls.then(|| {
            let ca = write_ca(dir.path());
            (ca, dir.path().to_path_buf())
        });
        let mut w = Weed {
            child: None,
            dir,
            tls,
        };
        w.spawn();
        w
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // weed keeps unix sockets in /tmp, which every namespace of this host shares: it gets
        // a /tmp of its own (unshare and sh exec it: the PID stays the server's).
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation=private", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /tmp && exec \"$0\" \"$@\"")
            .arg(WEED)
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .arg(format!("-bucket={BUCKET}"))
            .arg(format!(
                "-s3.config={}",
                self.dir.path().join("s3.json").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("weed.log")).unwrap());
        if let Some((_, d)) = &self.tls {
            cmd.arg(format!("-s3.cert.file={}", d.join("server.pem").display()))
                .arg(format!("-s3.key.file={}", d.join("server.key").display()))
                .arg("-s3.port.https=8334");
        }
        self.child = Some(cmd.spawn().unwrap());
        // Ready once the bucket takes a write (the server creates it at startup; listings
        // answer before its volume server has registered, writes fail until then).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect("127.0.0.1:8333").is_ok() && self.writable() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "weed did not serve S3 within 60 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn writable(&self) -> bool {
        let s = self.store();
        s.put_small(".ready", b"").is_ok() && s.delete(".ready").is_ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    fn target(&self) -> Target {
        Target {
            endpoint: "http://127.0.0.1:8333".into(),
            region: "us-east-1".into(),
            bucket: BUCKET.into(),
            path_style: true,
            prefix: "etcd/cluster-a".into(),
            access_key: "etcd-access".into(),
            secret_key: "etcd-secret-key".into(),
            storage_class: None,
            ca_pems: vec![],
        }
    }

    fn store(&self) -> Store {
        Store::new(&self.target())
            .unwrap()
            .with_retries(2, Duration::from_millis(100))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // it may have ended by itself; the wait below reaps it either way
            let _ = c.wait();
        }
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it; returns the CA's PEM path.
fn write_ca(dir: &Path) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(vec![]).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test S3 CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    dir.join("ca.pem")
}

/// Deterministic bytes that do not compress.
fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hostkit::fs::hex(&sha2::Sha256::digest(b))
}

/// Why the bucket at `t` cannot be listed, asked once (no retries: the cause is not
/// transient, or the test wants its first answer).
fn refused_at_once(t: &Target) -> Error {
    Store::new(t)
        .unwrap()
        .with_retries(1, Duration::ZERO)
        .check()
        .unwrap_err()
}

/// Runs `f` in a thread of its own inside a new network namespace.
fn isolated(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        in_own_netns();
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

#[test]
fn objects_go_up_in_parts_come_back_whole_and_are_listed_and_deleted() {
    isolated(|| {
        let weed = Weed::start(false);
        let s = weed.store();
        let big = data(2 * PART_SIZE + 12345);
        let up = s.upload("big.tar.gz", &mut big.as_slice()).unwrap();
        assert_eq!((up.size, up.sha256.clone()), (big.len() as u64, sha(&big)));
        assert_eq!(s.size_of("big.tar.gz").unwrap(), Some(big.len() as u64));
        let mut back = vec![];
        let down = s.download("big.tar.gz", &mut back).unwrap();
        assert_eq!(down, up);
        assert!(back == big, "the object read back differs");
        let small = data(1000);
        let up = s.upload("small", &mut small.as_slice()).unwrap();
        assert_eq!(up.sha256, sha(&small));
        s.put_small("big.json", b"{}").unwrap();
        assert_eq!(
            s.get_small("big.json", 100).unwrap().as_deref(),
            Some(&b"{}"[..])
        );
        assert!(
            s.get_small("big.json", 1).is_err(),
            "a record over its limit is refused"
        );
        let mut names: Vec<String> = s.list("").unwrap().into_iter().map(|l| l.name).collect();
        names.sort();
        assert_eq!(names, ["big.json", "big.tar.gz", "small"]);
        assert_eq!(s.list("big").unwrap().len(), 2);
        s.delete("big.tar.gz").unwrap();
        assert_eq!(s.size_of("big.tar.gz").unwrap(), None);
        assert_eq!(s.get_small("nothing-here", 10).unwrap(), None);
    });
}

#[test]
fn refused_credentials_and_a_missing_bucket_are_told_apart() {
    isolated(|| {
        let weed = Weed::start(false);
        let wrong = Target {
            secret_key: "not-the-secret".into(),
            ..weed.target()
        };
        let e = Store::new(&wrong).unwrap().check().unwrap_err();
        assert!(matches!(e, Error::Denied { .. }), "{e}");
        let e = Store::new(&wrong)
            .unwrap()
            .upload("x", &mut &b"abc"[..])
            .unwrap_err();
        assert!(matches!(e, Error::Denied { .. }), "{e}");
        let missing = Target {
            bucket: "no-such-bucket".into(),
            ..weed.target()
        };
        let e = Store::new(&missing).unwrap().check().unwrap_err();
        assert!(matches!(e, Error::NoBucket { .. }), "{e}");
        // An upload does not make the bucket (credentials without the Admin action): SeaweedFS
        // refuses it as access denied, so callers ask check() what is wrong.
        let s = Store::new(&missing).unwrap();
        assert!(s.upload("x", &mut &b"abc"[..]).is_err());
        assert!(matches!(s.check().unwrap_err(), Error::NoBucket { .. }));
        let gone = Target {
            endpoint: "http://127.0.0.1:9".into(),
            ..weed.target()
        };
        let e = refused_at_once(&gone);
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
        // A presigned URL is a credential: never in an error.
        assert!(!e.to_string().contains("X-Amz-Signature"), "{e}");
    });
}

#[test]
fn an_endpoint_with_its_own_ca_is_trusted_only_with_that_ca() {
    isolated(|| {
        let weed = Weed::start(true);
        let ca = std::fs::read_to_string(weed.dir.path().join("ca.pem")).unwrap();
        let https = Target {
            endpoint: "https://127.0.0.1:8334".into(),
            ..weed.target()
        };
        let e = refused_at_once(&https);
        assert!(matches!(e, Error::Untrusted { .. }), "{e}");
        let trusted = Target {
            ca_pems: vec![ca],
            ..https
        };
        let s = Store::new(&trusted).unwrap();
        let d = data(3000);
        assert_eq!(s.upload("tls", &mut d.as_slice()).unwrap().sha256, sha(&d));
    });
}

/// A source that kills the server once the first part has been read from it.
struct KillAfter<'a> {
    data: &'a [u8],
    at: usize,
    weed: &'a mut Weed,
}

impl Read for KillAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at >= PART_SIZE {
            self.weed.kill();
        }
        let n = buf.len().min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn an_upload_cut_off_by_the_servers_death_leaves_no_object() {
    isolated(|| {
        let mut weed = Weed::start(false);
        let s = weed.store();
        let big = data(3 * PART_SIZE);
        let mut src = KillAfter {
            data: &big,
            at: 0,
            weed: &mut weed,
        };
        let e = s.upload("cut.tar.gz", &mut src).unwrap_err();
        assert!(e.transient(), "{e}");
        weed.spawn();
        let s = weed.store();
        assert_eq!(s.size_of("cut.tar.gz").unwrap(), None);
        assert!(s.list("").unwrap().is_empty(), "{:?}", s.list(""));
    });
}

/// A TCP proxy in front of the server that cuts its first connection once `cut_after`
/// bytes went from the client to the server (mid-part); later connections pass whole.
fn cutting_proxy(to: &'static str, cut_after: usize) -> u16 {
    use std::io::Write;
    use std::net::{Shutdown, TcpListener};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { return };
            let server = TcpStream::connect(to).unwrap();
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                let mut sent = 0;
                loop {
                    let k = match c_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => k,
                    };
                    sent += k;
                    if n == 0 && sent > cut_after {
                        // Both ways down at once, as a broken link would (a side the peer
                        // closed already refuses its shutdown, and is down all the same).
                        let _ = c_in.shutdown(Shutdown::Both);
                        let _ = s_out.shutdown(Shutdown::Both);
                        break;
                    }
                    if s_out.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
            });
            std::thread::spawn(move || {
                // Ends when either side closes; the copy's error is that end.
                let _ = std::io::copy(&mut s_in, &mut c_out);
            });
        }
    });
    port
}

#[test]
fn a_link_broken_mid_part_is_retried_and_the_object_comes_out_whole() {
    isolated(|| {
        let weed = Weed::start(false);
        let port = cutting_proxy("127.0.0.1:8333", PART_SIZE + PART_SIZE / 2);
        let through = Target {
            endpoint: format!("http://127.0.0.1:{port}"),
            ..weed.target()
        };
        let s = Store::new(&through)
            .unwrap()
            .with_retries(3, Duration::from_millis(200));
        let big = data(3 * PART_SIZE);
        let up = s.upload("retried.tar.gz", &mut big.as_slice()).unwrap();
        assert_eq!((up.size, up.sha256.clone()), (big.len() as u64, sha(&big)));
        let mut back = vec![];
        assert_eq!(
            weed.store().download("retried.tar.gz", &mut back).unwrap(),
            up
        );
        assert!(back == big);
    });
}
