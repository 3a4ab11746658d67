//! The install and update flow: catalog release → trust gate → image fetched
//! through the swarm (origin first, mirrors as fallback, every chunk verified) → loaded into
//! Podman with its id checked → handed to the reconciler → mirrored and announced.

use super::apps::spec_from_manifest;
use super::NodeCore;
use crate::catalog::{InstalledRecord, ReleaseRecord};
use crate::manifest::{AppManifest, Image, ImageContent};
use crate::unix_now;
use anyhow::{bail, Context, Result};
use archy_orchestrator::{normalize_id, own_image_name, Images, InstallOutcome};
use archy_swarm::FetchReport;
use archy_swarm::PeerAddr;
use serde::{Deserialize, Serialize};

/// The reply of `apps install` (and of `apps update` when there was an update).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallReport {
    pub app: String,
    pub version: String,
    pub did: String,
    /// The publisher's tier when the trust gate let it through.
    pub tier: archy_trust::Tier,
    /// Where the image archive came from (a stack's: its first service's).
    pub fetch: ImageSource,
    pub outcome: InstallOutcome,
    /// Whether this node now mirrors the image (`[swarm] mirror`; a stack's: every image).
    pub mirrored: bool,
    /// Where the app answers (its tcp ports).
    pub urls: Vec<String>,
    /// A stack's images, one per service (PROTOCOL §2.2); empty for one container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceImage>,
    /// The dependencies this install installed first (PROTOCOL §2.2), each through the same
    /// trust gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<InstallReport>,
    /// The publisher was below the install tier and `--confirm` accepted it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirmed: bool,
}

/// Where one service's image came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceImage {
    pub service: String,
    pub fetch: ImageSource,
}

/// Where an install's image came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageSource {
    /// A layered image (§2.1): what was held, what moved.
    Layered(super::layers::LayeredReport),
    /// Fetched through the swarm now.
    Fetched(FetchReport),
    /// Already in the local blob store: `{"source": "already in the local store"}`.
    AlreadyLocal { source: String },
}

/// The reply of `apps fetch`: the release's image is in the blob store, verified, nothing
/// installed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchImageReport {
    pub app: String,
    pub version: String,
    pub did: String,
    /// The publisher's tier when the trust gate let it through.
    pub tier: archy_trust::Tier,
    pub fetch: ImageSource,
    /// Whether this node now mirrors the image (`[swarm] mirror`).
    pub mirrored: bool,
    /// A stack's images, one per service (PROTOCOL §2.2); empty for one container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceImage>,
}

/// The reply of `apps update`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UpdateReply {
    /// Moved to the newer release.
    Installed(Box<InstallReport>),
    /// Nothing newer from the same publisher: `{"app", "result": "up to date"}`.
    UpToDate { app: String, result: String },
}

