//! The bf16 copies a GPU keeps of f32 parameters read as bf16 operands (their shadows): a
//! layer at bf16 precision casts its weight once, later forwards reuse the copy, the fused
//! optimiser and EMA steps write the rounded new values into it, and any other write makes
//! the next forward cast again. Each forward is held bit for bit to the same layer on a fresh
//! copy of the weight (a buffer with no shadow), and the casts it launches are counted.

use selfsup_tensor::ops::ema::EmaItem;
use selfsup_tensor::ops::optim::{AdamItem, AdamStep, LarsItem, LarsStep, SgdItem, SgdStep};
use selfsup_tensor::precision::{with_matmul_precision, MatmulPrecision};
use selfsup_tensor::{DType, Device, Tensor};

use crate::{compare, on_each_gpu, rand};

/// The f32 -> bf16 casts launched while `f` runs on `dev`, and its result.
fn casts<R>(dev: Device, f: impl FnOnce() -> R) -> (usize, R) {
    let Device::Cuda(i) = dev else {
        unreachable!("a GPU")
    };
    let be = selfsup_tensor::cuda::CudaBackend::get(i).unwrap();
    be.profile_start();
    let r = f();
    let prof = be.profile_stop().unwrap();
    let n = prof
        .kernels
        .iter()
        .filter(|k| k.name.contains("cast_f32_bf16"))
        .map(|k| k.calls)
        .sum();
    (n, r)
}

/// `x · Wᵀ + b` at bf16 precision, and the same layer on a fresh copy of `w` (a new buffer:
/// cast from its values as they are now). Asserts both give the same bits; returns the casts
/// the first launched.
fn forward_matches_fresh(dev: Device, x: &Tensor, w: &Tensor, b: &Tensor, what: &str) -> usize {
    with_matmul_precision(MatmulPrecision::Bf16, || {
        let (n, y) = casts(dev, || x.linear(w, Some(b)).unwrap());
        let fresh = w.to_device(Device::Cpu).unwrap().to_device(dev).unwrap();
        let y_fresh = x.linear(&fresh, Some(b)).unwrap();
        compare(what, &y, &y_fresh, 0.0);
        n
    })
}

/// A weight's bf16 copy is kept across forwards, made stale by `assign`, and kept current by
/// each fused step (Adam, SGD, LARS, EMA): after a step the forward casts only its input.
#[test]
fn kept_bf16_weights_follow_every_write() {
    on_each_gpu("kept bf16 weights", |dev| {
        let _one = crate::PROFILING.lock().unwrap_or_else(|p| p.into_inner());
        let on = |t: Tensor| t.to_device(dev).unwrap();
        let x = on(rand(&[8, 16], DType::F32, -1.0, 1.0, 1));
        let w = on(rand(&[24, 16], DType::F32, -1.0, 1.0, 2)).requires_grad_();
        let b = on(rand(&[24], DType::F32, -1.0, 1.0, 3));
        // First forward: x and W cast; second: the kept W, x cast alone.
        assert_eq!(forward_matches_fresh(dev, &x, &w, &b, "first"), 2);
        assert_eq!(forward_matches_fresh(dev, &x, &w, &b, "kept"), 1);
        // A write that does not update the copy: the next forward casts W again.
        w.assign(&on(rand(&[24, 16], DType::F32, -1.0, 1.0, 4)))
            .unwrap();
        assert_eq!(forward_matches_fresh(dev, &x, &w, &b, "assigned"), 2);

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
        assert_eq!(forward_matches_fresh(dev, &x, &w, &b, "after Adam"), 1);

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
        assert_eq!(forward_matches_fresh(dev, &x, &w, &b, "after SGD"), 1);

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
        assert_eq!(forward_matches_fresh(dev, &x, &w, &b, "after LARS"), 1);

        Tensor::ema_steps_(&[EmaItem {
            target: &w,
            source: &g,
            keep: 0.99,
            scale: 0.01,
        }])
        .unwrap();
        assert_eq!(forward_matches_fresh(dev, &x, &w, &b, "after EMA"), 1);
    });
}

/// Zeros of `t`'s shape on its device.
fn state_of(t: &Tensor) -> Tensor {
    t.zeros_like().unwrap()
}
