//! Layered images (PROTOCOL §2.1 v2, issue 15): the publisher side (`podman save` of the
//! image's OCI parts with uncompressed layers → a HashSeq in the store) and the consumer side
//! (the HashSeq fetched child by child, every §2.1 check before anything reaches Podman, then
//! Podman pulls it by digest from the node's own registry, checking every sha256 itself).
//!
//! Order on the consumer side, so nothing large moves before the small parts are judged: the
//! root (≤ 4 128 bytes), child 0 (the manifest, ≤ 4 MiB; count, sizes, media types, foreign
//! layers, config digest), a disk-space preflight, child 1 (the config: its sha256 and the
//! platform), then each layer not already held, each hashed with SHA-256 against the manifest.
//! A child the store already holds complete — a layer shared with another app or the previous
//! version — is not fetched again (its sha256 is still checked, from local bytes).

use super::blobs::{self, MirrorCandidate};
use super::install::AppImage;
use super::NodeCore;
use crate::manifest::{AppManifest, BlobRef};
use anyhow::{bail, Context, Result};
use archy_oci::image::{MAX_LAYERS, MAX_META_BYTES};
use archy_oci::{LayerPlan, Platform, Sha256Stream};
use archy_orchestrator::{normalize_id, Images};
use archy_swarm::{FetchReport, FetchRequest, Hash, Part, PeerAddr, Swarm};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where published layer files are kept (referenced by the store, not copied).
const LAYER_DIR: &str = "layers";

/// How a layered image's fetch went: what was already here, what moved.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LayeredReport {
    /// The HashSeq root (`image.layers.blake3`).
    pub layers: String,
    /// Children of the root (2 + the number of layers).
    pub children: usize,
    /// Children already complete in the store (shared layers, the previous version).
    pub held: usize,
    pub held_bytes: u64,
    /// Payload bytes this install moved over the network, all parts together.
    pub transferred: u64,
    /// Verified payload bytes per source (endpoint id), all parts together, in the order the
    /// sources first sent.
    pub bytes_per_source: Vec<(String, u64)>,
    /// One report per part fetched now (root, manifest, config, layers), in order.
    pub fetches: Vec<FetchReport>,
}

impl LayeredReport {
    fn add(&mut self, r: FetchReport) {
        self.transferred += r.transferred();
        for (source, bytes) in &r.bytes_per_source {
            match self.bytes_per_source.iter_mut().find(|(s, _)| s == source) {
                Some((_, b)) => *b += bytes,
                None => self.bytes_per_source.push((source.clone(), *bytes)),
            }
        }
        if !r.already_local {
            self.fetches.push(r);
        }
    }
}

/// The fields a layered image gives a manifest (`image.id`, `image.layers`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayeredImage {
    pub id: String,
    pub layers: BlobRef,
    pub manifest_digest: String,
}

/// Whether `path` may be referenced in place: a file this process owns in a directory only
/// it can write, that nobody else can change (else it is copied).
fn private_file(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let ok = |p: &Path, dir: bool| {
        std::fs::symlink_metadata(p).is_ok_and(|m| {
            let no_others = if dir {
                m.mode() & 0o077 == 0
            } else {
                m.mode() & 0o022 == 0
            };
            m.uid() == me && no_others && (m.is_dir() == dir) && !m.file_type().is_symlink()
        })
    };
    ok(path, false) && path.parent().is_some_and(|d| ok(d, true))
}

