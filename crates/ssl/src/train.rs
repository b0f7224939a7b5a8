//! [`Trainer`]: one optimiser step of any [`SslMethod`], with the learning-rate schedule, the
//! NaN guard and the method's per-step updates; [`OptimConfig`] describes the optimiser.

use serde::{Deserialize, Serialize};

use selfsup_nn::optim::{
    clip_grad_norm_on_device, decay_groups, Adam, AdamConfig, Lars, LarsConfig, Optimizer, Sgd,
    SgdConfig,
};
use selfsup_nn::schedule::LrSchedule;
use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{no_grad, DType, Device, Generator, Tensor};

use crate::diagnostics::{diagnostics, Diagnostics};
use crate::error::{config, Result, SslError};
use crate::method::{Progress, SslBatch, SslMethod, StepOutput};

/// The optimisers a run can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Adam (L2 weight decay added to the gradient).
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
    /// SGD with momentum 0.9.
    Sgd,
    /// LARS (layer-wise trust ratio, momentum 0.9).
    Lars,
}

/// The learning-rate schedules a run can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Linear warm-up then cosine decay to `final_lr_ratio * lr`.
    Cosine,
    /// Linear warm-up then constant.
    Constant,
}

/// Optimiser and schedule settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Which optimiser.
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    /// Weight decay (not applied to biases and normalisation parameters).
    pub weight_decay: f64,
    /// The schedule.
    pub schedule: ScheduleKind,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// Final learning rate as a fraction of `lr` (cosine).
    pub final_lr_ratio: f64,
    /// Clip the global gradient norm to this value (0 = no clipping).
    pub clip_grad: f64,
}

impl Default for OptimConfig {
    /// Adam, lr 1e-3, no weight decay, cosine schedule with 10 warm-up steps to 1% of lr.
    fn default() -> Self {
        OptimConfig {
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            weight_decay: 0.0,
            schedule: ScheduleKind::Cosine,
            warmup_steps: 10,
            final_lr_ratio: 0.01,
            clip_grad: 0.0,
        }
    }
}

impl OptimConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return config(format!("optim.lr = {} must be positive", self.lr));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return config(format!(
                "optim.weight_decay = {} must be >= 0",
                self.weight_decay
            ));
        }
        if !(0.0..=1.0).contains(&self.final_lr_ratio) {
            return config(format!(
                "optim.final_lr_ratio = {} must be in [0, 1]",
                self.final_lr_ratio
            ));
        }
        if !(self.clip_grad >= 0.0) {
            return config(format!("optim.clip_grad = {} must be >= 0", self.clip_grad));
        }
        Ok(())
    }

    /// The schedule over `total` steps.
    pub fn schedule(&self, total: u64) -> LrSchedule {
        match self.schedule {
            ScheduleKind::Cosine => LrSchedule::WarmupCosine {
                lr: self.lr,
                warmup: self.warmup_steps.min(total / 2),
                total,
                final_lr: self.lr * self.final_lr_ratio,
            },
            ScheduleKind::Constant if self.warmup_steps > 0 => LrSchedule::WarmupCosine {
                lr: self.lr,
                warmup: self.warmup_steps.min(total / 2),
                total: u64::MAX,
                final_lr: self.lr,
            },
            ScheduleKind::Constant => LrSchedule::Constant { lr: self.lr },
        }
    }

    /// The optimiser over `params` (weight decay only on tensors of rank >= 2).
    pub fn build(&self, params: Vec<(String, Tensor)>) -> Result<Box<dyn Optimizer + Send>> {
        self.validate()?;
        let groups = decay_groups(params, self.lr, self.weight_decay);
        Ok(match self.optimizer {
            OptimizerKind::Adam => Box::new(Adam::with_groups(
                groups,
                AdamConfig {
                    lr: self.lr,
                    weight_decay: self.weight_decay,
                    ..AdamConfig::default()
                },
            )?),
            OptimizerKind::Adamw => Box::new(Adam::with_groups(
                groups,
                AdamConfig {
                    lr: self.lr,
                    weight_decay: self.weight_decay,
                    ..AdamConfig::adamw()
                },
            )?),
            OptimizerKind::Sgd => Box::new(Sgd::with_groups(
                groups,
                SgdConfig {
                    lr: self.lr,
                    momentum: 0.9,
                    weight_decay: self.weight_decay,
                    ..SgdConfig::default()
                },
            )?),
            OptimizerKind::Lars => Box::new(Lars::with_groups(
                groups,
                LarsConfig {
                    lr: self.lr,
                    weight_decay: self.weight_decay,
                    ..LarsConfig::default()
                },
            )),
        })
    }
}

