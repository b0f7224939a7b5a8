//! The matmul precision setting on the CPU: bf16 and TF32 products equal f32 products of the
//! rounded operands, forward and backward, for matmul, linear and conv2d (whose input gradient at
//! bf16 also rounds its column gradient, as the GPU stores it); f32 is untouched.
//! Where the CPU multiplies bf16 in hardware (AVX-512 BF16) the bf16 products add their terms in
//! another order, so there they are compared to within f32 accumulation error, elsewhere exactly.
//! Fused attention multiplies in bf16 at bf16 precision only where the CPU has AVX-512 BF16.

use selfsup_tensor::precision::{round_mantissa, with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{Conv2dParams, DType, Generator, Tensor};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let mut g = Generator::new(seed);
    Tensor::randn(shape, 0.0, 1.0, DType::F32, &mut g).unwrap()
}

/// `t` with every element rounded to `p`'s mantissa (a new leaf).
fn rounded(t: &Tensor, p: MatmulPrecision) -> Tensor {
    let v: Vec<f32> = t
        .contiguous()
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(|x| round_mantissa(x, p.mantissa_bits()))
        .collect();
    Tensor::from_vec(v, t.shape()).unwrap()
}

fn same(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    if what.contains("bf16") && selfsup_tensor::cpu::gemm::bf16_available() {
        let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * scale,
                "{what}: element {i}: {x} vs {y}"
            );
        }
    } else {
        assert_eq!(a, b, "{what}");
    }
}

/// Runs `f` on leaves `xs` under precision `p`, backward with `w`, and returns output and grads.
fn run(
    p: MatmulPrecision,
    xs: &[&Tensor],
    f: &dyn Fn(&[Tensor]) -> Tensor,
) -> (Tensor, Vec<Tensor>) {
    with_matmul_precision(p, || {
        let leaves: Vec<Tensor> = xs.iter().map(|x| x.detach().requires_grad_()).collect();
        let y = f(&leaves);
        let w = rand(y.shape(), 99);
        y.backward_with(Some(&w), false).unwrap();
        (y, leaves.iter().map(|l| l.grad().unwrap()).collect())
    })
}

#[test]
fn low_precision_products_are_products_of_rounded_operands() {
    let (a, b) = (rand(&[6, 40], 1), rand(&[40, 5], 2));
    let (x, w, bias) = (rand(&[6, 40], 3), rand(&[7, 40], 4), rand(&[7], 5));
    for p in [MatmulPrecision::Bf16, MatmulPrecision::Tf32] {
        // matmul (b passed transposed, a view): y = r(a) r(b); da = r(g) r(b)ᵀ; db = r(a)ᵀ r(g).
        let bt = b.t().unwrap().contiguous().unwrap();
        let f = |v: &[Tensor]| v[0].matmul(&v[1].t().unwrap()).unwrap();
        let (y, g) = run(p, &[&a, &bt], &f);
        let want = rounded(&a, p).matmul(&rounded(&b, p)).unwrap();
        same(&format!("{p} matmul"), &y, &want);
        let gy = rounded(&rand(y.shape(), 99), p);
        same(
            &format!("{p} matmul d/da"),
            &g[0],
            &gy.matmul(&rounded(&bt, p)).unwrap(),
        );
        // linear: the bias is added in f32, not rounded.
        let f = |v: &[Tensor]| v[0].linear(&v[1], Some(&v[2])).unwrap();
        let (y, g) = run(p, &[&x, &w, &bias], &f);
        let want = rounded(&x, p).linear(&rounded(&w, p), Some(&bias)).unwrap();
        same(&format!("{p} linear"), &y, &want);
        let gy = rounded(&rand(y.shape(), 99), p);
        same(
            &format!("{p} linear d/dw"),
            &g[1],
            &gy.t().unwrap().matmul(&rounded(&x, p)).unwrap(),
        );
        // The rounding is real: bf16 and TF32 differ from f32.
        let (y32, _) = run(MatmulPrecision::F32, &[&x, &w, &bias], &f);
        assert_ne!(y.to_vec::<f32>().unwrap(), y32.to_vec::<f32>().unwrap());
    }
}

