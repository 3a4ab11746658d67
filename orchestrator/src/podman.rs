//! Talking to Podman through its CLI.
//!
//! Why the CLI and not the REST API: on Podman 4.3 the API socket exists only while a
//! `podman system service` (or a systemd socket unit) runs, which a rootless user on a host
//! without a login session does not have; the `podman` binary is always there, needs no
//! daemon, and runs as exactly the user who invokes it (rootless by construction). We only
//! use its stable JSON outputs (`ps --format json`, `inspect`).
//!
//! [`PodmanCmd`] is the program plus an optional prefix, so the same code drives rootful
//! Podman, rootless Podman as the current user, or rootless Podman as another user
//! (`runuser -u archy -- env XDG_RUNTIME_DIR=… podman`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::names::Role;
use crate::spec::{normalize_capability, AppSpec, ServiceSpec};
use crate::Error;

/// Label keys put on every container the orchestrator creates (with those of
/// [`crate::names::labels`]).
pub use crate::names::{LABEL_APP, LABEL_OWNER, LABEL_PUBLISHER, LABEL_ROLE};
pub const LABEL_SPEC_HASH: &str = "archy.spec-hash";
pub const LABEL_VERSION: &str = "archy.version";
/// The service a container runs, in a stack (PROTOCOL §2.2).
pub const LABEL_SERVICE: &str = "archy.service";

/// How to invoke Podman: `argv[0]` and fixed leading arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodmanCmd {
    argv: Vec<String>,
}

impl Default for PodmanCmd {
    fn default() -> Self {
        PodmanCmd {
            argv: vec!["podman".into()],
        }
    }
}

