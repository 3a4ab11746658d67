//! Measures the reconciler against raw Podman on this machine (needs tests/setup/podman.sh).
//!
//! `cargo run -p archy-orchestrator --example measure --release -- [N_APPS] [ROUNDS]`
//!
//! Reports medians, side by side in one run: a no-op pass over N adopted apps vs. the raw
//! `podman ps -a --format json` it is built on, and install-to-healthy of one app vs. a raw
//! `podman run -d` of the same container — both as the command returning and as the first
//! HTTP answer from the app (polled every 20 ms), which is what "healthy" means here.
//! After one uncounted warm-up pair, install i and raw run i alternate, so both sides see the
//! same number of running containers (Podman slows down as it holds more).

use std::time::{Duration, Instant};

use archy_orchestrator::{
    AppSpec, Config, HealthCheck, HealthKind, PodmanCmd, PortSpec, Reconciler,
};

#[path = "../../tests/bench_common.rs"]
mod bench_common;
use bench_common::{median, vm_hwm};

const IMAGE: &str = "localhost/archy/busybox:latest";

/// `min … max` of a sample, for the spread next to the median.
fn range(v: &[Duration]) -> String {
    let min = v.iter().min().unwrap();
    let max = v.iter().max().unwrap();
    format!(
        "{:.0}…{:.0} ms",
        min.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    )
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP GET / on loopback: true on a 2xx/3xx answer.
fn http_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && (head[9] == b'2' || head[9] == b'3')
}

fn spec(name: &str) -> AppSpec {
    let mut s = AppSpec::new(name, "1.0.0", IMAGE);
    s.service_mut().ports.push(PortSpec {
        container: 8080,
        host: port(),
        protocol: Default::default(),
        bind: "127.0.0.1".parse().unwrap(),
    });
    s.service_mut().command = ["httpd", "-f", "-p", "8080", "-h", "/www"]
        .map(String::from)
        .to_vec();
    s.service_mut().health_check = Some(HealthCheck {
        kind: HealthKind::Http,
        port: Some(8080),
        path: Some("/".into()),
        command: vec![],
        interval_secs: 1,
        timeout_secs: 5,
        retries: 30,
    });
    s.service_mut().stop_grace_secs = 2;
    s
}

/// A bare `podman run -d` of the same container, then its removal: (until the command returns,
/// until the first HTTP answer).
fn raw_run_until_http(i: usize) -> (Duration, Duration) {
    let t = Instant::now();
    let name = format!("raw-{}-{i}", std::process::id());
    let p = port();
    let out = std::process::Command::new("podman")
        .args([
            "run",
            "-d",
            "--name",
            &name,
            "-p",
            &format!("127.0.0.1:{p}:8080"),
            IMAGE,
        ])
        .args(["httpd", "-f", "-p", "8080", "-h", "/www"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let run = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_ok(p) {
        assert!(
            Instant::now() < deadline,
            "raw container never answered HTTP"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let healthy = t.elapsed();
    std::process::Command::new("podman")
        .args(["rm", "-f", "-t", "0", &name])
        .output()
        .unwrap();
    (run, healthy)
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(5);
    let rounds = args.get(1).copied().unwrap_or(7);
    let dir = tempfile::tempdir().unwrap();
    let owner = format!("measure-{}", std::process::id());
    let mut cfg = Config::new(dir.path());
    cfg.owner = owner.clone();
    let r = Reconciler::open(cfg).unwrap();
    let podman = PodmanCmd::new();
    let names: Vec<String> = (0..=n)
        .map(|i| format!("m{}-{i}", std::process::id()))
        .collect();

    let mut install = vec![];
    let mut raw_run = vec![];
    let mut raw_healthy = vec![];
    // names[0] is the warm-up pair: measured like the others, not counted. Which side goes
    // first alternates, so neither always follows the other's clean-up.
    for (i, name) in names.iter().enumerate() {
        let raw_first = i % 2 == 1;
        let raw = raw_first.then(|| raw_run_until_http(i));
        let t = Instant::now();
        let out = r.install(spec(name)).await.unwrap();
        let took = t.elapsed();
        assert!(
            matches!(out, archy_orchestrator::InstallOutcome::Running { .. }),
            "{out:?}"
        );
        let (run, healthy) = raw.unwrap_or_else(|| raw_run_until_http(i));
        if i > 0 {
            install.push(took);
            raw_run.push(run);
            raw_healthy.push(healthy);
        }
    }
    // The idle pass below is over exactly N apps.
    r.uninstall(&names[0], true).await.unwrap();

    let mut pass = vec![];
    let mut ps = vec![];
    for _ in 0..rounds {
        let t = Instant::now();
        let report = r.reconcile_once().await.unwrap();
        pass.push(t.elapsed());
        assert!(
            report.outcomes.iter().all(|o| o.action == "adopt"),
            "{report:?}"
        );
        let t = Instant::now();
        podman
            .ok(
                &[
                    "ps",
                    "-a",
                    "--format",
                    "json",
                    "--filter",
                    &format!("label=archy.owner={owner}"),
                ]
                .map(String::from),
                None,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        ps.push(t.elapsed());
    }
    for name in &names[1..] {
        r.uninstall(name, true).await.unwrap();
    }
    let spread = format!(
        "install {}, raw run -d + HTTP {}",
        range(&install),
        range(&raw_healthy)
    );
    let (pass, ps) = (median(pass), median(ps));
    let (install, raw_run, raw_healthy) = (median(install), median(raw_run), median(raw_healthy));
    println!("apps={n} rounds={rounds} (plus one warm-up install and raw run)");
    println!(
        "no-op pass (adopt all): {pass:?}  raw podman ps: {ps:?}  ratio {:.2}",
        pass.as_secs_f64() / ps.as_secs_f64()
    );
    println!(
        "install to healthy: {install:?}  raw podman run -d: {raw_run:?}  ratio {:.2}",
        install.as_secs_f64() / raw_run.as_secs_f64()
    );
    println!(
        "install to healthy: {install:?}  raw podman run -d + first HTTP answer: {raw_healthy:?}  ratio {:.2}",
        install.as_secs_f64() / raw_healthy.as_secs_f64()
    );
    println!("spread (min…max): {spread}");
    println!(
        "RATIO reconciler.idle_pass/podman_ps {:.2}  install/raw_run_until_http {:.2}",
        pass.as_secs_f64() / ps.as_secs_f64(),
        install.as_secs_f64() / raw_healthy.as_secs_f64()
    );
    println!("PEAK reconciler VmHWM {}", vm_hwm());
}