/// The manifest's origin as a swarm address.
fn origin_addr(m: &AppManifest) -> Result<PeerAddr> {
    let addrs = m
        .origin
        .addrs
        .iter()
        .map(|a| a.parse().with_context(|| format!("origin address {a:?}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(PeerAddr::new(&m.origin.endpoint, addrs)?)
}

/// Mirrors by PROTOCOL §5.3: blocked keys never, the rest by trust tier, best first, at random
/// within a tier. Bytes are verified whoever sends them, so an unknown mirror is still used —
/// after every better one (the spread asks at most four sources at once).
pub(crate) fn rank_mirrors(
    mirrors: Vec<super::blobs::MirrorCandidate>,
    scores: &archy_trust::Scores,
) -> Vec<super::blobs::MirrorCandidate> {
    rank_by_tier(
        mirrors,
        |m| {
            archy_trust::Key::from_hex(&m.nostr)
                .map(|k| scores.tier(&k))
                .unwrap_or(archy_trust::Tier::Blocked)
        },
        |_| rand::random(),
    )
}

/// PROTOCOL §5.3: mirrors by their announcer's trust tier, best first, in random order within
/// a tier (`draw` gives each a sort key), so fetchers of one release spread over the peers of
/// a rank instead of all asking the same ones; blocked announcers are left out.
fn rank_by_tier<M>(
    mirrors: Vec<M>,
    tier: impl Fn(&M) -> archy_trust::Tier,
    mut draw: impl FnMut(&M) -> u64,
) -> Vec<M> {
    let mut ranked: Vec<(archy_trust::Tier, u64, M)> = mirrors
        .into_iter()
        .map(|m| (tier(&m), draw(&m), m))
        .filter(|(t, _, _)| *t != archy_trust::Tier::Blocked)
        .collect();
    ranked.sort_by(|(ta, da, _), (tb, db, _)| tb.cmp(ta).then(da.cmp(db)));
    ranked.into_iter().map(|(_, _, m)| m).collect()
}

/// Refuses what the operator's trust policy refuses; `confirm` lets a user accept a publisher
/// below the install tier (never a blocked one).
fn trust_gate(
    core: &NodeCore,
    m: &AppManifest,
    confirm: bool,
) -> Result<(archy_trust::Tier, bool)> {
    let (tier, decision) = core.trust()?.decide(&m.publisher.nostr);
    let confirmed = decision == archy_trust::Decision::NeedsConfirmation;
    match decision {
        archy_trust::Decision::Allow => {}
        archy_trust::Decision::NeedsConfirmation if confirm => {}
        archy_trust::Decision::NeedsConfirmation => bail!(
            "publisher {} (nostr {}) is {tier}, below this node's install tier {}: \
             review it with `archy trust show {}` and re-run with --confirm to install anyway",
            m.publisher.did,
            m.publisher.nostr,
            core.config.trust.install_tier,
            m.publisher.nostr
        ),
        archy_trust::Decision::Deny => bail!(
            "publisher {} (nostr {}) is blocked: nothing of theirs is installed",
            m.publisher.did,
            m.publisher.nostr
        ),
    }
    Ok((tier, confirmed))
}

/// One image of a release, with the node's own name for it: `localhost/archy-apps/<app>:<v>`,
/// or `…/<app>/<service>:<v>` for a service of a stack (two services may run two images).
pub(crate) struct AppImage<'a> {
    pub service: &'a str,
    pub image: &'a Image,
    pub own: String,
}

/// Every image a release runs, in its services' order.
pub(crate) fn app_images(m: &AppManifest) -> Vec<AppImage<'_>> {
    if m.is_stack() {
        m.services
            .iter()
            .map(|s| AppImage {
                service: &s.name,
                image: &s.image,
                own: own_image_name(&format!("{}/{}", m.id, s.name), &m.version),
            })
            .collect()
    } else {
        m.image
            .iter()
            .map(|image| AppImage {
                service: &m.id,
                image,
                own: own_image_name(&m.id, &m.version),
            })
            .collect()
    }
}

/// Every image of the release fetched (and with `load`, in Podman), one after the other:
/// the first one's source, and for a stack each service's.
async fn ensure_images(
    core: &NodeCore,
    m: &AppManifest,
    load: bool,
) -> Result<(ImageSource, Vec<ServiceImage>)> {
    let images = app_images(m);
    let mut services = Vec::with_capacity(images.len());
    for img in &images {
        let fetch = ensure_image(core, m, img, load)
            .await
            .with_context(|| format!("the image of {}", img.service))?;
        services.push(ServiceImage {
            service: img.service.to_owned(),
            fetch,
        });
    }
    let first = services
        .first()
        .map(|s| s.fetch.clone())
        .context("the manifest has no image")?;
    if !m.is_stack() {
        services.clear();
    }
    Ok((first, services))
}

/// Whether every image of the release is mirrored (announcing those that are not yet, when
/// `[swarm] mirror` is on).
async fn mirror_images(core: &NodeCore, m: &AppManifest) -> Result<bool> {
    let swarm = core.swarm().await?;
    let mut all = true;
    for img in app_images(m) {
        let blob = &img.image.blob().blake3;
        let mirrored = swarm.is_mirrored(blob)
            || super::blobs::mirror_if_configured(core, blob)
                .await
                .is_some();
        all &= mirrored;
    }
    Ok(all)
}

/// Makes the release's image present in Podman, only ever from verified bytes, refusing it
/// unless its id is the signed `image.id`. A layered image (§2.1) is fetched part by part and
/// pulled from the node's registry ([`super::layers`]); an archive is fetched whole, written to
/// a scratch file and loaded by the orchestrator's checked load. With `load` false the image
/// only reaches the blob store (`apps fetch`), every check of the bytes done all the same.
async fn ensure_image(
    core: &NodeCore,
    m: &AppManifest,
    img: &AppImage<'_>,
    load: bool,
) -> Result<ImageSource> {
    let scores = core.trust()?.scores();
    let archive = match img.image.content() {
        ImageContent::Layers(layers) => {
            let report = super::layers::ensure_layered(
                core,
                m,
                img,
                layers,
                origin_addr(m)?,
                |c| rank_mirrors(c, &scores),
                load,
            )
            .await?;
            return Ok(ImageSource::Layered(report));
        }
        ImageContent::Archive(a) => a,
    };
    let swarm = core.swarm().await?;
    let report = if swarm.has(&archive.blake3).await? {
        ImageSource::AlreadyLocal {
            source: "already in the local store".into(),
        }
    } else {
        let report = super::blobs::fetch_blob(
            core,
            &archive.blake3,
            archive.size,
            origin_addr(m)?,
            |mirrors| rank_mirrors(mirrors, &scores),
            Some(&m.publisher.nostr),
        )
        .await?;
        ImageSource::Fetched(report)
    };
    if !load {
        return Ok(report);
    }
    // Named only in the node's own namespace: `image.name` is the publisher's choice and
    // could name another app's image (PROTOCOL §2.1); the app runs by `image.id`.
    async {
        normalize_id(&img.image.id)?;
        let tmp = swarm.tmp_dir()?;
        let path = tmp.path().join("image.tar");
        swarm.export(&archive.blake3, &path).await?;
        super::gc::record_image(core, &img.image.id)?;
        core.podman
            .load_checked(&path, &img.image.id, &img.own)
            .await?;
        anyhow::Ok(())
    }
    .await
    .context("loading the image into Podman")?;
    Ok(report)
}

/// The release's manifest, refused when it has expired or its publisher is below the trust
/// gate; with the publisher's tier and whether `--confirm` let it through.
fn gate_release(
    core: &NodeCore,
    release: &ReleaseRecord,
    confirm: bool,
) -> Result<(AppManifest, (archy_trust::Tier, bool))> {
    let m = release.manifest()?;
    if m.expires_at.is_some_and(|e| e < unix_now()) {
        bail!(
            "{} {} has expired: nothing installs or updates to it",
            m.id,
            m.version
        );
    }
    let tier = trust_gate(core, &m, confirm)?;
    Ok((m, tier))
}

/// Checks, fetches, installs; returns a summary of each step.
async fn install_release(
    core: &NodeCore,
    release: &ReleaseRecord,
    confirm: bool,
) -> Result<InstallReport> {
    install_release_as(core, release, confirm, None).await
}

/// [`install_release`], of a dependency of `dependency_of` when set. An app's dependencies
/// are installed first ([`install_dependencies`]).
fn install_release_as<'a>(
    core: &'a NodeCore,
    release: &'a ReleaseRecord,
    confirm: bool,
    dependency_of: Option<&'a str>,
) -> futures::future::BoxFuture<'a, Result<InstallReport>> {
    Box::pin(install_release_inner(core, release, confirm, dependency_of))
}

