//! `sha256:<64 lowercase hex>` digests (the only algorithm a node accepts: it is what Podman
//! writes and what the image id is).

use sha2::{Digest as _, Sha256};
use std::fmt;
use thiserror::Error;

/// A checked `sha256:` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a digest: expected \"sha256:\" and 64 lowercase hex characters")]
pub struct BadDigest(pub String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, BadDigest> {
        match s.strip_prefix("sha256:") {
            Some(h)
                if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                Ok(Digest(s.to_owned()))
            }
            _ => Err(BadDigest(s.chars().take(80).collect())),
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex characters after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 over bytes that arrive in pieces (a layer read from the blob store).
#[derive(Default, Clone)]
pub struct Sha256Stream {
    hasher: Sha256,
    len: u64,
}

impl Sha256Stream {
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_lowercase_sha256() {
        let h = "a".repeat(64);
        assert!(Digest::parse(&format!("sha256:{h}")).is_ok());
        for bad in [
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{h}"),
            format!("sha256:{}", &h[1..]),
            format!("sha256:{h}0"),
            h.clone(),
            "sha256:../../etc/passwd".into(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut s = Sha256Stream::default();
        for c in data.chunks(333) {
            s.update(c);
        }
        assert_eq!(s.len(), 10_000);
        assert_eq!(s.finish(), Digest::of(&data));
    }
}
