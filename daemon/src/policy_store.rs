//! The policy sources in force, as firewalld keeps them: the files of the
//! policy directory are the permanent set; changes through the API are
//! runtime changes on top of it unless asked to persist. Pure apart from
//! reading and writing the policy directory. Part of the daemon's policy
//! lifecycle (the policy crate only parses and compiles what it is given):
//! it may use `state` for the policy record, never the manager or the loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::policy::cilium::{self, Policy};
use crate::policy::files;
use crate::state;

/// Where a policy source comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// A file of the policy directory, unchanged at runtime.
    Permanent,
    /// Applied through the API and not persisted (lost on reload/restart).
    Runtime,
}

/// One source: a file of the policy directory or a text applied by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub origin: Origin,
    /// The file it was read from or will be written to.
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    /// How errors name it: the file for permanent sources, the name given
    /// otherwise.
    pub fn label(&self) -> String {
        match self.origin {
            Origin::Permanent => self.path.display().to_string(),
            Origin::Runtime => self.name.clone(),
        }
    }

    /// As kept in the policy record (the last good set).
    pub fn saved(&self) -> state::SavedSource {
        state::SavedSource { name: self.name.clone(), path: self.path.clone(), permanent: self.origin == Origin::Permanent, text: self.text.clone() }
    }

    pub fn from_saved(s: state::SavedSource) -> Source {
        Source { name: s.name, origin: if s.permanent { Origin::Permanent } else { Origin::Runtime }, path: s.path, text: s.text }
    }
}

pub type Sources = BTreeMap<String, Source>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("policy name {0:?} is not valid: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'")]
    BadName(String),
    #[error("policy files {0} and {1} have the same name; rename one")]
    SameName(PathBuf, PathBuf),
    #[error(transparent)]
    Files(#[from] files::Error),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with(['.', '-']);
    ok.then_some(()).ok_or_else(|| Error::BadName(name.to_string()))
}

/// The permanent set: every `*.yaml`/`*.yml` of `dir`, named by file stem;
/// empty when the directory does not exist.
pub fn read_dir(dir: &Path) -> Result<Sources, Error> {
    let mut out = Sources::new();
    for path in files::policy_files(dir)? {
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        check_name(&name)?;
        let text = files::read(&path)?;
        if let Some(prev) = out.get(&name) {
            return Err(Error::SameName(prev.path.clone(), path));
        }
        out.insert(name.clone(), Source { name, origin: Origin::Permanent, path, text });
    }
    Ok(out)
}

/// Parses all sources together (policy names unique across them).
pub fn parse(sources: &Sources, strict: bool) -> Result<Vec<Policy>, files::Error> {
    let labelled: Vec<(String, &str)> = sources.values().map(|s| (s.label(), s.text.as_str())).collect();
    cilium::load_sources_with(labelled.iter().map(|(l, t)| (l.as_str(), *t)), strict).map_err(files::Error::Invalid)
}

/// The file a source named `name` is persisted as (or removed from): the
/// file of the permanent source of that name (`x.yml` stays `x.yml`), else
/// `<name>.yaml`. Asked of the permanent set, not of the source in force,
/// which may be a runtime override of that file.
pub fn file_for(dir: &Path, name: &str, permanent: Option<&Source>) -> PathBuf {
    match permanent {
        Some(s) if s.origin == Origin::Permanent => s.path.clone(),
        _ => dir.join(format!("{name}.yaml")),
    }
}

/// Writes a source to its file atomically (creating the directory).
pub fn persist(dir: &Path, source: &Source) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Write { path: dir.to_path_buf(), source: e })?;
    state::write_atomic(&source.path, source.text.as_bytes()).map_err(|e| Error::Write { path: source.path.clone(), source: e })
}

/// Removes a persisted source's file (a missing file is fine).
pub fn unpersist(source: &Source) -> Result<(), Error> {
    match std::fs::remove_file(&source.path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Write { path: source.path.clone(), source: e }),
        _ => {
            if let Some(dir) = source.path.parent() {
                state::sync_dir(dir).map_err(|e| Error::Write { path: dir.to_path_buf(), source: e })?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSH: &str = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: ssh\nspec:\n  nodeSelector: {}\n  ingress:\n  - toPorts:\n    - ports:\n      - port: \"22\"\n        protocol: TCP\n";

    #[test]
    fn names_are_checked() {
        for good in ["ssh", "a.b_c-d", "0", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", "ä", &"x".repeat(65), ".."] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_directory_is_read_by_stem_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_dir(&dir.path().join("missing")).unwrap().is_empty());
        std::fs::write(dir.path().join("ssh.yaml"), SSH).unwrap();
        let s = read_dir(dir.path()).unwrap();
        assert_eq!(s.keys().collect::<Vec<_>>(), ["ssh"]);
        assert_eq!(parse(&s, false).unwrap().len(), 1);

        // A runtime source with the same Cilium policy name collides.
        let mut both = s.clone();
        both.insert("web".into(), Source { name: "web".into(), origin: Origin::Runtime, path: dir.path().join("web.yaml"), text: SSH.into() });
        let err = parse(&both, false).unwrap_err().to_string();
        assert!(err.starts_with("web:4:"), "{err}");

        std::fs::write(dir.path().join("ssh.yml"), SSH).unwrap();
        assert!(matches!(read_dir(dir.path()), Err(Error::SameName(..))));
    }

    #[test]
    fn persist_writes_and_unpersist_removes() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("policies");
        let path = file_for(&pdir, "ssh", None);
        let src = Source { name: "ssh".into(), origin: Origin::Permanent, path: path.clone(), text: SSH.into() };
        persist(&pdir, &src).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), SSH);
        assert_eq!(file_for(&pdir, "ssh", Some(&src)), path);
        unpersist(&src).unwrap();
        assert!(!path.exists());
        unpersist(&src).unwrap();
    }
}