async fn install_release_inner(
    core: &NodeCore,
    release: &ReleaseRecord,
    confirm: bool,
    dependency_of: Option<&str>,
) -> Result<InstallReport> {
    let (m, (tier, confirmed)) = gate_release(core, release, confirm)?;
    refuse_past_dependents(core, &m)?;
    let dependencies = install_dependencies(core, &m, confirm).await?;
    let (fetch, services) = ensure_images(core, &m, true).await?;
    let r = core.reconciler().await?;
    let outcome = r.install(spec_from_manifest(&m)?).await?;
    let running = matches!(outcome, InstallOutcome::Running { .. });
    if running {
        // An app installed as a dependency stays one across updates; one the user installs
        // is theirs.
        let was = core
            .catalog
            .installed()?
            .into_iter()
            .find(|i| i.app == m.id)
            .and_then(|i| i.dependency_of);
        core.catalog.set_installed(&InstalledRecord {
            app: m.id.clone(),
            did: m.publisher.did.clone(),
            version: m.version.clone(),
            publisher_nostr: m.publisher.nostr.clone(),
            dependency_of: dependency_of.map(str::to_owned).or(was),
        })?;
    }
    // The fetch already made each image a mirror when it completed (unless it was held, or
    // the announcement failed then).
    let mirrored = running && mirror_images(core, &m).await?;
    let urls: Vec<String> = m
        .stack()
        .iter()
        .flat_map(|s| s.ports.clone())
        .filter(|p| p.protocol == "tcp")
        .map(|p| {
            let host = if p.bind.contains(':') {
                format!("[{}]", p.bind)
            } else {
                p.bind.clone()
            };
            format!("http://{host}:{}/", p.host)
        })
        .collect();
    Ok(InstallReport {
        app: m.id,
        version: m.version,
        did: m.publisher.did,
        tier,
        fetch,
        outcome,
        mirrored,
        urls,
        services,
        dependencies,
        confirmed,
    })
}

