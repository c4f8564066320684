use super::*;
use charmkit::pki::Ca;

const DAY: time::Duration = time::Duration::days(1);

fn names() -> Vec<String> {
    vec![
        "10.0.0.5".into(),
        "127.0.0.1".into(),
        "etcd-0.example".into(),
    ]
}

fn csr(profile: Profile, sans: &[String]) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    pki::csr_with_usages(&key, "etcd0", sans, profile).unwrap()
}

fn entry(ca: &Ca, csr: &str, profile: Profile, revoked: Option<bool>) -> serde_json::Value {
    let allowed = names();
    let cert = ca.sign(csr, profile, "etcd0", &allowed, DAY).unwrap();
    serde_json::json!({
        "ca": ca.cert_pem.trim(),
        "chain": [cert.trim(), ca.cert_pem.trim()],
        "certificate_signing_request": csr.trim(),
        "certificate": cert.trim(),
        "revoked": revoked,
    })
}

fn bag(entries: Vec<serde_json::Value>) -> Bag {
    Bag::from([(
        CERTIFICATES.to_string(),
        serde_json::Value::Array(entries).to_string(),
    )])
}

fn now() -> i64 {
    crate::unit::now() as i64
}

#[test]
fn the_units_and_the_applications_certificates_are_found_by_their_requests() {
    let ca = Ca::create("v4 CA").unwrap();
    let (server, client) = (csr(Profile::Server, &names()), csr(Profile::Client, &[]));
    let other = csr(Profile::Server, &names());
    let app = bag(vec![
        entry(&ca, &other, Profile::Server, None),
        entry(&ca, &server, Profile::Server, None),
        entry(&ca, &client, Profile::Client, None),
    ]);
    assert!(speaks_v4(&app));
    let (sid, cid) = (pem_id(&server).unwrap(), pem_id(&client).unwrap());
    let a = read("tls", &app, &sid, Some(&cid), &names(), now())
        .unwrap()
        .unwrap();
    assert_eq!(authority::split(&a.ca).len(), 1);
    assert!(pki::issued_by(a.server.as_ref().unwrap(), &ca.cert_pem).unwrap());
    assert_eq!(
        pem_id(a.server.as_deref().unwrap()),
        pem_id(&app_cert(&app, 1))
    );
    assert_eq!(
        pem_id(a.client.as_deref().unwrap()),
        pem_id(&app_cert(&app, 2))
    );
    assert_eq!(a.note, None);
}

fn app_cert(app: &Bag, i: usize) -> String {
    let v: serde_json::Value = serde_json::from_str(&app[CERTIFICATES]).unwrap();
    v[i]["certificate"].as_str().unwrap().to_string()
}

#[test]
fn a_request_is_one_request_however_its_pem_is_wrapped() {
    let c = csr(Profile::Server, &names());
    let rewrapped: String = c.lines().collect::<Vec<_>>().join("\r\n");
    assert_eq!(pem_id(&c), pem_id(&rewrapped));
    assert_eq!(pem_id("not pem"), None);
    assert!(same_requests(
        Some(&requests_value(&rewrapped).unwrap()),
        &c
    ));
    assert!(!same_requests(
        Some(&requests_value(&csr(Profile::Server, &[])).unwrap()),
        &c
    ));
}

#[test]
fn a_revoked_or_outstanding_request_holds_the_ca_where_the_provider_issues() {
    let old = Ca::create("old CA").unwrap();
    let server = csr(Profile::Server, &names());
    let sid = pem_id(&server).unwrap();
    // Revoked (self-signed-certificates' CA change revokes everything first).
    let app = bag(vec![entry(&old, &server, Profile::Server, Some(true))]);
    let a = read("tls", &app, &sid, None, &names(), now())
        .unwrap()
        .unwrap();
    assert_eq!(a.server, None);
    assert_eq!(pki::common_name(&a.ca).unwrap(), "old CA");
    assert!(a.note.unwrap().contains("revoked"));
    // Outstanding (a renewal's new request), others answered: their CA holds.
    let other = csr(Profile::Server, &names());
    let app = bag(vec![entry(&old, &other, Profile::Server, None)]);
    let a = read("tls", &app, &sid, None, &names(), now())
        .unwrap()
        .unwrap();
    assert_eq!((a.server, a.note), (None, None));
    assert_eq!(pki::common_name(&a.ca).unwrap(), "old CA");
    // Nothing issued at all: no answer.
    assert_eq!(
        read("tls", &bag(vec![]), &sid, None, &names(), now()),
        Ok(None)
    );
    assert_eq!(
        read("tls", &Bag::new(), &sid, None, &names(), now()),
        Ok(None)
    );
}

