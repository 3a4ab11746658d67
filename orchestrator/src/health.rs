//! Health checks run by the reconciler after a create or start: http/tcp against the host
//! side of the published port (what a user would reach), exec through `podman exec`. A
//! stack's service whose checked port is not published (a database) is probed from inside the
//! app's network (PROTOCOL §2.2): rootless, through `podman unshare --rootless-netns`, where
//! the app's bridge lives, with bash's `/dev/tcp` (no tool in the image needed); rootful, from
//! the host, which holds the bridge.
//! Run here rather than as Podman healthchecks because Podman 4.3 drives those with systemd
//! timers, which these hosts (and rootless users without a session) do not have.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::podman::PodmanCmd;
use crate::spec::{AppSpec, HealthKind, ServiceSpec};

/// Where the host reaches a published port: the bind address, or loopback for a wildcard bind.
fn target(svc: &ServiceSpec, container_port: u16) -> Option<SocketAddr> {
    let p = svc.published(container_port)?;
    let ip = match p.bind {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(SocketAddr::new(ip, p.host))
}

/// Minimal HTTP/1.0 GET; healthy on a 2xx or 3xx status line.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: archy-health\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    status_ok(addr, path, line.lines().next().unwrap_or(""))
}

/// Healthy on a 2xx or 3xx HTTP status line.
fn status_ok(addr: SocketAddr, path: &str, line: &str) -> Result<(), String> {
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status from {addr}{path} (got {line:?})"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {path} on {addr} returned {code}"))
    }
}

/// Where a probe goes: the host side of a published port, or the container's address on its
/// app's network (found once per wait).
#[derive(Clone, Copy, Debug)]
enum Reach {
    Host(SocketAddr),
    Network(SocketAddr),
}

/// The bash program of an in-network probe: `$1` address, `$2` port, `$3` the http path or
/// empty for a tcp check. Arguments, never interpolated.
const NETNS_PROBE: &str = r#"exec 3<>"/dev/tcp/$1/$2" || exit 3
[ -z "$3" ] && exit 0
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nUser-Agent: archy-health\r\n\r\n' "$3" >&3
IFS= read -r line <&3
printf '%s\n' "$line""#;

/// Podman's answer when `unshare --rootless-netns` is asked of a rootful Podman.
const ROOTFUL: &str = "please use unshare with rootless";

/// The container's address on its app's network.
async fn network_addr(
    podman: &PodmanCmd,
    container_id: &str,
    port: u16,
) -> Result<SocketAddr, String> {
    let out = inspect(
        podman,
        container_id,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
    )
    .await?;
    let ip: IpAddr = out
        .stdout
        .split_whitespace()
        .next()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            format!(
                "the container has no address on its network yet ({})",
                out.stderr.trim()
            )
        })?;
    Ok(SocketAddr::new(ip, port))
}

/// An http (with `path`) or tcp probe of `addr` inside the rootless network namespace; a
/// rootful Podman (whose bridge is the host's) is probed from here.
async fn probe_in_network(
    podman: &PodmanCmd,
    addr: SocketAddr,
    path: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let out = podman
        .run(
            &[
                "unshare".into(),
                "--rootless-netns".into(),
                "timeout".into(),
                timeout.as_secs().max(1).to_string(),
                "bash".into(),
                "-c".into(),
                NETNS_PROBE.into(),
                "archy-probe".into(),
                addr.ip().to_string(),
                addr.port().to_string(),
                path.unwrap_or("").into(),
            ],
            None,
            timeout + Duration::from_secs(30),
        )
        .await
        .map_err(|e| e.to_string())?;
    if out.stderr.contains(ROOTFUL) {
        return probe_from_host(addr, path).await;
    }
    if !out.success {
        return Err(format!(
            "connect {addr} on the app's network: {}",
            out.stderr.trim()
        ));
    }
    let Some(path) = path else { return Ok(()) };
    status_ok(addr, path, out.stdout.lines().next().unwrap_or(""))
}

async fn probe_from_host(addr: SocketAddr, path: Option<&str>) -> Result<(), String> {
    match path {
        None => TcpStream::connect(addr)
            .await
            .map(|_| ())
            .map_err(|e| format!("tcp connect {addr}: {e}")),
        Some(path) => http_get(addr, path).await,
    }
}

