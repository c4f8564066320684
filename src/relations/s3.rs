//! `s3-credentials` (interface `s3`): the bucket the off-machine backups go to.
//!
//! The provider (s3-integrator, or any charm of the interface) shares in its application data
//! the fields of charm-relation-interfaces' `s3` spec: `bucket`, `endpoint`, `region`, `path`,
//! `s3-uri-style`, `storage-class`, `tls-ca-chain`, `s3-api-version`, `attributes`, and the
//! credentials either in clear (`access-key`, `secret-key`: v0) or in a Juju secret named by
//! `secret-extra` (v1). This side (the leader) asks for a bucket and for the credentials in a
//! secret, as v1 requirers do; a v0 provider ignores both. Everything the provider shares is
//! checked here, where it enters: a bad field is refused with its name and what to do.

use crate::juju::{self, Bag};
use s3kit::Target;

pub const ENDPOINT: &str = "s3-credentials";

/// The bucket a provider shares, checked.
#[derive(Debug, Clone)]
pub struct Shared {
    pub target: Target,
    /// the providing application
    pub provider: String,
}

/// The leader asks for a bucket named after the application and for the credentials in a
/// Juju secret (v1); providers that choose the bucket themselves ignore the name.
pub fn request(app: &str) -> anyhow::Result<()> {
    let bucket: String = app
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    for rel in juju::relation_ids(ENDPOINT)? {
        let have = juju::relation_get(&rel, app, true)?;
        juju::relation_update_app(
            &rel,
            &have,
            Bag::from([
                ("bucket".to_string(), format!("etcd-{bucket}")),
                (
                    "requested-secrets".to_string(),
                    r#"["access-key", "secret-key"]"#.to_string(),
                ),
                ("lib-version".to_string(), "1.0".to_string()),
            ]),
        )?;
    }
    Ok(())
}

/// What the provider shares: Ok(None) while there is no relation or the provider has not
/// shared its bucket and credentials yet; Err when what it shares is refused (the message
/// names the relation, the provider and the field).
pub fn read() -> anyhow::Result<Result<Option<Shared>, String>> {
    let Some(rel) = juju::relation_ids(ENDPOINT)?.into_iter().next() else {
        return Ok(Ok(None));
    };
    let Some(provider) = juju::relation_list(&rel)?
        .first()
        .and_then(|u| u.split('/').next())
        .map(str::to_string)
    else {
        return Ok(Ok(None));
    };
    let bag = juju::relation_get(&rel, &provider, true)?;
    let secret = match bag.get("secret-extra").filter(|s| !s.is_empty()) {
        Some(id) => Some(juju::secret_get(id).map_err(|e| {
            anyhow::anyhow!(
                "{ENDPOINT} ({provider}): the credentials' secret {id} cannot be read: {e:#}"
            )
        })?),
        None => None,
    };
    Ok(match parse(&bag, secret.as_ref()) {
        Ok(Some(target)) => Ok(Some(Shared {
            target,
            provider,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(format!(
            "{ENDPOINT} ({provider}) is refused: {e}; fix it on the provider's side (e.g. juju config {provider} …)"
        )),
    })
}

/// The provider's fields, checked. Ok(None): the bucket or the credentials are not there yet.
pub fn parse(bag: &Bag, secret: Option<&Bag>) -> Result<Option<Target>, String> {
    let field = |k: &str| bag.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let cred = |k: &str| {
        secret
            .and_then(|s| s.get(k))
            .or_else(|| bag.get(k))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (Some(bucket), Some(access_key), Some(secret_key)) =
        (field("bucket"), cred("access-key"), cred("secret-key"))
    else {
        return Ok(None);
    };
    if !s3kit::valid_bucket_name(bucket) {
        return Err(format!(
            "bucket {:?} is not an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)",
            bounded(bucket)
        ));
    }
    for (name, v) in [("access-key", &access_key), ("secret-key", &secret_key)] {
        if v.len() > 256 || !v.bytes().all(|b| b.is_ascii_graphic()) {
            // The value itself is never repeated: it is a credential.
            return Err(format!(
                "{name} is not printable ASCII of at most 256 characters"
            ));
        }
    }
    let region = field("region").unwrap_or("us-east-1");
    if region.len() > 64
        || !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("region {:?} is not a region name", bounded(region)));
    }
    let endpoint = match field("endpoint") {
        Some(e) => check_endpoint(e)?,
        None => format!("https://s3.{region}.amazonaws.com"),
    };
    let path_style = match field("s3-uri-style") {
        None => field("endpoint").is_some(),
        Some("path") => true,
        Some("host") => false,
        Some(other) => {
            return Err(format!(
                "s3-uri-style {:?} is neither path nor host",
                bounded(other)
            ))
        }
    };
    match field("s3-api-version") {
        None | Some("4") => {}
        Some("2") => return Err("s3-api-version 2 (signature v2) is not supported: use 4".into()),
        Some(other) => {
            return Err(format!(
                "s3-api-version {:?} is neither 2 nor 4",
                bounded(other)
            ))
        }
    }
    Ok(Some(Target {
        endpoint,
        region: region.to_string(),
        bucket: bucket.to_string(),
        path_style,
        prefix: check_path(field("path").unwrap_or(""))?,
        access_key,
        secret_key,
        storage_class: check_storage_class(field("storage-class"))?,
        ca_pems: ca_chain(field("tls-ca-chain"))?,
    }))
}

/// At most 80 characters of a refused value, control characters dropped.
fn bounded(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).take(80).collect()
}

fn check_endpoint(e: &str) -> Result<String, String> {
    let url = url::Url::parse(e)
        .map_err(|err| format!("endpoint {:?} is not a URL ({err})", bounded(e)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "endpoint {:?} is not an http:// or https:// URL with a host",
            bounded(e)
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "endpoint carries credentials in its URL: share them as access-key and secret-key"
                .into(),
        );
    }
    Ok(e.trim_end_matches('/').to_string())
}

fn check_path(p: &str) -> Result<String, String> {
    let p = p.trim_matches('/');
    if p.len() > 512
        || !p.bytes().all(|b| b.is_ascii_graphic())
        || p.split('/').any(|s| s.is_empty() || s == "." || s == "..") && !p.is_empty()
    {
        return Err(format!(
            "path {:?} is not a folder of printable ASCII without empty, . or .. parts",
            bounded(p)
        ));
    }
    Ok(p.to_string())
}

fn check_storage_class(c: Option<&str>) -> Result<Option<String>, String> {
    match c {
        None => Ok(None),
        Some(c) if c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            Ok(Some(c.to_string()))
        }
        Some(c) => Err(format!(
            "storage-class {:?} is not a storage class name",
            bounded(c)
        )),
    }
}