#[test]
fn what_cannot_be_used_is_refused_by_provider_and_field() {
    let ca = Ca::create("v4 CA").unwrap();
    let server = csr(Profile::Server, &names());
    let sid = pem_id(&server).unwrap();
    let not_json = Bag::from([(CERTIFICATES.to_string(), "{oops".to_string())]);
    let e = read("tls", &not_json, &sid, None, &names(), now()).unwrap_err();
    assert!(e.contains("`certificates` from tls"), "{e}");
    // Signed by another CA than the `ca` it comes with.
    let mut forged = entry(
        &Ca::create("other").unwrap(),
        &server,
        Profile::Server,
        None,
    );
    forged["ca"] = serde_json::Value::String(ca.cert_pem.clone());
    let e = read("tls", &bag(vec![forged]), &sid, None, &names(), now()).unwrap_err();
    assert!(e.contains("not signed by its `ca`"), "{e}");
    // A `ca` that is no CA.
    let mut leaf = entry(&ca, &server, Profile::Server, None);
    leaf["ca"] = leaf["certificate"].clone();
    let e = read("tls", &bag(vec![leaf]), &sid, None, &names(), now()).unwrap_err();
    assert!(e.contains("not a CA certificate"), "{e}");
    // Issued without a name the unit asked for.
    let fewer = csr(Profile::Server, &names()[..2]);
    let e = read(
        "tls",
        &bag(vec![entry(&ca, &fewer, Profile::Server, None)]),
        &pem_id(&fewer).unwrap(),
        None,
        &names(),
        now(),
    )
    .unwrap_err();
    assert!(e.contains("does not name etcd-0.example"), "{e}");
    // A client certificate where the server's was asked for.
    let e = read(
        "tls",
        &bag(vec![entry(&ca, &server, Profile::Client, None)]),
        &sid,
        None,
        &names(),
        now(),
    )
    .unwrap_err();
    assert!(e.contains("lacks the serverAuth"), "{e}");
}

#[test]
fn a_provider_that_refuses_the_request_is_named_with_its_reason_in_one_bounded_line() {
    let server = csr(Profile::Server, &names());
    let sid = pem_id(&server).unwrap();
    let long = format!("IP SANs are not allowed\n{}", "x".repeat(500));
    let app = Bag::from([(
        ERRORS.to_string(),
        serde_json::json!([{"csr": server.trim(), "error": {"code": 101, "name": "IP_NOT_ALLOWED", "message": long}}]).to_string(),
    )]);
    assert!(speaks_v4(&app));
    let e = read("lego", &app, &sid, None, &names(), now()).unwrap_err();
    assert!(e.starts_with("lego refused this unit's certificate request: IP_NOT_ALLOWED: IP SANs are not allowed x"), "{e}");
    assert!(!e.contains('\n') && e.len() < 400, "{e}");
    // Another unit's refusal is not this unit's.
    let other = pem_id(&csr(Profile::Server, &names())).unwrap();
    assert_eq!(read("lego", &app, &other, None, &names(), now()), Ok(None));
}

#[test]
fn a_legacy_providers_bag_is_not_v4() {
    assert!(!speaks_v4(&Bag::from([(
        "ca".to_string(),
        "x".to_string()
    )])));
    assert!(speaks_v4(&Bag::from([(
        "capabilities".to_string(),
        "{}".to_string()
    )])));
}
