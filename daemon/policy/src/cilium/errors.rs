//! Error reporting: positions in a policy file, the error type users see
//! (`file:line:column: path: message`), and [`Checker`], which collects one
//! source's errors (at most [`MAX_ERRORS`]) and counts its rules and CIDRs
//! against the per-source bounds. It knows nothing of YAML or the schema.

use std::fmt;

use saphyr_parser::Span;

use super::limits::{MAX_CIDRS_PER_SOURCE, MAX_ERRORS, MAX_RULES_PER_SOURCE};

/// A position in a policy file: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub fn new(line: usize, column: usize) -> Pos {
        Pos { line, column }
    }

    pub(super) fn of(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem in a policy file, e.g.
/// `policies/ssh.yaml:14:9: spec.ingress[1].toPorts[0].rules: L7 rules cannot be enforced …`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Field path from the document root (`spec.ingress[1].toPorts[0]`);
    /// empty for YAML syntax errors.
    pub path: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Something in a policy file that hostfwd accepts but that changes nothing
/// here, e.g. an unknown top-level field (Kubernetes prunes it) or a peer
/// that selects nothing on a host without Cilium. Not an error: the policy
/// loads. With `strict_policies = true` each one is an error instead
/// ([`PolicyWarning::into_error`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyWarning {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Field path from the document root, as in [`PolicyError`].
    pub path: String,
    pub message: String,
}

impl PolicyWarning {
    /// The error strict mode reports for this warning.
    pub fn into_error(self) -> PolicyError {
        PolicyError {
            file: self.file,
            line: self.line,
            column: self.column,
            path: self.path,
            message: format!("{} (refused: strict_policies = true)", self.message),
        }
    }
}

impl fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "warning: {}", self.message)
    }
}

/// The checks of one source: its errors as they are found, and its rules
/// and CIDRs counted against the per-source bounds.
pub(super) struct Checker<'f> {
    pub(super) file: &'f str,
    /// The first [`MAX_ERRORS`] errors.
    pub(super) errors: Vec<PolicyError>,
    /// The first [`MAX_ERRORS`] warnings, in the order found.
    pub(super) warnings: Vec<PolicyWarning>,
    /// Warnings past the bound, counted only.
    pub(super) warnings_left_out: usize,
    /// Every error reported, kept or not.
    pub(super) reported: usize,
    /// Rules and CIDRs so far, against the per-source bounds.
    pub(super) rules: usize,
    pub(super) cidrs: usize,
}

impl<'f> Checker<'f> {
    pub(super) fn new(file: &'f str) -> Checker<'f> {
        Checker {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
            warnings_left_out: 0,
            reported: 0,
            rules: 0,
            cidrs: 0,
        }
    }

    pub(super) fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.reported += 1;
        if self.errors.len() >= MAX_ERRORS {
            return;
        }
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        // A file of many inert rules must not flood the log and the bus.
        if self.warnings.len() >= MAX_ERRORS {
            self.warnings_left_out += 1;
            return;
        }
        self.warnings.push(PolicyWarning {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Runs `f` and tells whether it reported no error.
    pub(super) fn clean<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let before = self.reported;
        let v = f(self);
        if self.reported == before {
            v
        } else {
            None
        }
    }

    /// Counts one rule at `pos`; false (and an error, once) past the bound.
    pub(super) fn count_rule(&mut self, pos: Pos, path: &str) -> bool {
        self.rules += 1;
        if self.rules == MAX_RULES_PER_SOURCE + 1 {
            self.error(
                pos,
                path,
                format!(
                    "too many rules in one source (more than {MAX_RULES_PER_SOURCE}): split it"
                ),
            );
        }
        self.rules <= MAX_RULES_PER_SOURCE
    }

    /// Counts one CIDR at `pos`; false (and an error, once) past the bound.
    pub(super) fn count_cidr(&mut self, pos: Pos, path: &str) -> bool {
        self.cidrs += 1;
        if self.cidrs == MAX_CIDRS_PER_SOURCE + 1 {
            self.error(
                pos,
                path,
                format!(
                    "too many CIDRs in one source (more than {MAX_CIDRS_PER_SOURCE}): split it"
                ),
            );
        }
        self.cidrs <= MAX_CIDRS_PER_SOURCE
    }

    /// The errors, in file order, with a last one saying how many were
    /// left out.
    pub(super) fn into_errors(mut self) -> Vec<PolicyError> {
        // A stable sort keeps the order of errors at one place.
        self.errors.sort_by_key(|e| (e.line, e.column));
        if self.reported > self.errors.len() {
            let last = self
                .errors
                .last()
                .map_or(Pos::new(1, 1), |e| Pos::new(e.line, e.column));
            let more = self.reported - self.errors.len();
            self.errors.push(PolicyError {
                file: self.file.to_string(),
                line: last.line,
                column: last.column,
                path: String::new(),
                message: format!(
                    "{more} more errors not shown (at most {MAX_ERRORS} are reported)"
                ),
            });
        }
        self.errors
    }
}
