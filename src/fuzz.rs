//! Property tests over every parser of input from outside the charm (issue 22): relation
//! data from other applications, action parameters, attached archives and the files the
//! charm reads back. Each takes arbitrary input and must answer a value or an error, never
//! panic. They run with every `cargo test` (a few hundred cases each: bounded time); the
//! config options' own properties are in `config::tests::properties`.

use proptest::prelude::*;
use std::collections::BTreeMap;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text as another application may send it: anything, PEM-looking text, or nothing.
fn remote_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]{0,200}\n-----END CERTIFICATE-----\n",
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(cases(300))]

    /// The certificates relation: a provider's bag with any values under the keys read.
    #[test]
    fn a_providers_answer_never_panics(ca in remote_text(), cert in remote_text(),
                                       key in remote_text(), refused in any::<String>(),
                                       ccert in remote_text(), ckey in remote_text()) {
        let bag = BTreeMap::from([
            ("ca".to_string(), ca),
            ("etcd_0.server.cert".to_string(), cert),
            ("etcd_0.server.key".to_string(), key),
            ("etcd_0.refused".to_string(), refused),
            ("client.cert".to_string(), ccert),
            ("client.key".to_string(), ckey),
        ]);
        let _ = crate::pki::authority::read_answer("p/0", "etcd_0", &bag, &["10.0.0.1".into()], 0);
        let _ = crate::pki::authority::split(bag.get("ca").unwrap());
    }

    /// tls-certificates v4: a provider's application bag with any text, or lists of entries
    /// with any field values, under the keys read.
    #[test]
    fn a_v4_providers_answer_never_panics(certs in remote_text(), errors in remote_text(),
                                          ca in remote_text(), cert in remote_text(),
                                          csr in remote_text(), revoked in any::<Option<bool>>(),
                                          sans in "\\PC{0,80}") {
        let entry = serde_json::json!([{"ca": ca, "certificate": cert,
            "certificate_signing_request": csr, "revoked": revoked}]).to_string();
        for app in [
            BTreeMap::from([("certificates".to_string(), certs), ("request_errors".to_string(), errors)]),
            BTreeMap::from([("certificates".to_string(), entry)]),
        ] {
            if let Err(e) = crate::pki::provider::read("p", &app, "0123456789abcdef", Some("x"), &["10.0.0.1".into()], 0) {
                prop_assert!(e.len() < 600, "an unbounded refusal: {} bytes", e.len());
            }
        }
        // Any answer will do: this property is that parsing never panics.
        let _ = crate::config::sans::parse(&sans);
    }

    /// nrpe-external-master's `nagios_hostname` (and the Nagios options).
    #[test]
    fn nagios_names_never_panic(v in "\\PC{0,200}", list in any::<bool>()) {
        if let Err(e) = crate::config::nagios::check_names("nagios_hostname", &v, list) {
            prop_assert!(e.len() < 400, "an unbounded refusal: {} bytes", e.len());
        }
    }

    /// The roll's decision over any peer databags (another unit's writes).
    #[test]
    fn the_roll_over_any_peer_data_never_panics(
        bags in proptest::collection::btree_map("etcd/[0-9]{1,2}",
            proptest::collection::btree_map(
                prop_oneof![Just("restart-wanted"), Just("restarted"), Just("etcd-version"),
                            Just("wants-version"), Just("rolled-back"), Just("turn-declined"),
                            Just("config-rejected")].prop_map(String::from),
                "\\PC{0,12}", 0..6),
            0..5),
        grant in proptest::option::of("\\PC{0,20}"),
    ) {
        let lock = crate::ops::roll::plan::Lock { grant, ..Default::default() };
        let _ = crate::ops::roll::plan::decide(&bags, &lock, crate::config::PauseAfter::First, None);
        let _ = crate::ops::roll::plan::progress(&bags);
    }

    /// Action parameters: versions, package versions, revisions, endpoints, thresholds,
    /// targets, schedules.
    #[test]
    fn action_params_never_panic(s in "\\PC{0,80}") {
        let _ = etcdkit::version::Version::parse(&s);
        let _ = etcdkit::install::valid_package_version(&s);
        let _ = etcdkit::install::check_version_text(&s);
        let _ = crate::config::threshold::Threshold::parse(&s);
        let _ = crate::config::schedule::check_target(&s);
        let _ = crate::actions::copy_from::parse_endpoints_for_tests(&s);
        let _ = etcdkit::install::safe_path(std::path::Path::new(&s));
        let _ = crate::config::valid_channel(&s);
    }

    /// The charm's own files read back, whatever they hold: an error naming the file.
    #[test]
    fn files_read_back_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        std::fs::write(&p, &bytes).unwrap();
        let p = p.to_str().unwrap();
        let _ = crate::unit::read_json::<crate::unit::LocalState>(p);
        let _ = crate::unit::read_json::<etcdkit::install::Installed>(p);
        let _ = crate::unit::read_json::<crate::unit::rejected::Rejected>(p);
        let _ = crate::ops::relocate::configured_data_dir(std::path::Path::new(p));
    }
}

proptest! {
    #![proptest_config(cases(60))]

    /// An attached archive (the etcd and snapshot resources): any bytes, gzip or not, with
    /// a tar inside or not, is unpacked safely or refused.
    #[test]
    fn attached_archives_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048),
                                     gzip in any::<bool>()) {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("r.tar.gz");
        let bytes = if gzip {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
            e.write_all(&body).unwrap();
            e.finish().unwrap()
        } else {
            body
        };
        std::fs::write(&f, bytes).unwrap();
        let dest = d.path().join("out");
        std::fs::create_dir_all(&dest).unwrap();
        let _ = etcdkit::install::unpack_safely(&f, &dest);
    }
}
