//! `selfsup bench`: the reference workloads of shared/README.md, printing one JSON line per
//! measurement (medians over timed repetitions after warm-up).

use std::sync::Arc;
use std::time::Instant;

use selfsup_data::{idx, LoaderConfig, Split};
use selfsup_nn::optim::{Adam, AdamConfig, Optimizer};
use selfsup_nn::{Module, TextConfig, TextTransformer};
use selfsup_ssl::feed::{image_loader, to_ssl_batch};
use selfsup_ssl::{build, BackboneKind, MethodConfig, MethodName, OptimConfig, SslBatch, Trainer};
use selfsup_tensor::ops::attention::{with_gpu_attention, GpuAttention};
use selfsup_tensor::ops::fusion::{with_gpu_conv, with_gpu_fusion, GpuConv, GpuFusion};
use selfsup_tensor::ops::loss::CrossEntropy;
use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{DType, Device, Generator, Tensor};
use serde_json::json;

use crate::cli::{BenchArgs, GptSize, Workload};
use crate::error::{CliError, Result};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Least warm-up time: an idle vCPU of a virtual machine can take milliseconds to come back,
/// so the workers are given this long to wake up and start spinning before timing starts.
const WARMUP_S: f64 = 0.2;

/// Runs `f` at least `warmup` times and for at least [`WARMUP_S`], then `reps` timed times. The
/// whole bench runs inside `parallel::hot` (main.rs), so the pool's workers spin between calls,
/// as OpenMP's do in PyTorch's runs.
fn timed(reps: usize, warmup: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    let start = Instant::now();
    let mut done = 0;
    while done < warmup || start.elapsed().as_secs_f64() < WARMUP_S {
        f()?;
        done += 1;
    }
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(t)
}

