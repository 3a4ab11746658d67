//! The image manifest (child 0) and config (child 1) of a layered image, and the checks of
//! PROTOCOL §2.1 a node makes before anything reaches Podman. The bytes are kept as received;
//! these types are views of them.

use crate::digest::{Digest, Sha256Stream};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use thiserror::Error;

/// The most layers a layered image may have (PROTOCOL §2.1; `archy_rules::MAX_IMAGE_LAYERS`
/// is the same value, which `tests` pins).
pub const MAX_LAYERS: usize = 127;
/// The largest image manifest or config, in bytes (§2.1).
pub const MAX_META_BYTES: u64 = 4 * 1024 * 1024;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The uncompressed OCI layer: its digest is the diff id, so it rebuilds byte-identically.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_TYPES: &[&str] = &[
    OCI_LAYER_TAR,
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
const FOREIGN_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// An OCI content descriptor (the fields §2.1 reads; the bytes it came from are kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// Which §2.1 check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCheck {
    /// The HashSeq root is not 32·(2 + L) bytes, or has another number of children than the
    /// manifest's layers + 2.
    ChildCount,
    /// A child's size is not its descriptor's, exceeds 4 MiB (children 0 and 1), or the sum is
    /// not `image.layers.size`.
    ChildSize,
    /// Child 0 is not a JSON image manifest of schema version 2.
    Manifest,
    /// Child 0 is an image index or manifest list, not a single-platform manifest.
    SinglePlatform,
    /// A media type §2.1 does not allow.
    MediaType,
    /// More than 127 layers.
    LayerCount,
    /// A descriptor with `urls`, or a non-distributable layer type.
    ForeignLayer,
    /// The config's sha256 is not `image.id` / the manifest's `config.digest`.
    ConfigDigest,
    /// A layer's sha256 is not its digest in the manifest.
    LayerDigest,
    /// The config is for another OS or architecture than this node's.
    Platform,
}

impl LayerCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerCheck::ChildCount => "child-count",
            LayerCheck::ChildSize => "child-size",
            LayerCheck::Manifest => "image-manifest",
            LayerCheck::SinglePlatform => "single-platform",
            LayerCheck::MediaType => "media-type",
            LayerCheck::LayerCount => "layer-count",
            LayerCheck::ForeignLayer => "foreign-layer",
            LayerCheck::ConfigDigest => "config-digest",
            LayerCheck::LayerDigest => "layer-digest",
            LayerCheck::Platform => "platform",
        }
    }

    /// The PROTOCOL reason class: `schema` for a malformed image, `policy` for what a node
    /// refuses by rule, `content` for bytes that are not what the manifest signed.
    pub fn class(self) -> &'static str {
        match self {
            LayerCheck::Manifest | LayerCheck::SinglePlatform | LayerCheck::MediaType => "schema",
            LayerCheck::LayerCount | LayerCheck::ForeignLayer | LayerCheck::Platform => "policy",
            LayerCheck::ChildCount
            | LayerCheck::ChildSize
            | LayerCheck::ConfigDigest
            | LayerCheck::LayerDigest => "content",
        }
    }
}

impl fmt::Display for LayerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in the HashSeq a failure is: the root, or child `i` (0 manifest, 1 config, 2.. layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Root,
    Index(usize),
}

impl fmt::Display for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Child::Root => f.write_str("the HashSeq root"),
            Child::Index(0) => f.write_str("child 0 (the image manifest)"),
            Child::Index(1) => f.write_str("child 1 (the image config)"),
            Child::Index(i) => write!(f, "child {i} (layer {})", i - 2),
        }
    }
}

/// A failed §2.1 check: which one, on which child, and what was found.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{class} `{check}` failed on {child}: {message}", class = check.class())]
pub struct LayerError {
    pub check: LayerCheck,
    pub child: Child,
    pub message: String,
}

fn err(check: LayerCheck, child: Child, message: impl Into<String>) -> LayerError {
    LayerError {
        check,
        child,
        message: message.into(),
    }
}

/// An OS and architecture, as an image config and OCI platforms name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Platform {
    /// This machine's platform in OCI's words (`amd64`, `arm64`, …).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Option<Vec<Value>>,
}

/// What children 0 and 1 say a layered image is, once child 0 passed its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    /// The manifest's digest (what a registry pull names) and media type (its content type).
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub manifest_size: u64,
    pub config: Descriptor,
    /// In manifest order; child `2 + i` is `layers[i]`.
    pub layers: Vec<Descriptor>,
}

impl LayerPlan {
    /// Checks the HashSeq root's size before its children are read: 32·(2 + L), L ≤ 127.
    pub fn check_root_size(root_len: u64) -> Result<usize, LayerError> {
        let max = 32 * (2 + MAX_LAYERS as u64);
        if !root_len.is_multiple_of(32) || root_len < 64 || root_len > max {
            return Err(err(
                LayerCheck::ChildCount,
                Child::Root,
                format!("the root is {root_len} bytes; a layered image's is 32·(2 + L) with 0 ≤ L ≤ {MAX_LAYERS}, at most {max}"),
            ));
        }
        Ok((root_len / 32) as usize)
    }

