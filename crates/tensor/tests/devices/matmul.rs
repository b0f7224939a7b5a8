//! Matrix products on the GPU (cuBLAS) against the CPU, forward and backward, over row-major,
//! transposed, broadcast-batch and non-collapsible-batch operands.

use selfsup_tensor::{DType, Device, Tensor};

use crate::{compare, leaf, max_diff, on_each_gpu, rand};

#[test]
fn matmul_matches_the_cpu_on_every_operand_layout() {
    on_each_gpu("matmul", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
            type Case = (&'static str, Tensor, Tensor);
            let cases: Vec<Case> = vec![
                (
                    "plain",
                    rand(&[7, 33], dtype, -1.0, 1.0, 1),
                    rand(&[33, 5], dtype, -1.0, 1.0, 2),
                ),
                (
                    "a transposed",
                    rand(&[33, 7], dtype, -1.0, 1.0, 3).t().unwrap(),
                    rand(&[33, 5], dtype, -1.0, 1.0, 4),
                ),
                (
                    "b transposed",
                    rand(&[7, 33], dtype, -1.0, 1.0, 5),
                    rand(&[5, 33], dtype, -1.0, 1.0, 6).t().unwrap(),
                ),
                (
                    "batched",
                    rand(&[3, 7, 9], dtype, -1.0, 1.0, 7),
                    rand(&[3, 9, 4], dtype, -1.0, 1.0, 8),
                ),
                (
                    "broadcast b",
                    rand(&[2, 3, 7, 9], dtype, -1.0, 1.0, 9),
                    rand(&[9, 4], dtype, -1.0, 1.0, 10),
                ),
                (
                    "permuted batch",
                    rand(&[3, 2, 7, 9], dtype, -1.0, 1.0, 11)
                        .permute(&[1, 0, 2, 3])
                        .unwrap(),
                    rand(&[2, 3, 9, 4], dtype, -1.0, 1.0, 12),
                ),
                (
                    "vector",
                    rand(&[9], dtype, -1.0, 1.0, 13),
                    rand(&[9, 4], dtype, -1.0, 1.0, 14),
                ),
                (
                    "k = 0",
                    rand(&[3, 0], dtype, -1.0, 1.0, 15),
                    rand(&[0, 4], dtype, -1.0, 1.0, 16),
                ),
            ];
            for (name, a, b) in cases {
                let run = |d: Device| {
                    let (la, lb) = (
                        a.to_device(d).unwrap().requires_grad_(),
                        b.to_device(d).unwrap().requires_grad_(),
                    );
                    let y = la.matmul(&lb).unwrap();
                    let w = rand(y.shape(), dtype, -1.0, 1.0, 99).to_device(d).unwrap();
                    y.backward_with(Some(&w), false).unwrap();
                    (y, la.grad().unwrap(), lb.grad().unwrap())
                };
                let ((y, ga, gb), (yc, ca, cb)) = (run(dev), run(Device::Cpu));
                compare(&format!("{name} {dtype:?} forward"), &y, &yc, tol);
                compare(&format!("{name} {dtype:?} d/da"), &ga, &ca, tol);
                compare(&format!("{name} {dtype:?} d/db"), &gb, &cb, tol);
            }
        }
    });
}

#[test]
fn bf16_matmul_runs_on_the_gpu_through_f32() {
    on_each_gpu("bf16 matmul", |dev| {
        let a = rand(&[16, 32], DType::F32, -1.0, 1.0, 1)
            .to_dtype(DType::BF16)
            .unwrap();
        let b = rand(&[32, 8], DType::F32, -1.0, 1.0, 2)
            .to_dtype(DType::BF16)
            .unwrap();
        let y = a
            .to_device(dev)
            .unwrap()
            .matmul(&b.to_device(dev).unwrap())
            .unwrap();
        assert_eq!((y.device(), y.dtype()), (dev, DType::BF16));
        compare("bf16", &y, &a.matmul(&b).unwrap(), 1e-2);
    });
}

