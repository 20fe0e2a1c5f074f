//! Walking the YAML tree against a [`Schema`]: field paths for errors,
//! mappings whose keys were checked (unknown, unsupported, misplaced and
//! ignored fields, with a spelling suggestion), and typed scalars, lists
//! and string maps. Generic: the field tables themselves are in `schema`.

use std::collections::{BTreeMap, HashMap};

use super::errors::{Checker, Pos};
use super::schema::Schema;
use super::yaml::{Node, Typed, Value};

// Paths are built for every rule (its origin) and for errors, in one
// allocation of the right size (`format!` guesses and grows: several times
// the cost on a large policy).
pub(super) fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        return key.to_string();
    }
    let mut s = String::with_capacity(path.len() + 1 + key.len());
    s.push_str(path);
    s.push('.');
    s.push_str(key);
    s
}

pub(super) fn index(path: &str, i: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(path.len() + 8);
    s.push_str(path);
    let _ = write!(s, "[{i}]"); // writing to a String cannot fail
    s
}

/// A mapping whose keys were checked against a [`Schema`].
pub(super) struct Obj<'n> {
    pub(super) path: String,
    pub(super) pos: Pos,
    pub(super) fields: Vec<(&'n str, Pos, &'n Node)>,
    /// How many fields were rejected (unsupported, unknown, misplaced).
    pub(super) rejected: usize,
}

impl<'n> Obj<'n> {
    /// The value of `key`, unless absent or null (Kubernetes treats an
    /// explicit null as absent).
    pub(super) fn get(&self, key: &str) -> Option<&'n Node> {
        self.fields
            .iter()
            .find(|(k, _, v)| *k == key && !v.is_null())
            .map(|(_, _, v)| *v)
    }

    pub(super) fn key_pos(&self, key: &str) -> Option<Pos> {
        self.fields
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, p, _)| *p)
    }

    pub(super) fn path(&self, key: &str) -> String {
        field(&self.path, key)
    }
}

/// Mappings with more keys than this check duplicates with a hash map.
pub(super) const SEEN_LINEAR: usize = 16;

pub(super) fn object<'n>(cx: &mut Checker, node: &'n Node, path: &str, schema: &Schema) -> Option<Obj<'n>> {
    let Value::Map(entries) = &node.value else {
        cx.error(
            node.pos,
            path,
            format!(
                "expected {} (a mapping), found {}",
                schema.what,
                node.describe()
            ),
        );
        return None;
    };
    let mut obj = Obj {
        path: path.to_string(),
        pos: node.pos,
        fields: Vec::new(),
        rejected: 0,
    };
    // Every key seen, for duplicates: a short list searched linearly (the
    // usual mapping has a handful of keys), a hash map past that.
    let mut seen: Vec<(&str, Pos)> = Vec::new();
    let mut seen_many: HashMap<&str, Pos> = HashMap::new();
    for (k, v) in entries {
        let Value::Scalar { text: key, .. } = &k.value else {
            cx.error(
                k.pos,
                path,
                format!("a key must be a field name, found {}", k.describe()),
            );
            continue;
        };
        let key = key.as_str();
        let first = if seen_many.is_empty() {
            seen.iter().find(|(s, _)| *s == key).map(|(_, p)| *p)
        } else {
            seen_many.get(key).copied()
        };
        if let Some(first) = first {
            cx.error(
                k.pos,
                &field(path, key),
                format!("duplicate field (first at {first})"),
            );
            continue;
        }
        if seen.len() < SEEN_LINEAR {
            seen.push((key, k.pos));
        } else {
            if seen_many.is_empty() {
                seen_many.extend(seen.iter().copied());
            }
            seen_many.insert(key, k.pos);
        }
        if let Some((_, why)) = schema.unsupported.iter().find(|(u, _)| *u == key) {
            obj.rejected += 1;
            cx.error(k.pos, &field(path, key), *why);
        } else if let Some((_, hint)) = schema.misplaced.iter().find(|(m, _)| *m == key) {
            obj.rejected += 1;
            cx.error(
                k.pos,
                &field(path, key),
                format!("not a field of {}: {hint}", schema.what),
            );
        } else if schema.known.contains(&key) {
            obj.fields.push((key, k.pos, v));
        } else if schema.ignored.contains(&key) {
        } else if schema.unknown_warns {
            cx.warn(
                k.pos,
                &field(path, key),
                format!("unknown field in {} ignored (as Kubernetes prunes it)", schema.what),
            );
        } else {
            obj.rejected += 1;
            let msg = match suggest(key, schema) {
                Some(s) => format!("unknown field in {}; did you mean {s:?}?", schema.what),
                None => format!(
                    "unknown field in {} (known fields: {})",
                    schema.what,
                    schema.known.join(", ")
                ),
            };
            cx.error(k.pos, &field(path, key), msg);
        }
    }
    Some(obj)
}