/// Runs one workload and prints its JSON lines.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    let device = crate::pretrain::training_device(&args.device)?;
    let dev_name = args.device.as_str();
    let precision: MatmulPrecision = args
        .precision
        .parse()
        .map_err(|e| CliError::Input(format!("--precision: {e}")))?;
    let prec = precision.name();
    if args.profile && device.is_cpu() {
        return Err(CliError::Input(
            "--profile times GPU kernels: run it with --device cuda (on the CPU, use perf)".into(),
        ));
    }
    match args.workload {
        Workload::Sgemm => {
            let mut g = Generator::new(0);
            for &n in &args.sizes {
                let a = Tensor::randn(&[n, n], 0.0, 1.0, DType::F32, &mut g)?.to_device(device)?;
                let b = Tensor::randn(&[n, n], 0.0, 1.0, DType::F32, &mut g)?.to_device(device)?;
                // Timed calls scale with how short a call is, as in the PyTorch reference
                // (50 / 30 / 15 / 7 at n = 256 / 512 / 1024 / 2048 with the default 10): ten
                // 0.1 ms calls give a median that one hiccup of the shared machine can move.
                let r = args.reps.max(1);
                let reps = match n {
                    0..=256 => 5 * r,
                    257..=512 => 3 * r,
                    513..=1024 => r * 3 / 2,
                    _ => (r * 7 / 10).max(1),
                };
                let t = with_matmul_precision(precision, || {
                    timed(reps, 2, || {
                        a.matmul(&b)?;
                        device.synchronize()?;
                        Ok(())
                    })
                })?;
                let gflops: Vec<f64> = t
                    .iter()
                    .map(|s| 2.0 * (n as f64).powi(3) / s / 1e9)
                    .collect();
                println!(
                    "{}",
                    json!({"bench": "sgemm", "device": dev_name, "precision": prec, "n": n, "threads": threads, "reps": t.len(), "gflops": (median(gflops) * 10.0).round() / 10.0})
                );
            }
        }
        Workload::SimclrStep => {
            let mut cfg = MethodConfig::for_method(MethodName::Simclr);
            cfg.backbone.kind =
                crate::cli::parse_enum("--backbone", &args.backbone, &["small-cnn", "resnet18"])?;
            if !matches!(
                cfg.backbone.kind,
                BackboneKind::SmallCnn | BackboneKind::Resnet18
            ) {
                return Err(CliError::Input(format!(
                    "--backbone {}: simclr-step runs small-cnn or resnet18",
                    args.backbone
                )));
            }
            let batch = args.batch.unwrap_or(256).max(2);
            let mut g = Generator::new(0);
            let method = build(&cfg, &mut g)?;
            let kind = method.input();
            let optim = OptimConfig {
                warmup_steps: 0,
                schedule: selfsup_ssl::ScheduleKind::Constant,
                ..OptimConfig::default()
            };
            let steps = args.reps + 3;
            let mut trainer = Trainer::on_device(method, &optim, steps as u64, 0, device)?;
            trainer.set_precision(precision);
            let (data, batches): (&str, Vec<SslBatch>) = match idx::load_fashion_mnist_debian(
                Split::Train,
            ) {
                Ok(train) => {
                    let loader = image_loader(
                        Arc::new(train),
                        &kind,
                        &selfsup_data::ViewConfig::default(),
                        LoaderConfig {
                            batch_size: batch,
                            ..LoaderConfig::default()
                        },
                    )?;
                    // Views are made by the loader's background thread while the step runs;
                    // collect them first so the timing is of the training step alone and of
                    // the loader separately.
                    let t = Instant::now();
                    let b: Vec<SslBatch> = loader
                        .epoch(0)
                        .take(steps)
                        .map(to_ssl_batch)
                        .collect::<std::result::Result<_, _>>()?;
                    let per = t.elapsed().as_secs_f64() / steps as f64;
                    println!(
                        "{}",
                        json!({"bench": "simclr-aug", "threads": threads, "ms_per_batch": (per * 1e4).round() / 10.0})
                    );
                    ("fashion-mnist", b)
                }
                Err(_) => {
                    let b = (0..steps)
                        .map(|_| {
                            Ok(SslBatch::from_views(vec![
                                Tensor::randn(&[batch, 1, 28, 28], 0.0, 1.0, DType::F32, &mut g)?,
                                Tensor::randn(&[batch, 1, 28, 28], 0.0, 1.0, DType::F32, &mut g)?,
                            ]))
                        })
                        .collect::<Result<_>>()?;
                    ("random (Fashion-MNIST not installed)", b)
                }
            };
            // Batches wait on the device, as a GPU data pipeline would have them.
            let mut on_device = Vec::with_capacity(batches.len());
            for b in &batches {
                on_device.push(b.to_device(device)?);
            }
            let batches = on_device;
            let fusion: GpuFusion = args
                .fusion
                .parse()
                .map_err(|e| CliError::Input(format!("--fusion: {e}")))?;
            let conv: GpuConv = args
                .conv
                .parse()
                .map_err(|e| CliError::Input(format!("--conv: {e}")))?;
            let mut i = 0;
            let mut last = 0.0;
            let t = with_gpu_conv(conv, || {
                with_gpu_fusion(fusion, || {
                    timed(args.reps, 3, || {
                        last = trainer.train_step(&batches[i % batches.len()])?.loss;
                        i += 1;
                        Ok(())
                    })
                })
            })?;
            let ips: Vec<f64> = t.iter().map(|s| batch as f64 / s).collect();
            println!(
                "{}",
                json!({"bench": "simclr-step", "backbone": args.backbone, "device": dev_name, "precision": prec, "fusion": args.fusion, "conv": args.conv, "threads": threads, "batch_images": batch, "data": data, "reps": t.len(), "step_s": (median(t.clone()) * 1e4).round() / 1e4, "img_per_s": median(ips).round(), "last_loss": last})
            );
            profile(args, device, "simclr-step", batch, || {
                with_gpu_conv(conv, || {
                    with_gpu_fusion(fusion, || trainer.train_step(&batches[i % batches.len()]))
                })?;
                Ok(None)
            })?;
        }
        Workload::GptStep => gpt_step(args, device, precision, threads)?,
    }
    Ok(())
}

/// Model FLOPs of one training token (forward and backward) of a GPT with `params` parameters:
/// `6 N + 12 L d T` (the PaLM paper's count: the matmuls with the weights, plus attention's
/// scores and weighted sums over a context of `T`).
pub fn gpt_flops_per_token(params: usize, cfg: &TextConfig) -> f64 {
    6.0 * params as f64 + 12.0 * (cfg.layers * cfg.dim * cfg.context) as f64
}

