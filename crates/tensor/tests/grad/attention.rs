//! Fused attention on packed projections: gradient checks (causal or not, several heads,
//! non-contiguous inputs), forward and backward against the composed ops, f32 against f64,
//! causality, and shape errors.

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