/// `tls-ca-chain`: a JSON list of certificates (or one string), each in PEM or base64 of PEM
/// (the spec says base64; s3-integrator shares PEM).
fn ca_chain(v: Option<&str>) -> Result<Vec<String>, String> {
    let Some(v) = v else { return Ok(vec![]) };
    let items: Vec<String> = if v.starts_with('[') {
        serde_json::from_str(v)
            .map_err(|e| format!("tls-ca-chain is not a JSON list of strings ({e})"))?
    } else {
        vec![v.to_string()]
    };
    items
        .iter()
        .map(|item| {
            let item = item.trim();
            let pem = if item.starts_with("-----BEGIN") {
                item.to_string()
            } else {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(item.replace(['\n', '\r'], ""))
                    .map_err(|e| {
                        format!("tls-ca-chain holds an item that is neither PEM nor base64 ({e})")
                    })?;
                String::from_utf8(bytes)
                    .map_err(|_| "tls-ca-chain holds an item that is not PEM text".to_string())?
            };
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err("tls-ca-chain holds an item that is not a PEM certificate".into());
            }
            Ok(pem)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bag(kv: &[(&str, &str)]) -> Bag {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const V0: &[(&str, &str)] = &[
        ("bucket", "etcd-backups"),
        ("access-key", "AK"),
        ("secret-key", "SK"),
        ("endpoint", "http://10.1.2.3:8333/"),
        ("path", "/prod/etcd/"),
    ];

    #[test]
    fn a_v0_provider_shares_everything_in_its_databag() {
        let t = parse(&bag(V0), None).unwrap().unwrap();
        assert_eq!(t.endpoint, "http://10.1.2.3:8333");
        assert_eq!(
            (t.prefix.as_str(), t.path_style, t.region.as_str()),
            ("prod/etcd", true, "us-east-1")
        );
        assert_eq!((t.access_key.as_str(), t.secret_key.as_str()), ("AK", "SK"));
    }

    #[test]
    fn a_v1_provider_shares_the_credentials_in_a_secret() {
        let b = bag(&[("bucket", "etcd-backups"), ("secret-extra", "secret:abc")]);
        assert!(
            parse(&b, None).unwrap().is_none(),
            "no credentials yet: waiting"
        );
        let s = bag(&[("access-key", "AK1"), ("secret-key", "SK1")]);
        let t = parse(&b, Some(&s)).unwrap().unwrap();
        assert_eq!(
            (t.access_key.as_str(), t.secret_key.as_str()),
            ("AK1", "SK1")
        );
        assert_eq!(t.endpoint, "https://s3.us-east-1.amazonaws.com");
        assert!(
            !t.path_style,
            "AWS's own endpoint is addressed by virtual host"
        );
    }

    #[test]
    fn bad_fields_are_refused_by_name_and_a_secret_is_never_repeated() {
        for (k, v, says) in [
            ("bucket", "Bad_Bucket", "bucket"),
            ("endpoint", "ftp://x", "endpoint"),
            ("endpoint", "http://user:pw@x", "credentials in its URL"),
            ("s3-uri-style", "virtual", "s3-uri-style"),
            ("s3-api-version", "2", "signature v2"),
            ("path", "a/../b", "path"),
            ("storage-class", "GLACIER; rm", "storage-class"),
            (
                "tls-ca-chain",
                "[\"bm90IGEgY2VydA==\"]",
                "not a PEM certificate",
            ),
            ("secret-key", "sécret", "secret-key"),
        ] {
            let mut b = bag(V0);
            b.insert(k.into(), v.into());
            let e = parse(&b, None).unwrap_err();
            assert!(e.contains(says), "{k}={v}: {e}");
            if k == "secret-key" {
                assert!(!e.contains(v));
            }
        }
    }

    #[test]
    fn a_ca_chain_comes_as_pem_or_base64_in_a_list_or_alone() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(pem);
        for v in [
            serde_json::to_string(&[pem]).unwrap(),
            serde_json::to_string(&[&b64, &b64]).unwrap(),
            b64.clone(),
        ] {
            let chain = ca_chain(Some(&v)).unwrap();
            assert!(!chain.is_empty() && chain.iter().all(|c| c == pem), "{v}");
        }
    }
}