/// The input gradient of a convolution with padding 1 at bf16 as defined: the f32 col2im of the
/// column gradient `Wᵀ · dy` of the rounded operands, itself rounded to bf16 (as the GPU stores
/// it); checked against the unrounded columns, which must differ by bf16 rounding only.
fn bf16_input_grad(dy: &Tensor, w: &Tensor, x_shape: &[usize]) -> Tensor {
    use selfsup_tensor::cpu::conv::{conv2d_backward_input_with, ConvGeom};
    let (ws, dys) = (w.shape(), dy.shape());
    let g = ConvGeom {
        n: x_shape[0],
        c_in: x_shape[1],
        h: x_shape[2],
        w: x_shape[3],
        c_out: ws[0],
        kh: ws[2],
        kw: ws[3],
        oh: dys[2],
        ow: dys[3],
        stride: (1, 1),
        padding: (1, 1),
        dilation: (1, 1),
        groups: 1,
    };
    let (dyv, wv) = (dy.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap());
    let want = conv2d_backward_input_with(&dyv, &wv, &g, true);
    let plain = conv2d_backward_input_with(&dyv, &wv, &g, false);
    let scale = plain.iter().fold(1f32, |m, v| m.max(v.abs()));
    let k = (ws[0] * ws[2] * ws[3]) as f32;
    assert!(want != plain, "the column gradient was not rounded");
    for (a, b) in want.iter().zip(&plain) {
        // Each of at most kh * kw summed columns moved by at most half a bf16 ulp.
        assert!((a - b).abs() <= k * scale / 256.0, "{a} vs {b}");
    }
    Tensor::from_vec(want, x_shape).unwrap()
}

/// Checks that conv2d of `x` and `w` (padding 1) at bf16 equals the f32 convolution of the
/// rounded operands, forward and weight gradient, and that its input gradient is
/// [`bf16_input_grad`]'s (`what` names the case); returns the bf16 output.
fn conv_rounds_its_operands(x: &Tensor, w: &Tensor, what: &str) -> Tensor {
    let params = Conv2dParams {
        padding: (1, 1),
        ..Default::default()
    };
    let p = MatmulPrecision::Bf16;
    let f = |v: &[Tensor]| v[0].conv2d(&v[1], None, params).unwrap();
    let (y, g) = run(p, &[x, w], &f);
    let (rx, rw) = (rounded(x, p), rounded(w, p));
    let (yr, _) = run(MatmulPrecision::F32, &[&rx, &rw], &f);
    same(what, &y, &yr);
    // The backward rounds the incoming gradient too, so compare with a rounded seed.
    let seed = rounded(&rand(y.shape(), 99), p);
    let (rxl, rwl) = (rx.requires_grad_(), rw.requires_grad_());
    rxl.conv2d(&rwl, None, params)
        .unwrap()
        .backward_with(Some(&seed), false)
        .unwrap();
    let dx = bf16_input_grad(&seed, &rw, x.shape());
    same(&format!("{what} d/dx"), &g[0], &dx);
    same(&format!("{what} d/dw"), &g[1], &rwl.grad().unwrap());
    y
}

#[test]
fn conv2d_rounds_its_operands_forward_and_backward() {
    let (x, w) = (rand(&[2, 3, 6, 6], 7), rand(&[4, 3, 3, 3], 8));
    conv_rounds_its_operands(&x, &w, "conv bf16");
}

#[test]
fn conv2d_with_one_input_channel_rounds_its_small_k_products() {
    // k = 1·3·3 = 9: the forward multiplies without the GEMM, from rounded copies.
    let (x, w) = (rand(&[2, 1, 7, 7], 11), rand(&[5, 1, 3, 3], 12));
    let y = conv_rounds_its_operands(&x, &w, "conv bf16 small k");
    let params = Conv2dParams {
        padding: (1, 1),
        ..Default::default()
    };
    let f = |v: &[Tensor]| v[0].conv2d(&v[1], None, params).unwrap();
    let (y32, _) = run(MatmulPrecision::F32, &[&x, &w], &f);
    assert_ne!(y.to_vec::<f32>().unwrap(), y32.to_vec::<f32>().unwrap());
}

