//! The pull-only OCI Distribution API a node serves on loopback: which request is which, and
//! the errors it answers with (OCI distribution spec, "Error codes"). Pure: the node's HTTP
//! server turns a method and path into a [`Route`] here and serves it from its blob store.
//!
//! Served: `GET`/`HEAD` of `/v2/`, of `/v2/<name>/manifests/<digest>` and of
//! `/v2/<name>/blobs/<digest>` (with a single `Range` on blobs). A manifest is found by digest
//! only — tags are names, and a node never trusts a name — and the repository name is not
//! used to look anything up (any name reaches any image the node holds, like Spegel).

use crate::digest::Digest;
use std::fmt;

/// The largest repository name (OCI distribution spec: a name with its host is at most 255).
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    Manifest {
        name: String,
        digest: Digest,
    },
    Blob {
        name: String,
        digest: Digest,
    },
}

/// An OCI error answer: HTTP status, the spec's code, a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl RegistryError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        RegistryError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn blob_unknown(d: &Digest) -> Self {
        Self::new(404, "BLOB_UNKNOWN", format!("{d} is not held by this node"))
    }

    pub fn manifest_unknown(d: &Digest) -> Self {
        Self::new(
            404,
            "MANIFEST_UNKNOWN",
            format!("{d} is not held by this node"),
        )
    }

    /// The JSON body of the spec: `{"errors": [{"code", "message"}]}`.
    pub fn body(&self) -> String {
        serde_json::json!({"errors": [{"code": self.code, "message": self.message}]}).to_string()
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

/// A repository name by the spec's grammar: `/`-separated components of `[a-z0-9]` runs
/// joined by `.`, `_`, `__` or dashes.
pub fn is_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    name.split('/').all(|c| {
        let b = c.as_bytes();
        let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(&b[i]) {
                i += 1;
                continue;
            }
            // A separator run: ".", "_", "__" or "-"+, followed by an alphanumeric.
            let start = i;
            while i < b.len() && !alnum(&b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
            if !ok {
                return false;
            }
        }
        true
    })
}

/// Classifies a request. `path` is the URL path as received (no query string).
pub fn route(method: &str, path: &str) -> Result<(Method, Route), RegistryError> {
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => {
            return Err(RegistryError::new(
                405,
                "UNSUPPORTED",
                format!(
                    "{} is not served: this registry is pull-only (GET and HEAD)",
                    other.chars().take(16).collect::<String>()
                ),
            ))
        }
    };
    if path == "/v2/" || path == "/v2" {
        return Ok((method, Route::Base));
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Err(RegistryError::new(
            404,
            "NAME_UNKNOWN",
            "only /v2/ is served",
        ));
    };
    // Percent-escapes, backslashes and dot segments have no place in a name or digest: refusing
    // them here is what keeps a path from meaning two things.
    if rest.contains(['%', '\\', '\0']) || rest.split('/').any(|s| s == "." || s == "..") {
        return Err(RegistryError::new(
            400,
            "NAME_INVALID",
            "the path holds an escape or a dot segment",
        ));
    }
    let (name, kind, reference) = match (rest.rfind("/manifests/"), rest.rfind("/blobs/")) {
        (Some(m), b) if b.is_none_or(|b| m > b) => {
            (&rest[..m], "manifests", &rest[m + "/manifests/".len()..])
        }
        (_, Some(b)) => (&rest[..b], "blobs", &rest[b + "/blobs/".len()..]),
        _ => {
            return Err(RegistryError::new(
                404,
                "NAME_UNKNOWN",
                "expected /v2/<name>/manifests/<digest> or /v2/<name>/blobs/<digest>",
            ))
        }
    };
    if !is_name(name) {
        return Err(RegistryError::new(
            400,
            "NAME_INVALID",
            format!(
                "{:?} is not a repository name",
                name.chars().take(64).collect::<String>()
            ),
        ));
    }
    let digest = match Digest::parse(reference) {
        Ok(d) => d,
        Err(_)
            if kind == "manifests"
                && !reference.starts_with("sha256:")
                && !reference.contains(':') =>
        {
            return Err(RegistryError::new(
                404,
                "MANIFEST_UNKNOWN",
                "tags are not served: pull by digest (name@sha256:…)",
            ))
        }
        Err(e) => return Err(RegistryError::new(400, "DIGEST_INVALID", e.to_string())),
    };
    let name = name.to_owned();
    Ok((
        method,
        if kind == "manifests" {
            Route::Manifest { name, digest }
        } else {
            Route::Blob { name, digest }
        },
    ))
}

/// A byte range `[start, end)` of a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// `Content-Range: bytes start-(end-1)/size`.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{size}", self.start, self.end - 1)
    }
}

