//! YAML: a tree with a position on every node, built from the
//! tokenizer's events under the YAML 1.2 core schema, with the source
//! bounds (depth, nodes after expanding aliases) enforced while building.
//! It knows nothing of Cilium's schema; errors are (position, message).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

use super::errors::Pos;
use super::limits::{MAX_DEPTH, MAX_NODES, MAX_SOURCE_BYTES};

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) pos: Pos,
    pub(super) value: Value,
}

#[derive(Debug, Clone)]
pub(super) enum Value {
    Scalar {
        text: String,
        /// Plain (unquoted, not a block scalar): typed by the YAML 1.2 core
        /// schema unless tagged.
        plain: bool,
        tag: Option<CoreTag>,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CoreTag {
    Str,
    Int,
    Bool,
    Null,
    Float,
    Seq,
    Map,
}

/// A scalar's type under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Typed<'a> {
    Null,
    Bool(bool),
    /// Saturated to the i128 range.
    Int(i128),
    Float,
    Str(&'a str),
}

impl Node {
    pub(super) fn typed(&self) -> Option<Typed<'_>> {
        let Value::Scalar { text, plain, tag } = &self.value else {
            return None;
        };
        let t = text.as_str();
        Some(match tag {
            Some(CoreTag::Str) => Typed::Str(t),
            Some(CoreTag::Null) => Typed::Null,
            Some(CoreTag::Bool) => core_bool(t).map_or(Typed::Str(t), Typed::Bool),
            Some(CoreTag::Int) => core_int(t).map_or(Typed::Str(t), Typed::Int),
            Some(CoreTag::Float) => Typed::Float,
            Some(CoreTag::Seq | CoreTag::Map) => Typed::Str(t),
            None if !plain => Typed::Str(t),
            None => {
                if matches!(t, "" | "~" | "null" | "Null" | "NULL") {
                    Typed::Null
                } else if let Some(b) = core_bool(t) {
                    Typed::Bool(b)
                } else if let Some(i) = core_int(t) {
                    Typed::Int(i)
                } else if core_float(t) {
                    Typed::Float
                } else {
                    Typed::Str(t)
                }
            }
        })
    }

    pub(super) fn is_null(&self) -> bool {
        matches!(self.typed(), Some(Typed::Null))
    }

    /// "a string", "an integer (22)", "a list", … for error messages.
    pub(super) fn describe(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
            Value::Scalar { text, .. } => match self.typed() {
                Some(Typed::Null) => "null".into(),
                Some(Typed::Bool(b)) => format!("a boolean ({b})"),
                Some(Typed::Int(_)) => format!("an integer ({text})"),
                Some(Typed::Float) => format!("a floating-point number ({text})"),
                _ => format!("a string ({text:?})"),
            },
        }
    }
}

