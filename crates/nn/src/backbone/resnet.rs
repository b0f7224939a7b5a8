//! CIFAR-style ResNet (He et al. 2016, as used by SimCLR/solo-learn for 32x32 images): a 3x3
//! stride-1 stem without max-pool, four stages of BasicBlocks (widths w, 2w, 4w, 8w; strides 1,
//! 2, 2, 2), global average pooling. ResNet-18 is `[2, 2, 2, 2]`, ResNet-34 `[3, 4, 6, 3]`.
//! Parameter names follow torchvision: `conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`.

use selfsup_tensor::{DType, Generator, Tensor};

use crate::conv::Conv2d;
use crate::error::{config, Result};
use crate::module::{join, Layer, Module};
use crate::norm::BatchNorm;

/// Two 3x3 conv + BN layers with an identity (or 1x1 conv + BN) shortcut.
#[derive(Debug)]
pub struct BasicBlock {
    /// First 3x3 convolution (carries the stride).
    pub conv1: Conv2d,
    /// Its BatchNorm.
    pub bn1: BatchNorm,
    /// Second 3x3 convolution.
    pub conv2: Conv2d,
    /// Its BatchNorm.
    pub bn2: BatchNorm,
    /// Projection shortcut when the shape changes.
    pub downsample: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(
        cin: usize,
        cout: usize,
        stride: usize,
        dtype: DType,
        g: &mut Generator,
    ) -> Result<BasicBlock> {
        let downsample = if stride != 1 || cin != cout {
            Some((
                Conv2d::new(cin, cout, 1, stride, 0, false, dtype, g)?,
                BatchNorm::new_2d(cout, true, dtype),
            ))
        } else {
            None
        };
        Ok(BasicBlock {
            conv1: Conv2d::new(cin, cout, 3, stride, 1, false, dtype, g)?,
            bn1: BatchNorm::new_2d(cout, true, dtype),
            conv2: Conv2d::new(cout, cout, 3, 1, 1, false, dtype, g)?,
            bn2: BatchNorm::new_2d(cout, true, dtype),
            downsample,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bn1.forward_relu(&self.conv1.forward(x)?)?;
        let h = self.bn2.forward(&self.conv2.forward(&h)?)?;
        let s = match &self.downsample {
            Some((c, b)) => b.forward(&c.forward(x)?)?,
            None => x.clone(),
        };
        Ok(h.add(&s)?.relu()?)
    }

    fn parts(&self) -> Vec<(String, &dyn Module)> {
        let mut v: Vec<(String, &dyn Module)> = vec![
            ("conv1".into(), &self.conv1),
            ("bn1".into(), &self.bn1),
            ("conv2".into(), &self.conv2),
            ("bn2".into(), &self.bn2),
        ];
        if let Some((c, b)) = &self.downsample {
            v.push(("downsample.0".into(), c));
            v.push(("downsample.1".into(), b));
        }
        v
    }
}

/// The CIFAR ResNet encoder.
#[derive(Debug)]
pub struct ResNet {
    /// Stem convolution (3x3, stride 1).
    pub conv1: Conv2d,
    /// Stem BatchNorm.
    pub bn1: BatchNorm,
    /// Four stages of blocks.
    pub layers: Vec<Vec<BasicBlock>>,
    in_channels: usize,
}

impl ResNet {
    /// ResNet-18 at width 64 (about 11.2M parameters).
    pub fn resnet18(in_channels: usize, dtype: DType, g: &mut Generator) -> Result<ResNet> {
        ResNet::new(in_channels, [2, 2, 2, 2], 64, dtype, g)
    }

    /// A ResNet with `blocks` BasicBlocks per stage and base width `width`.
    pub fn new(
        in_channels: usize,
        blocks: [usize; 4],
        width: usize,
        dtype: DType,
        g: &mut Generator,
    ) -> Result<ResNet> {
        if in_channels == 0 || width == 0 || blocks.contains(&0) {
            return config(format!("ResNet: in_channels {in_channels}, width {width} and blocks {blocks:?} must be positive"));
        }
        let conv1 = Conv2d::new(in_channels, width, 3, 1, 1, false, dtype, g)?;
        let bn1 = BatchNorm::new_2d(width, true, dtype);
        let mut layers = Vec::with_capacity(4);
        let mut c = width;
        for (i, &n) in blocks.iter().enumerate() {
            let out = width << i;
            let mut stage = Vec::with_capacity(n);
            for j in 0..n {
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                stage.push(BasicBlock::new(c, out, stride, dtype, g)?);
                c = out;
            }
            layers.push(stage);
        }
        Ok(ResNet {
            conv1,
            bn1,
            layers,
            in_channels,
        })
    }

    /// Width of the feature vector (8 x the base width).
    pub fn out_dim(&self) -> usize {
        self.layers
            .last()
            .and_then(|l| l.last())
            .map_or(0, |b| b.bn2.running_mean.numel())
    }

    /// The last feature map `[N, out_dim, H/8, W/8]` of images `[N, C, H, W]` (before pooling).
    pub fn feature_map(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 4 || x.shape()[1] != self.in_channels {
            return config(format!(
                "ResNet: expected images [N, {}, H, W], got {:?}",
                self.in_channels,
                x.shape()
            ));
        }
        let mut h = self.bn1.forward_relu(&self.conv1.forward(x)?)?;
        for stage in &self.layers {
            for b in stage {
                h = b.forward(&h)?;
            }
        }
        Ok(h)
    }

    /// Features `[N, out_dim]` of images `[N, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.feature_map(x)?.global_avg_pool2d()?)
    }

    /// Multiply-adds times 2 of the convolutions for one `h x w` image.
    pub fn flops_per_sample(&self, h: usize, w: usize) -> usize {
        let mut total = self.conv1.flops(h, w);
        let (mut hh, mut ww) = (h, w);
        for stage in &self.layers {
            for b in stage {
                total += b.conv1.flops(hh, ww);
                let s = b.conv1.params.stride.0;
                if let Some((c, _)) = &b.downsample {
                    total += c.flops(hh, ww);
                }
                hh = (hh - 1) / s + 1;
                ww = (ww - 1) / s + 1;
                total += b.conv2.flops(hh, ww);
            }
        }
        total
    }

    fn parts(&self) -> Vec<(String, &dyn Module)> {
        let mut v: Vec<(String, &dyn Module)> =
            vec![("conv1".into(), &self.conv1), ("bn1".into(), &self.bn1)];
        for (i, stage) in self.layers.iter().enumerate() {
            for (j, b) in stage.iter().enumerate() {
                for (n, m) in b.parts() {
                    v.push((format!("layer{}.{j}.{n}", i + 1), m));
                }
            }
        }
        v
    }
}

impl Module for ResNet {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        for (n, m) in self.parts() {
            m.visit_params(&join(prefix, &n), f);
        }
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        let p = |n: &str| join(prefix, n);
        self.conv1.visit_params_mut(&p("conv1"), f);
        self.bn1.visit_params_mut(&p("bn1"), f);
        for (i, stage) in self.layers.iter_mut().enumerate() {
            for (j, b) in stage.iter_mut().enumerate() {
                let q = p(&format!("layer{}.{j}", i + 1));
                b.conv1.visit_params_mut(&join(&q, "conv1"), f);
                b.bn1.visit_params_mut(&join(&q, "bn1"), f);
                b.conv2.visit_params_mut(&join(&q, "conv2"), f);
                b.bn2.visit_params_mut(&join(&q, "bn2"), f);
                if let Some((c, bn)) = &mut b.downsample {
                    c.visit_params_mut(&join(&q, "downsample.0"), f);
                    bn.visit_params_mut(&join(&q, "downsample.1"), f);
                }
            }
        }
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        for (n, m) in self.parts() {
            m.visit_buffers(&join(prefix, &n), f);
        }
    }
    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        let p = |n: &str| join(prefix, n);
        self.bn1.visit_buffers_mut(&p("bn1"), f);
        for (i, stage) in self.layers.iter_mut().enumerate() {
            for (j, b) in stage.iter_mut().enumerate() {
                let q = p(&format!("layer{}.{j}", i + 1));
                b.bn1.visit_buffers_mut(&join(&q, "bn1"), f);
                b.bn2.visit_buffers_mut(&join(&q, "bn2"), f);
                if let Some((_, bn)) = &mut b.downsample {
                    bn.visit_buffers_mut(&join(&q, "downsample.1"), f);
                }
            }
        }
    }
    fn set_train(&mut self, train: bool) {
        self.bn1.set_train(train);
        for stage in &mut self.layers {
            for b in stage {
                b.bn1.set_train(train);
                b.bn2.set_train(train);
                if let Some((_, bn)) = &mut b.downsample {
                    bn.set_train(train);
                }
            }
        }
    }
}

impl Layer for ResNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ResNet::forward(self, x)
    }
}
