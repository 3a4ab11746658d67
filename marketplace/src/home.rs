//! The node's home directory: identity keys, configuration, databases.
//!
//! `--home DIR`, else `$ARCHY_HOME`, else the XDG data dir (`~/.local/share/archy`), so several
//! nodes can live on one machine. The home is 0700 and every secret in it 0600.

use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A resolved home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Resolves the home: the explicit directory, else `$ARCHY_HOME`, else the XDG data dir.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Home> {
        let root = match explicit.or_else(|| std::env::var_os("ARCHY_HOME").map(PathBuf::from)) {
            Some(dir) => dir,
            None => directories::ProjectDirs::from("", "", "archy")
                .context(
                    "cannot find a home directory for archy: pass --home DIR or set ARCHY_HOME",
                )?
                .data_dir()
                .to_path_buf(),
        };
        Ok(Home { root })
    }

    /// A home at a given directory (tests, embedded nodes).
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the home (0700) if needed.
    pub fn ensure(&self) -> Result<()> {
        fs::create_dir_all(&self.root)
            .with_context(|| format!("creating the home directory {}", self.root.display()))?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", self.root.display()))?;
        Ok(())
    }

    /// A path inside the home.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }
}

/// Writes a secret file atomically with mode 0600 (a temporary file renamed over the target, so
/// a crash never leaves a half-written key).
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .context("a secret file needs a parent directory")?;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads a secret file, refusing one that others can read (someone may have copied it around).
pub fn read_secret(path: &Path) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} is readable by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}
