//! The naming migration: apps installed by the code before the injective names
//! (`archy-<app>-<v>`, unlabelled) are moved onto `archy_<app>_<v>` with owner labels, losing
//! no data. Run at the start of every pass, under the pass lock; a no-op once nothing is left
//! on the legacy scheme.

use std::collections::{BTreeMap, HashMap};

use crate::names;
use crate::report::{HeldApp, MigrationReport};
use crate::runtime::{Containers, PodmanRuntime};
use crate::store::{AppRecord, Naming, Store};
use crate::Error;

/// Whose the apps of the old code are: they had no publisher.
pub(crate) struct LegacyOwners<'a> {
    /// App → its publisher.
    pub(crate) publishers: &'a BTreeMap<String, String>,
    /// For the apps not listed.
    pub(crate) default_publisher: &'a str,
}

/// The naming migration. For every record of the legacy scheme:
/// 1. its containers are removed (the next pass recreates them under the new names; the
///    data is in volumes);
/// 2. each volume `archy-<app>-<v>` is copied into a new, labelled `archy_<app>_<v>`
///    (`podman volume export | import`; Podman 4.3 cannot rename a volume or change its
///    labels) under a journal in redb: `copying` before, `copied` after — a SIGKILL while
///    copying redoes the copy from the untouched original on restart;
/// 3. the record gets its publisher and the new naming, in one commit; only then are the
///    originals and the legacy Podman secrets removed (the secret files are the source of
///    truth, so the next pass creates the new, labelled secrets from them).
///
/// A legacy volume that two apps' names both map to (`foo`/`bar-data` and `foo-bar`/`data`)
/// is never guessed at: it is left as it is, copied to neither, and both apps are held (not
/// started) with a reason naming the apps and the volume, until the operator purges the
/// app it does not belong to (`archy apps uninstall APP --purge`); the next pass then
/// migrates the other.
pub(crate) async fn run(
    rt: &PodmanRuntime,
    store: &Store,
    owners: &LegacyOwners<'_>,
) -> Result<MigrationReport, Error> {
    let mut report = MigrationReport::default();
    let records = store.all()?;
    // Originals whose copy is committed but which a kill kept from being removed.
    let journal: HashMap<String, String> = store.journal()?.into_iter().collect();
    for (key, state) in &journal {
        let Some((app, v)) = key.split_once('/') else {
            continue;
        };
        let migrated = records
            .iter()
            .any(|r| r.current.name == app && r.names == Naming::Injective);
        if state == "copied" && migrated {
            rt.remove_volume(&names::legacy::volume(app, v)).await?;
            store.set_journal(key, None)?;
        }
    }
    let legacy: Vec<&AppRecord> = records
        .iter()
        .filter(|r| r.names == Naming::Legacy)
        .collect();
    if legacy.is_empty() {
        return Ok(report);
    }
    // Which (app, volume) pairs each legacy volume name stands for, over every legacy record.
    let mut claims: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for r in &legacy {
        for (app, v) in legacy_volumes(r) {
            let pairs = claims.entry(names::legacy::volume(&app, &v)).or_default();
            if !pairs.contains(&(app.clone(), v.clone())) {
                pairs.push((app, v));
            }
        }
    }
    let observed = rt.observe().await?;
    for r in legacy {
        let app = r.current.name.clone();
        for c in observed.iter().filter(|c| c.app == app) {
            rt.remove_container(&c.id, r.current.stop_grace_secs())
                .await?;
        }
        let publisher = owners
            .publishers
            .get(&app)
            .cloned()
            .unwrap_or_else(|| owners.default_publisher.to_string());
        let mut target = r.current.clone();
        target.publisher = publisher.clone();
        let mut held = None;
        let mut copied = Vec::new();
        for (_, v) in legacy_volumes(r) {
            let old = names::legacy::volume(&app, &v);
            let pairs = &claims[&old];
            if pairs.len() > 1 {
                let who: Vec<String> = pairs
                    .iter()
                    .map(|(a, v)| format!("app `{a}` (volume `{v}`)"))
                    .collect();
                held = Some(format!(
                    "Podman volume `{old}` was shared by {} under the old names; its data \
                     is kept there and copied to neither. Purge the app it does not belong \
                     to (`archy apps uninstall APP --purge`, which leaves `{old}` alone) \
                     and the other one is migrated with it",
                    who.join(" and ")
                ));
                continue;
            }
            let key = format!("{app}/{v}");
            // Entries removed above are of migrated apps, never of this legacy one.
            if journal.get(&key).map(String::as_str) != Some("copied") {
                if !rt.volume_exists(&old).await? {
                    continue; // never created: nothing to copy
                }
                store.set_journal(&key, Some("copying"))?;
                let new = target.volume_name(&v);
                // A copy a kill interrupted: start it again from the untouched original.
                rt.remove_volume(&new).await?;
                rt.create_volume(&target, &new).await?;
                rt.copy_volume(&old, &new).await?;
                store.set_journal(&key, Some("copied"))?;
                report.volumes_copied.push(format!("{old} -> {new}"));
            }
            copied.push((key, old));
        }
        if let Some(reason) = held {
            tracing::warn!(app = %app, "naming migration: held: {reason}");
            store.update(&app, |rec| {
                Ok((
                    rec.map(|rec| AppRecord {
                        held: Some(reason.clone()),
                        ..rec
                    }),
                    (),
                ))
            })?;
            report.held.push(HeldApp { app, reason });
            continue;
        }
        // The legacy Podman secrets go before the commit (so a kill cannot strand them);
        // the files stay the source of truth for the new, labelled ones.
        let mut secret_names: Vec<String> = r
            .current
            .service()
            .generated_secrets
            .iter()
            .chain(
                r.previous
                    .iter()
                    .flat_map(|p| &p.service().generated_secrets),
            )
            .map(|s| names::legacy::secret(&app, &s.name))
            .collect();
        secret_names.sort();
        secret_names.dedup();
        for name in secret_names {
            rt.remove_secret(&name).await?;
        }
        store.update(&app, |rec| {
            Ok((
                rec.map(|mut rec| {
                    rec.current.publisher = publisher.clone();
                    if let Some(p) = rec.previous.as_mut() {
                        p.publisher = publisher.clone();
                    }
                    rec.names = Naming::Injective;
                    rec.held = None;
                    rec
                }),
                (),
            ))
        })?;
        for (key, old) in copied {
            rt.remove_volume(&old).await?;
            store.set_journal(&key, None)?;
        }
        tracing::info!(app = %app, %publisher, "naming migration: done");
        report.migrated.push(app);
    }
    Ok(report)
}

/// (app, volume) of every volume a legacy record's current and previous specs name.
fn legacy_volumes(r: &AppRecord) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = r
        .current
        .service()
        .volumes
        .iter()
        .chain(r.previous.iter().flat_map(|p| &p.service().volumes))
        .map(|v| (r.current.name.clone(), v.name.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AppSpec, VolumeSpec};

    #[test]
    fn a_legacy_record_names_the_volumes_of_both_its_specs_once() {
        let vol = |name: &str| VolumeSpec {
            name: name.into(),
            target: format!("/{name}"),
        };
        let mut current = AppSpec::new("web", "2", "img");
        current.service_mut().volumes = vec![vol("data"), vol("cache")];
        let mut previous = AppSpec::new("web", "1", "img");
        previous.service_mut().volumes = vec![vol("data"), vol("logs")];
        let rec = AppRecord {
            previous: Some(previous),
            names: Naming::Legacy,
            ..AppRecord::new(current)
        };
        let pairs = legacy_volumes(&rec);
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, v)| (a.as_str(), v.as_str()))
            .collect();
        assert_eq!(pairs, [("web", "cache"), ("web", "data"), ("web", "logs")]);
    }
}
