//! Container images as blobs: `podman save` on the publisher, `podman load` + id check on the
//! consumer. The archive travels as an ordinary verified blob; the image id (config digest) is
//! checked after loading as a second, independent guard, and a mismatching image is removed.

use std::{path::Path, process::Stdio};

use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tracing::{info, warn};

use crate::{BlobInfo, Swarm, SwarmError};

/// How to invoke Podman: a program plus leading arguments, e.g. `podman` or
/// `runuser -u archy -- podman` for a rootless user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Podman {
    argv: Vec<String>,
}

impl Default for Podman {
    fn default() -> Self {
        Podman {
            argv: vec!["podman".into()],
        }
    }
}

/// Archive format for `podman save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArchiveFormat {
    #[serde(rename = "oci-archive")]
    OciArchive,
    #[serde(rename = "docker-archive")]
    DockerArchive,
}

impl ArchiveFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveFormat::OciArchive => "oci-archive",
            ArchiveFormat::DockerArchive => "docker-archive",
        }
    }
}

/// The result of exporting an image: what the manifest's `image.id` and `image.archive` need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedImage {
    /// `sha256:<64 hex>`
    pub image_id: String,
    pub format: ArchiveFormat,
    /// The archive blob in the store.
    pub archive: BlobInfo,
}

impl Podman {
    /// Splits a command prefix on whitespace (`"runuser -u archy -- podman"`).
    pub fn from_prefix(prefix: &str) -> Self {
        let argv: Vec<String> = prefix.split_whitespace().map(String::from).collect();
        if argv.is_empty() {
            return Podman::default();
        }
        Podman { argv }
    }