/// Unpacks the tar of an OCI layout into `dir` (regular files and directories only; the tar
/// crate refuses paths that leave `dir`).
fn unpack(tar_path: &Path, dir: &Path) -> Result<()> {
    create_private_dir(dir)?;
    let file = std::fs::File::open(tar_path)?;
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    archive.set_preserve_permissions(false);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            bail!(
                "the layout holds a {kind:?} entry ({:?}); only files and directories are expected",
                entry.path()?
            );
        }
        if !entry.unpack_in(dir)? {
            bail!(
                "the layout holds a path outside itself: {:?}",
                entry.path()?
            );
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Publisher side: `podman save --uncompressed --format oci-archive` of `image_ref`, unpacked
/// by this node into its own directory, added to the store as the §2.1 HashSeq (manifest,
/// config, layers) and served as ours. Layer files are kept under `<swarm>/layers/` and
/// referenced in place when they are this node's own and nobody else can change them.
pub async fn export_layered(core: &NodeCore, image_ref: &str) -> Result<LayeredImage> {
    let swarm = core.swarm().await?;
    async {
        let image_id = normalize_id(&core.podman.image_id(image_ref).await?)?;
        let tmp = swarm.tmp_dir()?;
        let tar_path = tmp.path().join("image.oci.tar");
        core.podman.save_layout(image_ref, &tar_path).await?;
        let layout = tmp.path().join("layout");
        let (tp, lp) = (tar_path.clone(), layout.clone());
        tokio::task::spawn_blocking(move || unpack(&tp, &lp)).await??;
        std::fs::remove_file(&tar_path).ok();
        let img = archy_oci::layout::read_image(&layout)?;
        if img.image_id().as_str() != image_id {
            bail!(
                "the saved layout's config is {}, the image's id is {image_id}",
                img.image_id()
            );
        }
        let keep = swarm.dir().join(LAYER_DIR);
        create_private_dir(&keep)?;
        let mut parts = vec![Part::Bytes(img.manifest.clone()), Part::Bytes(img.config.clone())];
        let mut referenced = 0;
        for (file, d) in img.layer_files.iter().zip(&img.plan.layers) {
            let kept = keep.join(d.digest.hex());
            if !kept.exists() && std::fs::rename(file, &kept).is_ok() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o400))?;
            }
            // A file kept by an earlier export is only reused if it still is what the
            // manifest says (size here; every consumer and Podman check the digest).
            let intact = std::fs::metadata(&kept).is_ok_and(|m| m.len() == d.size);
            let (path, reference) = if intact && private_file(&kept) {
                referenced += 1;
                (kept, true)
            } else if intact {
                (kept, false)
            } else {
                (file.clone(), false)
            };
            parts.push(Part::File { path, reference });
        }
        let info = swarm.add_hashseq(parts).await?;
        if info.content_size() != img.total_size() {
            bail!(
                "the store holds {} bytes of parts, the layout {}",
                info.content_size(),
                img.total_size()
            );
        }
        let children: Vec<Hash> = info
            .children
            .iter()
            .map(|c| archy_swarm::parse_hash(&c.hash))
            .collect::<Result<_, _>>()?;
        core.registry().await?.add_image(&img.plan, &children);
        tracing::info!(%image_ref, %image_id, root = %info.root.hash, size = info.content_size(), layers = img.plan.layers.len(), referenced, "layered image exported");
        let size = info.content_size();
        Ok(LayeredImage {
            id: image_id,
            layers: BlobRef {
                blake3: info.root.hash,
                size,
                format: crate::manifest::LAYERS_FORMAT.into(),
            },
            manifest_digest: img.plan.manifest_digest.to_string(),
        })
    }
    .await
    .with_context(|| format!("exporting image {image_ref} as layers"))
}

/// Layers fetched at once: a second layer keeps the sources busy while the first one's last
/// pieces come in, and two spreads of one image split the peers' turns.
const LAYERS_AT_ONCE: usize = 2;

/// How a layered image's parts find their sources: the root's mirrors (given), and, when
/// `rank` is set, the mirrors announced under the part's own hash (§4.3 v2: a layer shared
/// with another image is found under either), at the start and while the part is fetched.
type Rank<'a> = Option<&'a RankFn<'a>>;

/// A mirror ranker (the install path's: by trust tier).
type RankFn<'a> = dyn Fn(Vec<MirrorCandidate>) -> Vec<MirrorCandidate> + Send + Sync + 'a;

/// Fetches one part: `size` exact when the manifest gives it, else bounded by `max`; from the
/// origin first, then the peers found for the root (and for the part, with `rank`).
async fn fetch_part(
    core: &NodeCore,
    hash: &str,
    size: Option<u64>,
    max: Option<u64>,
    origin: &PeerAddr,
    who: &blobs::Accountable,
    rank: Rank<'_>,
) -> Result<FetchReport> {
    let mut req = match size {
        Some(s) => FetchRequest::new(hash, s),
        None => FetchRequest::hash_only(hash),
    };
    req.max_size = max;
    req.origin = Some(origin.clone());
    req.peers = who.announcers.iter().map(|c| c.peer.clone()).collect();
    match rank {
        Some(rank) => blobs::fetch_with_mirrors(core, req, true, rank, who.clone()).await,
        None => blobs::fetch_with_mirrors(core, req, false, |m| m, who.clone()).await,
    }
}

