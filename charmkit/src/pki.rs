//! An easyrsa-like CA shared by the etcd and easyrsa charms: a CA (ECDSA P-256, 10 years),
//! CSRs, the signer's name checks before signing, the server/peer/client profiles, private
//! files (0600) and expiry. Keys are never logged.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::net::IpAddr;
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// Default lifetime of leaf certificates (config `tls_certificate_lifetime`).
pub const LEAF_DAYS: i64 = 825;
const CA_DAYS: i64 = 3650;
/// Renew when less than this is left.
pub const RENEW_BEFORE_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate library: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A file write that failed; its error names the file already (`hostkit::fs`).
    #[error(transparent)]
    Write(std::io::Error),
    #[error("certificate request refused: {0}")]
    Refused(String),
    #[error("cannot parse certificate: {0}")]
    Parse(String),
}

pub type Result<T> = std::result::Result<T, PkiError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// client port: serverAuth + clientAuth (the gateway dials back with it)
    Server,
    /// peer port: serverAuth + clientAuth (peers serve and dial)
    Peer,
    /// clients: clientAuth
    Client,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Server => "server",
            Profile::Peer => "peer",
            Profile::Client => "client",
        }
    }
    fn ekus(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Profile::Server | Profile::Peer => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Profile::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        }
    }
}

fn serial() -> SerialNumber {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn create(common_name: &str) -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        p.distinguished_name = dn;
        // It signs leaves only: no intermediate it could sign would be trusted (pathlen 0).
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::minutes(5);
        p.not_after = now + Duration::days(CA_DAYS);
        p.serial_number = Some(serial());
        let cert = p.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a CSR with the given profile, granting only the SANs in `allowed` (checked
    /// before: every requested name must be one of the requester's real addresses).
    pub fn sign(
        &self,
        csr_pem: &str,
        profile: Profile,
        common_name: &str,
        allowed: &[String],
        lifetime: Duration,
    ) -> Result<String> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let requested = requested_names(&csr.params.subject_alt_names);
        check_names(&requested, allowed)?;
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let ca_params = CertificateParams::from_ca_cert_pem(&self.cert_pem)?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let p = &mut csr.params;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, profile.name());
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = profile.ekus();
        let now = OffsetDateTime::now_utc();
        // A minute back for clock skew between units.
        p.not_before = now - Duration::minutes(1);
        p.not_after = now + lifetime;
        p.serial_number = Some(serial());
        p.use_authority_key_identifier_extension = true;
        if profile == Profile::Client {
            p.subject_alt_names.clear();
        }
        let cert = csr.signed_by(&ca_cert, &ca_key)?;
        Ok(cert.pem())
    }

    /// Issues a certificate together with a fresh key (for the shared `db` client credentials).
    pub fn issue_with_key(&self, profile: Profile, common_name: &str) -> Result<(String, String)> {
        self.issue(profile, common_name, &[], &[], Duration::days(LEAF_DAYS))
    }

    /// Makes a key and a certificate for `names` (easyrsa's `build-server-full`): the names
    /// checked against `allowed` as for a CSR. Returns (certificate, key) PEMs.
    pub fn issue(
        &self,
        profile: Profile,
        common_name: &str,
        names: &[String],
        allowed: &[String],
        lifetime: Duration,
    ) -> Result<(String, String)> {
        check_names(names, allowed)?;
        let key = KeyPair::generate()?;
        let csr = csr_for(&key, common_name, names)?;
        let cert = self.sign(&csr, profile, common_name, allowed, lifetime)?;
        Ok((cert, key.serialize_pem()))
    }
}

