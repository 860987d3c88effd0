//! The one boundary where diagnostics become miette reports and text.
//!
//! Labels in the primary label's file are shown together; labels in other files (a declaration
//! in an imported stdlib module, say) become related reports with their own source snippet.

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, ReportHandler, SourceSpan};

use super::{Diag, Severity};
use crate::source::{FileId, SourceMap};

/// A diagnostic made ready for miette: owns its source so it can outlive the compilation.
#[derive(Debug)]
pub struct Report {
    message: String,
    code: Option<String>,
    severity: miette::Severity,
    source: Option<NamedSource<Arc<str>>>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
    related: Vec<Report>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Report {}

impl miette::Diagnostic for Report {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.code.as_ref().map(|c| Box::new(c) as Box<dyn fmt::Display>)
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() { None } else { Some(Box::new(self.labels.iter().cloned())) }
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(self.related.iter().map(|r| r as &dyn miette::Diagnostic)))
        }
    }
}

fn named_source(sources: &SourceMap, file: FileId) -> NamedSource<Arc<str>> {
    let f = sources.get(file);
    NamedSource::new(f.name.clone(), f.text.clone())
}

fn labeled(l: &super::Label, text_len: usize) -> LabeledSpan {
    // Clamp so a span at end-of-file still renders.
    let lo = (l.span.lo as usize).min(text_len);
    let len = l.span.len().min(text_len - lo);
    let span = SourceSpan::new(lo.into(), len);
    let msg = if l.message.is_empty() { None } else { Some(l.message.clone()) };
    if l.primary { LabeledSpan::new_primary_with_span(msg, span) } else { LabeledSpan::new_with_span(msg, span) }
}

/// Lines longer than this are not quoted: a label on them becomes a `file:line:col` note
/// (miette's layout pads with format widths, which are limited to 65535 columns).
const MAX_QUOTED_LINE: usize = 1024;

/// 1-based line and column of a byte offset, and the length of that line.
fn locate(text: &str, offset: usize) -> (usize, usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let line_end = text.as_bytes()[offset..].iter().position(|&b| b == b'\n').map_or(text.len(), |p| offset + p);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = text[line_start..offset].chars().count() + 1;
    (line, col, line_end - line_start)
}

/// Builds the miette report for one diagnostic.
pub fn to_report(diag: &Diag, sources: &SourceMap) -> Report {
    let mut diag = diag.clone();
    let mut far: Vec<String> = Vec::new();
    diag.labels.retain(|l| {
        let f = sources.get(l.span.file);
        let (line, col, len) = locate(&f.text, l.span.lo as usize);
        if len > MAX_QUOTED_LINE {
            far.push(format!("at {}:{line}:{col}: {}", f.name, l.message));
            false
        } else {
            true
        }
    });
    diag.notes.splice(0..0, far);
    let diag = &diag;
    let severity = match diag.severity {
        Severity::Error => miette::Severity::Error,
        Severity::Warning => miette::Severity::Warning,
    };
    let primary_file = diag.primary_span().map(|s| s.file);
    let mut labels = Vec::new();
    let mut related = Vec::new();
    let mut other_files: Vec<FileId> = Vec::new();
    for l in &diag.labels {
        if Some(l.span.file) == primary_file {
            labels.push(labeled(l, sources.get(l.span.file).text.len()));
        } else if !other_files.contains(&l.span.file) {
            other_files.push(l.span.file);
        }
    }
    for file in other_files {
        let text_len = sources.get(file).text.len();
        let file_labels: Vec<LabeledSpan> =
            diag.labels.iter().filter(|l| l.span.file == file).map(|l| labeled(l, text_len)).collect();
        related.push(Report {
            message: format!("in {}", sources.get(file).name),
            code: None,
            severity: miette::Severity::Advice,
            source: Some(named_source(sources, file)),
            labels: file_labels,
            help: None,
            related: Vec::new(),
        });
    }
    for note in &diag.notes {
        related.push(Report {
            message: note.clone(),
            code: None,
            severity: miette::Severity::Advice,
            source: None,
            labels: Vec::new(),
            help: None,
            related: Vec::new(),
        });
    }
    Report {
        message: diag.message.clone(),
        code: Some(format!("triton::{}", diag.code.as_str())),
        severity,
        source: primary_file.map(|f| named_source(sources, f)),
        labels,
        help: diag.help.clone(),
        related,
    }
}

/// How to render text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Unicode and ANSI colours (terminals).
    Color,
    /// Unicode without colours (files, snapshots, pipes).
    Plain,
}

/// Renders one diagnostic as text, the way `triton check` prints it.
pub fn render(diag: &Diag, sources: &SourceMap, style: Style) -> String {
    let report = to_report(diag, sources);
    let theme = match style {
        Style::Color => GraphicalTheme::unicode(),
        Style::Plain => GraphicalTheme::unicode_nocolor(),
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100).with_links(false);
    let mut out = String::new();
    struct Adapter<'a>(&'a GraphicalReportHandler, &'a Report);
    impl fmt::Display for Adapter<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            ReportHandler::debug(self.0, self.1, f)
        }
    }
    use fmt::Write;
    let _ = write!(out, "{}", Adapter(&handler, &report));
    out
}

/// Renders every diagnostic, separated by blank lines.
pub fn render_all<'a>(diags: impl IntoIterator<Item = &'a Diag>, sources: &SourceMap, style: Style) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&render(d, sources, style));
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push('\n');
    }
    out
}
