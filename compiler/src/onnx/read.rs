//! Reading an ONNX file into a checked, plain graph ([`Graph`]).
//!
//! Rules:
//! - The protobuf is decoded by `prost` (types generated from the vendored `onnx.proto`); a
//!   truncated or malformed file is an error naming what failed, never a panic. prost checks
//!   every length against the bytes present, so a claim of 2 GB in a 1 KB file fails at once.
//! - Every tensor is checked before anything is allocated for it: dimensions are non-negative,
//!   the element count fits the machine's memory (`limits`), stored data has exactly the bytes
//!   the shape implies. External data (`data_location = EXTERNAL`) is read from its file beside
//!   the model, checked the same way; a missing file or a range past its end is an error.
//! - Nodes must come in an order where every input is produced before it is read (ONNX requires
//!   a topological order); otherwise the graph has a cycle or a dangling input, and the error
//!   names the node and the value.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;

use super::proto;
use crate::limits;

/// Why a file could not be read as an ONNX model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    #[error("not an ONNX model (the protobuf does not decode: {0})")]
    Decode(String),
    #[error("the ONNX model has no graph")]
    NoGraph,
    #[error("ONNX opset {0}: `triton import` reads opset 11 and later (re-export the model with a newer opset)")]
    Opset(i64),
    #[error("tensor `{name}`: {why}")]
    Tensor { name: String, why: String },
    #[error("node `{node}` ({op}) reads `{value}`, which no earlier node, initializer or input produces{hint}")]
    Dangling { node: String, op: String, value: String, hint: &'static str },
    #[error("value `{0}` is produced twice")]
    Twice(String),
    #[error("input `{name}`: {why}")]
    Input { name: String, why: String },
}

/// A constant tensor (an initializer or a `Constant` node's value).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub data: Data,
}

/// A tensor's values, widened to f32 or i64.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Tensor {
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (integers converted).
    pub fn f32s(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|x| *x as f32).collect(),
        }
    }

    /// The values as integers, when they are integers.
    pub fn i64s(&self) -> Option<Vec<i64>> {
        match &self.data {
            Data::I64(v) => Some(v.clone()),
            Data::F32(v) => v.iter().all(|x| x.fract() == 0.0).then(|| v.iter().map(|x| *x as i64).collect()),
        }
    }
}

/// An attribute's value (the kinds the importer reads; others keep only their kind's name).
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Str(String),
    Tensor(Tensor),
    Other(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The node's name, or `op_N` when it has none.
    pub name: String,
    pub op: String,
    pub domain: String,
    /// Input value names (`""`: an optional input left out).
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: HashMap<String, Attr>,
}

impl Node {
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.attrs.get(name) {
            Some(Attr::Int(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        match self.attrs.get(name) {
            Some(Attr::Float(v)) => Some(*v),
            Some(Attr::Int(v)) => Some(*v as f32),
            _ => None,
        }
    }

    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        match self.attrs.get(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }

    pub fn string(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(Attr::Str(v)) => Some(v),
            _ => None,
        }
    }
}

/// A dimension of a graph input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputDim {
    Fixed(usize),
    /// A named (symbolic) or unknown dimension.
    Free(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub name: String,
    pub dims: Vec<InputDim>,
}

/// A decoded, checked ONNX graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub producer: String,
    /// The default domain's opset.
    pub opset: i64,
    /// Inputs that are not initializers.
    pub inputs: Vec<Input>,
    pub outputs: Vec<String>,
    pub nodes: Vec<Node>,
    pub initializers: HashMap<String, Tensor>,
}

