//! MoCo v2 (Chen et al. 2020, after He et al. 2020): queries from the online encoder and MLP
//! projector, keys from their momentum copy (`target`, EMA at a constant `cfg.momentum`),
//! InfoNCE at `cfg.temperature` against the positive key and a queue of `cfg.queue_size`
//! earlier L2-normalised keys, symmetrised over the two views (each view's query against the
//! other view's key, averaged). After each step both views' keys enter the queue, overwriting
//! the oldest ones; the queue and its write position are buffers, so checkpoints keep them.

use selfsup_nn::{Mlp, MlpConfig};
use selfsup_tensor::{no_grad, DType, Generator, Tensor};

use crate::config::{MethodConfig, MethodName};
use crate::encoder::Encoder;
use crate::error::{config, Result};
use crate::loss::info_nce_queue;
use crate::macros::{encoder_access, impl_module};
use crate::method::{InputKind, Progress, SslBatch, SslMethod, StepOutput};

use super::momentum::MomentumBranch;

/// MoCo v2: encoder, projector, momentum `target`, a queue of negatives.
#[derive(Debug)]
pub struct MocoV2 {
    /// The online (query) encoder.
    pub encoder: Encoder,
    /// The online projector.
    pub projector: Mlp,
    /// The momentum (key) encoder and projector.
    pub target: MomentumBranch,
    /// The negatives `[queue_size, proj_dim]`, L2-normalised rows.
    pub queue: Tensor,
    /// The next row of `queue` to overwrite, `[1]` (i64).
    pub queue_ptr: Tensor,
    temperature: f64,
    momentum: f64,
    pending: Option<Tensor>,
}

impl MocoV2 {
    /// Builds MoCo v2 from `cfg` (encoder, `proj_*`, `queue_size`, `momentum`,
    /// `temperature`). The queue starts as random unit vectors.
    pub fn new(cfg: &MethodConfig, g: &mut Generator) -> Result<Self> {
        if cfg.queue_size == 0 {
            return config("moco-v2: queue_size must be at least 1");
        }
        let encoder = Encoder::new(&cfg.backbone, false, false, g)?;
        let proj = MlpConfig::new(
            encoder.out_dim(),
            cfg.proj_hidden,
            cfg.proj_dim,
            cfg.proj_layers,
        );
        let projector = Mlp::new(&proj, DType::F32, g)?;
        let target = MomentumBranch::copy_of(cfg, &proj, &encoder, &projector)?;
        let queue = Tensor::randn(&[cfg.queue_size, cfg.proj_dim], 0.0, 1.0, DType::F32, g)?
            .l2_normalize(-1, 1e-12)?;
        Ok(MocoV2 {
            encoder,
            projector,
            target,
            queue,
            queue_ptr: Tensor::from_vec(vec![0i64], &[1])?,
            temperature: cfg.temperature,
            momentum: cfg.momentum,
            pending: None,
        })
    }

    /// Writes `keys` `[n, proj_dim]` into the queue from the write position on, wrapping
    /// around (when `n` exceeds the queue only the last `queue_size` keys are kept), and
    /// advances the position. The keys are stored as given (callers L2-normalise them).
    pub fn enqueue(&self, keys: &Tensor) -> Result<()> {
        let cap = self.queue.shape()[0];
        if keys.rank() != 2 || keys.shape()[1] != self.queue.shape()[1] {
            return config(format!(
                "moco-v2: keys must be [n, {}], got {:?}",
                self.queue.shape()[1],
                keys.shape()
            ));
        }
        let _g = no_grad();
        let total = keys.shape()[0];
        let n = total.min(cap);
        if n == 0 {
            return Ok(());
        }
        let keys = keys
            .narrow(0, total - n, n)?
            .detach()
            .to_dtype(self.queue.dtype())?;
        // Computed where the queue lives, from the pointer there (no read back to the host):
        // queue row r takes key (r - p) mod cap when that is below n, and keeps its value
        // otherwise; the pointer moves to (p + n) mod cap. Positions are exact in f64.
        let dev = self.queue.device();
        // p mod cap (a pointer from an edited checkpoint may be out of range), with the
        // truncating cast to i64 as the integer division.
        let raw = self.queue_ptr.to_dtype(DType::F64)?;
        let whole = raw
            .div_scalar(cap as f64)?
            .to_dtype(DType::I64)?
            .to_dtype(DType::F64)?;
        let p = raw.sub(&whole.mul_scalar(cap as f64)?)?;
        let p = p.add(&p.lt_scalar(0.0)?.mul_scalar(cap as f64)?)?;
        let d = Tensor::arange_on(cap, DType::F64, dev)?.sub(&p)?;
        let src = d.add(&d.lt_scalar(0.0)?.mul_scalar(cap as f64)?)?;
        let take = src
            .lt_scalar(n as f64)?
            .to_dtype(self.queue.dtype())?
            .unsqueeze(1)?;
        let ids = src
            .minimum(&Tensor::full_on((n - 1) as f64, &[], DType::F64, dev)?)?
            .to_dtype(DType::I64)?;
        let written = keys.index_select(0, &ids)?.where_(&take, &self.queue)?;
        self.queue.assign(&written)?;
        let next = p.add_scalar(n as f64)?;
        let next = next.sub(&next.gt_scalar(cap as f64 - 0.5)?.mul_scalar(cap as f64)?)?;
        self.queue_ptr.assign(&next.to_dtype(DType::I64)?)?;
        Ok(())
    }
}

impl_module!(MocoV2 { encoder, projector, target } buffers: [queue, queue_ptr]);

impl SslMethod for MocoV2 {
    fn name(&self) -> MethodName {
        MethodName::MocoV2
    }
    fn input(&self) -> InputKind {
        InputKind::Views { count: 2 }
    }
    encoder_access!();
    fn forward(&mut self, batch: &SslBatch, _: Progress, _: &mut Generator) -> Result<StepOutput> {
        let v = batch.views("moco-v2", 2)?;
        let b = v[0].shape()[0];
        let x = Tensor::concat(&[&v[0], &v[1]], 0)?;
        let h = self.encoder.embed(&x)?;
        let q = self.projector.forward(&h)?;
        let k = self.target.forward(&x)?.l2_normalize(-1, 1e-12)?;
        let (q1, q2) = (q.narrow(0, 0, b)?, q.narrow(0, b, b)?);
        let (k1, k2) = (k.narrow(0, 0, b)?, k.narrow(0, b, b)?);
        let queue = self.queue.detach();
        let loss = info_nce_queue(&q1, &k2, &queue, self.temperature)?
            .add(&info_nce_queue(&q2, &k1, &queue, self.temperature)?)?
            .mul_scalar(0.5)?;
        let pos = q1.detach().cosine_similarity(&k2, -1, 1e-12)?.mean_all()?;
        self.pending = Some(k);
        let h = h.detach();
        Ok(StepOutput {
            loss,
            embeddings: Some((h.narrow(0, 0, b)?, Some(h.narrow(0, b, b)?))),
            metrics: vec![("pos_cos".into(), pos)],
        })
    }
    fn after_step(&mut self, _: Progress) -> Result<()> {
        self.target
            .update(&self.encoder, &self.projector, self.momentum)?;
        if let Some(k) = self.pending.take() {
            self.enqueue(&k)?;
        }
        Ok(())
    }
}