#[test]
fn tf32_and_bf16_products_match_the_cpus_rounding() {
    use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
    on_each_gpu("matmul precision", |dev| {
        // bf16 operands are cast with round-to-nearest-even on both devices, so only the
        // summation order differs; TF32 tensor cores may truncate where the CPU rounds.
        for (p, tol) in [(MatmulPrecision::Bf16, 1e-4), (MatmulPrecision::Tf32, 5e-3)] {
            let cases: Vec<(&str, Tensor, Tensor)> = vec![
                (
                    "plain",
                    rand(&[17, 64], DType::F32, -1.0, 1.0, 1),
                    rand(&[64, 9], DType::F32, -1.0, 1.0, 2),
                ),
                (
                    "transposed, offset",
                    rand(&[70, 17], DType::F32, -1.0, 1.0, 3)
                        .narrow(0, 6, 64)
                        .unwrap()
                        .t()
                        .unwrap(),
                    rand(&[9, 64], DType::F32, -1.0, 1.0, 4).t().unwrap(),
                ),
                (
                    "broadcast batch",
                    rand(&[3, 5, 33], DType::F32, -1.0, 1.0, 5),
                    rand(&[33, 6], DType::F32, -1.0, 1.0, 6),
                ),
            ];
            for (name, a, b) in cases {
                let run = |d: Device| {
                    with_matmul_precision(p, || {
                        let (la, lb) = (
                            a.to_device(d).unwrap().requires_grad_(),
                            b.to_device(d).unwrap().requires_grad_(),
                        );
                        let y = la.matmul(&lb).unwrap();
                        let w = rand(y.shape(), DType::F32, -1.0, 1.0, 9)
                            .to_device(d)
                            .unwrap();
                        y.backward_with(Some(&w), false).unwrap();
                        (y, la.grad().unwrap(), lb.grad().unwrap())
                    })
                };
                let ((y, ga, gb), (yc, ca, cb)) = (run(dev), run(Device::Cpu));
                compare(&format!("{p} {name} forward"), &y, &yc, tol);
                compare(&format!("{p} {name} d/da"), &ga, &ca, tol);
                compare(&format!("{p} {name} d/db"), &gb, &cb, tol);
            }
        }
    });
}

/// `cuda::matmul::bf16_gemm_gflops` (the bf16 peak behind the GPT-2 bench's MFU) runs cuBLAS on
/// bf16 matrices and reports a positive, finite rate; bad sizes are an error.
#[test]
fn the_bf16_gemm_peak_is_measured_on_bf16_matrices() {
    on_each_gpu("bf16 gemm peak", |dev| {
        let Device::Cuda(i) = dev else { return };
        let be = selfsup_tensor::cuda::CudaBackend::get(i).unwrap();
        let rate = selfsup_tensor::cuda::matmul::bf16_gemm_gflops(&be, 48, 3).unwrap();
        assert!(rate.is_finite() && rate > 0.0, "rate {rate}");
        assert!(selfsup_tensor::cuda::matmul::bf16_gemm_gflops(&be, 0, 3).is_err());
    });
}

