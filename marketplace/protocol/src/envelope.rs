//! The signed envelope `{"manifest": …, "signature": <detached JWS>}` (PROTOCOL.md §3, §4.1):
//! signing with a publisher's keys and verifying with nothing but the `did:key`.

use crate::did;
use crate::jcs::{canonical_bytes, try_canonical_bytes};
use crate::jws::{self, DetachedJws, JwsError};
use crate::keys::PublisherKeys;
use crate::manifest::{self, AppManifest, PolicyConfig, Violation};
use crate::reason::Reason;
use serde::Serialize;
use serde_json::{Map, Value};

/// A manifest with its detached signature.
/// Deserialising checks the shape as [`Envelope::from_value`] does.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(try_from = "Value")]
pub struct Envelope {
    pub manifest: Map<String, Value>,
    pub signature: String,
}

impl TryFrom<Value> for Envelope {
    type Error = String;
    fn try_from(value: Value) -> Result<Envelope, String> {
        Envelope::from_value(value).map_err(|v| v.to_string())
    }
}

/// A manifest whose signature and policy checks passed.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: AppManifest,
    pub envelope: Envelope,
    /// JCS bytes of the manifest: what the signature covers; equal bytes = the same release.
    pub jcs: Vec<u8>,
}

fn violation(
    reason: Reason,
    field: &str,
    rule: &'static str,
    message: impl Into<String>,
) -> Violation {
    Violation {
        reason,
        field: field.to_owned(),
        rule,
        message: message.into(),
    }
}

impl Envelope {
    /// Parses envelope JSON text: an object with exactly `manifest` (object) and `signature` (string).
    pub fn from_json(text: &str) -> Result<Envelope, Violation> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            violation(
                Reason::ContentJson,
                "(content)",
                "json",
                format!("not valid JSON: {e}"),
            )
        })?;
        Envelope::from_value(value)
    }

    /// The envelope shape check of §4.1 (`content-shape`).
    pub fn from_value(value: Value) -> Result<Envelope, Violation> {
        let shape = |msg: &str| violation(Reason::ContentShape, "(content)", "envelope", msg);
        let Value::Object(mut obj) = value else {
            return Err(shape("the content must be a JSON object"));
        };
        if obj.len() != 2 {
            let keys: Vec<_> = obj.keys().cloned().collect();
            return Err(shape(&format!(
                "the content must have exactly `manifest` and `signature`, found {keys:?}"
            )));
        }
        match (obj.remove("manifest"), obj.remove("signature")) {
            (Some(Value::Object(manifest)), Some(Value::String(signature))) => Ok(Envelope {
                manifest,
                signature,
            }),
            _ => Err(shape(
                "`manifest` must be an object and `signature` a string",
            )),
        }
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("an envelope is JSON")
    }

    /// The compact JSON text used as a Nostr event's content.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope is JSON")
    }
}

/// Fills `publisher` and `published_at` from the identity and the clock where the file leaves
/// them out, and refuses a `publisher` that names someone else.
pub fn fill_publisher(
    manifest: &mut Map<String, Value>,
    identity: &PublisherKeys,
    now: u64,
) -> Result<(), Violation> {
    let did = identity.did();
    let nostr = identity.nostr_hex();
    match manifest.get("publisher") {
        None => {
            manifest.insert(
                "publisher".into(),
                serde_json::json!({"did": did, "nostr": nostr}),
            );
        }
        Some(p) => {
            if p.get("did").and_then(Value::as_str) != Some(did.as_str()) {
                return Err(violation(
                    Reason::DidMismatch,
                    "publisher.did",
                    "identity",
                    format!(
                        "the file names publisher {} but this home's identity is {did}",
                        p.get("did").unwrap_or(&Value::Null)
                    ),
                ));
            }
            if p.get("nostr").and_then(Value::as_str) != Some(nostr.as_str()) {
                return Err(violation(
                    Reason::PubkeyMismatch,
                    "publisher.nostr",
                    "identity",
                    format!(
                        "the file names Nostr key {} but this home's key is {nostr}",
                        p.get("nostr").unwrap_or(&Value::Null)
                    ),
                ));
            }
        }
    }
    manifest
        .entry("published_at")
        .or_insert_with(|| Value::from(now));
    Ok(())
}

/// Signs a manifest with the identity's DID key (the caller validated it).
pub fn sign(manifest: Map<String, Value>, identity: &PublisherKeys) -> Envelope {
    let jcs = canonical_bytes(&Value::Object(manifest.clone()));
    let kid = did::verification_method(&identity.did());
    let signature = jws::sign_detached(&jcs, identity.did_signing_key(), &kid);
    Envelope {
        manifest,
        signature,
    }
}

/// Checks the DID binding and signature of an envelope (steps 2–3 of §4.1 that concern the
/// manifest alone): the `kid` is the publisher's verification method and the JWS verifies over
/// JCS(manifest). Returns the JCS bytes.
pub fn verify_signature(env: &Envelope) -> Result<Vec<u8>, Violation> {
    let jws_fault = |e: JwsError| {
        let reason = match e {
            JwsError::KidMismatch { .. } => Reason::KidMismatch,
            _ => Reason::JwsInvalid,
        };
        violation(reason, "signature", "jws", e.to_string())
    };
    let parsed = DetachedJws::parse(&env.signature).map_err(jws_fault)?;
    let did = env
        .manifest
        .get("publisher")
        .and_then(|p| p.get("did"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            violation(
                Reason::Schema,
                "publisher.did",
                "required",
                "the manifest names no publisher.did, so no key can verify it",
            )
        })?;
    let key = did::key_from_did(did).map_err(|e| {
        violation(
            Reason::Schema,
            "publisher.did",
            "did-key-ed25519",
            e.to_string(),
        )
    })?;
    parsed
        .check_kid(&did::verification_method(did))
        .map_err(jws_fault)?;
    let jcs = try_canonical_bytes(&Value::Object(env.manifest.clone())).map_err(|e| {
        violation(
            Reason::Schema,
            "(manifest)",
            "jcs",
            format!("the manifest has no canonical JSON form, so no signature can cover it: {e}"),
        )
    })?;
    parsed.verify(&jcs, &key).map_err(jws_fault)?;
    Ok(jcs)
}

/// Verifies an envelope completely: signature, then schema and policy. On failure, every
/// violation found (a bad signature stops there: the rest would be about untrusted bytes).
pub fn verify(env: &Envelope, policy: &PolicyConfig, now: u64) -> Result<Verified, Vec<Violation>> {
    let jcs = verify_signature(env).map_err(|v| vec![v])?;
    check_contents(env, jcs, policy, now)
}

/// The schema and policy half of [`verify`], for a caller that already verified the signature
/// and holds its JCS bytes (the release checks do both in protocol order; verifying twice was
/// the largest cost of a release check).
pub fn check_contents(
    env: &Envelope,
    jcs: Vec<u8>,
    policy: &PolicyConfig,
    now: u64,
) -> Result<Verified, Vec<Violation>> {
    let violations = manifest::validate_sized(&env.manifest, policy, now, Some(jcs.len()));
    if !violations.is_empty() {
        return Err(violations);
    }
    let typed = AppManifest::from_raw(&env.manifest).map_err(|e| {
        vec![violation(
            Reason::Schema,
            "(manifest)",
            "shape",
            e.to_string(),
        )]
    })?;
    Ok(Verified {
        manifest: typed,
        envelope: env.clone(),
        jcs,
    })
}
