//! CPC for images (van den Oord et al. 2018; Hénaff et al. 2020): each image is cut into a
//! `grid x grid` lattice of half-overlapping square patches, every patch is encoded by the CNN
//! encoder, a causal transformer block runs down each column (row `i` sees rows `<= i`) to
//! give a context, and for each `k` in `1..=cpc_steps` a linear map of the context at row `i`
//! predicts the encoding of the patch `k` rows below. InfoNCE scores each prediction against
//! every encoding of the batch at that step: the other patches are the negatives.

use selfsup_nn::{join, Activation, Linear, Module, TransformerBlock};
use selfsup_tensor::{no_grad, DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::{config, Result};
use crate::loss::{cpc_info_nce, info_nce_logits};
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};
use crate::methods::mae::heads_for;
use crate::metric::argmax_accuracy;

/// CPC's autoregressive context and per-step predictors.
#[derive(Debug)]
pub struct CpcHead {
    /// Causal block over the rows of each column.
    pub context: TransformerBlock,
    /// One linear prediction per future step (`predictors[k - 1]` for `k` rows ahead).
    pub predictors: Vec<Linear>,
}

impl Module for CpcHead {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.context.visit_params(&join(prefix, "context"), f);
        for (i, p) in self.predictors.iter().enumerate() {
            p.visit_params(&join(prefix, &format!("predictors.{i}")), f);
        }
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.context.visit_params_mut(&join(prefix, "context"), f);
        for (i, p) in self.predictors.iter_mut().enumerate() {
            p.visit_params_mut(&join(prefix, &format!("predictors.{i}")), f);
        }
    }
    fn set_train(&mut self, train: bool) {
        self.context.set_train(train);
    }
}

/// CPC: a CNN patch encoder and a [`CpcHead`].
#[derive(Debug)]
pub struct Cpc {
    /// The CNN encoder (applied to each patch).
    pub encoder: Encoder,
    /// Context and predictors.
    pub head: CpcHead,
    grid: usize,
    steps: usize,
    temperature: f64,
}

impl Cpc {
    /// Builds CPC from `cfg`: a CNN backbone, `grid` (patches per side, >= 2),
    /// `cpc_steps` (rows predicted ahead, below `grid`), `temperature`.
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        let b = &cfg.backbone;
        if cfg.grid < 2 || cfg.cpc_steps == 0 || cfg.cpc_steps >= cfg.grid {
            return config(format!(
                "cpc: needs grid >= 2 and 1 <= cpc_steps < grid, got grid {} and cpc_steps {}",
                cfg.grid, cfg.cpc_steps
            ));
        }
        if b.image_size < 2 * (cfg.grid + 1) {
            return config(format!(
                "cpc: a {}-pixel image is too small for a {} x {} grid of half-overlapping patches",
                b.image_size, cfg.grid, cfg.grid
            ));
        }
        let encoder = Encoder::new(b, false, false, g)?;
        if encoder.as_vit().is_some() || encoder.as_text().is_some() {
            return config(
                "cpc encodes patches of any size: use a CNN backbone (small-cnn or resnet18)",
            );
        }
        let d = encoder.out_dim();
        let dt = DType::F32;
        let mut predictors = Vec::with_capacity(cfg.cpc_steps);
        for _ in 0..cfg.cpc_steps {
            predictors.push(Linear::new(d, d, true, dt, g)?);
        }
        Ok(Cpc {
            head: CpcHead {
                context: TransformerBlock::new(
                    d,
                    heads_for(d, b.heads),
                    2,
                    Activation::Gelu,
                    dt,
                    g,
                )?,
                predictors,
            },
            encoder,
            grid: cfg.grid,
            steps: cfg.cpc_steps,
            temperature: cfg.temperature,
        })
    }

    /// The patches of images `[B, C, H, W]` as `[B * grid * grid, C, p, p]`, image-major then
    /// row-major: side `p = 2s` with stride `s = H / (grid + 1)` (half-overlapping).
    pub fn patches(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 4 || x.shape()[2] != x.shape()[3] {
            return config(format!(
                "cpc: expected square images [B, C, H, H], got {:?}",
                x.shape()
            ));
        }
        let (b, c, h) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let s = h / (self.grid + 1);
        if s == 0 {
            return config(format!(
                "cpc: {h}-pixel images are too small for grid {}",
                self.grid
            ));
        }
        let p = 2 * s;
        let mut tiles = Vec::with_capacity(self.grid * self.grid);
        for i in 0..self.grid {
            let row = x.narrow(2, i * s, p)?;
            for j in 0..self.grid {
                tiles.push(row.narrow(3, j * s, p)?);
            }
        }
        let refs: Vec<&Tensor> = tiles.iter().collect();
        Ok(Tensor::stack(&refs, 1)?.reshape(&[b * self.grid * self.grid, c, p, p])?)
    }

    /// Patch encodings `[B, grid (rows), grid (columns), D]`.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let z = self.encoder.embed(&self.patches(x)?)?;
        let (b, g) = (x.shape()[0], self.grid);
        Ok(z.reshape(&[b, g, g, z.shape()[1]])?)
    }

    /// The loss (mean over steps of InfoNCE), the accuracy of picking the right patch (a 0-d
    /// tensor on the model's device), and the encodings `[B, grid, grid, D]` of images `x`.
    pub fn loss(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let z = self.encode(x)?;
        let (b, g, d) = (z.shape()[0], self.grid, z.shape()[3]);
        // Columns as sequences over rows: [B * grid, grid, D].
        let cols = z.permute(&[0, 2, 1, 3])?.reshape(&[b * g, g, d])?;
        let ctx = self.head.context.forward(&cols, true, None)?;
        let mut total: Option<Tensor> = None;
        let mut right: Option<Tensor> = None;
        let mut count = 0usize;
        for (k0, pred) in self.head.predictors.iter().enumerate() {
            let k = k0 + 1;
            let n = b * g * (g - k);
            let q = pred.forward(&ctx.narrow(1, 0, g - k)?)?.reshape(&[n, d])?;
            let keys = cols.narrow(1, k, g - k)?.reshape(&[n, d])?;
            let l = cpc_info_nce(&q, &keys, self.temperature)?;
            {
                let _g = no_grad();
                // Row i's positive is key i: accuracy against 0..n, weighted by the rows.
                let logits = info_nce_logits(&q, &keys, self.temperature)?;
                let ids = Tensor::arange_on(n, DType::I64, logits.device())?;
                let hits = argmax_accuracy(&logits, &ids, None)?.mul_scalar(n as f64)?;
                right = Some(match right {
                    Some(r) => r.add(&hits)?,
                    None => hits,
                });
                count += n;
            }
            total = Some(match total {
                Some(t) => t.add(&l)?,
                None => l,
            });
        }
        let loss = match total {
            Some(t) => t.div_scalar(self.steps as f64)?,
            None => return config("cpc: no prediction step"),
        };
        let acc = match right {
            Some(r) => r.div_scalar(count.max(1) as f64)?,
            None => return config("cpc: no prediction step"),
        };
        Ok((loss, acc, z))
    }
}

impl_module!(Cpc { encoder, head });

impl SslMethod for Cpc {
    fn name(&self) -> MethodName {
        MethodName::Cpc
    }
    fn input(&self) -> InputKind {
        InputKind::Images
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let x = &batch.views("cpc", 1)?[0];
        let (loss, acc, z) = self.loss(x)?;
        let feats = z.detach().mean(&[1, 2], false)?;
        Ok(StepOutput {
            loss,
            embeddings: Some((feats, None)),
            metrics: vec![("cpc_acc".into(), acc)],
        })
    }
}