#[test]
fn f32_precision_leaves_products_alone() {
    let (a, b) = (rand(&[5, 9], 1), rand(&[9, 4], 2));
    let y = with_matmul_precision(MatmulPrecision::F32, || a.matmul(&b).unwrap());
    same("f32", &y, &a.matmul(&b).unwrap());
}

/// Attention's output from bf16-rounded queries, keys, values and probabilities, in f64
/// (`x` is `[B, T, 3, H, dh]` packed): what the bf16 products compute, up to their f32 sums.
fn attention_of_rounded(x: &Tensor, h: usize, causal: bool) -> Vec<f64> {
    let (b, t, d3) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let dh = d3 / (3 * h);
    let bf = |v: f32| round_mantissa(v, MatmulPrecision::Bf16.mantissa_bits()) as f64;
    let xs: Vec<f64> = x.to_vec::<f32>().unwrap().into_iter().map(bf).collect();
    let at = |bi: usize, ti: usize, part: usize, hh: usize, c: usize| {
        xs[((bi * t + ti) * 3 + part) * h * dh + hh * dh + c]
    };
    let scale = 1.0 / (dh as f64).sqrt();
    let mut out = vec![0.0; b * t * h * dh];
    for bi in 0..b {
        for hh in 0..h {
            for i in 0..t {
                let n = if causal { i + 1 } else { t };
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        scale
                            * (0..dh)
                                .map(|c| at(bi, i, 0, hh, c) * at(bi, j, 1, hh, c))
                                .sum::<f64>()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let l: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for (j, sj) in s.iter().enumerate() {
                    let p = bf((((sj - m).exp()) / l) as f32);
                    for c in 0..dh {
                        out[((bi * t + i) * h + hh) * dh + c] += p * at(bi, j, 2, hh, c);
                    }
                }
            }
        }
    }
    out
}

/// At bf16 precision, f32 attention multiplies in bf16 (f32 sums) on a CPU with AVX-512 BF16,
/// as the GPU's tensor-core kernels do: its output is that of rounded queries, keys, values
/// and probabilities, and its gradient stays within bf16 error of f32's. Elsewhere the CPU's
/// attention stays f32 at every precision.
#[test]
fn attention_multiplies_in_bf16_where_the_cpu_can() {
    let (h, dh) = (2, 16);
    // 37 rows: causal blocks of 32 and a partial one; not a multiple of any kernel tile.
    let x = rand(&[2, 37, 3 * h * dh], 5);
    for causal in [false, true] {
        let f = move |xs: &[Tensor]| xs[0].attention_qkv(h, causal).unwrap();
        let (y32, g32) = run(MatmulPrecision::F32, &[&x], &f);
        let (y16, g16) = run(MatmulPrecision::Bf16, &[&x], &f);
        let (y32, y16) = (y32.to_vec::<f32>().unwrap(), y16.to_vec::<f32>().unwrap());
        let (g32, g16) = (
            g32[0].to_vec::<f32>().unwrap(),
            g16[0].to_vec::<f32>().unwrap(),
        );
        if !selfsup_tensor::cpu::gemm::bf16_available() {
            assert_eq!(
                y16, y32,
                "causal {causal}: f32 attention without AVX-512 BF16"
            );
            assert_eq!(g16, g32, "causal {causal}");
            continue;
        }
        let want = attention_of_rounded(&x, h, causal);
        let err = |y: &[f32]| {
            y.iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max)
        };
        let (e16, e32) = (err(&y16), err(&y32));
        eprintln!(
            "causal {causal}: max error against rounded operands: bf16 {e16:.2e}, f32 {e32:.2e}"
        );
        assert!(e16 < 1e-5, "causal {causal}: bf16 products off by {e16}");
        assert!(
            e32 > 4.0 * e16,
            "causal {causal}: f32 ({e32}) as close as bf16 ({e16})"
        );
        let scale = g32.iter().fold(0f32, |m, v| m.max(v.abs()));
        let gd = g16
            .iter()
            .zip(&g32)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            gd > 0.0 && gd < 3e-2 * scale,
            "causal {causal}: gradient moved by {gd} of {scale}"
        );
    }
}

