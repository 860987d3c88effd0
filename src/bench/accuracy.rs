//! Accuracy of both sides on MNIST's test split (or the shipped sample), or why it is not
//! applicable.

use super::*;

/// Accuracy of both compiled sides on MNIST's test split, or why it is not applicable.
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
    let shape = match crate::train::input_shape(g, &data::Split { images: vec![], labels: vec![], rows: 28, cols: 28 })
        .and_then(|s| crate::train::check_output(g).map(|()| s))
    {
        Ok(s) => s,
        Err(e) => {
            progress.step("accuracy: not applicable");
            return Ok(na(format!("no dataset for this model (MNIST is the one Triton reads): {e}")));
        }
    };
    // An explicit --data must be found; the default lookup falls back to the shipped sample.
    let found = match cfg.data.as_deref() {
        Some(d) => data::find_mnist(Some(d)),
        None => data::find_mnist_or_sample(),
    };
    let mnist = match found.map_err(|e| e.to_string()).and_then(|d| {
        // An explicit --data that fails is an error; a default lookup that fails is n/a.
        data::load_mnist(&d).map_err(|e| e.to_string())
    }) {
        Ok(m) => m,
        Err(e) if cfg.data.is_some() => return Err(user(e)),
        Err(e) => {
            progress.step("accuracy: not applicable");
            return Ok(na(e));
        }
    };
    progress.step("accuracy on MNIST's test split");
    let test = &mnist.test;
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
        let norm = Normalize::from_name(&info.normalize).unwrap_or(Normalize::Unit);
        let (mut labels, mut predicted) = (Vec::new(), Vec::new());
        let order: Vec<usize> = (0..test.len()).collect();
        for chunk in order.chunks(500) {
            let (x, l) = data::batch(test, chunk, &shape, norm, 0, None).map_err(user)?;
            let y = m.run(&[x.view()]).map_err(user)?.swap_remove(0);
            let flat: Vec<f32> = y.iter().copied().collect();
            predicted.extend(metrics::argmax_rows(&flat, CLASSES));
            labels.extend(l);
        }
        sides.push(SideAccuracy::Measured(Classification::of(&labels, &predicted, CLASSES)));
    }
    let (Some(ternary), Some(fp32), None) = (sides.pop(), sides.pop(), sides.pop()) else {
        return Err(user("internal error: accuracy is measured on exactly two sides, FP32 and ternary"));
    };
    Ok(Accuracy {
        dataset: Some(if data::is_sample(&mnist.dir) {
            format!(
                "the MNIST sample shipped with Triton ({} test images, from {}; the full MNIST was not found: \
                 give --data or $TRITON_DATA for the 10,000-image test split)",
                test.len(),
                mnist.dir.display()
            )
        } else {
            format!("MNIST test split ({} images) from {}", test.len(), mnist.dir.display())
        }),
        fp32,
        ternary,
    })
}
