//! Loading: files on disk and embedded stdlib modules, parsed, with their imports followed.
//!
//! Rules:
//! - A file is read and parsed once per compilation, whoever imports it (keyed by canonical path
//!   or std module name).
//! - `use std::a::B` names an embedded standard-library module (`stdlib/a.tri`, compiled into the
//!   binary with `include_str!`). Any other `use a::b::C` names the file `a/b.tri` relative to the
//!   importing file's folder; a leading `super` goes up one folder.
//! - Import cycles are reported at the `use` that closes the cycle. The edge is kept for name
//!   resolution (so one cycle is one error), and nothing walks the import graph recursively.
//! - Unreadable, non-UTF-8 and oversized files are diagnostics, never panics.

use std::path::{Path, PathBuf};

use crate::diagnostics::{Code, Diag, Diags};
use crate::source::{FileId, Origin, SourceMap, Span};
use crate::syntax::{self, ast};

/// Largest source file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;

/// Deepest chain of imports followed.
pub const MAX_IMPORT_DEPTH: usize = 64;

/// The standard library: module name and source, embedded at build time.
pub const STDLIB: &[(&str, &str)] = &[
    ("nn", include_str!("../../stdlib/nn.tri")),
    ("resnet", include_str!("../../stdlib/resnet.tri")),
    ("mobilenet", include_str!("../../stdlib/mobilenet.tri")),
    ("transformer", include_str!("../../stdlib/transformer.tri")),
    ("efficientnet", include_str!("../../stdlib/efficientnet.tri")),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(pub u32);

#[derive(Debug)]
pub struct LoadedModule {
    pub file: FileId,
    pub ast: ast::Module,
    /// For each `use` item (by index in `ast.items`), the module it resolved to. May contain
    /// cycles (reported as errors); name resolution does not need the graph to be acyclic.
    pub imports: Vec<(usize, ModuleId)>,
}

/// Every module of one compilation, plus the diagnostics found while loading.
#[derive(Debug, Default)]
pub struct Program {
    pub sources: SourceMap,
    pub modules: Vec<LoadedModule>,
    /// The modules the user asked for, in order.
    pub roots: Vec<ModuleId>,
    pub diags: Diags,
}

impl Program {
    pub fn module(&self, id: ModuleId) -> &LoadedModule {
        &self.modules[id.0 as usize]
    }

    pub fn module_ids(&self) -> impl Iterator<Item = ModuleId> {
        (0..self.modules.len() as u32).map(ModuleId)
    }

    /// The module whose file is `file`.
    pub fn module_of_file(&self, file: FileId) -> Option<ModuleId> {
        self.module_ids().find(|&m| self.module(m).file == file)
    }
}

/// Loads programs. Holds the state of one compilation.
#[derive(Debug, Default)]
pub struct Loader {
    program: Program,
    /// Modules whose imports are being followed (for cycle detection).
    stack: Vec<ModuleId>,
}

impl Loader {
    pub fn new() -> Loader {
        Loader::default()
    }

    /// Loads a file from disk as a root module. Problems become diagnostics.
    pub fn load_file(&mut self, path: &Path) -> Option<ModuleId> {
        let id = self.file_module(path, path.display().to_string(), None);
        if let Some(id) = id {
            self.program.roots.push(id);
        }
        id
    }

    /// Loads source text as a root module (tests, fuzzing, API users). Relative imports
    /// resolve against `dir` when given.
    pub fn load_source(&mut self, name: &str, text: &str, dir: Option<&Path>) -> ModuleId {
        let origin = match dir {
            Some(d) => Origin::Disk(d.join(name)),
            None => Origin::Memory,
        };
        let file = self.program.sources.add(name, origin, text);
        let id = self.parse_and_follow(file, None);
        self.program.roots.push(id);
        id
    }

    pub fn finish(self) -> Program {
        self.program
    }

    fn file_module(&mut self, path: &Path, display: String, at: Option<Span>) -> Option<ModuleId> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if let Some(file) = self.program.sources.find_disk(&canonical) {
            return self.program.module_of_file(file);
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                let mut d = Diag::error(Code::FileUnreadable, format!("cannot read `{display}`: {e}"));
                if let Some(at) = at {
                    d = d.at(at, "imported here");
                }
                self.program.diags.push(d);
                return None;
            }
        };
        if bytes.len() > MAX_FILE_BYTES {
            let mut d = Diag::error(
                Code::FileTooLarge,
                format!(
                    "`{display}` is {:.1} MB; source files are limited to {} MB",
                    bytes.len() as f64 / 1e6,
                    MAX_FILE_BYTES / (1024 * 1024)
                ),
            )
            .help("a .tri file describes a model; weights belong in a .safetensors file");
            if let Some(at) = at {
                d = d.at(at, "imported here");
            }
            self.program.diags.push(d);
            return None;
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let pos = e.utf8_error().valid_up_to();
                let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
                // Map the byte offset into the lossy text: identical up to `pos`.
                let file = self.program.sources.add(display.clone(), Origin::Disk(canonical), lossy);
                let line = e.as_bytes()[..pos].iter().filter(|&&b| b == b'\n').count() + 1;
                self.program.diags.push(
                    Diag::error(
                        Code::NotUtf8,
                        format!("`{display}` is not valid UTF-8 (first bad byte at offset {pos}, line {line})"),
                    )
                    .at(Span::new(file, pos, pos + 1), "invalid UTF-8 here")
                    .help("save the file as UTF-8"),
                );
                return None;
            }
        };
        let file = self.program.sources.add(display, Origin::Disk(canonical), text);
        Some(self.parse_and_follow(file, at))
    }

    fn std_module(&mut self, name: &str) -> Option<ModuleId> {
        if let Some(file) = self.program.sources.find_std(name) {
            return self.program.module_of_file(file);
        }
        let (_, text) = STDLIB.iter().find(|(n, _)| *n == name)?;
        let file = self.program.sources.add(format!("<std>/{name}.tri"), Origin::Std(name.to_string()), *text);
        Some(self.parse_and_follow(file, None))
    }

    fn parse_and_follow(&mut self, file: FileId, _at: Option<Span>) -> ModuleId {
        let text = self.program.sources.get(file).text.clone();
        let errors_before = self.program.diags.error_count();
        let ast = syntax::parse(file, &text, &mut self.program.diags);
        let has_definitions = ast.items.iter().any(|i| matches!(i, ast::Item::Layer(_) | ast::Item::Error(_)));
        if !has_definitions
            && !ast.items.iter().any(|i| matches!(i, ast::Item::Use(_)))
            && self.program.diags.error_count() == errors_before
        {
            self.program.diags.push(
                Diag::error(
                    Code::EmptyFile,
                    format!("`{}` defines no layer or model", self.program.sources.get(file).name),
                )
                .at(Span::new(file, 0, text.len().min(1)), "nothing is defined in this file")
                .help("a model file looks like `model Name { ... fn forward(x: f32[B, 4]) -> f32[B, 2] { ... } }`"),
            );
        }
        let id = ModuleId(self.program.modules.len() as u32);
        let uses: Vec<(usize, ast::UseDecl)> = ast
            .items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                ast::Item::Use(u) if !u.path.is_empty() => Some((i, u.clone())),
                _ => None,
            })
            .collect();
        self.program.modules.push(LoadedModule { file, ast, imports: Vec::new() });
        if self.stack.len() >= MAX_IMPORT_DEPTH {
            if let Some((_, u)) = uses.first() {
                self.program.diags.push(
                    Diag::error(
                        Code::ImportCycle,
                        format!("imports are nested more than {MAX_IMPORT_DEPTH} files deep"),
                    )
                    .at(u.span, "this import is too deep"),
                );
            }
            return id;
        }
        self.stack.push(id);
        for (index, u) in uses {
            if let Some(target) = self.resolve_use(file, &u) {
                if let Some(pos) = self.stack.iter().position(|&m| m == target) {
                    let mut chain: Vec<String> = self.stack[pos..]
                        .iter()
                        .map(|&m| self.program.sources.get(self.program.module(m).file).name.clone())
                        .collect();
                    chain.push(chain[0].clone());
                    self.program.diags.push(
                        Diag::error(Code::ImportCycle, "import cycle")
                            .at(u.span, "this import closes a cycle")
                            .note(format!("cycle: {}", chain.join(" -> ")))
                            .help("move the shared layers into a third file that both import"),
                    );
                }
                self.program.modules[id.0 as usize].imports.push((index, target));
            }
        }
        self.stack.pop();
        id
    }

    fn resolve_use(&mut self, from: FileId, u: &ast::UseDecl) -> Option<ModuleId> {
        let names: Vec<&str> = u.path.iter().map(|i| i.name.as_str()).collect();
        let path_span = u.path.first().map(|f| f.span.to(u.path.last().map_or(f.span, |l| l.span))).unwrap_or(u.span);
        if names.first() == Some(&"std") {
            let available = STDLIB.iter().map(|(n, _)| format!("std::{n}")).collect::<Vec<_>>().join(", ");
            if names.len() != 2 {
                self.program.diags.push(
                    Diag::error(Code::ModuleNotFound, format!("no standard module `{}`", names.join("::")))
                        .at(path_span, "not a standard module")
                        .help(format!("standard modules: {available}")),
                );
                return None;
            }
            return match self.std_module(names[1]) {
                Some(m) => Some(m),
                None => {
                    self.program.diags.push(
                        Diag::error(Code::ModuleNotFound, format!("no standard module `std::{}`", names[1]))
                            .at(path_span, "not a standard module")
                            .help(format!("standard modules: {available}")),
                    );
                    None
                }
            };
        }
        let base = match &self.program.sources.get(from).origin {
            Origin::Disk(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
            Origin::Std(_) => {
                self.program.diags.push(
                    Diag::error(Code::ModuleNotFound, "standard modules can only import `std::` modules")
                        .at(path_span, "relative import in a standard module"),
                );
                return None;
            }
            Origin::Memory => PathBuf::from("."),
        };
        let mut rel = PathBuf::new();
        let mut display = String::new();
        for (i, n) in names.iter().enumerate() {
            if *n == "super" {
                rel.push("..");
                display.push_str("../");
            } else if i + 1 == names.len() {
                rel.push(format!("{n}.tri"));
                display.push_str(&format!("{n}.tri"));
            } else {
                rel.push(n);
                display.push_str(&format!("{n}/"));
            }
        }
        if names.last() == Some(&"super") {
            self.program.diags.push(
                Diag::error(Code::InvalidUse, "a `use` path cannot end with `super`")
                    .at(path_span, "name a module after `super`"),
            );
            return None;
        }
        let full = base.join(&rel);
        if !full.is_file() {
            let shown = self.display_path(&full);
            self.program.diags.push(
                Diag::error(
                    Code::ModuleNotFound,
                    format!("no module `{}`: file `{display}` not found", names.join("::")),
                )
                .at(path_span, format!("looked for {shown}"))
                .help(
                    "relative imports name a .tri file next to the importing file; standard modules start with `std::`",
                ),
            );
            return None;
        }
        let shown = self.display_path(&full);
        self.file_module(&full, shown, Some(path_span))
    }

    fn display_path(&self, full: &Path) -> String {
        // Show paths relative to the working directory when possible, for stable messages.
        let clean = normalize(full);
        std::env::current_dir()
            .ok()
            .and_then(|cwd| clean.strip_prefix(normalize(&cwd)).ok().map(Path::to_path_buf))
            .unwrap_or(clean)
            .display()
            .to_string()
    }
}

/// Removes `.` and `..` components lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
