//! Layered images (issue 15, PROTOCOL §2.1) between real `archy node run` processes, a real
//! relay, iroh on loopback and real Podman (the consumer rootless):
//! - two versions of an app share a 48 MiB base: the update moves only the changed layer (the
//!   fetch report and the consumer's store say so), and a second app on the base moves only its
//!   own layer;
//! - the consumer's registry serves what it holds: skopeo copies an image out with the
//!   release's digests, rootless `podman pull` works, other methods, bad digests and path
//!   tricks get OCI error codes;
//! - hostile layered releases (forged part by part with `archy blob add`) are refused naming
//!   their check and child, with nothing left in Podman.

use archy_oci::Digest;
use archy_tests::cli::{
    archy_async as cli, archy_json_async as cli_json, embedded_relay, have_tool, repo,
    rootless_podman, NodeProc, ROOTLESS_PREFIX,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn podman_ready() -> bool {
    Command::new("podman")
        .args(["image", "exists", "localhost/archy/busybox:latest"])
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("id")
            .arg("archy")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A base image of busybox plus `pad_mib` MiB of random bytes, imported once per run.
fn build_base(dir: &Path, tag: &str, pad_mib: usize) {
    let root = dir.join("base-root");
    for d in ["bin", "etc", "www", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "httpd", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let mut pad = vec![0u8; pad_mib << 20];
    blake3::Hasher::new()
        .update(tag.as_bytes())
        .finalize_xof()
        .fill(&mut pad);
    std::fs::write(root.join("pad.bin"), pad).unwrap();
    let tar = dir.join("base.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    run(Command::new("podman")
        .args(["import", "--change", "CMD [\"/bin/sh\"]"])
        .arg(&tar)
        .arg(tag));
}

/// `podman build` FROM `base` with one small file (`body`, the app's page) COPYed in.
fn build_app(dir: &Path, base: &str, tag: &str, body: &str) -> String {
    let ctx = dir.join(format!("ctx-{}", tag.replace([':', '/'], "-")));
    std::fs::create_dir_all(ctx.join("www")).unwrap();
    std::fs::write(ctx.join("www/index.html"), body).unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        format!("FROM {base}\nCOPY www/ /www/\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"),
    )
    .unwrap();
    run(Command::new("podman")
        .args(["build", "--pull=never", "--quiet", "--tag", tag])
        .arg(&ctx));
    tag.to_owned()
}

fn home(dir: &Path, name: &str, relay: &str, extra: &str) -> PathBuf {
    let h = dir.join(name);
    std::fs::create_dir_all(&h).unwrap();
    std::fs::write(
        h.join("config.toml"),
        format!("[relays]\nembedded = false\nurls = [{relay:?}]\nquorum = 1\nsync_interval_secs = 3600\n\n[swarm]\nstall_timeout_secs = 5\n\n{extra}"),
    )
    .unwrap();
    h
}

/// A home whose apps run under the rootless Podman user.
fn rootless_home(dir: &Path, name: &str, relay: &str) -> PathBuf {
    home(
        dir,
        name,
        relay,
        &format!("[apps]\npodman_prefix = {ROOTLESS_PREFIX}\n"),
    )
}

async fn start(home: &Path) -> NodeProc {
    let h = home.to_path_buf();
    tokio::task::spawn_blocking(move || NodeProc::start(&h).unwrap())
        .await
        .unwrap()
}

/// A manifest file for app `id` at `version` on host port `port`; `schema` as given (a v1
/// manifest is upgraded by `publish --image`).
fn manifest(dir: &Path, id: &str, version: &str, port: u16, schema: &str) -> String {
    let text = std::fs::read_to_string(repo().join("apps/hello-web/manifest.yaml"))
        .unwrap()
        .replace("schema: archy.app/v2", &format!("schema: {schema}"))
        .replace("id: hello-web", &format!("id: {id}"))
        .replace("version: 1.0.0", &format!("version: {version}"))
        .replace("host: 18080", &format!("host: {port}"));
    let path = dir.join(format!("{id}-{version}.yaml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Bytes of a home's blob store on disk (data, verification data and the database that holds
/// small blobs inline).
fn store_bytes(home: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.flatten()
            .map(|e| {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    walk(&e.path())
                } else {
                    m.len()
                }
            })
            .sum()
    }
    walk(&home.join("swarm/blobs"))
}

async fn sync_until(home: &Path, id: &str, version: &str) -> Value {
    for _ in 0..100 {
        cli(home, &["market", "sync"]).await;
        let out = cli(home, &["market", "show", id, "--json"]).await;
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["app"]["latest"] == version {
                return v;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("{id} {version} never reached {}", home.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_moves_only_the_changed_layer_and_the_registry_serves_oci_clients() {
    if !have_tool(
        podman_ready(),
        "podman with the archy user (tests/setup/podman.sh)",
    ) || !have_tool(
        Command::new("skopeo")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "skopeo (apt-get install skopeo)",
    ) {
        return;
    }
    let tag = std::process::id();
    let t0 = std::time::Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().unwrap();
    let base = format!("localhost/archy/base48:{tag}");
    build_base(dir.path(), &base, 48);
    let v1 = build_app(
        dir.path(),
        &base,
        &format!("localhost/archy/layered:{tag}-1"),
        "<h1>one</h1>",
    );
    let v2 = build_app(
        dir.path(),
        &base,
        &format!("localhost/archy/layered:{tag}-2"),
        "<h1>two, a little longer</h1>",
    );
    let other = build_app(
        dir.path(),
        &base,
        &format!("localhost/archy/other:{tag}"),
        "<h1>other</h1>",
    );

    phase("images built");
    let (relay, _db) = embedded_relay().await;
    let url = relay.url().to_string();
    phase("relay up");
    let p = home(dir.path(), "publisher", &url, "");
    let c = rootless_home(dir.path(), "consumer", &url);
    let _pn = start(&p).await;
    phase("publisher up");
    let cn = start(&c).await;
    phase("consumer up");
    let (app, other_app) = (format!("lay-{tag}"), format!("lay2-{tag}"));
    let port = archy_tests::cli::sticky_loopback().port();

    // 1.0.0 from a v1 manifest: publish upgrades it to v2 and says so.
    let m1 = manifest(dir.path(), &app, "1.0.0", port, "archy.app/v1");
    let out = cli(&p, &["app", "publish", &m1, "--image", &v1, "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("upgraded to \"archy.app/v2\""),
        "{out:?}"
    );
    let pub1: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pub1["image"]["layers"]["format"], "oci-layers", "{pub1}");

    phase("1.0.0 published");
    let show = sync_until(&c, &app, "1.0.0").await;
    assert_eq!(show["latest_manifest"]["schema"], "archy.app/v2");
    let before = store_bytes(&c);
    let i1 = cli_json(&c, &["apps", "install", &app, "--confirm", "--json"]).await;
    assert_eq!(i1["outcome"]["result"], "running", "{i1}\n{}", cn.log());
    let first = i1["fetch"]["transferred"].as_u64().unwrap();
    assert!(first > 48 << 20, "the first install moves the base: {i1}");

    phase("1.0.0 installed");
    // 1.1.0 differs in the app layer only.
    let m2 = manifest(dir.path(), &app, "1.1.0", port, "archy.app/v2");
    let pub2 = cli_json(&p, &["app", "publish", &m2, "--image", &v2, "--json"]).await;
    assert_eq!(pub2["accepted"], 1, "{pub2}");
    sync_until(&c, &app, "1.1.0").await;
    phase("1.1.0 published");
    let mid = store_bytes(&c);
    let up = cli_json(&c, &["apps", "update", &app, "--confirm", "--json"]).await;
    assert_eq!(up["outcome"]["result"], "running", "{up}\n{}", cn.log());
    phase("updated");
    let after = store_bytes(&c);
    // The changed layer: the last layer of 1.1.0's manifest (what the registry serves).
    let reg = cli_json(&c, &["node", "status", "--json"]).await["registry"]
        .as_str()
        .unwrap()
        .to_owned();
    let skopeo_dir = dir.path().join("skopeo-v2");
    let show2 = cli_json(&c, &["market", "show", &app, "--json"]).await;
    let image_id = show2["latest_manifest"]["image"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The manifest digest: what the consumer's Podman recorded for the pulled image.
    let digests = String::from_utf8_lossy(
        &rootless_podman(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &image_id,
        ])
        .stdout,
    )
    .into_owned();
    let manifest_digest = digests
        .split('"')
        .find_map(|s| s.split_once('@').map(|(_, d)| d.to_owned()))
        .unwrap_or_else(|| panic!("no repo digest in {digests}"));
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{reg}/any/name@{manifest_digest}"))
        .arg(format!("dir:{}", skopeo_dir.display())));
    let man_bytes = std::fs::read(skopeo_dir.join("manifest.json")).unwrap();
    assert_eq!(
        Digest::of(&man_bytes).as_str(),
        manifest_digest,
        "skopeo got the manifest the release names"
    );
    let man: Value = serde_json::from_slice(&man_bytes).unwrap();
    assert_eq!(
        man["config"]["digest"],
        image_id.as_str(),
        "config = image.id"
    );
    let layers = man["layers"].as_array().unwrap();
    for l in layers {
        let d = l["digest"].as_str().unwrap();
        let bytes = std::fs::read(skopeo_dir.join(d.trim_start_matches("sha256:"))).unwrap();
        assert_eq!(Digest::of(&bytes).as_str(), d);
    }
    let changed = layers.last().unwrap()["size"].as_u64().unwrap();
    let moved = up["fetch"]["transferred"].as_u64().unwrap();
    let bound = changed + 64 * 1024;
    assert!(
        moved <= bound,
        "the update moved {moved} bytes; the changed layer is {changed}: {up}"
    );
    // The store may also shrink meanwhile: the files of a partial blob (its sizes and
    // bitfield) are deleted after it completes, in a later store transaction.
    let grew = after.saturating_sub(mid);
    assert!(
        grew <= bound + changed / 64,
        "the store grew {grew} bytes for a {changed}-byte layer"
    );
    assert!(
        up["fetch"]["held"].as_u64().unwrap() >= 1,
        "the base was held: {up}"
    );
    eprintln!("layered update: moved {moved} B, store grew {grew} B, changed layer {changed} B; first install moved {first} B (store {before} -> {mid} B)");

    phase("skopeo checked");
    // A second app on the same base moves only its own layer.
    let mo = manifest(dir.path(), &other_app, "1.0.0", port + 1, "archy.app/v2");
    cli_json(&p, &["app", "publish", &mo, "--image", &other, "--json"]).await;
    sync_until(&c, &other_app, "1.0.0").await;
    let io = cli_json(&c, &["apps", "install", &other_app, "--confirm", "--json"]).await;
    assert_eq!(io["outcome"]["result"], "running", "{io}");
    let own_layer_bound = 64 * 1024 + 16 * 1024;
    assert!(
        io["fetch"]["transferred"].as_u64().unwrap() <= own_layer_bound,
        "{io}"
    );

    phase("second app installed");
    // Rootless `podman pull` from the registry, by digest.
    let pulled = rootless_podman(&[
        "pull",
        "--tls-verify=false",
        &format!("{reg}/x/y@{manifest_digest}"),
    ]);
    assert!(pulled.status.success(), "{pulled:?}");

    // The registry refuses what it does not serve, with OCI codes.
    let curl = |args: &[&str]| -> (String, String) {
        let out = Command::new("curl")
            .args(["-sS", "--path-as-is", "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (body.to_owned(), code.to_owned())
    };
    let base_url = format!("http://{reg}");
    for (args, code, oci) in [
        (
            vec!["-X", "PUT", &format!("{base_url}/v2/a/blobs/uploads/")[..]],
            "405",
            "UNSUPPORTED",
        ),
        (
            vec![
                "-X",
                "DELETE",
                &format!("{base_url}/v2/a/manifests/{manifest_digest}")[..],
            ],
            "405",
            "UNSUPPORTED",
        ),
        (
            vec![&format!("{base_url}/v2/a/blobs/sha256:1234")[..]],
            "400",
            "DIGEST_INVALID",
        ),
        (
            vec![&format!("{base_url}/v2/../../etc/blobs/{manifest_digest}")[..]],
            "400",
            "NAME_INVALID",
        ),
        (
            vec![&format!("{base_url}/v2/a/manifests/latest")[..]],
            "404",
            "MANIFEST_UNKNOWN",
        ),
        (
            vec![&format!("{base_url}/v2/a/blobs/sha256:{}", "0".repeat(64))[..]],
            "404",
            "BLOB_UNKNOWN",
        ),
    ] {
        let (body, got) = curl(&args);
        assert_eq!(got, code, "{args:?}: {body}");
        assert!(body.contains(oci), "{args:?}: {body}");
    }
    // Ranges, and the headers an OCI client reads.
    let layer0 = layers[0]["digest"].as_str().unwrap();
    let out = run(Command::new("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            "Range: bytes=10-19",
        ])
        .arg(format!("{base_url}/v2/a/blobs/{layer0}")));
    assert!(out.starts_with("HTTP/1.1 206"), "{out}");
    assert!(
        out.to_lowercase()
            .contains(&format!("docker-content-digest: {layer0}")),
        "{out}"
    );
    assert!(
        out.to_lowercase().contains("content-range: bytes 10-19/"),
        "{out}"
    );
    let out = run(Command::new("curl")
        .args(["-sS", "-I"])
        .arg(format!("{base_url}/v2/a/manifests/{manifest_digest}")));
    assert!(
        out.to_lowercase()
            .contains("content-type: application/vnd.oci.image.manifest.v1+json"),
        "{out}"
    );

    phase("registry checked");
    for a in [&app, &other_app] {
        cli(&c, &["apps", "uninstall", "--purge", a]).await;
    }
    for img in [&v1, &v2, &other, &base] {
        let _ = Command::new("podman").args(["rmi", img]).output();
    }
    phase("cleaned up");
    drop(cn);
    relay.shutdown().await;
}

/// A publisher that forges layered releases part by part: `archy blob add` for each child and
/// for a hand-made HashSeq root (32-byte hashes, concatenated), then a signed release naming
/// them. Its node serves what it added, so a consumer fetches exactly what was forged.
struct Forge {
    home: PathBuf,
    dir: PathBuf,
    origin: Value,
    n: usize,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

impl Forge {
    async fn add(&mut self, bytes: &[u8]) -> String {
        self.n += 1;
        let path = self.dir.join(format!("part-{}", self.n));
        std::fs::write(&path, bytes).unwrap();
        let out = cli_json(
            &self.home,
            &["blob", "add", path.to_str().unwrap(), "--json"],
        )
        .await;
        out["hash"].as_str().unwrap().to_owned()
    }

    /// Publishes app `id` whose parts are `children` (bytes), with `image.id` and
    /// `image.layers.size` as given; `extra_root` adds a child hash the manifest does not name.
    async fn publish(
        &mut self,
        id: &str,
        children: &[Vec<u8>],
        image_id: &str,
        size: u64,
        extra_root: bool,
    ) -> Vec<String> {
        let mut hashes = Vec::new();
        for c in children {
            hashes.push(self.add(c).await);
        }
        let mut root = Vec::new();
        for h in hashes
            .iter()
            .chain(extra_root.then(|| &hashes[hashes.len() - 1]))
        {
            root.extend(hex::decode(h).unwrap());
        }
        let root_hash = self.add(&root).await;
        let text = std::fs::read_to_string(repo().join("apps/hello-web/manifest.yaml")).unwrap();
        let mut m: Value =
            serde_json::to_value(archy_marketplace::manifest::parse(&text).unwrap()).unwrap();
        m["id"] = id.into();
        m["origin"] = self.origin.clone();
        m["image"] = serde_json::json!({
            "name": "localhost/forged/app:1",
            "id": image_id,
            "layers": {"blake3": root_hash, "size": size, "format": "oci-layers"},
        });
        let path = self.dir.join(format!("{id}.json"));
        std::fs::write(&path, m.to_string()).unwrap();
        let out = cli_json(
            &self.home,
            &["app", "publish", path.to_str().unwrap(), "--json"],
        )
        .await;
        assert_eq!(out["accepted"], 1, "{out}");
        hashes
    }
}

fn oci_manifest(config: &[u8], layers: &[(&[u8], Value)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": Digest::of(config).as_str(), "size": config.len()},
        "layers": layers.iter().map(|(bytes, extra)| {
            let mut d = serde_json::json!({"mediaType": OCI_LAYER, "digest": Digest::of(bytes).as_str(), "size": bytes.len()});
            for (k, v) in extra.as_object().into_iter().flatten() {
                d[k] = v.clone();
            }
            d
        }).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// A forged release: its parts, `image.id`, `image.layers.size`, whether the root has a child
/// more than the manifest names, and the check and child its refusal must name.
struct Case {
    name: String,
    children: Vec<Vec<u8>>,
    image_id: String,
    size: u64,
    extra_root: bool,
    check: &'static str,
    child: &'static str,
}

fn case(
    name: &str,
    children: Vec<Vec<u8>>,
    image_id: String,
    size: u64,
    extra_root: bool,
    check: &'static str,
    child: &'static str,
) -> Case {
    Case {
        name: name.into(),
        children,
        image_id,
        size,
        extra_root,
        check,
        child,
    }
}

fn config_for(arch: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"os": "linux", "architecture": arch, "rootfs": {"type": "layers", "diff_ids": []}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layered_releases_are_refused_naming_the_check_and_nothing_reaches_podman() {
    if !have_tool(
        podman_ready(),
        "podman with the archy user (tests/setup/podman.sh)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (relay, _db) = embedded_relay().await;
    let url = relay.url().to_string();
    let p = home(dir.path(), "forger", &url, "");
    let c = rootless_home(dir.path(), "consumer", &url);
    let _pn = start(&p).await;
    let status = cli_json(&p, &["node", "status", "--json"]).await;
    let origin = serde_json::json!({
        "endpoint": status["swarm"]["endpoint"],
        "addrs": status["swarm"]["addrs"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect::<Vec<_>>(),
    });
    let mut forge = Forge {
        home: p.clone(),
        dir: dir.path().to_path_buf(),
        origin,
        n: 0,
    };
    let arch = archy_oci::Platform::host().architecture;
    let tag = std::process::id();
    let layer = format!("a layer {tag}").repeat(100).into_bytes();
    let config = config_for(&arch);
    let sum = |parts: &[&[u8]]| parts.iter().map(|p| p.len() as u64).sum::<u64>();
    let id_of = |b: &[u8]| Digest::of(b).to_string();

    let mut cases: Vec<Case> = Vec::new();
    // A layer whose BLAKE3 verifies but whose sha256 is not its digest.
    let m = oci_manifest(&config, &[(b"other bytes".as_slice(), Value::Null)]);
    let m = String::from_utf8(m)
        .unwrap()
        .replace(
            &format!("\"size\":{}", b"other bytes".len()),
            &format!("\"size\":{}", layer.len()),
        )
        .into_bytes();
    cases.push(case(
        "sha",
        vec![m.clone(), config.clone(), layer.clone()],
        id_of(&config),
        sum(&[&m, &config, &layer]),
        false,
        "layer-digest",
        "child 2",
    ));
    // A config whose sha256 is not image.id (the manifest agrees with image.id, the bytes do not).
    let other_cfg = config_for(&arch)
        .into_iter()
        .chain(*b" ")
        .collect::<Vec<u8>>();
    let m = oci_manifest(&other_cfg, &[(&layer, Value::Null)]);
    let lie = String::from_utf8(m)
        .unwrap()
        .replace(
            &format!("\"size\":{}", other_cfg.len()),
            &format!("\"size\":{}", config.len()),
        )
        .into_bytes();
    cases.push(case(
        "cfg",
        vec![lie.clone(), config.clone(), layer.clone()],
        id_of(&other_cfg),
        sum(&[&lie, &config, &layer]),
        false,
        "config-digest",
        "child 1",
    ));
    // A child count that does not match the manifest.
    let m = oci_manifest(&config, &[(&layer, Value::Null)]);
    cases.push(case(
        "count",
        vec![m.clone(), config.clone(), layer.clone()],
        id_of(&config),
        sum(&[&m, &config, &layer]),
        true,
        "child-count",
        "HashSeq root",
    ));
    // A size that does not match.
    cases.push(case(
        "size",
        vec![m.clone(), config.clone(), layer.clone()],
        id_of(&config),
        sum(&[&m, &config, &layer]) + 1,
        false,
        "child-size",
        "HashSeq root",
    ));
    // An image index instead of a manifest.
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{"mediaType": OCI_MANIFEST, "digest": Digest::of(&m).as_str(), "size": m.len()}]})).unwrap();
    cases.push(case(
        "index",
        vec![index.clone(), config.clone(), layer.clone()],
        id_of(&config),
        sum(&[&index, &config, &layer]),
        false,
        "single-platform",
        "child 0",
    ));
    // A foreign-layer descriptor.
    let m = oci_manifest(
        &config,
        &[(
            &layer,
            serde_json::json!({"urls": ["https://example.com/l"]}),
        )],
    );
    cases.push(case(
        "foreign",
        vec![m.clone(), config.clone(), layer.clone()],
        id_of(&config),
        sum(&[&m, &config, &layer]),
        false,
        "foreign-layer",
        "child 2",
    ));
    // A config for another architecture: refused before any layer is fetched.
    let alien = config_for(if arch == "arm64" { "amd64" } else { "arm64" });
    let alien_layer = format!("an alien layer {tag}").repeat(100).into_bytes();
    let m = oci_manifest(&alien, &[(&alien_layer, Value::Null)]);
    cases.push(case(
        "arch",
        vec![m.clone(), alien.clone(), alien_layer.clone()],
        id_of(&alien),
        sum(&[&m, &alien, &alien_layer]),
        false,
        "platform",
        "child 1",
    ));

    let mut layer_hashes = Vec::new();
    for k in &cases {
        let id = format!("forged-{}-{tag}", k.name);
        let hashes = forge
            .publish(&id, &k.children, &k.image_id, k.size, k.extra_root)
            .await;
        layer_hashes.push(hashes[2].clone());
    }
    for (k, layer_hash) in cases.iter().zip(&layer_hashes) {
        let (name, check, child) = (k.name.as_str(), k.check, k.child);
        let id = format!("forged-{name}-{tag}");
        sync_until(&c, &id, "1.0.0").await;
        let out = cli(&c, &["apps", "install", &id, "--confirm"]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        assert!(
            err.contains(check) && err.contains(child),
            "{name}: expected `{check}` on {child}, got: {err}"
        );
        let exists = rootless_podman(&["image", "exists", &k.image_id]);
        assert!(!exists.status.success(), "{name}: an image reached Podman");
        if name == "arch" {
            let held = cli_json(&c, &["blob", "ls", "--json"]).await;
            assert!(
                !held.to_string().contains(layer_hash.as_str()),
                "{name}: a layer was fetched: {held}"
            );
        }
        eprintln!("{name}: refused: {}", err.trim());
    }
    relay.shutdown().await;
}

fn rootless_images(app: &str) -> Vec<String> {
    let out = rootless_podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let prefix = format!("localhost/archy-apps/{app}:");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l[prefix.len()..].to_owned())
        .collect();
    v.sort();
    v
}

fn get_page(port: u16) -> Option<String> {
    let out = Command::new("curl")
        .args(["-fsS", "-m", "10", &format!("http://127.0.0.1:{port}/")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_the_last_two_versions_and_the_origin_keeps_everything() {
    if !have_tool(
        podman_ready(),
        "podman with the archy user (tests/setup/podman.sh)",
    ) {
        return;
    }
    let tag = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("localhost/archy/base-gc:{tag}");
    build_base(dir.path(), &base, 1);
    let versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0"];
    let images: Vec<String> = versions
        .iter()
        .map(|v| {
            let t = format!("localhost/archy/gc:{tag}-{v}");
            build_app(dir.path(), &base, &t, &format!("<h1>gc {v}</h1>"))
        })
        .collect();
    let (relay, _db) = embedded_relay().await;
    let url = relay.url().to_string();
    let p = home(dir.path(), "publisher", &url, "");
    let c = rootless_home(dir.path(), "consumer", &url);
    let _pn = start(&p).await;
    let mut cn = start(&c).await;
    let app = format!("gc-{tag}");
    let port = archy_tests::cli::sticky_loopback().port();
    let mut roots = Vec::new();
    for (i, (v, image)) in versions.iter().zip(&images).enumerate() {
        let m = manifest(dir.path(), &app, v, port, "archy.app/v2");
        let out = cli_json(&p, &["app", "publish", &m, "--image", image, "--json"]).await;
        roots.push(
            out["image"]["layers"]["blake3"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        sync_until(&c, &app, v).await;
        let verb = if i == 0 { "install" } else { "update" };
        let r = cli_json(&c, &["apps", verb, &app, "--confirm", "--json"]).await;
        assert_eq!(r["outcome"]["result"], "running", "{v}: {r}\n{}", cn.log());
    }
    // The pass after each update already ran; an explicit one waits for the sweep.
    let gc = cli_json(&c, &["blob", "gc", "--json"]).await;
    let held: Vec<String> = cli_json(&c, &["blob", "ls", "--json"])
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["hash"].as_str().unwrap().to_owned())
        .collect();
    for (i, root) in roots.iter().enumerate() {
        let want = i >= versions.len() - 2;
        assert_eq!(held.contains(root), want, "{}: {gc}", versions[i]);
    }
    assert_eq!(rootless_images(&app), ["1.4.0", "1.5.0"], "{gc}");
    // Nothing else of the app is left in Podman either (not even under its registry reference).
    let all = rootless_podman(&["images", "-a", "--format", "{{.ID}} {{.Repository}}"]);
    let ids: std::collections::BTreeSet<String> = String::from_utf8_lossy(&all.stdout)
        .lines()
        .filter(|l| l.contains(&app))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}\n{gc}");
    let why = gc["kept"].to_string();
    assert!(
        why.contains("rollback") && why.contains("installed"),
        "{gc}"
    );

    // The origin still serves every version it published, children included.
    let fresh = home(dir.path(), "fresh", &url, "");
    let status = cli_json(&p, &["node", "status", "--json"]).await;
    let from = format!(
        "{}@{}",
        status["swarm"]["endpoint"].as_str().unwrap(),
        status["swarm"]["addrs"][0].as_str().unwrap()
    );
    let pgc = cli_json(&p, &["blob", "gc", "--dry-run", "--json"]).await;
    assert_eq!(pgc["removed"], serde_json::json!([]), "{pgc}");
    for root in &roots {
        let out = dir.path().join(format!("{root}.seq"));
        let got = cli(
            &fresh,
            &[
                "blob",
                "get",
                root,
                "--from",
                &from,
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .await;
        assert!(got.status.success(), "{got:?}");
        let seq = std::fs::read(&out).unwrap();
        let last = hex::encode(&seq[seq.len() - 32..]);
        let got = cli(&fresh, &["blob", "get", &last, "--from", &from]).await;
        assert!(got.status.success(), "the app layer of {root}: {got:?}");
    }

    // After GC and a restart the app runs, and a broken update rolls back to it.
    cn.stop();
    cn = start(&c).await;
    let mut up = None;
    for _ in 0..100 {
        up = get_page(port);
        if up.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(up.is_some_and(|p| p.contains("gc 1.5.0")), "{}", cn.log());
    let broken = manifest(dir.path(), &app, "1.6.0", port, "archy.app/v2");
    let text = std::fs::read_to_string(&broken)
        .unwrap()
        .replace(
            r#"command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]"#,
            r#"command: ["/bin/busybox", "sleep", "100000"]"#,
        )
        .replace("retries: 10", "retries: 3");
    std::fs::write(&broken, text).unwrap();
    cli_json(
        &p,
        &["app", "publish", &broken, "--image", &images[5], "--json"],
    )
    .await;
    sync_until(&c, &app, "1.6.0").await;
    let out = cli(&c, &["apps", "update", &app, "--confirm", "--json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"]["result"], "rolled-back", "{v}");
    assert!(get_page(port).is_some_and(|p| p.contains("gc 1.5.0")));

    cli(&c, &["apps", "uninstall", "--purge", &app]).await;
    for img in images.iter().chain([&base]) {
        let _ = Command::new("podman").args(["rmi", img]).output();
    }
    drop(cn);
    relay.shutdown().await;
}

/// Two nodes fetching one layered image at once (issue 16, `archy apps fetch`): each serves the
/// image as a partial mirror from the moment its root is known, finds the other on the relay,
/// and they share the origin's pieces out, so the origin's capped uplink sends the image about
/// once, not twice; both check every part (BLAKE3 and sha256) and end as mirrors, with nothing
/// in Podman.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_fetching_one_layered_image_share_it_and_the_origin_sends_it_about_once() {
    if !have_tool(
        podman_ready(),
        "podman with the archy user (tests/setup/podman.sh)",
    ) {
        return;
    }
    let tag = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("localhost/archy/base-share:{tag}");
    build_base(dir.path(), &base, 8);
    let image = build_app(
        dir.path(),
        &base,
        &format!("localhost/archy/share:{tag}"),
        "<h1>shared</h1>",
    );
    let (relay, _db) = embedded_relay().await;
    let url = relay.url().to_string();
    let p = home(dir.path(), "publisher", &url, "");
    // A home uplink for the origin (2 MB/s): the two fetches overlap.
    let config = std::fs::read_to_string(p.join("config.toml")).unwrap();
    std::fs::write(
        p.join("config.toml"),
        config.replace(
            "stall_timeout_secs = 5\n",
            "stall_timeout_secs = 5\nupload_rate_bytes_per_sec = 2000000\n",
        ),
    )
    .unwrap();
    let (c1, c2) = (
        home(dir.path(), "consumer-1", &url, ""),
        home(dir.path(), "consumer-2", &url, ""),
    );
    let _pn = start(&p).await;
    let (n1, n2) = (start(&c1).await, start(&c2).await);
    let app = format!("share-{tag}");
    let port = archy_tests::cli::sticky_loopback().port();
    let m = manifest(dir.path(), &app, "1.0.0", port, "archy.app/v2");
    let published = cli_json(&p, &["app", "publish", &m, "--image", &image, "--json"]).await;
    assert_eq!(published["accepted"], 1, "{published}");
    let show = sync_until(&c1, &app, "1.0.0").await;
    sync_until(&c2, &app, "1.0.0").await;
    let origin = show["latest_manifest"]["origin"]["endpoint"]
        .as_str()
        .unwrap()
        .to_owned();

    let fetch = ["apps", "fetch", app.as_str(), "--confirm", "--json"];
    let (r1, r2) = tokio::join!(cli_json(&c1, &fetch), cli_json(&c2, &fetch));
    let from = |r: &Value, who: &str| -> u64 {
        (r["fetch"]["bytes_per_source"].as_array().unwrap().iter())
            .filter(|s| s[0] == who)
            .map(|s| s[1].as_u64().unwrap())
            .sum()
    };
    let mut image_bytes = 0;
    for (r, node) in [(&r1, &n1), (&r2, &n2)] {
        assert_eq!(r["version"], "1.0.0", "{r}\n{}", node.log());
        assert_eq!(r["mirrored"], true, "{r}");
        assert_eq!(r["fetch"]["held"], 0, "nothing was held before: {r}");
        let moved = r["fetch"]["transferred"].as_u64().unwrap();
        image_bytes = image_bytes.max(moved);
    }
    assert!(image_bytes > 8 << 20, "{r1}");
    let from_origin = from(&r1, &origin) + from(&r2, &origin);
    let shared = r1["fetch"]["transferred"].as_u64().unwrap()
        + r2["fetch"]["transferred"].as_u64().unwrap()
        - from_origin;
    eprintln!(
        "origin sent {from_origin} bytes for two copies of {image_bytes}; the consumers traded {shared}"
    );
    assert!(
        (from_origin as f64) < 1.5 * image_bytes as f64,
        "the origin sent {from_origin} bytes for two fetches of a {image_bytes}-byte image: the \
         fetchers did not share it\n{r1}\n{r2}\n{}\n{}",
        n1.log(),
        n2.log()
    );
    // Nothing reached Podman: `apps fetch` only fills the store.
    assert!(!Command::new("podman")
        .args([
            "image",
            "exists",
            &format!("localhost/archy-apps/{app}:1.0.0")
        ])
        .status()
        .unwrap()
        .success());
}
