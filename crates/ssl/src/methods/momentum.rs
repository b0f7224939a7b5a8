//! [`MomentumBranch`]: the EMA copy of an encoder and its projection head that MoCo v2,
//! MoCo v3 and BYOL keep under the field `target` (so the optimiser never steps it), and the
//! projection-head shapes the joint-embedding methods share.

use selfsup_nn::schedule::ema_update;
use selfsup_nn::{Activation, Mlp, MlpConfig, Module};
use selfsup_tensor::{no_grad, DType, Generator, Tensor};

use crate::config::MethodConfig;
use crate::encoder::Encoder;
use crate::error::Result;
use crate::macros::impl_module;

/// An MLP of `layers` linear layers with BatchNorm + ReLU after each hidden one (hidden layers
/// without bias) and, if `last_bn`, an affine-free BatchNorm on the output.
pub(crate) fn bn_mlp(
    in_dim: usize,
    hidden: usize,
    out: usize,
    layers: usize,
    last_bn: bool,
) -> MlpConfig {
    MlpConfig {
        batch_norm: true,
        activation: Activation::Relu,
        hidden_bias: false,
        last_batch_norm: last_bn,
        ..MlpConfig::new(in_dim, hidden, out, layers)
    }
}

/// The momentum (EMA) copy of an encoder and a projector. Its parameters take no gradient:
/// forward runs under `no_grad` and [`MomentumBranch::update`] moves them towards the online
/// ones.
#[derive(Debug)]
pub struct MomentumBranch {
    /// The momentum encoder.
    pub encoder: Encoder,
    /// The momentum projector.
    pub projector: Mlp,
}

impl_module!(MomentumBranch { encoder, projector });

impl MomentumBranch {
    /// A copy of `encoder` and `projector` (built from `cfg.backbone` and `proj`, then loaded
    /// with the online values, BatchNorm statistics included).
    pub fn copy_of(
        cfg: &MethodConfig,
        proj: &MlpConfig,
        encoder: &Encoder,
        projector: &Mlp,
    ) -> Result<Self> {
        // The initial values are overwritten: a private generator keeps the caller's stream.
        let mut g = Generator::new(0);
        let branch = MomentumBranch {
            encoder: Encoder::new(&cfg.backbone, false, false, &mut g)?,
            projector: Mlp::new(proj, DType::F32, &mut g)?,
        };
        branch.encoder.copy_from(encoder)?;
        branch.projector.copy_from(projector)?;
        Ok(branch)
    }

    /// Projections of `x` (detached).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.features_and_projection(x)?.1)
    }

    /// Encoder features and projections of `x` (both detached).
    pub fn features_and_projection(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let _g = no_grad();
        let h = self.encoder.embed(x)?;
        let z = self.projector.forward(&h)?;
        Ok((h.detach(), z.detach()))
    }

    /// `self = m * self + (1 - m) * online` for every parameter (BatchNorm statistics are the
    /// branch's own, from its forward passes).
    pub fn update(&self, encoder: &Encoder, projector: &Mlp, m: f64) -> Result<()> {
        ema_update(&self.encoder.params(), &encoder.params(), m)?;
        ema_update(&self.projector.params(), &projector.params(), m)?;
        Ok(())
    }
}
