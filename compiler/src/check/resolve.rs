//! Name resolution: module scopes, imports, and every name used inside every layer.
//!
//! Rules:
//! - A module's scope holds its own layers and models plus what its `use` items import; imports
//!   are private (not re-exported). Names are unique per module.
//! - Every layer body is resolved, instantiated or not, so a typo in an unused layer is still
//!   reported. Evaluation-dependent problems (a name under a false `if`, a const used before its
//!   definition) are left to elaboration.
//! - Names in a function signature's shapes that are not compile-time values in scope are
//!   symbolic dimensions, and must start with an uppercase letter (`B`, `H`); a lowercase unknown
//!   name is reported as a typo instead of silently becoming a free dimension.
//! - This pass is the only one that reports unknown names (E024-E027); elaboration treats them as
//!   poison.

use std::collections::{HashMap, HashSet};

use super::ops;
use super::suggest::closest;
use crate::diagnostics::{Code, Diag, Diags};
use crate::load::{ModuleId, Program, STDLIB};
use crate::source::Span;
use crate::syntax::ast::{self, Expr, ExprKind, LayerItem, Stmt};

/// A layer or model definition: module and index of the item in the module's AST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerRef {
    pub module: ModuleId,
    pub item: usize,
}

/// What each module can see by name.
#[derive(Debug, Default)]
pub struct Scopes {
    modules: Vec<HashMap<String, LayerRef>>,
}

impl Scopes {
    pub fn lookup(&self, module: ModuleId, name: &str) -> Option<LayerRef> {
        self.modules.get(module.0 as usize)?.get(name).copied()
    }

    pub fn names(&self, module: ModuleId) -> impl Iterator<Item = &str> {
        self.modules[module.0 as usize].keys().map(String::as_str)
    }
}

/// The definition `r` names (`None` only if `r` was not made by [`resolve`] for `program`).
pub fn layer_def(program: &Program, r: LayerRef) -> Option<&ast::LayerDef> {
    match program.module(r.module).ast.items.get(r.item) {
        Some(ast::Item::Layer(l)) => Some(l),
        _ => None,
    }
}

/// Parameter type names for layer parameters.
pub const PARAM_TYPES: &[&str] = &["int", "float", "bool", "str"];

pub fn is_symbol_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
}

pub fn resolve(program: &Program, diags: &mut Diags) -> Scopes {
    let mut scopes = Scopes::default();
    // Own definitions first, so imports can refer to them in any order.
    let mut own: Vec<HashMap<String, LayerRef>> = Vec::new();
    for m in program.module_ids() {
        let mut map: HashMap<String, LayerRef> = HashMap::new();
        for (i, item) in program.module(m).ast.items.iter().enumerate() {
            if let ast::Item::Layer(l) = item {
                let r = LayerRef { module: m, item: i };
                if let Some(prev) = map.get(&l.name.name) {
                    let mut d = Diag::error(Code::DuplicateDefinition, format!("`{}` is defined twice", l.name.name))
                        .at(l.name.span, "defined again here");
                    if let Some(prev_def) = layer_def(program, *prev) {
                        d = d.also(prev_def.name.span, "first defined here");
                    }
                    diags.push(d);
                    continue;
                }
                map.insert(l.name.name.clone(), r);
            }
        }
        own.push(map);
    }
    let mut import_spans: Vec<HashMap<String, Span>> = vec![HashMap::new(); own.len()];
    for m in program.module_ids() {
        let module = program.module(m);
        let mut scope = own[m.0 as usize].clone();
        for &(index, target) in &module.imports {
            let ast::Item::Use(u) = &module.ast.items[index] else {
                continue;
            };
            let target_defs = &own[target.0 as usize];
            let mut add =
                |name: &ast::Ident, visible: &ast::Ident, scope: &mut HashMap<String, LayerRef>, diags: &mut Diags| {
                    let Some(&r) = target_defs.get(&name.name) else {
                        let mut d = Diag::error(
                            Code::ImportNotFound,
                            format!("module `{}` has no layer `{}`", path_of(u), name.name),
                        )
                        .at(name.span, "not defined there");
                        if let Some(s) = closest(&name.name, target_defs.keys().map(String::as_str)) {
                            d = d.help(format!("did you mean `{s}`?"));
                        } else {
                            let mut all: Vec<&str> = target_defs.keys().map(String::as_str).collect();
                            all.sort();
                            d = d.help(format!("it defines: {}", all.join(", ")));
                        }
                        diags.push(d);
                        return;
                    };
                    match scope.get(&visible.name) {
                        Some(&existing) if existing != r => {
                            let mut d = Diag::error(
                                Code::DuplicateDefinition,
                                format!("`{}` is already defined in this file", visible.name),
                            )
                            .at(visible.span, "imported here");
                            if let Some(def) = layer_def(program, existing) {
                                d = d.also(def.name.span, "already defined here");
                            }
                            diags.push(d.help(format!("rename the import: `{} as Other{}`", name.name, name.name)));
                        }
                        _ => {
                            scope.insert(visible.name.clone(), r);
                            import_spans[m.0 as usize].insert(visible.name.clone(), visible.span);
                        }
                    }
                };
            match &u.items {
                ast::UseItems::Names(names) => {
                    for n in names {
                        add(&n.name, n.local(), &mut scope, diags);
                    }
                }
                ast::UseItems::Glob(_) => {
                    let mut names: Vec<&String> = target_defs.keys().collect();
                    names.sort();
                    for n in names {
                        let id = ast::Ident { name: n.clone(), span: u.span };
                        if !scope.contains_key(n) {
                            scope.insert(n.clone(), target_defs[n]);
                        } else {
                            add(&id, &id, &mut scope, diags);
                        }
                    }
                }
            }
        }
        scopes.modules.push(scope);
    }
    // Names inside every layer body.
    let mut used_imports: HashSet<(ModuleId, String)> = HashSet::new();
    for m in program.module_ids() {
        for item in &program.module(m).ast.items {
            if let ast::Item::Layer(l) = item {
                let mut r = LayerResolver {
                    program,
                    scopes: &scopes,
                    module: m,
                    diags,
                    used: &mut used_imports,
                    names: Vec::new(),
                };
                r.layer(l);
            }
        }
    }
    for m in program.module_ids() {
        let mut unused: Vec<(&String, &Span)> =
            import_spans[m.0 as usize].iter().filter(|(n, _)| !used_imports.contains(&(m, (*n).clone()))).collect();
        unused.sort_by_key(|(_, s)| s.lo);
        for (name, span) in unused {
            diags.push(
                Diag::warning(Code::UnusedImport, format!("`{name}` is imported but never used"))
                    .at(*span, "unused import"),
            );
        }
    }
    scopes
}

