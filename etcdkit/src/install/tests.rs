//! The deliveries' tests.

/// L: the printed version is used as a directory name: a path in it is refused.
#[test]
fn a_version_that_is_a_path_is_refused() {
    for ok in ["3.5.16", "3.6.0-rc.1", "3.4.23+deb12"] {
        assert!(super::check_version_text(ok).is_ok(), "{ok}");
    }
    for bad in [
        "../../etc",
        "/etc",
        "3.5.1/../../x",
        "",
        ".3.5",
        "3.5.1 x",
        "banana",
    ] {
        assert!(super::check_version_text(bad).is_err(), "{bad}");
    }
}

use super::*;

fn tarball(entries: &[(&str, &[u8], tar::EntryType)]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    let gz = flate2::write::GzEncoder::new(f.reopen().unwrap(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, data, kind) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        if *kind == tar::EntryType::Symlink {
            h.set_link_name("/etc/passwd").unwrap();
            h.set_size(0);
        }
        // write the name raw so unsafe names survive into the archive
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
    f
}

#[test]
fn package_versions_from_outside_are_checked() {
    for ok in ["3.5.16-4", "3.4.23-4+b4", "1:3.5.30-2~bpo12+1"] {
        assert_eq!(valid_package_version(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "latest",
        "3.5;rm -rf /",
        "../3.5",
        "3.5 16",
        &"9".repeat(65),
    ] {
        let e = valid_package_version(bad).unwrap_err();
        assert!(e.contains("is not a Debian package version"), "{bad}: {e}");
    }
}

#[test]
fn refuses_unsafe_entries() {
    let d = tempfile::tempdir().unwrap();
    for (name, kind, why) in [
        ("../evil", tar::EntryType::Regular, "'..'"),
        ("/etc/evil", tar::EntryType::Regular, "absolute"),
        ("etcd-v3/link", tar::EntryType::Symlink, "Symlink"),
        ("dev", tar::EntryType::Char, "Char"),
    ] {
        let t = tarball(&[(name, b"x", kind)]);
        let err = unpack_safely(t.path(), d.path()).unwrap_err();
        assert!(err.contains(why), "{name}: {err}");
    }
}

#[test]
fn refuses_corrupt_archives() {
    let t = tarball(&[("etcd-v3/etcd", &vec![7u8; 100_000], tar::EntryType::Regular)]);
    let mut bytes = std::fs::read(t.path()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), &bytes).unwrap();
    let d = tempfile::tempdir().unwrap();
    assert!(unpack_safely(bad.path(), d.path()).is_err());
    let truncated = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(truncated.path(), &std::fs::read(t.path()).unwrap()[..200]).unwrap();
    assert!(unpack_safely(truncated.path(), d.path()).is_err());
}

#[test]
fn a_flipped_byte_in_stored_data_is_caught_by_the_gzip_crc() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("stored.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&f).unwrap(),
        flate2::Compression::none(),
    );
    let mut b = tar::Builder::new(gz);
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "db", data.as_slice()).unwrap();
    b.into_inner().unwrap().finish().unwrap();
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&f, &bytes).unwrap();
    let out = d.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    assert!(unpack_safely(&f, &out).unwrap_err().contains("damaged"));
}

#[test]
fn unpacks_a_good_archive() {
    let t = tarball(&[
        ("etcd-v3/etcd", b"bin", tar::EntryType::Regular),
        ("etcd-v3/etcdctl", b"ctl", tar::EntryType::Regular),
    ]);
    let d = tempfile::tempdir().unwrap();
    unpack_safely(t.path(), d.path()).unwrap();
    assert_eq!(find_bin_dir(d.path()).unwrap(), d.path().join("etcd-v3"));
}

#[test]
fn a_snapshot_may_be_as_large_as_the_free_space_and_no_larger() {
    let t = tarball(&[("db", &[7u8; 4096], tar::EntryType::Regular)]);
    let d = tempfile::tempdir().unwrap();
    let err =
        unpack_safely_with(t.path(), d.path(), Room::Free { bytes: 4095 }, |_, _| {}).unwrap_err();
    assert!(err.contains("make room"), "{err}");
    assert!(
        !d.path().join("db").exists(),
        "nothing written when it cannot fit"
    );
    unpack_safely_with(t.path(), d.path(), Room::Free { bytes: 4096 }, |_, _| {}).unwrap();
    assert_eq!(std::fs::read(d.path().join("db")).unwrap().len(), 4096);
}