/// What one step did.
#[derive(Clone, Debug)]
pub struct StepStats {
    /// The loss before the update.
    pub loss: f64,
    /// The learning rate used.
    pub lr: f64,
    /// The method's extra figures.
    pub metrics: Vec<(String, f64)>,
    /// Detached features of two views (for diagnostics), when the method gives them.
    pub embeddings: Option<(Tensor, Option<Tensor>)>,
}

impl StepStats {
    /// Collapse diagnostics of this step's embeddings, if there are any.
    pub fn diagnostics(&self) -> Result<Option<Diagnostics>> {
        match &self.embeddings {
            Some((a, b)) => Ok(Some(diagnostics(a, b.as_ref())?)),
            None => Ok(None),
        }
    }
}

/// What one step reads back from the device: the loss, the non-finite probe (NaN when a
/// gradient or buffer is not finite) and the method's metrics.
struct ReadBack {
    loss: f64,
    probe: f64,
    metrics: Vec<(String, f64)>,
}

/// Trains one method: forward, backward, one read-back (loss, NaN guard, metrics), clipping,
/// optimiser step, the method's per-step updates.
pub struct Trainer {
    /// The method being trained.
    pub method: Box<dyn SslMethod>,
    /// Its optimiser (over [`SslMethod::trainable_params`]).
    pub optimizer: Box<dyn Optimizer + Send>,
    schedule: LrSchedule,
    clip: f64,
    /// Steps done.
    pub step: u64,
    /// Steps planned (for schedules).
    pub total: u64,
    /// Randomness of the method (masks, rotations, permutations).
    pub generator: Generator,
    /// Where the method runs; each batch is moved here before the step.
    device: Device,
    /// The precision of the method's f32 products (forward and backward).
    precision: MatmulPrecision,
}

impl Trainer {
    /// A trainer for `method` over `total` steps; `seed` drives the method's own randomness.
    pub fn new(
        method: Box<dyn SslMethod>,
        optim: &OptimConfig,
        total: u64,
        seed: u64,
    ) -> Result<Self> {
        let optimizer = optim.build(method.trainable_params())?;
        Ok(Trainer {
            method,
            optimizer,
            schedule: optim.schedule(total.max(1)),
            clip: optim.clip_grad,
            step: 0,
            total: total.max(1),
            generator: Generator::new(seed ^ 0x5e1f_5a9b),
            device: Device::Cpu,
            precision: MatmulPrecision::F32,
        })
    }

    /// Sets the precision of the products in every later step's forward and backward passes
    /// (see [`selfsup_tensor::precision`]; parameters, gradients and optimiser state stay
    /// f32). bf16 and TF32 pay on a GPU; on the CPU they only round.
    pub fn set_precision(&mut self, p: MatmulPrecision) {
        self.precision = p;
    }

    /// The precision of the products (f32 unless [`Trainer::set_precision`] changed it).
    pub fn precision(&self) -> MatmulPrecision {
        self.precision
    }

    /// A trainer whose method runs on `device`: the method's parameters and buffers are moved
    /// there before the optimiser is built over them, and every batch is moved there at each
    /// step (the data pipeline stays on the host).
    pub fn on_device(
        mut method: Box<dyn SslMethod>,
        optim: &OptimConfig,
        total: u64,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        method.to_device(device)?;
        let mut t = Trainer::new(method, optim, total, seed)?;
        t.device = device;
        Ok(t)
    }

