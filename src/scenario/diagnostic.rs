//! Scenario errors that name the file, line, column and field, with the source line
//! underlined, like a compiler's.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml_edit::{Item, Value};

/// One segment of a field path: `link[0].loss` is `[Key("link"), Index(0), Key("loss")]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A field path inside the scenario document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A problem found in a scenario, before its location is resolved.
#[derive(Clone, Debug)]
pub struct Problem {
    pub path: FieldPath,
    pub message: String,
}

impl Problem {
    pub fn new(path: FieldPath, message: impl Into<String>) -> Self {
        Problem {
            path,
            message: message.into(),
        }
    }
}

/// A located problem: what a user reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
    /// The source line and a caret line under the offending span; empty when unknown.
    pub snippet: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if !self.snippet.is_empty() {
            write!(f, "\n{}", self.snippet)?;
        }
        Ok(())
    }
}

/// The text of a scenario with its parsed span tree, to turn byte offsets and field paths
/// into lines, columns and field names.
pub struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> Source<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        let doc = toml_edit::Document::parse(text).ok();
        Source { file, text, doc }
    }

    /// Line and column (1-based, in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// Locates a diagnostic for a span (or none: line 1, column 1).
    pub fn diagnostic(
        &self,
        span: Option<Range<usize>>,
        field: String,
        message: String,
    ) -> Diagnostic {
        let (line, column, snippet) = match span {
            Some(span) => {
                let (line, column) = self.line_col(span.start);
                (line, column, self.snippet(span))
            }
            None => (1, 1, String::new()),
        };
        Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            field,
            message,
            snippet,
        }
    }

    /// Locates a validation problem by its field path.
    pub fn locate(&self, problem: &Problem) -> Diagnostic {
        let span = self.span_of(&problem.path);
        self.diagnostic(span, problem.path.to_string(), problem.message.clone())
    }

    /// Locates a deserialization error by the byte span toml reported.
    pub fn locate_toml_error(&self, err: &toml::de::Error) -> Diagnostic {
        let span = err.span();
        let mut message = plain_types(err.message().trim());
        let field = if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            // The span is the table that lacks the field, not a field in it.
            let table = span
                .as_ref()
                .and_then(|s| self.path_at(s.start))
                .filter(|_| span.as_ref().is_some_and(|s| s.start > 0));
            match table {
                Some(t) if !t.0.is_empty() && self.is_table(&t) => format!("{t}.{name}"),
                _ => name.to_string(),
            }
        } else {
            span.as_ref()
                .and_then(|s| self.path_at(s.start))
                .map(|p| p.to_string())
                .unwrap_or_default()
        };
        if message == "duplicate key"
            && let Some(key) = span.as_ref().and_then(|s| self.text.get(s.clone()))
        {
            message = format!(
                "duplicate key `{}`: a key may appear once in a table",
                key.trim()
            );
        }
        if message.contains("invalid type: map, expected a sequence") && !field.is_empty() {
            message = format!(
                "{message}: write [[{field}]] for each entry (an array of tables), not [{field}]"
            );
        }
        self.diagnostic(span, field, message)
    }

    fn is_table(&self, path: &FieldPath) -> bool {
        let Some(doc) = self.doc.as_ref() else {
            return false;
        };
        let mut item = doc.as_item();
        for seg in &path.0 {
            let next = match seg {
                Seg::Key(k) => item.get(k.as_str()),
                Seg::Index(i) => item.get(*i),
            };
            match next {
                Some(n) => item = n,
                None => return false,
            }
        }
        item.is_table_like()
    }

    /// The span of the deepest item along `path` that exists in the document.
    fn span_of(&self, path: &FieldPath) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut item = doc.as_item();
        let mut best = None;
        for seg in &path.0 {
            let next = match seg {
                Seg::Key(k) => {
                    if let Some(t) = item.as_table_like()
                        && let Some((key, _)) = t.get_key_value(k)
                    {
                        best = key.span().or(best);
                    }
                    item.get(k.as_str())
                }
                Seg::Index(i) => item.get(*i),
            };
            match next {
                Some(n) => {
                    item = n;
                    best = n.span().or(best);
                }
                None => break,
            }
        }
        best
    }

    /// The field path of the innermost key or value whose span holds `offset`.
    fn path_at(&self, offset: usize) -> Option<FieldPath> {
        let doc = self.doc.as_ref()?;
        let mut found = None;
        walk_item(doc.as_item(), &FieldPath::root(), offset, &mut found);
        found.map(|(p, _)| p)
    }

    fn snippet(&self, span: Range<usize>) -> String {
        let (line, column) = self.line_col(span.start);
        let Some(text) = self.text.lines().nth(line - 1) else {
            return String::new();
        };
        let width = line.to_string().len();
        let underline_len = {
            let end = floor_char_boundary(self.text, span.end.min(self.text.len()));
            let start = floor_char_boundary(self.text, span.start);
            let spanned = &self.text[start..end.max(start)];
            let first_line = spanned.lines().next().unwrap_or("");
            first_line
                .chars()
                .count()
                .clamp(1, text.chars().count().saturating_sub(column - 1).max(1))
        };
        format!(
            "{:width$} |\n{line} | {text}\n{:width$} | {}{}",
            "",
            "",
            " ".repeat(column - 1),
            "^".repeat(underline_len),
        )
    }
}

