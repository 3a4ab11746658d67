//! Generated secrets: one 0600 file per secret under `<state_dir>/secrets/<app>/<name>`
//! (directory 0700), created once with `O_EXCL` and reused across updates and reinstalls.
//!
//! Delivery to the container: a Podman secret (`podman secret create NAME -`, value on stdin,
//! then `--secret NAME,type=env,target=VAR`). Chosen over `--env-file` because the value never
//! appears in an argv (visible to every user in `ps`) or in a second file, and because it
//! works when Podman runs as another user (`runuser`), which can open neither our 0600 files
//! nor our stdin pipe by path (`--env-file /dev/stdin` fails there). The file under the state
//! dir stays the source of truth; Podman's copy lives in its own per-user store.
//! Limit (Podman 4.3): once the container runs, `podman inspect` by the same user shows the
//! value in `Config.Env`, as with any env delivery — it is in the OCI config either way.
//! Values are never logged: [`SecretValue`] has a redacting `Debug`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;

use crate::spec::{SecretKind, SecretSpec};
use crate::Error;

/// A secret value; `Debug` prints `<redacted>` so it cannot leak through `tracing` fields.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Directory holding one app's secret files.
pub fn app_dir(state_dir: &Path, app: &str) -> PathBuf {
    state_dir.join("secrets").join(app)
}

fn generate(kind: SecretKind) -> String {
    let mut rng = rand::rng();
    match kind {
        SecretKind::Hex16 => {
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            hex::encode(b)
        }
        SecretKind::Hex32 => {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            hex::encode(b)
        }
        SecretKind::Base64 => {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            base64::engine::general_purpose::STANDARD.encode(b)
        }
    }
}

/// Returns the secret's value, creating its file (0600) on first use. The boolean is true
/// when the value was generated now (so a stale Podman secret of that name must be replaced).
pub fn ensure(
    state_dir: &Path,
    app: &str,
    spec: &SecretSpec,
) -> Result<(SecretValue, bool), Error> {
    let dir = app_dir(state_dir, app);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    // Tighten if it pre-existed with other permissions.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(&dir, e))?;
    let path = dir.join(&spec.name);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            let value = generate(spec.kind);
            f.write_all(value.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            tracing::info!(app, secret = %spec.name, "generated secret");
            Ok((SecretValue(value), true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io(&path, e))?;
            }
            let value = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            if value.is_empty() {
                // A crash between create and write: regenerate (nothing used it yet).
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                return ensure(state_dir, app, spec);
            }
            Ok((SecretValue(value), false))
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Removes all of an app's secret files (purge only).
pub fn remove_all(state_dir: &Path, app: &str) -> Result<(), Error> {
    let dir = app_dir(state_dir, app);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SecretSpec {
            name: "key".into(),
            kind: SecretKind::Hex32,
            env: "KEY".into(),
        };
        let (v1, new1) = ensure(dir.path(), "web", &spec).unwrap();
        let (v2, new2) = ensure(dir.path(), "web", &spec).unwrap();
        assert!(new1 && !new2);
        assert_eq!(v1, v2);
        assert_eq!(v1.expose().len(), 64);
        assert_eq!(format!("{v1:?}"), "<redacted>");
        let path = app_dir(dir.path(), "web").join("key");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(app_dir(dir.path(), "web"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let b64 = SecretSpec {
            name: "b".into(),
            kind: SecretKind::Base64,
            env: "B".into(),
        };
        assert_eq!(
            ensure(dir.path(), "web", &b64).unwrap().0.expose().len(),
            44
        );
        let h16 = SecretSpec {
            name: "h".into(),
            kind: SecretKind::Hex16,
            env: "H".into(),
        };
        assert_eq!(
            ensure(dir.path(), "web", &h16).unwrap().0.expose().len(),
            32
        );
        remove_all(dir.path(), "web").unwrap();
        assert!(!app_dir(dir.path(), "web").exists());
        remove_all(dir.path(), "web").unwrap();
    }
}
