//! Source files and spans.
//!
//! Rules:
//! - Every file the compiler reads (user files and embedded stdlib files) is registered once in a
//!   [`SourceMap`] and gets a [`FileId`]; nothing else holds source text.
//! - A [`Span`] is a byte range inside one file. Spans are plain data, so AST nodes and
//!   diagnostics can carry them freely; only the diagnostics renderer turns them into text.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A byte range `[lo, hi)` inside one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub lo: u32,
    pub hi: u32,
}

impl Span {
    pub fn new(file: FileId, lo: usize, hi: usize) -> Span {
        Span { file, lo: lo as u32, hi: hi as u32 }
    }

    /// The smallest span covering both `self` and `other` (same file).
    pub fn to(self, other: Span) -> Span {
        debug_assert_eq!(self.file, other.file);
        Span { file: self.file, lo: self.lo.min(other.lo), hi: self.hi.max(other.hi) }
    }

    pub fn len(self) -> usize {
        (self.hi - self.lo) as usize
    }

    pub fn is_empty(self) -> bool {
        self.hi == self.lo
    }
}

/// Where a file came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A file on disk (the canonical path, used for import resolution and cycle detection).
    Disk(PathBuf),
    /// A standard-library module embedded in the compiler, e.g. `std::nn`.
    Std(String),
    /// Text handed to the compiler directly (tests, fuzzing, API users).
    Memory,
}

#[derive(Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics (a path as the user wrote it, or `<std>/nn.tri`).
    pub name: String,
    pub origin: Origin,
    pub text: Arc<str>,
}

/// All files of one compilation.
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, name: impl Into<String>, origin: Origin, text: impl Into<Arc<str>>) -> FileId {
        let id = FileId(self.files.len() as u32);
        self.files.push(SourceFile { name: name.into(), origin, text: text.into() });
        id
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }

    pub fn find_disk(&self, path: &Path) -> Option<FileId> {
        self.files().find(|(_, f)| matches!(&f.origin, Origin::Disk(p) if p == path)).map(|(id, _)| id)
    }

    pub fn find_std(&self, module: &str) -> Option<FileId> {
        self.files().find(|(_, f)| matches!(&f.origin, Origin::Std(m) if m == module)).map(|(id, _)| id)
    }

    /// The text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        let text = &self.get(span.file).text;
        text.get(span.lo as usize..span.hi as usize).unwrap_or("")
    }
}
