//! `triton compile`: check, lower and optimize; print a summary or the IR, and timings.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use triton_compiler::diagnostics::render::Style;

use super::common::{load_model, load_weights, optimize, options};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Summary,
    Ir,
    /// The kernel plan: layout and specialization choices per matmul and convolution.
    Plan,
}

pub struct Args<'a> {
    pub file: &'a Path,
    pub opt: u8,
    pub emit: Emit,
    pub timing: bool,
    pub verify_each: bool,
    pub f32_activations: bool,
    pub weights: Option<&'a Path>,
    pub model: Option<&'a str>,
}

pub fn run(a: &Args<'_>, style: Style) -> ExitCode {
    let start = Instant::now();
    let model = match load_model(a.file, a.model, style) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let check_time = start.elapsed();
    // Without a weights file the weights are not known at compile time: no zero-skip analysis.
    let weights = match a.weights {
        Some(p) => match load_weights(Some(p), model.params(), 0) {
            Ok(w) => Some(w),
            Err(code) => return code,
        },
        None => None,
    };
    let opts = options(a.opt, a.verify_each, a.f32_activations, weights.as_ref());
    let optimized = match optimize(&model, &opts) {
        Ok(o) => o,
        Err(code) => return code,
    };
    match a.emit {
        Emit::Ir => print!("{}", optimized.graph),
        Emit::Plan => match &optimized.kernels {
            Some(plan) => print!("{plan}"),
            None => eprintln!("note: kernels are planned from -O2 on; -O{} runs every op as written", a.opt),
        },
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
