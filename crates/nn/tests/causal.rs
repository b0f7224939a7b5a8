//! Causal attention never sees the future.

use selfsup_nn::{sinusoidal_positions, Activation, MultiHeadAttention, TransformerBlock};
use selfsup_tensor::{DType, Generator, Tensor};

#[test]
fn perturbing_a_future_token_leaves_earlier_outputs_bit_identical() {
    let mut g = Generator::new(42);
    let (b, t, d) = (2, 8, 16);
    let block = TransformerBlock::new(d, 4, 4, Activation::Gelu, DType::F32, &mut g).unwrap();
    let attn = MultiHeadAttention::new(d, 4, true, DType::F32, &mut g).unwrap();
    let x = Tensor::randn(&[b, t, d], 0.0, 1.0, DType::F32, &mut g).unwrap();
    for k in [3usize, 5, 7] {
        let mut v = x.to_vec::<f32>().unwrap();
        for bi in 0..b {
            for j in 0..d {
                v[(bi * t + k) * d + j] += 10.0 * (j as f32 - 3.0);
            }
        }
        let x2 = Tensor::from_vec(v, &[b, t, d]).unwrap();
        for (y1, y2) in [
            (
                block.forward(&x, true, None).unwrap(),
                block.forward(&x2, true, None).unwrap(),
            ),
            (
                attn.forward(&x, true, None).unwrap(),
                attn.forward(&x2, true, None).unwrap(),
            ),
        ] {
            let a = y1.narrow(1, 0, k).unwrap().to_vec::<f32>().unwrap();
            let c = y2.narrow(1, 0, k).unwrap().to_vec::<f32>().unwrap();
            assert!(
                a.iter().zip(&c).all(|(p, q)| p.to_bits() == q.to_bits()),
                "position < {k} changed"
            );
            let later1 = y1.narrow(1, k, t - k).unwrap().to_vec::<f32>().unwrap();
            let later2 = y2.narrow(1, k, t - k).unwrap().to_vec::<f32>().unwrap();
            assert_ne!(later1, later2);
        }
    }
}

#[test]
fn sinusoidal_table_values() {
    let pe = sinusoidal_positions(3, 4, DType::F64)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert_eq!(&pe[0..4], &[0.0, 1.0, 0.0, 1.0]);
    assert!((pe[4] - 1f64.sin()).abs() < 1e-15);
    assert!((pe[6] - (0.01f64).sin()).abs() < 1e-15);
    assert!(sinusoidal_positions(3, 5, DType::F64).is_err());
}
