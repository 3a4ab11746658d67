//! A publisher's two keys (PROTOCOL.md §1), in memory: an Ed25519 `did:key` that signs
//! manifests and a secp256k1 Nostr key that signs events. Signing takes these, never a home:
//! loading and storing them is the node's job (`archy_marketplace::identity`).

use crate::did;
use ed25519_dalek::SigningKey;
use nostr::{Keys, ToBech32};
use serde::{Deserialize, Serialize};

/// The two keys of an identity.
pub struct PublisherKeys {
    did_key: SigningKey,
    nostr: Keys,
}

/// The public half, as `archy id show` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublicIdentity {
    pub did: String,
    pub nostr: String,
    pub npub: String,
}

impl PublisherKeys {
    /// An identity from raw keys.
    pub fn new(did_key: SigningKey, nostr: Keys) -> PublisherKeys {
        PublisherKeys { did_key, nostr }
    }

    pub fn did(&self) -> String {
        did::did_from_key(&self.did_key.verifying_key())
    }

    pub fn did_signing_key(&self) -> &SigningKey {
        &self.did_key
    }

    pub fn nostr_keys(&self) -> &Keys {
        &self.nostr
    }

    /// The Nostr public key, 64-hex x-only.
    pub fn nostr_hex(&self) -> String {
        self.nostr.public_key().to_hex()
    }

    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            did: self.did(),
            nostr: self.nostr_hex(),
            npub: self
                .nostr
                .public_key()
                .to_bech32()
                .expect("a public key always encodes as npub"),
        }
    }
}