/// On the CPU the matmul-heavy ops take a bf16 input with f32 parameters (an operand already
/// rounded, as `precision::operand_dtype` names it on a GPU) as its f32 value: the same output
/// and parameter gradients, and its gradient rounded to bf16, at every precision; the operand
/// dtype there is the input's own. A bf16 input of f64 parameters is a dtype mismatch.
#[test]
fn matmul_ops_take_a_bf16_operand_as_its_f32_value() {
    use selfsup_tensor::precision::operand_dtype;
    use selfsup_tensor::MlpActivation;
    let x16 = rand(&[2, 5, 8], 1).to_dtype(DType::BF16).unwrap();
    let xw = x16.to_dtype(DType::F32).unwrap();
    let (w1, b1) = (rand(&[12, 8], 2), rand(&[12], 3));
    let (w2, b2) = (rand(&[8, 12], 4), rand(&[8], 5));
    let (wq, bq) = (rand(&[24, 8], 6), rand(&[24], 7));
    type Op = fn(&[Tensor]) -> Tensor;
    let ops: [(&str, Op, Vec<&Tensor>); 3] = [
        (
            "linear",
            |v| {
                v[0].reshape(&[10, 8])
                    .unwrap()
                    .linear(&v[1], Some(&v[2]))
                    .unwrap()
            },
            vec![&w1, &b1],
        ),
        (
            "mlp2",
            |v| {
                v[0].reshape(&[10, 8])
                    .unwrap()
                    .mlp2(&v[1], Some(&v[2]), MlpActivation::Gelu, &v[3], Some(&v[4]))
                    .unwrap()
            },
            vec![&w1, &b1, &w2, &b2],
        ),
        (
            "qkv_attention",
            |v| v[0].qkv_attention(&v[1], Some(&v[2]), 2, true).unwrap(),
            vec![&wq, &bq],
        ),
    ];
    for p in MatmulPrecision::ALL {
        assert_eq!(with_matmul_precision(p, || operand_dtype(&xw)), DType::F32);
        for (name, op, params) in &ops {
            let with = |x: &Tensor| {
                let mut xs = vec![x];
                xs.extend(params.iter().copied());
                run(p, &xs, &|v: &[Tensor]| op(v))
            };
            let ((y, g), (yw, gw)) = (with(&x16), with(&xw));
            let what = format!("{name} at {}", p.name());
            assert_eq!(
                y.to_vec::<f32>().unwrap(),
                yw.to_vec::<f32>().unwrap(),
                "{what}"
            );
            assert_eq!(g[0].dtype(), DType::BF16, "{what}: the operand's gradient");
            assert_eq!(
                g[0].to_vec_f64().unwrap(),
                gw[0].to_dtype(DType::BF16).unwrap().to_vec_f64().unwrap(),
                "{what}: dx"
            );
            for i in 1..g.len() {
                assert_eq!(
                    g[i].to_vec::<f32>().unwrap(),
                    gw[i].to_vec::<f32>().unwrap(),
                    "{what}: d/dparam{i}"
                );
            }
        }
    }
    let w64 = w1.to_dtype(DType::F64).unwrap();
    let e = x16
        .reshape(&[10, 8])
        .unwrap()
        .linear(&w64, None)
        .unwrap_err();
    assert!(
        e.to_string().contains("BF16") || e.to_string().contains("bf16"),
        "{e}"
    );
}

/// At every precision the convolution's bias gradient is the f32 sum of the output gradient
/// itself (a sum, not a product: nothing to round), on CPUs with and without bf16 products.
#[test]
fn conv2d_bias_gradient_sums_the_unrounded_gradient() {
    let (x, w, b) = (
        rand(&[2, 3, 5, 5], 21),
        rand(&[4, 3, 3, 3], 22),
        rand(&[4], 23),
    );
    let params = Conv2dParams {
        padding: (1, 1),
        ..Default::default()
    };
    let f = |v: &[Tensor]| v[0].conv2d(&v[1], Some(&v[2]), params).unwrap();
    let (_, g32) = run(MatmulPrecision::F32, &[&x, &w, &b], &f);
    for p in [MatmulPrecision::Tf32, MatmulPrecision::Bf16] {
        let (_, g) = run(p, &[&x, &w, &b], &f);
        assert_eq!(
            g[2].to_vec::<f32>().unwrap(),
            g32[2].to_vec::<f32>().unwrap(),
            "bias gradient at {}",
            p.name()
        );
    }
}
