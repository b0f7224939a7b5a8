//! `linear_cross_entropy` on the GPU: fused at bf16 precision (the logits stored in bf16 and
//! read so by the cross-entropy's kernels, their gradient written straight to bf16 for the
//! head's products), against the composition it stands for, with the same roundings, on the
//! same GPU and on the CPU.

use selfsup_tensor::ops::loss::CrossEntropy;
use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{DType, Device, Tensor};

use crate::{compare, on_each_gpu, rand, round_bf16};

/// The loss, the logits and the gradients of x, W and b (None where not wanted) of one run.
type Run = (Tensor, Tensor, [Option<Tensor>; 3]);

/// Runs the head and loss on `dev` at precision `p`, fused or composed (with the logits
/// rounded to bf16 when `round`, as the fused form rounds them at bf16 with device targets),
/// targets `tg` (moved to `dev` when `device_targets`); `grads` says which of x, W, b want a
/// gradient. The logits come back in f32.
#[allow(clippy::too_many_arguments)]
fn run(
    dev: Device,
    p: MatmulPrecision,
    fused: bool,
    xs: &[Tensor; 3],
    bias: bool,
    grads: [bool; 3],
    tg: &Tensor,
    device_targets: bool,
    opts: &CrossEntropy,
    round: bool,
) -> Run {
    with_matmul_precision(p, || {
        let on: Vec<Tensor> = xs
            .iter()
            .zip(grads)
            .map(|(t, want)| {
                let t = t.to_device(dev).unwrap();
                if want {
                    t.requires_grad_()
                } else {
                    t
                }
            })
            .collect();
        let tg = if device_targets {
            tg.to_device(dev).unwrap()
        } else {
            tg.clone()
        };
        let b = bias.then_some(&on[2]);
        let (loss, logits) = if fused {
            on[0].linear_cross_entropy(&on[1], b, &tg, opts).unwrap()
        } else {
            let mut logits = on[0].linear(&on[1], b).unwrap();
            if round {
                logits = round_bf16(&logits);
            }
            (logits.cross_entropy_with(&tg, opts).unwrap(), logits)
        };
        // A loss gradient other than 1, so a backward that ignored it would show.
        loss.mul_scalar(1.5).unwrap().backward().unwrap();
        let logits = logits.detach().to_dtype(DType::F32).unwrap();
        (loss, logits, [0, 1, 2].map(|i| on[i].grad()))
    })
}

