//! Garbage collection (issue 15): one definition of "live", used by `archy blob gc` and by the
//! pass after every update and uninstall. A blob (with, for a layered image, its children) is
//! live when it is
//! - the image of an installed app's **current** or **previous** version (the rollback
//!   target), as the reconciler records them;
//! - this node's **own** (published here, or `archy blob add`): an origin keeps serving every
//!   version it published;
//! - **pinned** by the operator (`archy blob pin`);
//! - in a fetch **in flight**.
//!
//! Everything else loses its tag (and, if mirrored, its mirror announcement is withdrawn);
//! iroh-blobs' GC then sweeps what no tag or protection holds. Podman images in the node's own
//! namespace (`localhost/archy-apps/…`) that no installed app's current or previous spec runs
//! are removed. [`plan`] is pure; [`run`] reads the state, applies the plan and reports.
//!
//! Crash safety: the pass only ever drops tags of blobs that are not live, computed from
//! committed state; a kill at any point leaves every live blob tagged. A tag dropped before
//! the kill is dropped for good, which is what the pass decided.

use super::NodeCore;
use anyhow::{Context, Result};
use archy_orchestrator::Images;
use archy_swarm::{TagEntry, TagKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Why something is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "kebab-case")]
pub enum Keep {
    /// The image of an installed app's current version.
    Installed {
        app: String,
        version: String,
    },
    /// The image of an installed app's previous version (its rollback target).
    Rollback {
        app: String,
        version: String,
    },
    /// Added here: this node is its origin.
    Own,
    /// Another tool's tag (a `sendme` ticket's), which this pass leaves alone.
    OtherTool,
    Pinned,
    InFlight,
}

/// What the pass looks at: the store's tags and HashSeq children, and what is live by role.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub tags: Vec<TagEntry>,
    /// Children of HashSeq roots (complete roots only).
    pub children: BTreeMap<String, Vec<String>>,
    /// Image roots of installed apps' current and previous versions.
    pub images: Vec<(String, Keep)>,
    pub pins: BTreeSet<String>,
    pub in_flight: Vec<String>,
    /// Roots this node mirrors.
    pub mirrored: BTreeSet<String>,
}

/// What the pass decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every live hash (roots and their children) with why.
    pub keep: BTreeMap<String, BTreeSet<Keep>>,
    /// Tags to drop.
    pub drop: Vec<TagEntry>,
    /// Mirrored roots to stop mirroring (their announcements are withdrawn).
    pub unmirror: Vec<String>,
}

/// The pure decision: live = images of installed versions ∪ own ∪ pins ∪ in flight, each with
/// a HashSeq root's children; every tag of something not live is dropped.
pub fn plan(inputs: &Inputs) -> Plan {
    let mut keep: BTreeMap<String, BTreeSet<Keep>> = BTreeMap::new();
    let mark = |hash: &str, why: Keep, keep: &mut BTreeMap<String, BTreeSet<Keep>>| {
        keep.entry(hash.to_owned()).or_default().insert(why.clone());
        for c in inputs.children.get(hash).into_iter().flatten() {
            keep.entry(c.clone()).or_default().insert(why.clone());
        }
    };
    for (root, why) in &inputs.images {
        mark(root, why.clone(), &mut keep);
    }
    for t in &inputs.tags {
        // Own tags, and tags of other tools (sendme interop), are never this pass's to drop.
        match t.kind {
            TagKind::Own => mark(&t.hash, Keep::Own, &mut keep),
            TagKind::Other => mark(&t.hash, Keep::OtherTool, &mut keep),
            TagKind::Fetched => {}
        }
    }
    for p in &inputs.pins {
        mark(p, Keep::Pinned, &mut keep);
    }
    for f in &inputs.in_flight {
        mark(f, Keep::InFlight, &mut keep);
    }
    let drop: Vec<TagEntry> = inputs
        .tags
        .iter()
        .filter(|t| t.kind == TagKind::Fetched && !keep.contains_key(&t.hash))
        .cloned()
        .collect();
    let unmirror = inputs
        .mirrored
        .iter()
        .filter(|m| !keep.contains_key(*m))
        .cloned()
        .collect();
    Plan {
        keep,
        drop,
        unmirror,
    }
}

/// One blob in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcBlob {
    pub hash: String,
    /// Bytes of the blob and, for a HashSeq root, its children.
    pub size: u64,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub why: Vec<Keep>,
}

