//! `qkv_attention` on the GPU: fused at bf16 precision (the projections and their gradient in
//! bf16, as under PyTorch's autocast: the product stores them in bf16, the tensor-core
//! attention's `_bf16_` kernels read them and write their gradient; with `qkv_attention_as`
//! and a bf16 output the `_bf16o_` kernels, which store the output and read its gradient in
//! bf16 too), against the composition it stands for, with the same roundings, on the same GPU
//! and on the CPU.

use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{DType, Device, Tensor};

use crate::{compare, leaf, on_each_gpu, rand, round_bf16};

/// One run's output and the gradients of x, W, b (None where not wanted).
type Run = (Tensor, [Option<Tensor>; 3]);

/// Runs the op on `dev` at precision `p` with its output stored as `out`, fused
/// (`qkv_attention`, or `qkv_attention_as` for a bf16 `out`) or composed (linear, then
/// `attention_qkv`, then a cast to `out`; at bf16 precision with the projections rounded to
/// bf16, as the fused form rounds them and their gradient), with output gradient `g` (in
/// `out`); `want` says which of x, W, b want a gradient.
#[allow(clippy::too_many_arguments)]
fn run(
    dev: Device,
    p: MatmulPrecision,
    out: DType,
    fused: bool,
    xs: &[Tensor; 3],
    bias: bool,
    want: [bool; 3],
    heads: usize,
    causal: bool,
    g: &Tensor,
) -> Run {
    with_matmul_precision(p, || {
        let on: Vec<Tensor> = xs.iter().zip(want).map(|(t, w)| leaf(t, dev, w)).collect();
        let (x, w) = (&on[0], &on[1]);
        let b = bias.then_some(&on[2]);
        let y = if fused && out == DType::F32 {
            x.qkv_attention(w, b, heads, causal).unwrap()
        } else if fused {
            x.qkv_attention_as(w, b, heads, causal, out).unwrap()
        } else {
            let s = x.shape().to_vec();
            let mut qkv = x
                .reshape(&[s[0] * s[1], s[2]])
                .unwrap()
                .linear(w, b)
                .unwrap();
            if p == MatmulPrecision::Bf16 {
                qkv = round_bf16(&qkv);
            }
            qkv.reshape(&[s[0], s[1], w.shape()[0]])
                .unwrap()
                .attention_qkv(heads, causal)
                .unwrap()
                .to_dtype(out)
                .unwrap()
        };
        let g = g.to_dtype(out).unwrap().to_device(dev).unwrap();
        y.backward_with(Some(&g), false).unwrap();
        (y, [0, 1, 2].map(|i| on[i].grad()))
    })
}

