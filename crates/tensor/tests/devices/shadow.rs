//! The bf16 copies a GPU keeps of f32 parameters read as bf16 operands (their shadows): a
//! layer at bf16 precision casts its weight once, later forwards reuse the copy, the fused
//! optimiser and EMA steps write the rounded new values into it, and any other write makes
//! the next forward cast again. Each forward is held bit for bit to the same layer on a fresh
//! copy of the weight (a buffer with no shadow), and the weight is asked whether it held a
//! current copy before (the forward read it) and after.

use selfsup_tensor::ops::ema::EmaItem;
use selfsup_tensor::ops::optim::{AdamItem, AdamStep, LarsItem, LarsStep, SgdItem, SgdStep};
use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{DType, Device, Tensor};

use crate::{compare, on_each_gpu, rand};

/// `x · Wᵀ + b` at bf16 precision, and the same layer on a fresh copy of `w` (a new buffer:
/// cast from its values as they are now). Asserts both give the same bits and that `w` keeps
/// a current bf16 copy after the forward; returns whether it had one before (the forward read
/// it instead of casting `w`). Asked of the tensor, not counted in a profile, which other
/// tests' casts on other threads would land in.
fn forward_matches_fresh(dev: Device, x: &Tensor, w: &Tensor, b: &Tensor, what: &str) -> bool {
    with_matmul_precision(MatmulPrecision::Bf16, || {
        let kept = w.has_current_bf16_copy();
        let y = x.linear(w, Some(b)).unwrap();
        assert!(w.has_current_bf16_copy(), "{what}: the copy is kept");
        let fresh = w.to_device(Device::Cpu).unwrap().to_device(dev).unwrap();
        let y_fresh = x.linear(&fresh, Some(b)).unwrap();
        compare(what, &y, &y_fresh, 0.0);
        kept
    })
}

/// A weight's bf16 copy is kept across forwards, made stale by `assign`, and kept current by
/// each fused step (Adam, SGD, LARS, EMA): after a step the forward reads the copy.
#[test]
fn kept_bf16_weights_follow_every_write() {
    on_each_gpu("kept bf16 weights", |dev| {
        let on = |t: Tensor| t.to_device(dev).unwrap();
        let x = on(rand(&[8, 16], DType::F32, -1.0, 1.0, 1));
        let w = on(rand(&[24, 16], DType::F32, -1.0, 1.0, 2)).requires_grad_();
        let b = on(rand(&[24], DType::F32, -1.0, 1.0, 3));
        // The first forward casts W; the second reads the kept copy.
        assert!(!forward_matches_fresh(dev, &x, &w, &b, "first"));
        assert!(forward_matches_fresh(dev, &x, &w, &b, "kept"));
        // A write that does not update the copy: the next forward casts W again.
        w.assign(&on(rand(&[24, 16], DType::F32, -1.0, 1.0, 4)))
            .unwrap();
        assert!(!forward_matches_fresh(dev, &x, &w, &b, "assigned"));

        let g = on(rand(&[24, 16], DType::F32, -1.0, 1.0, 5));
        let state = || on(Tensor::zeros(&[24, 16], DType::F32));
        let (m, v, buf) = (state(), state(), state());
        let adam = AdamStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
            decoupled: true,
            step: 1,
        };
        // A small second parameter in the same launch, without a copy.
        let other = on(rand(&[5], DType::F32, -1.0, 1.0, 6));
        let (og, om, ov) = (
            other.ones_like().unwrap(),
            state_of(&other),
            state_of(&other),
        );
        Tensor::adam_steps_(&[
            AdamItem {
                param: &w,
                grad: &g,
                m: &m,
                v: &v,
                step: adam,
            },
            AdamItem {
                param: &other,
                grad: &og,
                m: &om,
                v: &ov,
                step: adam,
            },
        ])
        .unwrap();
        assert!(forward_matches_fresh(dev, &x, &w, &b, "after Adam"));

        let sgd = SgdStep {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 1e-3,
            nesterov: true,
            first: true,
        };
        Tensor::sgd_steps_(&[SgdItem {
            param: &w,
            grad: &g,
            momentum_buf: Some(&buf),
            step: sgd,
        }])
        .unwrap();
        assert!(forward_matches_fresh(dev, &x, &w, &b, "after SGD"));

        let lars = LarsStep {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            eta: 1e-3,
            adapt: true,
        };
        Tensor::lars_steps_(&[LarsItem {
            param: &w,
            grad: &g,
            momentum_buf: &buf,
            step: lars,
        }])
        .unwrap();
        assert!(forward_matches_fresh(dev, &x, &w, &b, "after LARS"));

        Tensor::ema_steps_(&[EmaItem {
            target: &w,
            source: &g,
            keep: 0.99,
            scale: 0.01,
        }])
        .unwrap();
        assert!(forward_matches_fresh(dev, &x, &w, &b, "after EMA"));
    });
}

/// Zeros of `t`'s shape on its device.
fn state_of(t: &Tensor) -> Tensor {
    t.zeros_like().unwrap()
}