pub(super) fn core_bool(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

pub(super) fn core_int(t: &str) -> Option<i128> {
    let digits_ok = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    let saturate = |s: &str, radix: u32, neg: bool| {
        let v = i128::from_str_radix(s, radix).unwrap_or(i128::MAX);
        if neg {
            -v
        } else {
            v
        }
    };
    if let Some(h) = t.strip_prefix("0x") {
        return digits_ok(h, 16).then(|| saturate(h, 16, false));
    }
    if let Some(o) = t.strip_prefix("0o") {
        return digits_ok(o, 8).then(|| saturate(o, 8, false));
    }
    let (neg, d) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    digits_ok(d, 10).then(|| saturate(d, 10, neg))
}

pub(super) fn core_float(t: &str) -> bool {
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    if matches!(t, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exp_ok = match exp {
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
        None => true,
    };
    mantissa_ok && exp_ok
}

pub(super) fn core_tag(tag: Option<&Tag>) -> Result<Option<CoreTag>, String> {
    let Some(tag) = tag else { return Ok(None) };
    if tag.handle == "!" && tag.suffix.is_empty() {
        return Ok(Some(CoreTag::Str)); // the non-specific tag `!`
    }
    if tag.is_yaml_core_schema() {
        let t = match tag.suffix.as_str() {
            "str" => CoreTag::Str,
            "int" => CoreTag::Int,
            "bool" => CoreTag::Bool,
            "null" => CoreTag::Null,
            "float" => CoreTag::Float,
            "seq" => CoreTag::Seq,
            "map" => CoreTag::Map,
            _ => return Err(format!("unsupported YAML tag {tag}")),
        };
        return Ok(Some(t));
    }
    Err(format!("unsupported YAML tag {tag}"))
}

/// A collection being built, with what its node will need: the node
/// count when it started (its size is the difference at its end) and the
/// greatest height among its items.
pub(super) struct Frame {
    pub(super) pos: Pos,
    pub(super) anchor: usize,
    pub(super) start_nodes: usize,
    pub(super) height: usize,
    pub(super) kind: FrameKind,
}

pub(super) enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// An anchored node with its size (nodes) and height (levels; a scalar
/// is 1), which an alias adds to the document.
pub(super) struct Anchored {
    pub(super) node: Node,
    pub(super) size: usize,
    pub(super) height: usize,
}

#[derive(Default)]
pub(super) struct TreeBuilder {
    pub(super) docs: Vec<Node>,
    pub(super) root: Option<Node>,
    pub(super) stack: Vec<Frame>,
    pub(super) anchors: HashMap<usize, Anchored>,
    pub(super) nodes: usize,
}

pub(super) fn too_many_nodes(pos: Pos) -> (Pos, String) {
    (
        pos,
        format!("document too large: more than {MAX_NODES} nodes (after expanding aliases)"),
    )
}

pub(super) fn too_deep(pos: Pos, alias: bool) -> (Pos, String) {
    let why = if alias {
        " (after expanding this alias)"
    } else {
        ""
    };
    (pos, format!("nesting deeper than {MAX_DEPTH}{why}"))
}

impl TreeBuilder {
    /// Adds `node` of `height` levels, which brings `new_nodes` nodes to
    /// the document: 1 for a scalar or a collection (whose items were
    /// counted as they came), the whole subtree for an alias (checked by
    /// the caller before it was copied). `size` is the node's own size.
    pub(super) fn add(
        &mut self,
        node: Node,
        anchor: usize,
        new_nodes: usize,
        size: usize,
        height: usize,
    ) -> Result<(), (Pos, String)> {
        self.nodes += new_nodes;
        if self.nodes > MAX_NODES {
            return Err(too_many_nodes(node.pos));
        }
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    size,
                    height,
                },
            );
        }
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        frame.height = frame.height.max(height);
        match &mut frame.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map { entries, key } => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }

    /// Starts a collection, unless that nests too deep.
    pub(super) fn open(&mut self, pos: Pos, anchor: usize, kind: FrameKind) -> Result<(), (Pos, String)> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(too_deep(pos, false));
        }
        self.stack.push(Frame {
            pos,
            anchor,
            start_nodes: self.nodes,
            height: 0,
            kind,
        });
        Ok(())
    }

    pub(super) fn finish_document(&mut self) {
        if let Some(root) = self.root.take() {
            // Empty documents (e.g. a leading or trailing `---`) are skipped.
            if !root.is_null() {
                self.docs.push(root);
            }
        }
    }
}

/// The position of a YAML syntax error at saphyr's `line` and 0-based
/// `col`. saphyr-parser 0.3 counts the name and parameters of a directive
/// (`%YAML`, `%TAG`, or a reserved one) in bytes, not characters
/// (`fetch_while_is_yaml_non_space` returns a byte count, which the scanner
/// adds to the column), so on a `%` line — directives start in column 1 —
/// the column is a byte offset into the line, and an error after non-ASCII
/// text there would point past the line's end. It is converted to
/// characters, as every other position is.
pub(super) fn syntax_error_pos(text: &str, line: usize, col: usize) -> Pos {
    let column = match line_text(text, line) {
        Some(l) if l.starts_with('%') => {
            let mut byte = col.min(l.len());
            while !l.is_char_boundary(byte) {
                byte -= 1;
            }
            l[..byte].chars().count()
        }
        _ => col,
    };
    Pos::new(line, column + 1)
}

