//! Activation layers and dropout.

use std::sync::Mutex;

use selfsup_tensor::{Generator, MlpActivation, Tensor};

use crate::error::{config, Result};
use crate::module::{Layer, Module};

/// An elementwise activation, usable as a layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// The identity.
    Identity,
    /// max(x, 0).
    Relu,
    /// Leaky ReLU with the given negative slope.
    LeakyRelu(f64),
    /// GELU, exact erf form (PyTorch's default).
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// Hyperbolic tangent.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
    /// x * sigmoid(x).
    Silu,
}

impl Activation {
    /// Applies the activation.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match *self {
            Activation::Identity => x.clone(),
            Activation::Relu => x.relu()?,
            Activation::LeakyRelu(s) => x.leaky_relu(s)?,
            Activation::Gelu => x.gelu()?,
            Activation::GeluTanh => x.gelu_tanh()?,
            Activation::Tanh => x.tanh()?,
            Activation::Sigmoid => x.sigmoid()?,
            Activation::Silu => x.silu()?,
        })
    }
}

impl Activation {
    /// The same activation as the tensor crate's fused two-layer perceptron takes it
    /// ([`Tensor::mlp2`]); `None` for those it does not fuse (identity, leaky ReLU).
    pub fn as_mlp_activation(&self) -> Option<MlpActivation> {
        Some(match *self {
            Activation::Relu => MlpActivation::Relu,
            Activation::Gelu => MlpActivation::Gelu,
            Activation::GeluTanh => MlpActivation::GeluTanh,
            Activation::Tanh => MlpActivation::Tanh,
            Activation::Sigmoid => MlpActivation::Sigmoid,
            Activation::Silu => MlpActivation::Silu,
            Activation::Identity | Activation::LeakyRelu(_) => return None,
        })
    }
}

impl Module for Activation {
    fn visit_params(&self, _: &str, _: &mut dyn FnMut(String, &Tensor)) {}
    fn visit_params_mut(&mut self, _: &str, _: &mut dyn FnMut(String, &mut Tensor)) {}
}

impl Layer for Activation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Activation::forward(self, x)
    }
}

/// Inverted dropout: in training, zeroes each element with probability `p` and scales the rest
/// by `1 / (1 - p)`; the identity in evaluation. Draws from its own [`Generator`], whose state
/// can be saved with a checkpoint ([`Dropout::generator_state`]).
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    train: bool,
    gen: Mutex<Generator>,
}

impl Dropout {
    /// Dropout with probability `p` in `[0, 1)`, drawing from `gen`.
    pub fn new(p: f64, gen: Generator) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return config(format!("Dropout: probability {p} must be in [0, 1)"));
        }
        Ok(Dropout {
            p,
            train: true,
            gen: Mutex::new(gen),
        })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// The generator's `(seed, offset)`, to save with a checkpoint.
    pub fn generator_state(&self) -> (u64, u64) {
        self.gen.lock().unwrap_or_else(|e| e.into_inner()).state()
    }

    /// Restores the generator state saved by [`Dropout::generator_state`].
    pub fn set_generator_state(&self, (seed, offset): (u64, u64)) {
        *self.gen.lock().unwrap_or_else(|e| e.into_inner()) = Generator::from_state(seed, offset);
    }

    /// Whether [`Dropout::forward`] changes anything (training mode with `p > 0`).
    pub fn is_active(&self) -> bool {
        self.train && self.p > 0.0
    }

    /// Applies dropout (identity in evaluation mode).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.is_active() {
            return Ok(x.clone());
        }
        let mut g = self.gen.lock().unwrap_or_else(|e| e.into_inner());
        Ok(x.dropout(self.p, true, &mut g)?)
    }
}

impl Module for Dropout {
    fn visit_params(&self, _: &str, _: &mut dyn FnMut(String, &Tensor)) {}
    fn visit_params_mut(&mut self, _: &str, _: &mut dyn FnMut(String, &mut Tensor)) {}
    fn set_train(&mut self, train: bool) {
        self.train = train;
    }
    fn visit_rng(&self, prefix: &str, f: &mut dyn FnMut(String, (u64, u64))) {
        f(
            crate::module::join(prefix, "generator"),
            self.generator_state(),
        );
    }
    fn load_rng(&self, prefix: &str, states: &std::collections::HashMap<String, (u64, u64)>) {
        if let Some(s) = states.get(&crate::module::join(prefix, "generator")) {
            self.set_generator_state(*s);
        }
    }
}

impl Layer for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Dropout::forward(self, x)
    }
}
