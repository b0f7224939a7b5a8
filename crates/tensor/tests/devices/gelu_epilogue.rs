//! cuBLASLt's GELU epilogues (`Tensor::mlp2` with GELU's tanh form at bf16 precision on a GPU)
//! observed directly: with `x` and `W2` identities the MLP's output is the epilogue's
//! activation `h` and `W1`'s gradient the transposed `dh`, each exactly as cuBLASLt stored it
//! (products of bf16 values with one identity, summed in f32), so they can be held to GELU's
//! tanh form computed here in f64.
//!
//! On an H200 (2026-12-04) cuBLASLt's activation differed from the exact value in 24 of 1,024
//! elements with a bias and 3 without (its tanh is approximate), by one bf16 step, or by two
//! where the activation is tiny (v near -3); its derivative by one step in 19 and 3, or by two
//! where it is tiny. GELU's erf form differs from the tanh form
//! by up to 15 bf16 steps here, the bias added after the activation by far more.

use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{DType, MlpActivation, Tensor};

use crate::mlp::gelu_epilogue;
use crate::{on_each_gpu, rand};

fn bf16(x: f64) -> f64 {
    half::bf16::from_f64(x).to_f64()
}

/// One bf16 step at `x`'s magnitude (the spacing of bf16 values there).
fn bf16_step(x: f64) -> f64 {
    let x = x.abs().max(f64::from(f32::MIN_POSITIVE));
    2f64.powi(x.log2().floor() as i32 - 7)
}

const K: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)

fn gelu_tanh(v: f64) -> f64 {
    0.5 * v * (1.0 + (K * (v + 0.044715 * v * v * v)).tanh())
}

fn gelu_tanh_grad(v: f64) -> f64 {
    let t = (K * (v + 0.044715 * v * v * v)).tanh();
    0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * K * (1.0 + 3.0 * 0.044715 * v * v)
}

/// Checks `got` against `want` element by element: each within one bf16 step of `want` or
/// within `slack[i]`, and at most a tenth of them off at all.
fn within_one_step(what: &str, got: &[f64], want: &[f64], slack: &[f64]) {
    let mut off = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            off += 1;
            assert!(
                (g - w).abs() <= bf16_step(*w).max(slack[i]),
                "{what}: element {i}: cuBLASLt {g} vs {w}, more than one bf16 step apart \
                 (and more than {})",
                slack[i]
            );
        }
    }
    assert!(
        off * 10 <= got.len(),
        "{what}: {off} of {} elements differ from GELU's tanh form (at most a tenth may, by \
         one bf16 step)",
        got.len()
    );
    eprintln!("{what}: {off} of {} elements one bf16 step off", got.len());
}

/// The epilogues compute GELU's tanh form of the f32 pre-activation (bias included) and its
/// derivative at the stored bf16 pre-activation times the incoming gradient, each rounded to
/// bf16 once, to within one bf16 step.
#[test]
fn gelu_epilogues_compute_the_tanh_form_within_one_bf16_step() {
    on_each_gpu("GELU epilogues, observed", |dev| {
        let n = 32;
        for bias in [true, false] {
            if !gelu_epilogue(dev, MlpActivation::GeluTanh, [n, n, n, n], bias) {
                return; // said why
            }
            // bf16-exact operands, so the only roundings are the epilogues'.
            let exact = |t: Tensor| {
                t.to_dtype(DType::BF16)
                    .and_then(|t| t.to_dtype(DType::F32))
                    .unwrap()
            };
            let w1 = exact(rand(&[n, n], DType::F32, -3.0, 3.0, 31));
            let b1 = exact(rand(&[n], DType::F32, -1.0, 1.0, 32));
            let g = exact(rand(&[n, n], DType::F32, -1.0, 1.0, 33));
            let on = |t: &Tensor| t.to_device(dev).unwrap().requires_grad_();
            let eye = || Tensor::eye_on(n, DType::F32, dev).unwrap().requires_grad_();
            let (x, w2) = (eye(), eye());
            let (w1d, b1d) = (on(&w1), on(&b1));
            let y = with_matmul_precision(MatmulPrecision::Bf16, || {
                let y = x
                    .mlp2(
                        &w1d,
                        bias.then_some(&b1d),
                        MlpActivation::GeluTanh,
                        &w2,
                        None,
                    )
                    .unwrap();
                y.backward_with(Some(&g.to_device(dev).unwrap()), false)
                    .unwrap();
                y
            });
            let h = y.to_vec_f64().unwrap();
            let dw1 = w1d.grad().unwrap().to_vec_f64().unwrap();
            let (w, b, gv) = (
                w1.to_vec::<f32>().unwrap(),
                b1.to_vec::<f32>().unwrap(),
                g.to_vec_f64().unwrap(),
            );
            // Row i, column j: v = W1[j, i] + b1[j] (in f32, as the product sums it),
            // dh = dW1[j, i].
            // Where the activation is small (v below about -2), an approximate tanh near -1
            // costs more than a bf16 step of it: on an H200, 1.9e-6 at v = -3 (two steps).
            // So an activation may also be off by |v| 2^-13 (far above that, and under GELU's
            // erf form's distance from the tanh form there: 4e-4 at v = -2.5).
            // Likewise the derivative where it is small (near its zero at v = -0.75): there
            // 3.8e-6 off (two steps) on an H200; it may be off by |g| (1 + |v|) 2^-13.
            let (mut want_h, mut want_dh, mut dh) = (vec![], vec![], vec![]);
            let (mut slack, mut dslack) = (vec![], vec![]);
            for i in 0..n {
                for j in 0..n {
                    let v = f64::from(w[j * n + i] + if bias { b[j] } else { 0.0 });
                    slack.push(v.abs() * 2f64.powi(-13));
                    dslack.push(gv[i * n + j].abs() * (1.0 + v.abs()) * 2f64.powi(-13));
                    want_h.push(bf16(gelu_tanh(v)));
                    want_dh.push(bf16(gv[i * n + j] * gelu_tanh_grad(bf16(v))));
                    dh.push(dw1[j * n + i]);
                }
            }
            let with = if bias { "with" } else { "without" };
            within_one_step(&format!("activation {with} bias"), &h, &want_h, &slack);
            within_one_step(&format!("derivative {with} bias"), &dh, &want_dh, &dslack);
        }
    });
}
