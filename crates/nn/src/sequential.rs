//! [`Sequential`]: a chain of boxed layers named `0`, `1`, ... as in PyTorch.

use selfsup_tensor::Tensor;

use crate::error::Result;
use crate::module::{join, Layer, Module};

/// Layers applied in order; parameter names are `"{index}.{name}"`.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
}

impl Sequential {
    /// An empty chain.
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a layer (builder style).
    pub fn push(mut self, layer: impl Layer + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends a boxed layer.
    pub fn push_boxed(&mut self, layer: Box<dyn Layer>) {
        self.layers.push(layer);
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Applies every layer in order.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for l in &self.layers {
            y = l.forward(&y)?;
        }
        Ok(y)
    }
}

impl Module for Sequential {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit_params(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_params_mut(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit_buffers(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_buffers_mut(&join(prefix, &i.to_string()), f);
        }
    }
    fn visit_rng(&self, prefix: &str, f: &mut dyn FnMut(String, (u64, u64))) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit_rng(&join(prefix, &i.to_string()), f);
        }
    }
    fn load_rng(&self, prefix: &str, states: &std::collections::HashMap<String, (u64, u64)>) {
        for (i, l) in self.layers.iter().enumerate() {
            l.load_rng(&join(prefix, &i.to_string()), states);
        }
    }
    fn set_train(&mut self, train: bool) {
        for l in &mut self.layers {
            l.set_train(train);
        }
    }
}

impl Layer for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Sequential::forward(self, x)
    }
}