    /// Child 0's checks (§2.1): a single-platform image manifest whose config is `image_id`,
    /// whose layers are allowed and not foreign, whose descriptor count is the root's children
    /// − 2 and whose sizes add up (with child 0's own) to `total_size` (`image.layers.size`).
    pub fn from_manifest(
        manifest: &[u8],
        children: usize,
        image_id: &str,
        total_size: u64,
    ) -> Result<LayerPlan, LayerError> {
        let c0 = Child::Index(0);
        if manifest.len() as u64 > MAX_META_BYTES {
            return Err(err(
                LayerCheck::ChildSize,
                c0,
                format!("{} bytes, more than {MAX_META_BYTES}", manifest.len()),
            ));
        }
        let v: Value = serde_json::from_slice(manifest)
            .map_err(|e| err(LayerCheck::Manifest, c0, format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| err(LayerCheck::Manifest, c0, "not a JSON object"))?;
        let media_type = obj.get("mediaType").and_then(Value::as_str);
        if matches!(media_type, Some(OCI_INDEX | DOCKER_MANIFEST_LIST))
            || obj.contains_key("manifests")
        {
            return Err(err(
                LayerCheck::SinglePlatform,
                c0,
                "an image index / manifest list; a layered image ships one platform's manifest",
            ));
        }
        let media_type = match media_type {
            None | Some(OCI_MANIFEST) => OCI_MANIFEST,
            Some(DOCKER_MANIFEST) => DOCKER_MANIFEST,
            Some(other) => {
                return Err(err(
                    LayerCheck::MediaType,
                    c0,
                    format!("mediaType {other:?} is not {OCI_MANIFEST:?} or {DOCKER_MANIFEST:?}"),
                ))
            }
        };
        if obj.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
            return Err(err(LayerCheck::Manifest, c0, "schemaVersion is not 2"));
        }
        let descriptor = |field: &str,
                          v: Option<&Value>,
                          child: Child|
         -> Result<(RawDescriptor, Digest), LayerError> {
            let v =
                v.ok_or_else(|| err(LayerCheck::Manifest, c0, format!("{field} is missing")))?;
            let d: RawDescriptor = serde_json::from_value(v.clone())
                .map_err(|e| err(LayerCheck::Manifest, child, format!("{field}: {e}")))?;
            let digest = Digest::parse(&d.digest)
                .map_err(|e| err(LayerCheck::Manifest, child, format!("{field}.digest: {e}")))?;
            if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                return Err(err(
                    LayerCheck::ForeignLayer,
                    child,
                    format!("{field} has `urls` (a foreign layer): everything a node runs comes from the swarm"),
                ));
            }
            Ok((d, digest))
        };
        let c1 = Child::Index(1);
        let (config, config_digest) = descriptor("config", obj.get("config"), c1)?;
        let config_type = config.media_type.clone().unwrap_or_default();
        if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
            return Err(err(
                LayerCheck::MediaType,
                c1,
                format!(
                    "config.mediaType {config_type:?} is not {OCI_CONFIG:?} or {DOCKER_CONFIG:?}"
                ),
            ));
        }
        if config_digest.as_str() != image_id {
            return Err(err(
                LayerCheck::ConfigDigest,
                c1,
                format!("the manifest's config.digest is {config_digest}, the release's image.id is {image_id}"),
            ));
        }
        if config.size > MAX_META_BYTES {
            return Err(err(
                LayerCheck::ChildSize,
                c1,
                format!("{} bytes, more than {MAX_META_BYTES}", config.size),
            ));
        }
        let raw_layers = match obj.get("layers") {
            Some(Value::Array(a)) => a,
            _ => return Err(err(LayerCheck::Manifest, c0, "layers is not an array")),
        };
        if raw_layers.len() > MAX_LAYERS {
            return Err(err(
                LayerCheck::LayerCount,
                c0,
                format!("{} layers, more than {MAX_LAYERS}", raw_layers.len()),
            ));
        }
        let mut layers = Vec::with_capacity(raw_layers.len());
        for (i, l) in raw_layers.iter().enumerate() {
            let child = Child::Index(2 + i);
            let (d, digest) = descriptor(&format!("layers[{i}]"), Some(l), child)?;
            let mt = d.media_type.unwrap_or_default();
            if FOREIGN_TYPES.contains(&mt.as_str()) {
                return Err(err(
                    LayerCheck::ForeignLayer,
                    child,
                    format!("mediaType {mt:?} is a non-distributable (foreign) layer"),
                ));
            }
            if !LAYER_TYPES.contains(&mt.as_str()) {
                return Err(err(
                    LayerCheck::MediaType,
                    child,
                    format!("mediaType {mt:?} is not one of {}", LAYER_TYPES.join(", ")),
                ));
            }
            layers.push(Descriptor {
                media_type: mt,
                digest,
                size: d.size,
            });
        }
        if children != 2 + layers.len() {
            return Err(err(
                LayerCheck::ChildCount,
                Child::Root,
                format!(
                    "the root has {children} children, the manifest has {} layers (so 2 + {} children)",
                    layers.len(),
                    layers.len()
                ),
            ));
        }
        let sum = layers
            .iter()
            .try_fold(manifest.len() as u64 + config.size, |acc, l| {
                acc.checked_add(l.size)
            });
        if sum != Some(total_size) {
            return Err(err(
                LayerCheck::ChildSize,
                Child::Root,
                format!(
                    "the children add up to {} bytes, the release's image.layers.size is {total_size}",
                    sum.map_or("more than 2^64".into(), |s| s.to_string())
                ),
            ));
        }
        Ok(LayerPlan {
            manifest_digest: Digest::of(manifest),
            manifest_media_type: media_type.to_owned(),
            manifest_size: manifest.len() as u64,
            config: Descriptor {
                media_type: config_type,
                digest: config_digest,
                size: config.size,
            },
            layers,
        })
    }

    /// The plan of an image whose manifest is taken as it is (one this node published or
    /// already checked): `image.id` and the total are read from the manifest itself, so only
    /// its own consistency and the child count are checked.
    pub fn from_held(manifest: &[u8], children: usize) -> Result<LayerPlan, LayerError> {
        let v: Value = serde_json::from_slice(manifest).map_err(|e| {
            err(
                LayerCheck::Manifest,
                Child::Index(0),
                format!("not JSON: {e}"),
            )
        })?;
        let config_digest = v["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let sizes = std::iter::once(&v["config"])
            .chain(v["layers"].as_array().into_iter().flatten())
            .try_fold(manifest.len() as u64, |acc, d| {
                acc.checked_add(d["size"].as_u64().unwrap_or(0))
            })
            .unwrap_or(u64::MAX);
        LayerPlan::from_manifest(manifest, children, &config_digest, sizes)
    }

    /// Child 1's checks: its sha256 is the config digest (= `image.id`) and its platform is
    /// `host`'s.
    pub fn check_config(&self, config: &[u8], host: &Platform) -> Result<Platform, LayerError> {
        let c1 = Child::Index(1);
        if config.len() as u64 != self.config.size {
            return Err(err(
                LayerCheck::ChildSize,
                c1,
                format!(
                    "{} bytes, its descriptor says {}",
                    config.len(),
                    self.config.size
                ),
            ));
        }
        let got = Digest::of(config);
        if got != self.config.digest {
            return Err(err(
                LayerCheck::ConfigDigest,
                c1,
                format!(
                    "its sha256 is {got}, image.id and config.digest are {}",
                    self.config.digest
                ),
            ));
        }
        #[derive(Deserialize)]
        struct Cfg {
            #[serde(default)]
            os: String,
            #[serde(default)]
            architecture: String,
        }
        let cfg: Cfg = serde_json::from_slice(config).map_err(|e| {
            err(
                LayerCheck::Manifest,
                c1,
                format!("the config is not a JSON image config: {e}"),
            )
        })?;
        let found = Platform {
            os: cfg.os,
            architecture: cfg.architecture,
        };
        if found != *host {
            return Err(err(
                LayerCheck::Platform,
                c1,
                format!("the image is for {found}, this node is {host}"),
            ));
        }
        Ok(found)
    }

    /// Child `2 + i`'s check, after its bytes were hashed: size and sha256 as the manifest says.
    pub fn check_layer(&self, i: usize, hashed: Sha256Stream) -> Result<(), LayerError> {
        let child = Child::Index(2 + i);
        let want = self.layers.get(i).ok_or_else(|| {
            err(
                LayerCheck::ChildCount,
                child,
                "no such layer in the manifest",
            )
        })?;
        if hashed.len() != want.size {
            return Err(err(
                LayerCheck::ChildSize,
                child,
                format!("{} bytes, its descriptor says {}", hashed.len(), want.size),
            ));
        }
        let got = hashed.finish();
        if got != want.digest {
            return Err(err(
                LayerCheck::LayerDigest,
                child,
                format!("its sha256 is {got}, the manifest says {}", want.digest),
            ));
        }
        Ok(())
    }

    /// Every descriptor the registry serves for this image, with its child index.
    pub fn blobs(&self) -> impl Iterator<Item = (usize, &Descriptor)> {
        std::iter::once((1, &self.config))
            .chain(self.layers.iter().enumerate().map(|(i, d)| (2 + i, d)))
    }
}

#[cfg(test)]
mod tests;
