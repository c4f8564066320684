//! The requests: each signed for an hour, sent with a bounded wait for every read and write
//! (not for the whole transfer: a large object on a slow link is not cut off), retried with
//! backoff while the cause is transient.

use crate::error::{from_answer, from_transport, scrub, Error};
use crate::target::{Target, PART_SIZE};
use hostkit::fs::hex;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use sha2::Digest;
use std::io::{Read, Write};
use std::time::Duration;

const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// The longest wait for one read or write of a request (reqwest's blocking timeout).
const IO_WAIT: Duration = Duration::from_secs(120);

/// A bucket (and the prefix inside it) the charm's objects live in.
pub struct Store {
    bucket: Bucket,
    creds: Credentials,
    http: reqwest::blocking::Client,
    prefix: String,
    storage_class: Option<String>,
    endpoint: String,
    /// tries of one request while its failure is transient
    attempts: u32,
    /// the first wait between tries (doubled each time)
    backoff: Duration,
}

/// An object written or read: its size and sha256 (hex), counted as the bytes passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Transferred {
    pub size: u64,
    pub sha256: String,
}

/// An object under the store's prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// its key, relative to the prefix
    pub name: String,
    pub size: u64,
}

impl Store {
    pub fn new(t: &Target) -> Result<Store, Error> {
        let endpoint = url::Url::parse(&t.endpoint).map_err(|e| {
            Error::Other(format!(
                "the S3 endpoint {:?} is not a URL: {e}",
                t.endpoint
            ))
        })?;
        let style = if t.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(endpoint, style, t.bucket.clone(), t.region.clone()).map_err(|e| {
            Error::Other(format!(
                "the bucket {:?} at {} cannot be addressed ({e:?}); with an IP address as endpoint, \
                 path-style URLs are needed (s3-uri-style: path)",
                t.bucket, t.endpoint
            ))
        })?;
        let mut http = reqwest::blocking::Client::builder()
            .timeout(IO_WAIT)
            .connect_timeout(Duration::from_secs(10))
            .no_proxy();
        for pem in &t.ca_pems {
            let cert = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| {
                Error::Other(format!(
                    "a certificate of the S3 endpoint's CA chain does not parse: {e}"
                ))
            })?;
            http = http.add_root_certificate(cert);
        }
        let http = http
            .build()
            .map_err(|e| Error::Other(format!("cannot build the S3 client: {e}")))?;
        Ok(Store {
            bucket,
            creds: Credentials::new(t.access_key.clone(), t.secret_key.clone()),
            http,
            prefix: t.prefix.trim_matches('/').to_string(),
            storage_class: t.storage_class.clone().filter(|s| !s.is_empty()),
            endpoint: t.endpoint.clone(),
            attempts: 4,
            backoff: Duration::from_secs(1),
        })
    }

    /// Fewer tries, or shorter waits between them (tests, and callers with a deadline).
    pub fn with_retries(mut self, attempts: u32, backoff: Duration) -> Store {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    /// The object's key in the bucket.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// `op` once per try while it fails for a transient cause, waiting twice as long each time.
    fn retried<T>(&self, mut op: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
        let mut wait = self.backoff;
        let mut tries = 1;
        loop {
            match op() {
                Err(e) if e.transient() && tries < self.attempts => {
                    std::thread::sleep(wait);
                    wait *= 2;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends one request and returns its answer when successful (2xx), the error it means
    /// otherwise.
    fn send(
        &self,
        op: &str,
        req: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, Error> {
        let resp = req.send().map_err(|e| from_transport(e, &self.endpoint))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let mut body = String::new();
        // The error body is only read to name the cause: a part of it is enough, and one
        // that cannot be read leaves the status code to say it.
        let _ = resp.take(16 << 10).read_to_string(&mut body);
        Err(from_answer(
            op,
            status,
            &body,
            self.bucket.name(),
            &self.endpoint,
        ))
    }

    /// Whether the bucket is there and the credentials may list it.
    pub fn check(&self) -> Result<(), Error> {
        let mut list = self.bucket.list_objects_v2(Some(&self.creds));
        list.with_max_keys(1);
        list.with_prefix(self.key(""));
        let url = list.sign(SIGNED_FOR);
        self.retried(|| {
            self.send("listing the bucket", self.http.get(url.clone()))
                .map(drop)
        })
    }

    /// Uploads everything `src` yields as `name`, a part at a time: the object exists only
    /// once every part is in (an upload that fails part-way is aborted and leaves no object).
    pub fn upload(&self, name: &str, src: &mut dyn Read) -> Result<Transferred, Error> {
        let key = self.key(name);
        let mut sha = sha2::Sha256::new();
        let first = read_part(src, &mut sha)?;
        if first.len() < PART_SIZE {
            let size = first.len() as u64;
            self.put(&key, first)?;
            return Ok(Transferred {
                size,
                sha256: hex(sha.finalize().as_slice()),
            });
        }
        let mut create = self.bucket.create_multipart_upload(Some(&self.creds), &key);
        if let Some(class) = &self.storage_class {
            create
                .headers_mut()
                .insert("x-amz-storage-class", class.clone());
        }
        let url = create.sign(SIGNED_FOR);
        let body = self.retried(|| {
            let mut req = self.http.post(url.clone());
            if let Some(class) = &self.storage_class {
                req = req.header("x-amz-storage-class", class);
            }
            text(self.send("starting the upload", req)?)
        })?;
        let created =
            rusty_s3::actions::CreateMultipartUpload::parse_response(&body).map_err(|e| {
                Error::Other(format!(
                    "the answer to starting an upload does not parse: {e}"
                ))
            })?;
        let id = created.upload_id().to_string();
        let parts = self.upload_parts(&key, &id, first, src, &mut sha);
        let done = parts.and_then(|(etags, size)| self.complete(&key, &id, etags).map(|_| size));
        match done {
            Ok(size) => Ok(Transferred {
                size,
                sha256: hex(sha.finalize().as_slice()),
            }),
            Err(e) => {
                // The upload's parts are dropped; if this fails too the bucket's own cleanup
                // of incomplete uploads takes them. Either way no object was made.
                let _ = self.abort(&key, &id);
                Err(e)
            }
        }
    }

    fn upload_parts(
        &self,
        key: &str,
        id: &str,
        first: Vec<u8>,
        src: &mut dyn Read,
        sha: &mut sha2::Sha256,
    ) -> Result<(Vec<String>, u64), Error> {
        let mut etags = vec![];
        let mut size = 0u64;
        let mut part = first;
        loop {
            let number = u16::try_from(etags.len() + 1)
                .ok()
                .filter(|n| *n <= 10_000)
                .ok_or_else(|| Error::Other("the object is too large for 10,000 parts".into()))?;
            size += part.len() as u64;
            let url = self
                .bucket
                .upload_part(Some(&self.creds), key, number, id)
                .sign(SIGNED_FOR);
            let body = bytes::Bytes::from(part);
            let resp = self.retried(|| {
                self.send(
                    "uploading a part",
                    self.http.put(url.clone()).body(body.clone()),
                )
            })?;
            let etag = resp
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::Other(format!("part {number} was stored without an ETag")))?;
            etags.push(etag.to_string());
            part = read_part(src, sha)?;
            if part.is_empty() {
                return Ok((etags, size));
            }
        }
    }

    fn complete(&self, key: &str, id: &str, etags: Vec<String>) -> Result<(), Error> {
        let action = self.bucket.complete_multipart_upload(
            Some(&self.creds),
            key,
            id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let answer = self.retried(|| {
            text(self.send(
                "completing the upload",
                self.http.post(url.clone()).body(body.clone()),
            )?)
        })?;
        // S3 may answer 200 and still fail the completion, in the body.
        if answer.contains("<Error>") {
            return Err(from_answer(
                "completing the upload",
                500,
                &answer,
                self.bucket.name(),
                &self.endpoint,
            ));
        }
        Ok(())
    }

    fn abort(&self, key: &str, id: &str) -> Result<(), Error> {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.creds), key, id)
            .sign(SIGNED_FOR);
        self.send("aborting the upload", self.http.delete(url))
            .map(drop)
    }

    fn put(&self, key: &str, data: Vec<u8>) -> Result<(), Error> {
        let mut action = self.bucket.put_object(Some(&self.creds), key);
        if let Some(class) = &self.storage_class {
            action
                .headers_mut()
                .insert("x-amz-storage-class", class.clone());
        }
        let url = action.sign(SIGNED_FOR);
        let body = bytes::Bytes::from(data);
        self.retried(|| {
            let mut req = self.http.put(url.clone()).body(body.clone());
            if let Some(class) = &self.storage_class {
                req = req.header("x-amz-storage-class", class);
            }
            self.send("uploading", req).map(drop)
        })
    }

    /// Writes a small object (a record) in one request.
    pub fn put_small(&self, name: &str, data: &[u8]) -> Result<(), Error> {
        self.put(&self.key(name), data.to_vec())
    }

    /// The object's size, or None when there is no such object.
    pub fn size_of(&self, name: &str) -> Result<Option<u64>, Error> {
        let url = self
            .bucket
            .head_object(Some(&self.creds), &self.key(name))
            .sign(SIGNED_FOR);
        let resp = self.retried(|| {
            let resp = self
                .http
                .head(url.clone())
                .send()
                .map_err(|e| from_transport(e, &self.endpoint))?;
            match resp.status().as_u16() {
                404 => Ok(None),
                s if (200..300).contains(&s) => Ok(Some(resp)),
                s => Err(from_answer(
                    "reading an object's size",
                    s,
                    "",
                    self.bucket.name(),
                    &self.endpoint,
                )),
            }
        })?;
        resp.map(|r| {
            r.headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::Other("the object's size is not in its answer".into()))
        })
        .transpose()
    }

    /// Streams the object into `out`, its sha256 counted as it passes; the size the server
    /// announced must arrive.
    pub fn download(&self, name: &str, out: &mut dyn Write) -> Result<Transferred, Error> {
        let url = self
            .bucket
            .get_object(Some(&self.creds), &self.key(name))
            .sign(SIGNED_FOR);
        let mut resp =
            self.retried(|| self.send(&format!("reading {name}"), self.http.get(url.clone())))?;
        let announced = resp.content_length();
        let mut sha = sha2::Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = resp.read(&mut buf).map_err(|e| Error::Unreachable {
                endpoint: self.endpoint.clone(),
                why: scrub(&format!("reading {name} broke off after {size} bytes: {e}")),
            })?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| Error::Other(format!("writing {name} where it is read to: {e}")))?;
            size += n as u64;
        }
        if announced.is_some_and(|a| a != size) {
            return Err(Error::Other(format!(
                "{name}: {size} bytes arrived of the {} announced",
                announced.unwrap_or_default()
            )));
        }
        Ok(Transferred {
            size,
            sha256: hex(sha.finalize().as_slice()),
        })
    }

    /// A small object's bytes (at most `limit`), or None when there is no such object.
    pub fn get_small(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, Error> {
        let url = self
            .bucket
            .get_object(Some(&self.creds), &self.key(name))
            .sign(SIGNED_FOR);
        let resp = self.retried(|| {
            match self.send(&format!("reading {name}"), self.http.get(url.clone())) {
                Err(Error::Server { status: 404, .. }) => Ok(None),
                other => other.map(Some),
            }
        })?;
        let Some(resp) = resp else { return Ok(None) };
        let mut data = vec![];
        resp.take(limit + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::Unreachable {
                endpoint: self.endpoint.clone(),
                why: scrub(&format!("reading {name}: {e}")),
            })?;
        if data.len() as u64 > limit {
            return Err(Error::Other(format!("{name} is larger than {limit} bytes")));
        }
        Ok(Some(data))
    }

    /// Every object whose name (relative to the prefix) begins with `start`.
    pub fn list(&self, start: &str) -> Result<Vec<Listed>, Error> {
        let key_prefix = self.key(start);
        let cut = self.key("").len();
        let mut found = vec![];
        let mut token: Option<String> = None;
        loop {
            let mut list = self.bucket.list_objects_v2(Some(&self.creds));
            list.with_prefix(key_prefix.clone());
            if let Some(t) = &token {
                list.with_continuation_token(t.clone());
            }
            let url = list.sign(SIGNED_FOR);
            let body = self
                .retried(|| text(self.send("listing the bucket", self.http.get(url.clone()))?))?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&body)
                .map_err(|e| Error::Other(format!("the bucket's listing does not parse: {e}")))?;
            found.extend(page.contents.into_iter().filter_map(|c| {
                Some(Listed {
                    name: c.key.get(cut..)?.to_string(),
                    size: c.size.unwrap_or(0),
                })
            }));
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => return Ok(found),
            }
        }
    }

    /// Deletes the object (there being none is no error: S3 answers the same).
    pub fn delete(&self, name: &str) -> Result<(), Error> {
        let url = self
            .bucket
            .delete_object(Some(&self.creds), &self.key(name))
            .sign(SIGNED_FOR);
        self.retried(|| {
            self.send(&format!("deleting {name}"), self.http.delete(url.clone()))
                .map(drop)
        })
    }
}

/// Up to one part's worth of `src`, hashed (shorter only at the end).
fn read_part(src: &mut dyn Read, sha: &mut sha2::Sha256) -> Result<Vec<u8>, Error> {
    let mut part = Vec::with_capacity(PART_SIZE);
    src.take(PART_SIZE as u64)
        .read_to_end(&mut part)
        .map_err(|e| Error::Other(format!("reading what is uploaded: {e:#}")))?;
    sha.update(&part);
    Ok(part)
}

fn text(resp: reqwest::blocking::Response) -> Result<String, Error> {
    let mut s = String::new();
    resp.take(4 << 20)
        .read_to_string(&mut s)
        .map_err(|e| Error::Other(scrub(&format!("reading the S3 answer: {e}"))))?;
    Ok(s)
}
