//! Real-Podman tests of image archives ([`archy_orchestrator::Images`] over [`PodmanCmd`]): an
//! image saved to an archive (both formats) and loaded back with its id checked, keeping none of
//! the names the archive carried, and refused (and removed) under another id. How the archive
//! travels between nodes is the swarm's business (blobs over iroh) and the node's
//! (`tests/tests/blobs.rs`); here it is a file.
//!
//! Needs Podman and the local busybox image that `tests/setup/podman.sh` imports
//! (`localhost/archy/busybox:latest`); skipped with a loud message if the `podman` binary is
//! absent. `ARCHY_PODMAN` (whitespace-separated, e.g. `runuser -u archy -- podman`) picks
//! another Podman. Every name a test makes is its own and removed when it ends.

use archy_orchestrator::{ArchiveFormat, Error, Images, PodmanCmd};

const BASE: &str = "localhost/archy/busybox:latest";

fn podman() -> PodmanCmd {
    let words = std::env::var("ARCHY_PODMAN").unwrap_or("podman".into());
    PodmanCmd::from_argv(words.split_whitespace().map(String::from).collect())
}

mod common;

fn podman_binary_present() -> bool {
    common::podman_binary_present(podman().argv(), "image archives")
}

/// A tag unique across parallel tests and runs.
fn unique_tag(what: &str) -> String {
    format!(
        "localhost/archy/{}:v1",
        common::unique(&format!("image-test-{what}"))
    )
}

/// Removes the names a test made, however it ended.
struct Names(Vec<String>);

impl Drop for Names {
    fn drop(&mut self) {
        let argv = podman().argv().to_vec();
        for name in &self.0 {
            let _ = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .args(["rmi", name])
                .output();
        }
    }
}

/// A new image (its own id) named `name`, from an empty root file system.
fn import_scratch_image(name: &str) -> String {
    let podman = podman().argv().join(" ");
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("tar -cf - -T /dev/null | {podman} import --message \"$$\" - {name}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    format!("sha256:{}", id.trim_start_matches("sha256:"))
}

async fn exists(podman: &PodmanCmd, image: &str) -> bool {
    podman.image_id(image).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_round_trip_through_an_archive_with_id_check() {
    if !podman_binary_present() {
        return;
    }
    let podman = podman();
    assert!(
        exists(&podman, BASE).await,
        "{BASE} is missing: run tests/setup/podman.sh first"
    );
    let tmp = tempfile::tempdir().unwrap();

    for format in [ArchiveFormat::OciArchive, ArchiveFormat::DockerArchive] {
        let tag = unique_tag(format.as_str());
        let own = format!("{tag}-own");
        let _cleanup = Names(vec![tag.clone(), own.clone()]);
        podman.tag(BASE, &tag).await.unwrap();
        let archive = tmp.path().join(format!("{}.tar", format.as_str()));
        podman.save(&tag, format, &archive).await.unwrap();
        let image_id = podman.image_id(&tag).await.unwrap();
        assert_eq!(image_id, podman.image_id(BASE).await.unwrap());
        assert!(image_id.starts_with("sha256:") && image_id.len() == 71);
        assert!(std::fs::metadata(&archive).unwrap().len() > 0);
        // The load must really bring the name back: drop the tag first.
        podman.remove(&tag).await.unwrap();
        assert!(!exists(&podman, &tag).await);

        // The publisher's name already names another image here (another app's, or the
        // operator's): the load must not take it over.
        let other = import_scratch_image(&tag);
        let names = podman
            .load_checked(&archive, &image_id, &own)
            .await
            .unwrap();
        assert_eq!(names, vec![tag.clone()]);
        assert_eq!(podman.image_id(&own).await.unwrap(), image_id);
        assert_eq!(
            podman.image_id(&tag).await.unwrap(),
            other,
            "the archive's name points to the image it named before the load"
        );
        podman.remove(&tag).await.unwrap();
        podman.remove(&own).await.unwrap();
        // A name nobody had before is not kept either: only the node's own name is.
        podman
            .load_checked(&archive, &image_id, &own)
            .await
            .unwrap();
        assert!(
            !exists(&podman, &tag).await,
            "the publisher's name is not kept"
        );
        podman.remove(&own).await.unwrap();

        // The same archive with a different expected id is refused and the image removed.
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = podman
            .load_checked(&archive, &wrong, &own)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::ImageIdMismatch { expected, actual }
                if *expected == wrong && *actual == image_id),
            "{err}"
        );
        assert!(
            !exists(&podman, &tag).await && !exists(&podman, &own).await,
            "refused image must be removed"
        );
    }
}

/// Failures name what failed, and an invalid expected id is refused before anything loads.
#[tokio::test]
async fn failures_are_errors() {
    if !podman_binary_present() {
        return;
    }
    let podman = podman();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("missing.tar");
    let missing = unique_tag("missing");
    let err = podman
        .save(&missing, ArchiveFormat::OciArchive, &archive)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Podman { command, .. } if command == "podman save"),
        "{err}"
    );
    assert!(podman.image_id(&missing).await.is_err());
    let err = podman
        .load_checked(&archive, "sha256:abc", &missing)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidImageId { .. }), "{err}");
    std::fs::write(&archive, b"not an archive").unwrap();
    let id = format!("sha256:{}", "0".repeat(64));
    let err = podman
        .load_checked(&archive, &id, &missing)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Podman { command, .. } if command == "podman load"),
        "{err}"
    );
    assert!(!exists(&podman, &missing).await);
}
