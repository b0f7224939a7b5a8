//! Memory behaviour of a training loop. Alone in its own test binary, because it reads a
//! process-wide buffer count that concurrent tests would disturb.

use selfsup_tensor::{no_grad, DType, Generator, Tensor};

#[test]
fn training_loop_memory_stays_flat() {
    // A small MLP step repeated: the number of live buffers must not grow.
    let mut g = Generator::new(0);
    let w1 = Tensor::randn(&[16, 32], 0.0, 0.1, DType::F32, &mut g)
        .unwrap()
        .requires_grad_();
    let w2 = Tensor::randn(&[32, 4], 0.0, 0.1, DType::F32, &mut g)
        .unwrap()
        .requires_grad_();
    let x = Tensor::randn(&[8, 16], 0.0, 1.0, DType::F32, &mut g).unwrap();
    let t = Tensor::from_vec(vec![0i64, 1, 2, 3, 0, 1, 2, 3], &[8]).unwrap();
    let step = || {
        let h = x
            .matmul(&w1)
            .unwrap()
            .gelu()
            .unwrap()
            .dropout(0.1, true, &mut Generator::new(1))
            .unwrap();
        let loss = h.matmul(&w2).unwrap().cross_entropy(&t).unwrap();
        loss.backward().unwrap();
        let _g = no_grad();
        for w in [&w1, &w2] {
            let gr = w.grad().unwrap();
            w.assign(&w.sub(&gr.mul_scalar(0.1).unwrap()).unwrap())
                .unwrap();
            w.zero_grad();
        }
        loss.item().unwrap()
    };
    let first = step();
    for _ in 0..3 {
        step();
    }
    let before = selfsup_tensor::live_buffers();
    let mut last = 0.0;
    for _ in 0..50 {
        last = step();
    }
    let after = selfsup_tensor::live_buffers();
    assert!(
        after <= before,
        "live buffers grew from {before} to {after}"
    );
    assert!(last < first, "loss did not go down: {first} -> {last}");
}
