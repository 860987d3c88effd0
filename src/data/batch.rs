//! Batches: examples gathered, augmented and normalized into the model's input shape.
//!
//! Rules:
//! - [`fit`] decides whether a model input takes a dataset's examples: the same `[C, H, W]`,
//!   the same with size-1 axes dropped (`[H, W]` for one channel, `[D]` for features), or flat
//!   (`[C*H*W]`, channels first, then rows). Anything else is an error naming both shapes.
//! - Augmentation ([`Augment`]): a random crop with zero padding (a shift of up to `pad`
//!   pixels each way; the padding is a stored 0, normalized like any value) and a horizontal
//!   flip with probability 1/2, drawn from the caller's seeded stream in that order (shift y,
//!   shift x, flip), only for what is enabled — so a run is reproducible from its seed.

use ndarray::{ArrayD, IxDyn};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::Rng;

use super::{DataError, Normalization, Split, describe_dims};

/// Random image augmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Random crop with this much zero padding (a shift of up to `pad` pixels); 0: none.
    pub pad: usize,
    /// Random horizontal flips.
    pub flip: bool,
}

impl Augment {
    pub fn is_none(&self) -> bool {
        self.pad == 0 && !self.flip
    }

    /// `crop:4,flip`, or `none`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.pad > 0 {
            parts.push(format!("crop:{}", self.pad));
        }
        if self.flip {
            parts.push("flip".into());
        }
        if parts.is_empty() { "none".into() } else { parts.join(",") }
    }

    /// Parses `--augment`: `none`, or a comma list of `crop`, `crop:P`, `flip`; a bare `crop`
    /// pads by `default_pad`.
    pub fn parse(s: &str, default_pad: usize) -> Result<Augment, String> {
        let mut a = Augment::default();
        if s == "none" {
            return Ok(a);
        }
        for part in s.split(',').map(str::trim) {
            match part.split_once(':') {
                None if part == "crop" => a.pad = default_pad.max(1),
                None if part == "flip" => a.flip = true,
                Some(("crop", p)) => {
                    a.pad = p.parse().ok().filter(|p| *p >= 1).ok_or_else(|| {
                        format!("--augment: `{part}`: the crop's padding must be a whole number of pixels >= 1")
                    })?
                }
                _ => {
                    return Err(format!(
                        "--augment: unknown `{part}`; expected none, or crop, crop:PIXELS, flip separated by commas"
                    ));
                }
            }
        }
        Ok(a)
    }
}

/// Checks that a model input of per-example `model` dims (batch left out) takes examples of
/// `dims`; `input` names the model's input for the message.
pub fn fit(model: &[usize], dims: [usize; 3], input: &str) -> Result<(), DataError> {
    let squeeze = |d: &[usize]| d.iter().copied().filter(|&v| v != 1).collect::<Vec<_>>();
    let n: usize = dims.iter().product();
    if squeeze(model) == squeeze(&dims) || model == [n] {
        return Ok(());
    }
    let expect = match dims {
        [_, 1, 1] => format!("[B, {n}]"),
        [1, h, w] => format!("[B, 1, {h}, {w}] or [B, {n}] (flattened)"),
        [c, h, w] => format!("[B, {c}, {h}, {w}] (channels first) or [B, {n}] (flattened)"),
    };
    let why = if model.iter().product::<usize>() == n {
        format!("the sizes agree but not the layout: expected {expect}")
    } else {
        format!("{} values per example against {n}; expected {expect}", model.iter().product::<usize>())
    };
    Err(DataError::Input { input: input.to_string(), examples: describe_dims(dims), why })
}

