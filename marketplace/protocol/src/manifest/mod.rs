//! App manifest v1 and v2 (PROTOCOL.md §2): parsing, the schema and policy validator, and the typed view.
//!
//! The manifest is kept as the raw JSON object it was signed as (unknown fields are preserved,
//! the signature covers them); [`validate`] walks that object and reports *every* violation,
//! each naming the field and the rule; [`AppManifest`] is the typed view the node uses once the
//! object has passed.

mod policy;
mod typed;
mod validate;

pub use archy_rules::{is_hex64, is_loopback, normalize_capability, MAX_MANIFEST_BYTES};
pub use policy::{policy_serde, PolicyConfig};
pub use typed::*;
pub use validate::{validate, validate_sized, Violation, LAYERS_FORMAT};

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};
use thiserror::Error;

/// A manifest as signed: the raw JSON object (unknown fields preserved; the signature covers
/// them). The typed view is [`AppManifest`].
pub type RawManifest = Map<String, Value>;

/// The schema string of a v1 manifest (an image is one archive).
pub const SCHEMA_V1: &str = "archy.app/v1";
/// The schema string of a v2 manifest: the features of PROTOCOL §2.1 (layered images) and
/// §2.2 need it.
pub const SCHEMA_V2: &str = "archy.app/v2";

/// A manifest file that could not even be read as a JSON object.
#[derive(Debug, Error)]
pub enum ParseError {
    #[error("not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("not valid YAML: {0}")]
    Yaml(serde_yaml_ng::Error),
    #[error("the manifest must be a JSON/YAML object (a mapping), not {0}")]
    NotObject(&'static str),
}

/// Reads a manifest from JSON or YAML text (JSON is tried first; YAML is a superset of it).
pub fn parse(text: &str) -> Result<Map<String, Value>, ParseError> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(json_err) => {
            let looks_like_json = text.trim_start().starts_with('{');
            match serde_yaml_ng::from_str::<Value>(text) {
                Ok(v) => v,
                Err(_) if looks_like_json => return Err(ParseError::Json(json_err)),
                Err(e) => return Err(ParseError::Yaml(e)),
            }
        }
    };
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ParseError::NotObject(kind_name(&other))),
    }
}

pub(crate) fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
