//! Ed25519 `did:key` identities (PROTOCOL.md §1).
//!
//! `did:key:z` + base58btc(0xed 0x01 ‖ public key), the multicodec prefix by `ssi-multicodec`
//! (the part of `ssi` this needs; a test checks the result is exactly what `ssi`'s did:key
//! method writes, so our DIDs are the wider DID ecosystem's); decoding is strict
//! (only `z`/base58btc, only the Ed25519 multicodec, only the canonical form) because a DID is a
//! key binding: two spellings of one key would let a publisher appear as two.

use ed25519_dalek::VerifyingKey;
use ssi_multicodec::{MultiEncoded, MultiEncodedBuf};
use thiserror::Error;

/// The multicodec code of an Ed25519 public key.
const ED25519_PUB: u64 = 0xed;

/// Why a string is not an Ed25519 `did:key`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DidError {
    #[error("not a did:key DID (expected `did:key:z6Mk…`)")]
    NotDidKey,
    #[error("the did:key is not base58btc multibase (must start with `did:key:z`)")]
    NotBase58btc,
    #[error("the did:key method-specific id is not valid multibase/multicodec")]
    Malformed,
    #[error("the did:key names a key of multicodec 0x{0:x}, not Ed25519 (0xed): only Ed25519 did:key DIDs are accepted")]
    NotEd25519(u64),
    #[error("the did:key holds an invalid Ed25519 public key")]
    BadKey,
    #[error("the did:key is not in canonical form")]
    NotCanonical,
}

/// The `did:key` DID of an Ed25519 public key.
pub fn did_from_key(key: &VerifyingKey) -> String {
    let encoded = MultiEncodedBuf::encode_bytes(ED25519_PUB, key.as_bytes());
    format!(
        "did:key:{}",
        multibase::encode(multibase::Base::Base58Btc, encoded.as_bytes())
    )
}

/// The Ed25519 public key a `did:key` DID names.
pub fn key_from_did(did: &str) -> Result<VerifyingKey, DidError> {
    // Releases come from few publishers, and every check decodes the same few DIDs (the point
    // decompression and canonical-form check cost ~8 µs, 1/4 of an Ed25519 verify). Decoding
    // is a pure function of the string, so remembering good answers changes nothing else.
    static DECODED: std::sync::Mutex<Option<std::collections::HashMap<String, VerifyingKey>>> =
        std::sync::Mutex::new(None);
    const REMEMBERED: usize = 1024;
    let mut memo = DECODED.lock().unwrap_or_else(|p| p.into_inner());
    let memo = memo.get_or_insert_with(Default::default);
    if let Some(key) = memo.get(did) {
        return Ok(*key);
    }
    let key = decode_did_key(did)?;
    if memo.len() >= REMEMBERED {
        memo.clear();
    }
    memo.insert(did.to_owned(), key);
    Ok(key)
}

fn decode_did_key(did: &str) -> Result<VerifyingKey, DidError> {
    let id = did.strip_prefix("did:key:").ok_or(DidError::NotDidKey)?;
    if !id.starts_with('z') {
        return Err(DidError::NotBase58btc);
    }
    let (_, bytes) = multibase::decode(id).map_err(|_| DidError::Malformed)?;
    let encoded = MultiEncoded::new(&bytes).map_err(|_| DidError::Malformed)?;
    if encoded.codec() != ED25519_PUB {
        return Err(DidError::NotEd25519(encoded.codec()));
    }
    let raw: [u8; 32] = encoded.data().try_into().map_err(|_| DidError::BadKey)?;
    let key = VerifyingKey::from_bytes(&raw).map_err(|_| DidError::BadKey)?;
    if did_from_key(&key) != did {
        return Err(DidError::NotCanonical);
    }
    Ok(key)
}

/// The verification method URL of a `did:key`: `<did>#<the part after "did:key:">`.
pub fn verification_method(did: &str) -> String {
    let id = did.strip_prefix("did:key:").unwrap_or(did);
    format!("{did}#{id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn round_trip_and_prefix() {
        let key = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
        let did = did_from_key(&key);
        assert!(did.starts_with("did:key:z6Mk"), "{did}");
        assert_eq!(key_from_did(&did).unwrap(), key);
        assert_eq!(
            verification_method(&did),
            format!("{did}#{}", &did["did:key:".len()..])
        );
    }

    /// Our encoding is exactly `ssi`'s did:key method's, for many keys.
    #[test]
    fn same_did_as_ssi() {
        for seed in 0..64u8 {
            let key = SigningKey::from_bytes(&[seed; 32]).verifying_key();
            let jwk = ssi::jwk::ed25519_parse(key.as_bytes()).unwrap();
            let theirs = ssi::dids::DIDKey::generate(&jwk).unwrap().to_string();
            assert_eq!(did_from_key(&key), theirs);
        }
    }

    /// The did:key spec's own Ed25519 test vector.
    #[test]
    fn spec_vector() {
        let did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
        let key = key_from_did(did).unwrap();
        assert_eq!(did_from_key(&key), did);
    }

    #[test]
    fn refuses_other_key_types_and_forms() {
        // A secp256k1 did:key (multicodec 0xe7).
        let secp = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme";
        assert!(matches!(
            key_from_did(secp),
            Err(DidError::NotEd25519(0xe7))
        ));
        assert_eq!(
            key_from_did("did:web:example.com"),
            Err(DidError::NotDidKey)
        );
        assert_eq!(key_from_did("did:key:f00"), Err(DidError::NotBase58btc));
        assert_eq!(key_from_did("did:key:z0OIl"), Err(DidError::Malformed));
    }
}