/// Decodes and checks `bytes`; external data files are looked up in `dir`.
pub fn read(bytes: &[u8], dir: Option<&Path>) -> Result<Graph, ReadError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| ReadError::Decode(e.to_string()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .unwrap_or(1);
    if opset < 11 {
        return Err(ReadError::Opset(opset));
    }
    let g = model.graph.ok_or(ReadError::NoGraph)?;
    let mut initializers = HashMap::new();
    for t in &g.initializer {
        let name = t.name.clone().unwrap_or_default();
        initializers.insert(name.clone(), tensor(t, &name, dir)?);
    }
    let mut inputs = Vec::new();
    for vi in g.input.iter().filter(|v| !initializers.contains_key(v.name())) {
        inputs.push(input(vi)?);
    }
    let mut nodes = Vec::new();
    let mut known: HashSet<String> =
        initializers.keys().cloned().chain(inputs.iter().map(|i| i.name.clone())).collect();
    for (i, n) in g.node.iter().enumerate() {
        let op = n.op_type.clone().unwrap_or_default();
        let name = n.name.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| format!("{op}_{i}"));
        for v in n.input.iter().filter(|v| !v.is_empty()) {
            if !known.contains(v) {
                let later = g.node[i..].iter().any(|m| m.output.contains(v));
                let hint = if later { " (it is produced later: the graph has a cycle or is out of order)" } else { "" };
                return Err(ReadError::Dangling { node: name, op, value: v.clone(), hint });
            }
        }
        let mut attrs = HashMap::new();
        for a in &n.attribute {
            attrs.insert(a.name().to_string(), attr(a, &name, dir)?);
        }
        for v in n.output.iter().filter(|v| !v.is_empty()) {
            if !known.insert(v.clone()) {
                return Err(ReadError::Twice(v.clone()));
            }
        }
        nodes.push(Node {
            name,
            op,
            domain: n.domain.clone().unwrap_or_default(),
            inputs: n.input.clone(),
            outputs: n.output.clone(),
            attrs,
        });
    }
    let outputs: Vec<String> = g.output.iter().map(|o| o.name().to_string()).collect();
    if let Some(o) = outputs.iter().find(|o| !known.contains(*o)) {
        return Err(ReadError::Dangling {
            node: "the graph's outputs".into(),
            op: "output".into(),
            value: o.clone(),
            hint: "",
        });
    }
    Ok(Graph {
        name: g.name.clone().unwrap_or_default(),
        producer: model.producer_name.clone().unwrap_or_default(),
        opset,
        inputs,
        outputs,
        nodes,
        initializers,
    })
}

fn input(vi: &proto::ValueInfoProto) -> Result<Input, ReadError> {
    use proto::tensor_shape_proto::dimension::Value as D;
    use proto::type_proto::Value as T;
    let name = vi.name().to_string();
    let fail = |why: &str| ReadError::Input { name: name.clone(), why: why.to_string() };
    let Some(T::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(fail("not a tensor"));
    };
    if t.elem_type() != proto::tensor_proto::DataType::Float as i32 {
        return Err(fail(&format!("element type {}; only float32 inputs are imported", dtype_name(t.elem_type()))));
    }
    let shape = t.shape.as_ref().ok_or_else(|| fail("no shape"))?;
    let dims = shape
        .dim
        .iter()
        .enumerate()
        .map(|(i, d)| match &d.value {
            Some(D::DimValue(v)) if *v >= 0 => Ok(InputDim::Fixed(*v as usize)),
            Some(D::DimValue(v)) => Err(fail(&format!("dimension {i} is {v}"))),
            Some(D::DimParam(p)) => Ok(InputDim::Free(p.clone())),
            None => Ok(InputDim::Free(String::new())),
        })
        .collect::<Result<_, _>>()?;
    Ok(Input { name, dims })
}

fn dtype_name(t: i32) -> String {
    proto::tensor_proto::DataType::try_from(t).map_or_else(|_| format!("#{t}"), |d| d.as_str_name().to_lowercase())
}

fn attr(a: &proto::AttributeProto, node: &str, dir: Option<&Path>) -> Result<Attr, ReadError> {
    use proto::attribute_proto::AttributeType as A;
    Ok(match a.r#type() {
        A::Int => Attr::Int(a.i()),
        A::Float => Attr::Float(a.f()),
        A::Ints => Attr::Ints(a.ints.clone()),
        A::Floats => Attr::Floats(a.floats.clone()),
        A::String => Attr::Str(String::from_utf8_lossy(a.s()).into_owned()),
        A::Tensor => match &a.t {
            Some(t) => Attr::Tensor(tensor(t, &format!("{node}.{}", a.name()), dir)?),
            None => Attr::Other("tensor"),
        },
        A::Graph | A::Graphs => Attr::Other("graph"),
        A::SparseTensor | A::SparseTensors => Attr::Other("sparse tensor"),
        A::Strings => Attr::Other("strings"),
        A::Tensors => Attr::Other("tensors"),
        A::TypeProto | A::TypeProtos => Attr::Other("type"),
        A::Undefined => Attr::Other("undefined"),
    })
}

