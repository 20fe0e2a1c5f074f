//! State that survives restarts (`state_dir`, default `/var/lib/hostfwd`):
//! the audit mode switched through the API with `persist`, globally and per
//! link (by name: a recreated device keeps its mode); and the policy
//! record: the revision counter and the last good (confirmed) policy set,
//! which a cold start falls back on when the policy directory is invalid.
//! Written atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE: &str = "state.json";
const POLICY_FILE: &str = "policy.json";
/// The prefix of `write_atomic`'s temp files (a crash may leave one).
const TEMP_PREFIX: &str = ".hostfwd-";

/// One source of the last good policy set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedSource {
    pub name: String,
    /// The file it came from or goes to.
    pub path: PathBuf,
    /// Whether it is a file of the policy directory (else a runtime source).
    pub permanent: bool,
    pub text: String,
}

/// The policy record (`policy.json`). One file, written atomically, so the
/// revision and the set it belongs to never disagree after a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRecord {
    /// The highest policy revision handed out; never goes backwards.
    pub revision: u64,
    /// The last policy set installed and confirmed; `None` when no policy
    /// was ever installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good: Option<Vec<SavedSource>>,
}

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
    load_json(path(dir))
}

pub fn save(dir: &Path, s: &Persisted) -> Result<(), Error> {
    save_json(&path(dir), dir, s)
}

pub fn policy_path(dir: &Path) -> PathBuf {
    dir.join(POLICY_FILE)
}

/// The policy record; a missing file is the empty record (no revision yet).
pub fn load_policy(dir: &Path) -> Result<PolicyRecord, Error> {
    load_json(policy_path(dir))
}

/// A JSON file of state; a missing one is `T::default()`.
fn load_json<T: serde::de::DeserializeOwned + Default>(p: PathBuf) -> Result<T, Error> {
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Parse { path: p, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(Error::Read { path: p, source }),
    }
}

pub fn save_policy(dir: &Path, r: &PolicyRecord) -> Result<(), Error> {
    save_json(&policy_path(dir), dir, r)
}

fn save_json<T: Serialize>(p: &Path, dir: &Path, s: &T) -> Result<(), Error> {
    let p = p.to_path_buf();
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
    let mut tmp = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Removes the temp files of writes a crash interrupted (the target of
/// each is whole: the old or the new content). Returns how many went.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for e in entries {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) && e.file_type()?.is_file() {
            std::fs::remove_file(e.path())?;
            n += 1;
        }
    }
    if n > 0 {
        sync_dir(dir)?;
    }
    Ok(n)
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
    fn the_policy_record_round_trips_and_stale_temps_go() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_policy(dir.path()).unwrap(), PolicyRecord::default());
        let r = PolicyRecord {
            revision: 7,
            last_good: Some(vec![SavedSource { name: "ssh".into(), path: "/etc/p/ssh.yaml".into(), permanent: true, text: "x: 1\n".into() }]),
        };
        save_policy(dir.path(), &r).unwrap();
        assert_eq!(load_policy(dir.path()).unwrap(), r);
        std::fs::write(dir.path().join(".hostfwd-abc"), "torn").unwrap();
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only policy.json is left");
        assert_eq!(remove_stale_temps(&dir.path().join("missing")).unwrap(), 0);
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
