//! [`Encoder`]: the backbone a method pretrains and the evaluation protocols use, whichever
//! architecture it is.

use std::collections::HashMap;

use selfsup_nn::{Module, ResNet, SmallCnn, TextConfig, TextTransformer, Vit, VitConfig};
use selfsup_tensor::{DType, Generator, Tensor};

use crate::config::{BackboneConfig, BackboneKind};
use crate::error::{config, Result};

/// A pretrained (or pretraining) encoder: images `[B, C, H, W]` or token ids `[B, T]` in,
/// features `[B, out_dim]` out.
#[derive(Debug)]
pub enum Encoder {
    /// The reference CNN (any widths).
    SmallCnn(SmallCnn),
    /// CIFAR ResNet-18.
    ResNet(ResNet),
    /// Vision Transformer (mean-pooled tokens).
    Vit(Vit),
    /// Transformer over token ids; features are the mean of the final hidden states.
    Text(TextTransformer),
}

impl Encoder {
    /// Builds the encoder `cfg` describes. `causal` and `tied` apply to text backbones (GPT is
    /// causal, MLM bidirectional; both tie the output head to the token embedding).
    pub fn new(cfg: &BackboneConfig, causal: bool, tied: bool, g: &mut Generator) -> Result<Self> {
        let dt = DType::F32;
        Ok(match cfg.kind {
            BackboneKind::SmallCnn => {
                if cfg.widths.is_empty() || cfg.widths.contains(&0) || cfg.in_channels == 0 {
                    return config(format!(
                        "backbone.widths {:?} must be one or more positive numbers and in_channels {} positive",
                        cfg.widths, cfg.in_channels
                    ));
                }
                Encoder::SmallCnn(SmallCnn::with_widths(cfg.in_channels, &cfg.widths, dt, g)?)
            }
            BackboneKind::Resnet18 => Encoder::ResNet(ResNet::resnet18(cfg.in_channels, dt, g)?),
            BackboneKind::Vit => Encoder::Vit(Vit::new(
                &VitConfig {
                    image: cfg.image_size,
                    channels: cfg.in_channels,
                    patch: cfg.patch,
                    dim: cfg.dim,
                    depth: cfg.depth,
                    heads: cfg.heads,
                    mlp_ratio: 4,
                    cls_token: false,
                },
                dt,
                g,
            )?),
            BackboneKind::Text => Encoder::Text(TextTransformer::new(
                &TextConfig {
                    vocab: cfg.vocab,
                    context: cfg.context,
                    layers: cfg.depth,
                    heads: cfg.heads,
                    dim: cfg.dim,
                    mlp_ratio: 4,
                    causal,
                    tied,
                    dropout: cfg.dropout,
                    activation: selfsup_nn::Activation::Gelu,
                },
                dt,
                g,
            )?),
        })
    }

    /// Width of the features.
    pub fn out_dim(&self) -> usize {
        match self {
            Encoder::SmallCnn(m) => m.out_dim(),
            Encoder::ResNet(m) => m.out_dim(),
            Encoder::Vit(m) => m.config.dim,
            Encoder::Text(m) => m.config.dim,
        }
    }

    /// Features `[B, out_dim]`: pooled CNN features, mean-pooled ViT tokens, or mean-pooled text
    /// hidden states.
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Encoder::SmallCnn(m) => m.forward(x)?,
            Encoder::ResNet(m) => m.forward(x)?,
            Encoder::Vit(m) => m.forward(x)?,
            Encoder::Text(m) => m.hidden(x, None)?.mean(&[1], false)?,
        })
    }

    /// The last convolutional feature map `[B, C, h, w]` before pooling (CNN encoders only;
    /// SimMIM decodes pixels from it).
    pub fn feature_map(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Encoder::SmallCnn(m) => Ok(m.feature_map(x)?),
            Encoder::ResNet(m) => Ok(m.feature_map(x)?),
            _ => config("feature_map: only CNN encoders (small-cnn, resnet18) have one"),
        }
    }

    /// The text transformer, for methods that need its hidden states and logits.
    pub fn as_text(&self) -> Option<&TextTransformer> {
        match self {
            Encoder::Text(m) => Some(m),
            _ => None,
        }
    }

    /// The ViT, for methods that need its tokens (MAE).
    pub fn as_vit(&self) -> Option<&Vit> {
        match self {
            Encoder::Vit(m) => Some(m),
            _ => None,
        }
    }

    fn module(&self) -> &dyn Module {
        match self {
            Encoder::SmallCnn(m) => m,
            Encoder::ResNet(m) => m,
            Encoder::Vit(m) => m,
            Encoder::Text(m) => m,
        }
    }

    fn module_mut(&mut self) -> &mut dyn Module {
        match self {
            Encoder::SmallCnn(m) => m,
            Encoder::ResNet(m) => m,
            Encoder::Vit(m) => m,
            Encoder::Text(m) => m,
        }
    }
}

impl Module for Encoder {
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.module().visit_params(prefix, f)
    }
    fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.module_mut().visit_params_mut(prefix, f)
    }
    fn visit_buffers(&self, prefix: &str, f: &mut dyn FnMut(String, &Tensor)) {
        self.module().visit_buffers(prefix, f)
    }
    fn visit_buffers_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Tensor)) {
        self.module_mut().visit_buffers_mut(prefix, f)
    }
    fn visit_rng(&self, prefix: &str, f: &mut dyn FnMut(String, (u64, u64))) {
        self.module().visit_rng(prefix, f)
    }
    fn load_rng(&self, prefix: &str, states: &HashMap<String, (u64, u64)>) {
        self.module().load_rng(prefix, states)
    }
    fn set_train(&mut self, train: bool) {
        self.module_mut().set_train(train)
    }
}