/// Reads a `Range` header (RFC 9110 §14.1.2; one range of bytes). `Ok(None)`: serve the whole
/// blob (no header, or one this server does not interpret, as RFC 9110 allows); `Err`: 416.
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<ByteRange>, RegistryError> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Several ranges: the whole blob is a valid answer.
        return Ok(None);
    }
    let unsatisfiable = || {
        RegistryError::new(
            416,
            "BLOB_UNKNOWN",
            format!("range {spec:?} is outside the blob's {size} bytes"),
        )
    };
    let (a, b) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let num = |s: &str| -> Result<u64, RegistryError> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(unsatisfiable());
        }
        s.parse::<u64>().map_err(|_| unsatisfiable())
    };
    let r = if a.is_empty() {
        let n = num(b)?;
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        ByteRange {
            start: size.saturating_sub(n),
            end: size,
        }
    } else {
        let start = num(a)?;
        let end = if b.is_empty() {
            size
        } else {
            num(b)?.saturating_add(1).min(size)
        };
        if start >= size || start >= end {
            return Err(unsatisfiable());
        }
        ByteRange { start, end }
    };
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/v2/").unwrap(), (Method::Get, Route::Base));
        let (m, r) = route("HEAD", &format!("/v2/archy/web/manifests/{}", d())).unwrap();
        assert_eq!(m, Method::Head);
        assert!(matches!(r, Route::Manifest { name, .. } if name == "archy/web"));
        let (_, r) = route("GET", &format!("/v2/a/blobs/x/blobs/{}", d())).unwrap();
        assert!(matches!(r, Route::Blob { name, .. } if name == "a/blobs/x"));
    }

    #[test]
    fn refusals_carry_oci_codes() {
        let code = |m: &str, p: &str| route(m, p).unwrap_err().code;
        assert_eq!(code("PUT", "/v2/"), "UNSUPPORTED");
        assert_eq!(
            code("DELETE", &format!("/v2/a/blobs/{}", d())),
            "UNSUPPORTED"
        );
        assert_eq!(
            route("POST", "/v2/a/blobs/uploads/").unwrap_err().status,
            405
        );
        assert_eq!(code("GET", "/v2/a/manifests/latest"), "MANIFEST_UNKNOWN");
        assert_eq!(code("GET", "/v2/a/blobs/sha256:1234"), "DIGEST_INVALID");
        assert_eq!(code("GET", "/v2/a/manifests/sha512:00"), "DIGEST_INVALID");
        assert_eq!(
            code("GET", &format!("/v2/../etc/blobs/{}", d())),
            "NAME_INVALID"
        );
        assert_eq!(
            code("GET", &format!("/v2/a/%2e%2e/blobs/{}", d())),
            "NAME_INVALID"
        );
        assert_eq!(code("GET", &format!("/v2/A/blobs/{}", d())), "NAME_INVALID");
        assert_eq!(code("GET", &format!("/v2//blobs/{}", d())), "NAME_INVALID");
        assert_eq!(code("GET", "/etc/passwd"), "NAME_UNKNOWN");
        assert_eq!(code("GET", "/v2/a/tags/list"), "NAME_UNKNOWN");
    }

    #[test]
    fn names() {
        for ok in [
            "a",
            "archy/web",
            "a.b_c__d--e/f0",
            "localhost/archy-apps/web",
        ] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a.-b", "a b",
        ] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let r = |h: &str| parse_range(Some(h), 100);
        assert_eq!(parse_range(None, 100).unwrap(), None);
        assert_eq!(
            r("bytes=0-9").unwrap(),
            Some(ByteRange { start: 0, end: 10 })
        );
        assert_eq!(
            r("bytes=90-").unwrap(),
            Some(ByteRange {
                start: 90,
                end: 100
            })
        );
        assert_eq!(
            r("bytes=90-500").unwrap(),
            Some(ByteRange {
                start: 90,
                end: 100
            })
        );
        assert_eq!(
            r("bytes=-10").unwrap(),
            Some(ByteRange {
                start: 90,
                end: 100
            })
        );
        assert_eq!(
            r("bytes=-1000").unwrap(),
            Some(ByteRange { start: 0, end: 100 })
        );
        assert_eq!(r("bytes=0-1,5-6").unwrap(), None);
        assert_eq!(r("items=0-1").unwrap(), None);
        for bad in [
            "bytes=100-",
            "bytes=5-2",
            "bytes=-0",
            "bytes=x-1",
            "bytes=1",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(r(bad).unwrap_err().status, 416, "{bad}");
        }
        assert_eq!(
            ByteRange { start: 0, end: 10 }.content_range(100),
            "bytes 0-9/100"
        );
    }
}
