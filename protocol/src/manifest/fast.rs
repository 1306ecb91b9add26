//! A line scanner for the block-style YAML that Helm, Kustomize and kubectl render, reading only object
//! identity, many times faster than a general YAML parser.
//!
//! It is a fast path, never the judge: it answers only when it is sure, and says [`Defer`] for anything
//! outside the subset it understands — anchors, aliases, tags, multi-line flow collections or quoted
//! scalars, plain scalars continued on a second line, non-ASCII text, tabs outside block scalars,
//! document-end markers, directives, explicit keys, keys that are not plain identifiers or clean quoted
//! strings, scalars that could resolve to a non-finite float, anything that might be an error. Then the
//! caller runs the full parser, whose answer (and error message) is the real one. Every
//! refusal is therefore the full parser's; the scanner only ever says "these objects", for input the
//! full parser reads as exactly those objects. The property tests in `super::tests` hold it to that.
//!
//! Within the subset it checks what the full parser checks: indentation structure, one-line flow
//! collections and quoted scalars (with their escapes), duplicate keys in every mapping, and the
//! budgets (depth, nodes, documents) with a margin.

use std::collections::HashSet;

use super::{Field, Identified, ManifestLimits, Meta, identity};

/// The scanner is not sure; the full parser must decide.
#[derive(Debug)]
pub(super) struct Defer;

type Res<T> = Result<T, Defer>;

/// The identities of every object in `text`, or [`Defer`] when the full parser must read it.
pub(super) fn identify(text: &str, limits: &ManifestLimits) -> Res<Vec<Identified>> {
    // Printable ASCII, newlines and tabs only: no control characters, no CR, no BOM, no non-ASCII
    // whose YAML treatment (line separators, C1 controls) would need care.
    // No early exit, so the loop vectorises.
    let odd = text.bytes().fold(false, |odd, b| {
        odd | (b >= 0x7f) | ((b < 0x20) & (b != b'\n') & (b != b'\t'))
    });
    if odd {
        return Err(Defer);
    }
    let mut scan = Scan {
        lines: text.split('\n').collect(),
        tabs: text.contains('\t'),
        at: 0,
        peeked: None,
        virt: None,
        nodes: 0,
        // Margins: the full parser counts nodes, events and depth its own way.
        max_nodes: limits.max_nodes / 4,
        max_depth: limits.max_depth.saturating_sub(2),
    };
    let mut out = Vec::new();
    let mut documents = 1;
    loop {
        match scan.peek()? {
            None if scan.at >= scan.lines.len() => break,
            None => {
                // A `---` line: a new document.
                scan.at += 1;
                documents += 1;
                if documents >= limits.max_documents {
                    return Err(Defer);
                }
            }
            Some((0, text)) if !is_dash(text) => {
                let mut found = Found::default();
                scan.map(0, 1, Level::Top, &mut found)?;
                out.push(found.identity(out.len() + 1)?);
            }
            Some(_) => return Err(Defer),
        }
    }
    Ok(out)
}

/// Which identifying keys a mapping holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    Metadata,
    Other,
}

/// The identifying fields found in one document.
#[derive(Default)]
struct Found<'a> {
    api_version: Option<&'a str>,
    kind: Option<&'a str>,
    metadata: bool,
    name: Option<&'a str>,
    namespace: Option<&'a str>,
}

impl Found<'_> {
    fn identity(&self, document: usize) -> Res<Identified> {
        let (Some(api_version), Some(kind), true, Some(name)) =
            (self.api_version, self.kind, self.metadata, self.name)
        else {
            return Err(Defer);
        };
        let namespace = self
            .namespace
            .map_or(Field::Missing, |s| Field::Str(s.into()));
        identity(
            document,
            Field::Str(api_version.into()),
            Field::Str(kind.into()),
            Meta::Mapping {
                name: Field::Str(name.into()),
                namespace,
            },
        )
        .map_err(|_| Defer)
    }
}

/// A value, as far as the scanner cares: a string it may use as an identifying field, or anything else.
enum Value<'a> {
    Str(&'a str),
    Other,
}

