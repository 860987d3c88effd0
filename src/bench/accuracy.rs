//! Accuracy of both sides on a dataset's test split (MNIST, or the shipped sample, by
//! default), or why it is not applicable.
//!
//! Rules: `--data` names any dataset `triton train` reads; it must load and fit the model
//! (an error otherwise). Without it, MNIST is looked up, then the shipped sample; a model
//! MNIST does not fit, or no MNIST, makes accuracy "not applicable", with the reason. Each
//! side's inputs are normalized as its weights file's metadata records.

use super::*;

/// Accuracy of both compiled sides on the dataset's test split, or why it is not applicable.
pub(super) fn measure(
    cfg: &Config,
    model: &CheckedModel,
    infos: &[WeightsInfo],
    compiled: &[Compiled],
    threads: usize,
    progress: &mut dyn Progress,
) -> Result<Accuracy, BenchError> {
    let na = |why: String| Accuracy {
        dataset: None,
        fp32: SideAccuracy::NotApplicable(why.clone()),
        ternary: SideAccuracy::NotApplicable(why),
    };
    progress.step("loading the dataset");
    let g = &model.graph;
    // An explicit --data must load and fit; the default lookup that fails is n/a.
    let loaded = match cfg.data.as_deref() {
        Some(d) => data::load(Some(d), None).map_err(|e| e.to_string()),
        None => data::find_mnist_or_sample().and_then(|d| data::load_mnist(&d)).map_err(|e| e.to_string()),
    };
    let ds = match loaded {
        Ok(ds) => ds,
        Err(e) if cfg.data.is_some() => return Err(user(e)),
        Err(e) => {
            progress.step("accuracy: not applicable");
            return Ok(na(e));
        }
    };
    let dims = match crate::train::check_model(g, &ds) {
        Ok(d) => d,
        Err(e) if cfg.data.is_some() => return Err(user(e)),
        Err(e) => {
            progress.step("accuracy: not applicable");
            return Ok(na(format!("no dataset for this model (give --data; MNIST is the default): {e}")));
        }
    };
    let Some(test) = &ds.test else {
        return Err(user(format!("{} has no test split to measure accuracy on", ds.dir.display())));
    };
    progress.step("accuracy on the test split");
    let classes = g.nodes[g.outputs[0]].ty.shape.get(1).and_then(|d| d.as_known()).map_or(ds.classes, |k| k as usize);
    let mut sides = Vec::new();
    for (c, info) in compiled.iter().zip(infos) {
        if !info.trained() {
            sides.push(SideAccuracy::NotApplicable(format!(
                "seeded initialisation (seed {}): no trained weights; give --weights",
                cfg.seed
            )));
            continue;
        }
        let m = Model::from_artifact(c.bytes.as_ref(), threads).map_err(user)?;
        let unit = Normalization::of(data::Normalize::Unit, test);
        let norm = info.normalization.clone().unwrap_or(unit);
        if !norm.fits(test.dims[0]) {
            return Err(user(format!(
                "{}: its normalization has {} channels; the dataset's examples have {}",
                info.path.as_deref().unwrap_or("the weights"),
                norm.channels(),
                test.dims[0]
            )));
        }
        let (mut labels, mut predicted) = (Vec::new(), Vec::new());
        let order: Vec<usize> = (0..test.len()).collect();
        for chunk in order.chunks(500) {
            let (x, l) = data::batch(test, chunk, &dims, &norm, &data::Augment::default(), None).map_err(user)?;
            let y = m.run(&[x.view()]).map_err(user)?.swap_remove(0);
            let flat: Vec<f32> = y.iter().copied().collect();
            predicted.extend(metrics::argmax_rows(&flat, classes));
            labels.extend(l);
        }
        sides.push(SideAccuracy::Measured(Classification::of(&labels, &predicted, classes)));
    }
    let (Some(ternary), Some(fp32), None) = (sides.pop(), sides.pop(), sides.pop()) else {
        return Err(user("internal error: accuracy is measured on exactly two sides, FP32 and ternary"));
    };
    let dataset = if ds.format == data::Format::Idx && data::is_sample(&ds.dir) {
        format!(
            "the MNIST sample shipped with Triton ({} test images, from {}; the full MNIST was not found: \
             give --data or $TRITON_DATA for the 10,000-image test split)",
            test.len(),
            ds.dir.display()
        )
    } else if ds.format == data::Format::Idx && cfg.data.is_none() {
        format!("MNIST test split ({} images) from {}", test.len(), ds.dir.display())
    } else {
        format!("{} test split ({} examples) from {}", ds.format.name(), test.len(), ds.dir.display())
    };
    Ok(Accuracy { dataset: Some(dataset), fp32, ternary })
}
