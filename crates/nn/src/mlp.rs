//! [`Mlp`]: a configurable multi-layer perceptron, as SSL projection and prediction heads need
//! (SimCLR, BYOL, SimSiam, Barlow Twins, VICReg).

use selfsup_tensor::{DType, Generator, Tensor};

use crate::activation::Activation;
use crate::error::{config, Result};
use crate::linear::{check_residual, over_rows, rows, Linear};
use crate::module::{join, Layer, Module};
use crate::norm::BatchNorm;

/// How to build an [`Mlp`].
#[derive(Clone, Debug)]
pub struct MlpConfig {
    /// Input size.
    pub in_dim: usize,
    /// Size of every hidden layer.
    pub hidden_dim: usize,
    /// Output size.
    pub out_dim: usize,
    /// Number of linear layers (>= 1); `num_layers - 1` hidden layers.
    pub num_layers: usize,
    /// BatchNorm1d after each hidden linear layer (before the activation).
    pub batch_norm: bool,
    /// The hidden activation.
    pub activation: Activation,
    /// Bias on the hidden linear layers (usually off when followed by BatchNorm).
    pub hidden_bias: bool,
    /// Bias on the last linear layer.
    pub last_bias: bool,
    /// BatchNorm1d without affine parameters after the last layer (SimSiam, Barlow Twins).
    pub last_batch_norm: bool,
}

impl MlpConfig {
    /// `num_layers` linear layers with ReLU between them, biases everywhere, no BatchNorm.
    pub fn new(in_dim: usize, hidden_dim: usize, out_dim: usize, num_layers: usize) -> Self {
        MlpConfig {
            in_dim,
            hidden_dim,
            out_dim,
            num_layers,
            batch_norm: false,
            activation: Activation::Relu,
            hidden_bias: true,
            last_bias: true,
            last_batch_norm: false,
        }
    }
}

/// Linear layers `fc.{i}` with optional BatchNorm `bn.{i}` and an activation between them.
#[derive(Debug)]
pub struct Mlp {
    /// The linear layers, in order.
    pub fc: Vec<Linear>,
    /// BatchNorm after each hidden layer (empty without BatchNorm).
    pub bn: Vec<BatchNorm>,
    /// Affine-free BatchNorm after the last layer, if configured.
    pub last_bn: Option<BatchNorm>,
    activation: Activation,
}

impl Mlp {
    /// Builds the MLP described by `cfg`.
    pub fn new(cfg: &MlpConfig, dtype: DType, g: &mut Generator) -> Result<Mlp> {
        if cfg.num_layers == 0 {
            return config("Mlp: num_layers must be at least 1");
        }
        let mut fc = Vec::new();
        let mut bn = Vec::new();
        for i in 0..cfg.num_layers {
            let last = i + 1 == cfg.num_layers;
            let din = if i == 0 { cfg.in_dim } else { cfg.hidden_dim };
            let dout = if last { cfg.out_dim } else { cfg.hidden_dim };
            let bias = if last { cfg.last_bias } else { cfg.hidden_bias };
            fc.push(Linear::new(din, dout, bias, dtype, g)?);
            if !last && cfg.batch_norm {
                bn.push(BatchNorm::new_1d(dout, true, dtype));
            }
        }
        let last_bn = cfg
            .last_batch_norm
            .then(|| BatchNorm::new_1d(cfg.out_dim, false, dtype));
        Ok(Mlp {
            fc,
            bn,
            last_bn,
            activation: cfg.activation,
        })
    }

    /// `residual + self.forward(x)` for `residual` of the output's shape: with two layers and
    /// no BatchNorm one op ([`Tensor::mlp2_residual`]: on a GPU at bf16 matmul precision the
    /// second product adds the residual as it stores its result), else the MLP and an add.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if let ([l1, l2], true, Some(act), None) = (
            &self.fc[..],
            self.bn.is_empty(),
            self.activation.as_mlp_activation(),
            &self.last_bn,
        ) {
            check_residual("Mlp", x, residual, l2.out_features())?;
            return Ok(rows(x)?.mlp2_residual(
                &l1.weight,
                l1.bias.as_ref(),
                act,
                &l2.weight,
                l2.bias.as_ref(),
                residual,
            )?);
        }
        let y = self.forward(x)?;
        if residual.shape() != y.shape() {
            return config(format!(
                "Mlp: residual {:?} does not fit the output {:?}: pass a tensor of the output's shape",
                residual.shape(),
                y.shape()
            ));
        }
        Ok(y.add(residual)?)
    }

    /// Applies the MLP to `[N, in_dim]` (or `[..., in_dim]` without BatchNorm). Two layers
    /// without BatchNorm run as one op ([`Tensor::mlp2`]), which is fused on a GPU at bf16
    /// matmul precision and the same composition elsewhere.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let ([l1, l2], true, Some(act)) = (
            &self.fc[..],
            self.bn.is_empty(),
            self.activation.as_mlp_activation(),
        ) {
            // `[..., in_dim]` flattened to rows, as `Linear::forward` does.
            let y = over_rows(x, |x2| {
                Ok(x2.mlp2(
                    &l1.weight,
                    l1.bias.as_ref(),
                    act,
                    &l2.weight,
                    l2.bias.as_ref(),
                )?)
            })?;
            return match &self.last_bn {
                Some(b) => b.forward(&y),
                None => Ok(y),
            };
        }
        let mut y = x.clone();
        let n = self.fc.len();
        for (i, l) in self.fc.iter().enumerate() {
            y = l.forward(&y)?;
            if i + 1 < n {
                if let Some(b) = self.bn.get(i) {
                    y = b.forward(&y)?;
                }
                y = self.activation.forward(&y)?;
            }
        }
        if let Some(b) = &self.last_bn {
            y = b.forward(&y)?;
        }
        Ok(y)
    }
}

impl Module for Mlp {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        for (i, l) in self.fc.iter().enumerate() {
            l.visit_params(&join(prefix, &format!("fc.{i}")), f);
        }
        for (i, b) in self.bn.iter().enumerate() {
            b.visit_params(&join(prefix, &format!("bn.{i}")), f);
        }
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        for (i, l) in self.fc.iter_mut().enumerate() {
            l.visit_params_mut(&join(prefix, &format!("fc.{i}")), f);
        }
        for (i, b) in self.bn.iter_mut().enumerate() {
            b.visit_params_mut(&join(prefix, &format!("bn.{i}")), f);
        }
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        for (i, b) in self.bn.iter().enumerate() {
            b.visit_buffers(&join(prefix, &format!("bn.{i}")), f);
        }
        if let Some(b) = &self.last_bn {
            b.visit_buffers(&join(prefix, "last_bn"), f);
        }
    }
    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        for (i, b) in self.bn.iter_mut().enumerate() {
            b.visit_buffers_mut(&join(prefix, &format!("bn.{i}")), f);
        }
        if let Some(b) = &mut self.last_bn {
            b.visit_buffers_mut(&join(prefix, "last_bn"), f);
        }
    }
    fn set_train(&mut self, train: bool) {
        for b in &mut self.bn {
            b.set_train(train);
        }
        if let Some(b) = &mut self.last_bn {
            b.set_train(train);
        }
    }
}

impl Layer for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Mlp::forward(self, x)
    }
}
