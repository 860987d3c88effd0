//! Optimizers (Adam with decoupled weight decay, SGD with momentum) and learning-rate
//! schedules. Deterministic: no randomness, fixed update order.

use ndarray::{ArrayD, Zip};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Schedule {
    /// Cosine decay from the base rate to zero over the run.
    Cosine,
    /// Divide by 10 at 50% and 75% of the run.
    Step,
    Constant,
}

impl Schedule {
    /// The learning rate at `step` of `total`.
    pub fn rate(self, base: f32, step: usize, total: usize) -> f32 {
        let t = step as f32 / total.max(1) as f32;
        match self {
            Schedule::Cosine => base * 0.5 * (1.0 + (std::f32::consts::PI * t).cos()),
            Schedule::Step => {
                base * if t < 0.5 {
                    1.0
                } else if t < 0.75 {
                    0.1
                } else {
                    0.01
                }
            }
            Schedule::Constant => base,
        }
    }
}

/// Hyper-parameters of an optimizer.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    pub weight_decay: f32,
    /// SGD momentum.
    pub momentum: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl OptimConfig {
    pub fn new(kind: OptimizerKind, weight_decay: f32) -> OptimConfig {
        OptimConfig { kind, weight_decay, momentum: 0.9, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// One parameter's moment estimate (absent until it has a gradient).
pub type Moment = Option<ArrayD<f32>>;

/// Per-parameter state.
#[derive(Clone, Debug)]
pub struct Optimizer {
    cfg: OptimConfig,
    first: Vec<Option<ArrayD<f32>>>,
    second: Vec<Option<ArrayD<f32>>>,
    steps: i32,
}

impl Optimizer {
    pub fn new(cfg: OptimConfig, params: usize) -> Optimizer {
        Optimizer { cfg, first: vec![None; params], second: vec![None; params], steps: 0 }
    }

    /// The state that a checkpoint keeps: steps taken and the first and second moments.
    pub fn moments(&self) -> (i32, &[Moment], &[Moment]) {
        (self.steps, &self.first, &self.second)
    }

    /// An optimizer continuing from [`Optimizer::moments`].
    pub fn restore(
        cfg: OptimConfig,
        steps: i32,
        first: Vec<Option<ArrayD<f32>>>,
        second: Vec<Option<ArrayD<f32>>>,
    ) -> Optimizer {
        Optimizer { cfg, first, second, steps }
    }

    /// One update of every parameter with a gradient; `decay[i]` says whether weight decay
    /// applies to parameter `i` (weights, not biases or batch-norm affines).
    pub fn step(&mut self, params: &mut [&mut ArrayD<f32>], grads: &[Option<ArrayD<f32>>], decay: &[bool], lr: f32) {
        self.steps += 1;
        let c = self.cfg;
        let (bc1, bc2) = (1.0 - c.beta1.powi(self.steps), 1.0 - c.beta2.powi(self.steps));
        for (i, p) in params.iter_mut().enumerate() {
            let Some(g) = &grads[i] else { continue };
            let wd = if decay[i] { c.weight_decay } else { 0.0 };
            match c.kind {
                OptimizerKind::Adam => {
                    let m = self.first[i].get_or_insert_with(|| ArrayD::zeros(g.raw_dim()));
                    let v = self.second[i].get_or_insert_with(|| ArrayD::zeros(g.raw_dim()));
                    Zip::from(&mut **p).and(m).and(v).and(g).for_each(|p, m, v, &g| {
                        *m = c.beta1 * *m + (1.0 - c.beta1) * g;
                        *v = c.beta2 * *v + (1.0 - c.beta2) * g * g;
                        let update = (*m / bc1) / ((*v / bc2).sqrt() + c.eps);
                        *p -= lr * (update + wd * *p);
                    });
                }
                OptimizerKind::Sgd => {
                    let m = self.first[i].get_or_insert_with(|| ArrayD::zeros(g.raw_dim()));
                    Zip::from(&mut **p).and(m).and(g).for_each(|p, m, &g| {
                        let g = g + wd * *p;
                        *m = c.momentum * *m + g;
                        *p -= lr * *m;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    /// Both optimizers minimise a quadratic; weight decay pulls towards zero.
    #[test]
    fn optimizers_descend_a_quadratic() {
        for kind in [OptimizerKind::Adam, OptimizerKind::Sgd] {
            let mut p = ArrayD::from_elem(IxDyn(&[3]), 5.0f32);
            let mut opt = Optimizer::new(OptimConfig::new(kind, 0.0), 1);
            for _ in 0..500 {
                let g = p.mapv(|v| 2.0 * (v - 1.0));
                opt.step(&mut [&mut p], &[Some(g)], &[true], 0.05);
            }
            assert!(p.iter().all(|v| (v - 1.0).abs() < 1e-2), "{kind:?}: {p}");
        }
        let mut p = ArrayD::from_elem(IxDyn(&[1]), 1.0f32);
        let mut opt = Optimizer::new(OptimConfig::new(OptimizerKind::Sgd, 0.5), 1);
        opt.step(&mut [&mut p], &[Some(ArrayD::zeros(IxDyn(&[1])))], &[true], 0.1);
        assert!((p[[0]] - 0.95).abs() < 1e-6);
    }

    #[test]
    fn schedules_start_at_the_base_rate_and_decay() {
        assert_eq!(Schedule::Cosine.rate(1.0, 0, 100), 1.0);
        assert!(Schedule::Cosine.rate(1.0, 100, 100) < 1e-6);
        assert!((Schedule::Cosine.rate(1.0, 50, 100) - 0.5).abs() < 1e-6);
        assert_eq!(Schedule::Step.rate(1.0, 60, 100), 0.1);
        assert_eq!(Schedule::Constant.rate(0.3, 99, 100), 0.3);
    }
}