/// The matmul peak of `device` at `precision` (GFLOP/s), the MFU's denominator. On a GPU in
/// bf16: cuBLAS on random bf16 matrices (f32 accumulation, bf16 output), the better of n = 4096 and
/// 8192, the same measure as PyTorch's bf16 matmul (selfsup's own bf16 products cast their f32
/// operands and write f32, which would flatter the MFU as a denominator). Otherwise: an f32
/// tensor matmul at `precision`, the median over a few calls at a size that fills the device
/// (4096 on a GPU, 1024 on the CPU).
fn matmul_peak(device: Device, precision: MatmulPrecision) -> Result<f64> {
    if let (Device::Cuda(i), MatmulPrecision::Bf16) = (device, precision) {
        let be = selfsup_tensor::cuda::CudaBackend::get(i)?;
        let mut best: f64 = 0.0;
        for n in [4096, 8192] {
            best = best.max(selfsup_tensor::cuda::matmul::bf16_gemm_gflops(&be, n, 10)?);
        }
        return Ok(best);
    }
    let n = if device.is_cpu() { 1024 } else { 4096 };
    let mut g = Generator::new(1);
    let a = Tensor::randn(&[n, n], 0.0, 1.0, DType::F32, &mut g)?.to_device(device)?;
    let b = Tensor::randn(&[n, n], 0.0, 1.0, DType::F32, &mut g)?.to_device(device)?;
    let t = with_matmul_precision(precision, || {
        timed(10, 3, || {
            a.matmul(&b)?;
            device.synchronize()?;
            Ok(())
        })
    })?;
    Ok(2.0 * (n as f64).powi(3) / median(t) / 1e9)
}

/// `bench gpt-step`: AdamW training steps of the chosen GPT on random tokens; tokens/s, and on
/// the `gpt2` model the model-FLOPs utilisation against [`matmul_peak`].
fn gpt_step(
    args: &BenchArgs,
    device: Device,
    precision: MatmulPrecision,
    threads: usize,
) -> Result<()> {
    let (cfg, default_batch) = match args.model {
        GptSize::Mini => (TextConfig::reference_gpt(), 32),
        GptSize::Gpt2 => (TextConfig::gpt2_small(), 8),
    };
    let b = args.batch.unwrap_or(default_batch).max(1);
    let attention: GpuAttention = args
        .attention
        .parse()
        .map_err(|e| CliError::Input(format!("--attention: {e}")))?;
    let fusion: GpuFusion = args
        .fusion
        .parse()
        .map_err(|e| CliError::Input(format!("--fusion: {e}")))?;
    let (t_len, vocab) = (cfg.context, cfg.vocab);
    let mut g = Generator::new(0);
    let mut model = TextTransformer::new(&cfg, DType::F32, &mut g)?;
    model.to_device(device)?;
    let mut opt = Adam::adamw(
        model.params(),
        AdamConfig {
            lr: 3e-4,
            weight_decay: 0.1,
            ..AdamConfig::adamw()
        },
    );
    let mut rng = selfsup_tensor::rng::Philox::new(0, 1);
    let ids: Vec<i64> = (0..b * (t_len + 1))
        .map(|_| (rng.next_u32() % vocab as u32) as i64)
        .collect();
    let all = Tensor::from_vec(ids, &[b, t_len + 1])?;
    let x = all.narrow(1, 0, t_len)?.contiguous()?.to_device(device)?;
    // Targets wait on the device too (the cross-entropy then never reads them back).
    let y = all.narrow(1, 1, t_len)?.contiguous()?.to_device(device)?;
    // One step: the seconds the host took to queue it (before its one read-back), and its loss.
    let mut step = || -> Result<(f64, f64)> {
        let start = Instant::now();
        let loss = with_gpu_fusion(fusion, || {
            with_gpu_attention(attention, || {
                with_matmul_precision(precision, || -> Result<Tensor> {
                    // The head and the loss as one op, as the gpt method trains (fused on a GPU at
                    // bf16 precision).
                    let hidden = model.hidden(&x, None)?;
                    let (loss, _) =
                        model.head_cross_entropy(&hidden, &y, &CrossEntropy::default())?;
                    loss.backward()?;
                    Ok(loss)
                })
            })
        })?;
        opt.step()?;
        opt.zero_grad();
        let queued = start.elapsed().as_secs_f64();
        // The one read-back of the step (it also waits for the device to finish it).
        Ok((queued, loss.item()?))
    };
    let mut last = 0.0;
    let t = timed(args.reps, 2, || {
        last = step()?.1;
        Ok(())
    })?;
    let tps: Vec<f64> = t.iter().map(|s| (b * t_len) as f64 / s).collect();
    let tok_per_s = median(tps);
    let params = model.num_params();
    let mut line = json!({"bench": "gpt-step", "model": format!("{:?}", args.model).to_lowercase(), "device": args.device, "precision": precision.name(), "attention": args.attention, "fusion": args.fusion, "threads": threads, "params": params, "batch": b, "tokens_per_step": b * t_len, "reps": t.len(), "step_s": (median(t.clone()) * 1e4).round() / 1e4, "tok_per_s": tok_per_s.round(), "last_loss": last});
    if args.model == GptSize::Gpt2 {
        let flops = gpt_flops_per_token(params, &cfg);
        let achieved = tok_per_s * flops / 1e9;
        let peak = matmul_peak(device, precision)?;
        line["model_gflop_per_token"] = json!((flops / 1e9 * 1e3).round() / 1e3);
        line["achieved_gflops"] = json!(achieved.round());
        line["matmul_peak_gflops"] = json!(peak.round());
        line["mfu"] = json!((achieved / peak * 1e3).round() / 1e3);
    }
    println!("{line}");
    profile(args, device, "gpt-step", b, || step().map(|(q, _)| Some(q)))
}

