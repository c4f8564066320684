//! The `copy-from` action: every key under a prefix from another etcd cluster into this one,
//! as a storage system moving to an external etcd needs (Trident's `etcd-copy`). The source's
//! client credentials come as the `copy-credentials` resource (the source's
//! `package-client-credentials` archive). The source is read at one revision, page by page;
//! nothing is written before the first page was read (wrong credentials fail first), and
//! nothing under a prefix this cluster already uses unless `overwrite=true`. v2 keys (a 3.4
//! or 3.5 source with the v2 API) become v3 keys of the same path. At the end the copy is read
//! back and its count and digest compared with the source's.

use crate::actions::support::{local, param_bool, param_str, refuse, Results};
use crate::juju;
use anyhow::{anyhow, Context as _, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use etcdkit::client::{Client, Tls};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// Keys asked for per page.
const PAGE: usize = 1000;
/// A write transaction's limits (etcd's default `max-txn-ops` is 128, its request size 1.5 MiB).
const TXN_OPS: usize = 100;
const TXN_BYTES: usize = 1 << 20;

/// Count and digest of key/value pairs in key order (each length-prefixed, so no two sets
/// of pairs hash alike).
#[derive(Default)]
struct Tally {
    count: u64,
    sha: Sha256,
}

impl Tally {
    fn add(&mut self, k: &[u8], v: &[u8]) {
        self.count += 1;
        self.sha.update((k.len() as u64).to_be_bytes());
        self.sha.update(k);
        self.sha.update((v.len() as u64).to_be_bytes());
        self.sha.update(v);
    }
    fn digest(self) -> (u64, String) {
        (self.count, format!("{:x}", self.sha.finalize()))
    }
}

use etcdkit::api::prefix_end as range_end;

/// `parse_endpoints` for the property tests.
#[cfg(test)]
pub(crate) fn parse_endpoints_for_tests(raw: &str) -> std::result::Result<Vec<String>, String> {
    parse_endpoints(raw)
}

/// Checks the `endpoints` param: https URLs of the source's members, nothing else.
fn parse_endpoints(raw: &str) -> std::result::Result<Vec<String>, String> {
    let eps: Vec<String> = raw
        .split(',')
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if eps.is_empty() {
        return Err("endpoints is required: the source cluster's client URLs, comma-separated (https://10.0.0.5:2379,...)".into());
    }
    for e in &eps {
        let ok = reqwest::Url::parse(e).is_ok_and(|u| {
            u.scheme() == "https"
                && u.host_str().is_some()
                && u.path() == "/"
                && u.query().is_none()
                && u.username().is_empty()
        });
        if !ok {
            return Err(format!(
                "endpoints: {e:?} is not an https URL of an etcd member (https://host:2379)"
            ));
        }
    }
    Ok(eps)
}

/// The source's client credentials, from the `copy-credentials` resource.
fn source_tls() -> Result<Tls> {
    let Some(path) = juju::resource_get("copy-credentials")
        .context("cannot tell whether copy-credentials is attached")?
    else {
        return refuse(
            "attach the source cluster's client credentials first: juju attach-resource <app> \
             copy-credentials=./etcd_credentials.tar.gz (the source's package-client-credentials \
             action makes it)",
        );
    };
    let dir = tempfile::Builder::new()
        .prefix(".copy-credentials-")
        .tempdir_in("/var/lib/etcd-charm")?;
    if let Err(e) = etcdkit::install::unpack_safely(std::path::Path::new(&path), dir.path()) {
        return refuse(format!(
            "copy-credentials is not a credentials archive: {e}"
        ));
    }
    // ca.crt, client.crt and client.key, at the top or in one directory (etcd_credentials/).
    let mut found = None;
    for d in std::iter::once(dir.path().to_path_buf()).chain(
        std::fs::read_dir(dir.path())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir()),
    ) {
        if ["ca.crt", "client.crt", "client.key"]
            .iter()
            .all(|f| d.join(f).is_file())
        {
            found = Some(d);
            break;
        }
    }
    let Some(d) = found else {
        return refuse(
            "copy-credentials holds no ca.crt, client.crt and client.key: attach the source's \
             etcd_credentials.tar.gz",
        );
    };
    Ok(Tls::from_dir(
        &d.display().to_string(),
        "client.crt",
        "client.key",
    )?)
}

type Kvs = Vec<(Vec<u8>, Vec<u8>)>;

