//! `archy app validate|sign|verify`.

use super::Rejected;
use crate::envelope::{self, Envelope};
use crate::home::Home;
use crate::identity::Identity;
use crate::manifest::{self, PolicyConfig, Violation};
use crate::node::blobs::{ExportFormat, ImageBlob, ImageFields};
use crate::node::rpc::{ImageExport, Publish};
use crate::unix_now;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum AppCmd {
    /// Check a manifest (YAML or JSON) against the schema and policy; print every violation.
    Validate {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Sign a manifest with this home's DID key; writes the envelope {"manifest","signature"}.
    Sign {
        file: PathBuf,
        /// Where to write the envelope (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a manifest and publish it as a release event (the publisher profile goes first,
    /// once). Prints the event id and each relay's answer.
    Publish {
        file: PathBuf,
        /// Relays to publish to (default: the node's own relays).
        #[arg(long = "relay", value_name = "URL")]
        relays: Vec<String>,
        /// Export this Podman image into the blob store and fill `image.id`, `image.layers` (or
        /// `image.archive`), `origin` (this node) and, if the file names none, `image.name`
        /// before signing. For a multi-service app (PROTOCOL §2.2), `SERVICE=IMAGE`, once per
        /// service, fills `services[i].image`.
        #[arg(long = "image", value_name = "IMAGE|SERVICE=IMAGE")]
        images: Vec<String>,
        /// How the image travels: `oci-layers` (its OCI parts with uncompressed layers, PROTOCOL
        /// §2.1, schema v2: an update moves only changed layers) or one archive.
        #[arg(long, value_name = "FORMAT", default_value = "oci-layers",
              value_parser = ["oci-layers", "oci-archive", "docker-archive"], requires = "images")]
        format: String,
        #[arg(long)]
        json: bool,
    },
    /// Write the Quadlet units equivalent to a manifest (for hosts that run apps under systemd
    /// with Podman >= 4.4): one `.container`, or for a multi-service app its `.network` and
    /// one `.container` per service.
    Render {
        file: PathBuf,
        /// Quadlet output (the only format so far).
        #[arg(long, required = true)]
        quadlet: bool,
        /// Where to write: the unit file of a single-container app; a directory (created if
        /// missing) for a multi-service app's units. Without it, every unit goes to stdout,
        /// each after a `# ==> FILE <==` line when there are several.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify an envelope: DID signature, schema and policy.
    Verify {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(home: &Home, cmd: AppCmd) -> Result<()> {
    let policy = PolicyConfig::default();
    match cmd {
        AppCmd::Validate { file, json } => {
            let mut manifest = read_manifest(&file)?;
            // Check what `sign` would sign: with this home's identity filled in, when there is one.
            if let Ok(identity) = Identity::load(home) {
                if let Err(v) = envelope::fill_publisher(&mut manifest, &identity, unix_now()) {
                    return report(&[v], json, String::new);
                }
            }
            let violations = manifest::validate(&manifest, &policy, unix_now());
            report(&violations, json, || {
                format!(
                    "ok: {} {} passes the schema and policy",
                    manifest.get("id").and_then(|v| v.as_str()).unwrap_or("?"),
                    manifest
                        .get("version")
                        .and_then(|v| v.as_str())
                        .unwrap_or("?")
                )
            })
        }
        AppCmd::Sign { file, out } => {
            let env = sign_file(home, &file, &policy)?;
            write_output(out.as_deref(), &env.to_json_pretty())
        }
        AppCmd::Publish {
            file,
            relays,
            images,
            format,
            json,
        } => {
            let mut fields = None;
            let mut services = Vec::new();
            for arg in &images {
                match arg.split_once('=') {
                    Some((service, image)) => services.push(ServiceImageFields {
                        service: service.to_owned(),
                        fields: export_image(home, image, &format).await?,
                    }),
                    None if fields.is_none() => {
                        fields = Some(export_image(home, arg, &format).await?)
                    }
                    None => anyhow::bail!(
                        "--image {arg}: one image for a single-container app; a multi-service app takes --image SERVICE=IMAGE per service"
                    ),
                }
            }
            let env = sign_file_with(home, &file, &policy, fields.as_ref(), &services)?;
            let outcome = super::call(
                home,
                Publish {
                    envelope: env,
                    relays,
                },
            )
            .await?;
            let out = Published {
                outcome,
                image: fields,
                services,
            };
            if json {
                return super::print_json(&out);
            }
            let shown = out
                .image
                .iter()
                .map(|f| ("", f))
                .chain(out.services.iter().map(|s| (s.service.as_str(), &s.fields)));
            for (service, f) in shown {
                let (what, hash, size, format) = match &f.content {
                    ImageBlob::Archive(a) => ("archive", &a.blake3, a.size, a.format.as_str()),
                    ImageBlob::Layers(l) => ("layers", &l.blake3, l.size, l.format.as_str()),
                };
                let of = if service.is_empty() {
                    String::new()
                } else {
                    format!("service {service}: ")
                };
                println!(
                    "{of}image {} ({}): {what} {hash} ({size} bytes, {format}), origin {}",
                    f.name, f.id, f.origin.endpoint
                );
            }
            let o = &out.outcome;
            println!("published {} {} as event {}", o.app, o.version, o.event_id);
            for a in &o.relays {
                println!(
                    "  {}: {} {}",
                    a.relay,
                    a.outcome,
                    a.message.as_deref().unwrap_or("")
                );
            }
            Ok(())
        }
        AppCmd::Render {
            file,
            quadlet: _,
            out,
        } => {
            let mut manifest = read_manifest(&file)?;
            if let Ok(identity) = Identity::load(home) {
                let _ = envelope::fill_publisher(&mut manifest, &identity, unix_now());
            }
            // Who published it does not change the unit: only what runs must be valid.
            let violations: Vec<Violation> = manifest::validate(&manifest, &policy, unix_now())
                .into_iter()
                .filter(|v| !v.field.starts_with("publisher") && v.field != "published_at")
                .collect();
            if !violations.is_empty() {
                return report(&violations, false, String::new);
            }
            manifest
                .entry("publisher")
                .or_insert_with(|| serde_json::json!({"did": "", "nostr": ""}));
            manifest
                .entry("published_at")
                .or_insert_with(|| serde_json::json!(0));
            let typed = manifest::AppManifest::from_raw(&manifest)?;
            let spec = crate::node::apps::spec_from_manifest(&typed)?;
            let units = archy_orchestrator::render_units(&spec);
            match (units.as_slice(), out.as_deref()) {
                ([one], out) => write_output(out, &one.text),
                (units, Some(dir)) => {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    for u in units {
                        write_output(Some(&dir.join(&u.file_name)), &u.text)?;
                    }
                    Ok(())
                }
                (units, None) => {
                    for u in units {
                        println!("# ==> {} <==", u.file_name);
                        write_output(None, &u.text)?;
                    }
                    Ok(())
                }
            }
        }
        AppCmd::Verify { file, json } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let result = Envelope::from_json(&text)
                .map_err(|v| vec![v])
                .and_then(|env| envelope::verify(&env, &policy, unix_now()));
            match result {
                Ok(v) => report(&[], json, || {
                    format!(
                        "ok: {} {} signed by {} (nostr {})",
                        v.manifest.id,
                        v.manifest.version,
                        v.manifest.publisher.did,
                        v.manifest.publisher.nostr
                    )
                }),
                Err(violations) => report(&violations, json, String::new),
            }
        }
    }
}

/// What `app publish --json` prints: the relays' answers and, with `--image`, the image fields
/// that were signed into the manifest.
#[derive(serde::Serialize)]
struct Published {
    #[serde(flatten)]
    outcome: crate::node::publish::PublishOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<ImageFields>,
    /// A stack's images, with `--image SERVICE=IMAGE`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    services: Vec<ServiceImageFields>,
}

/// One service's exported image (`--image SERVICE=IMAGE`).
#[derive(serde::Serialize)]
struct ServiceImageFields {
    service: String,
    #[serde(flatten)]
    fields: ImageFields,
}

/// Exports a Podman image through the node (or in-process) for `app publish --image`.
async fn export_image(home: &Home, image: &str, format: &str) -> Result<ImageFields> {
    let format = match format {
        "docker-archive" => ExportFormat::DockerArchive,
        "oci-archive" => ExportFormat::OciArchive,
        _ => ExportFormat::Layers,
    };
    let node_runs = crate::node::api::Client::connect(home).await?.is_some();
    let fields = super::call(
        home,
        ImageExport {
            image: image.to_owned(),
            format,
        },
    )
    .await?;
    if !node_runs {
        eprintln!(
            "warning: no node runs for {}: consumers can fetch the image {} only while \
             `archy node run` (or `archy blob serve`) runs for this home",
            home.root().display(),
            fields.content.blake3()
        );
    }
    Ok(fields)
}

/// Reads, completes (publisher, published_at), validates and signs a manifest file.
fn sign_file(home: &Home, file: &Path, policy: &PolicyConfig) -> Result<Envelope> {
    sign_file_with(home, file, policy, None, &[])
}

/// [`sign_file`], with the exported image's fields written in first (they are signed too).
fn sign_file_with(
    home: &Home,
    file: &Path,
    policy: &PolicyConfig,
    image: Option<&ImageFields>,
    services: &[ServiceImageFields],
) -> Result<Envelope> {
    let identity = Identity::load(home)?;
    let mut manifest = read_manifest(file)?;
    if let Some(fields) = image {
        if let Some(note) = fields.fill(&mut manifest) {
            eprintln!("note: {note}");
        }
    }
    for s in services {
        if let Some(note) = s.fields.fill_service(&mut manifest, &s.service)? {
            eprintln!("note: {note}");
        }
    }
    if let Err(v) = envelope::fill_publisher(&mut manifest, &identity, unix_now()) {
        report(&[v], false, String::new)?;
    }
    let violations = manifest::validate(&manifest, policy, unix_now());
    if !violations.is_empty() {
        report(&violations, false, String::new)?;
    }
    Ok(envelope::sign(manifest, &identity))
}

/// Reads a YAML or JSON manifest file; a file that is not an object is a rejected input.
fn read_manifest(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    manifest::parse(&text).map_err(|e| {
        eprintln!("{}: {e}", path.display());
        Rejected.into()
    })
}

/// Prints violations (one per line, or a JSON array) and turns them into exit status 1.
fn report(violations: &[Violation], json: bool, ok: impl FnOnce() -> String) -> Result<()> {
    if json {
        super::print_json(&violations)?;
    } else if violations.is_empty() {
        println!("{}", ok());
    } else {
        for v in violations {
            println!("{v}");
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Rejected.into())
    }
}

fn write_output(out: Option<&Path>, text: &str) -> Result<()> {
    match out {
        Some(path) => std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("writing {}", path.display())),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}