struct Scan<'a> {
    lines: Vec<&'a str>,
    /// Whether any line has a tab: most files have none, and need no line checked for one.
    tabs: bool,
    /// The next physical line.
    at: usize,
    /// The last answer of `peek` from the physical lines: (`at` then, indent, text).
    peeked: Option<(usize, usize, &'a str)>,
    /// The rest of the current line after a sequence's `- `, read as a line of its own at that column.
    virt: Option<(usize, &'a str)>,
    nodes: usize,
    max_nodes: usize,
    max_depth: usize,
}

impl<'a> Scan<'a> {
    /// The next line with content, as (indent, text), without consuming it. `None` at the end of the
    /// text or at a `---` line (which stays unconsumed).
    fn peek(&mut self) -> Res<Option<(usize, &'a str)>> {
        if let Some(virt) = self.virt {
            return Ok(Some(virt));
        }
        if let Some((at, indent, text)) = self.peeked
            && at == self.at
        {
            return Ok(Some((indent, text)));
        }
        while let Some(&line) = self.lines.get(self.at) {
            if line.starts_with("---") || line.starts_with("...") {
                let rest = line.strip_prefix("---").ok_or(Defer)?;
                let rest = rest.trim_start_matches(' ');
                if rest.is_empty() || (rest.starts_with('#') && rest.len() < line.len() - 3) {
                    return Ok(None);
                }
                return Err(Defer);
            }
            let text = line.trim_start_matches(' ');
            if text.is_empty() || text.starts_with('#') {
                self.at += 1;
                continue;
            }
            if self.tabs && text.contains('\t') {
                return Err(Defer);
            }
            let indent = line.len() - text.len();
            self.peeked = Some((self.at, indent, text));
            return Ok(Some((indent, text)));
        }
        Ok(None)
    }

    /// Reads the rest of the current line, from `column` on, as a line of its own.
    fn descend(&mut self, column: usize, rest: &'a str) {
        if self.virt.is_none() {
            self.at += 1;
        }
        self.virt = Some((column, rest));
    }

    fn consume(&mut self) {
        if self.virt.take().is_none() {
            self.at += 1;
        }
    }

    fn node(&mut self, depth: usize) -> Res<()> {
        self.nodes += 1;
        if self.nodes > self.max_nodes || depth > self.max_depth {
            return Err(Defer);
        }
        Ok(())
    }

    /// A block mapping whose keys are at column `indent`; its first line is the current one.
    fn map(&mut self, indent: usize, depth: usize, level: Level, found: &mut Found<'a>) -> Res<()> {
        self.node(depth)?;
        let mut keys = Keys::default();
        while let Some((at, text)) = self.peek()? {
            if at < indent {
                break;
            }
            if at > indent {
                return Err(Defer);
            }
            let (key, rest) = split_key(text)?.ok_or(Defer)?;
            keys.insert(key)?;
            self.node(depth + 1)?;
            let wanted = match (level, key) {
                (Level::Other, _) => None,
                (Level::Top, "apiVersion") => Some(&mut found.api_version),
                (Level::Top, "kind") => Some(&mut found.kind),
                (Level::Metadata, "name") => Some(&mut found.name),
                (Level::Metadata, "namespace") => Some(&mut found.namespace),
                _ => None,
            };
            if let Some(slot) = wanted {
                match self.inline(indent, rest, depth + 1)? {
                    Some(Value::Str(s)) => *slot = Some(s),
                    _ => return Err(Defer),
                }
                continue;
            }
            let child = if level == Level::Top && key == "metadata" {
                found.metadata = true;
                Level::Metadata
            } else {
                Level::Other
            };
            if self.inline(indent, rest, depth + 1)?.is_none() {
                // The value is on the lines below (or empty); `metadata` must be a block mapping.
                self.consume();
                let nested = self.nested(indent, true, depth + 1, child, found)?;
                if child == Level::Metadata && !nested {
                    return Err(Defer);
                }
            } else if child == Level::Metadata {
                return Err(Defer);
            }
        }
        Ok(())
    }

    /// A block sequence whose dashes are at column `indent`; its first line is the current one.
    fn seq(&mut self, indent: usize, depth: usize) -> Res<()> {
        self.node(depth)?;
        while let Some((at, text)) = self.peek()? {
            if at != indent || !is_dash(text) {
                // The caller decides whether a line at this column may follow the sequence.
                break;
            }
            let rest = text[1..].trim_start_matches(' ');
            let column = at + text.len() - rest.len();
            if rest.is_empty() || rest.starts_with('#') {
                self.consume();
                self.nested(
                    indent,
                    false,
                    depth + 1,
                    Level::Other,
                    &mut Found::default(),
                )?;
            } else if is_dash(rest) {
                self.descend(column, rest);
                self.seq(column, depth + 1)?;
            } else if split_key(rest)?.is_some() {
                self.descend(column, rest);
                self.map(column, depth + 1, Level::Other, &mut Found::default())?;
            } else if self.inline(indent, rest, depth + 1)?.is_none() {
                return Err(Defer);
            }
            if let Some((at, _)) = self.peek()?
                && at > indent
            {
                return Err(Defer);
            }
        }
        Ok(())
    }

    /// The block node on the lines after a `key:` or `-` at column `parent` with nothing after it; `true`
    /// if it is a mapping. A sequence may sit at the key's own column (`same_column_seq`).
    fn nested(
        &mut self,
        parent: usize,
        same_column_seq: bool,
        depth: usize,
        level: Level,
        found: &mut Found<'a>,
    ) -> Res<bool> {
        let Some((at, text)) = self.peek()? else {
            return Ok(false);
        };
        if is_dash(text) && (at > parent || (at == parent && same_column_seq)) {
            self.seq(at, depth)?;
            return Ok(false);
        }
        if at <= parent {
            // An empty value.
            return Ok(false);
        }
        if split_key(text)?.is_none() {
            // A scalar on the next line, or a multi-line one.
            return Err(Defer);
        }
        self.map(at, depth, level, found)?;
        Ok(true)
    }

    /// A value on the current line after `key: ` or `- ` (`rest`, possibly empty), in a node at column
    /// `parent`. `None` when there is nothing but a comment: the value is on the lines below. Consumes
    /// the line otherwise, and checks that the next line does not continue the value.
    fn inline(&mut self, parent: usize, rest: &'a str, depth: usize) -> Res<Option<Value<'a>>> {
        if rest.is_empty() || rest.starts_with('#') {
            return Ok(None);
        }
        self.node(depth)?;
        let first = rest.as_bytes()[0];
        let (value, after) = match first {
            b'|' | b'>' => {
                self.block_scalar(parent, &rest[1..])?;
                return Ok(Some(Value::Other));
            }
            b'[' | b'{' => {
                let end = self.flow(rest, 0, depth)?;
                (Value::Other, &rest[end..])
            }
            b'"' | b'\'' => {
                let (end, clean) = quoted(rest)?;
                (clean.map_or(Value::Other, Value::Str), &rest[end..])
            }
            _ => {
                let (plain, after) = cut_comment(rest);
                check_plain(plain)?;
                if key_colon(plain).is_some() {
                    return Err(Defer);
                }
                let value = if is_identifier_string(plain) {
                    Value::Str(plain)
                } else {
                    Value::Other
                };
                (value, after)
            }
        };
        only_comment(after)?;
        self.consume();
        if let Some((at, _)) = self.peek()?
            && at > parent
        {
            return Err(Defer);
        }
        Ok(Some(value))
    }

    /// A literal or folded block scalar in a node at column `parent`; `header` is what follows `|` or `>`.
    fn block_scalar(&mut self, parent: usize, header: &str) -> Res<()> {
        let header = header.strip_prefix(['-', '+']).unwrap_or(header);
        only_comment(header)?;
        self.consume();
        let mut content = None;
        while let Some(&line) = self.lines.get(self.at) {
            let text = line.trim_start_matches(' ');
            let indent = line.len() - text.len();
            match content {
                None if line.is_empty() => {}
                // A leading all-space line longer than the first content line is an error; let the
                // parser say so.
                None if text.is_empty() => return Err(Defer),
                None if indent <= parent => break,
                None => content = Some(indent),
                Some(_) if text.is_empty() => {}
                Some(ci) if indent >= ci => {}
                Some(_) => break,
            }
            if content.is_none_or(|ci| indent < ci) && text.starts_with('\t') {
                return Err(Defer);
            }
            self.at += 1;
        }
        if let Some(&line) = self.lines.get(self.at)
            && line.trim_start_matches(' ').starts_with('\t')
        {
            return Err(Defer);
        }
        Ok(())
    }

    /// A flow collection wholly on this line, starting at `s[pos]`; returns the position after it.
    fn flow(&mut self, s: &'a str, pos: usize, depth: usize) -> Res<usize> {
        self.node(depth)?;
        let bytes = s.as_bytes();
        let (close, is_map) = match bytes[pos] {
            b'[' => (b']', false),
            _ => (b'}', true),
        };
        let mut pos = skip_spaces(s, pos + 1);
        if bytes.get(pos) == Some(&close) {
            return Ok(pos + 1);
        }
        let mut keys = Keys::default();
        loop {
            if is_map {
                let (end, key) = self.flow_scalar(s, pos, depth + 1)?;
                let key = key.filter(|k| is_key(k)).ok_or(Defer)?;
                keys.insert(key)?;
                // `key: value`; a key without a value (null) is left to the parser.
                if bytes.get(end) != Some(&b':') || bytes.get(end + 1) != Some(&b' ') {
                    return Err(Defer);
                }
                pos = skip_spaces(s, end + 1);
            }
            pos = match bytes.get(pos) {
                Some(b'[' | b'{') => self.flow(s, pos, depth + 1)?,
                Some(_) => self.flow_scalar(s, pos, depth + 1)?.0,
                None => return Err(Defer),
            };
            pos = skip_spaces(s, pos);
            match bytes.get(pos) {
                Some(b',') => {
                    pos = skip_spaces(s, pos + 1);
                    // An empty entry or a trailing comma.
                    if matches!(bytes.get(pos), Some(b',' | b']' | b'}') | None) {
                        return Err(Defer);
                    }
                }
                Some(&c) if c == close => return Ok(pos + 1),
                _ => return Err(Defer),
            }
        }
    }

    /// A scalar inside a flow collection at `s[pos]`: (position after it and its trailing spaces, its
    /// text if it is a clean string).
    fn flow_scalar(
        &mut self,
        s: &'a str,
        pos: usize,
        depth: usize,
    ) -> Res<(usize, Option<&'a str>)> {
        self.node(depth)?;
        let rest = &s[pos..];
        if rest.starts_with(['"', '\'']) {
            let (end, clean) = quoted(rest)?;
            return Ok((skip_spaces(s, pos + end), clean));
        }
        let len = rest
            .find([',', '[', ']', '{', '}', ':', '#'])
            .unwrap_or(rest.len());
        if rest.as_bytes().get(len) == Some(&b'#') {
            return Err(Defer);
        }
        let plain = rest[..len].trim_end_matches(' ');
        check_plain(plain)?;
        Ok((skip_spaces(s, pos + len), Some(plain)))
    }
}

/// The keys of one mapping, refusing (deferring on) a repeated one. Most mappings have a handful of
/// keys, searched in a list; a large one (a ConfigMap's data) moves to a hash set.
#[derive(Default)]
struct Keys<'a> {
    few: Vec<&'a str>,
    many: HashSet<&'a str>,
}

impl<'a> Keys<'a> {
    const FEW: usize = 16;

    fn insert(&mut self, key: &'a str) -> Res<()> {
        let fresh = if self.few.len() < Self::FEW {
            let fresh = !self.few.contains(&key);
            self.few.push(key);
            fresh
        } else {
            if self.many.is_empty() {
                self.many.extend(self.few.iter().copied());
            }
            self.many.insert(key)
        };
        if fresh { Ok(()) } else { Err(Defer) }
    }
}

fn is_dash(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

fn skip_spaces(s: &str, pos: usize) -> usize {
    pos + s[pos..].len() - s[pos..].trim_start_matches(' ').len()
}

/// Splits a plain scalar from a trailing comment: (scalar, rest from the comment on).
fn cut_comment(s: &str) -> (&str, &str) {
    let end = s
        .match_indices('#')
        .map(|(i, _)| i)
        .find(|&i| i > 0 && s.as_bytes()[i - 1] == b' ')
        .map_or(s.len(), |i| i - 1);
    (s[..end].trim_end_matches(' '), &s[end..])
}

/// Only spaces, then optionally a comment after at least one space.
fn only_comment(after: &str) -> Res<()> {
    let rest = after.trim_start_matches(' ');
    if rest.is_empty() || (rest.starts_with('#') && rest.len() < after.len()) {
        Ok(())
    } else {
        Err(Defer)
    }
}

/// `key: rest` or `key:` on a line of a block mapping; `None` if the line has no `: ` at all (a scalar).
fn split_key(text: &str) -> Res<Option<(&str, &str)>> {
    let (key, after) = if text.starts_with(['"', '\'']) {
        let (end, clean) = quoted(text)?;
        if !text[end..].starts_with(':') {
            // A quoted scalar, or something odder.
            return if text[end..].trim_start_matches(' ').starts_with(':') {
                Err(Defer)
            } else {
                Ok(None)
            };
        }
        (clean.ok_or(Defer)?, &text[end + 1..])
    } else {
        let Some(colon) = key_colon(text) else {
            return Ok(None);
        };
        let key = text[..colon].trim_end_matches(' ');
        if !is_key(key) {
            return Err(Defer);
        }
        (key, &text[colon + 1..])
    };
    if !(after.is_empty() || after.starts_with(' ')) {
        return Err(Defer);
    }
    Ok(Some((key, after.trim_start_matches(' '))))
}

/// The first `:` followed by a space or the end: where a plain key ends.
fn key_colon(text: &str) -> Option<usize> {
    text.match_indices(':')
        .map(|(i, _)| i)
        .find(|&i| matches!(text.as_bytes().get(i + 1), None | Some(b' ')))
}

/// A plain mapping key the scanner accepts: an identifier of letters, digits and `._/-`, starting with a
/// letter or `_`, that no YAML schema reads as a boolean or null.
fn is_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= 1024
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'/' | b'-'))
        && !is_special_word(key)
}