fn path_of(u: &ast::UseDecl) -> String {
    u.path.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join("::")
}

/// Which standard module defines a layer named `name`, for "import it" hints.
fn std_home(program: &Program, name: &str) -> Option<&'static str> {
    let _ = program;
    STDLIB
        .iter()
        .find(|(_, src)| src.contains(&format!("layer {name}(")) || src.contains(&format!("layer {name} {{")))
        .map(|(m, _)| *m)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameKind {
    /// A compile-time value (layer parameter or const).
    Const,
    /// A run-time tensor (weight/param/buffer declaration, function parameter, let).
    Tensor,
    /// A sub-layer instance.
    Instance,
    /// A symbolic dimension from the function signature.
    Symbol,
}

struct LayerResolver<'a> {
    program: &'a Program,
    scopes: &'a Scopes,
    module: ModuleId,
    diags: &'a mut Diags,
    used: &'a mut HashSet<(ModuleId, String)>,
    /// Visible names, innermost last.
    names: Vec<(String, NameKind)>,
}

impl LayerResolver<'_> {
    fn lookup(&self, name: &str) -> Option<NameKind> {
        self.names.iter().rev().find(|(n, _)| n == name).map(|(_, k)| *k)
    }

    fn layer(&mut self, l: &ast::LayerDef) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for p in &l.params {
            if let Some(prev) = seen.insert(&p.name.name, p.name.span) {
                self.diags.push(
                    Diag::error(Code::DuplicateDefinition, format!("parameter `{}` is declared twice", p.name.name))
                        .at(p.name.span, "declared again here")
                        .also(prev, "first declared here"),
                );
            }
            if !PARAM_TYPES.contains(&p.ty.name.as_str()) {
                let mut d = Diag::error(Code::UnknownDtype, format!("unknown parameter type `{}`", p.ty.name))
                    .at(p.ty.span, "not a parameter type")
                    .help(format!("layer parameters are compile-time values of type {}", PARAM_TYPES.join(", ")));
                if let Some(s) = closest(&p.ty.name, PARAM_TYPES.iter().copied()) {
                    d = d.help(format!("did you mean `{s}`?"));
                }
                self.diags.push(d);
            }
            if let Some(def) = &p.default {
                self.expr(def);
            }
            self.names.push((p.name.name.clone(), NameKind::Const));
        }
        // Every name the body declares, in any branch, is visible to the forward function.
        let mut body_names: Vec<(String, NameKind)> = Vec::new();
        collect_item_names(&l.body, &mut body_names);
        self.items(&l.body, &mut HashMap::new());
        let base = self.names.len();
        self.names.extend(body_names);
        let fns: Vec<&ast::FnDef> = l.body.iter().flat_map(|i| fn_defs(i)).collect();
        for f in fns {
            self.function(f);
        }
        self.names.truncate(base);
    }

    fn items(&mut self, items: &[LayerItem], seen: &mut HashMap<String, Span>) {
        let declare = |this: &mut Self, name: &ast::Ident, seen: &mut HashMap<String, Span>| {
            if let Some(prev) = seen.insert(name.name.clone(), name.span) {
                this.diags.push(
                    Diag::error(Code::DuplicateDefinition, format!("`{}` is declared twice in this layer", name.name))
                        .at(name.span, "declared again here")
                        .also(prev, "first declared here"),
                );
            }
        };
        for item in items {
            match item {
                LayerItem::Decl(d) => {
                    declare(self, &d.name, seen);
                    self.type_dims(&d.ty, false);
                    for a in &d.attrs {
                        self.expr(&a.value);
                    }
                }
                LayerItem::Require { cond, message, .. } => {
                    self.expr(cond);
                    self.expr(message);
                }
                LayerItem::Const { name, value } => {
                    declare(self, name, seen);
                    self.expr(value);
                    self.names.push((name.name.clone(), NameKind::Const));
                }
                LayerItem::Instance { name, value } => {
                    declare(self, name, seen);
                    self.instance_value(value);
                }
                LayerItem::If(i) => {
                    self.expr(&i.cond);
                    let base = self.names.len();
                    let mut then_seen = seen.clone();
                    self.items(&i.then, &mut then_seen);
                    self.names.truncate(base);
                    let mut else_seen = seen.clone();
                    self.items(&i.otherwise, &mut else_seen);
                    self.names.truncate(base);
                    for (k, v) in then_seen.into_iter().chain(else_seen) {
                        seen.entry(k).or_insert(v);
                    }
                }
                LayerItem::Fn(f) => {
                    if f.name.name != "forward" {
                        self.diags.push(
                            Diag::error(
                                Code::MissingForward,
                                format!("layers define one function, `forward`; found `fn {}`", f.name.name),
                            )
                            .at(f.name.span, "not `forward`")
                            .help("rename it to `forward`, or move the computation into its own layer"),
                        );
                    }
                    if let Some(prev) = seen.insert("fn forward".to_string(), f.name.span) {
                        self.diags.push(
                            Diag::error(Code::DuplicateDefinition, "this layer defines more than one function")
                                .at(f.name.span, "second function")
                                .also(prev, "first function"),
                        );
                    }
                }
                LayerItem::Error(_) => {}
            }
        }
    }

    fn instance_value(&mut self, value: &Expr) {
        match &value.kind {
            ExprKind::Call { callee, args } => {
                self.layer_name(callee);
                for a in args {
                    self.expr(&a.value);
                }
            }
            ExprKind::Repeat { item, count } => {
                self.expr(count);
                if matches!(item.kind, ExprKind::Call { .. }) {
                    self.instance_value(item);
                } else {
                    self.not_instance(item);
                }
            }
            ExprKind::List(items) => {
                for i in items {
                    if matches!(i.kind, ExprKind::Call { .. }) {
                        self.instance_value(i);
                    } else {
                        self.not_instance(i);
                    }
                }
            }
            ExprKind::Error => {}
            _ => self.not_instance(value),
        }
    }

    fn not_instance(&mut self, e: &Expr) {
        self.diags.push(
            Diag::error(Code::InvalidInstance, "a sub-layer field must be a layer instance")
                .at(e.span, "expected `Layer(args)`, `[Layer(args); count]` or `[Layer(a), Layer(b), ...]`")
                .help("compile-time values are declared with `const name = value`"),
        );
    }

    fn layer_name(&mut self, callee: &ast::Ident) {
        if self.scopes.lookup(self.module, &callee.name).is_some() {
            self.used.insert((self.module, callee.name.clone()));
            return;
        }
        let mut d = Diag::error(Code::UnknownLayer, format!("unknown layer `{}`", callee.name))
            .at(callee.span, "not defined or imported");
        if ops::is_builtin(&callee.name) {
            d = d.help(format!("`{}` is a built-in op: call it inside `fn forward`, not as a field", callee.name));
        } else if let Some(s) = closest(&callee.name, self.scopes.names(self.module)) {
            d = d.help(format!("did you mean `{s}`?"));
        } else if let Some(m) = std_home(self.program, &callee.name) {
            d = d.help(format!("import it: `use std::{m}::{{{}}}`", callee.name));
        }
        self.diags.push(d);
    }

    fn type_dims(&mut self, ty: &ast::TypeExpr, symbols_allowed: bool) {
        if triton_runtime::DType::from_name(&ty.dtype.name).is_none() {
            let names: Vec<&str> = triton_runtime::DType::ALL.iter().map(|d| d.name()).collect();
            let mut d = Diag::error(Code::UnknownDtype, format!("unknown dtype `{}`", ty.dtype.name))
                .at(ty.dtype.span, format!("expected one of {}", names.join(", ")));
            if let Some(s) = closest(&ty.dtype.name, names.iter().copied()) {
                d = d.help(format!("did you mean `{s}`?"));
            }
            self.diags.push(d);
        }
        for d in &ty.dims {
            if symbols_allowed
                && let ExprKind::Name(n) = &d.kind
                && self.lookup(n).is_none()
            {
                if is_symbol_name(n) {
                    self.names.push((n.clone(), NameKind::Symbol));
                    continue;
                }
                let mut diag = Diag::error(Code::UnknownName, format!("unknown name `{n}` in a shape"))
                    .at(d.span, "not a compile-time value in scope");
                if let Some(s) = self.suggest(n) {
                    diag = diag.help(format!("did you mean `{s}`?"));
                } else {
                    diag = diag.help("symbolic dimensions (inferred from the arguments) start with an uppercase letter, like `B` or `H`");
                }
                self.diags.push(diag);
                continue;
            }
            self.expr(d);
        }
    }

    fn suggest(&self, name: &str) -> Option<String> {
        closest(name, self.names.iter().map(|(n, _)| n.as_str())).map(str::to_string)
    }

    fn function(&mut self, f: &ast::FnDef) {
        let base = self.names.len();
        // Bare names bind symbols first, so `f32[B, 2 * H]` may use H bound elsewhere.
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for p in &f.params {
            self.type_dims(&p.ty, true);
            if let Some(prev) = seen.insert(&p.name.name, p.name.span) {
                self.diags.push(
                    Diag::error(Code::DuplicateDefinition, format!("parameter `{}` is declared twice", p.name.name))
                        .at(p.name.span, "declared again here")
                        .also(prev, "first declared here"),
                );
            }
        }
        for p in &f.params {
            self.names.push((p.name.name.clone(), NameKind::Tensor));
        }
        if !f.ret.dtype.name.is_empty() {
            self.type_dims(&f.ret, true);
        }
        // Lets: track uses for W002.
        let mut lets: Vec<(String, Span, bool)> = Vec::new();
        let let_base = self.names.len();
        for s in &f.body {
            match s {
                Stmt::Let { name, ty, value, .. } => {
                    self.expr_marking(value, &mut lets);
                    if let Some(ty) = ty {
                        self.type_dims(ty, true);
                    }
                    self.names.push((name.name.clone(), NameKind::Tensor));
                    lets.push((name.name.clone(), name.span, false));
                }
                Stmt::Return { value, .. } => self.expr_marking(value, &mut lets),
                Stmt::Error(_) => {}
            }
        }
        for (name, span, used) in lets {
            if !used && !name.starts_with('_') {
                self.diags.push(
                    Diag::warning(Code::UnusedLet, format!("`{name}` is never used"))
                        .at(span, "assigned here")
                        .help(format!("if this is intentional, name it `_{name}`")),
                );
            }
        }
        let _ = let_base;
        self.names.truncate(base);
    }

    fn expr_marking(&mut self, e: &Expr, lets: &mut [(String, Span, bool)]) {
        let mut names = Vec::new();
        collect_names(e, &mut names);
        for n in names {
            if let Some(l) = lets.iter_mut().rev().find(|(ln, _, _)| *ln == n) {
                l.2 = true;
            }
        }
        self.expr(e);
    }

    fn expr(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Name(n) => {
                if self.lookup(n).is_none() {
                    let mut d = Diag::error(Code::UnknownName, format!("unknown name `{n}`"))
                        .at(e.span, "not defined in this scope");
                    if let Some(s) = self.suggest(n) {
                        d = d.help(format!("did you mean `{s}`?"));
                    } else if self.scopes.lookup(self.module, n).is_some() {
                        d = d.help(format!(
                            "`{n}` is a layer: declare an instance as a field (`name = {n}(...)`) and call that"
                        ));
                    }
                    self.diags.push(d);
                }
            }
            ExprKind::Call { callee, args } => {
                match self.lookup(&callee.name) {
                    Some(NameKind::Instance) => {}
                    Some(_) => self.diags.push(
                        Diag::error(
                            Code::NotCallable,
                            format!("`{}` is not a layer or op and cannot be called", callee.name),
                        )
                        .at(callee.span, "not callable"),
                    ),
                    None if ops::is_builtin(&callee.name) => {}
                    None if self.scopes.lookup(self.module, &callee.name).is_some() => {
                        self.used.insert((self.module, callee.name.clone()));
                        self.diags.push(
                            Diag::error(
                                Code::NotCallable,
                                format!("`{}` is a layer definition, not an instance", callee.name),
                            )
                            .at(callee.span, "layers cannot be created inside `fn forward`")
                            .help(format!(
                                "declare a field in the layer body, `my_{0} = {1}(...)`, and call `my_{0}(x)`",
                                callee.name.to_lowercase(),
                                callee.name
                            )),
                        );
                    }
                    None => {
                        let mut d =
                            Diag::error(Code::UnknownFunction, format!("unknown op or layer `{}`", callee.name))
                                .at(callee.span, "not a built-in op or a sub-layer of this layer");
                        let suggestion = {
                            let mut candidates: Vec<&str> = Vec::new();
                            for n in ops::builtin_names() {
                                candidates.push(n);
                            }
                            candidates.extend(
                                self.names.iter().filter(|(_, k)| *k == NameKind::Instance).map(|(n, _)| n.as_str()),
                            );
                            closest(&callee.name, candidates).map(str::to_string)
                        };
                        if let Some(what) = ops::not_yet(&callee.name) {
                            d = d.help(format!(
                                "{what} is not a built-in op of Triton yet; the built-in ops are: {}",
                                ops::builtin_names().collect::<Vec<_>>().join(", ")
                            ));
                        } else if let Some(s) = suggestion {
                            d = d.help(format!("did you mean `{s}`?"));
                        }
                        self.diags.push(d);
                    }
                }
                for a in args {
                    self.expr(&a.value);
                }
            }
            ExprKind::Binary { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            ExprKind::Unary { operand, .. } => self.expr(operand),
            ExprKind::List(items) => {
                for i in items {
                    self.expr(i);
                }
            }
            ExprKind::Repeat { item, count } => {
                self.expr(item);
                self.expr(count);
            }
            ExprKind::If { cond, then, otherwise } => {
                self.expr(cond);
                self.expr(then);
                self.expr(otherwise);
            }
            ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Str(_) | ExprKind::Bool(_) | ExprKind::Error => {}
        }
    }
}

