//! Detached compact JWS with EdDSA (PROTOCOL.md §3; RFC 7515 Appendix F).
//!
//! The format is three lines of glue around Ed25519, so it is written here against
//! `ed25519-dalek` directly: every check that §3 demands (exact `alg`, exact `kid`, no `b64`/`crit`,
//! strict unpadded base64url, strict signature verification) is visible in one place.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::{Map, Value};
use thiserror::Error;

/// A fault in a JWS. Every variant but `KidMismatch` is reason `jws-invalid`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum JwsError {
    #[error("the JWS is not a detached compact serialisation `<header>..<signature>`")]
    NotDetached,
    #[error("the JWS {0} is not unpadded base64url")]
    Base64(&'static str),
    #[error("the JWS protected header is not a JSON object")]
    HeaderJson,
    #[error("the JWS header `alg` must be \"EdDSA\", found {0}")]
    Alg(String),
    #[error("the JWS header must not carry `{0}`")]
    Forbidden(&'static str),
    #[error("the JWS header has no string `kid`")]
    NoKid,
    #[error("the JWS `kid` {found:?} is not the publisher's verification method {expected:?}")]
    KidMismatch { found: String, expected: String },
    #[error("the JWS signature is not 64 bytes")]
    SignatureLength,
    #[error("the JWS signature does not verify over the JCS bytes of the manifest")]
    BadSignature,
}

/// A parsed (not yet verified) detached JWS.
#[derive(Debug, Clone)]
pub struct DetachedJws {
    header_b64: String,
    /// The protected header's `kid`.
    pub kid: String,
    signature: Signature,
}

/// Signs `payload` as a detached JWS whose header is `{"alg":"EdDSA","kid":kid}`.
pub fn sign_detached(payload: &[u8], key: &SigningKey, kid: &str) -> String {
    let header = serde_json::json!({"alg": "EdDSA", "kid": kid});
    let header_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("json"));
    let signature = key.sign(signing_input(&header_b64, payload).as_bytes());
    format!(
        "{header_b64}..{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

fn signing_input(header_b64: &str, payload: &[u8]) -> String {
    format!("{header_b64}.{}", URL_SAFE_NO_PAD.encode(payload))
}

impl DetachedJws {
    /// Parses the compact form and checks the header rules of §3 (all but the `kid` value).
    pub fn parse(jws: &str) -> Result<Self, JwsError> {
        let mut parts = jws.split('.');
        let (Some(header_b64), Some(""), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::NotDetached);
        };
        let header_bytes = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| JwsError::Base64("header"))?;
        let header: Map<String, Value> =
            serde_json::from_slice(&header_bytes).map_err(|_| JwsError::HeaderJson)?;
        match header.get("alg") {
            Some(Value::String(alg)) if alg == "EdDSA" => {}
            other => return Err(JwsError::Alg(format!("{other:?}"))),
        }
        for forbidden in ["b64", "crit"] {
            if header.contains_key(forbidden) {
                return Err(JwsError::Forbidden(forbidden));
            }
        }
        let kid = match header.get("kid") {
            Some(Value::String(kid)) => kid.clone(),
            _ => return Err(JwsError::NoKid),
        };
        let sig = URL_SAFE_NO_PAD
            .decode(sig_b64)
            .map_err(|_| JwsError::Base64("signature"))?;
        let sig: [u8; 64] = sig.try_into().map_err(|_| JwsError::SignatureLength)?;
        Ok(DetachedJws {
            header_b64: header_b64.to_owned(),
            kid,
            signature: Signature::from_bytes(&sig),
        })
    }

    /// Checks that `kid` is exactly `expected_kid`.
    pub fn check_kid(&self, expected_kid: &str) -> Result<(), JwsError> {
        if self.kid == expected_kid {
            Ok(())
        } else {
            Err(JwsError::KidMismatch {
                found: self.kid.clone(),
                expected: expected_kid.to_owned(),
            })
        }
    }

    /// Verifies the signature over `payload` with strict Ed25519 rules (no malleable signatures,
    /// no small-order keys).
    pub fn verify(&self, payload: &[u8], key: &VerifyingKey) -> Result<(), JwsError> {
        key.verify_strict(
            signing_input(&self.header_b64, payload).as_bytes(),
            &self.signature,
        )
        .map_err(|_| JwsError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[1u8; 32])
    }

    #[test]
    fn sign_then_verify() {
        let jws = sign_detached(b"{\"a\":1}", &key(), "did:key:zX#zX");
        let parsed = DetachedJws::parse(&jws).unwrap();
        parsed.check_kid("did:key:zX#zX").unwrap();
        parsed.verify(b"{\"a\":1}", &key().verifying_key()).unwrap();
        assert_eq!(
            parsed.verify(b"{\"a\":2}", &key().verifying_key()),
            Err(JwsError::BadSignature)
        );
        assert!(matches!(
            parsed.check_kid("other"),
            Err(JwsError::KidMismatch { .. })
        ));
    }

    #[test]
    fn header_rules() {
        let enc = |h: &str| URL_SAFE_NO_PAD.encode(h);
        let sig = URL_SAFE_NO_PAD.encode([0u8; 64]);
        let cases = [
            (r#"{"alg":"ES256","kid":"k"}"#, "alg"),
            (r#"{"kid":"k"}"#, "alg"),
            (r#"{"alg":"EdDSA","kid":"k","b64":false}"#, "b64"),
            (r#"{"alg":"EdDSA","kid":"k","crit":["x"]}"#, "crit"),
            (r#"{"alg":"EdDSA"}"#, "kid"),
            (r#"[1]"#, "json"),
        ];
        for (header, what) in cases {
            let err = DetachedJws::parse(&format!("{}..{sig}", enc(header))).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(what) || (what == "json" && err == JwsError::HeaderJson),
                "{header}: {text}"
            );
        }
        let good = enc(r#"{"alg":"EdDSA","kid":"k","typ":"x"}"#);
        assert!(DetachedJws::parse(&format!("{good}..{sig}")).is_ok());
        assert_eq!(
            DetachedJws::parse(&format!("{good}.e30.{sig}")).unwrap_err(),
            JwsError::NotDetached
        );
        assert_eq!(
            DetachedJws::parse(&format!("{good}..{sig}=")).unwrap_err(),
            JwsError::Base64("signature")
        );
        assert_eq!(
            DetachedJws::parse(&format!("{good}..AAAA")).unwrap_err(),
            JwsError::SignatureLength
        );
    }
}
