//! Real-Podman tests of the reconciler (no fakes). They need Podman and the local test image
//! `localhost/archy/busybox:latest` (and the user `archy` for the rootless test) — run
//! `tests/setup/podman.sh` as root first. If the `podman` binary is absent they are skipped
//! with a loud message; anything else that is wrong fails them.
//!
//! Every test uses its own `archy.owner` label, app names and state dir, so tests run in
//! parallel, and it removes its containers, volumes and secrets when it ends (even on panic).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use archy_orchestrator::{
    AppSpec, AppState, Config, Error, HealthCheck, HealthKind, InstallOutcome, Intent,
    OutcomeStatus, PodmanCmd, PortSpec, Protocol, Reconciler, SecretKind, SecretSpec, VolumeSpec,
};

const IMAGE: &str = "localhost/archy/busybox:latest";
const SAFETY: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------- harness

mod common;
use common::unique;

fn podman_binary_present() -> bool {
    common::podman_binary_present(&["podman".to_owned()], "the orchestrator")
}

macro_rules! require_podman {
    () => {
        if !podman_binary_present() {
            return;
        }
    };
}

/// A free port below the kernel's ephemeral range (32768+): apps are stopped and started again
/// on their port, and meanwhile any outgoing connection could take an ephemeral one.
fn free_port() -> u16 {
    loop {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Synchronous podman call for set-up and clean-up.
fn sh_podman(cmd: &PodmanCmd, args: &[&str]) -> std::process::Output {
    let argv = cmd.argv();
    std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .args(args)
        .output()
        // A deliberately missing podman (policy test): report a failed call.
        .unwrap_or_else(|_| std::process::Command::new("false").output().unwrap())
}

fn podman_ok(cmd: &PodmanCmd, args: &[&str]) -> String {
    let out = sh_podman(cmd, args);
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn image_id(cmd: &PodmanCmd, image: &str) -> String {
    let out = sh_podman(cmd, &["image", "inspect", "--format", "{{.Id}}", image]);
    assert!(
        out.status.success(),
        "test image {image} is missing: run `sudo tests/setup/podman.sh` ({})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    format!("sha256:{}", String::from_utf8_lossy(&out.stdout).trim())
}

/// One test's world: state dir, owner label, and clean-up of everything it created.
struct TestEnv {
    dir: tempfile::TempDir,
    owner: String,
    podman: PodmanCmd,
    apps: Mutex<Vec<String>>,
    images: Mutex<Vec<String>>,
}

impl TestEnv {
    fn new() -> Self {
        Self::with_podman(PodmanCmd::new())
    }

    fn with_podman(podman: PodmanCmd) -> Self {
        TestEnv {
            dir: tempfile::tempdir().unwrap(),
            owner: unique("owner"),
            podman,
            apps: Mutex::new(vec![]),
            images: Mutex::new(vec![]),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn config(&self) -> Config {
        let mut c = Config::new(self.state_dir());
        c.podman = self.podman.clone();
        c.owner = self.owner.clone();
        c.interval = Duration::from_secs(1);
        c
    }

    fn open(&self) -> Arc<Reconciler> {
        Arc::new(Reconciler::open(self.config()).unwrap())
    }

    fn app(&self, tag: &str) -> String {
        let name = unique(tag);
        self.apps.lock().unwrap().push(name.clone());
        name
    }

    /// An httpd app on a fresh loopback port, with a volume at /data and an http health check.
    fn web(&self, name: &str, version: &str) -> AppSpec {
        let port = free_port();
        let mut s = AppSpec::new(name, version, IMAGE);
        s.service_mut().image_id = Some(image_id(&self.podman, IMAGE));
        s.service_mut().ports.push(PortSpec {
            container: 8080,
            host: port,
            protocol: Protocol::Tcp,
            bind: "127.0.0.1".parse().unwrap(),
        });
        s.service_mut().volumes.push(VolumeSpec {
            name: "data".into(),
            target: "/data".into(),
        });
        s.service_mut().command = vec![
            "httpd".into(),
            "-f".into(),
            "-p".into(),
            "8080".into(),
            "-h".into(),
            "/www".into(),
        ];
        s.service_mut().health_check = Some(HealthCheck {
            kind: HealthKind::Http,
            port: Some(8080),
            path: Some("/".into()),
            command: vec![],
            interval_secs: 1,
            timeout_secs: 5,
            retries: 20,
        });
        s.service_mut().stop_grace_secs = 5;
        s
    }

    fn container_ids(&self) -> Vec<String> {
        let out = podman_ok(
            &self.podman,
            &[
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                &format!("label=archy.owner={}", self.owner),
            ],
        );
        out.lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn volume_exists(&self, name: &str) -> bool {
        sh_podman(&self.podman, &["volume", "exists", name])
            .status
            .success()
    }

    fn exec(&self, app: &str, script: &str) -> String {
        podman_ok(
            &self.podman,
            &["exec", &format!("archy_{app}"), "sh", "-c", script],
        )
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for id in self.container_ids_quiet() {
            sh_podman(&self.podman, &["rm", "-f", "-t", "0", &id]);
        }
        for app in self.apps.lock().unwrap().iter() {
            sh_podman(
                &self.podman,
                &["rm", "-f", "-t", "0", &format!("archy_{app}")],
            );
            let vols = sh_podman(
                &self.podman,
                &[
                    "volume",
                    "ls",
                    "-q",
                    "--filter",
                    &format!("name=archy_{app}_"),
                ],
            );
            for v in String::from_utf8_lossy(&vols.stdout).lines() {
                sh_podman(&self.podman, &["volume", "rm", "-f", v.trim()]);
            }
            let secrets = sh_podman(&self.podman, &["secret", "ls", "--format", "{{.Name}}"]);
            for s in String::from_utf8_lossy(&secrets.stdout).lines() {
                if s.starts_with(&format!("archy_{app}_")) {
                    sh_podman(&self.podman, &["secret", "rm", s.trim()]);
                }
            }
            sh_podman(
                &self.podman,
                &["network", "rm", "-f", &format!("archy_{app}")],
            );
        }
        for img in self.images.lock().unwrap().iter() {
            sh_podman(&self.podman, &["rmi", "-f", img]);
        }
    }
}

impl TestEnv {
    fn container_ids_quiet(&self) -> Vec<String> {
        let out = sh_podman(
            &self.podman,
            &[
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                &format!("label=archy.owner={}", self.owner),
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Plain HTTP/1.0 GET on loopback; the body, or an error.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    if !resp.starts_with("HTTP/1.") || !resp.contains(" 200 ") {
        return Err(format!("unexpected response: {resp:?}"));
    }
    Ok(resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

async fn eventually<F: FnMut() -> bool>(what: &str, f: F) {
    eventually_or(what, f, String::new).await
}

/// Polls `f` until true; on the (generous) safety timeout fails with `context()`.
async fn eventually_or<F: FnMut() -> bool, C: FnOnce() -> String>(
    what: &str,
    mut f: F,
    context: C,
) {
    let deadline = tokio::time::Instant::now() + SAFETY;
    while !f() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for: {what} {}", context());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn running_id(outcome: &InstallOutcome) -> String {
    match outcome {
        InstallOutcome::Running { container_id, .. } => container_id.clone(),
        other => panic!("expected running, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_serves_http_then_stop_start_restart() {
    require_podman!();
    let env = TestEnv::new();
    let r = env.open();
    let app = env.app("web");
    let mut spec = env.web(&app, "1.0.0");
    spec.service_mut().resources.memory_mb = Some(64);
    spec.service_mut().resources.cpus = Some("0.5".into());
    spec.service_mut().capabilities = vec!["net_bind_service".into()];
    let port = spec.service().ports[0].host;

    let id = running_id(&r.install(spec.clone()).await.unwrap());
    assert_eq!(http_get(port, "/").unwrap(), "archy test image\n");
    let st = r.status(&app).await.unwrap();
    assert_eq!(st.state, AppState::Running);
    assert_eq!(st.healthy, Some(true));
    assert_eq!(st.container_id.as_deref(), Some(id.as_str()));
    // The container carries the labels and the locked-down settings.
    let inspect = podman_ok(
        &env.podman,
        &[
            "inspect",
            "--format",
            "{{index .Config.Labels \"archy.spec-hash\"}} {{index .Config.Labels \"archy.version\"}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}",
            &id,
        ],
    );
    assert!(
        inspect.starts_with(&format!("{} 1.0.0", spec.spec_hash())),
        "{inspect}"
    );
    assert!(inspect.contains("no-new-privileges"), "{inspect}");
    let limits = podman_ok(
        &env.podman,
        &[
            "inspect",
            "--format",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.EffectiveCaps}}",
            &id,
        ],
    );
    assert_eq!(limits, "67108864 500000000 [CAP_NET_BIND_SERVICE]");
    let ports = podman_ok(&env.podman, &["port", &id]);
    assert_eq!(
        ports,
        format!("8080/tcp -> 127.0.0.1:{port}"),
        "published on loopback only"
    );
    // Installing the same spec again changes nothing.
    assert_eq!(running_id(&r.install(spec.clone()).await.unwrap()), id);

    let st = r.stop(&app).await.unwrap();
    assert_eq!(st.state, AppState::Stopped, "{st:?}");
    assert_eq!(st.intent, Intent::Stopped);
    assert!(http_get(port, "/").is_err());

    let st = r.start(&app).await.unwrap();
    assert_eq!(st.state, AppState::Running, "{st:?}");
    assert_eq!(
        st.container_id.as_deref(),
        Some(id.as_str()),
        "start reuses the container"
    );
    http_get(port, "/").unwrap();

    let before = podman_ok(
        &env.podman,
        &["inspect", "--format", "{{.State.StartedAt}}", &id],
    );
    let st = r.restart(&app).await.unwrap();
    assert_eq!(st.state, AppState::Running, "{st:?}");
    let after = podman_ok(
        &env.podman,
        &["inspect", "--format", "{{.State.StartedAt}}", &id],
    );
    assert_ne!(before, after, "restart must start the process again");
    http_get(port, "/").unwrap();

    let logs = r.logs(&app, Some(100)).await.unwrap();
    assert!(logs.len() < 100_000);
    let list = r.list().await.unwrap();
    assert_eq!(list.len(), 1);
    let json = serde_json::to_value(&list).unwrap();
    assert_eq!(json[0]["state"], "running");

    r.uninstall(&app, true).await.unwrap();
    assert!(env.container_ids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_app_stays_stopped_across_reconciler_restart() {
    require_podman!();
    let env = TestEnv::new();
    let app = env.app("stay");
    let spec = env.web(&app, "1.0.0");
    {
        let r = env.open();
        running_id(&r.install(spec).await.unwrap());
        assert_eq!(r.stop(&app).await.unwrap().state, AppState::Stopped);
    }
    let r = env.open();
    for _ in 0..3 {
        let report = r.reconcile_once().await.unwrap();
        assert!(
            report
                .for_app(&app)
                .all(|o| o.action != "start" && o.action != "create"),
            "{report:?}"
        );
    }
    // Also through the loop.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let looping = {
        let r = r.clone();
        tokio::spawn(async move {
            r.run(async {
                let _ = rx.await;
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.send(()).unwrap();
    looping.await.unwrap();
    let st = r.status(&app).await.unwrap();
    assert_eq!(st.state, AppState::Stopped);
    assert_eq!(st.intent, Intent::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_removed_behind_our_back_comes_back_and_intents_wake_the_loop() {
    require_podman!();
    let env = TestEnv::new();
    let mut cfg = env.config();
    // A timer this long proves the loop reacts to the intent change, not to the timer.
    cfg.interval = Duration::from_secs(3600);
    let r = Arc::new(Reconciler::open(cfg).unwrap());
    let app = env.app("back");
    let spec = env.web(&app, "1.0.0");
    let port = spec.service().ports[0].host;
    let old = running_id(&r.install(spec).await.unwrap());

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let looping = {
        let r = r.clone();
        tokio::spawn(async move {
            r.run(async {
                let _ = rx.await;
            })
            .await
        })
    };
    // Kill, then remove: on this sandbox `rm -f -t 0` alone has been seen (under heavy load)
    // to drop the record while conmon and the process lived on, holding the port.
    podman_ok(&env.podman, &["kill", &old]);
    podman_ok(&env.podman, &["rm", "-f", &old]);
    eventually("the removed container's port to be released", || {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
    .await;
    // Wake the loop the way the node will: an intent write (here a no-op one).
    r.set_intent(&app, Intent::Running).unwrap();
    let r2 = r.clone();
    eventually_or(
        "the container to come back",
        || env.container_ids().iter().any(|id| id != &old) && http_get(port, "/").is_ok(),
        || {
            format!(
                "{:?} last error: {:?}",
                r2.record(&app),
                r2.last_error(&app)
            )
        },
    )
    .await;
    // Stop through an intent write only; the loop acts on it.
    r.set_intent(&app, Intent::Stopped).unwrap();
    eventually("the loop to stop the app", || http_get(port, "/").is_err()).await;
    tx.send(()).unwrap();
    looping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciler_restart_adopts_healthy_containers() {
    require_podman!();
    let env = TestEnv::new();
    let db = env.app("db");
    let api = env.app("api");
    let (db_id, api_id) = {
        let r = env.open();
        let mut db_spec = env.web(&db, "1.0.0");
        db_spec.service_mut().health_check = Some(HealthCheck {
            kind: HealthKind::Exec,
            port: None,
            path: None,
            command: vec![
                "wget".into(),
                "-q".into(),
                "-O".into(),
                "/dev/null".into(),
                "http://127.0.0.1:8080/".into(),
            ],
            interval_secs: 1,
            timeout_secs: 10,
            retries: 20,
        });
        let db_id = running_id(&r.install(db_spec).await.unwrap());
        let mut api_spec = env.web(&api, "1.0.0");
        api_spec.service_mut().health_check.as_mut().unwrap().kind = HealthKind::Tcp;
        api_spec.dependencies = vec![db.clone()];
        let api_id = running_id(&r.install(api_spec).await.unwrap());
        (db_id, api_id)
    };
    let r = env.open();
    let report = r.reconcile_once().await.unwrap();
    let adopted: Vec<_> = report
        .outcomes
        .iter()
        .filter(|o| o.action == "adopt")
        .collect();
    assert_eq!(adopted.len(), 2, "{report:?}");
    assert!(report.failures().next().is_none(), "{report:?}");
    let mut ids = env.container_ids();
    ids.sort();
    let mut want = vec![db_id, api_id];
    want.sort();
    assert_eq!(ids, want, "same container ids after a reconciler restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_data_survives_restart_update_reinstall_and_purge_removes_it() {
    require_podman!();
    let env = TestEnv::new();
    let app = env.app("vol");
    let mut v1 = env.web(&app, "1.0.0");
    v1.service_mut().generated_secrets.push(SecretSpec {
        name: "token".into(),
        kind: SecretKind::Hex16,
        env: "TOKEN".into(),
    });
    let r = env.open();
    running_id(&r.install(v1.clone()).await.unwrap());
    env.exec(&app, "echo precious > /data/file");
    let token = env.exec(&app, "echo $TOKEN");
    assert_eq!(token.len(), 32);

    r.restart(&app).await.unwrap();
    assert_eq!(env.exec(&app, "cat /data/file"), "precious");

    // Update: a new version (new spec hash) replaces the container; data and secret stay.
    let mut v2 = v1.clone();
    v2.version = "2.0.0".into();
    v2.service_mut().env.insert("MODE".into(), "v2".into());
    let id2 = running_id(&r.install(v2.clone()).await.unwrap());
    assert_eq!(env.exec(&app, "cat /data/file"), "precious");
    assert_eq!(env.exec(&app, "echo $MODE"), "v2");
    assert_eq!(
        env.exec(&app, "echo $TOKEN"),
        token,
        "secret reused across updates"
    );
    assert_eq!(
        r.record(&app).unwrap().unwrap().previous.unwrap().version,
        "1.0.0"
    );

    // Uninstall keeps volume and secrets; reinstall finds them.
    r.uninstall(&app, false).await.unwrap();
    assert!(env.container_ids().is_empty());
    assert!(env.volume_exists(&format!("archy_{app}_data")));
    assert!(env
        .state_dir()
        .join("secrets")
        .join(&app)
        .join("token")
        .exists());
    let id3 = running_id(&r.install(v2.clone()).await.unwrap());
    assert_ne!(id2, id3);
    assert_eq!(env.exec(&app, "cat /data/file"), "precious");
    assert_eq!(env.exec(&app, "echo $TOKEN"), token);

    // Purge removes everything.
    r.uninstall(&app, true).await.unwrap();
    assert!(env.container_ids().is_empty());
    assert!(!env.volume_exists(&format!("archy_{app}_data")));
    assert!(!env.state_dir().join("secrets").join(&app).exists());
    assert!(r.record(&app).unwrap().is_none());
    let secrets = podman_ok(&env.podman, &["secret", "ls", "--format", "{{.Name}}"]);
    assert!(!secrets.contains(&format!("archy_{app}_token")));
    // A fresh install after purge starts empty.
    running_id(&r.install(v2).await.unwrap());
    assert_eq!(env.exec(&app, "ls /data | wc -l"), "0");
    r.uninstall(&app, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_update_rolls_back_to_previous_spec_and_image_with_data_intact() {
    require_podman!();
    let env = TestEnv::new();
    let app = env.app("upd");
    let v1 = env.web(&app, "1.0.0");
    let port = v1.service().ports[0].host;
    let r = env.open();
    let id1 = running_id(&r.install(v1.clone()).await.unwrap());
    env.exec(&app, "echo v1-data > /data/file");

    // A second image (another id) for the new version, made locally from the running one.
    let image2 = format!("localhost/archy/{app}:2.0.0");
    env.images.lock().unwrap().push(image2.clone());
    podman_ok(&env.podman, &["commit", "-q", &id1, &image2]);
    let mut v2 = v1.clone();
    v2.version = "2.0.0".into();
    v2.service_mut().image = image2.clone();
    v2.service_mut().image_id = Some(image_id(&env.podman, &image2));
    assert_ne!(v2.service().image_id, v1.service().image_id);
    // Version 2 never serves HTTP: its health check must fail.
    v2.service_mut().command = vec!["sleep".into(), "1000".into()];
    v2.service_mut().health_check.as_mut().unwrap().retries = 3;

    match r.install(v2.clone()).await.unwrap() {
        InstallOutcome::RolledBack { version, reason } => {
            assert_eq!(version, "1.0.0");
            assert!(reason.contains("health"), "{reason}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    let st = r.status(&app).await.unwrap();
    assert_eq!(st.version, "1.0.0");
    assert_eq!(st.state, AppState::Running);
    assert_eq!(st.rolled_back.as_ref().unwrap().from_version, "2.0.0");
    assert_eq!(http_get(port, "/").unwrap(), "archy test image\n");
    assert_eq!(env.exec(&app, "cat /data/file"), "v1-data");
    let img = podman_ok(
        &env.podman,
        &["inspect", "--format", "{{.Image}}", &format!("archy_{app}")],
    );
    assert_eq!(
        Some(format!("sha256:{img}")),
        v1.service().image_id,
        "back on the previous image"
    );
    // The loop does not retry the failed version.
    let report = r.reconcile_once().await.unwrap();
    assert!(
        report.for_app(&app).all(|o| o.action == "adopt"),
        "{report:?}"
    );

    // An update to an image that is not loaded is refused before anything is touched.
    let mut v3 = v1.clone();
    v3.version = "3.0.0".into();
    v3.service_mut().image_id = Some(format!("sha256:{}", "0".repeat(64)));
    assert!(matches!(
        r.install(v3).await,
        Err(Error::ImageMissing { .. })
    ));
    http_get(port, "/").unwrap();
    r.uninstall(&app, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_taken_at_start_fails_cleanly_and_the_created_container_is_reused() {
    require_podman!();
    let env = TestEnv::new();
    let app = env.app("busy");
    let spec = env.web(&app, "1.0.0");
    let port = spec.service().ports[0].host;
    let r = env.open();
    let blocker = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    match r.install(spec).await.unwrap() {
        InstallOutcome::Failed { reason } => {
            assert!(reason.contains("address already in use"), "{reason}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // `podman run` created the container, then its start failed: one container, not running.
    let ids = env.container_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_ne!(r.status(&app).await.unwrap().state, AppState::Running);
    drop(blocker);
    let st = r.start(&app).await.unwrap();
    assert_eq!(st.state, AppState::Running, "{st:?}");
    assert_eq!(
        st.container_id.as_deref(),
        Some(ids[0].as_str()),
        "the created container is started, not replaced"
    );
    assert_eq!(http_get(port, "/").unwrap(), "archy test image\n");
    r.uninstall(&app, true).await.unwrap();
}

/// Each Podman process costs 30–150 ms on these hosts: an install runs one `image inspect`,
/// one `ps` and one `run`, whatever else it may need (`inspect` while an app is slow to answer).
/// A Podman that logs each call's first two words to the returned file, then runs it.
fn counting_podman(dir: &std::path::Path) -> (PodmanCmd, PathBuf) {
    let log = dir.join("calls.log");
    let wrapper = dir.join("podman");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$1 $2\" >> '{}'\nexec podman \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    (
        PodmanCmd::from_argv(vec![wrapper.display().to_string()]),
        log,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_runs_one_image_check_one_ps_and_one_run() {
    require_podman!();
    let dir = tempfile::tempdir().unwrap();
    let (podman, log) = counting_podman(dir.path());
    let env = TestEnv::with_podman(podman);
    let app = env.app("count");
    let spec = env.web(&app, "1.0.0");
    let r = env.open();
    let calls = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::remove_file(&log).ok();
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("inspect "))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    calls();
    running_id(&r.install(spec.clone()).await.unwrap());
    // The volume is checked (its labels) beside the image and `ps`, and created explicitly,
    // labelled with its owner, before the run.
    assert_eq!(
        calls(),
        [
            "image inspect",
            "ps -a",
            "run --detach",
            "volume create",
            "volume inspect"
        ]
    );
    // The same spec again: checked and adopted, nothing started.
    running_id(&r.install(spec).await.unwrap());
    assert_eq!(calls(), ["image inspect", "ps -a", "volume inspect"]);
    r.uninstall(&app, true).await.unwrap();
}

/// An idle pass over a running stack asks Podman one thing: `ps`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pass_over_a_stack_makes_one_podman_call() {
    require_podman!();
    let dir = tempfile::tempdir().unwrap();
    let (podman, log) = counting_podman(dir.path());
    let env = TestEnv::with_podman(podman);
    let app = env.app("idle");
    let spec = stack_spec(&env, &app, "1.0.0", free_port());
    let r = env.open();
    running_id(&r.install(spec).await.unwrap());
    std::fs::remove_file(&log).ok();
    let report = r.reconcile_once().await.unwrap();
    assert!(
        report.for_app(&app).all(|o| o.action == "adopt"),
        "{report:?}"
    );
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(calls.lines().collect::<Vec<_>>(), ["ps -a"], "{calls}");
    r.uninstall(&app, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_ignoring_sigterm_is_killed_after_its_grace() {
    require_podman!();
    let env = TestEnv::new();
    let app = env.app("term");
    let mut s = AppSpec::new(&app, "1.0.0", IMAGE);
    s.service_mut().image_id = Some(image_id(&env.podman, IMAGE));
    s.service_mut().command = vec![
        "sh".into(),
        "-c".into(),
        "trap '' TERM; while true; do sleep 1; done".into(),
    ];
    s.service_mut().stop_grace_secs = 2;
    let r = env.open();
    let id = running_id(&r.install(s).await.unwrap());
    let st = r.stop(&app).await.unwrap();
    assert_eq!(st.state, AppState::Stopped, "{st:?}");
    assert!(st.last_error.is_none(), "stop reports success: {st:?}");
    let code = podman_ok(
        &env.podman,
        &["inspect", "--format", "{{.State.ExitCode}}", &id],
    );
    assert_eq!(code, "137", "killed by SIGKILL after the grace");
    r.uninstall(&app, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_looping_app_fails_with_its_reason_and_backs_off() {
    require_podman!();
    let env = TestEnv::new();
    let mut cfg = env.config();
    // Long enough that the next pass surely falls inside the back-off window.
    cfg.backoff.base_ms = 600_000;
    cfg.backoff.max_ms = 600_000;
    let r = Reconciler::open(cfg).unwrap();
    let app = env.app("crash");
    let mut s = AppSpec::new(&app, "1.0.0", IMAGE);
    s.service_mut().image_id = Some(image_id(&env.podman, IMAGE));
    s.service_mut().command = vec!["sh".into(), "-c".into(), "exit 3".into()];
    match r.install(s).await.unwrap() {
        InstallOutcome::Failed { reason } => assert!(reason.contains("exit code 3"), "{reason}"),
        other => panic!("expected failure, got {other:?}"),
    }
    let report = r.reconcile_once().await.unwrap();
    let outcomes: Vec<_> = report.for_app(&app).collect();
    assert_eq!(outcomes.len(), 1, "{report:?}");
    assert_eq!(outcomes[0].status, OutcomeStatus::Blocked);
    assert!(outcomes[0].message.contains("back-off"), "{report:?}");
    let st = r.status(&app).await.unwrap();
    assert_eq!(st.state, AppState::Stopped);
    assert_eq!(st.restarts_backing_off, 1);
    // An explicit start by the user resets the back-off and tries again.
    let st = r.start(&app).await.unwrap();
    assert!(st.last_error.unwrap().contains("exit code 3"));
    r.uninstall(&app, true).await.unwrap();
}

/// Helper run in a child process by `reconciler_killed_mid_install_converges`: installs and
/// waits to be killed. Does nothing when run by hand.
#[tokio::test]
#[ignore = "helper process for reconciler_killed_mid_install_converges"]
async fn child_install_helper() {
    let (Ok(state), Ok(owner), Ok(spec)) = (
        std::env::var("ARCHY_CHILD_STATE"),
        std::env::var("ARCHY_CHILD_OWNER"),
        std::env::var("ARCHY_CHILD_SPEC"),
    ) else {
        return;
    };
    let mut cfg = Config::new(state);
    cfg.owner = owner;
    let r = Reconciler::open(cfg).unwrap();
    let spec: AppSpec = serde_json::from_str(&spec).unwrap();
    let _ = r.install(spec).await;
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciler_killed_mid_install_converges() {
    require_podman!();
    let env = TestEnv::new();
    let app = env.app("kill");
    let mut spec = env.web(&app, "1.0.0");
    // Slow to become healthy, so the kill lands while install waits for the health check.
    spec.service_mut().command = vec![
        "sh".into(),
        "-c".into(),
        "sleep 3; exec httpd -f -p 8080 -h /www".into(),
    ];
    let port = spec.service().ports[0].host;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_install_helper",
            "--ignored",
            "--nocapture",
        ])
        .env("ARCHY_CHILD_STATE", env.state_dir())
        .env("ARCHY_CHILD_OWNER", &env.owner)
        .env("ARCHY_CHILD_SPEC", serde_json::to_string(&spec).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the child to create the container", || {
        !env.container_ids().is_empty()
    })
    .await;
    // SIGKILL: no destructor, no flush, nothing graceful.
    child.kill().unwrap();
    child.wait().unwrap();

    let r = env.open();
    assert_eq!(
        r.record(&app).unwrap().unwrap().intent,
        Intent::Running,
        "intent committed first"
    );
    let report = r.reconcile_once().await.unwrap();
    assert!(report.failures().next().is_none(), "{report:?}");
    let st = r.status(&app).await.unwrap();
    assert_eq!(st.state, AppState::Running, "{st:?}");
    assert_eq!(env.container_ids().len(), 1);
    eventually("the app to answer", || http_get(port, "/").is_ok()).await;
    r.uninstall(&app, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciler_killed_mid_failing_update_rolls_back_after_restart() {
    require_podman!();
    let env = TestEnv::new();
    let app = env.app("killupd");
    let v1 = env.web(&app, "1.0.0");
    let port = v1.service().ports[0].host;
    {
        let r = env.open();
        running_id(&r.install(v1.clone()).await.unwrap());
        env.exec(&app, "echo v1-data > /data/file");
    }
    // Version 2 never answers its health check; the child is killed while it waits for it.
    let mut v2 = v1.clone();
    v2.version = "2.0.0".into();
    v2.service_mut().command = vec!["sleep".into(), "1000".into()];
    // Long enough (>= 15 s of probes) that the kill lands first; short enough for the rerun.
    v2.service_mut().health_check.as_mut().unwrap().retries = 15;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_install_helper",
            "--ignored",
            "--nocapture",
        ])
        .env("ARCHY_CHILD_STATE", env.state_dir())
        .env("ARCHY_CHILD_OWNER", &env.owner)
        .env("ARCHY_CHILD_SPEC", serde_json::to_string(&v2).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let version_of_running = || {
        sh_podman(
            &env.podman,
            &[
                "inspect",
                "--format",
                "{{.State.Status}} {{index .Config.Labels \"archy.version\"}}",
                &format!("archy_{app}"),
            ],
        )
    };
    eventually("the child to start version 2", || {
        String::from_utf8_lossy(&version_of_running().stdout).trim() == "running 2.0.0"
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    let r = env.open();
    let rec = r.record(&app).unwrap().unwrap();
    assert!(
        rec.update_pending && rec.current.version == "2.0.0",
        "{rec:?}"
    );
    // The restarted reconciler must not adopt the unverified update as if it were healthy.
    let report = r.reconcile_once().await.unwrap();
    assert!(
        report
            .for_app(&app)
            .any(|o| o.status == OutcomeStatus::RolledBack),
        "{report:?}"
    );
    let st = r.status(&app).await.unwrap();
    assert_eq!(
        (st.version.as_str(), st.state),
        ("1.0.0", AppState::Running)
    );
    assert_eq!(http_get(port, "/").unwrap(), "archy test image\n");
    assert_eq!(env.exec(&app, "cat /data/file"), "v1-data");
    r.uninstall(&app, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_violations_never_reach_podman() {
    require_podman!();
    // A Podman that does not exist: any call would fail with a Podman error, not a policy one.
    let fake = TestEnv::with_podman(PodmanCmd::from_argv(vec!["/nonexistent/podman".into()]));
    let real = TestEnv::new();
    let id = image_id(&real.podman, IMAGE);
    for env in [&fake, &real] {
        let r = env.open();
        let app = env.app("evil");
        let base = {
            let mut s = AppSpec::new(&app, "1.0.0", IMAGE);
            s.service_mut().image_id = Some(id.clone());
            s
        };
        let mut cap = base.clone();
        cap.service_mut().capabilities = vec!["SYS_ADMIN".into()];
        let mut cap2 = base.clone();
        cap2.service_mut().capabilities = vec!["NET_RAW".into()];
        let mut host_path = base.clone();
        host_path.service_mut().volumes.push(VolumeSpec {
            name: "/etc".into(),
            target: "/host-etc".into(),
        });
        let mut traversal = base.clone();
        traversal.service_mut().volumes.push(VolumeSpec {
            name: "data".into(),
            target: "/data/../etc".into(),
        });
        let mut public = base.clone();
        public.service_mut().ports.push(PortSpec {
            container: 80,
            host: 18081,
            protocol: Protocol::Tcp,
            bind: "0.0.0.0".parse().unwrap(),
        });
        for (bad, field) in [
            (cap, "capabilities[0]"),
            (cap2, "capabilities[0]"),
            (host_path, "volumes[0].name"),
            (traversal, "volumes[0].target"),
            (public, "ports[0].bind"),
        ] {
            match r.install(bad).await {
                Err(Error::Policy { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected a policy error on {field}, got {other:?}"),
            }
            assert!(r.record(&app).unwrap().is_none(), "nothing was written");
        }
        // `privileged` cannot even be expressed: the spec refuses unknown fields.
        let mut json = serde_json::to_value(&base).unwrap();
        json["privileged"] = true.into();
        assert!(serde_json::from_value::<AppSpec>(json).is_err());
    }
    assert!(real.container_ids().is_empty());
}

/// Collects every log line of the current thread (the test runs on a current-thread runtime).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_are_0600_delivered_and_never_logged() {
    require_podman!();
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = TestEnv::new();
    let app = env.app("sec");
    let mut spec = env.web(&app, "1.0.0");
    spec.service_mut().generated_secrets = vec![
        SecretSpec {
            name: "db-password".into(),
            kind: SecretKind::Hex32,
            env: "DB_PASSWORD".into(),
        },
        SecretSpec {
            name: "cookie".into(),
            kind: SecretKind::Base64,
            env: "COOKIE_KEY".into(),
        },
    ];
    let r = env.open();
    // The subscriber above is this thread's only. A callsite that another test's thread
    // registered while this one was being set up can keep the "no subscriber wants this"
    // interest it computed without it (tracing caches interest per callsite), and then this
    // thread's Podman lines go uncaptured. Recompute every callsite's interest now that the
    // test's own Podman calls have registered them all.
    tracing::callsite::rebuild_interest_cache();
    let id = running_id(&r.install(spec.clone()).await.unwrap());
    let dir = env.state_dir().join("secrets").join(&app);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let mut values = vec![];
    for (name, var) in [("db-password", "DB_PASSWORD"), ("cookie", "COOKIE_KEY")] {
        let path = dir.join(name);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let value = std::fs::read_to_string(&path).unwrap();
        assert!(value.len() >= 44);
        assert_eq!(
            env.exec(&app, &format!("printf %s \"${var}\"")),
            value,
            "delivered as {var}"
        );
        values.push(value);
    }
    // Restart and an update keep the values.
    r.restart(&app).await.unwrap();
    let mut v2 = spec.clone();
    v2.version = "1.0.1".into();
    running_id(&r.install(v2).await.unwrap());
    assert_eq!(env.exec(&app, "printf %s \"$DB_PASSWORD\""), values[0]);
    r.list().await.unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("podman"), "the capture works: {logs}");
    assert!(
        logs.contains("generated secret"),
        "secret generation is logged (by name): {logs}"
    );
    let app_logs = r.logs(&app, None).await.unwrap();
    let status = serde_json::to_string(&r.list().await.unwrap()).unwrap();
    for v in &values {
        assert!(
            !logs.contains(v.as_str()),
            "secret value leaked into the log"
        );
        assert!(!status.contains(v.as_str()), "secret value in the status");
        assert!(
            !app_logs.contains(v.as_str()),
            "secret value in the container log"
        );
    }
    let _ = id;
    r.uninstall(&app, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootless_as_unprivileged_user() {
    require_podman!();
    // As root, drive Podman as the unprivileged user `archy`; as any other user, Podman is
    // rootless already.
    let podman = if unsafe_getuid() == 0 {
        let ok = std::process::Command::new("id")
            .arg("archy")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "user `archy` is missing: run `sudo tests/setup/podman.sh`"
        );
        PodmanCmd::runuser("archy", "/home/archy", "/tmp/archy-run")
    } else {
        PodmanCmd::new()
    };
    let env = TestEnv::with_podman(podman);
    assert_eq!(
        podman_ok(
            &env.podman,
            &["info", "--format", "{{.Host.Security.Rootless}}"]
        ),
        "true"
    );
    let app = env.app("rootless");
    let mut spec = env.web(&app, "1.0.0");
    spec.service_mut().generated_secrets.push(SecretSpec {
        name: "key".into(),
        kind: SecretKind::Hex16,
        env: "KEY".into(),
    });
    spec.service_mut().read_only_root = true;
    let port = spec.service().ports[0].host;
    let r = env.open();
    running_id(&r.install(spec).await.unwrap());
    assert_eq!(http_get(port, "/").unwrap(), "archy test image\n");
    env.exec(&app, "echo kept > /data/f");
    assert!(env
        .exec(&app, "touch /rootfs-write 2>&1 || echo refused")
        .contains("refused"));
    let user = podman_ok(&env.podman, &["top", &format!("archy_{app}"), "huser"]);
    assert!(
        !user.lines().skip(1).any(|l| l.trim() == "root"),
        "host user of the app: {user}"
    );
    assert_eq!(r.stop(&app).await.unwrap().state, AppState::Stopped);
    assert_eq!(r.start(&app).await.unwrap().state, AppState::Running);
    assert_eq!(env.exec(&app, "cat /data/f"), "kept");
    let report = r.uninstall(&app, true).await.unwrap();
    assert!(
        report
            .for_app(&app)
            .all(|o| o.status == OutcomeStatus::Done),
        "{report:?}"
    );
    assert!(!env.volume_exists(&format!("archy_{app}_data")));
}

fn unsafe_getuid() -> u32 {
    // No libc dependency: the uid is in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u.parse().unwrap_or(1)))
        })
        .unwrap_or(1)
}

// ---------------------------------------------------------------------------- isolation (issue 13)

/// A busybox app that keeps running, with one volume at /data and one generated secret.
fn quiet_app(env: &TestEnv, name: &str, publisher: &str, volume: &str, secret: &str) -> AppSpec {
    let mut s = AppSpec::new(name, "1.0.0", IMAGE);
    s.publisher = publisher.into();
    s.service_mut().image_id = Some(image_id(&env.podman, IMAGE));
    s.service_mut().volumes.push(VolumeSpec {
        name: volume.into(),
        target: "/data".into(),
    });
    s.service_mut().generated_secrets.push(SecretSpec {
        name: secret.into(),
        kind: SecretKind::Hex32,
        env: "TOKEN".into(),
    });
    s.service_mut().command = vec!["sleep".into(), "100000".into()];
    s.service_mut().stop_grace_secs = 1;
    s
}

/// Under the old names app `X` with volume `bar-data` and app `X-bar` with volume `data` shared
/// one Podman volume (and `bar-key` / `key` one secret). Installed in either order, each now
/// sees only its own data and its own secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_whose_old_names_collided_see_only_their_own_data_and_secret() {
    require_podman!();
    for first_is_short in [true, false] {
        let env = TestEnv::new();
        let short = env.app("foo");
        let long = format!("{short}-bar");
        env.apps.lock().unwrap().push(long.clone());
        let a = quiet_app(&env, &short, "did:key:zSame", "bar-data", "bar-key");
        let b = quiet_app(&env, &long, "did:key:zSame", "data", "key");
        let order = if first_is_short {
            [(&a, &short), (&b, &long)]
        } else {
            [(&b, &long), (&a, &short)]
        };
        let r = env.open();
        for (spec, app) in order {
            running_id(&r.install(spec.clone()).await.unwrap());
            env.exec(app, &format!("echo {app} > /data/owner"));
        }
        for app in [&short, &long] {
            assert_eq!(
                env.exec(app, "ls /data"),
                "owner",
                "{app} sees only its own files"
            );
            assert_eq!(env.exec(app, "cat /data/owner"), *app);
        }
        let (ta, tb) = (
            env.exec(&short, "echo $TOKEN"),
            env.exec(&long, "echo $TOKEN"),
        );
        assert_eq!((ta.len(), tb.len()), (64, 64));
        assert_ne!(ta, tb, "each app has its own secret");
        // Every object is labelled with its owner and nothing needs attention.
        let audit = r.audit().await.unwrap();
        let mine: Vec<_> = audit
            .objects
            .iter()
            .filter(|o| {
                o.app.as_deref() == Some(short.as_str()) || o.app.as_deref() == Some(long.as_str())
            })
            .collect();
        assert_eq!(
            mine.len(),
            6,
            "2 containers, 2 volumes, 2 secrets: {mine:?}"
        );
        assert!(
            mine.iter()
                .all(|o| o.status == archy_orchestrator::AuditStatus::Owned
                    && o.owner.publisher.as_deref() == Some("did:key:zSame")),
            "{mine:?}"
        );
        r.uninstall(&short, true).await.unwrap();
        r.uninstall(&long, true).await.unwrap();
    }
}

/// After an uninstall without --purge, another publisher's app of the same id is refused with
/// a message naming both publishers, and never mounts the kept volume; with the record gone
/// too (the data kept by hand), the volume's labels still refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_publishers_app_of_the_same_id_never_mounts_the_kept_data() {
    require_podman!();
    let env = TestEnv::new();
    let app = env.app("take");
    let owner = quiet_app(&env, &app, "did:key:zOwner", "data", "tok");
    let thief = quiet_app(&env, &app, "did:key:zThief", "data", "tok");
    let r = env.open();
    running_id(&r.install(owner.clone()).await.unwrap());
    env.exec(&app, "echo secret-data > /data/file");
    r.uninstall(&app, false).await.unwrap();

    let err = r.install(thief.clone()).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Owner(_)), "{err:?}");
    assert!(
        msg.contains("did:key:zOwner") && msg.contains("did:key:zThief") && msg.contains("--purge"),
        "{msg}"
    );
    assert!(env.container_ids().is_empty(), "nothing was started");
    assert_eq!(
        r.record(&app).unwrap().unwrap().current.publisher,
        "did:key:zOwner"
    );

    // The record gone but the volume kept (as a pre-record crash or a hand edit could leave it):
    // the volume's labels refuse the newcomer all the same.
    let env2 = TestEnv::new();
    let r2 = Reconciler::open(Config {
        owner: env.owner.clone(),
        ..env2.config()
    })
    .unwrap();
    let err = r2.install(thief).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("archy_{app}_data"))
            && err.contains("did:key:zOwner")
            && err.contains("did:key:zThief"),
        "{err}"
    );
    assert!(env.container_ids().is_empty(), "nothing was started");

    // The owner gets its data back.
    running_id(&r.install(owner).await.unwrap());
    assert_eq!(env.exec(&app, "cat /data/file"), "secret-data");
    r.uninstall(&app, true).await.unwrap();
}

/// What the code before the injective names left behind for one app, made exactly as it made
/// it: container `archy-<app>` (owner label, no publisher), volume `archy-<app>-data` created by
/// `podman run -v`, Podman secret `archy-<app>-tok` without labels, the 0600 secret file, and
/// the record in the old JSON form (no `publisher`, no `names`).
fn legacy_install(env: &TestEnv, app: &str, marker: &str) -> String {
    let token = format!("{:064x}", rand::random::<u128>());
    let dir = env.state_dir().join("secrets").join(app);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tok"), &token).unwrap();
    std::fs::set_permissions(dir.join("tok"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret = format!("archy-{app}-tok");
    let mut child = std::process::Command::new(&env.podman.argv()[0])
        .args(&env.podman.argv()[1..])
        .args(["secret", "create", &secret, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let id = image_id(&env.podman, IMAGE);
    let spec = serde_json::json!({
        "name": app, "version": "1.0.0", "image": IMAGE, "image_id": id,
        "volumes": [{"name": "data", "target": "/data"}],
        "generated_secrets": [{"name": "tok", "kind": "hex32", "env": "TOKEN"}],
        "stop_grace_secs": 1, "command": ["sleep", "100000"],
    });
    let old_spec: AppSpec = serde_json::from_value(spec.clone()).unwrap();
    podman_ok(
        &env.podman,
        &[
            "run", "--detach", "--name", &format!("archy-{app}"),
            "--label", &format!("archy.app={app}"),
            "--label", &format!("archy.spec-hash={}", old_spec.spec_hash()),
            "--label", "archy.version=1.0.0",
            "--label", &format!("archy.owner={}", env.owner),
            "--pull=never", "--restart=no", "--cap-drop=ALL",
            "--volume", &format!("archy-{app}-data:/data"),
            "--secret", &format!("{secret},type=env,target=TOKEN"),
            id.trim_start_matches("sha256:"), "sh", "-c",
            &format!("echo {marker} > /data/marker; head -c 3000000 /dev/urandom > /data/bulk; exec sleep 100000"),
        ],
    );
    let record = serde_json::json!({
        "current": spec, "previous": null, "intent": "running",
        "update_pending": false, "rolled_back": null,
    });
    let db = redb::Database::create(env.state_dir().join("orchestrator.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx
            .open_table(redb::TableDefinition::<&str, &[u8]>::new("apps"))
            .unwrap();
        t.insert(app, serde_json::to_vec(&record).unwrap().as_slice())
            .unwrap();
    }
    tx.commit().unwrap();
    token
}

fn legacy_cleanup(env: &TestEnv, apps: &[String]) {
    for app in apps {
        sh_podman(
            &env.podman,
            &["rm", "-f", "-t", "0", &format!("archy-{app}")],
        );
        sh_podman(
            &env.podman,
            &["volume", "rm", "-f", &format!("archy-{app}-data")],
        );
        sh_podman(&env.podman, &["secret", "rm", &format!("archy-{app}-tok")]);
    }
}

/// Helper run in a child process by the upgrade test: one reconcile pass (which migrates),
/// then waits to be killed. Does nothing when run by hand.
#[tokio::test]
#[ignore = "helper process for a_node_of_the_old_code_migrates_keeping_data_and_secrets"]
async fn child_migrate_helper() {
    let (Ok(state), Ok(owner)) = (
        std::env::var("ARCHY_CHILD_STATE"),
        std::env::var("ARCHY_CHILD_OWNER"),
    ) else {
        return;
    };
    let mut cfg = Config::new(state);
    cfg.owner = owner;
    cfg.legacy_default_publisher = "did:key:zLocal".into();
    let r = Reconciler::open(cfg).unwrap();
    let _ = r.reconcile_once().await;
    std::future::pending::<()>().await;
}

/// Upgrade: apps installed by the old code (one of them with a kept, uninstalled record)
/// restart on the new code; each keeps its volume data and secret value, ends on the new,
/// labelled names, and nothing of the old names is left. First a SIGKILL half-way through the
/// migration (once the first copy has started), then a restart: the same end state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_the_old_code_migrates_keeping_data_and_secrets() {
    require_podman!();
    let env = TestEnv::new();
    let apps: Vec<String> = (0..3).map(|i| env.app(&format!("old{i}"))).collect();
    let tokens: Vec<String> = apps
        .iter()
        .map(|a| legacy_install(&env, a, &format!("marker-{a}")))
        .collect();
    for a in &apps {
        eventually("the old container to write its data", || {
            sh_podman(
                &env.podman,
                &["exec", &format!("archy-{a}"), "test", "-s", "/data/bulk"],
            )
            .status
            .success()
        })
        .await;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_migrate_helper",
            "--ignored",
            "--nocapture",
        ])
        .env("ARCHY_CHILD_STATE", env.state_dir())
        .env("ARCHY_CHILD_OWNER", &env.owner)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the child to start copying a volume", || {
        apps.iter()
            .any(|a| env.volume_exists(&format!("archy_{a}_data")))
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    let mut cfg = env.config();
    cfg.legacy_default_publisher = "did:key:zLocal".into();
    let r = Arc::new(Reconciler::open(cfg).unwrap());
    let report = r.reconcile_once().await.unwrap();
    assert!(report.failures().next().is_none(), "{report:?}");
    for (a, token) in apps.iter().zip(&tokens) {
        let rec = r.record(a).unwrap().unwrap();
        assert_eq!(rec.names, archy_orchestrator::Naming::Injective);
        assert_eq!(rec.current.publisher, "did:key:zLocal");
        assert_eq!(r.status(a).await.unwrap().state, AppState::Running);
        assert_eq!(env.exec(a, "cat /data/marker"), format!("marker-{a}"));
        assert_eq!(env.exec(a, "wc -c < /data/bulk"), "3000000");
        assert_eq!(
            &env.exec(a, "echo $TOKEN"),
            token,
            "the secret value is kept"
        );
        assert!(
            !env.volume_exists(&format!("archy-{a}-data")),
            "old volume removed"
        );
        assert!(
            !sh_podman(&env.podman, &["container", "exists", &format!("archy-{a}")])
                .status
                .success(),
            "old container removed"
        );
        assert!(
            !sh_podman(
                &env.podman,
                &["secret", "inspect", &format!("archy-{a}-tok")]
            )
            .status
            .success(),
            "old secret removed"
        );
    }
    let audit = r.audit().await.unwrap();
    let problems: Vec<_> = audit
        .problems()
        .filter(|o| {
            o.owner.node.as_deref() == Some(env.owner.as_str())
                || o.app.as_ref().is_some_and(|a| apps.contains(a))
        })
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    // A second restart changes nothing.
    drop(r);
    let mut cfg = env.config();
    cfg.legacy_default_publisher = "did:key:zLocal".into();
    let r = Reconciler::open(cfg).unwrap();
    let report = r.reconcile_once().await.unwrap();
    assert!(
        report.outcomes.iter().all(|o| o.action == "adopt"),
        "{report:?}"
    );
    for a in &apps {
        r.uninstall(a, true).await.unwrap();
    }
    legacy_cleanup(&env, &apps);
}

/// Old-scheme apps whose volume names collided (`X`/`bar-data` and `X-bar`/`data`): the shared
/// volume is copied to neither, both apps are held with a reason naming both and the volume;
/// purging the one it does not belong to migrates the other with the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_collision_is_reported_and_held_never_guessed() {
    require_podman!();
    let env = TestEnv::new();
    let short = env.app("col");
    let long = format!("{short}-bar");
    env.apps.lock().unwrap().push(long.clone());
    let shared = format!("archy-{short}-bar-data");
    podman_ok(&env.podman, &["volume", "create", &shared]);
    let db = redb::Database::create({
        std::fs::create_dir_all(env.state_dir()).unwrap();
        env.state_dir().join("orchestrator.redb")
    })
    .unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx
            .open_table(redb::TableDefinition::<&str, &[u8]>::new("apps"))
            .unwrap();
        for (app, vol) in [(&short, "bar-data"), (&long, "data")] {
            let rec = serde_json::json!({
                "current": {"name": app, "version": "1.0.0", "image": IMAGE,
                    "image_id": image_id(&env.podman, IMAGE),
                    "volumes": [{"name": vol, "target": "/data"}],
                    "stop_grace_secs": 1, "command": ["sleep", "100000"]},
                "previous": null, "intent": "running", "update_pending": false, "rolled_back": null,
            });
            t.insert(app.as_str(), serde_json::to_vec(&rec).unwrap().as_slice())
                .unwrap();
        }
    }
    tx.commit().unwrap();
    drop(db);
    let r = env.open();
    let m = r.migrate_names().await.unwrap();
    assert_eq!(m.held.len(), 2, "{m:?}");
    for h in &m.held {
        assert!(
            h.reason.contains(&shared)
                && h.reason.contains(&format!("`{short}`"))
                && h.reason.contains(&format!("`{long}`")),
            "{h:?}"
        );
    }
    let report = r.reconcile_once().await.unwrap();
    assert_eq!(report.failures().count(), 2, "both held: {report:?}");
    assert!(env.container_ids().is_empty(), "a held app never starts");
    assert!(env.volume_exists(&shared), "the shared volume is kept");
    // The operator decides: the data was `short`'s.
    r.uninstall(&long, true).await.unwrap();
    let report = r.reconcile_once().await.unwrap();
    assert!(report.failures().next().is_none(), "{report:?}");
    assert_eq!(r.status(&short).await.unwrap().state, AppState::Running);
    assert!(!env.volume_exists(&shared));
    assert!(env.volume_exists(&format!("archy_{short}_bar-data")));
    r.uninstall(&short, true).await.unwrap();
    sh_podman(&env.podman, &["volume", "rm", "-f", &shared]);
}

/// PROTOCOL §2.2: a two-service stack, as the unprivileged user. `db` serves its volume on
/// port 5432, published nowhere; `web` depends on it (its command refuses to start unless `db`
/// answers by name) and is published on loopback. Both receive one generated secret.
fn stack_spec(env: &TestEnv, app: &str, version: &str, port: u16) -> AppSpec {
    let image_id = Some(image_id(&env.podman, IMAGE));
    let secret = |var: &str| SecretSpec {
        name: "db-password".into(),
        kind: SecretKind::Hex32,
        env: var.into(),
    };
    let mut db = archy_orchestrator::ServiceSpec::new(IMAGE);
    db.name = "db".into();
    db.image_id = image_id.clone();
    db.volumes.push(VolumeSpec {
        name: "pgdata".into(),
        target: "/data".into(),
    });
    db.generated_secrets.push(secret("POSTGRES_PASSWORD"));
    db.command = [
        "sh",
        "-c",
        "echo db-page > /data/index.html; exec httpd -f -p 5432 -h /data",
    ]
    .map(String::from)
    .to_vec();
    // An unpublished port: probed from inside the app's network.
    db.health_check = Some(HealthCheck {
        kind: HealthKind::Tcp,
        port: Some(5432),
        path: None,
        command: vec![],
        interval_secs: 1,
        timeout_secs: 5,
        retries: 20,
    });
    db.stop_grace_secs = 2;
    let mut web = archy_orchestrator::ServiceSpec::new(IMAGE);
    web.name = "web".into();
    web.image_id = image_id;
    web.depends_on = vec!["db".into()];
    web.generated_secrets.push(secret("DB_PASSWORD"));
    web.ports.push(PortSpec {
        container: 8080,
        host: port,
        protocol: Protocol::Tcp,
        bind: "127.0.0.1".parse().unwrap(),
    });
    web.command = [
        "sh",
        "-c",
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 db 5432 | grep -q db-page || exit 7; exec httpd -f -p 8080 -h /www",
    ]
    .map(String::from)
    .to_vec();
    web.health_check = Some(HealthCheck {
        kind: HealthKind::Http,
        port: Some(8080),
        path: Some("/".into()),
        command: vec![],
        interval_secs: 1,
        timeout_secs: 5,
        retries: 20,
    });
    web.stop_grace_secs = 2;
    let mut s = AppSpec::new(app, version, IMAGE);
    s.services = vec![web, db];
    s
}

fn rootless_podman() -> PodmanCmd {
    if unsafe_getuid() == 0 {
        PodmanCmd::runuser("archy", "/home/archy", "/tmp/archy-run")
    } else {
        PodmanCmd::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_runs_in_order_on_its_own_network_updates_and_rolls_back_as_one() {
    require_podman!();
    let env = TestEnv::with_podman(rootless_podman());
    let app = env.app("stack");
    let port = free_port();
    let v1 = stack_spec(&env, &app, "1.0.0", port);
    let r = env.open();
    match r.install(v1.clone()).await.unwrap() {
        InstallOutcome::Running { .. } => {}
        other => panic!("expected the stack running, got {other:?}"),
    }
    let web = format!("archy_{app}_web");
    let db = format!("archy_{app}_db");
    let st = r.status(&app).await.unwrap();
    assert_eq!(st.state, AppState::Running);
    let services: Vec<(&str, &AppState)> = st
        .services
        .iter()
        .map(|s| (s.service.as_str(), &s.state))
        .collect();
    assert_eq!(
        services,
        [("db", &AppState::Running), ("web", &AppState::Running)],
        "per service, in start order"
    );
    let exec = |c: &str, script: &str| podman_ok(&env.podman, &["exec", c, "sh", "-c", script]);
    // `web` came up after `db` answered it by name, and is reachable on its published port.
    assert_eq!(http_get(port, "/").unwrap(), "archy test image\n");
    let page = exec(
        &web,
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 db 5432",
    );
    assert!(page.contains("db-page"), "{page}");
    // One generated secret, one value, each service under its own variable.
    let pw = exec(&db, "echo $POSTGRES_PASSWORD");
    assert_eq!(pw.len(), 64);
    assert_eq!(exec(&web, "echo $DB_PASSWORD"), pw);
    exec(&db, "echo kept > /data/marker");

    // Nothing outside the app's network reaches `db`: not the host, not a container on
    // Podman's default network, not one on another (isolated) network.
    let ip = podman_ok(
        &env.podman,
        &[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &db,
        ],
    );
    // Judged by `db`'s page, not by a connect: a sandbox may accept every outgoing connection.
    let addr: std::net::SocketAddr = format!("{ip}:5432").parse().unwrap();
    let from_host = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = write!(s, "GET / HTTP/1.0\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    });
    assert!(
        !from_host.as_deref().unwrap_or("").contains("db-page"),
        "the host reached db at {addr}"
    );
    let probe = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 5432 | grep -q db-page && echo reached || echo refused"
    );
    let other_net = format!("archy-test-{app}");
    podman_ok(
        &env.podman,
        &["network", "create", "--opt", "isolate=true", &other_net],
    );
    for net in ["", other_net.as_str()] {
        let mut args = vec!["run", "--rm"];
        let flag = format!("--network={net}");
        if !net.is_empty() {
            args.push(&flag);
        }
        args.extend([IMAGE, "sh", "-c", probe.as_str()]);
        let out = podman_ok(&env.podman, &args);
        assert!(out.ends_with("refused"), "from network {net:?}: {out}");
    }
    sh_podman(&env.podman, &["network", "rm", "-f", &other_net]);

    // A restarted reconciler adopts both containers.
    let before = {
        let mut ids = env.container_ids();
        ids.sort();
        ids
    };
    assert_eq!(before.len(), 2);
    drop(r);
    let r = env.open();
    let report = r.reconcile_once().await.unwrap();
    assert!(
        report.for_app(&app).all(|o| o.action == "adopt"),
        "{report:?}"
    );
    let mut after = env.container_ids();
    after.sort();
    assert_eq!(before, after, "adopted, not recreated");

    // An update recreates the stack; the data stays.
    let mut v2 = v1.clone();
    v2.version = "2.0.0".into();
    v2.services[0].env.insert("MODE".into(), "v2".into());
    match r.install(v2.clone()).await.unwrap() {
        InstallOutcome::Running { .. } => {}
        other => panic!("expected v2 running, got {other:?}"),
    }
    assert_eq!(exec(&web, "echo $MODE"), "v2");
    assert_eq!(exec(&db, "cat /data/marker"), "kept");
    assert_eq!(exec(&web, "echo $DB_PASSWORD"), pw, "the secret is kept");

    // An update whose web service never gets healthy rolls the whole app back.
    let mut v3 = v2.clone();
    v3.version = "3.0.0".into();
    v3.services[0].command = vec!["sleep".into(), "1000".into()];
    v3.services[0].health_check.as_mut().unwrap().retries = 2;
    v3.services[1].env.insert("MODE".into(), "v3".into());
    match r.install(v3).await.unwrap() {
        InstallOutcome::RolledBack { version, reason } => {
            assert_eq!(version, "2.0.0");
            assert!(reason.contains("web"), "{reason}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(http_get(port, "/").unwrap(), "archy test image\n");
    assert_eq!(
        exec(&db, "echo ${MODE:-none}"),
        "none",
        "db is back on v2 too"
    );
    assert_eq!(exec(&db, "cat /data/marker"), "kept");
    assert_eq!(r.status(&app).await.unwrap().version, "2.0.0");

    // Uninstall keeps the volume, a reinstall sees it, a purge removes it and the network.
    r.uninstall(&app, false).await.unwrap();
    assert!(env.container_ids().is_empty());
    assert!(env.volume_exists(&format!("archy_{app}_pgdata")));
    running_id(&r.install(v2).await.unwrap());
    assert_eq!(exec(&db, "cat /data/marker"), "kept");
    r.uninstall(&app, true).await.unwrap();
    assert!(env.container_ids().is_empty());
    assert!(!env.volume_exists(&format!("archy_{app}_pgdata")));
    assert!(
        !sh_podman(&env.podman, &["network", "exists", &format!("archy_{app}")])
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_reaches_only_its_dependencys_exports_and_keeps_it_from_going() {
    require_podman!();
    let env = TestEnv::with_podman(rootless_podman());
    let a = env.app("deps-a");
    let b = env.app("deps-b");
    let mut spec_a = stack_spec(&env, &a, "1.0.0", free_port());
    spec_a.exports = vec!["web".into()];
    let mut spec_b = AppSpec::new(&b, "1.0.0", IMAGE);
    spec_b.service_mut().image_id = Some(image_id(&env.podman, IMAGE));
    spec_b.service_mut().command = vec!["sleep".into(), "100000".into()];
    spec_b.service_mut().stop_grace_secs = 1;
    spec_b.dependencies = vec![a.clone()];
    let r = env.open();
    running_id(&r.install(spec_a.clone()).await.unwrap());
    running_id(&r.install(spec_b).await.unwrap());
    let from_b = |script: &str| {
        podman_ok(
            &env.podman,
            &["exec", &format!("archy_{b}"), "sh", "-c", script],
        )
    };
    let get = |host: &str, port: u16, marker: &str| {
        format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} | grep -q {marker} && echo reached || echo refused")
    };
    assert_eq!(from_b(&get(&format!("web.{a}"), 8080, "archy")), "reached");
    // A's database is private: no name for it, and its address is on A's network only.
    assert_eq!(from_b(&get(&format!("db.{a}"), 5432, "db-page")), "refused");
    let db_ip = podman_ok(
        &env.podman,
        &[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &format!("archy_{a}_db"),
        ],
    );
    assert_eq!(from_b(&get(&db_ip, 5432, "db-page")), "refused");
    // Another isolated network torn down (its last container gone) made netavark drop every
    // network's isolation rules on this Podman; the node's own chains hold it.
    let other = format!("archy-test-{a}");
    podman_ok(
        &env.podman,
        &["network", "create", "--opt", "isolate=true", &other],
    );
    podman_ok(
        &env.podman,
        &["run", "--rm", &format!("--network={other}"), IMAGE, "true"],
    );
    sh_podman(&env.podman, &["network", "rm", "-f", &other]);
    assert_eq!(from_b(&get(&db_ip, 5432, "db-page")), "refused");

    // A is needed: uninstalling it is refused, naming B.
    match r.uninstall(&a, false).await {
        Err(Error::Needed { by, .. }) => assert_eq!(by, std::slice::from_ref(&b)),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // An update of A recreates its containers: B reaches the new ones.
    let mut a2 = spec_a.clone();
    a2.version = "2.0.0".into();
    a2.services[0].env.insert("MODE".into(), "v2".into());
    running_id(&r.install(a2).await.unwrap());
    let nets = podman_ok(
        &env.podman,
        &[
            "inspect",
            "--format",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
            &format!("archy_{a}_web"),
        ],
    );
    assert!(nets.contains(&format!("archy_{b}")), "{nets}");
    // aardvark-dns takes the new address a moment after the connect.
    eventually("B reaches the updated A by name", || {
        from_b(&get(&format!("web.{a}"), 8080, "archy")) == "reached"
    })
    .await;

    r.uninstall(&b, true).await.unwrap();
    r.uninstall(&a, true).await.unwrap();
    assert!(env.container_ids().is_empty());
}