fn fn_defs(item: &LayerItem) -> Vec<&ast::FnDef> {
    match item {
        LayerItem::Fn(f) => vec![f],
        LayerItem::If(i) => i.then.iter().chain(i.otherwise.iter()).flat_map(fn_defs).collect(),
        _ => Vec::new(),
    }
}

fn collect_item_names(items: &[LayerItem], out: &mut Vec<(String, NameKind)>) {
    for item in items {
        match item {
            LayerItem::Decl(d) => out.push((d.name.name.clone(), NameKind::Tensor)),
            LayerItem::Const { name, .. } => out.push((name.name.clone(), NameKind::Const)),
            LayerItem::Instance { name, .. } => out.push((name.name.clone(), NameKind::Instance)),
            LayerItem::If(i) => {
                collect_item_names(&i.then, out);
                collect_item_names(&i.otherwise, out);
            }
            LayerItem::Fn(_) | LayerItem::Require { .. } | LayerItem::Error(_) => {}
        }
    }
}

fn collect_names(e: &Expr, out: &mut Vec<String>) {
    match &e.kind {
        ExprKind::Name(n) => out.push(n.clone()),
        ExprKind::Call { callee, args } => {
            out.push(callee.name.clone());
            args.iter().for_each(|a| collect_names(&a.value, out))
        }
        ExprKind::Binary { lhs, rhs, .. } => {
            collect_names(lhs, out);
            collect_names(rhs, out);
        }
        ExprKind::Unary { operand, .. } => collect_names(operand, out),
        ExprKind::List(items) => items.iter().for_each(|i| collect_names(i, out)),
        ExprKind::Repeat { item, count } => {
            collect_names(item, out);
            collect_names(count, out);
        }
        ExprKind::If { cond, then, otherwise } => {
            collect_names(cond, out);
            collect_names(then, out);
            collect_names(otherwise, out);
        }
        _ => {}
    }
}
