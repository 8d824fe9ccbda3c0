//! Scenario errors that name the file, line, column and field, with the source line
//! underlined, like a compiler's.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

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

/// The text of a scenario, parsed once: the tree it is deserialized from also turns byte
/// offsets and field paths into lines, columns and field names.
pub struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    doc: Result<Spanned<DeTable<'a>>, toml::de::Error>,
}

impl<'a> Source<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Source {
            file,
            text,
            doc: DeTable::parse(text),
        }
    }

    /// Deserializes the parsed document (without parsing the text again), or gives the
    /// parse error.
    pub fn deserialize<T: serde::Deserialize<'a>>(&self) -> Result<T, toml::de::Error> {
        match &self.doc {
            Ok(doc) => T::deserialize(toml::de::Deserializer::from(doc.clone())),
            Err(e) => Err(e.clone()),
        }
    }

    fn root(&self) -> Option<Walk<'_, 'a>> {
        self.doc.as_ref().ok().map(|d| Walk::Root(d.get_ref()))
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
        let Some(mut at) = self.root() else {
            return false;
        };
        for seg in &path.0 {
            match at.child(seg) {
                Some((_, v)) => at = Walk::Value(v),
                None => return false,
            }
        }
        at.table().is_some()
    }

    /// The span of the deepest item along `path` that exists in the document.
    fn span_of(&self, path: &FieldPath) -> Option<Range<usize>> {
        let mut at = self.root()?;
        let mut best = None;
        for seg in &path.0 {
            let Some((key, v)) = at.child(seg) else {
                break;
            };
            best = Some(v.span()).or(key).or(best);
            at = Walk::Value(v);
        }
        best
    }

    /// The field path of the innermost key or value whose span holds `offset`.
    fn path_at(&self, offset: usize) -> Option<FieldPath> {
        let doc = self.doc.as_ref().ok()?;
        let mut found = None;
        walk_table(doc.get_ref(), &FieldPath::root(), offset, &mut found);
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

/// Where a walk through the document stands: the root table or a value in it.
#[derive(Clone, Copy)]
enum Walk<'t, 'a> {
    Root(&'t DeTable<'a>),
    Value(&'t Spanned<DeValue<'a>>),
}

impl<'t, 'a> Walk<'t, 'a> {
    fn table(self) -> Option<&'t DeTable<'a>> {
        match self {
            Walk::Root(t) => Some(t),
            Walk::Value(v) => v.get_ref().as_table(),
        }
    }

    /// The child at `seg`, with the span of its key when it has one.
    fn child(self, seg: &Seg) -> Option<(Option<Range<usize>>, &'t Spanned<DeValue<'a>>)> {
        match (seg, self) {
            (Seg::Key(k), _) => self
                .table()?
                .get_key_value(k.as_str())
                .map(|(key, v)| (Some(key.span()), v)),
            (Seg::Index(i), Walk::Value(v)) => v.get_ref().as_array()?.get(*i).map(|v| (None, v)),
            (Seg::Index(_), Walk::Root(_)) => None,
        }
    }
}

/// Whether `v` is an array of tables (`[[node]]`): its span is its first table's header.
fn array_of_tables(v: &Spanned<DeValue<'_>>) -> bool {
    v.get_ref().as_array().is_some_and(|a| {
        a.first()
            .is_some_and(|t| t.get_ref().is_table() && t.span() == v.span())
    })
}

/// Considers every key and value of a table (not the table itself).
fn walk_table(
    t: &DeTable<'_>,
    path: &FieldPath,
    offset: usize,
    found: &mut Option<(FieldPath, usize)>,
) {
    for (k, child) in t.iter() {
        let p = path.key(k.get_ref());
        if let Some(len) = contains(Some(k.span()), offset) {
            consider(found, p.clone(), len);
        }
        walk_value(child, &p, offset, found);
    }
}

/// Considers a value and everything in it. An array of tables is no value of its own:
/// only its tables are.
fn walk_value(
    v: &Spanned<DeValue<'_>>,
    path: &FieldPath,
    offset: usize,
    found: &mut Option<(FieldPath, usize)>,
) {
    if !array_of_tables(v)
        && let Some(len) = contains(Some(v.span()), offset)
    {
        consider(found, path.clone(), len);
    }
    match v.get_ref() {
        DeValue::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                walk_value(child, &path.index(i), offset, found);
            }
        }
        DeValue::Table(t) => walk_table(t, path, offset, found),
        _ => {}
    }
}