/// Where service `svc`'s check reaches it.
async fn reach(
    spec: &AppSpec,
    svc: usize,
    container_id: &str,
    podman: &PodmanCmd,
) -> Result<Option<Reach>, String> {
    let service = &spec.services[svc];
    let Some(h) = &service.health_check else {
        return Ok(None);
    };
    if h.kind == HealthKind::Exec {
        return Ok(None);
    }
    let port = h.port.ok_or("health_check.port missing")?;
    if let Some(addr) = target(service, port) {
        return Ok(Some(Reach::Host(addr)));
    }
    if service.name.is_empty() {
        return Err(format!("container port {port} is not published"));
    }
    network_addr(podman, container_id, port)
        .await
        .map(|a| Some(Reach::Network(a)))
}

/// One probe of service `svc`, bounded by the check's timeout.
pub async fn probe(
    spec: &AppSpec,
    svc: usize,
    container_id: &str,
    podman: &PodmanCmd,
) -> Result<(), String> {
    let reach = reach(spec, svc, container_id, podman).await?;
    probe_at(spec, svc, container_id, podman, reach).await
}

async fn probe_at(
    spec: &AppSpec,
    svc: usize,
    container_id: &str,
    podman: &PodmanCmd,
    reach: Option<Reach>,
) -> Result<(), String> {
    let Some(h) = &spec.services[svc].health_check else {
        return Ok(());
    };
    let timeout = Duration::from_secs(h.timeout_secs.max(1) as u64);
    let path = match h.kind {
        HealthKind::Http => Some(h.path.as_deref().unwrap_or("/")),
        _ => None,
    };
    let fut = async {
        match (h.kind, reach) {
            (HealthKind::Exec, _) => {
                let mut args = vec!["exec".to_string(), container_id.to_string()];
                args.extend(h.command.iter().cloned());
                let out = podman
                    .run(&args, None, timeout + Duration::from_secs(30))
                    .await
                    .map_err(|e| e.to_string())?;
                if out.success {
                    Ok(())
                } else {
                    Err(format!(
                        "exec check exited with {}: {}",
                        out.code
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "signal".into()),
                        out.stderr.trim()
                    ))
                }
            }
            (_, Some(Reach::Host(addr))) => probe_from_host(addr, path).await,
            (_, Some(Reach::Network(addr))) => probe_in_network(podman, addr, path, timeout).await,
            (_, None) => Err("health_check.port missing".into()),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
    }
}

/// `podman inspect --type container --format FORMAT ID`.
async fn inspect(
    podman: &PodmanCmd,
    container_id: &str,
    format: &str,
) -> Result<crate::PodmanOutput, String> {
    podman
        .run(
            &[
                "inspect".into(),
                "--type".into(),
                "container".into(),
                "--format".into(),
                format.into(),
                container_id.into(),
            ],
            None,
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| e.to_string())
}

/// Is the container running, and if not, its exit code.
pub async fn container_running(podman: &PodmanCmd, container_id: &str) -> Result<(), String> {
    let out = inspect(
        podman,
        container_id,
        "{{.State.Status}} {{.State.ExitCode}}",
    )
    .await?;
    if !out.success {
        return Err(format!("container is gone: {}", out.stderr.trim()));
    }
    let text = out.stdout.trim().to_string();
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("running"), _) => Ok(()),
        (Some(state), code) => Err(format!(
            "container is {state} (exit code {})",
            code.unwrap_or("?")
        )),
        _ => Err(format!("unexpected inspect output {text:?}")),
    }
}

/// How often a failing probe may make us ask Podman whether the container still runs.
const ASK_EVERY: Duration = Duration::from_secs(1);

/// The pause between probes in the start period. An http/tcp probe on loopback costs
/// microseconds and a fresh app usually answers within a fraction of a second, so poll often
/// rather than wait out a whole interval; an exec probe is a `podman exec` process, so less often.
fn start_poll(kind: HealthKind) -> Duration {
    match kind {
        HealthKind::Http | HealthKind::Tcp => Duration::from_millis(50),
        HealthKind::Exec => Duration::from_millis(250),
    }
}

