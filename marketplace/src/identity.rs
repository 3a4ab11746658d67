//! A node's or publisher's identities (PROTOCOL.md §1): an Ed25519 `did:key` that signs
//! manifests and a secp256k1 Nostr key that signs events, both kept 0600 in the home.

use crate::home::{read_secret, write_secret, Home};
use anyhow::{bail, Context, Result};
pub use archy_protocol::keys::{PublicIdentity, PublisherKeys};
use ed25519_dalek::SigningKey;
use nostr_sdk::prelude::{Keys, SecretKey};

const DID_KEY_FILE: &str = "identity/did-ed25519.key";
const NOSTR_KEY_FILE: &str = "identity/nostr-secp256k1.key";

/// The two keys of an identity, loaded from (or created in) a home. Signing goes through the
/// keys ([`PublisherKeys`], which this derefs to); this type adds only the files.
pub struct Identity(PublisherKeys);

impl std::ops::Deref for Identity {
    type Target = PublisherKeys;
    fn deref(&self) -> &PublisherKeys {
        &self.0
    }
}

impl Identity {
    /// Creates fresh keys in the home; refuses to overwrite existing ones (that would orphan every
    /// release signed so far).
    pub fn create(home: &Home) -> Result<Identity> {
        home.ensure()?;
        if home.join(DID_KEY_FILE).exists() || home.join(NOSTR_KEY_FILE).exists() {
            bail!(
                "an identity already exists in {}; refusing to overwrite it (move it away first)",
                home.root().display()
            );
        }
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        let identity = Identity::from_keys(SigningKey::from_bytes(&seed), Keys::generate());
        write_secret(&home.join(DID_KEY_FILE), hex::encode(seed).as_bytes())?;
        write_secret(
            &home.join(NOSTR_KEY_FILE),
            identity
                .nostr_keys()
                .secret_key()
                .to_secret_hex()
                .as_bytes(),
        )?;
        Ok(identity)
    }

    /// Loads the identity of a home.
    pub fn load(home: &Home) -> Result<Identity> {
        let path = home.join(DID_KEY_FILE);
        if !path.exists() {
            bail!(
                "no identity in {}: run `archy id new` first",
                home.root().display()
            );
        }
        let seed = hex::decode(String::from_utf8(read_secret(&path)?)?.trim())
            .context("the DID key file is not hex")?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| anyhow::anyhow!("the DID key file must hold 32 bytes"))?;
        let nostr_hex = String::from_utf8(read_secret(&home.join(NOSTR_KEY_FILE))?)?;
        let nostr = Keys::new(
            SecretKey::from_hex(nostr_hex.trim()).context("the Nostr key file is not a key")?,
        );
        Ok(Identity::from_keys(SigningKey::from_bytes(&seed), nostr))
    }

    /// Loads the identity, creating one on first use (nodes need one to sign mirror announcements).
    pub fn load_or_create(home: &Home) -> Result<Identity> {
        if home.join(DID_KEY_FILE).exists() {
            Identity::load(home)
        } else {
            Identity::create(home)
        }
    }

    /// An identity from raw keys (test vectors, tests).
    pub fn from_keys(did_key: SigningKey, nostr: Keys) -> Identity {
        Identity(PublisherKeys::new(did_key, nostr))
    }
}
