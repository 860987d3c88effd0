//! `triton compile`: check, lower and optimize; print a summary or the IR, and timings.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use triton_compiler::diagnostics::render::Style;

use super::common::{load_model, optimize};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Summary,
    Ir,
}

pub struct Args<'a> {
    pub file: &'a Path,
    pub opt: u8,
    pub emit: Emit,
    pub timing: bool,
    pub verify_each: bool,
    pub model: Option<&'a str>,
}

pub fn run(a: &Args<'_>, style: Style) -> ExitCode {
    let start = Instant::now();
    let model = match load_model(a.file, a.model, style) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let check_time = start.elapsed();
    let optimized = match optimize(&model, a.opt, a.verify_each) {
        Ok(o) => o,
        Err(code) => return code,
    };
    match a.emit {
        Emit::Ir => print!("{}", optimized.graph),
        Emit::Summary => {
            let g = &optimized.graph;
            let mut line = format!(
                "{}: model {}: {} run-time nodes at -O0, {} at -O{}",
                a.file.display(),
                model.name,
                model.graph.runtime_nodes(),
                g.runtime_nodes(),
                a.opt
            );
            let folded = g.static_compute_nodes();
            if folded > 0 {
                line.push_str(&format!(" (+{folded} on parameters only, evaluated once)"));
            }
            match &optimized.plan {
                Some(Ok(plan)) => line.push_str(&format!("; {plan}")),
                Some(Err(why)) => line.push_str(&format!("; arena not planned ahead: {why}")),
                None => {}
            }
            println!("{line}");
        }
    }
    if a.timing {
        eprintln!("{:<28} {:>10}", "phase", "ms");
        eprintln!("{:<28} {:>10.3}", "parse+check+lower", check_time.as_secs_f64() * 1e3);
        for (name, d) in &optimized.timings.entries {
            eprintln!("{:<28} {:>10.3}", format!("pass {name}"), d.as_secs_f64() * 1e3);
        }
        eprintln!("{:<28} {:>10.3}", "total", start.elapsed().as_secs_f64() * 1e3);
    }
    ExitCode::SUCCESS
}
