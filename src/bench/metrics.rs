//! Classification metrics: accuracy, confusion matrix, per-class precision / recall / F1.
//!
//! Rules:
//! - `confusion[t][p]` counts examples of true class `t` predicted as `p`.
//! - A class's accuracy is its recall (the share of its examples classified right).
//! - A ratio with a zero denominator (a class never predicted, or absent from the data) is 0,
//!   as scikit-learn reports it; macro-F1 averages F1 over every class.

use serde::{Deserialize, Serialize};

/// Figures of one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: usize,
    /// Examples of the class.
    pub support: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Metrics of a classifier on a labelled split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub examples: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    pub confusion: Vec<Vec<usize>>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl Classification {
    /// Metrics of `predicted` against `labels` over `classes` classes (labels and predictions
    /// at or beyond `classes` are ignored).
    pub fn of(labels: &[usize], predicted: &[usize], classes: usize) -> Classification {
        let mut confusion = vec![vec![0usize; classes]; classes];
        for (&t, &p) in labels.iter().zip(predicted) {
            if t < classes && p < classes {
                confusion[t][p] += 1;
            }
        }
        let examples: usize = confusion.iter().flatten().sum();
        let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
        let per_class: Vec<ClassMetrics> = (0..classes)
            .map(|c| {
                let support: usize = confusion[c].iter().sum();
                let predicted_c: usize = confusion.iter().map(|row| row[c]).sum();
                let tp = confusion[c][c];
                let (precision, recall) = (ratio(tp, predicted_c), ratio(tp, support));
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassMetrics { class: c, support, precision, recall, f1 }
            })
            .collect();
        let macro_f1 = per_class.iter().map(|m| m.f1).sum::<f64>() / classes.max(1) as f64;
        Classification { examples, correct, accuracy: ratio(correct, examples), macro_f1, per_class, confusion }
    }
}

/// The index of the largest value of each row of `[rows, classes]` scores (the first on ties).
pub fn argmax_rows(scores: &[f32], classes: usize) -> Vec<usize> {
    scores
        .chunks(classes.max(1))
        .map(|row| row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_small_confusion() {
        // class 0: 3 examples, 2 right, one predicted 1; class 1: 2 examples, both right;
        // class 2: 1 example predicted 0.
        let labels = [0, 0, 0, 1, 1, 2];
        let pred = [0, 0, 1, 1, 1, 0];
        let m = Classification::of(&labels, &pred, 3);
        assert_eq!(m.confusion, vec![vec![2, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]);
        assert_eq!((m.examples, m.correct), (6, 4));
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let c0 = &m.per_class[0];
        assert_eq!(c0.support, 3);
        assert!((c0.precision - 2.0 / 3.0).abs() < 1e-12 && (c0.recall - 2.0 / 3.0).abs() < 1e-12);
        let c1 = &m.per_class[1];
        assert!((c1.precision - 2.0 / 3.0).abs() < 1e-12 && (c1.recall - 1.0).abs() < 1e-12);
        assert!((c1.f1 - 0.8).abs() < 1e-12);
        // Class 2 is never predicted: precision, recall and F1 are 0.
        assert_eq!((m.per_class[2].precision, m.per_class[2].f1), (0.0, 0.0));
        assert!((m.macro_f1 - (2.0 / 3.0 + 0.8) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax_rows(&[0.1, 0.9, 0.2, 5.0, 5.0, -1.0], 3), vec![1, 0]);
    }
}