/// Installs what `m` depends on first (PROTOCOL §2.2): each `dependencies[]` entry resolved
/// in the catalog to the newest release of that app by its DID (the dependent's publisher
/// when none is named) within its SemVer range, through the same trust gate (`--confirm`
/// covers a dependency below the install tier; its report says so). One already installed
/// must be that DID's and within the range: two dependents with ranges no one version meets
/// are refused, naming both.
async fn install_dependencies(
    core: &NodeCore,
    m: &AppManifest,
    confirm: bool,
) -> Result<Vec<InstallReport>> {
    let mut out = Vec::new();
    for d in &m.dependencies {
        let did = d.did.as_deref().unwrap_or(&m.publisher.did);
        let range = semver::VersionReq::parse(&d.version)
            .with_context(|| format!("dependencies: {:?} is not a SemVer range", d.version))?;
        let installed = core
            .catalog
            .installed()?
            .into_iter()
            .find(|i| i.app == d.app);
        if let Some(i) = installed {
            if i.did != did {
                bail!(
                    "{} needs {} from {did}, but {} from {} is installed",
                    m.id,
                    d.app,
                    i.app,
                    i.did
                );
            }
            if !range.matches(&semver::Version::parse(&i.version)?) {
                let others: Vec<String> = dependents_of(core, &d.app)?
                    .into_iter()
                    .map(|(app, req)| format!("{app} needs {req}"))
                    .collect();
                bail!(
                    "{} needs {} {} but {} is installed{}: no version meets both ranges",
                    m.id,
                    d.app,
                    d.version,
                    i.version,
                    if others.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", others.join("; "))
                    }
                );
            }
            continue;
        }
        let release = core
            .catalog
            .releases(did, &d.app)?
            .into_iter()
            .filter(|r| {
                semver::Version::parse(&r.version).is_ok_and(|v| range.matches(&v))
            })
            .max_by(|a, b| {
                let v = |r: &ReleaseRecord| semver::Version::parse(&r.version).ok();
                v(a).cmp(&v(b))
            })
            .with_context(|| {
                format!(
                    "{} depends on {} {} from {did}: the catalog has no such release (try `archy market sync`)",
                    m.id, d.app, d.version
                )
            })?;
        let report = install_release_as(core, &release, confirm, Some(&m.id))
            .await
            .with_context(|| format!("installing {}'s dependency {}", m.id, d.app))?;
        if !matches!(report.outcome, InstallOutcome::Running { .. }) {
            bail!(
                "{}'s dependency {} {} does not run: {:?}",
                m.id,
                d.app,
                report.version,
                report.outcome
            );
        }
        out.push(report);
    }
    Ok(out)
}

/// The installed apps that depend on `app`, each with the SemVer range it needs.
fn dependents_of(core: &NodeCore, app: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for i in core.catalog.installed()? {
        let Some(rel) = core
            .catalog
            .releases(&i.did, &i.app)?
            .into_iter()
            .find(|r| r.version == i.version)
        else {
            continue;
        };
        for d in rel.manifest()?.dependencies {
            if d.app == app {
                out.push((i.app.clone(), d.version));
            }
        }
    }
    Ok(out)
}

/// An update of an app others depend on must stay within each dependent's range.
fn refuse_past_dependents(core: &NodeCore, m: &AppManifest) -> Result<()> {
    let version = m.semver();
    let outside: Vec<String> = dependents_of(core, &m.id)?
        .into_iter()
        .filter(|(_, req)| semver::VersionReq::parse(req).is_ok_and(|r| !r.matches(&version)))
        .map(|(app, req)| format!("{app} needs {req}"))
        .collect();
    if !outside.is_empty() {
        bail!(
            "{} {} is outside what its dependents accept ({}): not installed",
            m.id,
            m.version,
            outside.join("; ")
        );
    }
    Ok(())
}

/// The latest release of an app the catalog resolved.
fn latest_release(core: &NodeCore, rec: &crate::catalog::AppRecord) -> Result<ReleaseRecord> {
    core.catalog
        .latest(&rec.did, &rec.app)?
        .context("the catalog has no release of that app")
}