/// A plain scalar that every YAML reading resolves to this very string: it starts with a letter and is
/// not a boolean, null or float word.
fn is_identifier_string(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) && !is_special_word(s)
}

fn is_special_word(s: &str) -> bool {
    s.len() <= 8
        && [
            "y", "n", "yes", "no", "on", "off", "true", "false", "null", "inf", "infinity", "nan",
        ]
        .iter()
        .any(|w| s.eq_ignore_ascii_case(w))
}

/// A one-line plain scalar the parser reads without error: no indicator first, and nothing that could
/// resolve to a non-finite float (which the parser refuses).
fn check_plain(s: &str) -> Res<()> {
    let b = s.as_bytes();
    let Some(&first) = b.first() else {
        return Err(Defer);
    };
    if b"?:,[]{}#&*!|>'\"%@`".contains(&first)
        || (first == b'-' && matches!(b.get(1), None | Some(b' ')))
    {
        return Err(Defer);
    }
    let unsigned = s.trim_start_matches(['+', '-']);
    let numeric = unsigned.as_bytes().first().is_some_and(u8::is_ascii_digit);
    if unsigned.starts_with('.')
        || (numeric && (unsigned.contains(['e', 'E']) || unsigned.len() > 300))
        || is_special_word(unsigned)
    {
        return Err(Defer);
    }
    Ok(())
}

