//! Autograd behaviour: accumulation, detach, no_grad, freed graphs, flat memory.

use selfsup_tensor::{no_grad, DType, Generator, Tensor};

#[test]
fn grad_accumulates_across_backward_calls_until_zeroed() {
    let w = Tensor::from_vec(vec![1.0f64, -2.0], &[2])
        .unwrap()
        .requires_grad_();
    for _ in 0..2 {
        w.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    }
    assert_eq!(w.grad().unwrap().to_vec::<f64>().unwrap(), vec![4.0, -8.0]);
    w.zero_grad();
    assert!(w.grad().is_none());
}

/// A bf16 tensor read by two ops gets the sum of their bf16 gradients (summed in f32 and
/// rounded once), and a bf16 leaf accumulates across backward calls, although the elementwise
/// ops do not add bf16.
#[test]
fn bf16_gradients_accumulate() {
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 0.5], &[3])
        .unwrap()
        .requires_grad_();
    let x16 = x.to_dtype(DType::BF16).unwrap();
    let once = x16.to_dtype(DType::F32).unwrap().sum_all().unwrap();
    let twice = x16
        .to_dtype(DType::F32)
        .unwrap()
        .mul_scalar(2.0)
        .unwrap()
        .sum_all()
        .unwrap();
    once.add(&twice).unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), vec![3.0; 3]);

    let leaf = x.detach().to_dtype(DType::BF16).unwrap().requires_grad_();
    for _ in 0..2 {
        let y = leaf
            .to_dtype(DType::F32)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        y.backward().unwrap();
    }
    let g = leaf.grad().unwrap();
    assert_eq!(g.dtype(), DType::BF16);
    assert_eq!(g.to_vec_f64().unwrap(), vec![4.0, -8.0, 2.0]);
}

#[test]
fn detach_and_no_grad_stop_gradients() {
    let w = Tensor::from_vec(vec![3.0f64], &[1])
        .unwrap()
        .requires_grad_();
    let y = w.mul(&w.detach()).unwrap().sum_all().unwrap();
    y.backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec::<f64>().unwrap(), vec![3.0]); // not 6: one branch stopped
    let z = {
        let _g = no_grad();
        w.mul_scalar(2.0).unwrap()
    };
    assert!(!z.requires_grad());
    assert!(z
        .sum_all()
        .unwrap()
        .backward()
        .unwrap_err()
        .to_string()
        .contains("does not require a gradient"));
}

#[test]
fn backward_twice_through_freed_graph_is_an_error_unless_retained() {
    let w = Tensor::ones(&[2], DType::F64).requires_grad_();
    let y = w.exp().unwrap().sum_all().unwrap();
    y.backward_with(None, true).unwrap();
    y.backward().unwrap();
    assert!(y
        .backward()
        .unwrap_err()
        .to_string()
        .contains("already freed"));
    let v = Tensor::ones(&[2], DType::F64)
        .requires_grad_()
        .mul_scalar(2.0)
        .unwrap();
    assert!(v.backward().unwrap_err().to_string().contains("scalar"));
}

#[test]
fn random_draws_are_reproducible_and_thread_count_independent() {
    let a = Tensor::randn(&[50_000], 0.0, 1.0, DType::F32, &mut Generator::new(42))
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let b = pool.install(|| {
        Tensor::randn(&[50_000], 0.0, 1.0, DType::F32, &mut Generator::new(42))
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    });
    assert_eq!(a, b);
    let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
    let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
    assert!(
        mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
        "{mean} {var}"
    );
    let mut g = Generator::new(42);
    let u1 = Tensor::rand(&[8], 0.0, 1.0, DType::F64, &mut g)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    let u2 = Tensor::rand(&[8], 0.0, 1.0, DType::F64, &mut g)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    assert_ne!(u1, u2, "consecutive draws must differ");
    let mut p = Tensor::randperm(100, &mut Generator::new(1))
        .to_vec::<i64>()
        .unwrap();
    p.sort();
    assert_eq!(p, (0..100).collect::<Vec<i64>>());
}