/// The reply of `archy blob gc`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Tagged roots kept, with why.
    pub kept: Vec<GcBlob>,
    /// Tagged blobs that go (with their children not kept otherwise).
    pub removed: Vec<GcBlob>,
    /// Bytes the store frees (blobs and children nothing else keeps).
    pub freed_bytes: u64,
    /// Mirror announcements withdrawn.
    pub unmirrored: Vec<String>,
    /// Podman images (the node's own names) removed, and those kept with why.
    pub images_removed: Vec<String>,
    pub images_kept: Vec<String>,
    /// What could not be done (an image a container still uses, a relay down): not errors of
    /// the pass, which keeps what it could not remove.
    pub warnings: Vec<String>,
}

/// The image roots of installed apps' current and previous versions, and the Podman image ids
/// their specs run.
async fn installed_images(core: &NodeCore) -> Result<(Vec<(String, Keep)>, BTreeSet<String>)> {
    let r = core.reconciler().await?;
    let mut roots = Vec::new();
    let mut ids = BTreeSet::new();
    for inst in core.catalog.installed()? {
        let Some(record) = r.record(&inst.app)? else {
            continue;
        };
        let releases = core.catalog.releases(&inst.did, &inst.app)?;
        let mut versions = vec![(
            record.current.version.clone(),
            Keep::Installed {
                app: inst.app.clone(),
                version: record.current.version.clone(),
            },
        )];
        if let Some(prev) = &record.previous {
            versions.push((
                prev.version.clone(),
                Keep::Rollback {
                    app: inst.app.clone(),
                    version: prev.version.clone(),
                },
            ));
        }
        for (version, why) in versions {
            if let Some(rel) = releases.iter().find(|x| x.version == version) {
                let m = rel.manifest()?;
                for image in m.images() {
                    roots.push((image.blob().blake3.clone(), why.clone()));
                }
            }
        }
    }
    // Every spec the reconciler keeps (catalog installs and local manifests) pins its image.
    for st in r.list().await? {
        if let Some(record) = r.record(&st.app)? {
            for spec in std::iter::once(&record.current).chain(record.previous.as_ref()) {
                ids.extend(spec.services.iter().filter_map(|s| s.image_id.clone()));
            }
        }
    }
    Ok((roots, ids))
}

/// Runs a pass (or, with `dry_run`, says what it would do). The caller holds `app_ops`, so no
/// install or update changes what is live meanwhile.
pub async fn run(core: &NodeCore, dry_run: bool) -> Result<GcReport> {
    let swarm = core.swarm().await?;
    let (images, live_ids) = installed_images(core)
        .await
        .context("reading what installed apps use")?;
    let tags = swarm.tags().await?;
    let mut children = BTreeMap::new();
    for t in tags.iter().filter(|t| t.hash_seq) {
        if let Ok(c) = swarm.hashseq_children(&t.hash).await {
            children.insert(t.hash.clone(), c.iter().map(|h| h.to_hex()).collect());
        }
    }
    let inputs = Inputs {
        tags,
        children,
        images,
        pins: swarm.pins()?,
        in_flight: swarm.in_flight(),
        mirrored: swarm.mirrors().into_iter().collect(),
    };
    let plan = plan(&inputs);
    let size_of =
        |hash: String| async move { swarm.blob_info(&hash).await.map(|b| b.size).unwrap_or(0) };
    let mut report = GcReport {
        dry_run,
        kept: Vec::new(),
        removed: Vec::new(),
        freed_bytes: 0,
        unmirrored: plan.unmirror.clone(),
        images_removed: Vec::new(),
        images_kept: Vec::new(),
        warnings: Vec::new(),
    };
    let roots: BTreeSet<&str> = inputs.tags.iter().map(|t| t.hash.as_str()).collect();
    for root in &roots {
        let mut size = size_of(root.to_string()).await;
        for c in inputs.children.get(*root).into_iter().flatten() {
            size += size_of(c.clone()).await;
        }
        if let Some(why) = plan.keep.get(*root) {
            report.kept.push(GcBlob {
                hash: (*root).to_owned(),
                size,
                why: why.iter().cloned().collect(),
            });
        }
    }
    let mut freed = BTreeSet::new();
    for t in &plan.drop {
        let mut size = size_of(t.hash.clone()).await;
        if freed.insert(t.hash.clone()) {
            report.freed_bytes += size;
        }
        for c in inputs.children.get(&t.hash).into_iter().flatten() {
            if !plan.keep.contains_key(c) {
                let s = size_of(c.clone()).await;
                size += s;
                if freed.insert(c.clone()) {
                    report.freed_bytes += s;
                }
            }
        }
        report.removed.push(GcBlob {
            hash: t.hash.clone(),
            size,
            why: Vec::new(),
        });
    }
    // Podman: images this node brought in (pulled or loaded: `podman-images.json`) that no
    // installed spec runs. Another node sharing this Podman user owns its own images, so only
    // ours are candidates. An image's registry reference stays after its names are untagged,
    // so it then goes by id; one the operator also named keeps existing under that name.
    let names = core.podman.names().await.unwrap_or_default();
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, id) in &names {
        by_id.entry(id.clone()).or_default().push(name.clone());
    }
    let bare = |id: &str| id.trim_start_matches("sha256:").to_owned();
    let live: BTreeSet<String> = live_ids.iter().map(|i| bare(i)).collect();
    let brought = brought_in(core)?;
    let mut podman_plan = Vec::new();
    for id in &brought {
        let names = by_id
            .get(&format!("sha256:{}", bare(id)))
            .cloned()
            .unwrap_or_default();
        let own: Vec<String> = names
            .iter()
            .filter(|n| is_own_image_name(n))
            .cloned()
            .collect();
        let label = if own.is_empty() {
            id.clone()
        } else {
            own.join(", ")
        };
        if live.contains(&bare(id)) {
            report.images_kept.push(label);
        } else {
            let whole = names
                .iter()
                .all(|n| is_own_image_name(n) || is_registry_ref(n));
            report.images_removed.push(label);
            podman_plan.push((id.clone(), own, whole));
        }
    }
    report.images_kept.sort();
    report.images_removed.sort();
    if dry_run {
        return Ok(report);
    }
    for t in &plan.drop {
        swarm.untag(t).await?;
    }
    for m in &plan.unmirror {
        swarm.mirror_remove(m)?;
        match withdraw(core, m).await {
            Ok(()) => {}
            Err(e) => report.warnings.push(format!(
                "mirror of {m} withdrawn here, not on the relays: {e:#}"
            )),
        }
    }
    let mut still = brought.clone();
    for (id, own, whole) in podman_plan {
        for n in &own {
            if let Err(e) = core.podman.untag(&id, n).await {
                report.warnings.push(format!("image name {n} kept: {e}"));
            }
        }
        if !whole {
            // The operator (or another tool) names it too: it stays, as theirs.
            still.remove(&id);
            continue;
        }
        match core.podman.remove(&id).await {
            Ok(()) => {
                still.remove(&id);
            }
            Err(e) => report.warnings.push(format!("image {id} kept: {e}")),
        }
    }
    // Images gone by other means (the operator removed them) are forgotten too.
    still.retain(|id| by_id.contains_key(&format!("sha256:{}", bare(id))));
    save_brought_in(core, &still)?;
    tracing::info!(
        dropped = plan.drop.len(),
        freed = report.freed_bytes,
        images = report.images_removed.len(),
        "gc pass"
    );
    Ok(report)
}

