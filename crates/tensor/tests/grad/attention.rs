//! Fused attention on packed projections: gradient checks (causal or not, several heads,
//! non-contiguous inputs), forward and backward against the composed ops, f32 against f64,
//! causality, and shape errors; the same for attention with its input projection
//! (`qkv_attention`).

use crate::common::*;
use proptest::prelude::*;
use selfsup_tensor::gradcheck::f32_vs_f64;
use selfsup_tensor::{DType, Result, Tensor};

/// The composed reference: split `[B, T, 3D]` into heads, `softmax(q k^T / sqrt(dh)) v` with
/// the future masked when causal, heads merged back.
fn composed(x: &Tensor, heads: usize, causal: bool) -> Result<Tensor> {
    let (b, t, d3) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let dh = d3 / 3 / heads;
    let qkv = x
        .reshape(&[b, t, 3, heads, dh])?
        .permute(&[2, 0, 3, 1, 4])?;
    let (q, k, v) = (qkv.select(0, 0)?, qkv.select(0, 1)?, qkv.select(0, 2)?);
    let mut s = q
        .matmul(&k.transpose(-2, -1)?)?
        .mul_scalar(1.0 / (dh as f64).sqrt())?;
    if causal {
        let m: Vec<f64> = (0..t * t)
            .map(|i| if i % t > i / t { 1.0 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(m, &[t, t])?.to_dtype(x.dtype())?;
        s = s.masked_fill(&mask, -1e9)?;
    }
    s.softmax(-1)?
        .matmul(&v)?
        .permute(&[0, 2, 1, 3])?
        .reshape(&[b, t, heads * dh])
}

#[derive(Clone, Debug)]
struct Case {
    shape: Vec<usize>,
    heads: usize,
    causal: bool,
    v: Variant,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=2,
        1usize..=5,
        1usize..=3,
        1usize..=3,
        any::<bool>(),
        variant(),
        0u64..1000,
    )
        .prop_map(|(b, t, heads, dh, causal, v, seed)| Case {
            shape: vec![b, t, 3 * heads * dh],
            heads,
            causal,
            v,
            seed,
        })
}

fn run(cs: &Case, xs: &[Tensor], fused: bool) -> Result<Tensor> {
    let x = view(&xs[0], cs.v)?;
    if fused {
        x.attention_qkv(cs.heads, cs.causal)
    } else {
        composed(&x, cs.heads, cs.causal)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn grad_attention_qkv(cs in case()) {
        let ins = vec![uniform(&leaf_shape(&cs.shape, cs.v), cs.seed, -2.0, 2.0)];
        assert_grad(|xs| run(&cs, xs, true), &ins)?;
        let fused = run(&cs, &ins, true).unwrap().to_vec::<f64>().unwrap();
        let reference = run(&cs, &ins, false).unwrap().to_vec::<f64>().unwrap();
        for (a, b) in fused.iter().zip(&reference) {
            prop_assert!((a - b).abs() < 1e-12, "{cs:?}: fused {a} vs composed {b}");
        }
        let e = f32_vs_f64(|xs| run(&cs, xs, true), &ins).unwrap();
        prop_assert!(e < 1e-4, "{cs:?}: f32 vs f64 {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(30))]

    /// `qkv_attention` = the input projection, then `attention_qkv`: its gradients in x, W and
    /// b by finite differences, for an x stored transposed (`[B, D, T]`, a strided view) or
    /// not and a weight read as every other row of a wider buffer, and its values those of the
    /// composition.
    #[test]
    fn grad_qkv_attention(b in 1usize..=2, t in 1usize..=4, heads in 1usize..=2, dh in 1usize..=2, d in 1usize..=3, causal in any::<bool>(), bias in any::<bool>(), tx in any::<bool>(), seed in 0u64..1000) {
        let o = 3 * heads * dh;
        let x = uniform(&if tx { [b, d, t] } else { [b, t, d] }, seed, -1.0, 1.0);
        let w = uniform(&[2 * o, d], seed + 1, -1.0, 1.0);
        let bv = uniform(&[o], seed + 2, -0.5, 0.5);
        let parts = |xs: &[Tensor]| -> Result<[Tensor; 2]> {
            let x = if tx { xs[0].transpose(1, 2)? } else { xs[0].clone() };
            Ok([x, xs[1].reshape(&[o, 2, d])?.select(1, 1)?])
        };
        let f = |xs: &[Tensor]| {
            let [x, w] = parts(xs)?;
            x.qkv_attention(&w, bias.then_some(&xs[2]), heads, causal)
        };
        let ins = [x, w, bv];
        assert_grad(f, &ins)?;
        let [x, w] = parts(&ins).unwrap();
        let composed = x
            .reshape(&[b * t, d]).unwrap()
            .linear(&w, bias.then_some(&ins[2])).unwrap()
            .reshape(&[b, t, o]).unwrap()
            .attention_qkv(heads, causal).unwrap()
            .to_vec::<f64>().unwrap();
        let fused = f(&ins).unwrap().to_vec::<f64>().unwrap();
        for (a, c) in fused.iter().zip(&composed) {
            prop_assert!((a - c).abs() < 1e-12, "fused {a} vs composed {c}");
        }
        let e = f32_vs_f64(f, &ins).unwrap();
        prop_assert!(e < 1e-4, "f32 vs f64 {e}");
    }
}

#[test]
fn qkv_attention_names_bad_shapes() {
    let x = Tensor::zeros(&[2, 3, 4], DType::F32);
    let err = |x: &Tensor, w: &Tensor, b: Option<&Tensor>, heads| {
        x.qkv_attention(w, b, heads, false).unwrap_err().to_string()
    };
    let e = err(&x, &Tensor::zeros(&[12, 5], DType::F32), None, 2);
    assert!(
        e.contains("qkv_attention") && e.contains("[12, 5]") && e.contains("[3E, 4]"),
        "{e}"
    );
    let e = err(&x, &Tensor::zeros(&[10, 4], DType::F32), None, 2);
    assert!(e.contains("10") && e.contains("2 heads"), "{e}");
    let w = Tensor::zeros(&[12, 4], DType::F32);
    let e = err(&x, &w, Some(&Tensor::zeros(&[6], DType::F32)), 2);
    assert!(e.contains("bias [6]") && e.contains("[12]"), "{e}");
    let e = err(&Tensor::zeros(&[6, 4], DType::F32), &w, None, 2);
    assert!(e.contains("[B, T, D]"), "{e}");
    assert!(x.qkv_attention(&w, None, 0, true).is_err());
    // The result is [B, T, E].
    let x = uniform(&[1, 3, 4], 5, -1.0, 1.0);
    let w = uniform(&[12, 4], 6, -1.0, 1.0);
    let y = x.qkv_attention(&w, None, 2, true).unwrap();
    assert_eq!(y.shape(), [1, 3, 4]);
}

/// Gradients of `sum(f(x) * g)` with respect to `x`.
fn grad_of(x: &Tensor, g: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Vec<f64> {
    let x = x.detach().requires_grad_();
    f(&x)
        .unwrap()
        .mul(g)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    x.grad()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec::<f64>()
        .unwrap()
}

#[test]
fn gpt_sized_blocks_match_the_composed_ops() {
    // Several samples (parallel tasks), several heads and head widths, and sequences shorter
    // and longer than one causal block (70 = two full blocks of 32 and a partial one).
    for (heads, dh, t) in [
        (4, 12, 21),
        (2, 16, 70),
        (2, 32, 21),
        (1, 64, 70),
        (3, 8, 33),
    ] {
        let d = heads * dh;
        for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 2e-5)] {
            for causal in [true, false] {
                let x = uniform(&[3, t, 3 * d], 11, -1.5, 1.5)
                    .to_dtype(dtype)
                    .unwrap();
                let g = uniform(&[3, t, d], 12, -1.0, 1.0).to_dtype(dtype).unwrap();
                let what = format!("{dtype:?} heads {heads} dh {dh} t {t} causal {causal}");
                let fused = x.attention_qkv(heads, causal).unwrap();
                let reference = composed(&x, heads, causal).unwrap();
                let f = fused.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap();
                let r = reference
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec::<f64>()
                    .unwrap();
                for (a, b) in f.iter().zip(&r) {
                    assert!((a - b).abs() < tol, "{what}: {a} vs {b}");
                }
                let gf = grad_of(&x, &g, |x| x.attention_qkv(heads, causal));
                let gr = grad_of(&x, &g, |x| composed(x, heads, causal));
                for (a, b) in gf.iter().zip(&gr) {
                    assert!((a - b).abs() < tol, "{what} grad: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn causal_attention_never_sees_the_future() {
    let x = uniform(&[1, 6, 3 * 2 * 4], 3, -1.0, 1.0);
    let before = x.attention_qkv(2, true).unwrap().to_vec::<f64>().unwrap();
    // Perturb every projection of the last position.
    let mut v = x.to_vec::<f64>().unwrap();
    for e in &mut v[5 * 24..] {
        *e += 0.7;
    }
    let after = Tensor::from_vec(v, &[1, 6, 24])
        .unwrap()
        .attention_qkv(2, true)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert_eq!(
        before[..5 * 8],
        after[..5 * 8],
        "positions 0-4 must not change"
    );
    assert_ne!(before[5 * 8..], after[5 * 8..]);
}

#[test]
fn bad_shapes_are_named() {
    let e = Tensor::zeros(&[2, 3, 10], DType::F32)
        .attention_qkv(2, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("attention_qkv") && e.contains("[2, 3, 10]"),
        "{e}"
    );
    let e = Tensor::zeros(&[2, 12], DType::F32)
        .attention_qkv(2, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[B, T, 3D]"), "{e}");
    assert!(Tensor::zeros(&[1, 2, 12], DType::F32)
        .attention_qkv(0, true)
        .is_err());
}

/// `qkv_attention_as` is `qkv_attention` then a cast, in values and gradients on the CPU (the
/// gradient check of `qkv_attention` covers the rest): f64 to f64 is `qkv_attention` itself,
/// f64 to f32 and f32 to bf16 round its output once and widen the output gradient exactly; it
/// refuses a non-float output dtype and checks its shapes as `qkv_attention` does.
#[test]
fn qkv_attention_as_is_qkv_attention_then_a_cast() {
    let x = uniform(&[2, 5, 8], 11, -1.0, 1.0);
    let w = uniform(&[24, 8], 12, -0.5, 0.5);
    let b = uniform(&[24], 13, -0.3, 0.3);
    let g = uniform(&[2, 5, 8], 14, -1.0, 1.0);
    for (from, out) in [
        (DType::F64, DType::F64),
        (DType::F64, DType::F32),
        (DType::F32, DType::BF16),
    ] {
        let leaves = || -> Vec<Tensor> {
            [&x, &w, &b]
                .iter()
                .map(|t| t.to_dtype(from).unwrap().requires_grad_())
                .collect()
        };
        let (a, c) = (leaves(), leaves());
        let ya = a[0]
            .qkv_attention_as(&a[1], Some(&a[2]), 2, true, out)
            .unwrap();
        let yc = c[0]
            .qkv_attention(&c[1], Some(&c[2]), 2, true)
            .unwrap()
            .to_dtype(out)
            .unwrap();
        assert_eq!(ya.dtype(), out);
        assert_eq!(
            ya.to_vec_f64().unwrap(),
            yc.to_vec_f64().unwrap(),
            "{from:?} -> {out:?}"
        );
        let seed = g.to_dtype(out).unwrap();
        ya.backward_with(Some(&seed), false).unwrap();
        yc.backward_with(Some(&seed), false).unwrap();
        for (p, q) in a.iter().zip(&c) {
            assert_eq!(
                p.grad().unwrap().to_vec_f64().unwrap(),
                q.grad().unwrap().to_vec_f64().unwrap(),
                "{from:?} -> {out:?} gradient"
            );
        }
    }
    let e = x
        .qkv_attention_as(&w, None, 2, true, DType::I64)
        .unwrap_err();
    assert!(e.to_string().contains("must be a float dtype"), "{e}");
    let e = x
        .qkv_attention_as(
            &Tensor::zeros(&[12, 5], DType::F64),
            None,
            2,
            true,
            DType::F32,
        )
        .unwrap_err();
    assert!(e.to_string().contains("[3E, 8]"), "{e}");
}
