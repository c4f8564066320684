//! etcd release tarballs made from the fixtures' builds (shared by the integration tests and
//! the charm's whole-hook tests, which include this file).

use std::path::{Path, PathBuf};

/// Builds an upstream-style release tarball (`etcd-vX-linux-amd64/{etcd,etcdctl,...}`).
pub fn etcd_tarball(dir: &Path, bin_dir: &Path, version: &str) -> PathBuf {
    let top = format!("etcd-v{version}-linux-amd64");
    let out = dir.join(format!("{top}.tar.gz"));
    let f = std::fs::File::create(&out).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for e in std::fs::read_dir(bin_dir).unwrap() {
        let e = e.unwrap();
        b.append_path_with_name(
            e.path(),
            format!("{top}/{}", e.file_name().to_string_lossy()),
        )
        .unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
    out
}