/// After a pass: waits (boundedly) for a whole sweep of the store, so what this pass and the
/// ones before it dropped is gone, then rebuilds the registry's index from what is kept.
pub async fn settle(core: &NodeCore, report: &mut GcReport) -> Result<()> {
    let swarm = core.swarm().await?;
    if !swarm.wait_for_sweep().await {
        report.warnings.push(
            "the store's sweep did not run in time: what goes is removed at its next run".into(),
        );
    }
    if let Some(reg) = core.registry_if_started() {
        reg.reindex(swarm).await?;
    }
    Ok(())
}

/// Where the node records the Podman images it brought in (pulled or loaded), by id.
const BROUGHT_IN: &str = "podman-images.json";

fn brought_in(core: &NodeCore) -> Result<BTreeSet<String>> {
    let path = core.home.join(BROUGHT_IN);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn save_brought_in(core: &NodeCore, ids: &BTreeSet<String>) -> Result<()> {
    let path = core.home.join(BROUGHT_IN);
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(ids)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// Records that this node brought image `id` into Podman (a checked pull or load): GC may
/// remove it once no installed spec runs it. Recorded before the image is used.
pub fn record_image(core: &NodeCore, id: &str) -> Result<()> {
    let mut ids = brought_in(core)?;
    if ids.insert(archy_orchestrator::normalize_id(id)?) {
        save_brought_in(core, &ids)?;
    }
    Ok(())
}

/// The node's own image names: `localhost/archy-apps/<app>:<version>`.
fn is_own_image_name(name: &str) -> bool {
    name.starts_with("localhost/archy-apps/")
}

/// A reference an image was pulled by from a node's loopback registry
/// (`127.0.0.1:<port>/archy/<app>…`, or `[::1]:<port>/…`).
fn is_registry_ref(name: &str) -> bool {
    let Some((host, path)) = name.split_once('/') else {
        return false;
    };
    let loopback = host.rsplit_once(':').is_some_and(|(ip, port)| {
        port.parse::<u16>().is_ok()
            && ip
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    loopback && path.starts_with("archy/")
}

pub(super) async fn withdraw(core: &NodeCore, hash: &str) -> Result<()> {
    let at = core.event_time(hash);
    let event = crate::events::build_mirror_withdrawal(core.identity.nostr_keys(), hash, at)?;
    core.pool().await?.publish(&event).await?;
    Ok(())
}

/// The pass after an update or uninstall: best effort (logged), never failing the operation.
pub async fn after_change(core: &NodeCore) {
    match run(core, false).await {
        Ok(r) if !r.warnings.is_empty() => tracing::warn!(warnings = ?r.warnings, "gc pass"),
        Ok(_) => {}
        Err(e) => tracing::warn!("gc pass after an app change failed (nothing was lost): {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(hash: &str, kind: TagKind, seq: bool) -> TagEntry {
        TagEntry {
            name: format!("{kind:?}/{hash}"),
            hash: hash.into(),
            hash_seq: seq,
            kind,
        }
    }

    fn inputs() -> Inputs {
        let mut children = BTreeMap::new();
        children.insert(
            "v1".into(),
            vec!["m1".into(), "c1".into(), "base".into(), "l1".into()],
        );
        children.insert(
            "v2".into(),
            vec!["m2".into(), "c2".into(), "base".into(), "l2".into()],
        );
        children.insert(
            "v3".into(),
            vec!["m3".into(), "c3".into(), "base".into(), "l3".into()],
        );
        Inputs {
            tags: vec![
                tag("v1", TagKind::Fetched, true),
                tag("v2", TagKind::Fetched, true),
                tag("v3", TagKind::Fetched, true),
                tag("junk", TagKind::Fetched, false),
                tag("mine", TagKind::Own, true),
                tag("sendme", TagKind::Other, false),
                tag("flying", TagKind::Fetched, false),
                tag("kept", TagKind::Fetched, false),
            ],
            children,
            images: vec![
                (
                    "v3".into(),
                    Keep::Installed {
                        app: "a".into(),
                        version: "3".into(),
                    },
                ),
                (
                    "v2".into(),
                    Keep::Rollback {
                        app: "a".into(),
                        version: "2".into(),
                    },
                ),
            ],
            pins: ["kept".to_owned()].into(),
            in_flight: vec!["flying".into()],
            mirrored: ["v1".to_owned(), "v3".to_owned()].into(),
        }
    }

    #[test]
    fn keeps_current_previous_own_pinned_and_in_flight_and_drops_the_rest() {
        let p = plan(&inputs());
        let dropped: Vec<&str> = p.drop.iter().map(|t| t.hash.as_str()).collect();
        assert_eq!(dropped, ["v1", "junk"], "in tag order");
        assert_eq!(p.unmirror, ["v1"]);
        // A shared layer is live through either version; v1's own layer is not.
        assert!(p.keep["base"].len() == 2, "{:?}", p.keep["base"]);
        assert!(!p.keep.contains_key("l1"));
        assert!(p.keep.contains_key("l2") && p.keep.contains_key("l3"));
        for h in ["mine", "sendme", "kept", "flying"] {
            assert!(p.keep.contains_key(h), "{h}");
        }
    }

    #[test]
    fn registry_references_are_told_apart() {
        assert!(is_registry_ref("127.0.0.1:30773/archy/gc-1@sha256:ab"));
        assert!(is_registry_ref("[::1]:5000/archy/x:tag"));
        assert!(!is_registry_ref("docker.io/archy/x:1"));
        assert!(!is_registry_ref("10.0.0.1:5000/archy/x"));
        assert!(!is_registry_ref("127.0.0.1:5000/other/x"));
        assert!(is_own_image_name("localhost/archy-apps/web:1.0.0"));
        assert!(!is_own_image_name("localhost/archy/web:1.0.0"));
    }

    #[test]
    fn nothing_live_is_ever_dropped() {
        // Whatever the inputs, a dropped tag's hash is not live: exhaustively over which roles
        // each root has.
        for mask in 0u32..(1 << 6) {
            let mut i = inputs();
            i.images
                .retain(|(r, _)| (r == "v3" && mask & 1 != 0) || (r == "v2" && mask & 2 != 0));
            if mask & 4 != 0 {
                i.pins.insert("v1".into());
            }
            if mask & 8 != 0 {
                i.in_flight.push("junk".into());
            }
            if mask & 16 != 0 {
                i.pins.clear();
            }
            if mask & 32 != 0 {
                i.in_flight.clear();
            }
            let p = plan(&i);
            for t in &p.drop {
                assert!(!p.keep.contains_key(&t.hash), "mask {mask}: {t:?}");
                assert_eq!(t.kind, TagKind::Fetched);
            }
        }
    }
}
