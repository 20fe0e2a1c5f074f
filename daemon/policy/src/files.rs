//! The permanent policy set: the Cilium policy files of a directory, parsed,
//! resolved for this node and compiled. Pure apart from reading the files;
//! the daemon, the offline checks (`hostfwd check-policy`, `hostfwdctl
//! policy validate`) share it. It reads files and never writes any: where the
//! daemon keeps its policy sources (runtime and permanent, persisted) is the
//! daemon's `policy_store`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::cilium::{self, NodeLabels, Policy, PolicyError, PolicyReport};
use super::compiler::compile;
use super::entities::EntityContext;
use super::image::MapImage;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading policy {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Every problem of every file, each with file:line:column and path.
    #[error("{}", list(.0))]
    Invalid(Vec<PolicyError>),
    #[error("compiling the policies: {0}")]
    Compile(#[from] super::model::ValidationError),
}

fn list(errors: &[PolicyError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// The YAML files of `dir` in name order; a missing directory has none.
pub fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Read { path: dir.to_path_buf(), source }),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The text of a policy file, read up to one byte past
/// [`cilium::MAX_SOURCE_BYTES`]: a larger file (or a device that never
/// ends) is not read whole, and the parser reports it as too large at the
/// position of the bound.
pub fn read(path: &Path) -> Result<String, Error> {
    use std::io::Read;
    let err = |source| Error::Read { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut bytes = Vec::new();
    file.take(cilium::MAX_SOURCE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(err)?;
    if bytes.len() > cilium::MAX_SOURCE_BYTES {
        // Cut anywhere, maybe inside a character: still longer than the bound.
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    String::from_utf8(bytes).map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Parses `files` together (names must be unique across them).
pub fn load(files: &[PathBuf]) -> Result<Vec<Policy>, Error> {
    load_with(files, false)
}

/// [`load`]; `strict` turns every warning into an error
/// ([`cilium::parse_policies_with`]).
pub fn load_with(files: &[PathBuf], strict: bool) -> Result<Vec<Policy>, Error> {
    let mut texts = Vec::new();
    for f in files {
        let text = read(f)?;
        texts.push((f.display().to_string(), text));
    }
    cilium::load_sources_with(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())), strict).map_err(Error::Invalid)
}

/// The compiled policy of this node.
pub struct Compiled {
    pub image: MapImage,
    pub report: PolicyReport,
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compiled").field("identities", &self.image.identities.len()).field("rules", &self.image.rules.len()).finish()
    }
}

/// Fails on an entity the context cannot resolve (see
/// [`cilium::unresolvable_entities`]).
pub fn compile_for_node(policies: &[Policy], ctx: &EntityContext, labels: &NodeLabels) -> Result<Compiled, Error> {
    let unresolvable = cilium::unresolvable_entities(policies, ctx);
    if !unresolvable.is_empty() {
        return Err(Error::Invalid(unresolvable));
    }
    let (rules, report) = cilium::to_rule_set(policies, ctx, labels);
    let image = compile(&rules)?;
    Ok(Compiled { image, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_of_policies_loads_in_name_order_and_reports_every_error() {
        let dir = tempfile::tempdir().unwrap();
        let good = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: ssh\nspec:\n  nodeSelector: {}\n  ingress:\n  - toPorts:\n    - ports:\n      - port: \"22\"\n        protocol: TCP\n";
        std::fs::write(dir.path().join("b.yaml"), good).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
        let files = policy_files(dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        let policies = load(&files).unwrap();
        let c = compile_for_node(&policies, &EntityContext::default(), &NodeLabels::new()).unwrap();
        assert!(c.image.enforce_ingress && !c.image.enforce_egress);

        std::fs::write(dir.path().join("a.yaml"), good.replace("toPorts", "toFQDNs")).unwrap();
        let err = load(&policy_files(dir.path()).unwrap()).unwrap_err().to_string();
        assert!(err.contains("a.yaml:8:"), "{err}");
        assert!(err.contains("toFQDNs"), "{err}");
        assert!(policy_files(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn files_are_read_up_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        // Two-byte characters across the bound.
        std::fs::write(&big, "#".to_string() + &"é".repeat(cilium::MAX_SOURCE_BYTES)).unwrap();
        let text = read(&big).unwrap();
        assert!(text.len() > cilium::MAX_SOURCE_BYTES && text.len() < cilium::MAX_SOURCE_BYTES + 8);
        let err = load(&[big]).unwrap_err().to_string();
        assert!(err.ends_with(&format!(":1:{}: document too large: more than {} bytes", cilium::MAX_SOURCE_BYTES / 2 + 1, cilium::MAX_SOURCE_BYTES)), "{err}");
        // /dev/zero never ends; it is not read whole.
        let err = load(&[PathBuf::from("/dev/zero")]).unwrap_err().to_string();
        assert!(err.contains("document too large"), "{err}");
    }
}