/// At bf16 precision with device targets the fused head gives the loss, logits (bf16) and
/// gradients of the composition with its roundings (to within what a different f32 summation
/// order can flip in a bf16 rounding) on the same GPU and on the CPU at bf16 precision: with
/// and without a bias, ignored rows, label smoothing, sum or mean, gradients for only some
/// operands, a class count that is not a multiple of the warp; host targets and f32
/// precision compose. It runs the kernels that read bf16 logits.
#[test]
fn linear_cross_entropy_fuses_at_bf16_and_matches_the_composition() {
    on_each_gpu("linear_cross_entropy", |dev| {
        let plain = CrossEntropy::default();
        let ignore = CrossEntropy {
            ignore_index: Some(2),
            label_smoothing: 0.1,
            ..CrossEntropy::default()
        };
        let sum = CrossEntropy {
            mean: false,
            ..CrossEntropy::default()
        };
        // (rows, in, classes, bias, grads of x W b, device targets, options)
        let cases = [
            (37, 24, 75, false, [true; 3], true, &plain),
            (37, 24, 75, true, [true; 3], true, &ignore),
            (37, 24, 75, true, [true, false, true], true, &sum),
            (37, 24, 75, false, [false, true, false], true, &plain),
            (9, 16, 33, true, [true; 3], false, &ignore),
            // Classes a multiple of 8: the bf16 kernels read (and the backward writes) 16-byte
            // vectors of 8 logits.
            (37, 24, 80, true, [true; 3], true, &ignore),
            (21, 16, 64, false, [true; 3], true, &sum),
        ];
        for &(n, k, c, bias, grads, device_targets, opts) in &cases {
            let xs = [
                rand(&[n, k], DType::F32, -1.0, 1.0, 1),
                rand(&[c, k], DType::F32, -0.5, 0.5, 2),
                rand(&[c], DType::F32, -0.5, 0.5, 3),
            ];
            let tg = Tensor::from_vec(
                (0..n as i64)
                    .map(|i| (i * 7) % c as i64)
                    .collect::<Vec<_>>(),
                &[n],
            )
            .unwrap();
            let what = format!("[{n}, {k}] -> {c}, bias {bias}, grads {grads:?}, device targets {device_targets}, {opts:?}");
            for p in [MatmulPrecision::Bf16, MatmulPrecision::F32] {
                let round = p == MatmulPrecision::Bf16 && device_targets;
                let go = |d, fused| {
                    run(
                        d,
                        p,
                        fused,
                        &xs,
                        bias,
                        grads,
                        &tg,
                        device_targets,
                        opts,
                        round,
                    )
                };
                let (l, z, gg) = go(dev, true);
                let (lc, zc, cg) = go(dev, false);
                let (lcpu, zcpu, gcpu) = go(Device::Cpu, false);
                // A logit whose bf16 rounding another summation order flips moves by one bf16
                // step (2^-8 of it).
                let (same, logit) = if round { (1e-4, 8e-3) } else { (1e-5, 1e-6) };
                compare(&format!("{what} {p}: loss vs composed"), &l, &lc, same);
                compare(&format!("{what} {p}: loss vs CPU"), &l, &lcpu, 1e-3);
                compare(&format!("{what} {p}: logits vs composed"), &z, &zc, logit);
                compare(&format!("{what} {p}: logits vs CPU"), &z, &zcpu, 8e-3);
                for (i, name) in ["dx", "dW", "db"].iter().enumerate() {
                    let wanted = grads[i] && (i < 2 || bias);
                    assert_eq!(gg[i].is_some(), wanted, "{what} {p}: {name} present");
                    if let (Some(a), Some(cc), Some(cpu)) = (&gg[i], &cg[i], &gcpu[i]) {
                        // The bias sums the rounded gradient where fused (documented).
                        let t = if round { 5e-3 } else { 1e-5 };
                        compare(&format!("{what} {p}: {name} vs composed"), a, cc, t);
                        compare(&format!("{what} {p}: {name} vs CPU"), a, cpu, 5e-3);
                    }
                }
            }
        }
        // What ran: the kernels that read bf16 logits.
        if let Device::Cuda(i) = dev {
            let be = selfsup_tensor::cuda::CudaBackend::get(i).unwrap();
            let _one = crate::PROFILING.lock().unwrap_or_else(|p| p.into_inner());
            let x = rand(&[16, 8], DType::F32, -1.0, 1.0, 1)
                .to_device(dev)
                .unwrap()
                .requires_grad_();
            let w = rand(&[40, 8], DType::F32, -1.0, 1.0, 2)
                .to_device(dev)
                .unwrap()
                .requires_grad_();
            let tg = Tensor::from_vec((0..16i64).collect::<Vec<_>>(), &[16])
                .unwrap()
                .to_device(dev)
                .unwrap();
            be.profile_start();
            with_matmul_precision(MatmulPrecision::Bf16, || {
                let (loss, _) = x.linear_cross_entropy(&w, None, &tg, &plain).unwrap();
                loss.backward().unwrap();
            });
            let prof = be.profile_stop().unwrap();
            // Other tests' kernels may land in the profile (they run on other threads), so
            // only the kernels no composition launches are looked for.
            for k in [
                "loss/cross_entropy_fwd_bf16",
                "loss/cross_entropy_bw_bf16_bf16",
            ] {
                assert!(prof.calls(k) >= 1, "{k} did not run: {prof:?}");
            }
        }
    });
}