/// A quoted scalar at the start of `s`, closed on this line: (position after the closing quote, its
/// content if it has no escapes).
fn quoted(s: &str) -> Res<(usize, Option<&str>)> {
    let b = s.as_bytes();
    let quote = b[0];
    let mut i = 1;
    let mut clean = true;
    while i < b.len() {
        match b[i] {
            c if c == quote && quote == b'\'' && b.get(i + 1) == Some(&b'\'') => {
                clean = false;
                i += 2;
            }
            c if c == quote => {
                return Ok((i + 1, clean.then(|| &s[1..i])));
            }
            b'\\' if quote == b'"' => {
                clean = false;
                i += 1 + escape_len(&b[i + 1..])?;
            }
            _ => i += 1,
        }
    }
    Err(Defer)
}

/// The length of a double-quoted escape after its backslash, for the escapes the scanner accepts.
fn escape_len(b: &[u8]) -> Res<usize> {
    let hex = |n: usize| -> Res<u32> {
        let digits = b.get(1..=n).ok_or(Defer)?;
        let text = std::str::from_utf8(digits).map_err(|_| Defer)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(Defer);
        }
        u32::from_str_radix(text, 16).map_err(|_| Defer)
    };
    match b.first() {
        Some(
            b'\\' | b'"' | b'/' | b'n' | b't' | b'r' | b'0' | b'a' | b'b' | b'e' | b'f' | b'v',
        ) => Ok(1),
        Some(b'x') => hex(2).map(|_| 3),
        Some(b'u') => match hex(4)? {
            0xd800..=0xdfff => Err(Defer),
            _ => Ok(5),
        },
        _ => Err(Defer),
    }
}