/// Line `line` (1-based) of `text` without its break; lines end at `\n`,
/// `\r\n` or a lone `\r`, as in YAML.
pub(super) fn line_text(text: &str, line: usize) -> Option<&str> {
    let mut rest = text;
    for _ in 1..line {
        let i = rest.find(['\n', '\r'])?;
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    Some(&rest[..rest.find(['\n', '\r']).unwrap_or(rest.len())])
}

/// The position of byte `offset` of `text` (rounded down to a character).
pub(super) fn pos_of_byte(text: &str, offset: usize) -> Pos {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    // Line breaks as in YAML: `\n`, `\r\n` or a lone `\r`.
    let line = 1 + before.matches('\n').count() + before.matches('\r').count()
        - before.matches("\r\n").count();
    let start = before.rfind(['\n', '\r']).map_or(0, |i| i + 1);
    Pos::new(line, before[start..].chars().count() + 1)
}

/// Parses a YAML stream into one tree per (non-empty) document. A syntax
/// error stops the whole file (nothing after it can be trusted), as does a
/// bound of the source exceeded (the `MAX_*` constants).
pub(super) fn parse_yaml(text: &str) -> Result<Vec<Node>, (Pos, String)> {
    if text.len() > MAX_SOURCE_BYTES {
        return Err((
            pos_of_byte(text, MAX_SOURCE_BYTES),
            format!("document too large: more than {MAX_SOURCE_BYTES} bytes"),
        ));
    }
    let mut parser = Parser::new_from_str(text);
    let mut b = TreeBuilder::default();
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| {
            (
                syntax_error_pos(text, e.marker().line(), e.marker().col()),
                format!("YAML syntax error: {}", e.info()),
            )
        })?;
        let pos = Pos::of(&span);
        match event {
            Event::Nothing | Event::StreamStart => {}
            Event::StreamEnd => b.finish_document(),
            Event::DocumentStart(_) => {
                b.anchors.clear();
                b.root = None;
            }
            Event::DocumentEnd => b.finish_document(),
            Event::Scalar(text, style, anchor, tag) => {
                let tag = core_tag(tag.as_deref()).map_err(|m| (pos, m))?;
                if matches!(tag, Some(CoreTag::Seq | CoreTag::Map)) {
                    return Err((pos, "a scalar cannot be tagged as a collection".into()));
                }
                let node = Node {
                    pos,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                        tag,
                    },
                };
                b.add(node, anchor, 1, 1, 1)?;
            }
            Event::SequenceStart(anchor, tag) => {
                let tag = core_tag(tag.as_deref()).map_err(|m| (pos, m))?;
                if tag.is_some_and(|t| t != CoreTag::Seq) {
                    return Err((pos, "a list cannot be tagged as a scalar or mapping".into()));
                }
                b.open(pos, anchor, FrameKind::Seq(Vec::new()))?;
            }
            Event::MappingStart(anchor, tag) => {
                let tag = core_tag(tag.as_deref()).map_err(|m| (pos, m))?;
                if tag.is_some_and(|t| t != CoreTag::Map) {
                    return Err((pos, "a mapping cannot be tagged as a scalar or list".into()));
                }
                b.open(
                    pos,
                    anchor,
                    FrameKind::Map {
                        entries: Vec::new(),
                        key: None,
                    },
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = b.stack.pop() else {
                    return Err((pos, "unbalanced YAML collection".into()));
                };
                let value = match frame.kind {
                    FrameKind::Seq(items) => Value::Seq(items),
                    FrameKind::Map { entries, .. } => Value::Map(entries),
                };
                let node = Node {
                    pos: frame.pos,
                    value,
                };
                // Its items were counted as they came.
                let size = b.nodes - frame.start_nodes + 1;
                b.add(node, frame.anchor, 1, size, frame.height + 1)?;
            }
            Event::Alias(id) => {
                let a = b
                    .anchors
                    .get(&id)
                    .ok_or_else(|| (pos, "alias to an unknown anchor".to_string()))?;
                // Checked before copying: the copy is what would be too large.
                if b.stack.len() + a.height > MAX_DEPTH {
                    return Err(too_deep(pos, true));
                }
                if b.nodes + a.size > MAX_NODES {
                    return Err(too_many_nodes(pos));
                }
                let (node, size, height) = (a.node.clone(), a.size, a.height);
                b.add(node, 0, size, size, height)?;
            }
        }
    }
    Ok(b.docs)
}
