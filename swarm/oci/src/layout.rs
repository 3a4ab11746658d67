//! An OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/…`), as
//! `podman save --format oci-dir` writes it: read into the parts a layered image ships.

use crate::digest::Digest;
use crate::image::{LayerError, LayerPlan, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an OCI image layout: {reason}")]
    NotLayout { path: PathBuf, reason: String },
    #[error("the image in {path} fails a layered-image check: {source}")]
    Check { path: PathBuf, source: LayerError },
}

/// One image of a layout, ready to ship: the manifest and config bytes, each layer's file.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    /// The layer files, in manifest order (a repeated digest repeats its path).
    pub layer_files: Vec<PathBuf>,
    /// What the manifest says, checked as a consumer will check it.
    pub plan: LayerPlan,
}

impl LayoutImage {
    /// `image.id`: the config's digest.
    pub fn image_id(&self) -> &Digest {
        &self.plan.config.digest
    }

    /// `image.layers.size`: manifest + config + layers.
    pub fn total_size(&self) -> u64 {
        self.plan.manifest_size
            + self.plan.config.size
            + self.plan.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct IndexEntry {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: String,
}

fn read(path: &Path) -> Result<Vec<u8>, LayoutError> {
    std::fs::read(path).map_err(|source| LayoutError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The file of a blob in the layout, by digest (never a path from the layout's text).
pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(digest.hex())
}

/// Reads the one image of the layout at `dir`. The manifest must be a single-platform image
/// manifest; sizes are checked against the files; digests of the manifest and config are
/// recomputed (layers are checked by every consumer, and by Podman).
pub fn read_image(dir: &Path) -> Result<LayoutImage, LayoutError> {
    let not = |reason: String| LayoutError::NotLayout {
        path: dir.to_owned(),
        reason,
    };
    let index: Index = serde_json::from_slice(&read(&dir.join("index.json"))?)
        .map_err(|e| not(format!("index.json: {e}")))?;
    let [entry] = index.manifests.as_slice() else {
        return Err(not(format!(
            "index.json lists {} manifests; publish one image at a time",
            index.manifests.len()
        )));
    };
    if entry.media_type.as_deref() == Some(OCI_INDEX) {
        return Err(not(
            "index.json names an image index, not one platform's manifest".into(),
        ));
    }
    if !matches!(
        entry.media_type.as_deref(),
        None | Some(OCI_MANIFEST | DOCKER_MANIFEST)
    ) {
        return Err(not(format!("index.json names a {:?}", entry.media_type)));
    }
    let digest = Digest::parse(&entry.digest).map_err(|e| not(e.to_string()))?;
    let manifest = read(&blob_path(dir, &digest))?;
    if Digest::of(&manifest) != digest {
        return Err(not(format!("the manifest's bytes are not {digest}")));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&manifest).map_err(|e| not(format!("manifest: {e}")))?;
    let layer_count = v["layers"].as_array().map_or(0, Vec::len);
    let plan =
        LayerPlan::from_held(&manifest, 2 + layer_count).map_err(|source| LayoutError::Check {
            path: dir.to_owned(),
            source,
        })?;
    let config = read(&blob_path(dir, &plan.config.digest))?;
    if Digest::of(&config) != plan.config.digest {
        return Err(not(format!(
            "the config's bytes are not {}",
            plan.config.digest
        )));
    }
    let mut layer_files = Vec::with_capacity(plan.layers.len());
    for l in &plan.layers {
        let p = blob_path(dir, &l.digest);
        let len = std::fs::metadata(&p)
            .map_err(|source| LayoutError::Io {
                path: p.clone(),
                source,
            })?
            .len();
        if len != l.size {
            return Err(not(format!(
                "layer {} is {len} bytes on disk, the manifest says {}",
                l.digest, l.size
            )));
        }
        layer_files.push(p);
    }
    Ok(LayoutImage {
        manifest,
        config,
        layer_files,
        plan,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{OCI_CONFIG, OCI_LAYER_TAR};
    use serde_json::json;

    fn put(dir: &Path, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(blob_path(dir, &d), bytes).unwrap();
        d
    }

    #[test]
    fn reads_a_layout_and_refuses_a_broken_one() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let config = br#"{"os":"linux","architecture":"amd64"}"#;
        let layer = vec![7u8; 1000];
        let (cd, ld) = (put(dir, config), put(dir, &layer));
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cd.as_str(), "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": ld.as_str(), "size": 1000}],
        }))
        .unwrap();
        let md = put(dir, &manifest);
        let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": md.as_str(), "size": manifest.len()}]});
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
        let img = read_image(dir).unwrap();
        assert_eq!(img.image_id(), &cd);
        assert_eq!(img.layer_files, vec![blob_path(dir, &ld)]);
        assert_eq!(
            img.total_size(),
            (manifest.len() + config.len() + 1000) as u64
        );
        // A layer file of another size.
        std::fs::write(blob_path(dir, &ld), [1u8; 10]).unwrap();
        assert!(read_image(dir)
            .unwrap_err()
            .to_string()
            .contains("10 bytes on disk"));
        // Two images in one layout.
        let two = json!({"manifests": [{"digest": md.as_str()}, {"digest": md.as_str()}]});
        std::fs::write(dir.join("index.json"), two.to_string()).unwrap();
        assert!(read_image(dir)
            .unwrap_err()
            .to_string()
            .contains("2 manifests"));
    }
}