/// What a Podman call reads on stdin.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stdin<'a> {
    Null,
    Bytes(&'a [u8]),
    /// The file is opened here and handed to Podman as its stdin, never read into memory.
    File(&'a Path),
}

/// The captured result of one Podman call.
#[derive(Clone, Debug)]
pub struct PodmanOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl PodmanCmd {
    /// `podman` from `PATH`, as the invoking user.
    pub fn new() -> Self {
        Self::default()
    }

    /// Any command line that ends by running podman, e.g. `["sudo","-u","x","podman"]`.
    pub fn from_argv(argv: Vec<String>) -> Self {
        assert!(!argv.is_empty(), "PodmanCmd needs a program");
        PodmanCmd { argv }
    }

    /// Rootless Podman as `user` (the caller must be root): `runuser -u USER -- env
    /// XDG_RUNTIME_DIR=DIR HOME=HOME podman`. Without a systemd login session the runtime dir
    /// must be given explicitly.
    pub fn runuser(user: &str, home: &str, runtime_dir: &str) -> Self {
        PodmanCmd {
            argv: vec![
                "runuser".into(),
                "-u".into(),
                user.into(),
                "--".into(),
                "env".into(),
                format!("XDG_RUNTIME_DIR={runtime_dir}"),
                format!("HOME={home}"),
                "podman".into(),
            ],
        }
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// A `tokio::process::Command` for `podman <args>`.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]).args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs podman, optionally feeding `stdin`, and waits at most `deadline`. On expiry the
    /// client is killed (Podman finishes or rolls back its own operation) and an error returned.
    /// Arguments are logged at debug level; never pass a secret as an argument.
    pub async fn run(
        &self,
        args: &[String],
        stdin: Option<&[u8]>,
        deadline: Duration,
    ) -> Result<PodmanOutput, Error> {
        let stdin = match stdin {
            Some(bytes) => Stdin::Bytes(bytes),
            None => Stdin::Null,
        };
        self.run_with(args, stdin, deadline).await
    }

    /// [`run`](Self::run) with any [`Stdin`], e.g. an archive file streamed to `podman load`.
    pub(crate) async fn run_with(
        &self,
        args: &[String],
        stdin: Stdin<'_>,
        deadline: Duration,
    ) -> Result<PodmanOutput, Error> {
        tracing::debug!(args = ?args, "podman");
        let mut cmd = self.command(args);
        let mut bytes_in = None;
        match stdin {
            Stdin::Null => {}
            Stdin::Bytes(bytes) => {
                cmd.stdin(Stdio::piped());
                bytes_in = Some(bytes.to_vec());
            }
            Stdin::File(path) => {
                let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                cmd.stdin(Stdio::from(file));
            }
        }
        cmd.kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| Error::Podman {
            command: self.describe(args),
            message: format!(
                "cannot start `{}`: {e} (is Podman installed?)",
                self.argv[0]
            ),
        })?;
        if let Some(bytes) = bytes_in {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            // Written from a task so a child that does not read cannot block us past the deadline.
            tokio::spawn(async move {
                let _ = pipe.write_all(&bytes).await;
                let _ = pipe.shutdown().await;
            });
        }
        let mut out_pipe = child.stdout.take().expect("stdout is piped");
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let out_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut out_pipe, &mut buf).await;
            buf
        });
        let err_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut err_pipe, &mut buf).await;
            buf
        });
        let status = match tokio::time::timeout(deadline, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                return Err(Error::Podman {
                    command: self.describe(args),
                    message: e.to_string(),
                })
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(Error::Podman {
                    command: self.describe(args),
                    message: format!("no answer within {}s", deadline.as_secs()),
                });
            }
        };
        let stdout = out_task.await.unwrap_or_default();
        let stderr = err_task.await.unwrap_or_default();
        Ok(PodmanOutput {
            success: status.success(),
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// `podman FROM… | podman TO…`: the first's stdout streamed into the second's stdin (no
    /// temporary file); an error unless both exit 0 within `deadline`.
    pub async fn pipe(
        &self,
        from: &[String],
        to: &[String],
        deadline: Duration,
    ) -> Result<(), Error> {
        tracing::debug!(from = ?from, to = ?to, "podman pipe");
        let start_err = |args: &[String], e: std::io::Error| Error::Podman {
            command: self.describe(args),
            message: format!("cannot start `{}`: {e}", self.argv[0]),
        };
        let mut first = self
            .command(from)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| start_err(from, e))?;
        let stdout: Stdio = first
            .stdout
            .take()
            .expect("stdout is piped")
            .try_into()
            .map_err(|e| start_err(from, e))?;
        let second = self
            .command(to)
            .stdin(stdout)
            .spawn()
            .map_err(|e| start_err(to, e))?;
        let both = async { tokio::join!(first.wait_with_output(), second.wait_with_output()) };
        let (a, b) = tokio::time::timeout(deadline, both)
            .await
            .map_err(|_| Error::Podman {
                command: self.describe(from),
                message: format!("no answer within {}s", deadline.as_secs()),
            })?;
        for (args, out) in [(from, a), (to, b)] {
            let out = out.map_err(|e| start_err(args, e))?;
            if !out.status.success() {
                return Err(Error::Podman {
                    command: self.describe(args),
                    message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Like [`run`](Self::run) but a non-zero exit is an error carrying Podman's stderr.
    pub async fn ok(
        &self,
        args: &[String],
        stdin: Option<&[u8]>,
        deadline: Duration,
    ) -> Result<String, Error> {
        let out = self.run(args, stdin, deadline).await?;
        self.success(args, out)
    }

    /// [`ok`](Self::ok) with any [`Stdin`].
    pub(crate) async fn ok_with(
        &self,
        args: &[String],
        stdin: Stdin<'_>,
        deadline: Duration,
    ) -> Result<String, Error> {
        let out = self.run_with(args, stdin, deadline).await?;
        self.success(args, out)
    }

    /// The stdout of a call that exited 0, else an error carrying its stderr.
    fn success(&self, args: &[String], out: PodmanOutput) -> Result<String, Error> {
        if out.success {
            Ok(out.stdout)
        } else {
            Err(Error::Podman {
                command: self.describe(args),
                message: out.stderr.trim().to_string(),
            })
        }
    }

    pub(crate) fn describe(&self, args: &[String]) -> String {
        // Only the subcommand: full argv may be long; it is in the debug log.
        format!("podman {}", args.first().map(String::as_str).unwrap_or(""))
    }

    /// The captured output of `podman <args>` for callers that parse it (audit).
    pub async fn output(&self, args: &[&str]) -> Result<PodmanOutput, Error> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.run(&args, None, Duration::from_secs(120)).await
    }

    /// Is Podman usable at all (for tests that must skip loudly when it is absent).
    pub async fn available(&self) -> bool {
        self.run(&["version".into()], None, Duration::from_secs(60))
            .await
            .map(|o| o.success)
            .unwrap_or(false)
    }
}

/// One container as `podman ps -a --format json` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedContainer {
    pub id: String,
    pub name: String,
    /// `archy.app` label.
    pub app: String,
    /// `archy.spec-hash` label.
    pub spec_hash: String,
    pub version: String,
    pub state: ContainerState,
    pub exit_code: i32,
    /// Unix seconds; 0 if never started.
    pub started_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Running,
    /// Created but never started (the start failed, or the reconciler died inside `podman run`).
    Created,
    Exited,
    Paused,
    Other(String),
}

impl ContainerState {
    pub fn parse(s: &str) -> Self {
        match s {
            "running" => ContainerState::Running,
            "created" | "configured" => ContainerState::Created,
            "exited" | "stopped" => ContainerState::Exited,
            "paused" => ContainerState::Paused,
            other => ContainerState::Other(other.to_string()),
        }
    }
}

#[derive(Deserialize)]
struct PsEntry {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Names", default)]
    names: Vec<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<std::collections::HashMap<String, String>>,
    #[serde(rename = "State", default)]
    state: String,
    #[serde(rename = "ExitCode", default)]
    exit_code: i32,
    #[serde(rename = "StartedAt", default)]
    started_at: i64,
}

/// Parses `podman ps -a --format json` output; containers without an `archy.app` label are
/// ignored.
pub fn parse_ps(json: &str) -> Result<Vec<ObservedContainer>, Error> {
    let trimmed = json.trim();
    if trimmed.is_empty() {
        return Ok(vec![]);
    }
    let entries: Vec<PsEntry> = serde_json::from_str(trimmed)?;
    Ok(entries
        .into_iter()
        .filter_map(|e| {
            let labels = e.labels.unwrap_or_default();
            let app = labels.get(LABEL_APP)?.clone();
            Some(ObservedContainer {
                id: e.id,
                name: e.names.into_iter().next().unwrap_or_default(),
                app,
                spec_hash: labels.get(LABEL_SPEC_HASH).cloned().unwrap_or_default(),
                version: labels.get(LABEL_VERSION).cloned().unwrap_or_default(),
                state: ContainerState::parse(&e.state),
                exit_code: e.exit_code,
                started_at: e.started_at.max(0),
            })
        })
        .collect())
}

/// Name of the Podman secret holding one generated secret of an app
/// ([`crate::names::secret`]).
pub fn podman_secret_name(app: &str, secret: &str) -> String {
    crate::names::secret(app, secret)
}

/// How Podman is asked for the spec's image: its pinned id when the spec has one (so no other
/// image can stand in under the same name), else its name.
pub fn image_ref(svc: &ServiceSpec) -> String {
    match &svc.image_id {
        Some(id) => id.strip_prefix("sha256:").unwrap_or(id).to_string(),
        None => svc.image.clone(),
    }
}

/// Does Podman's stderr say the container name is taken? (Not "address already in use": a port
/// conflict at start must not make us remove our own container.)
pub fn name_in_use(stderr: &str) -> bool {
    stderr.contains("that name is already in use")
}

/// The `podman run -d` arguments for a spec: secure defaults first, then what the spec
/// declares. Pure, so the security flags are unit-tested. Secrets are referenced by Podman
/// secret name (`type=env`), never by value.
///
/// One `run -d` rather than `create` + `start`: each Podman process costs 30–150 ms here, and
/// the states a crash can leave are the same (none, created, running), which the planner
/// already handles.
pub fn run_args(spec: &AppSpec, svc: &ServiceSpec, owner: &str) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        "--name".into(),
        spec.container_of(svc),
    ];
    if !svc.name.is_empty() {
        // A stack's services share the app's network and find each other by service name
        // (PROTOCOL §2.2); nothing else on the machine is on it.
        a.push(format!(
            "--network={}:alias={}",
            spec.network_name(),
            svc.name
        ));
        a.push("--label".into());
        a.push(format!("{LABEL_SERVICE}={}", svc.name));
    } else if spec.has_network() {
        // A dependent's or an exporter's own network (PROTOCOL §2.2 `exports`).
        a.push(format!("--network={}", spec.network_name()));
    }
    for l in crate::names::labels(Role::Container, &spec.name, &spec.publisher, owner) {
        a.push("--label".into());
        a.push(l);
    }
    a.extend([
        "--label".into(),
        format!("{LABEL_SPEC_HASH}={}", spec.spec_hash()),
        "--label".into(),
        format!("{LABEL_VERSION}={}", spec.version),
        // Never reach a registry: the caller has loaded the verified image.
        "--pull=never".into(),
        // The reconciler is the supervisor (with crash-loop back-off), not Podman.
        "--restart=no".into(),
        "--cap-drop=ALL".into(),
        "--security-opt=no-new-privileges".into(),
        format!("--stop-timeout={}", svc.stop_grace_secs),
    ]);
    for cap in &svc.capabilities {
        a.push(format!("--cap-add={}", normalize_capability(cap)));
    }
    if svc.read_only_root {
        a.push("--read-only".into());
    }
    if let Some(m) = svc.resources.memory_mb {
        a.push(format!("--memory={m}m"));
    }
    if let Some(c) = &svc.resources.cpus {
        a.push(format!("--cpus={c}"));
    }
    for p in &svc.ports {
        let bind = match p.bind {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        a.push("--publish".into());
        a.push(format!(
            "{bind}:{}:{}/{}",
            p.host,
            p.container,
            p.protocol.as_str()
        ));
    }
    for v in &svc.volumes {
        a.push("--volume".into());
        a.push(format!("{}:{}", spec.volume_name(&v.name), v.target));
    }
    for (k, v) in &svc.env {
        a.push("--env".into());
        a.push(format!("{k}={v}"));
    }
    for s in &svc.generated_secrets {
        a.push("--secret".into());
        a.push(format!(
            "{},type=env,target={}",
            podman_secret_name(&spec.name, &s.name),
            s.env
        ));
    }
    a.push(image_ref(svc));
    a.extend(svc.command.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PortSpec, Protocol, SecretKind, SecretSpec, VolumeSpec};

    /// Tests `run_args`; the name predates `run` and is cited in SECURITY.md.
    #[test]
    fn create_args_are_locked_down() {
        let mut s = AppSpec::new("web", "1.2.0", "localhost/x:1");
        s.service_mut().capabilities = vec!["cap_net_bind_service".into()];
        s.service_mut().read_only_root = true;
        s.service_mut().resources.memory_mb = Some(64);
        s.service_mut().resources.cpus = Some("0.5".into());
        s.service_mut().ports.push(PortSpec {
            container: 80,
            host: 8080,
            protocol: Protocol::Tcp,
            bind: "127.0.0.1".parse().unwrap(),
        });
        s.service_mut().ports.push(PortSpec {
            container: 53,
            host: 5353,
            protocol: Protocol::Udp,
            bind: "::1".parse().unwrap(),
        });
        s.service_mut().volumes.push(VolumeSpec {
            name: "data".into(),
            target: "/data".into(),
        });
        s.service_mut().generated_secrets.push(SecretSpec {
            name: "token".into(),
            kind: SecretKind::Hex32,
            env: "TOKEN".into(),
        });
        s.service_mut().command = vec!["httpd".into(), "-f".into()];
        let a = run_args(&s, s.service(), "me");
        let has = |x: &str| a.iter().any(|y| y == x);
        assert!(has("--cap-drop=ALL"));
        assert!(has("--cap-add=NET_BIND_SERVICE"));
        assert!(has("--security-opt=no-new-privileges"));
        assert!(has("--read-only"));
        assert!(has("--memory=64m"));
        assert!(has("--cpus=0.5"));
        assert!(has("--pull=never"));
        assert_eq!(&a[..2], ["run", "--detach"]);
        assert!(has("127.0.0.1:8080:80/tcp"));
        assert!(has("[::1]:5353:53/udp"));
        assert!(has("archy_web_data:/data"));
        assert!(has("archy.role=container"));
        assert!(has("archy_web_token,type=env,target=TOKEN"));
        assert!(has(&format!("archy.spec-hash={}", s.spec_hash())));
        assert!(!a.iter().any(|x| x.contains("privileged")));
        assert_eq!(&a[a.len() - 3..], ["localhost/x:1", "httpd", "-f"]);
    }

    #[test]
    fn image_id_pins_the_image() {
        let mut s = AppSpec::new("web", "1", "localhost/x:1");
        s.service_mut().image_id = Some(format!("sha256:{}", "a".repeat(64)));
        let a = run_args(&s, s.service(), "me");
        assert_eq!(a.last().unwrap(), &"a".repeat(64));
    }

    #[test]
    fn a_taken_name_is_not_a_taken_port() {
        assert!(name_in_use(
            "Error: creating container storage: the container name \"archy-web\" is already in use by 005a. \
             You have to remove that container to be able to reuse that name: that name is already in use"
        ));
        assert!(!name_in_use(
            "Error: cannot listen on the TCP port: listen tcp4 127.0.0.1:8080: bind: address already in use"
        ));
    }

    #[test]
    fn parses_ps_json() {
        let json = r#"[{"Id":"abc","Names":["archy-web"],"Labels":{"archy.app":"web","archy.spec-hash":"h1","archy.version":"1"},
            "State":"exited","ExitCode":137,"StartedAt":1700000000},
            {"Id":"def","Names":["other"],"Labels":null,"State":"running"}]"#;
        let v = parse_ps(json).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].app, "web");
        assert_eq!(v[0].state, ContainerState::Exited);
        assert_eq!(v[0].exit_code, 137);
        assert!(parse_ps("").unwrap().is_empty());
        assert!(parse_ps("[]").unwrap().is_empty());
    }
}
