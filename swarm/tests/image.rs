//! Round trip of a real container image: exported by one node, fetched by another over iroh,
//! loaded into Podman, id checked. Needs Podman and the local busybox image that
//! tests/setup/podman.sh imports (`localhost/archy/busybox:latest`).

mod common;

use std::time::Duration;

use archy_swarm::{ArchiveFormat, FetchRequest, Podman, SwarmError};
use common::*;
use tokio::time::timeout;

const BASE: &str = "localhost/archy/busybox:latest";

/// A new image (its own id) named `name`, from an empty root file system.
fn import_scratch_image(name: &str) -> String {
    let podman = std::env::var("ARCHY_PODMAN").unwrap_or("podman".into());
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

async fn exists(podman: &Podman, image: &str) -> bool {
    podman.image_id(image).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_round_trip_over_iroh_with_id_check() {
    let podman = Podman::from_prefix(&std::env::var("ARCHY_PODMAN").unwrap_or("podman".into()));
    assert!(
        exists(&podman, BASE).await,
        "{BASE} is missing: run tests/setup/podman.sh first"
    );
    let tmp = tempfile::tempdir().unwrap();
    let publisher = node(&tmp.path().join("publisher")).await;
    let consumer = node(&tmp.path().join("consumer")).await;

    for format in [ArchiveFormat::OciArchive, ArchiveFormat::DockerArchive] {
        // A unique tag per run so parallel runs and leftovers cannot clash.
        let tag = format!(
            "localhost/archy/swarm-test-{}-{}:v1",
            format.as_str(),
            &blake3::hash(tmp.path().to_string_lossy().as_bytes()).to_hex()[..12]
        );
        podman.tag(BASE, &tag).await.unwrap();
        let exported = publisher.export_image(&podman, &tag, format).await.unwrap();
        assert_eq!(exported.image_id, podman.image_id(BASE).await.unwrap());
        assert!(exported.image_id.starts_with("sha256:") && exported.image_id.len() == 71);
        // The consumer must really load it: drop the tag on this (shared) Podman first.
        podman.remove(&tag).await.unwrap();
        assert!(!exists(&podman, &tag).await);

        let mut req = FetchRequest::new(&exported.archive.hash, exported.archive.size);
        req.origin = Some(publisher.addr());
        req.stall_timeout = Duration::from_secs(5);
        let report = timeout(SAFETY, consumer.fetch(req, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            report.bytes_from(&publisher.endpoint_id()),
            exported.archive.size
        );

        // The publisher's name already names another image here (another app's, or the
        // operator's): the load must not take it over.
        let other = import_scratch_image(&tag);
        let own = format!("{tag}-own");
        let names = consumer
            .import_image(&podman, &exported.archive.hash, &exported.image_id, &own)
            .await
            .unwrap();
        assert_eq!(names, vec![tag.clone()]);
        assert_eq!(podman.image_id(&own).await.unwrap(), exported.image_id);
        assert_eq!(
            podman.image_id(&tag).await.unwrap(),
            other,
            "the archive's name points to the image it named before the load"
        );
        podman.remove(&tag).await.unwrap();
        podman.remove(&own).await.unwrap();
        // A name nobody had before is not kept either: only the node's own name is.
        consumer
            .import_image(&podman, &exported.archive.hash, &exported.image_id, &own)
            .await
            .unwrap();
        assert!(
            !exists(&podman, &tag).await,
            "the publisher's name is not kept"
        );
        podman.remove(&own).await.unwrap();

        // The same archive with a different expected id is refused and the image removed.
        let wrong = format!("sha256:{}", "0".repeat(64));
        let err = consumer
            .import_image(&podman, &exported.archive.hash, &wrong, &own)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SwarmError::ImageIdMismatch { expected, actual }
                if *expected == wrong && *actual == exported.image_id),
            "{err}"
        );
        assert!(
            !exists(&podman, &tag).await && !exists(&podman, &own).await,
            "refused image must be removed"
        );
    }
    publisher.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}