/// At bf16 precision the fused op gives the output and gradients of the composition with its
/// roundings (to within what a different f32 summation order can flip in a bf16 rounding) on
/// the same GPU, and the CPU's within bf16 tolerance, causal or not, for head widths that take
/// the kernels' element loads (odd, and element stores) and vector loads, sequence lengths
/// that are and are not multiples of the 64-row tile, with and without a bias and with
/// gradients wanted for only some operands, with an f32 output and a bf16 one; it runs the
/// bf16 kernels; at f32 precision it is the composition. With a bf16 output the backward's row
/// terms `dO . O` read the stored output, as FlashAttention's do for bf16 tensors, where the
/// composition reads its f32 value: the gradients of the queries' and keys' columns then differ
/// from the composition's by bf16 rounding, about as much as the composition's differ from the
/// CPU's, and are held to the CPU's tolerance; the values' rows of dW and db, which do not use
/// those terms, and the output (one flipped bf16 rounding) are held to the composition's. The
/// bf16 output has exactly the bits of the f32 one's rounding.
#[test]
fn qkv_attention_keeps_the_projections_in_bf16_and_matches_the_composition() {
    on_each_gpu("qkv_attention", |dev| {
        // (batch, T, heads, dh, in, bias, grads of x W b)
        let cases = [
            (2, 9, 3, 5, 12, true, [true; 3]),
            (1, 70, 2, 20, 24, true, [true; 3]),
            (2, 67, 1, 64, 16, false, [true, true, false]),
            (1, 150, 2, 32, 40, true, [false, true, true]),
            (1, 64, 2, 16, 8, true, [true, false, false]),
        ];
        for (ci, &(b, t, heads, dh, d, bias, want)) in cases.iter().enumerate() {
            let o = 3 * heads * dh;
            let seed = 40 + 4 * ci as u64;
            // The bias is bf16-exact, as the fused form rounds it.
            let xs = [
                rand(&[b, t, d], DType::F32, -1.0, 1.0, seed),
                rand(&[o, d], DType::F32, -0.6, 0.6, seed + 1),
                round_bf16(&rand(&[o], DType::F32, -0.3, 0.3, seed + 2)),
            ];
            let g = rand(&[b, t, heads * dh], DType::F32, -1.0, 1.0, seed + 3);
            for causal in [false, true] {
                // The fused f32 output, rounded: the bf16 output's bits.
                let mut rounded = None;
                let what = format!(
                    "b {b} T {t} H {heads} dh {dh} in {d} bias {bias} grads {want:?} causal {causal}"
                );
                for (p, out) in [
                    (MatmulPrecision::Bf16, DType::F32),
                    (MatmulPrecision::Bf16, DType::BF16),
                    (MatmulPrecision::F32, DType::F32),
                ] {
                    let go = |dv, fused| run(dv, p, out, fused, &xs, bias, want, heads, causal, &g);
                    let (y, gs) = go(dev, true);
                    let (yc, gc) = go(dev, false);
                    let (ycpu, gcpu) = go(Device::Cpu, false);
                    let (same, cpu) = if p == MatmulPrecision::Bf16 {
                        (5e-3, 2e-2)
                    } else {
                        (1e-5, 2e-3)
                    };
                    let p = format!("{p} out {out:?}");
                    let flip = if out == DType::BF16 { 1e-2 } else { same };
                    compare(&format!("{what} {p}: forward vs composed"), &y, &yc, flip);
                    match (&rounded, out) {
                        (None, DType::F32) => rounded = Some(y.to_dtype(DType::BF16).unwrap()),
                        (Some(r), DType::BF16) => compare(&format!("{what} {p}: bits"), &y, r, 0.0),
                        _ => {}
                    }
                    compare(&format!("{what} {p}: forward vs CPU"), &y, &ycpu, cpu);
                    for (i, name) in ["dx", "dW", "db"].iter().enumerate() {
                        let wanted = want[i] && (i != 2 || bias);
                        assert_eq!(gs[i].is_some(), wanted, "{what} {p}: {name} present");
                        if let (Some(a), Some(c), Some(c2)) = (&gs[i], &gc[i], &gcpu[i]) {
                            // dW and db sum B·T rows of a gradient that differs from the CPU's
                            // (f32 attention where it has no bf16 products) by bf16 rounding,
                            // and their sums cancel: an absolute error of a few 1e-2 at T 150.
                            let cpu = if i > 0 { 3.0 * cpu } else { cpu };
                            let vs = format!("{what} {p}: {name} vs composed");
                            if out == DType::BF16 {
                                compare(&vs, a, c, cpu);
                                if i > 0 {
                                    let v = |t: &Tensor| t.narrow(0, 2 * o / 3, o / 3).unwrap();
                                    compare(&format!("{vs}, the values' rows"), &v(a), &v(c), same);
                                }
                            } else {
                                compare(&vs, a, c, same);
                            }
                            compare(&format!("{what} {p}: {name} vs CPU"), a, c2, cpu);
                        }
                    }
                }
            }
        }
        // What ran: the bf16 kernels and the bias's column sums from the bf16 gradient.
        if let Device::Cuda(i) = dev {
            let be = selfsup_tensor::cuda::CudaBackend::get(i).unwrap();
            if be.capability().0 < 8 {
                eprintln!("qkv_attention: compute capability below 8.0, composed there");
                return;
            }
            let _one = crate::PROFILING.lock().unwrap_or_else(|p| p.into_inner());
            let on = |t: Tensor| t.to_device(dev).unwrap().requires_grad_();
            let x = on(rand(&[2, 16, 8], DType::F32, -1.0, 1.0, 1));
            let w = on(rand(&[96, 8], DType::F32, -1.0, 1.0, 2));
            let bias = on(rand(&[96], DType::F32, -1.0, 1.0, 3));
            be.profile_start();
            with_matmul_precision(MatmulPrecision::Bf16, || {
                let y = x.qkv_attention(&w, Some(&bias), 2, true).unwrap();
                y.sum_all().unwrap().backward().unwrap();
                let y = x
                    .qkv_attention_as(&w, Some(&bias), 2, true, DType::BF16)
                    .unwrap();
                assert_eq!(y.dtype(), DType::BF16);
                y.to_dtype(DType::F32)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
            });
            let prof = be.profile_stop().unwrap();
            for k in [
                "attention_mma/attention_mma_fwd_bf16_32",
                "attention_mma/attention_mma_bwd_dq_bf16_32",
                "attention_mma/attention_mma_bwd_dkv_bf16_32",
                "attention_mma/attention_mma_fwd_bf16o_32",
                "attention_mma/attention_mma_bwd_dq_bf16o_32",
                "attention_mma/attention_mma_bwd_dkv_bf16o_32",
                "copy/colsum_bf16",
            ] {
                assert!(prof.calls(k) >= 1, "{k} did not run: {prof:?}");
            }
            assert!(
                prof.calls("cublasLt linear BF16->BF16 32x8x96 + bias") >= 1
                    || be.lt_problem().is_some(),
                "{prof:?}"
            );
        }
    });
}
