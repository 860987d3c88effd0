//! Checkpoints: a run's [`State`] after an epoch, so `--resume` continues it bit for bit.
//!
//! Rules:
//! - A checkpoint is a safetensors file: `latent/NAME`, `adam.m/NAME`, `adam.v/NAME` (the
//!   optimizer's moments, where it has them) and `best/NAME` (the best validation epoch's
//!   values) for every parameter, and metadata: `triton_checkpoint` (the format version),
//!   `model`, `source_blake3`, `config` (the run's [`TrainConfig`] as JSON) and `state`
//!   (epochs done, optimizer steps, the random stream's position, the best epoch, the logs).
//! - Resuming checks the model (same name and parameters) and the configuration: every
//!   setting but `epochs` and `patience` must be the one the checkpoint was made with, or the
//!   run would not be the one that was interrupted; a difference is an error naming it.
//! - A checkpoint is written atomically (never half a file), so an interrupted write leaves the
//!   previous one.

use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};
use triton_compiler::interp::Weights;
use triton_compiler::ir::Graph;

use super::{EpochLog, Optimizer, State, TrainConfig, TrainError, training_graph};

const VERSION: &str = "1";

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    epochs_done: usize,
    steps: i32,
    rng_word_pos: String,
    best_epoch: Option<usize>,
    best_accuracy: Option<f64>,
    best_loss: Option<f64>,
    since_best: usize,
    logs: Vec<EpochLog>,
}

/// A checkpoint read back: the state and what it was made from.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub state: State,
    pub model: String,
    pub source_blake3: String,
    pub config: serde_json::Value,
}

fn fail(why: impl Into<String>) -> TrainError {
    TrainError::Checkpoint(why.into())
}

/// The configuration as compared on resume (without `epochs` and `patience`).
fn comparable(cfg: &TrainConfig) -> serde_json::Value {
    // Through text, as the checkpoint stores it (f32 values print as their shortest form).
    let text = serde_json::to_string(cfg).unwrap_or_default();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("epochs");
        o.remove("patience");
    }
    v
}

/// The checkpoint file's bytes for `state`.
pub fn encode(
    g: &Graph,
    state: &State,
    cfg: &TrainConfig,
    model: &str,
    source_blake3: &str,
) -> Result<Vec<u8>, TrainError> {
    let (g, _) = training_graph(g);
    let (steps, first, second) = state.opt.moments();
    let mut tensors = HashMap::new();
    for (i, p) in g.params.iter().enumerate() {
        tensors.insert(format!("latent/{}", p.name), state.latent[i].clone());
        if let Some(m) = &first[i] {
            tensors.insert(format!("adam.m/{}", p.name), m.clone());
        }
        if let Some(v) = &second[i] {
            tensors.insert(format!("adam.v/{}", p.name), v.clone());
        }
        if let Some((_, _, _, best)) = &state.best {
            tensors.insert(format!("best/{}", p.name), best[i].clone());
        }
    }
    let meta = Meta {
        epochs_done: state.epochs_done,
        steps,
        rng_word_pos: state.rng_word_pos.to_string(),
        best_epoch: state.best.as_ref().map(|b| b.0),
        best_accuracy: state.best.as_ref().map(|b| b.1),
        best_loss: state.best.as_ref().map(|b| b.2),
        since_best: state.since_best,
        logs: state.logs.clone(),
    };
    let mut md = HashMap::new();
    md.insert("triton_checkpoint".to_string(), VERSION.to_string());
    md.insert("model".to_string(), model.to_string());
    md.insert("source_blake3".to_string(), source_blake3.to_string());
    md.insert("config".to_string(), serde_json::to_string(cfg).map_err(|e| fail(e.to_string()))?);
    md.insert("state".to_string(), serde_json::to_string(&meta).map_err(|e| fail(e.to_string()))?);
    Weights { tensors }.to_safetensors(Some(md)).map_err(|e| fail(e.to_string()))
}

