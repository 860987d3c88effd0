//! The IR's text form, as printed by `triton compile --emit ir` and read by [`super::parse`].
//!
//! ```text
//! graph MnistMlp
//! param 0 "fc1.w": trit[256, 784] weight quant=absmean init=kaiming
//! param 1 "fc1.b": f32[256] param init=zeros
//! %0 = input "x" : f32[B, 784]
//! %1 = param 0 : trit[256, 784]
//! %2 = matmul %0, %1 : f32[B, 256]
//! %3 = conv2d %a, %b {stride=[2, 2], padding=[1, 1], dilation=[1, 1], groups=1} : f32[B, 64, 16, 16]
//! output %3
//! ```
//!
//! Rules: the text is a complete description (print -> parse -> print is the identity); f32
//! values print in their shortest round-tripping form; spans are not printed.

use std::fmt::{self, Write};

use super::graph::{Graph, Init};
use super::op::{FusedBase, Op};

fn pair(v: [i64; 2]) -> String {
    format!("[{}, {}]", v[0], v[1])
}

/// The attribute block of an op, e.g. ` {axis=1}`, or "" when it has none.
pub fn attrs(op: &Op) -> String {
    match op {
        Op::Conv2d(a) => format!(
            " {{stride={}, padding={}, dilation={}, groups={}}}",
            pair(a.stride),
            pair(a.padding),
            pair(a.dilation),
            a.groups
        ),
        Op::BatchNorm { eps } | Op::LayerNorm { eps } | Op::RmsNorm { eps } => format!(" {{eps={eps:?}}}"),
        Op::Softmax { axis } | Op::Reduce { axis, .. } => format!(" {{axis={axis}}}"),
        Op::Rope { theta } => format!(" {{theta={theta:?}}}"),
        Op::Slice { axis, start, end } => format!(" {{axis={axis}, start={start}, end={end}}}"),
        Op::MaxPool2d(a) | Op::AvgPool2d(a) => {
            format!(" {{kernel={}, stride={}, padding={}}}", pair(a.kernel), pair(a.stride), pair(a.padding))
        }
        Op::Permute { perm } => {
            let dims: Vec<String> = perm.iter().map(|a| a.to_string()).collect();
            format!(" {{dims=[{}]}}", dims.join(", "))
        }
        Op::Reshape { shape } => {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!(" {{shape=[{}]}}", dims.join(", "))
        }
        Op::Concat { axis } => format!(" {{axis={axis}}}"),
        Op::QuantizeI8 { scale: Some(s) } => format!(" {{scale={s:?}}}"),
        Op::Fused(f) => {
            let mut parts = Vec::new();
            if let FusedBase::Conv2d(a) = f.base {
                parts.push(format!(
                    "stride={}, padding={}, dilation={}, groups={}",
                    pair(a.stride),
                    pair(a.padding),
                    pair(a.dilation),
                    a.groups
                ));
            }
            let mut epilogue = Vec::new();
            for (on, name) in [(f.scale, "scale"), (f.bias, "bias"), (f.residual, "residual")] {
                if on {
                    epilogue.push(name.to_string());
                }
            }
            if let Some(act) = f.act {
                epilogue.push(act.name().to_string());
            }
            parts.push(format!("epilogue=[{}]", epilogue.join(", ")));
            format!(" {{{}}}", parts.join(", "))
        }
        Op::Input { .. }
        | Op::Param { .. }
        | Op::Const { .. }
        | Op::Matmul
        | Op::BatchMatmul
        | Op::CausalMask
        | Op::Embedding
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::GlobalAvgPool
        | Op::QuantizeI8 { scale: None }
        | Op::Dequantize => String::new(),
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "graph {}", self.name)?;
        for (i, p) in self.params.iter().enumerate() {
            let dims: Vec<String> = p.shape.iter().map(|d| d.to_string()).collect();
            write!(f, "param {i} {:?}: {}[{}] {}", p.name, p.dtype, dims.join(", "), p.kind.keyword())?;
            if let Some(q) = p.quant {
                write!(f, " quant={}", q.name())?;
            }
            match p.init {
                Init::Kaiming => f.write_str(" init=kaiming")?,
                Init::Zeros => f.write_str(" init=zeros")?,
                Init::Ones => f.write_str(" init=ones")?,
                Init::Const(v) => write!(f, " init={v:?}")?,
            }
            writeln!(f)?;
        }
        for (id, node) in self.nodes.iter() {
            let mut line = format!("%{} = {}", id.index(), node.op.name());
            match &node.op {
                Op::Input { index } => {
                    let name = self.inputs.get(*index).map_or("?", |(n, _)| n.as_str());
                    write!(line, " {name:?}")?;
                }
                Op::Param { index } => write!(line, " {index}")?,
                Op::Const { value } => write!(line, " {value:?}")?,
                _ => {}
            }
            let args: Vec<String> = node.args.iter().map(|a| format!("%{}", a.index())).collect();
            if !args.is_empty() {
                write!(line, " {}", args.join(", "))?;
            }
            line.push_str(&attrs(&node.op));
            writeln!(f, "{line} : {}", node.ty)?;
        }
        for o in &self.outputs {
            writeln!(f, "output %{}", o.index())?;
        }
        Ok(())
    }
}