/// With `--profile` on a GPU: runs `step` (of `batch` images or sequences) once more with every kernel launch and cuBLAS call
/// timed on the device (`CudaBackend::profile_start`), and prints a `gpu-profile` line: the
/// step's device time, the 30 kernels (or GEMM shapes) that took most of it, with their calls
/// and shares, and, when `step` returns it, the seconds the host took to queue the step (near
/// the device time: the step is launch-bound), and the first product cuBLASLt declined, if any
/// (`CudaBackend::lt_problem`: its epilogue's work then ran in separate kernels).
fn profile(
    args: &BenchArgs,
    device: Device,
    workload: &str,
    batch: usize,
    step: impl FnOnce() -> Result<Option<f64>>,
) -> Result<()> {
    let Device::Cuda(i) = device else {
        return Ok(());
    };
    if !args.profile {
        return Ok(());
    }
    let be = selfsup_tensor::cuda::CudaBackend::get(i)?;
    device.synchronize()?;
    be.profile_start();
    let queued = step();
    // Stopped even when the step failed, so the marks are not left recording.
    let p = be.profile_stop()?;
    let queued = queued?;
    let r3 = |v: f64| (v * 1e3).round() / 1e3;
    const TOP: usize = 30;
    let kernels: Vec<_> = p
        .kernels
        .iter()
        .take(TOP)
        .map(|k| json!({"name": k.name, "calls": k.calls, "ms": r3(k.ms), "share": r3(k.ms / p.total_ms.max(1e-12))}))
        .collect();
    let other: f64 = p.kernels.iter().skip(TOP).map(|k| k.ms).sum();
    println!(
        "{}",
        json!({"bench": "gpu-profile", "workload": workload, "model": format!("{:?}", args.model).to_lowercase(), "backbone": args.backbone, "batch": batch, "device": args.device, "precision": args.precision, "attention": args.attention, "fusion": args.fusion, "conv": args.conv, "device_ms": r3(p.total_ms), "host_queue_ms": queued.map(|s| r3(s * 1e3)), "distinct_kernels": p.kernels.len(), "launches": p.kernels.iter().map(|k| k.calls).sum::<usize>(), "kernels": kernels, "other_ms": r3(other), "cublaslt_declined": be.lt_problem()})
    );
    Ok(())
}
