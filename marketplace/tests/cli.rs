//! The `archy` binary as a user meets it: identities, validate, sign, verify, exit codes, and
//! interoperability of the JWS with an independent JOSE implementation (`jose` under Node).

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn archy(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archy"))
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .expect("archy runs")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn identity_files_are_private_and_not_overwritten() {
    let home = tempfile::tempdir().unwrap();
    let out = archy(home.path(), &["id", "new", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(id["did"].as_str().unwrap().starts_with("did:key:z6Mk"));
    assert!(id["npub"].as_str().unwrap().starts_with("npub1"));
    assert_eq!(id["nostr"].as_str().unwrap().len(), 64);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(home.path()), 0o700);
    for f in std::fs::read_dir(home.path().join("identity")).unwrap() {
        assert_eq!(mode(&f.unwrap().path()), 0o600);
    }
    let again = archy(home.path(), &["id", "new"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    let show = archy(home.path(), &["id", "show", "--json"]);
    assert_eq!(serde_json::from_slice::<Value>(&show.stdout).unwrap(), id);
    // Private keys never appear in `show`.
    let secret = std::fs::read_to_string(home.path().join("identity/did-ed25519.key")).unwrap();
    assert!(!stdout(&show).contains(secret.trim()));
}

#[test]
fn validate_sign_verify_and_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    assert!(archy(home.path(), &["id", "new"]).status.success());
    let manifest = repo().join("apps/hello-web/manifest.yaml");
    let m = manifest.to_str().unwrap();
    let out = archy(home.path(), &["app", "validate", m]);
    assert!(out.status.success(), "{}", stdout(&out));

    // A bad manifest: every violation, one per line, naming the field; JSON on request.
    let bad = home.path().join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("id: hello-web", "id: Hello_Web\nprivileged: true")
            .replace("host: 18080", "host: 80"),
    )
    .unwrap();
    let out = archy(home.path(), &["app", "validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for field in [
        "id [schema/pattern]",
        "privileged [policy/forbidden-field]",
        "ports[0].host [policy/host-port-privileged]",
    ] {
        assert!(text.contains(field), "missing {field} in:\n{text}");
    }
    let out = archy(
        home.path(),
        &["app", "validate", "--json", bad.to_str().unwrap()],
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 3, "{list:?}");

    // Sign, verify; then tamper.
    let env = home.path().join("env.json");
    let out = archy(
        home.path(),
        &["app", "sign", m, "--out", env.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    let out = archy(home.path(), &["app", "verify", env.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let tampered = home.path().join("tampered.json");
    std::fs::write(
        &tampered,
        std::fs::read_to_string(&env)
            .unwrap()
            .replace("Hello Web", "Hello Wab"),
    )
    .unwrap();
    let out = archy(
        home.path(),
        &["app", "verify", "--json", tampered.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["reason"], "jws-invalid");

    // A file naming another publisher is refused by sign.
    let other = tempfile::tempdir().unwrap();
    assert!(archy(other.path(), &["id", "new"]).status.success());
    let out = archy(other.path(), &["app", "sign", env.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // Usage errors exit 2.
    assert_eq!(
        archy(home.path(), &["app", "frobnicate"]).status.code(),
        Some(2)
    );
}

/// Runs `node tests/interop/jws.mjs …`, or says why it cannot. `ARCHY_REQUIRE_TOOLS=1`
/// (set by `tests/run.sh`) turns a missing Node or missing npm packages into a failure.
fn node_jws(args: &[&str]) -> Option<Output> {
    let dir = repo().join("tests/interop");
    let ready = dir.join("node_modules/jose").exists()
        && Command::new("node").arg("--version").output().is_ok();
    if !ready {
        assert!(
            std::env::var_os("ARCHY_REQUIRE_TOOLS").is_none(),
            "Node or tests/interop/node_modules missing: run `npm ci` in tests/interop"
        );
        eprintln!("SKIPPED: Node interop (run `npm ci` in tests/interop to enable)");
        return None;
    }
    Some(
        Command::new("node")
            .arg(dir.join("jws.mjs"))
            .args(args)
            .output()
            .unwrap(),
    )
}

#[test]
fn jws_interoperates_with_jose() {
    let home = tempfile::tempdir().unwrap();
    assert!(archy(home.path(), &["id", "new"]).status.success());
    let env = home.path().join("env.json");
    let m = repo().join("apps/notes/manifest.yaml");
    assert!(archy(
        home.path(),
        &[
            "app",
            "sign",
            m.to_str().unwrap(),
            "--out",
            env.to_str().unwrap()
        ]
    )
    .status
    .success());
    let Some(out) = node_jws(&["verify", env.to_str().unwrap()]) else {
        return;
    };
    assert!(out.status.success(), "jose refused archy's JWS: {out:?}");
    // jose must also refuse a tampered one, or the check proves nothing.
    let tampered = home.path().join("tampered.json");
    std::fs::write(
        &tampered,
        std::fs::read_to_string(&env)
            .unwrap()
            .replace("Notes", "Nodes"),
    )
    .unwrap();
    assert!(!node_jws(&["verify", tampered.to_str().unwrap()])
        .unwrap()
        .status
        .success());
    // And the committed vector verifies under jose.
    let vector = repo().join("tests/vectors/envelope.json");
    assert!(node_jws(&["verify", vector.to_str().unwrap()])
        .unwrap()
        .status
        .success());

    // The other direction: jose signs with a fresh did:key, archy verifies.
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&env).unwrap()).unwrap();
    let plain = home.path().join("manifest.json");
    std::fs::write(&plain, manifest["manifest"].to_string()).unwrap();
    let by_jose = home.path().join("by-jose.json");
    let out = node_jws(&["sign", plain.to_str().unwrap(), by_jose.to_str().unwrap()]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = archy(home.path(), &["app", "verify", by_jose.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "archy refused jose's JWS: {}",
        stdout(&out)
    );
}