/// `linear` on the GPU (cuBLASLt with the bias in its epilogue where the operands are
/// contiguous; at bf16 precision the operands cast once, the copies kept for the backward, the
/// output gradient cast once for both products with the bias gradient summed in the same
/// pass) gives the CPU's linear at the same precision, forward and all three gradients, for
/// strided and contiguous inputs, with and without a bias and with only some operands needing
/// a gradient; at bf16 it is not the f32 product (the rounding happened).
#[test]
fn linear_fuses_its_bias_keeps_its_bf16_casts_and_matches_the_cpu() {
    use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
    on_each_gpu("linear", |dev| {
        if let Device::Cuda(i) = dev {
            let be = selfsup_tensor::cuda::CudaBackend::get(i).unwrap();
            // cuBLASLt loads where cuBLAS does. (Other tests of this binary run products of
            // odd shapes, which a real cuBLASLt may decline, leaving them composed: right,
            // slower; so only a failure to load fails here, and a decline is printed.)
            if let Some(p) = be.lt_problem() {
                assert!(p.contains("declined"), "cuBLASLt did not load: {p}");
                eprintln!("linear: {p}");
            }
            // It takes an aligned product (operand rows of 64 bytes and more) rather than
            // declining it: the profile names what ran.
            let _one = crate::PROFILING.lock().unwrap_or_else(|p| p.into_inner());
            let x = rand(&[24, 64], DType::F32, -1.0, 1.0, 1)
                .to_device(dev)
                .unwrap();
            let w = rand(&[16, 64], DType::F32, -1.0, 1.0, 2)
                .to_device(dev)
                .unwrap();
            let b = rand(&[16], DType::F32, -1.0, 1.0, 3)
                .to_device(dev)
                .unwrap();
            for (p, name) in [
                (
                    MatmulPrecision::Bf16,
                    "cublasLt linear BF16 24x64x16 + bias",
                ),
                (MatmulPrecision::F32, "cublasLt linear F32 24x64x16 + bias"),
            ] {
                be.profile_start();
                with_matmul_precision(p, || x.linear(&w, Some(&b)).unwrap());
                let prof = be.profile_stop().unwrap();
                assert!(
                    prof.kernels.iter().any(|k| k.name == name),
                    "cuBLASLt declined {name}: {prof:?}"
                );
            }
        }
        // (rows, in, out, bias, grads, strided x): the bias gradient's column sums run in
        // chunks of 128 rows, 32 columns a block: 300 rows is two full chunks and a partial
        // one, 45 columns a partial block.
        for (n, k, o, bias, grads, strided) in [
            (19, 33, 7, true, [true, true, true], true),
            (19, 33, 7, false, [true, true, false], true),
            (19, 33, 7, true, [false, true, true], true),
            (19, 33, 7, true, [true, false, false], true),
            (19, 33, 7, true, [true, true, true], false),
            (300, 40, 45, true, [true, true, true], false),
            (300, 40, 45, false, [true, true, false], false),
            (0, 5, 3, true, [true, true, true], false),
            (0, 5, 1, true, [true, true, true], false),
        ] {
            let x = if strided {
                rand(&[k + 7, n], DType::F32, -1.0, 1.0, 1)
                    .narrow(0, 3, k)
                    .unwrap()
                    .t()
                    .unwrap()
            } else {
                rand(&[n, k], DType::F32, -1.0, 1.0, 1)
            };
            let w = rand(&[o, k], DType::F32, -1.0, 1.0, 2);
            let b = rand(&[o], DType::F32, -1.0, 1.0, 3);
            let g = rand(&[n, o], DType::F32, -1.0, 1.0, 4);
            let run = |d: Device, p: MatmulPrecision| {
                with_matmul_precision(p, || {
                    let (lx, lw, lb) = (
                        leaf(&x, d, grads[0]),
                        leaf(&w, d, grads[1]),
                        leaf(&b, d, grads[2]),
                    );
                    let y = lx.linear(&lw, bias.then_some(&lb)).unwrap();
                    y.backward_with(Some(&g.to_device(d).unwrap()), false)
                        .unwrap();
                    let grads = [&lx, &lw, &lb].map(|t| t.grad());
                    (y, grads)
                })
            };
            for p in [MatmulPrecision::Bf16, MatmulPrecision::F32] {
                let (y, gg) = run(dev, p);
                let (yc, cg) = run(Device::Cpu, p);
                let what = format!(
                    "{p} [{n}, {k}] -> {o}, bias {bias}, grads {grads:?}, strided {strided}"
                );
                compare(&format!("{what}: forward"), &y, &yc, 1e-4);
                for (i, name) in ["dx", "dW", "db"].iter().enumerate() {
                    let wanted = grads[i] && (i < 2 || bias);
                    assert_eq!(gg[i].is_some(), wanted, "{what}: {name} present");
                    if let (Some(a), Some(c)) = (&gg[i], &cg[i]) {
                        compare(&format!("{what}: {name}"), a, c, 1e-4);
                    }
                }
                if p == MatmulPrecision::Bf16 && n > 0 {
                    let (y32, _) = run(Device::Cpu, MatmulPrecision::F32);
                    let diff = max_diff(&y, &y32);
                    assert!(
                        diff > 1e-3,
                        "{what}: the bf16 linear equals the f32 one ({diff})"
                    );
                }
            }
        }
    });
}