/// Examples `indices` of `split` as a batch `[B, ..model]`, normalized with `norm` and, when
/// `rng` is given, augmented by `aug`; with their labels. The caller has checked [`fit`].
pub fn batch(
    split: &Split,
    indices: &[usize],
    model: &[usize],
    norm: &Normalization,
    aug: &Augment,
    mut rng: Option<&mut ChaCha8Rng>,
) -> Result<(ArrayD<f32>, Vec<usize>), DataError> {
    let [c, rows, cols] = split.dims;
    let per = split.example_len();
    if model.iter().product::<usize>() != per || !norm.fits(c) {
        return Err(DataError::Input {
            input: format!("{model:?}"),
            examples: split.describe_dims(),
            why: format!(
                "a batch needs {} values per example and a normalization of 1 or {c} channels (it has {})",
                per,
                norm.channels()
            ),
        });
    }
    let mut data = Vec::with_capacity(indices.len() * per);
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        let base = i * per;
        let (mut dy, mut dx, mut flip) = (0isize, 0isize, false);
        if let Some(r) = rng.as_deref_mut() {
            if aug.pad > 0 {
                let span = (2 * aug.pad + 1) as u32;
                dy = (r.next_u32() % span) as isize - aug.pad as isize;
                dx = (r.next_u32() % span) as isize - aug.pad as isize;
            }
            if aug.flip {
                flip = r.next_u32() & 1 == 1;
            }
        }
        for ch in 0..c {
            let zero = norm.apply(0.0, ch);
            let plane = base + ch * rows * cols;
            if dy == 0 && dx == 0 && !flip {
                data.extend((0..rows * cols).map(|k| norm.apply(split.pixels.get(plane + k), ch)));
                continue;
            }
            for y in 0..rows as isize {
                for x in 0..cols as isize {
                    let fx = if flip { cols as isize - 1 - x } else { x };
                    let (sy, sx) = (y - dy, fx - dx);
                    let inside = sy >= 0 && sx >= 0 && (sy as usize) < rows && (sx as usize) < cols;
                    data.push(if inside {
                        norm.apply(split.pixels.get(plane + sy as usize * cols + sx as usize), ch)
                    } else {
                        zero
                    });
                }
            }
        }
        labels.push(split.labels[i] as usize);
    }
    let mut full = vec![indices.len()];
    full.extend_from_slice(model);
    let x = ArrayD::from_shape_vec(IxDyn(&full), data).map_err(|e| DataError::Input {
        input: format!("{model:?}"),
        examples: split.describe_dims(),
        why: e.to_string(),
    })?;
    Ok((x, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Normalize, Pixels};
    use rand_chacha::rand_core::SeedableRng;

    fn tiny() -> Split {
        Split { pixels: Pixels::U8((0..2 * 9).map(|v| v as u8 * 10).collect()), labels: vec![3, 7], dims: [1, 3, 3] }
    }

    #[test]
    fn batches_normalise_reshape_and_shift() {
        let s = tiny();
        let unit = Normalization::of(Normalize::Unit, &s);
        let (x, y) = batch(&s, &[1, 0], &[9], &unit, &Augment::default(), None).expect("batch");
        assert_eq!(x.shape(), [2, 9]);
        assert_eq!(y, [7, 3]);
        assert_eq!(x[[0, 0]], 90.0 / 255.0);
        let std = Normalization::of(Normalize::Standard, &s);
        let (x4, _) = batch(&s, &[0], &[1, 3, 3], &std, &Augment::default(), None).expect("batch");
        assert_eq!(x4.shape(), [1, 1, 3, 3]);
        assert!((x4[[0, 0, 0, 0]] - (0.0 - 0.1307) / 0.3081).abs() < 1e-6);
        // Shifts move pixels and fill with the normalised zero; every shift keeps the label.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut moved = false;
        let shift = Augment { pad: 1, flip: false };
        for _ in 0..20 {
            let (xs, ys) = batch(&s, &[0], &[9], &unit, &shift, Some(&mut rng)).expect("batch");
            assert_eq!(ys, [3]);
            let sum: f32 = xs.iter().sum();
            assert!(sum <= x.slice(ndarray::s![1, ..]).sum() + 1e-6);
            moved |= xs.slice(ndarray::s![0, ..]) != x.slice(ndarray::s![1, ..]);
        }
        assert!(moved, "random shifts move the image");
    }

    #[test]
    fn flips_mirror_rows_per_channel_and_dataset_normalization_centres_channels() {
        let s = Split { pixels: Pixels::U8(vec![1, 2, 3, 4, 50, 60, 70, 80]), labels: vec![0], dims: [2, 2, 2] };
        let n = Normalization::of(Normalize::Dataset, &s);
        assert_eq!(n.channels(), 2);
        assert!((n.mean[0] - 2.5 / 255.0).abs() < 1e-7 && (n.mean[1] - 65.0 / 255.0).abs() < 1e-6, "{n:?}");
        let (plain, _) = batch(&s, &[0], &[2, 2, 2], &n, &Augment::default(), None).expect("batch");
        let mean: f32 = plain.iter().take(4).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-5, "channel 0 is centred: {mean}");
        let flip = Augment { pad: 0, flip: true };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut seen = [false; 2];
        for _ in 0..16 {
            let (x, _) = batch(&s, &[0], &[2, 2, 2], &n, &flip, Some(&mut rng)).expect("batch");
            let flipped = x[[0, 0, 0, 0]] == plain[[0, 0, 0, 1]];
            if flipped {
                assert_eq!(x[[0, 1, 1, 0]], plain[[0, 1, 1, 1]], "every channel flips together");
            } else {
                assert_eq!(x, plain);
            }
            seen[usize::from(flipped)] = true;
        }
        assert_eq!(seen, [true, true], "flips happen about half the time");
    }

    #[test]
    fn model_inputs_fit_or_are_refused_with_both_shapes() {
        assert!(fit(&[1, 28, 28], [1, 28, 28], "x").is_ok());
        assert!(fit(&[28, 28], [1, 28, 28], "x").is_ok());
        assert!(fit(&[784], [1, 28, 28], "x").is_ok());
        assert!(fit(&[3072], [3, 32, 32], "x").is_ok());
        assert!(fit(&[10], [10, 1, 1], "x").is_ok());
        let err = fit(&[32, 32, 3], [3, 32, 32], "x: f32[B, 32, 32, 3]").expect_err("layout");
        assert!(
            err.to_string().contains("sizes agree but not the layout") && err.to_string().contains("[B, 3, 32, 32]"),
            "{err}"
        );
        let err = fit(&[784], [3, 32, 32], "x: f32[B, 784]").expect_err("size");
        assert!(err.to_string().contains("784 values per example against 3072"), "{err}");
    }

    #[test]
    fn augment_lists_parse_and_refuse_unknown_parts() {
        assert_eq!(Augment::parse("crop,flip", 4), Ok(Augment { pad: 4, flip: true }));
        assert_eq!(Augment::parse("crop:2", 4), Ok(Augment { pad: 2, flip: false }));
        assert_eq!(Augment::parse("none", 4), Ok(Augment::default()));
        assert!(Augment::parse("rotate", 4).expect_err("unknown").contains("unknown `rotate`"));
        assert!(Augment::parse("crop:0", 4).is_err());
    }
}
