//! Adam (Kingma & Ba, 2015) for one tensor, on the plain device: the optimizer of feature
//! visualization (Lucid's choice) and of the built-in model's training.

use burn::prelude::*;
use burn::Dispatch;

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPSILON: f32 = 1e-8;

/// Adam state (moment estimates and step count) for one parameter tensor.
pub struct Adam<const D: usize, B: Backend = Dispatch> {
    learning_rate: f32,
    moments: Option<(Tensor<B, D>, Tensor<B, D>)>,
    steps: i32,
}

impl<const D: usize, B: Backend> Adam<D, B> {
    pub fn new(learning_rate: f32) -> Self {
        Self {
            learning_rate,
            moments: None,
            steps: 0,
        }
    }

    /// The parameter after one step against `grad` (both on the plain device).
    pub fn step(&mut self, param: Tensor<B, D>, grad: Tensor<B, D>) -> Tensor<B, D> {
        self.steps += 1;
        let (m, v) = match self.moments.take() {
            Some((m, v)) => (
                m.mul_scalar(BETA1) + grad.clone().mul_scalar(1.0 - BETA1),
                v.mul_scalar(BETA2) + grad.powi_scalar(2).mul_scalar(1.0 - BETA2),
            ),
            None => (
                grad.clone().mul_scalar(1.0 - BETA1),
                grad.powi_scalar(2).mul_scalar(1.0 - BETA2),
            ),
        };
        let (c1, c2) = (1.0 - BETA1.powi(self.steps), 1.0 - BETA2.powi(self.steps));
        let update = m.clone().div_scalar(c1) / v.clone().div_scalar(c2).sqrt().add_scalar(EPSILON);
        self.moments = Some((m, v));
        param - update.mul_scalar(self.learning_rate)
    }
}