fn requested_names(sans: &[SanType]) -> Vec<String> {
    sans.iter()
        .map(|s| match s {
            SanType::IpAddress(ip) => ip.to_string(),
            SanType::DnsName(d) => d.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The leader's check: every requested name must be one of the requester's addresses
/// (or loopback). Pure.
pub fn check_names(requested: &[String], allowed: &[String]) -> Result<()> {
    for n in requested {
        let loopback = n == "localhost"
            || n.parse::<IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false);
        if !loopback && !allowed.iter().any(|a| a == n) {
            return Err(PkiError::Refused(format!(
                "{n} is not an address of the requesting unit (known: {})",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// A CSR for `key` naming `names` (IP addresses become IP SANs, others DNS SANs).
pub fn csr_for(key: &KeyPair, common_name: &str, names: &[String]) -> Result<String> {
    csr_with(key, common_name, names, &[])
}

/// A CSR as `csr_for`, asking for `profile`'s extended key usages too: a CA that copies a
/// request's extensions (tls-certificates v4 providers do) issues them as asked.
pub fn csr_with_usages(
    key: &KeyPair,
    common_name: &str,
    names: &[String],
    profile: Profile,
) -> Result<String> {
    csr_with(key, common_name, names, &profile.ekus())
}

fn csr_with(
    key: &KeyPair,
    common_name: &str,
    names: &[String],
    ekus: &[ExtendedKeyUsagePurpose],
) -> Result<String> {
    let mut p = CertificateParams::default();
    p.extended_key_usages = ekus.to_vec();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<std::result::Result<_, rcgen::Error>>()?;
    Ok(p.serialize_request(key)?.pem()?)
}

pub use hostkit::fs::{create_private, sha256_hex};

/// Writes `data` as `write_file` does unless the file already holds exactly that.
/// Returns whether it wrote.
pub fn update_file(p: &Path, data: &str, mode: u32) -> Result<bool> {
    hostkit::fs::update_file(p, data, mode).map_err(PkiError::Write)
}

/// Writes a file atomically with exactly the given mode (`hostkit::fs::write_file`).
pub fn write_file(p: &Path, data: &[u8], mode: u32) -> Result<()> {
    hostkit::fs::write_file(p, data, mode).map_err(PkiError::Write)
}

/// Seconds since the epoch at which a PEM certificate expires.
pub fn not_after(cert_pem: &str) -> Result<i64> {
    with_cert(cert_pem, |c| c.validity().not_after.timestamp())
}

/// The SANs a certificate carries (IPs and DNS names).
pub fn cert_names(cert_pem: &str) -> Result<Vec<String>> {
    with_cert(cert_pem, |cert| {
        let mut out = vec![];
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => out.push(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => {
                        if b.len() == 4 {
                            out.push(IpAddr::from([b[0], b[1], b[2], b[3]]).to_string());
                        } else if b.len() == 16 {
                            let mut a = [0u8; 16];
                            a.copy_from_slice(b);
                            out.push(IpAddr::from(a).to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    })
}

fn parse(cert_pem: &str) -> Result<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    Ok(pem.contents)
}

/// Runs `f` on the parsed certificate of a PEM.
fn with_cert<T>(
    cert_pem: &str,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate) -> T,
) -> Result<T> {
    let der = parse(cert_pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Parse(e.to_string()))?;
    Ok(f(&cert))
}

/// Whether `cert_pem` was signed by the CA certificate `ca_pem` (issuer name and signature).
pub fn issued_by(cert_pem: &str, ca_pem: &str) -> Result<bool> {
    let (cert_der, ca_der) = (parse(cert_pem)?, parse(ca_pem)?);
    let bad =
        |e: x509_parser::nom::Err<x509_parser::error::X509Error>| PkiError::Parse(e.to_string());
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).map_err(bad)?;
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).map_err(bad)?;
    Ok(cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok())
}

/// Whether the private key `key_pem` belongs to the certificate `cert_pem`.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> Result<bool> {
    let key = KeyPair::from_pem(key_pem)?;
    with_cert(cert_pem, |c| {
        c.public_key().raw == key.public_key_der().as_slice()
    })
}

/// What a certificate from a provider must be to serve here (M2): valid now, usable for
/// `server` (serverAuth and clientAuth: the server certificate is also the peer one and the
/// charm's own client identity) or as a client (clientAuth), naming every one of `names`
/// (IP addresses or DNS names). The reason when it is not.
pub fn check_leaf(
    cert_pem: &str,
    names: &[String],
    server: bool,
    now: i64,
) -> std::result::Result<(), String> {
    use x509_parser::extensions::GeneralName;
    let checked = with_cert(cert_pem, |c| -> std::result::Result<(), String> {
        let (from, to) = (
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        );
        if now < from {
            return Err("is not valid yet".into());
        }
        if now >= to {
            return Err("has expired".into());
        }
        let eku = c
            .extended_key_usage()
            .ok()
            .flatten()
            .map(|e| e.value.clone());
        let (srv, cli) = eku
            .map(|e| (e.server_auth || e.any, e.client_auth || e.any))
            .unwrap_or((false, false));
        if !cli || (server && !srv) {
            return Err(format!(
                "lacks the {} extended key usage",
                if server {
                    "serverAuth and clientAuth"
                } else {
                    "clientAuth"
                }
            ));
        }
        let sans: Vec<String> = c
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|s| {
                s.value
                    .general_names
                    .iter()
                    .filter_map(|g| match g {
                        GeneralName::DNSName(d) => Some(d.to_string()),
                        GeneralName::IPAddress(b) => match b.len() {
                            4 => Some(
                                std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string(),
                            ),
                            16 => Some(
                                std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?)
                                    .to_string(),
                            ),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let missing: Vec<&String> = names.iter().filter(|n| !sans.contains(n)).collect();
        if !missing.is_empty() {
            return Err(format!(
                "does not name {}",
                missing
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    });
    checked.map_err(|e| format!("cannot be read ({e})"))?
}

/// What a client's certificate must be for etcd to take it (Go's crypto/x509 as etcd asks
/// it): valid now, and usable for client authentication — no extended key usage at all (any
/// use), or one naming clientAuth (or any). The reason when it is not.
pub fn check_client(cert_pem: &str, now: i64) -> std::result::Result<(), String> {
    let checked = with_cert(cert_pem, |c| -> std::result::Result<(), String> {
        if now < c.validity().not_before.timestamp() {
            return Err("is not valid yet".into());
        }
        if now >= c.validity().not_after.timestamp() {
            return Err("has expired".into());
        }
        match c.extended_key_usage() {
            Ok(None) => Ok(()),
            Ok(Some(e)) if e.value.client_auth || e.value.any => Ok(()),
            Ok(Some(_)) => Err("has extended key usages without clientAuth".into()),
            Err(e) => Err(format!("has an unreadable extended key usage ({e})")),
        }
    });
    checked.map_err(|e| format!("cannot be read ({e})"))?
}

/// The CA certificate's path length constraint (None: none, or not a CA).
pub fn path_len(cert_pem: &str) -> Option<u32> {
    with_cert(cert_pem, |c| {
        c.basic_constraints()
            .ok()
            .flatten()
            .and_then(|b| b.value.path_len_constraint)
    })
    .ok()
    .flatten()
}

/// Whether a certificate is a CA's (basicConstraints CA:TRUE).
pub fn is_ca(cert_pem: &str) -> bool {
    with_cert(cert_pem, |c| {
        c.basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca)
    })
    .unwrap_or(false)
}

/// The subject's common name.
pub fn common_name(cert_pem: &str) -> Result<String> {
    with_cert(cert_pem, |cert| {
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or_default()
            .to_string();
        cn
    })
}

fn validity(cert_pem: &str) -> Option<(i64, i64)> {
    with_cert(cert_pem, |c| {
        (
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        )
    })
    .ok()
}

/// Time to renew: less than a third of the lifetime (at most 30 days) is left.
pub fn needs_renewal(cert_pem: &str, now: i64) -> bool {
    match validity(cert_pem) {
        Some((from, to)) => to - now < ((to - from) / 3).min(RENEW_BEFORE_DAYS * 86400),
        None => true,
    }
}

/// Renewal is overdue: less than a tenth of the lifetime is left (or it has expired).
pub fn renewal_overdue(cert_pem: &str, now: i64) -> bool {
    match validity(cert_pem) {
        Some((from, to)) => to - now < (to - from) / 10,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_made_here_signs_leaves_only() {
        let ca = Ca::create("t").unwrap();
        assert!(is_ca(&ca.cert_pem));
        assert_eq!(path_len(&ca.cert_pem), Some(0));
    }

    #[test]
    fn signs_only_the_units_own_names() {
        let ca = Ca::create("test-ca").unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = csr_for(&key, "etcd0", &["10.0.0.5".into(), "127.0.0.1".into()]).unwrap();
        let cert = ca
            .sign(
                &csr,
                Profile::Server,
                "etcd0",
                &["10.0.0.5".into()],
                Duration::days(LEAF_DAYS),
            )
            .unwrap();
        let names = cert_names(&cert).unwrap();
        assert!(
            names.contains(&"10.0.0.5".to_string()) && names.contains(&"127.0.0.1".to_string()),
            "{names:?}"
        );
        assert!(!needs_renewal(
            &cert,
            OffsetDateTime::now_utc().unix_timestamp()
        ));
        // a name that is not the unit's is refused
        let csr = csr_for(&key, "etcd0", &["10.0.0.9".into()]).unwrap();
        let err = ca
            .sign(
                &csr,
                Profile::Peer,
                "etcd0",
                &["10.0.0.5".into()],
                Duration::days(LEAF_DAYS),
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("10.0.0.9 is not an address"),
            "{err}"
        );
    }

    #[test]
    fn renewal_is_due_in_the_last_third_and_overdue_in_the_last_tenth() {
        let ca = Ca::create("ca").unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = csr_for(&key, "etcd0", &["10.0.0.5".into()]).unwrap();
        let cert = ca
            .sign(
                &csr,
                Profile::Server,
                "etcd0",
                &["10.0.0.5".into()],
                Duration::minutes(5),
            )
            .unwrap();
        let (from, to) = validity(&cert).unwrap();
        assert_eq!(to - from, 6 * 60);
        assert!(!needs_renewal(&cert, from + 60));
        assert!(needs_renewal(&cert, to - 60));
        assert!(!renewal_overdue(&cert, to - 60));
        assert!(renewal_overdue(&cert, to - 10));
    }

    #[test]
    fn check_names_allows_loopback_only_beyond_the_list() {
        assert!(check_names(&["127.0.0.1".into(), "localhost".into(), "::1".into()], &[]).is_ok());
        assert!(check_names(&["evil.example".into()], &["10.0.0.1".into()]).is_err());
    }

    #[test]
    fn issued_by_and_key_matches_tell_a_foreign_certificate_apart() {
        let (ca, other) = (Ca::create("a").unwrap(), Ca::create("b").unwrap());
        let names = vec!["10.0.0.5".to_string()];
        let (cert, key) = ca
            .issue(
                Profile::Server,
                "10.0.0.5",
                &names,
                &names,
                Duration::days(1),
            )
            .unwrap();
        assert!(issued_by(&cert, &ca.cert_pem).unwrap());
        assert!(!issued_by(&cert, &other.cert_pem).unwrap());
        assert!(key_matches(&cert, &key).unwrap());
        let (_, other_key) = other.issue_with_key(Profile::Client, "x").unwrap();
        assert!(!key_matches(&cert, &other_key).unwrap());
        assert_eq!(common_name(&cert).unwrap(), "10.0.0.5");
        assert!(issued_by("not a certificate", &ca.cert_pem).is_err());
    }

    #[test]
    fn client_certificates_have_client_auth_only() {
        let ca = Ca::create("ca").unwrap();
        let (cert, key) = ca.issue_with_key(Profile::Client, "client").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let c = pem.parse_x509().unwrap();
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }
}
