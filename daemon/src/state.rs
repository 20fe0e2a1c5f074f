//! State that survives restarts (`state_dir`, default `/var/lib/hostfwd`):
//! the audit mode switched through the API with `persist`, globally and per
//! link (by name: a recreated device keeps its mode). Written atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE: &str = "state.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persisted {
    /// Global audit mode; `None` = as the configuration says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<bool>,
    /// Per-link audit mode by link name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub link_audit: BTreeMap<String, bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading state {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("state {path} is not valid: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("writing state {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The saved state; a missing file is the empty state.
pub fn load(dir: &Path) -> Result<Persisted, Error> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Parse { path: p, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
        Err(source) => Err(Error::Read { path: p, source }),
    }
}

pub fn save(dir: &Path, s: &Persisted) -> Result<(), Error> {
    let p = path(dir);
    let mut text = serde_json::to_vec_pretty(s).map_err(|e| Error::Write { path: p.clone(), source: e.into() })?;
    text.push(b'\n');
    std::fs::create_dir_all(dir).map_err(|source| Error::Write { path: dir.to_path_buf(), source })?;
    write_atomic(&p, &text).map_err(|source| Error::Write { path: p, source })
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new
/// content, never a torn file: temp file in the same directory, fsync,
/// rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".hostfwd-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Makes a rename or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("state");
        assert_eq!(load(&sd).unwrap(), Persisted::default());
        let s = Persisted { audit: Some(false), link_audit: [("eth0".to_string(), true)].into() };
        save(&sd, &s).unwrap();
        assert_eq!(load(&sd).unwrap(), s);
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(&sd).unwrap().count(), 1);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), "{\"audit\": tru").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("not valid"), "{e}");
        std::fs::write(path(dir.path()), "{\"audit\": true, \"mystery\": 1}").unwrap();
        assert!(load(dir.path()).unwrap_err().to_string().contains("mystery"));
    }
}
