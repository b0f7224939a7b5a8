//! `SmallCnn`: the reference encoder of the shared benchmarks: three 3x3 conv (no bias) +
//! BatchNorm2d + ReLU blocks, 1 -> 32 (stride 1) -> 64 (stride 2) -> 128 (stride 2), then global
//! average pooling to a 128-d feature. Other widths, and other numbers of blocks (each after the
//! first halves the resolution), are built with [`SmallCnn::with_widths`]. Parameter names
//! follow PyTorch's `nn.Sequential` numbering in blocks: `blocks.{i}.conv.weight`,
//! `blocks.{i}.bn.{weight,bias,running_mean,..}`.

use std::collections::HashMap;

use selfsup_tensor::{DType, Generator, Tensor};

use crate::conv::Conv2d;
use crate::error::{config, Result};
use crate::module::{join, Layer, Module};
use crate::norm::BatchNorm;

/// One conv + BatchNorm + ReLU block.
#[derive(Debug)]
pub struct ConvBnRelu {
    /// The 3x3 convolution (no bias).
    pub conv: Conv2d,
    /// Batch normalisation over its output channels.
    pub bn: BatchNorm,
}

/// The reference CNN encoder (see the module header).
#[derive(Debug)]
pub struct SmallCnn {
    /// The blocks (three in the reference model).
    pub blocks: Vec<ConvBnRelu>,
    in_channels: usize,
}

impl SmallCnn {
    /// Channel widths of the reference model.
    pub const WIDTHS: [usize; 3] = [32, 64, 128];

    /// The reference encoder for images with `in_channels` channels (1 for Fashion-MNIST).
    pub fn new(in_channels: usize, dtype: DType, g: &mut Generator) -> Result<SmallCnn> {
        SmallCnn::with_widths(in_channels, &Self::WIDTHS, dtype, g)
    }

    /// The same architecture with other widths: one block per entry of `widths`, the first
    /// with stride 1, every later one with stride 2 (`[32, 64, 128, 256]` adds a fourth block
    /// that halves a 7x7 map to 4x4 and widens the receptive field from 9 to 17 pixels).
    pub fn with_widths(
        in_channels: usize,
        widths: &[usize],
        dtype: DType,
        g: &mut Generator,
    ) -> Result<SmallCnn> {
        if widths.is_empty() || widths.contains(&0) || in_channels == 0 {
            return config(format!(
                "SmallCnn: widths {widths:?} must be one or more positive numbers, in_channels {in_channels} positive"
            ));
        }
        let mut blocks = Vec::with_capacity(widths.len());
        let mut c = in_channels;
        for (i, &w) in widths.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            blocks.push(ConvBnRelu {
                conv: Conv2d::new(c, w, 3, stride, 1, false, dtype, g)?,
                bn: BatchNorm::new_2d(w, true, dtype),
            });
            c = w;
        }
        Ok(SmallCnn {
            blocks,
            in_channels,
        })
    }

    /// Width of the feature vector.
    pub fn out_dim(&self) -> usize {
        self.blocks.last().map_or(0, |b| b.bn.running_mean.numel())
    }

    /// Features `[N, out_dim]` of images `[N, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.feature_map(x)?.global_avg_pool2d()?)
    }

    /// The last feature map (before pooling): `[N, out_dim, H/4, W/4]` for three blocks, each
    /// further block halving it (rounding up).
    pub fn feature_map(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 4 || x.shape()[1] != self.in_channels {
            return config(format!(
                "SmallCnn: expected images [N, {}, H, W], got {:?}",
                self.in_channels,
                x.shape()
            ));
        }
        let mut h = x.clone();
        for b in &self.blocks {
            h = b.bn.forward_relu(&b.conv.forward(&h)?)?;
        }
        Ok(h)
    }

    /// Multiply-adds times 2 of the convolutions for one `h x w` image (BatchNorm, ReLU and
    /// pooling add well under 1%).
    pub fn flops_per_sample(&self, h: usize, w: usize) -> usize {
        let (mut hh, mut ww, mut total) = (h, w, 0);
        for b in &self.blocks {
            total += b.conv.flops(hh, ww);
            let s = b.conv.params.stride;
            hh = (hh + 2 - 3) / s.0 + 1;
            ww = (ww + 2 - 3) / s.1 + 1;
        }
        total
    }
}

impl Module for SmallCnn {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        for (i, b) in self.blocks.iter().enumerate() {
            let p = join(prefix, &format!("blocks.{i}"));
            b.conv.visit_params(&join(&p, "conv"), f);
            b.bn.visit_params(&join(&p, "bn"), f);
        }
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = join(prefix, &format!("blocks.{i}"));
            b.conv.visit_params_mut(&join(&p, "conv"), f);
            b.bn.visit_params_mut(&join(&p, "bn"), f);
        }
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        for (i, b) in self.blocks.iter().enumerate() {
            b.bn.visit_buffers(&join(&join(prefix, &format!("blocks.{i}")), "bn"), f);
        }
    }
    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.bn.visit_buffers_mut(&join(&join(prefix, &format!("blocks.{i}")), "bn"), f);
        }
    }
    fn load_rng(&self, _prefix: &str, _states: &HashMap<String, (u64, u64)>) {}
    fn set_train(&mut self, train: bool) {
        for b in &mut self.blocks {
            b.bn.set_train(train);
        }
    }
}

impl Layer for SmallCnn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        SmallCnn::forward(self, x)
    }
}
