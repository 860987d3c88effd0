//! Wording helpers of the elaborator's diagnostics, and small conversions.

#[allow(unused_imports)]
use super::*;

/// `what` must be `want` but is `found`: "a dimension must be an int, found a float", marked
/// "not an int" (the last word of `want`) at `span`.
pub(super) fn wrong_kind(what: &str, want: &str, found: &Value, span: crate::source::Span) -> Diag {
    let noun = want.rsplit(' ').next().unwrap_or(want);
    Diag::error(Code::ArgumentKind, format!("{what} must be {want}, found {}", found.describe()))
        .at(span, format!("not {} {noun}", article(noun)))
}

pub(super) fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(d) => d.as_known().map(|x| x as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

pub(super) fn article(ty: &str) -> &'static str {
    if ty == "int" { "an" } else { "a" }
}

pub(super) fn short(v: &Value) -> String {
    match v {
        Value::Int(d) => d.to_string(),
        Value::Float(f) => format!("{f}"),
        Value::Bool(b) => b.to_string(),
        Value::Str(s) => format!("\"{s}\""),
        other => other.kind().to_string(),
    }
}

/// Shortens deep instance paths for messages: `a.b.….x.y.z`.
pub(super) fn abbreviate(path: &str) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.len() <= 6 {
        return path.to_string();
    }
    format!("{}.….{}", parts[..2].join("."), parts[parts.len() - 3..].join("."))
}

pub(super) fn join_path(base: &str, name: &str) -> String {
    if base.is_empty() { name.to_string() } else { format!("{base}.{name}") }
}

pub(super) fn layer_signature(def: &ast::LayerDef) -> String {
    let ps: Vec<String> = def
        .params
        .iter()
        .map(|p| {
            if p.default.is_some() {
                format!("{}: {} = ...", p.name.name, p.ty.name)
            } else {
                format!("{}: {}", p.name.name, p.ty.name)
            }
        })
        .collect();
    format!("signature: {}({})", def.name.name, ps.join(", "))
}

pub(super) fn collect_names(items: &[LayerItem], out: &mut Vec<String>) {
    for item in items {
        match item {
            LayerItem::Decl(d) => out.push(d.name.name.clone()),
            LayerItem::Const { name, .. } | LayerItem::Instance { name, .. } => out.push(name.name.clone()),
            LayerItem::If(i) => {
                collect_names(&i.then, out);
                collect_names(&i.otherwise, out);
            }
            LayerItem::Fn(_) | LayerItem::Require { .. } | LayerItem::Error(_) => {}
        }
    }
}

/// The IR's kind of a declared parameter.
pub(super) fn param_kind(k: DeclKind) -> crate::ir::ParamKind {
    match k {
        DeclKind::Weight => crate::ir::ParamKind::Weight,
        DeclKind::Param => crate::ir::ParamKind::Param,
        DeclKind::Buffer => crate::ir::ParamKind::Buffer,
    }
}