/// Up to `limit` keys of [`start`, `end`) at `revision` (0: now): the revision read, the
/// pairs, whether more follow.
fn range_page(
    client: &Client,
    ep: &str,
    start: &[u8],
    end: &[u8],
    revision: u64,
    limit: usize,
) -> Result<(u64, Kvs, bool)> {
    let mut body = json!({
        "key": B64.encode(start),
        "range_end": B64.encode(end),
        "limit": limit.to_string(),
    });
    if revision > 0 {
        body["revision"] = json!(revision.to_string());
    }
    let v = client.post(ep, "/v3/kv/range", body)?;
    let rev = v["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| anyhow!("{ep} answered a range without a revision"))?;
    let mut kvs = vec![];
    for kv in v["kvs"].as_array().into_iter().flatten() {
        let dec = |f: &str| -> Result<Vec<u8>> { Ok(B64.decode(kv[f].as_str().unwrap_or(""))?) };
        kvs.push((dec("key")?, dec("value")?));
    }
    Ok((rev, kvs, v["more"].as_bool().unwrap_or(false)))
}

/// Every key of [`start`, `end`), page by page, all pages at the first one's revision (a
/// consistent read even while the cluster is written); `each` gets each page. Returns that
/// revision.
fn each_page(
    client: &Client,
    ep: &str,
    start: &[u8],
    end: &[u8],
    each: &mut dyn FnMut(&Kvs) -> Result<()>,
) -> Result<u64> {
    let (revision, mut page, mut more) = range_page(client, ep, start, end, 0, PAGE)?;
    loop {
        each(&page)?;
        let Some((last, _)) = page.last() else { break };
        if !more {
            break;
        }
        let mut next = last.clone();
        next.push(0);
        (_, page, more) = range_page(client, ep, &next, end, revision, PAGE)?;
    }
    Ok(revision)
}

/// The v2 API's path for the tree under `prefix`, each segment percent-encoded: a `#` or
/// `?` in the prefix is part of a key, never a fragment or a query that changes the request
/// (it once read another tree).
fn v2_url_path(prefix: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    let path = percent_encoding::utf8_percent_encode(prefix, SEGMENT);
    format!("/v2/keys{path}?recursive=true&sorted=true")
}

/// Every v2 key under `prefix` (leaves only; directories are implied by v3 paths).
fn v2_keys(tls: &Tls, ep: &str, prefix: &str) -> Result<Kvs> {
    let client = Client::new(tls, Duration::from_secs(60))?;
    let tree = client.get_json(ep, &v2_url_path(prefix))?;
    let mut out = vec![];
    fn walk(n: &Value, out: &mut Kvs) {
        if n["dir"].as_bool().unwrap_or(false) {
            for c in n["nodes"].as_array().into_iter().flatten() {
                walk(c, out);
            }
        } else if let Some(k) = n["key"].as_str() {
            out.push((
                k.as_bytes().to_vec(),
                n["value"].as_str().unwrap_or("").as_bytes().to_vec(),
            ));
        }
    }
    walk(&tree["node"], &mut out);
    out.sort();
    Ok(out)
}

/// Writes `kvs` into this cluster in transactions within etcd's limits.
fn put_all(client: &Client, ep: &str, kvs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    let mut ops = vec![];
    let mut bytes = 0;
    let flush = |ops: &mut Vec<Value>| -> Result<()> {
        if !ops.is_empty() {
            client.post(ep, "/v3/kv/txn", json!({ "success": std::mem::take(ops) }))?;
        }
        Ok(())
    };
    for (k, v) in kvs {
        if ops.len() == TXN_OPS || (bytes + k.len() + v.len() > TXN_BYTES && !ops.is_empty()) {
            flush(&mut ops)?;
            bytes = 0;
        }
        bytes += k.len() + v.len();
        ops.push(json!({"request_put": {"key": B64.encode(k), "value": B64.encode(v)}}));
    }
    flush(&mut ops)
}

/// What the operator asked for, validated.
struct Asked {
    endpoints: Vec<String>,
    /// "v3" or "v2"
    keys: String,
    prefix: String,
    dry_run: bool,
    overwrite: bool,
}

fn asked(params: &BTreeMap<String, Value>) -> Result<Asked> {
    let endpoints = match parse_endpoints(param_str(params, "endpoints", "")) {
        Ok(e) => e,
        Err(msg) => return refuse(msg),
    };
    let keys = param_str(params, "keys-version", "v3");
    if keys != "v3" && keys != "v2" {
        return refuse(format!("keys-version {keys:?} is not valid: use v3 or v2"));
    }
    let prefix = param_str(params, "prefix", if keys == "v2" { "/" } else { "" }).to_string();
    if keys == "v2" && !prefix.starts_with('/') {
        return refuse(format!(
            "prefix {prefix:?}: v2 keys are paths: start it with /"
        ));
    }
    Ok(Asked {
        endpoints,
        keys: keys.to_string(),
        prefix,
        dry_run: param_bool(params, "dry-run", false),
        overwrite: param_bool(params, "overwrite", false),
    })
}

/// The first source member that answers; wrong credentials fail here, before any write.
fn first_answering(source: &Client, endpoints: &[String]) -> Result<String> {
    let mut first_error = None;
    for ep in endpoints {
        match source.status(ep) {
            Ok(_) => return Ok(ep.clone()),
            Err(e) => {
                first_error.get_or_insert(format!("{ep}: {e}"));
            }
        }
    }
    refuse(format!(
        "no source endpoint answers with copy-credentials ({}): check the endpoints and that \
         the credentials are the source cluster's",
        first_error.unwrap_or_default()
    ))
}

pub fn copy_from(params: &BTreeMap<String, Value>) -> Result<Results> {
    let a = asked(params)?;
    let tls = source_tls()?;
    let source = Client::new(&tls, Duration::from_secs(30))?;
    let (dest, dest_ep, _) = local()?;
    let start = a.prefix.as_bytes().to_vec();
    let start = if start.is_empty() { vec![0] } else { start };
    let end = range_end(a.prefix.as_bytes());
    let src = first_answering(&source, &a.endpoints)?;
    if !a.dry_run && !a.overwrite {
        let (_, existing, _) = range_page(&dest, &dest_ep, &start, &end, 0, 1)?;
        if let Some((k, _)) = existing.first() {
            return refuse(format!(
                "this cluster already has keys under {:?} (e.g. {:?}): copy into an \
                 empty prefix, or pass overwrite=true to replace them",
                a.prefix,
                String::from_utf8_lossy(k)
            ));
        }
    }
    juju::action_log(&format!(
        "copying {} keys under {:?} from {src}{}",
        a.keys,
        a.prefix,
        if a.dry_run { " (dry run)" } else { "" }
    ));
    // Each page read from the source: counted, digested and (unless a dry run) written here.
    let mut source_tally = Tally::default();
    let mut take = |page: &Kvs| -> Result<()> {
        for (k, v) in page {
            source_tally.add(k, v);
        }
        if !a.dry_run {
            put_all(&dest, &dest_ep, page)?;
        }
        if source_tally.count as usize % (10 * PAGE) < page.len() {
            juju::action_log(&format!("{} keys so far", source_tally.count));
        }
        Ok(())
    };
    let revision = if a.keys == "v2" {
        let kvs = v2_keys(&tls, &src, &a.prefix)?;
        juju::action_log(&format!("{} v2 keys read", kvs.len()));
        take(&kvs)?;
        0
    } else {
        each_page(&source, &src, &start, &end, &mut take)?
    };
    let (count, digest) = source_tally.digest();
    let mut results: Results = vec![
        ("source.endpoint".into(), src.clone()),
        ("source.count".into(), count.to_string()),
        ("source.digest".into(), digest.clone()),
    ];
    if revision > 0 {
        results.push(("source.revision".into(), revision.to_string()));
    }
    if a.dry_run {
        results.push((
            "output".into(),
            format!(
                "dry run: {count} keys under {:?} would be copied; nothing written",
                a.prefix
            ),
        ));
        return Ok(results);
    }
    results.extend(verify_copy(
        &dest,
        &dest_ep,
        (&start, &end),
        &a.prefix,
        (count, &digest),
    )?);
    Ok(results)
}

/// Reads back what this cluster now holds under the prefix: the same count and digest as
/// the source's, or the action fails saying so.
fn verify_copy(
    dest: &Client,
    dest_ep: &str,
    (start, end): (&[u8], &[u8]),
    prefix: &str,
    (count, digest): (u64, &str),
) -> Result<Results> {
    let mut copied = Tally::default();
    each_page(dest, dest_ep, start, end, &mut |page| {
        for (k, v) in page {
            copied.add(k, v);
        }
        Ok(())
    })?;
    let (copied_count, copied_digest) = copied.digest();
    if copied_count != count || copied_digest != digest {
        return refuse(format!(
            "the copy does not match the source: {copied_count} keys (digest {copied_digest}) \
             here, {count} (digest {digest}) there; were keys under {prefix:?} written here \
             meanwhile?"
        ));
    }
    Ok(vec![
        ("copied.count".into(), copied_count.to_string()),
        ("copied.digest".into(), copied_digest),
        (
            "output".into(),
            format!("copied {count} keys under {prefix:?}; count and digest match the source"),
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_v2_prefix_is_one_path_whatever_it_holds() {
        assert_eq!(
            super::v2_url_path("/storageos/a#b?c d"),
            "/v2/keys/storageos/a%23b%3Fc%20d?recursive=true&sorted=true"
        );
        assert_eq!(
            super::v2_url_path("/"),
            "/v2/keys/?recursive=true&sorted=true"
        );
    }

    use super::*;

    #[test]
    fn a_prefix_ends_where_etcd_says() {
        assert_eq!(range_end(b"/trident/"), b"/trident0".to_vec());
        assert_eq!(range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(range_end(b""), vec![0]);
    }

    #[test]
    fn endpoints_are_https_member_urls() {
        assert_eq!(
            parse_endpoints("https://10.0.0.5:2379, https://10.0.0.6:2379/").unwrap(),
            ["https://10.0.0.5:2379", "https://10.0.0.6:2379"]
        );
        for bad in [
            "",
            "http://10.0.0.5:2379",
            "https://10.0.0.5:2379/v3",
            "10.0.0.5:2379",
            "https://u:p@h:1",
        ] {
            assert!(parse_endpoints(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_digest_depends_on_where_keys_end() {
        let mut a = Tally::default();
        a.add(b"ab", b"c");
        let mut b = Tally::default();
        b.add(b"a", b"bc");
        assert_ne!(a.digest().1, b.digest().1);
    }
}