/// SHA-256 of a complete blob, read from the store.
async fn sha256_of(swarm: &Swarm, hash: Hash, size: u64) -> Result<Sha256Stream> {
    let mut s = Sha256Stream::default();
    let mut stream = std::pin::pin!(swarm.reader().read_range(hash, 0, size));
    while let Some(piece) = stream.next().await {
        s.update(&piece?);
    }
    Ok(s)
}

/// Free bytes for this user on the file system holding `dir` (its nearest existing ancestor).
fn free_at(dir: &Path) -> Option<(PathBuf, u64)> {
    let mut d = dir.to_path_buf();
    while !d.exists() {
        d = d.parent()?.to_path_buf();
    }
    let st = rustix::fs::statvfs(&d).ok()?;
    Some((d, st.f_bavail.saturating_mul(st.f_frsize)))
}

/// Refuses an install whose missing parts (store) and image (Podman) would not fit.
async fn preflight(core: &NodeCore, swarm: &Swarm, missing: u64, image: u64) -> Result<()> {
    let reserve = 16u64 << 20;
    let store = free_at(swarm.dir());
    let podman = match core.podman.graph_root().await {
        Ok(root) => free_at(&root),
        Err(e) => {
            tracing::warn!("could not find Podman's storage for the disk-space check: {e}");
            None
        }
    };
    let same_fs = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        matches!((std::fs::metadata(a), std::fs::metadata(b)), (Ok(x), Ok(y)) if x.dev() == y.dev())
    };
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let mut checks = vec![];
    match (&store, &podman) {
        (Some((s, sf)), Some((p, _))) if same_fs(s, p) => checks.push((
            s.clone(),
            *sf,
            missing + missing / 64 + image + reserve,
            "the blob store and Podman's storage",
        )),
        _ => {
            if let Some((s, sf)) = &store {
                checks.push((
                    s.clone(),
                    *sf,
                    missing + missing / 64 + reserve,
                    "the blob store",
                ));
            }
            if let Some((p, pf)) = &podman {
                checks.push((p.clone(), *pf, image + reserve, "Podman's storage"));
            }
        }
    }
    for (dir, free, needed, what) in checks {
        if free < needed {
            bail!(
                "disk-space preflight: {what} at {} needs {} ({} of layers still to fetch, {} for \
                 Podman's copy of the image, a reserve), only {} are free; free some space and \
                 install again",
                dir.display(),
                mib(needed),
                mib(missing),
                mib(image),
                mib(free)
            );
        }
    }
    Ok(())
}

/// Consumer side: makes the release's layered image present in Podman (tagged with the node's
/// own name, run by `image.id`), fetching only the parts not held, every §2.1 check first;
/// with `load` false, only into the blob store (`archy apps fetch`: Podman is left alone, and
/// a later install finds every part held). With `[swarm] mirror` on, the image is served as a
/// partial mirror from the moment its parts are known (its root fetched) and as a mirror once
/// it is complete; a failure withdraws that.
pub(crate) async fn ensure_layered(
    core: &NodeCore,
    m: &AppManifest,
    img: &AppImage<'_>,
    layers: &BlobRef,
    origin: PeerAddr,
    rank: impl Fn(Vec<MirrorCandidate>) -> Vec<MirrorCandidate> + Send + Sync,
    load: bool,
) -> Result<LayeredReport> {
    let result = fetch_layered(core, m, img, layers, origin, &rank, load).await;
    match &result {
        Ok(_) => {
            blobs::mirror_if_configured(core, &layers.blake3).await;
        }
        Err(_) => blobs::end_partial(core, &layers.blake3).await,
    }
    result
}

