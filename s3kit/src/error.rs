//! What went wrong talking to the bucket, in the terms an operator can act on.

/// An S3 request that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the S3 endpoint {endpoint} cannot be reached: {why}")]
    Unreachable { endpoint: String, why: String },
    #[error("the S3 endpoint {endpoint}'s TLS certificate is not trusted: {why}")]
    Untrusted { endpoint: String, why: String },
    #[error("the S3 credentials are refused ({code}: {message})")]
    Denied { code: String, message: String },
    #[error("the bucket {bucket:?} does not exist at {endpoint}")]
    NoBucket { bucket: String, endpoint: String },
    #[error("{op}: HTTP {status} {code}: {message}")]
    Server {
        op: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Worth another try: the network, a server error, throttling. Refused credentials, a
    /// missing bucket or an untrusted certificate stay so.
    pub fn transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Server { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

    /// A short name of the cause, for a status line: `unreachable`, `untrusted`,
    /// `denied`, `no-bucket`, `server`, `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Unreachable { .. } => "unreachable",
            Error::Untrusted { .. } => "untrusted",
            Error::Denied { .. } => "denied",
            Error::NoBucket { .. } => "no-bucket",
            Error::Server { .. } => "server",
            Error::Other(_) => "other",
        }
    }
}

/// The text of one XML element of an S3 error body (`<Code>…</Code>`), bounded.
pub(crate) fn xml_field(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&close)? + start;
    Some(body[start..end].chars().take(300).collect())
}

/// The error an S3 answer of `status` with `body` means for `op`.
pub(crate) fn from_answer(
    op: &str,
    status: u16,
    body: &str,
    bucket: &str,
    endpoint: &str,
) -> Error {
    let code = xml_field(body, "Code").unwrap_or_default();
    let message = xml_field(body, "Message")
        .unwrap_or_else(|| body.chars().filter(|c| !c.is_control()).take(200).collect());
    match code.as_str() {
        "NoSuchBucket" => Error::NoBucket {
            bucket: bucket.into(),
            endpoint: endpoint.into(),
        },
        "AccessDenied"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "AuthorizationHeaderMalformed"
        | "ExpiredToken"
        | "InvalidToken" => Error::Denied { code, message },
        _ if status == 403 => Error::Denied {
            code: if code.is_empty() { "403".into() } else { code },
            message,
        },
        _ => Error::Server {
            op: op.into(),
            status,
            code: if code.is_empty() { "-".into() } else { code },
            message,
        },
    }
}

/// The error a failed request means: a TLS failure is told from an unreachable endpoint.
/// The request's URL is left out: a presigned URL is a credential (for an hour, the object's
/// read or write), never to be shown in a status or a log.
pub(crate) fn from_transport(e: reqwest::Error, endpoint: &str) -> Error {
    let e = e.without_url();
    let mut why = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        why = format!("{why}: {s}");
        src = s.source();
    }
    let why = scrub(&why);
    let lower = why.to_lowercase();
    if lower.contains("certificate")
        || lower.contains("unknownissuer")
        || lower.contains("invalid peer")
    {
        Error::Untrusted {
            endpoint: endpoint.into(),
            why,
        }
    } else {
        Error::Unreachable {
            endpoint: endpoint.into(),
            why,
        }
    }
}

/// `text` with the query of any presigned URL in it cut (`?X-Amz-…` up to the next space,
/// quote or parenthesis): the signature in it opens the object.
pub(crate) fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('?') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == ')' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        if tail[..end].contains("X-Amz-") {
            out.push_str("?…");
        } else {
            out.push_str(&tail[..end]);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_queries_are_cut_from_error_texts() {
        let t = "error sending request for url (http://h:1/b/k?X-Amz-Algorithm=A&X-Amz-Signature=abc): closed";
        assert_eq!(
            scrub(t),
            "error sending request for url (http://h:1/b/k?…): closed"
        );
        assert_eq!(scrub("what? nothing"), "what? nothing");
    }

    #[test]
    fn s3_error_bodies_name_their_cause() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        assert!(matches!(
            from_answer("list", 404, body, "b", "e"),
            Error::NoBucket { .. }
        ));
        let body = "<Error><Code>InvalidAccessKeyId</Code><Message>no such key</Message></Error>";
        let e = from_answer("put", 403, body, "b", "e");
        assert!(matches!(e, Error::Denied { .. }) && !e.transient(), "{e}");
        let e = from_answer("put", 503, "<Error><Code>SlowDown</Code></Error>", "b", "e");
        assert!(e.transient() && e.to_string().contains("SlowDown"), "{e}");
        let e = from_answer("get", 403, "", "b", "e");
        assert_eq!(e.kind(), "denied");
    }
}
