use super::request::prefix_end;
use super::*;
use charmkit::pki::{Ca, Profile};

fn now() -> i64 {
    hostkit::clock::now() as i64
}

fn bag(prefix: &str) -> Bag {
    Bag::from([
        ("prefix".to_string(), prefix.to_string()),
        ("secret-mtls".to_string(), "secret:x".to_string()),
        (
            "requested-secrets".to_string(),
            r#"["username", "tls-ca"]"#.to_string(),
        ),
        (
            "provided-secrets".to_string(),
            r#"["mtls-cert"]"#.to_string(),
        ),
    ])
}

struct World {
    ca: Ca,
    trusted: BTreeSet<String>,
    reserved: BTreeSet<String>,
}

fn world() -> World {
    let ca = Ca::create("cluster CA").unwrap();
    let trusted = BTreeSet::from([ca.cert_pem.clone()]);
    let reserved = BTreeSet::from(["root".to_string(), "etcd-client".to_string()]);
    World {
        ca,
        trusted,
        reserved,
    }
}

fn cert(ca: &Ca, profile: Profile, cn: &str) -> String {
    ca.issue_with_key(profile, cn).unwrap().0
}

fn read(w: &World, b: &Bag, cert: Option<&str>, full: bool) -> Result<Want, NotServed> {
    read_request("kube", b, cert, &w.trusted, &w.reserved, full, now())
}

fn refused(r: Result<Want, NotServed>) -> String {
    match r {
        Err(NotServed::Refused(s)) => s,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_client_with_a_certificate_from_a_trusted_ca_gets_its_prefix() {
    let w = world();
    let c = cert(&w.ca, Profile::Client, "kube-apiserver");
    let want = read(&w, &bag("/kube/"), Some(&c), false).unwrap();
    assert_eq!(want.user, "kube-apiserver");
    assert_eq!(want.key, b"/kube/");
    assert_eq!(want.range_end, b"/kube0");
    // a certificate with the chain after it: the leaf is the first
    let chained = format!("{c}{}", w.ca.cert_pem);
    assert_eq!(
        read(&w, &bag("/kube/"), Some(&chained), false)
            .unwrap()
            .user,
        "kube-apiserver"
    );
}

#[test]
fn full_access_is_the_whole_key_space_and_needs_no_prefix() {
    let w = world();
    let c = cert(&w.ca, Profile::Client, "vault");
    let want = read(&w, &bag(""), Some(&c), true).unwrap();
    assert_eq!((want.key, want.range_end), (vec![0], vec![0]));
}

#[test]
fn a_certificate_no_member_trusts_is_refused_not_trusted_by_a_restart() {
    let w = world();
    let other = Ca::create("someone else").unwrap();
    let c = cert(&other, Profile::Client, "kube");
    let why = refused(read(&w, &bag("/k/"), Some(&c), false));
    assert!(
        why.contains("not issued by a CA this cluster trusts"),
        "{why}"
    );
    assert!(why.starts_with("etcd-client kube: "), "{why}");
    // a self-signed certificate (what the spec's clients send) is refused too
    let own = Ca::create("kube").unwrap();
    let why = refused(read(&w, &bag("/k/"), Some(&own.cert_pem), false));
    assert!(why.contains("not issued by a CA"), "{why}");
}

#[test]
fn a_name_that_is_taken_cannot_be_a_clients_user() {
    let w = world();
    for cn in ["root", "etcd-client"] {
        let c = cert(&w.ca, Profile::Client, cn);
        let why = refused(read(&w, &bag("/k/"), Some(&c), false));
        assert!(why.contains("is taken"), "{cn}: {why}");
    }
    let c = cert(&w.ca, Profile::Client, "bad name with spaces");
    assert!(refused(read(&w, &bag("/k/"), Some(&c), false)).contains("cannot name an etcd user"));
}

#[test]
fn a_certificate_only_for_servers_is_refused() {
    let w = world();
    // serverAuth + clientAuth serves; build one with serverAuth only through a CSR
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let issuer_key = rcgen::KeyPair::from_pem(&w.ca.key_pem).unwrap();
    let issuer = rcgen::CertificateParams::from_ca_cert_pem(&w.ca.cert_pem)
        .unwrap()
        .self_signed(&issuer_key)
        .unwrap();
    let c = params.signed_by(&key, &issuer, &issuer_key).unwrap().pem();
    let why = refused(read(&w, &bag("/k/"), Some(&c), false));
    assert!(why.contains("without clientAuth"), "{why}");
}

#[test]
fn what_the_requirer_has_not_said_yet_is_waited_for_and_bad_values_are_refused() {
    let w = world();
    let c = cert(&w.ca, Profile::Client, "kube");
    assert!(matches!(
        read(&w, &bag(""), Some(&c), false),
        Err(NotServed::Waiting(_))
    ));
    assert!(matches!(
        read(&w, &bag("/k/"), None, false),
        Err(NotServed::Waiting(_))
    ));
    let mut b = bag("/k/");
    b.insert("requested-secrets".into(), r#"["username"]"#.into());
    assert!(refused(read(&w, &b, Some(&c), false)).contains("tls-ca"));
    b.insert("requested-secrets".into(), "not json".into());
    assert!(refused(read(&w, &b, Some(&c), false)).contains("requested-secrets"));
    assert!(refused(read(&w, &bag("/k/\n"), Some(&c), false)).contains("prefix"));
    assert!(refused(read(&w, &bag(&"p".repeat(600)), Some(&c), false)).contains("prefix"));
    for junk in [
        "",
        "garbage",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let why = refused(read(&w, &bag("/k/"), Some(junk), false));
        assert!(why.contains("mtls-cert"), "{junk:?}: {why}");
    }
    let huge = "x".repeat(20_000);
    assert!(refused(read(&w, &bag("/k/"), Some(&huge), false)).contains("larger than"));
}

#[test]
fn a_prefix_ends_where_etcd_ends_it() {
    assert_eq!(prefix_end(b"/a/"), b"/a0");
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    assert_eq!(prefix_end(b""), vec![0]);
}

#[test]
fn only_releases_with_the_watch_fix_are_not_leaky() {
    for v in [
        "3.4.23", "3.5.1", "3.5.16", "3.5.30", "3.5.32", "3.6.13", "3.7.0", "2.3.8", "", "x.y",
        "3.5",
    ] {
        assert!(leaky(v), "{v}");
    }
    for v in [
        "3.5.33", "3.5.40", "3.6.14", "3.7.1", "v3.7.2", "3.8.0", "4.0.0",
    ] {
        assert!(!leaky(v), "{v}");
    }
}