/// Decodes a tensor, checking its size against its data and the machine's memory.
fn tensor(t: &proto::TensorProto, name: &str, dir: Option<&Path>) -> Result<Tensor, ReadError> {
    use proto::tensor_proto::DataType as T;
    let fail = |why: String| ReadError::Tensor { name: name.to_string(), why };
    let mut dims = Vec::with_capacity(t.dims.len());
    for (i, &d) in t.dims.iter().enumerate() {
        if d < 0 {
            return Err(fail(format!("dimension {i} is {d}")));
        }
        dims.push(d as usize);
    }
    let count = dims
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .ok_or_else(|| fail(format!("shape {dims:?} overflows")))?;
    let dtype = t.data_type();
    let width: u64 = match T::try_from(dtype) {
        Ok(T::Float) | Ok(T::Int32) => 4,
        Ok(T::Int64) | Ok(T::Double) => 8,
        _ => {
            return Err(fail(format!(
                "element type {}; the importer reads float, double, int32 and int64",
                dtype_name(dtype)
            )));
        }
    };
    let bytes = count.checked_mul(width).ok_or_else(|| fail(format!("shape {dims:?} overflows")))?;
    limits::check_alloc(&format!("ONNX tensor `{name}` {dims:?}"), Some(bytes)).map_err(fail)?;
    let n = count as usize;
    let external = t.data_location() == proto::tensor_proto::DataLocation::External;
    let raw: Option<Vec<u8>> =
        if external { Some(external_data(t, bytes, dir).map_err(fail)?) } else { t.raw_data.clone() };
    let data = match raw {
        Some(raw) => {
            if raw.len() as u64 != bytes {
                return Err(fail(format!("{dims:?} needs {bytes} bytes of data, the file has {}", raw.len())));
            }
            match T::try_from(dtype) {
                Ok(T::Float) => {
                    Data::F32(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
                }
                Ok(T::Double) => Data::F32(
                    raw.chunks_exact(8)
                        .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
                        .collect(),
                ),
                Ok(T::Int32) => Data::I64(
                    raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64).collect(),
                ),
                _ => Data::I64(
                    raw.chunks_exact(8)
                        .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                        .collect(),
                ),
            }
        }
        None => {
            let (data, have) = match T::try_from(dtype) {
                Ok(T::Float) => (Data::F32(t.float_data.clone()), t.float_data.len()),
                Ok(T::Double) => (Data::F32(t.double_data.iter().map(|v| *v as f32).collect()), t.double_data.len()),
                Ok(T::Int32) => (Data::I64(t.int32_data.iter().map(|v| i64::from(*v)).collect()), t.int32_data.len()),
                _ => (Data::I64(t.int64_data.clone()), t.int64_data.len()),
            };
            if have != n {
                return Err(fail(format!("{dims:?} holds {n} values, the file has {have}")));
            }
            data
        }
    };
    Ok(Tensor { dims, data })
}

/// The bytes of an external tensor: `location` (relative to the model's folder), `offset` and
/// `length` from its entries, checked against the file.
fn external_data(t: &proto::TensorProto, bytes: u64, dir: Option<&Path>) -> Result<Vec<u8>, String> {
    let entry = |k: &str| t.external_data.iter().find(|e| e.key() == k).map(|e| e.value().to_string());
    let location = entry("location").ok_or("its data is external but has no `location`")?;
    let rel = Path::new(&location);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(format!("external data `{location}` must be a path inside the model's folder"));
    }
    let dir = dir
        .ok_or_else(|| format!("its data is in external file `{location}`, and the model was not read from a file"))?;
    let path = dir.join(rel);
    let offset: u64 =
        entry("offset").map_or(Ok(0), |v| v.parse()).map_err(|_| "external data `offset` is not a number")?;
    let length: u64 =
        entry("length").map_or(Ok(bytes), |v| v.parse()).map_err(|_| "external data `length` is not a number")?;
    if length != bytes {
        return Err(format!("external data of {length} bytes for a tensor of {bytes}"));
    }
    let size = std::fs::metadata(&path).map_err(|e| format!("external data file `{}`: {e}", path.display()))?.len();
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "external data `{}` holds {size} bytes; the tensor needs {offset}..{}",
            path.display(),
            offset.saturating_add(length)
        ));
    }
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&path).map_err(|e| format!("external data file `{}`: {e}", path.display()))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    let mut out = vec![0u8; length as usize];
    f.read_exact(&mut out).map_err(|e| format!("external data file `{}`: {e}", path.display()))?;
    Ok(out)
}
