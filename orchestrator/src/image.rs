//! Container images to and from archive files: `podman save` on the publisher, `podman load`
//! with its id checked on the consumer.
//!
//! The node moves the archive as an ordinary verified blob (the swarm knows nothing of
//! containers); here it only becomes an image. The image id (config digest) is checked after
//! loading as a second, independent guard, a mismatching image is removed, and the names the
//! archive carried are never kept: the node names what it loads in its own namespace only
//! ([`own_image_name`]), so one release cannot take over a name another app, or the operator,
//! uses.
//!
//! [`Images`] is the handful of image verbs this needs, implemented by [`PodmanCmd`] over the
//! CLI; [`Images::load_checked`] is written once on top of them, so another backend only
//! provides the verbs.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::podman::{PodmanCmd, Stdin};
use crate::runtime::QUICK;
use crate::Error;

/// Deadline for `podman save` and `podman load`: an archive may be gigabytes on a slow disk.
const ARCHIVE: Duration = Duration::from_secs(3600);

/// Archive format for `podman save`. Serialised as Podman names it (`oci-archive`,
/// `docker-archive`), which is also how manifests and the CLI's `--json` output spell it.
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

/// The image verbs behind an archive's export and checked import. Image references are names
/// or ids; ids are `sha256:<64 hex>`.
pub trait Images: Sync {
    /// The id of a local image.
    fn image_id(&self, image_ref: &str) -> impl Future<Output = Result<String, Error>> + Send;
    /// Every image name there is, with the id it points to.
    fn names(&self) -> impl Future<Output = Result<HashMap<String, String>, Error>> + Send;
    /// Adds another name to a local image.
    fn tag(&self, image_ref: &str, new_ref: &str)
        -> impl Future<Output = Result<(), Error>> + Send;
    /// Takes `name` off `image` (the image stays, even without a name).
    fn untag(&self, image: &str, name: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Removes an image reference (untags; deletes the image when it was the last tag).
    fn remove(&self, image_ref: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Writes `image_ref` as an archive to `out`.
    fn save(
        &self,
        image_ref: &str,
        format: ArchiveFormat,
        out: &Path,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Loads an archive; returns the names the load reported (at least one), as they are.
    fn load(&self, archive: &Path) -> impl Future<Output = Result<Vec<String>, Error>> + Send;
    /// Writes `image_ref` as an OCI layout in a tar archive with uncompressed layers (each
    /// layer's digest is its diff id, so it rebuilds byte-identically): `podman save
    /// --uncompressed --format oci-archive`.
    fn save_layout(
        &self,
        image_ref: &str,
        out: &Path,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Pulls `reference` (`host:port/name@sha256:…`) from a plain-HTTP registry on loopback
    /// (the node's own); returns the pulled image's id. Podman checks every digest itself.
    fn pull_loopback(&self, reference: &str) -> impl Future<Output = Result<String, Error>> + Send;

    /// Pulls `reference` and refuses the result unless its id is `expected_id` (removing it
    /// unless it was there before); tags it `own_name`. A pull by digest carries no name, so
    /// no name of anyone else's moves.
    fn pull_checked(
        &self,
        reference: &str,
        expected_id: &str,
        own_name: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        async move {
            let expected = normalize_id(expected_id)?;
            let before = self.names().await?;
            let pulled = normalize_id(&self.pull_loopback(reference).await?)?;
            if pulled != expected {
                if !before.values().any(|id| *id == pulled) {
                    if let Err(e) = self.remove(&pulled).await {
                        warn!(id = %pulled, error = %e, "could not remove refused image");
                    }
                }
                return Err(Error::ImageIdMismatch {
                    expected,
                    actual: pulled,
                });
            }
            self.tag(&expected, own_name).await?;
            info!(%reference, id = %expected, %own_name, "image pulled and id verified");
            Ok(())
        }
    }

    /// Loads `archive`, then refuses the result unless its id is `expected_id`. The names the
    /// archive carried are the publisher's choice, so none of them is kept: a name that pointed
    /// to another image before the load points to it again, a new one is removed, and the image
    /// is tagged `own_name` (the node's own namespace) instead. Nothing ever runs an image by a
    /// publisher's name; this keeps one release from taking over a name another app, or the
    /// operator, uses. A refused image is removed unless it was there before the load. Returns
    /// the names the archive carried.
    fn load_checked(
        &self,
        archive: &Path,
        expected_id: &str,
        own_name: &str,
    ) -> impl Future<Output = Result<Vec<String>, Error>> + Send {
        async move {
            let expected = normalize_id(expected_id)?;
            let before = self.names().await?;
            let names = self.load(archive).await?;
            let Some(first) = names.first() else {
                return Err(Error::Podman {
                    command: "podman load".into(),
                    message: "it reported no loaded image".into(),
                });
            };
            // An archive holds one image: every name it reported points to it.
            let loaded = self.image_id(first).await?;
            // Give every name back to the image it named before (or to nobody).
            for name in names.iter().filter(|n| !n.starts_with("sha256:")) {
                let result = match before.get(name) {
                    Some(old) if *old == loaded => Ok(()),
                    Some(old) => self.tag(old, name).await,
                    None => self.untag(&loaded, name).await,
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
                return Err(Error::ImageIdMismatch {
                    expected,
                    actual: loaded,
                });
            }
            self.tag(&expected, own_name).await?;
            info!(?names, id = %expected, %own_name, "image loaded and id verified");
            Ok(names)
        }
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

impl Images for PodmanCmd {
    async fn image_id(&self, image_ref: &str) -> Result<String, Error> {
        let args = strings(&["image", "inspect", "--format", "{{.Id}}", image_ref]);
        let out = self.ok(&args, None, QUICK).await?;
        normalize_id(out.trim())
    }

    async fn names(&self) -> Result<HashMap<String, String>, Error> {
        let out = self
            .ok(&strings(&["images", "--format", "json"]), None, QUICK)
            .await?;
        let list: Vec<serde_json::Value> = if out.trim().is_empty() {
            vec![]
        } else {
            serde_json::from_str(out.trim()).map_err(|e| Error::Podman {
                command: "podman images".into(),
                message: format!("unreadable output: {e}"),
            })?
        };
        let mut map = HashMap::new();
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

    async fn tag(&self, image_ref: &str, new_ref: &str) -> Result<(), Error> {
        self.ok(&strings(&["tag", image_ref, new_ref]), None, QUICK)
            .await
            .map(|_| ())
    }

    async fn untag(&self, image: &str, name: &str) -> Result<(), Error> {
        self.ok(&strings(&["untag", image, name]), None, QUICK)
            .await
            .map(|_| ())
    }

    async fn remove(&self, image_ref: &str) -> Result<(), Error> {
        self.ok(&strings(&["rmi", image_ref]), None, QUICK)
            .await
            .map(|_| ())
    }

    async fn save(&self, image_ref: &str, format: ArchiveFormat, out: &Path) -> Result<(), Error> {
        self.save_with(
            &strings(&["save", "--format", format.as_str(), image_ref]),
            out,
        )
        .await
    }

    async fn save_layout(&self, image_ref: &str, out: &Path) -> Result<(), Error> {
        let args = [
            "save",
            "--uncompressed",
            "--format",
            "oci-archive",
            image_ref,
        ];
        self.save_with(&strings(&args), out).await
    }

    async fn pull_loopback(&self, reference: &str) -> Result<String, Error> {
        let args = strings(&["pull", "--quiet", "--tls-verify=false", reference]);
        let out = self.ok_with(&args, Stdin::Null, ARCHIVE).await?;
        out.lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Error::Podman {
                command: self.describe(&args),
                message: format!("no image id in its output: {out:?}"),
            })
    }

    /// `load` with the archive fed on stdin (so a rootless podman user needs no read
    /// access to our directory either).
    async fn load(&self, archive: &Path) -> Result<Vec<String>, Error> {
        let out = self
            .ok_with(&strings(&["load"]), Stdin::File(archive), ARCHIVE)
            .await?;
        let names = parse_loaded(&out);
        if names.is_empty() {
            return Err(Error::Podman {
                command: "podman load".into(),
                message: format!("could not find the loaded image in its output: {out:?}"),
            });
        }
        Ok(names)
    }
}

impl PodmanCmd {
    /// Where Podman keeps image layers (`podman info`'s graph root): the disk an image's
    /// layers land on, for a space check before a pull.
    pub async fn graph_root(&self) -> Result<std::path::PathBuf, Error> {
        let args = strings(&["info", "--format", "{{.Store.GraphRoot}}"]);
        let out = self
            .ok_with(&args, Stdin::Null, Duration::from_secs(60))
            .await?;
        Ok(std::path::PathBuf::from(out.trim()))
    }

    /// `podman save …` to `out`; the archive comes through a pipe we copy from, so a rootless
    /// podman user never needs write access to our directory.
    async fn save_with(&self, args: &[String], out: &Path) -> Result<(), Error> {
        tracing::debug!(args = ?args, "podman");
        let failed = |message: String| Error::Podman {
            command: self.describe(args),
            message,
        };
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            failed(format!(
                "cannot start `{}`: {e} (is Podman installed?)",
                self.argv()[0]
            ))
        })?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let mut file = tokio::fs::File::create(out)
            .await
            .map_err(|e| Error::io(out, e))?;
        let mut err_text = Vec::new();
        let saving = async {
            let (copied, _) = tokio::join!(
                tokio::io::copy(&mut stdout, &mut file),
                tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut err_text)
            );
            (copied, child.wait().await)
        };
        // On expiry the child is dropped, which kills it.
        let (copied, status) = tokio::time::timeout(ARCHIVE, saving)
            .await
            .map_err(|_| failed(format!("no answer within {}s", ARCHIVE.as_secs())))?;
        let status = status.map_err(|e| failed(e.to_string()))?;
        if !status.success() {
            return Err(failed(format!(
                "{status}: {}",
                String::from_utf8_lossy(&err_text).trim()
            )));
        }
        let copied = copied.map_err(|e| Error::io(out, e))?;
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| Error::io(out, e))?;
        if copied == 0 {
            return Err(failed("it wrote an empty archive".into()));
        }
        Ok(())
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
pub fn normalize_id(id: &str) -> Result<String, Error> {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidImageId {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

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

    #[test]
    fn archive_formats_keep_podmans_names() {
        for (format, name) in [
            (ArchiveFormat::OciArchive, "oci-archive"),
            (ArchiveFormat::DockerArchive, "docker-archive"),
        ] {
            assert_eq!(format.as_str(), name);
            assert_eq!(serde_json::to_value(format).unwrap(), name);
        }
    }

    fn id(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    /// An image store in memory; every archive loads image `id(9)` named `archive_names`.
    struct Fake {
        names: Mutex<HashMap<String, String>>,
        archive_names: Vec<String>,
    }

    impl Fake {
        fn new(names: &[(&str, String)], archive_names: &[&str]) -> Self {
            Fake {
                names: Mutex::new(
                    names
                        .iter()
                        .map(|(n, i)| (n.to_string(), i.clone()))
                        .collect(),
                ),
                archive_names: archive_names.iter().map(|n| n.to_string()).collect(),
            }
        }

        fn get(&self, name: &str) -> Option<String> {
            self.names.lock().unwrap().get(name).cloned()
        }
    }

    impl Images for Fake {
        async fn image_id(&self, image_ref: &str) -> Result<String, Error> {
            if image_ref.starts_with("sha256:") {
                return Ok(image_ref.to_string());
            }
            self.get(image_ref).ok_or(Error::ImageMissing {
                image: image_ref.into(),
                expected: None,
            })
        }
        async fn names(&self) -> Result<HashMap<String, String>, Error> {
            Ok(self.names.lock().unwrap().clone())
        }
        async fn tag(&self, image_ref: &str, new_ref: &str) -> Result<(), Error> {
            let id = self.image_id(image_ref).await?;
            self.names.lock().unwrap().insert(new_ref.into(), id);
            Ok(())
        }
        async fn untag(&self, image: &str, name: &str) -> Result<(), Error> {
            let mut names = self.names.lock().unwrap();
            assert_eq!(names.get(name), Some(&image.to_string()));
            names.remove(name);
            Ok(())
        }
        async fn remove(&self, image_ref: &str) -> Result<(), Error> {
            let id = self.image_id(image_ref).await?;
            self.names.lock().unwrap().retain(|_, i| *i != id);
            Ok(())
        }
        async fn save(&self, _: &str, _: ArchiveFormat, _: &Path) -> Result<(), Error> {
            unreachable!("not used by load_checked")
        }
        async fn save_layout(&self, _: &str, _: &Path) -> Result<(), Error> {
            unreachable!("not used by pull_checked")
        }
        async fn pull_loopback(&self, reference: &str) -> Result<String, Error> {
            self.names.lock().unwrap().insert(reference.into(), id(9));
            Ok(id(9))
        }
        async fn load(&self, _: &Path) -> Result<Vec<String>, Error> {
            let mut names = self.names.lock().unwrap();
            for n in &self.archive_names {
                names.insert(n.clone(), id(9));
            }
            Ok(self.archive_names.clone())
        }
    }

    /// The archive's names go back to what they named before (or to nobody); only the node's
    /// own name is added.
    #[tokio::test]
    async fn a_load_keeps_no_name_of_the_archive() {
        let fake = Fake::new(&[("operator:1", id(1))], &["operator:1", "fresh:1"]);
        let names = fake
            .load_checked(Path::new("a.tar"), &id(9), "own:1")
            .await
            .unwrap();
        assert_eq!(names, ["operator:1", "fresh:1"]);
        assert_eq!(fake.get("operator:1"), Some(id(1)));
        assert_eq!(fake.get("fresh:1"), None);
        assert_eq!(fake.get("own:1"), Some(id(9)));
    }

    /// A mismatching image is refused and removed, unless it was there before the load.
    #[tokio::test]
    async fn a_mismatching_image_is_refused() {
        let fake = Fake::new(&[("operator:1", id(1))], &["operator:1"]);
        let err = fake
            .load_checked(Path::new("a.tar"), &id(7), "own:1")
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::ImageIdMismatch { expected, actual }
                if *expected == id(7) && *actual == id(9)),
            "{err}"
        );
        assert_eq!(fake.get("operator:1"), Some(id(1)));
        assert_eq!(fake.get("own:1"), None);

        let fake = Fake::new(&[("kept:1", id(9))], &["pub:1"]);
        fake.load_checked(Path::new("a.tar"), &id(7), "own:1")
            .await
            .unwrap_err();
        assert_eq!(fake.get("kept:1"), Some(id(9)), "it was there before");
        assert_eq!(fake.get("pub:1"), None);

        assert!(matches!(
            fake.load_checked(Path::new("a.tar"), "sha256:abc", "own:1")
                .await,
            Err(Error::InvalidImageId { .. })
        ));
    }

    /// A pull whose id is not the signed one is refused and the image removed; a matching one
    /// gets the node's own name.
    #[tokio::test]
    async fn a_pull_is_checked_like_a_load() {
        let fake = Fake::new(&[], &[]);
        let err = fake
            .pull_checked("127.0.0.1:1/a@sha256:x", &id(7), "own:1")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ImageIdMismatch { .. }), "{err}");
        assert_eq!(fake.get("127.0.0.1:1/a@sha256:x"), None, "removed");
        assert_eq!(fake.get("own:1"), None);
        fake.pull_checked("127.0.0.1:1/a@sha256:x", &id(9), "own:1")
            .await
            .unwrap();
        assert_eq!(fake.get("own:1"), Some(id(9)));
    }
}
