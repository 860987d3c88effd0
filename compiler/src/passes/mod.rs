//! The optimizer: passes over the graph IR, assembled into pipelines per -O level.
//!
//! Rules:
//! - One pass per file; a pass is a function from a graph to a new graph and must preserve
//!   the values the graph computes (up to float reassociation), at both precisions.
//! - Pipelines are written out in one place, [`pipeline`]. [`optimize`] runs them, timing every
//!   pass and, when asked (`--verify-each`, and always in debug builds), verifying the graph
//!   after every pass: a verifier failure is an internal compiler error naming the pass.

pub mod bn_fold;
pub mod const_fold;
pub mod cse;
pub mod dce;
pub mod fuse;
pub mod int8_act;
pub mod kernel_plan;
pub mod memory_plan;
pub mod shape_simplify;
pub mod timing;

use std::fmt;

use crate::ir::{self, Graph};
pub use timing::Timings;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OptLevel {
    O0,
    O1,
    O2,
    O3,
}

impl OptLevel {
    pub fn from_number(n: u8) -> Option<OptLevel> {
        [OptLevel::O0, OptLevel::O1, OptLevel::O2, OptLevel::O3].get(n as usize).copied()
    }

    pub fn number(self) -> u8 {
        self as u8
    }

    /// `O0`..`O3`.
    pub fn name(self) -> &'static str {
        ["O0", "O1", "O2", "O3"][self as usize]
    }
}

/// A pass: its name (as used in pipelines and `--timing`) and its function.
#[derive(Clone, Copy)]
pub struct Pass {
    pub name: &'static str,
    pub run: fn(&Graph) -> Result<Graph, crate::invariant::Broken>,
}

impl fmt::Debug for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

pub const CONST_FOLD: Pass = Pass { name: "const_fold", run: const_fold::run };
pub const SHAPE_SIMPLIFY: Pass = Pass { name: "shape_simplify", run: shape_simplify::run };
pub const CSE: Pass = Pass { name: "cse", run: cse::run };
pub const DCE: Pass = Pass { name: "dce", run: dce::run };
pub const BN_FOLD: Pass = Pass { name: "bn_fold", run: bn_fold::run };
pub const FUSE: Pass = Pass { name: "fuse", run: fuse::run };
pub const INT8_ACT: Pass = Pass { name: "int8_act", run: int8_act::run };

/// Every pass, by name (for the filetests in `tests/passes/`).
pub const ALL: &[Pass] = &[CONST_FOLD, SHAPE_SIMPLIFY, CSE, DCE, BN_FOLD, FUSE, INT8_ACT];

pub fn by_name(name: &str) -> Option<Pass> {
    ALL.iter().find(|p| p.name == name).copied()
}

/// What to optimize for: the level and the choices a user can make at it.
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    pub level: OptLevel,
    /// Verify the graph after every pass (always on in debug builds).
    pub verify_each: bool,
    /// At -O3, quantize the activations of ternary products to int8 ([`int8_act`]); `false`
    /// keeps them f32 (`--f32-activations`).
    pub int8_activations: bool,
    /// The weights, when known at compile time: the kernel plan's zero-skip decisions use them.
    pub weights: Option<&'a crate::weights::Weights>,
    /// Their quantized codes, when the caller has them (quantized once per compile).
    pub quantized: Option<&'a crate::weights::quant::QuantCache>,
}

impl Options<'_> {
    pub fn new(level: OptLevel) -> Options<'static> {
        Options { level, verify_each: false, int8_activations: true, weights: None, quantized: None }
    }
}

/// The passes each level runs, in order.
pub fn pipeline(opts: &Options<'_>) -> Vec<Pass> {
    let level = opts.level;
    let mut passes = Vec::new();
    if level >= OptLevel::O1 {
        passes.extend([CONST_FOLD, SHAPE_SIMPLIFY, CSE, DCE]);
    }
    if level >= OptLevel::O3 && opts.int8_activations {
        // Before fusion, so the dequantize joins the fused epilogue; CSE then shares one
        // quantization between the products of one activation.
        passes.push(INT8_ACT);
    }
    if level >= OptLevel::O2 {
        // Fold batch norms to affines, clean up the parameter subgraphs, then fuse.
        passes.extend([BN_FOLD, SHAPE_SIMPLIFY, CSE, DCE, FUSE, DCE]);
    }
    passes
}

/// A pass produced a malformed graph, or broke one of its own invariants: a compiler bug.
#[derive(Debug)]
pub struct PassError {
    pub pass: &'static str,
    pub error: PassFault,
    pub graph: String,
}

/// What went wrong in a pass.
#[derive(Debug)]
pub enum PassFault {
    /// The verifier rejected the pass's output.
    Verify(ir::VerifyError),
    /// The pass itself found a broken invariant.
    Broken(crate::invariant::Broken),
}

impl fmt::Display for PassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            PassFault::Verify(e) => write!(
                f,
                "internal compiler error: the graph is malformed after pass `{}`: {e}\n{}",
                self.pass, self.graph
            ),
            PassFault::Broken(b) => write!(f, "in pass `{}`: {b}\n{}", self.pass, self.graph),
        }
    }
}

impl std::error::Error for PassError {}

#[derive(Clone, Debug)]
pub struct Optimized {
    pub graph: Graph,
    pub timings: Timings,
    /// The activation arena (from -O2): `Err` says why the shapes could not be planned ahead.
    pub plan: Option<Result<memory_plan::MemoryPlan, String>>,
    /// Layout (from -O2) and specialization (-O3) choices per product.
    pub kernels: Option<kernel_plan::KernelPlan>,
}

/// Runs a list of passes, timing each and verifying after each when `verify_each`.
pub fn run_passes(g: &Graph, passes: &[Pass], verify_each: bool) -> Result<Optimized, PassError> {
    let verify_each = verify_each || cfg!(debug_assertions);
    let mut timings = Timings::new();
    let mut graph = g.clone();
    if verify_each {
        let r = timings.time("verify", || ir::verify(&graph));
        r.map_err(|e| PassError { pass: "lower", error: PassFault::Verify(e), graph: graph.to_string() })?;
    }
    for p in passes {
        let next = timings.time(p.name, || (p.run)(&graph));
        graph = next.map_err(|b| PassError { pass: p.name, error: PassFault::Broken(b), graph: graph.to_string() })?;
        if verify_each {
            let r = timings.time("verify", || ir::verify(&graph));
            r.map_err(|e| PassError { pass: p.name, error: PassFault::Verify(e), graph: graph.to_string() })?;
        }
    }
    Ok(Optimized { graph, timings, plan: None, kernels: None })
}

/// Optimizes a graph; from -O2 on, also plans the activation arena and the kernels.
pub fn optimize(g: &Graph, opts: &Options<'_>) -> Result<Optimized, PassError> {
    let mut out = run_passes(g, &pipeline(opts), opts.verify_each)?;
    if opts.level >= OptLevel::O2 {
        let plan = out.timings.time("memory_plan", || memory_plan::plan(&out.graph));
        out.plan = Some(plan);
        let kernels =
            out.timings.time("kernel_plan", || kernel_plan::plan(&out.graph, opts.level, opts.weights, opts.quantized));
        out.kernels = Some(kernels);
    }
    Ok(out)
}
