//! 2-D convolution layer over `[N, C, H, W]` inputs.

use selfsup_tensor::{Conv2dParams, DType, Generator, Tensor};

use crate::error::{config, Result};
use crate::init;
use crate::module::{visit_one, visit_one_mut, Layer, Module};

/// `y = conv2d(x, weight) + bias`. Parameters: `weight` `[out, in / groups, kh, kw]`, `bias`
/// `[out]` (optional), initialised as PyTorch does (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`).
#[derive(Debug)]
pub struct Conv2d {
    /// `[out_channels, in_channels / groups, kh, kw]`.
    pub weight: Tensor,
    /// `[out_channels]`, if the layer has a bias.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation and groups.
    pub params: Conv2dParams,
}

impl Conv2d {
    /// A square-kernel convolution with PyTorch's default initialisation.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        dtype: DType,
        g: &mut Generator,
    ) -> Result<Conv2d> {
        Conv2d::with_params(
            in_channels,
            out_channels,
            (kernel, kernel),
            Conv2dParams {
                stride: (stride, stride),
                padding: (padding, padding),
                ..Conv2dParams::default()
            },
            bias,
            dtype,
            g,
        )
    }

    /// A convolution with every option (groups must divide both channel counts).
    pub fn with_params(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        params: Conv2dParams,
        bias: bool,
        dtype: DType,
        g: &mut Generator,
    ) -> Result<Conv2d> {
        let groups = params.groups;
        if in_channels == 0
            || out_channels == 0
            || kernel.0 == 0
            || kernel.1 == 0
            || groups == 0
            || in_channels % groups != 0
            || out_channels % groups != 0
        {
            return config(format!("Conv2d: channels {in_channels} -> {out_channels}, kernel {kernel:?}, groups {groups} are not valid (all positive, groups dividing both channel counts)"));
        }
        let shape = [out_channels, in_channels / groups, kernel.0, kernel.1];
        let weight = init::kaiming_uniform(&shape, 5f64.sqrt(), init::FanMode::FanIn, dtype, g)?
            .requires_grad_();
        let b = 1.0 / ((in_channels / groups * kernel.0 * kernel.1) as f64).sqrt();
        let bias = if bias {
            Some(init::uniform(&[out_channels], -b, b, dtype, g)?.requires_grad_())
        } else {
            None
        };
        Ok(Conv2d {
            weight,
            bias,
            params,
        })
    }

    /// Applies the convolution.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.conv2d(&self.weight, self.bias.as_ref(), self.params)?)
    }

    /// Multiply-adds times 2 for one sample with an `h x w` input.
    pub fn flops(&self, h: usize, w: usize) -> usize {
        let s = self.weight.shape();
        let p = self.params;
        let oh = (h + 2 * p.padding.0 - p.dilation.0 * (s[2] - 1) - 1) / p.stride.0 + 1;
        let ow = (w + 2 * p.padding.1 - p.dilation.1 * (s[3] - 1) - 1) / p.stride.1 + 1;
        2 * s[0] * s[1] * s[2] * s[3] * oh * ow
    }
}

impl Module for Conv2d {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        visit_one(prefix, "weight", &self.weight, f);
        if let Some(b) = &self.bias {
            visit_one(prefix, "bias", b, f);
        }
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        visit_one_mut(prefix, "weight", &mut self.weight, f);
        if let Some(b) = &mut self.bias {
            visit_one_mut(prefix, "bias", b, f);
        }
    }
}

impl Layer for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Conv2d::forward(self, x)
    }
}