async fn fetch_layered(
    core: &NodeCore,
    m: &AppManifest,
    img: &AppImage<'_>,
    layers: &BlobRef,
    origin: PeerAddr,
    rank: &RankFn<'_>,
    load: bool,
) -> Result<LayeredReport> {
    let swarm = core.swarm().await?;
    let root = layers.blake3.as_str();
    let mut report = LayeredReport {
        layers: root.to_owned(),
        ..Default::default()
    };
    let refuse = |e: archy_oci::LayerError| {
        anyhow::anyhow!("refusing the layered image of {} {}: {e}", m.id, m.version)
    };
    // Peers for every part: mirrors of the root (an announcement names the root, §4.3); bad
    // bytes count against their announcers, or the publisher for the origin.
    let announcers = if swarm.has(root).await? {
        Vec::new()
    } else {
        match blobs::find_mirrors(core, root).await {
            Ok(found) => rank(found),
            Err(e) => {
                tracing::warn!("mirror look-up failed, fetching from the origin only: {e:#}");
                Vec::new()
            }
        }
    };
    let peers = blobs::Accountable {
        origin_key: Some(m.publisher.nostr.clone()),
        announcers,
    };
    let max_root = 32 * (2 + MAX_LAYERS as u64);
    let r = fetch_part(core, root, None, Some(max_root), &origin, &peers, None)
        .await
        .context("fetching the image's HashSeq root")?;
    let children_count = LayerPlan::check_root_size(r.size).map_err(refuse)?;
    report.add(r);
    let children = swarm.hashseq_children(root).await?;
    report.children = children.len();
    blobs::start_partial(core, root, &children).await;
    debug_assert_eq!(children.len(), children_count);
    let hex = |i: usize| children[i].to_hex();
    let r = fetch_part(
        core,
        &hex(0),
        None,
        Some(MAX_META_BYTES),
        &origin,
        &peers,
        None,
    )
    .await
    .context("fetching child 0 (the image manifest)")?;
    report.add(r);
    let manifest = swarm.read_bytes(&hex(0)).await?;
    let plan = LayerPlan::from_manifest(&manifest, children.len(), &img.image.id, layers.size)
        .map_err(refuse)?;
    // What is still missing, and what Podman will need.
    let mut missing = 0;
    for (i, d) in plan.blobs() {
        if !swarm.has(&hex(i)).await? {
            missing += d.size - swarm.local_bytes(&hex(i)).await?.min(d.size);
        }
    }
    let image_bytes: u64 = plan.layers.iter().map(|l| l.size).sum();
    preflight(core, swarm, missing, image_bytes).await?;
    let r = fetch_part(
        core,
        &hex(1),
        Some(plan.config.size),
        None,
        &origin,
        &peers,
        None,
    )
    .await
    .context("fetching child 1 (the image config)")?;
    report.add(r);
    let config = swarm.read_bytes(&hex(1)).await?;
    plan.check_config(&config, &Platform::host())
        .map_err(refuse)?;
    // Layers [`LAYERS_AT_ONCE`] at a time (§5.3: different children of the image at once, each
    // spread over the origin and the peers itself); each is checked as soon as it is whole.
    let (plan_ref, origin_ref, peers_ref, hex_ref) = (&plan, &origin, &peers, &hex);
    let children_ref = &children;
    let mut layers: Vec<(usize, Option<FetchReport>)> = futures::stream::iter(0..plan.layers.len())
        .map(|i| async move {
            let (child, l) = (2 + i, &plan_ref.layers[i]);
            let fetched = if swarm.has(&hex_ref(child)).await? {
                None
            } else {
                let r = fetch_part(
                    core,
                    &hex_ref(child),
                    Some(l.size),
                    None,
                    origin_ref,
                    peers_ref,
                    Some(rank),
                )
                .await
                .with_context(|| format!("fetching child {child} (layer {i}, {})", l.digest))?;
                Some(r)
            };
            // The whole blob is hashed (a held blob of another size fails `child-size`).
            let size = swarm.blob_info(&hex_ref(child)).await?.size;
            let hashed = sha256_of(swarm, children_ref[child], size).await?;
            plan_ref.check_layer(i, hashed).map_err(refuse)?;
            anyhow::Ok((i, fetched))
        })
        .buffer_unordered(LAYERS_AT_ONCE)
        .try_collect()
        .await?;
    layers.sort_by_key(|(i, _)| *i);
    for (i, fetched) in layers {
        match fetched {
            Some(r) => report.add(r),
            None => {
                report.held += 1;
                report.held_bytes += plan.layers[i].size;
            }
        }
    }
    for i in [0, 1] {
        if report.fetches.iter().all(|f| f.hash != hex(i)) {
            report.held += 1;
            report.held_bytes += if i == 0 {
                plan.manifest_size
            } else {
                plan.config.size
            };
        }
    }
    swarm.keep_fetched_hashseq(root).await?;
    if !load {
        return Ok(report);
    }
    let registry = core.registry().await?;
    registry.add_image(&plan, &children);
    let reference = registry.reference(&m.id, &plan.manifest_digest);
    super::gc::record_image(core, &img.image.id)?;
    core.podman
        .pull_checked(&reference, &img.image.id, &img.own)
        .await
        .with_context(|| format!("pulling {reference} into Podman"))?;
    Ok(report)
}