/// `archy apps install APP`: the latest release of a catalog app.
pub async fn install_from_catalog(
    core: &NodeCore,
    name: &str,
    confirm: bool,
) -> Result<InstallReport> {
    let rec = core.resolve_app(name)?;
    if let Some(existing) = core
        .catalog
        .installed()?
        .into_iter()
        .find(|i| i.app == rec.app)
    {
        if existing.did != rec.did {
            bail!(
                "an app {:?} from another publisher ({}) is installed here; uninstall it first",
                rec.app,
                existing.did
            );
        }
    }
    install_release(core, &latest_release(core, &rec)?, confirm).await
}

/// `archy apps fetch APP`: the latest release's image into the blob store, by the install's
/// rules (trust gate, §2.1 and §5 checks, mirrors, served as a mirror after), without
/// touching Podman: a later install or update of that release moves nothing.
pub async fn fetch_from_catalog(
    core: &NodeCore,
    name: &str,
    confirm: bool,
) -> Result<FetchImageReport> {
    let rec = core.resolve_app(name)?;
    let (m, (tier, _)) = gate_release(core, &latest_release(core, &rec)?, confirm)?;
    let (fetch, services) = ensure_images(core, &m, false).await?;
    let mirrored = mirror_images(core, &m).await?;
    Ok(FetchImageReport {
        app: m.id,
        version: m.version,
        did: m.publisher.did,
        tier,
        fetch,
        mirrored,
        services,
    })
}

/// The newer release an installed app could move to (same DID only), if any.
pub fn pending_update(core: &NodeCore, app: &str) -> Result<Option<ReleaseRecord>> {
    let Some(installed) = core.catalog.installed()?.into_iter().find(|i| i.app == app) else {
        bail!("{app:?} is not installed from the catalog");
    };
    let Some(latest) = core.catalog.latest(&installed.did, app)? else {
        return Ok(None);
    };
    let (have, new) = (
        semver::Version::parse(&installed.version)?,
        semver::Version::parse(&latest.version)?,
    );
    Ok((new.cmp_precedence(&have) == std::cmp::Ordering::Greater).then_some(latest))
}

/// `archy apps update APP`: move to the latest release of the DID it was installed from.
pub async fn update(core: &NodeCore, app: &str, confirm: bool) -> Result<UpdateReply> {
    match pending_update(core, app)? {
        None => Ok(UpdateReply::UpToDate {
            app: app.to_owned(),
            result: "up to date".into(),
        }),
        Some(release) => {
            let report = install_release(core, &release, confirm).await?;
            super::gc::after_change(core).await;
            Ok(UpdateReply::Installed(Box::new(report)))
        }
    }
}

/// Applies pending updates of trusted publishers when the operator enabled `auto_update`.
pub async fn auto_update(core: &NodeCore) {
    if !core.config.trust.auto_update {
        return;
    }
    let Ok(installed) = core.catalog.installed() else {
        return;
    };
    for app in installed {
        let _exclusive = core.app_ops.lock().await;
        // Uninstalled while an earlier app was updating: nothing to update any more.
        if !core
            .catalog
            .installed()
            .is_ok_and(|now| now.iter().any(|i| i.app == app.app))
        {
            continue;
        }
        match pending_update(core, &app.app) {
            Ok(Some(release)) => match install_release(core, &release, false).await {
                Ok(r) => {
                    tracing::info!(
                        app = %app.app,
                        version = %r.version,
                        "auto-update: {:?}",
                        r.outcome
                    );
                    super::gc::after_change(core).await;
                }
                Err(e) => tracing::warn!(app = %app.app, "auto-update not applied: {e:#}"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(app = %app.app, "auto-update check failed: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use archy_trust::Tier;

    #[test]
    fn mirrors_go_by_tier_then_by_the_draw_and_blocked_ones_are_left_out() {
        let tier = |m: &(&str, Tier)| m.1;
        let mirrors = vec![
            ("u1", Tier::Unknown),
            ("t1", Tier::Trusted),
            ("b", Tier::Blocked),
            ("k", Tier::Known),
            ("t2", Tier::Trusted),
        ];
        // The draw orders peers within a tier: t2 before t1 here, the other way round there.
        let draw = |first: &'static str| move |m: &(&str, Tier)| u64::from(m.0 != first);
        let names = |v: Vec<(&'static str, Tier)>| v.into_iter().map(|m| m.0).collect::<Vec<_>>();
        assert_eq!(
            names(rank_by_tier(mirrors.clone(), tier, draw("t2"))),
            ["t2", "t1", "k", "u1"]
        );
        assert_eq!(
            names(rank_by_tier(mirrors, tier, draw("t1"))),
            ["t1", "t2", "k", "u1"]
        );
    }
}