/// A known field the unknown `key` is probably a misspelling of.
pub(super) fn suggest(key: &str, schema: &Schema) -> Option<&'static str> {
    let candidates = schema
        .known
        .iter()
        .copied()
        .chain(schema.unsupported.iter().map(|(k, _)| *k));
    let lower = key.to_ascii_lowercase();
    let mut best: Option<(usize, &'static str)> = None;
    for c in candidates {
        let cl = c.to_ascii_lowercase();
        let d = if cl == lower {
            0
        } else if lower.len() >= 4 && (cl.starts_with(&lower) || lower.starts_with(&cl)) {
            1
        } else {
            edit_distance(&lower, &cl)
        };
        if d <= 2 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub(super) fn string(cx: &mut Checker, node: &Node, path: &str) -> Option<String> {
    match node.typed() {
        Some(Typed::Str(s)) => Some(s.to_string()),
        Some(Typed::Int(_) | Typed::Bool(_) | Typed::Float) => {
            let Value::Scalar { text, .. } = &node.value else {
                unreachable!("typed scalar")
            };
            cx.error(
                node.pos,
                path,
                format!(
                    "expected a string, found {} (quote it: \"{text}\")",
                    node.describe()
                ),
            );
            None
        }
        _ => {
            cx.error(
                node.pos,
                path,
                format!("expected a string, found {}", node.describe()),
            );
            None
        }
    }
}

/// [`string`] with the path built only for an error (list items: most are
/// fine, and a policy can list thousands).
pub(super) fn string_at(cx: &mut Checker, node: &Node, path: impl FnOnce() -> String) -> Option<String> {
    match node.typed() {
        Some(Typed::Str(s)) => Some(s.to_string()),
        _ => string(cx, node, &path()),
    }
}

pub(super) fn list<'n>(cx: &mut Checker, node: &'n Node, path: &str) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        _ => {
            cx.error(
                node.pos,
                path,
                format!("expected a list, found {}", node.describe()),
            );
            None
        }
    }
}

pub(super) fn boolean(cx: &mut Checker, node: &Node, path: &str) -> Option<bool> {
    match node.typed() {
        Some(Typed::Bool(b)) => Some(b),
        _ => {
            cx.error(
                node.pos,
                path,
                format!("expected true or false, found {}", node.describe()),
            );
            None
        }
    }
}

pub(super) fn string_map(cx: &mut Checker, node: &Node, path: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Value::Map(entries) = &node.value else {
        cx.error(
            node.pos,
            path,
            format!("expected a mapping of strings, found {}", node.describe()),
        );
        return out;
    };
    for (k, v) in entries {
        let Value::Scalar { text: key, .. } = &k.value else {
            cx.error(
                k.pos,
                path,
                format!("a key must be a string, found {}", k.describe()),
            );
            continue;
        };
        let vpath = field(path, key);
        if out.contains_key(key) {
            cx.error(k.pos, &vpath, "duplicate field");
            continue;
        }
        if let Some(s) = string(cx, v, &vpath) {
            out.insert(key.clone(), s);
        }
    }
    out
}

/// The value of a field that must be there; an error naming `what` if not.
pub(super) fn required<'n>(cx: &mut Checker, obj: &Obj<'n>, key: &str, what: &str) -> Option<&'n Node> {
    let v = obj.get(key);
    if v.is_none() {
        let pos = obj.key_pos(key).unwrap_or(obj.pos);
        cx.error(pos, &obj.path(key), format!("missing: {what}"));
    }
    v
}
