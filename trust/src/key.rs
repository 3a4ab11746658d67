//! Nostr public keys as the trust graph sees them, and the built-in denylist.
//!
//! The crate never verifies signatures or curve points: the node has already checked every event
//! before it reaches the graph, so a key here is just 32 bytes with a total order (for
//! deterministic iteration) and a hash (for fast look-ups).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte x-only secp256k1 public key (BIP-340), the identity that follows, labels and
/// reports point at. Written as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key([u8; 32]);

/// Why a text is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Wrong length.
    #[error("a Nostr public key is 64 hex characters (a 32-byte x-only key); got {0} characters")]
    Length(usize),
    /// A character outside `0-9a-fA-F`.
    #[error("a Nostr public key is hex: character {ch:?} at position {pos} is not a hex digit")]
    NotHex {
        /// The offending character.
        ch: char,
        /// Its index (in characters).
        pos: usize,
    },
}

impl Key {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// The raw key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex characters (either case; lowercase is canonical).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let count = text.chars().count();
        if count != 64 || text.len() != 64 {
            return Err(KeyError::Length(count));
        }
        if let Some((pos, ch)) = text
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii_hexdigit())
        {
            return Err(KeyError::NotHex { ch, pos });
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| KeyError::Length(count))?;
        Ok(Key(bytes))
    }

    /// The canonical lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Key {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Key::from_hex(s)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", &self.to_hex()[..16])
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Key::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// Keys whose private key is public knowledge, so anyone can sign as them: the x-only public
/// keys of the private keys 1 to 10 (k·G for k = 1..=10). Test vectors and careless tools use
/// them; nothing they sign may carry trust. Verified against secp256k1 in the tests.
pub const BUILTIN_DENYLIST: &[&str] = &[
    "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    "c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5",
    "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9",
    "e493dbf1c10d80f3581e4904930b1404cc6c13900ee0758474fa94abe8c4cd13",
    "2f8bde4d1a07209355b4a7250a5c5128e88b84bddc619ab7cba8d569b240efe4",
    "fff97bd5755eeea420453a14355235d382f6472f8568a18b2f057a1460297556",
    "5cbdf0646e5db4eaa398f365f2ea7a0e3d419b7e0330e39ce92bddedcac4f9bc",
    "2f01e5e15cca351daff3843fb70f3c2f0a1bdd05e5af888a67784ef3e10a2a01",
    "acd484e2f0c7f65309ad178a9f559abde09796974c57e714c35f110dfc27ccbe",
    "a0434d9e47f3c86235477c7b1ae6ae5d3442d49b1943c2b752a68e2a47e247c7",
];

/// The built-in denylist as keys.
pub fn builtin_denylist() -> Vec<Key> {
    BUILTIN_DENYLIST
        .iter()
        .map(|h| Key::from_hex(h).expect("built-in denylist entries are valid hex"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_hex() {
        let text = BUILTIN_DENYLIST[0];
        let key: Key = text.parse().unwrap();
        assert_eq!(key.to_hex(), text);
        assert_eq!(Key::from_hex(&text.to_uppercase()).unwrap(), key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<Key>(&json).unwrap(), key);
    }

    #[test]
    fn rejects_bad_text_with_a_reason() {
        assert_eq!(Key::from_hex("abcd"), Err(KeyError::Length(4)));
        let mut bad = "0".repeat(63);
        bad.push('g');
        assert_eq!(
            Key::from_hex(&bad),
            Err(KeyError::NotHex { ch: 'g', pos: 63 })
        );
        let err = Key::from_hex("é".repeat(32).as_str()).unwrap_err();
        assert!(matches!(err, KeyError::Length(32)), "{err}");
        assert!(serde_json::from_str::<Key>("\"zz\"").is_err());
    }

    #[test]
    fn builtin_denylist_is_k_times_g() {
        use secp256k1::{Secp256k1, SecretKey};
        let secp = Secp256k1::new();
        for (i, expected) in BUILTIN_DENYLIST.iter().enumerate() {
            let mut sk = [0u8; 32];
            sk[31] = (i + 1) as u8;
            let sk = SecretKey::from_slice(&sk).unwrap();
            let (xonly, _) = sk.x_only_public_key(&secp);
            assert_eq!(
                hex::encode(xonly.serialize()),
                *expected,
                "private key {}",
                i + 1
            );
        }
    }
}