/// Waits until the app is healthy. The first interval is a start period (as Docker's
/// `--health-start-interval`): probes every [`start_poll`], failures not counted. Then up to
/// `retries` probes `interval` apart. Podman is asked whether the container runs only after a
/// failed probe (a passing one proves it), at most every [`ASK_EVERY`] and after each counted
/// failure, so an exited container fails the wait early, with its exit code. Without a health
/// check, "running a moment after start" is healthy.
pub async fn wait_healthy(
    spec: &AppSpec,
    svc: usize,
    container_id: &str,
    podman: &PodmanCmd,
) -> Result<(), String> {
    let Some(h) = &spec.services[svc].health_check else {
        container_running(podman, container_id).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        return container_running(podman, container_id).await;
    };
    let interval = Duration::from_secs(h.interval_secs as u64).max(Duration::from_millis(200));
    let retries = h.retries.max(1);
    let started = Instant::now();
    let mut counted_at = started + interval;
    let mut ask_at = started + ASK_EVERY;
    let mut failures = 0;
    // Found once: the container keeps its address on its network while it runs.
    let mut reached: Option<Option<Reach>> = None;
    loop {
        let result = match reached {
            Some(r) => probe_at(spec, svc, container_id, podman, r).await,
            None => match reach(spec, svc, container_id, podman).await {
                Ok(r) => {
                    reached = Some(r);
                    probe_at(spec, svc, container_id, podman, r).await
                }
                Err(e) => Err(e),
            },
        };
        let err = match result {
            Ok(()) => {
                tracing::debug!(app = %spec.name, after = ?started.elapsed(), "healthy");
                return Ok(());
            }
            Err(e) => e,
        };
        let now = Instant::now();
        let counted = now >= counted_at;
        if counted || now >= ask_at {
            container_running(podman, container_id).await?;
            ask_at = Instant::now() + ASK_EVERY;
        }
        if counted {
            failures += 1;
            tracing::debug!(app = %spec.name, attempt = failures, error = %err, "health probe failed");
            if failures >= retries {
                return Err(format!("health check failed {retries} times, last: {err}"));
            }
            counted_at = Instant::now() + interval;
        }
        let pause = if failures == 0 {
            start_poll(h.kind)
        } else {
            interval
        };
        tokio::time::sleep_until((Instant::now() + pause).min(counted_at)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{HealthCheck, PortSpec, Protocol};

    /// A loopback HTTP server answering one request per status line, in order; its port.
    async fn scripted_http(statuses: &'static [&'static str]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in statuses {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await.unwrap();
                let resp = format!("HTTP/1.0 {status}\r\n\r\n");
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        port
    }

    /// An app publishing container port 80 on `port`, with an HTTP check of `/`.
    fn web_spec(port: u16, interval_secs: u32) -> AppSpec {
        let mut spec = AppSpec::new("web", "1", "img");
        spec.service_mut().ports.push(PortSpec {
            container: 80,
            host: port,
            protocol: Protocol::Tcp,
            bind: "127.0.0.1".parse().unwrap(),
        });
        spec.service_mut().health_check = Some(HealthCheck {
            kind: HealthKind::Http,
            port: Some(80),
            path: Some("/".into()),
            command: vec![],
            interval_secs,
            timeout_secs: 5,
            retries: 1,
        });
        spec
    }

    #[tokio::test]
    async fn http_probe_against_a_local_server() {
        let port = scripted_http(&["200 OK", "500 Internal Server Error"]).await;
        let spec = web_spec(port, 1);
        let podman = PodmanCmd::from_argv(vec!["/nonexistent/podman".into()]);
        probe(&spec, 0, "x", &podman).await.unwrap();
        let err = probe(&spec, 0, "x", &podman).await.unwrap_err();
        assert!(err.contains("500"), "{err}");
    }

    /// A slow starter is polled in the start period, and a passing probe needs no Podman call
    /// (the Podman here does not exist: asking it would fail the wait).
    #[tokio::test]
    async fn start_period_polls_without_asking_podman() {
        let port = scripted_http(&["503 Starting", "503 Starting", "200 OK"]).await;
        let spec = web_spec(port, 30);
        let podman = PodmanCmd::from_argv(vec!["/nonexistent/podman".into()]);
        wait_healthy(&spec, 0, "x", &podman).await.unwrap();
    }
}