    fn command(&self, args: &[&str]) -> (Command, String) {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]).args(args);
        cmd.kill_on_drop(true);
        let shown = self
            .argv
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        (cmd, shown)
    }

    async fn run(&self, args: &[&str], stdin: Option<&Path>) -> Result<String, SwarmError> {
        let (mut cmd, shown) = self.command(args);
        match stdin {
            Some(p) => {
                let f = std::fs::File::open(p)
                    .map_err(|e| SwarmError::io("opening archive for podman", p, e))?;
                cmd.stdin(Stdio::from(f));
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        let out = cmd.output().await.map_err(|e| SwarmError::Podman {
            command: shown.clone(),
            reason: format!("could not start it ({e}); is podman installed?"),
        })?;
        if !out.status.success() {
            return Err(SwarmError::Podman {
                command: shown,
                reason: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The image id of a local image as `sha256:<hex>`.
    pub async fn image_id(&self, image_ref: &str) -> Result<String, SwarmError> {
        let out = self
            .run(
                &["image", "inspect", "--format", "{{.Id}}", image_ref],
                None,
            )
            .await?;
        normalize_id(out.trim())
    }

    /// Adds another name to a local image.
    pub async fn tag(&self, image_ref: &str, new_ref: &str) -> Result<(), SwarmError> {
        self.run(&["tag", image_ref, new_ref], None)
            .await
            .map(|_| ())
    }

    /// Removes an image reference (untags; deletes the image when it was the last tag).
    pub async fn remove(&self, image_ref: &str) -> Result<(), SwarmError> {
        self.run(&["rmi", image_ref], None).await.map(|_| ())
    }

    /// `podman save` to `out`; the archive comes through a pipe we copy from, so a rootless
    /// podman user never needs write access to our directory.
    pub async fn save(
        &self,
        image_ref: &str,
        format: ArchiveFormat,
        out: &Path,
    ) -> Result<(), SwarmError> {
        let (mut cmd, shown) = self.command(&["save", "--format", format.as_str(), image_ref]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start_err = |e: std::io::Error| SwarmError::Podman {
            command: shown.clone(),
            reason: format!("could not start it ({e}); is podman installed?"),
        };
        let mut child = cmd.spawn().map_err(start_err)?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let mut file = tokio::fs::File::create(out)
            .await
            .map_err(|e| SwarmError::io("creating archive", out, e))?;
        let mut err_text = Vec::new();
        let (copied, _) = tokio::join!(
            tokio::io::copy(&mut stdout, &mut file),
            tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut err_text)
        );
        let status = child.wait().await.map_err(start_err)?;
        if !status.success() {
            return Err(SwarmError::Podman {
                command: shown,
                reason: format!("{status}: {}", String::from_utf8_lossy(&err_text).trim()),
            });
        }
        let copied = copied.map_err(|e| SwarmError::io("writing archive", out, e))?;
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| SwarmError::io("writing archive", out, e))?;
        if copied == 0 {
            return Err(SwarmError::Podman {
                command: shown,
                reason: "it wrote an empty archive".into(),
            });
        }
        Ok(())
    }

    /// Every image name Podman has, with the id it points to.
    async fn names(&self) -> Result<std::collections::HashMap<String, String>, SwarmError> {
        let out = self.run(&["images", "--format", "json"], None).await?;
        let list: Vec<serde_json::Value> = if out.trim().is_empty() {
            vec![]
        } else {
            serde_json::from_str(out.trim()).map_err(|e| SwarmError::Podman {
                command: "podman images".into(),
                reason: format!("unreadable output: {e}"),
            })?
        };
        let mut map = std::collections::HashMap::new();
        for img in list {
            let Some(id) = img["Id"].as_str().and_then(|i| normalize_id(i).ok()) else {
                continue;
            };
            for n in img["Names"].as_array().into_iter().flatten() {
                if let Some(n) = n.as_str() {
                    map.insert(n.to_string(), id.clone());
                }
            }
        }
        Ok(map)
    }

    /// `podman load` from an archive (fed on stdin), then refuses the result unless its id is
    /// `expected_id`. The names the archive carried are the publisher's choice, so none of them
    /// is kept: a name that pointed to another image before the load points to it again, a new
    /// one is removed, and the image is tagged `own_name` (the node's own namespace) instead.
    /// Nothing ever runs an image by a publisher's name; this keeps one release from taking
    /// over a name another app, or the operator, uses. Returns the names the archive carried.
    pub async fn load_checked(
        &self,
        archive: &Path,
        expected_id: &str,
        own_name: &str,
    ) -> Result<Vec<String>, SwarmError> {
        let expected = normalize_id(expected_id)?;
        let before = self.names().await?;
        let out = self.run(&["load"], Some(archive)).await?;
        let names = parse_loaded(&out);
        if names.is_empty() {
            return Err(SwarmError::Podman {
                command: "podman load".into(),
                reason: format!("could not find the loaded image in its output: {out:?}"),
            });
        }
        // An archive holds one image: every name it reported points to it.
        let loaded = self.image_id(&names[0]).await?;
        // Give every name back to the image it named before (or to nobody).
        for name in names.iter().filter(|n| !n.starts_with("sha256:")) {
            let result = match before.get(name) {
                Some(old) if *old == loaded => Ok(()),
                Some(old) => self.tag(old, name).await,
                None => self.run(&["untag", &loaded, name], None).await.map(|_| ()),
            };
            if let Err(e) = result {
                warn!(%name, error = %e, "could not restore an image name after a load");
            }
        }
        if loaded != expected {
            if !before.values().any(|id| *id == loaded) {
                if let Err(e) = self.remove(&loaded).await {
                    warn!(id = %loaded, error = %e, "could not remove refused image");
                }
            }
            return Err(SwarmError::ImageIdMismatch {
                expected,
                actual: loaded,
            });
        }
        self.tag(&expected, own_name).await?;
        info!(?names, id = %expected, %own_name, "image loaded and id verified");
        Ok(names)
    }
}

/// The node's own name for an app's image: `localhost/archy-apps/<app>:<version>`, the version
/// reduced to what a tag may hold (`+build` becomes `_build`).
pub fn own_image_name(app: &str, version: &str) -> String {
    let mut tag: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if tag.is_empty() || !tag.as_bytes()[0].is_ascii_alphanumeric() {
        tag.insert(0, 'v');
        tag.truncate(128);
    }
    format!("localhost/archy-apps/{app}:{tag}")
}

/// Accepts `sha256:<hex>` or bare `<hex>` (what `podman inspect` prints); returns the former.
pub fn normalize_id(id: &str) -> Result<String, SwarmError> {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SwarmError::InvalidImageId {
            input: id.to_string(),
        });
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// Names from `podman load` output: "Loaded image: a" or "Loaded image(s): a,b".
fn parse_loaded(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Loaded image"))
        .filter_map(|rest| rest.split_once(':').map(|(_, names)| names))
        .flat_map(|names| names.split(','))
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

impl Swarm {
    /// Publisher side: saves `image_ref` as an archive, adds it to the store, and returns the
    /// image id and archive blob for the manifest.
    pub async fn export_image(
        &self,
        podman: &Podman,
        image_ref: &str,
        format: ArchiveFormat,
    ) -> Result<ExportedImage, SwarmError> {
        let image_id = podman.image_id(image_ref).await?;
        let tmp = self.tmp_dir()?;
        let path = tmp.path().join("image.tar");
        podman.save(image_ref, format, &path).await?;
        let archive = self.add_file(&path).await?;
        info!(%image_ref, %image_id, archive = %archive.hash, size = archive.size, "image exported");
        Ok(ExportedImage {
            image_id,
            format,
            archive,
        })
    }

    /// Consumer side: loads a complete archive blob into Podman, checks its id against
    /// `expected_id` (the manifest's `image.id`) and names it `own_name` only (see
    /// [`Podman::load_checked`]). Returns the names the archive carried.
    pub async fn import_image(
        &self,
        podman: &Podman,
        archive_hash: &str,
        expected_id: &str,
        own_name: &str,
    ) -> Result<Vec<String>, SwarmError> {
        normalize_id(expected_id)?;
        let tmp = self.tmp_dir()?;
        let path = tmp.path().join("image.tar");
        self.export(archive_hash, &path).await?;
        podman.load_checked(&path, expected_id, own_name).await
    }

    fn tmp_dir(&self) -> Result<tempfile::TempDir, SwarmError> {
        let base = self.dir.join("tmp");
        std::fs::create_dir_all(&base).map_err(|e| SwarmError::io("creating tmp dir", &base, e))?;
        tempfile::tempdir_in(&base).map_err(|e| SwarmError::io("creating tmp dir", &base, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_load_output_and_ids() {
        let out = "Getting image source signatures\nLoaded image: localhost/a:1\n";
        assert_eq!(parse_loaded(out), vec!["localhost/a:1"]);
        let out = "Loaded image(s): localhost/a:1, localhost/b:2\n";
        assert_eq!(parse_loaded(out), vec!["localhost/a:1", "localhost/b:2"]);
        let hex = "06461af40c4c04b1c79ff10b778b8a9b195482b707d29973e90ba8dd2413705d";
        let out = format!("Loaded image: sha256:{hex}\n");
        assert_eq!(parse_loaded(&out), vec![format!("sha256:{hex}")]);
        assert_eq!(normalize_id(hex).unwrap(), format!("sha256:{hex}"));
        assert_eq!(
            normalize_id(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{hex}")
        );
        assert!(normalize_id("sha256:abc").is_err());
        assert_eq!(
            Podman::from_prefix("runuser -u archy -- podman").argv,
            vec!["runuser", "-u", "archy", "--", "podman"]
        );
        assert_eq!(Podman::from_prefix("  "), Podman::default());
    }

    #[test]
    fn own_names_are_valid_tags() {
        assert_eq!(
            own_image_name("web", "1.2.0+build.5"),
            "localhost/archy-apps/web:1.2.0_build.5"
        );
        assert_eq!(
            own_image_name("web", "1.0.0-rc.1"),
            "localhost/archy-apps/web:1.0.0-rc.1"
        );
    }
}