/// Reads a checkpoint for `g`; `what` names the file in messages.
pub fn decode(bytes: &[u8], g: &Graph, cfg: &TrainConfig, what: &str) -> Result<Checkpoint, TrainError> {
    let (g, _) = training_graph(g);
    let bad = |why: String| fail(format!("`{what}` is not a usable training checkpoint: {why}"));
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let md = header.metadata().clone().unwrap_or_default();
    match md.get("triton_checkpoint").map(String::as_str) {
        Some(VERSION) => {}
        Some(v) => return Err(bad(format!("checkpoint format {v}; this Triton reads format {VERSION}"))),
        None => {
            return Err(
                bad("it has no `triton_checkpoint` metadata (a weights file is resumed with --weights)".into()),
            );
        }
    }
    let get = |k: &str| md.get(k).cloned().ok_or_else(|| bad(format!("its metadata has no `{k}`")));
    let meta: Meta = serde_json::from_str(&get("state")?).map_err(|e| bad(format!("`state`: {e}")))?;
    let config: serde_json::Value = serde_json::from_str(&get("config")?).map_err(|e| bad(format!("`config`: {e}")))?;
    let mut saved = config.clone();
    if let Some(o) = saved.as_object_mut() {
        o.remove("epochs");
        o.remove("patience");
    }
    let now = comparable(cfg);
    if saved != now {
        let (Some(a), Some(b)) = (saved.as_object(), now.as_object()) else {
            return Err(bad("`config` is not an object".into()));
        };
        let differ: Vec<String> = b
            .iter()
            .filter(|(k, v)| a.get(*k) != Some(v))
            .map(|(k, v)| {
                format!("{k}: {} in the checkpoint, {v} now", a.get(k).map_or("absent".into(), |x| x.to_string()))
            })
            .collect();
        return Err(fail(format!(
            "`{what}` was made with other settings; resume with the same ones (only --epochs and --patience may change): {}",
            differ.join("; ")
        )));
    }
    let tensor = |name: &str, shape: &[u64]| -> Result<Option<ArrayD<f32>>, TrainError> {
        let Ok(view) = st.tensor(name) else { return Ok(None) };
        let want: Vec<usize> = shape.iter().map(|d| *d as usize).collect();
        if view.dtype() != safetensors::Dtype::F32 || view.shape() != want.as_slice() {
            return Err(bad(format!(
                "`{name}` is {:?}{:?}, the model's parameter F32{want:?}: it was made for another model",
                view.dtype(),
                view.shape()
            )));
        }
        let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        ArrayD::from_shape_vec(IxDyn(&want), data).map(Some).map_err(|e| bad(e.to_string()))
    };
    let (mut latent, mut first, mut second, mut best) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for p in &g.params {
        latent.push(
            tensor(&format!("latent/{}", p.name), &p.shape)?
                .ok_or_else(|| bad(format!("it has no `latent/{}`: it was made for another model", p.name)))?,
        );
        first.push(tensor(&format!("adam.m/{}", p.name), &p.shape)?);
        second.push(tensor(&format!("adam.v/{}", p.name), &p.shape)?);
        best.push(tensor(&format!("best/{}", p.name), &p.shape)?);
    }
    let expected = g.params.len() * 4;
    if st.names().len() > expected {
        return Err(bad(format!(
            "it holds {} tensors; the model's parameters account for at most {expected}",
            st.names().len()
        )));
    }
    let best = match (meta.best_epoch, meta.best_accuracy, meta.best_loss) {
        (Some(e), Some(a), Some(l)) => {
            let values: Option<Vec<ArrayD<f32>>> = best.into_iter().collect();
            Some((e, a, l, values.ok_or_else(|| bad("its best epoch's values are incomplete".into()))?))
        }
        _ => None,
    };
    let rng_word_pos = meta.rng_word_pos.parse().map_err(|_| bad("`state.rng_word_pos` is not a number".into()))?;
    let optim = cfg.optim;
    Ok(Checkpoint {
        state: State {
            latent,
            opt: Optimizer::restore(optim, meta.steps, first, second),
            rng_word_pos,
            epochs_done: meta.epochs_done,
            best,
            since_best: meta.since_best,
            logs: meta.logs,
        },
        model: get("model")?,
        source_blake3: get("source_blake3")?,
        config,
    })
}
