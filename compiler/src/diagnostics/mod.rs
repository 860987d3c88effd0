//! Diagnostics: what went wrong in the user's program, as plain data.
//!
//! Rules:
//! - Every user-facing problem is a [`Diag`] with a stable [`Code`], a message that names what was
//!   expected and what was found, at least one labelled span when a location is known, and a help
//!   line when the fix is obvious.
//! - Compiler phases only *collect* `Diag`s (in a [`Diags`] sink) and keep going where they can, so
//!   one run reports every independent error.
//! - Turning diagnostics into text happens in exactly one place, [`render`], which builds miette
//!   reports. No other module knows about miette.
//! - Internal compiler errors are not diagnostics: they are bugs and are reported as such.

mod codes;
pub mod render;

pub use codes::Code;

use crate::source::Span;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// A labelled source range inside a diagnostic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub message: String,
    /// The primary label marks where the problem is; secondary ones give context (a declaration).
    pub primary: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diag {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    pub labels: Vec<Label>,
    pub help: Option<String>,
    /// Extra lines of context, such as the chain of layer instances that led here.
    pub notes: Vec<String>,
}

impl Diag {
    pub fn error(code: Code, message: impl Into<String>) -> Diag {
        Diag {
            severity: Severity::Error,
            code,
            message: message.into(),
            labels: Vec::new(),
            help: None,
            notes: Vec::new(),
        }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Diag {
        Diag { severity: Severity::Warning, ..Diag::error(code, message) }
    }

    /// Adds the primary label.
    pub fn at(mut self, span: Span, message: impl Into<String>) -> Diag {
        self.labels.push(Label { span, message: message.into(), primary: true });
        self
    }

    /// Adds a secondary label (context, such as a declaration).
    pub fn also(mut self, span: Span, message: impl Into<String>) -> Diag {
        self.labels.push(Label { span, message: message.into(), primary: false });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diag {
        self.help = Some(help.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diag {
        self.notes.push(note.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The span of the primary label, if any.
    pub fn primary_span(&self) -> Option<Span> {
        self.labels.iter().find(|l| l.primary).or(self.labels.first()).map(|l| l.span)
    }
}

/// Most diagnostics reported for one compilation; past this, one summary line is added.
pub const MAX_REPORTED: usize = 100;

/// A sink that collects diagnostics in order, deduplicating exact repeats and capping the count.
#[derive(Debug, Default)]
pub struct Diags {
    list: Vec<Diag>,
    dropped: usize,
}

impl Diags {
    pub fn new() -> Diags {
        Diags::default()
    }

    pub fn push(&mut self, diag: Diag) {
        if self.list.len() >= MAX_REPORTED {
            self.dropped += 1;
            return;
        }
        if !self.list.contains(&diag) {
            self.list.push(diag);
        }
    }

    pub fn extend(&mut self, diags: impl IntoIterator<Item = Diag>) {
        for d in diags {
            self.push(d);
        }
    }

    pub fn has_errors(&self) -> bool {
        self.dropped > 0 || self.list.iter().any(Diag::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.list.iter().filter(|d| d.is_error()).count() + self.dropped
    }

    pub fn warning_count(&self) -> usize {
        self.list.iter().filter(|d| !d.is_error()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty() && self.dropped == 0
    }

    /// Counts diagnostics dropped elsewhere (when a sink is rebuilt).
    pub fn add_dropped(&mut self, n: usize) {
        self.dropped += n;
    }

    /// Diagnostics that were not kept because [`MAX_REPORTED`] was reached.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diag> {
        self.list.iter()
    }

    pub fn into_vec(self) -> Vec<Diag> {
        self.list
    }
}

/// `1234567` -> `1,234,567`: how counts are shown to users.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