/// Replaces Rust type names in serde's messages with what a user may write.
fn plain_types(message: &str) -> String {
    const TYPES: &[(&str, &str)] = &[
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "expected u64",
            "expected a whole number from 0 to 18446744073709551615",
        ),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a string", "expected a quoted string"),
    ];
    let mut out = message.to_string();
    for (rust, plain) in TYPES {
        out = out.replace(rust, plain);
    }
    out
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn contains(span: Option<Range<usize>>, offset: usize) -> Option<usize> {
    span.filter(|s| s.start <= offset && offset < s.end.max(s.start + 1))
        .map(|s| s.len())
}

fn consider(found: &mut Option<(FieldPath, usize)>, path: FieldPath, len: usize) {
    if found.as_ref().is_none_or(|(_, best)| len <= *best) {
        *found = Some((path, len));
    }
}

fn walk_item(item: &Item, path: &FieldPath, offset: usize, found: &mut Option<(FieldPath, usize)>) {
    match item {
        Item::Table(t) => {
            for (k, child) in t.iter() {
                let p = path.key(k);
                if let Item::Table(_) = child
                    && let Some(len) = contains(child.span(), offset)
                {
                    consider(found, p.clone(), len);
                }
                if let Some(len) = contains(t.key(k).and_then(|k| k.span()), offset) {
                    consider(found, p.clone(), len);
                }
                walk_item(child, &p, offset, found);
            }
        }
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                let p = path.index(i);
                if let Some(len) = contains(t.span(), offset) {
                    consider(found, p.clone(), len);
                }
                for (k, child) in t.iter() {
                    let pk = p.key(k);
                    if let Some(len) = contains(t.key(k).and_then(|k| k.span()), offset) {
                        consider(found, pk.clone(), len);
                    }
                    walk_item(child, &pk, offset, found);
                }
            }
        }
        Item::Value(v) => walk_value(v, path, offset, found),
        Item::None => {}
    }
}

fn walk_value(v: &Value, path: &FieldPath, offset: usize, found: &mut Option<(FieldPath, usize)>) {
    if let Some(len) = contains(v.span(), offset) {
        consider(found, path.clone(), len);
    }
    match v {
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                walk_value(child, &path.index(i), offset, found);
            }
        }
        Value::InlineTable(t) => {
            for (k, child) in t.iter() {
                let p = path.key(k);
                if let Some(len) = contains(t.key(k).and_then(|k| k.span()), offset) {
                    consider(found, p.clone(), len);
                }
                walk_value(child, &p, offset, found);
            }
        }
        _ => {}
    }
}