    /// Where the method runs.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The loss, a probe that is NaN exactly when a gradient or floating-point buffer holds a
    /// NaN or an infinity (the sum over all of them of `x * 0`), and the method's metrics, read
    /// from the device in one transfer (metrics already on the host are read directly).
    fn read_back(&self, out: &StepOutput) -> Result<ReadBack> {
        let _g = no_grad();
        let dev = out.loss.device();
        // Every gradient and floating-point buffer, probed where they live: on a GPU one launch
        // for all of them (`Tensor::non_finite_probe`).
        let mut probed: Vec<Tensor> = Vec::new();
        for (_, p) in self.method.trainable_params() {
            if let Some(g) = p.grad() {
                probed.push(g);
            }
        }
        self.method
            .visit_buffers("", &mut |_, b| probed.push(b.clone()));
        let refs: Vec<&Tensor> = probed.iter().collect();
        let probe = Tensor::non_finite_probe(&refs, dev)?;
        let mut parts = vec![
            out.loss.detach().to_dtype(DType::F64)?.reshape(&[1])?,
            probe.reshape(&[1])?,
        ];
        let mut on_device = Vec::new();
        let mut host = Vec::new();
        for (i, (_, m)) in out.metrics.iter().enumerate() {
            if m.numel() != 1 {
                return Err(SslError::Config(format!(
                    "metric {} must hold one value, got shape {:?}",
                    out.metrics[i].0,
                    m.shape()
                )));
            }
            if m.device() == dev {
                on_device.push(i);
                parts.push(m.detach().to_dtype(DType::F64)?.reshape(&[1])?);
            } else {
                host.push(i);
            }
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        let v = Tensor::concat(&refs, 0)?.to_vec_f64()?;
        let base = 2;
        let mut metrics = vec![(String::new(), 0.0); out.metrics.len()];
        for (k, &i) in on_device.iter().enumerate() {
            metrics[i] = (out.metrics[i].0.clone(), v[base + k]);
        }
        for &i in &host {
            metrics[i] = (out.metrics[i].0.clone(), out.metrics[i].1.item()?);
        }
        Ok(ReadBack {
            loss: v[0],
            probe: v[1],
            metrics,
        })
    }

    /// The first gradient or floating-point buffer (running statistics) holding a NaN or an
    /// infinity, as `(name, offending max |value|)`: the slow search that names what
    /// [`Trainer::read_back`]'s probe found.
    fn first_non_finite(&self) -> Result<Option<(String, f64)>> {
        let mut found: Option<(String, f64)> = None;
        let mut first_err: Option<selfsup_tensor::Error> = None;
        let mut check = |name: String, t: &Tensor| {
            if found.is_some() || first_err.is_some() || !t.dtype().is_float() {
                return;
            }
            match t
                .abs()
                .and_then(|a| a.max(&[], false))
                .and_then(|m| m.item())
            {
                Ok(m) if !m.is_finite() => found = Some((name, m)),
                Ok(_) => {}
                Err(e) => first_err = Some(e),
            }
        };
        for (name, p) in self.method.trainable_params() {
            if let Some(g) = p.grad() {
                check(format!("gradient of {name}"), &g);
            }
        }
        self.method
            .visit_buffers("", &mut |name, b| check(format!("buffer {name}"), b));
        if let Some(e) = first_err {
            return Err(e.into());
        }
        Ok(found)
    }

    /// One optimisation step on `batch`. A NaN or infinite loss returns
    /// [`SslError::NonFinite`], and a NaN or infinite gradient or running statistic
    /// [`SslError::Diverged`], before the optimiser updates anything.
    ///
    /// The step runs inside [`selfsup_tensor::parallel::hot`]: the thread pool's workers spin
    /// between its ops instead of sleeping (a no-op when the caller is already inside `hot`).
    pub fn train_step(&mut self, batch: &SslBatch) -> Result<StepStats> {
        selfsup_tensor::parallel::hot(|| self.step_once(batch))
    }

    /// The body of [`Trainer::train_step`].
    fn step_once(&mut self, batch: &SslBatch) -> Result<StepStats> {
        let progress = Progress {
            step: self.step,
            total: self.total,
        };
        let lr = self.schedule.lr(self.step);
        self.optimizer.set_lr(lr);
        self.method.set_train(true);
        let batch = batch.to_device(self.device)?;
        let (method, generator) = (&mut self.method, &mut self.generator);
        let out = with_matmul_precision(self.precision, || -> Result<StepOutput> {
            let out = method.forward(&batch, progress, generator)?;
            out.loss.backward()?;
            Ok(out)
        })?;
        // The one read-back of the step: the loss, a probe of every gradient and running
        // statistic, and the method's metrics, in one transfer.
        let ReadBack {
            loss,
            probe,
            metrics,
        } = self.read_back(&out)?;
        if !loss.is_finite() {
            return Err(SslError::NonFinite {
                step: self.step,
                value: loss,
            });
        }
        // A finite loss can still come with non-finite gradients or running statistics (e.g.
        // BatchNorm's normalisation keeps the loss finite while the weights blow up): stop
        // before the optimiser writes them into the parameters.
        if !probe.is_finite() {
            let (what, value) = self
                .first_non_finite()?
                .unwrap_or_else(|| ("a gradient or running statistic".to_string(), probe));
            return Err(SslError::Diverged {
                step: self.step,
                what,
                value,
            });
        }
        if self.clip > 0.0 {
            let params: Vec<(String, Tensor)> = self
                .optimizer
                .groups()
                .iter()
                .flat_map(|g| g.params.iter().cloned())
                .collect();
            clip_grad_norm_on_device(&params, self.clip)?;
        }
        self.optimizer.step()?;
        self.optimizer.zero_grad();
        self.method.zero_grad();
        self.method.after_step(progress)?;
        self.step += 1;
        Ok(StepStats {
            loss,
            lr,
            metrics,
            embeddings: out.embeddings,
        })
    }
}
