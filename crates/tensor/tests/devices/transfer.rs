//! Moving tensors to a GPU and back, filling on the device, and dtype casts there.

use selfsup_tensor::{DType, Device, Tensor};

use crate::{compare, on_each_gpu, rand};

/// Every dtype a tensor can hold.
const EVERY_DTYPE: [DType; 6] = [
    DType::F32,
    DType::F64,
    DType::BF16,
    DType::F16,
    DType::I64,
    DType::U32,
];

#[test]
fn round_trip_keeps_every_dtype_and_view_exactly() {
    on_each_gpu("round trip", |dev| {
        for dtype in EVERY_DTYPE {
            let x = rand(&[4, 5, 6], DType::F64, -50.0, 50.0, 7)
                .to_dtype(dtype)
                .unwrap();
            // A strided, offset view on each side of the transfer.
            let view = x.permute(&[2, 0, 1]).unwrap().narrow(1, 1, 2).unwrap();
            let on = view.to_device(dev).unwrap();
            assert_eq!((on.device(), on.dtype()), (dev, dtype));
            compare(&format!("{dtype:?} to device"), &on, &view, 0.0);
            let whole = x.to_device(dev).unwrap();
            let back = whole
                .permute(&[2, 0, 1])
                .unwrap()
                .narrow(1, 1, 2)
                .unwrap()
                .to_device(Device::Cpu)
                .unwrap();
            compare(
                &format!("{dtype:?} view on device, back"),
                &back,
                &view,
                0.0,
            );
            compare(
                &format!("{dtype:?} contiguous on device"),
                &whole.permute(&[1, 2, 0]).unwrap().contiguous().unwrap(),
                &x.permute(&[1, 2, 0]).unwrap(),
                0.0,
            );
        }
    });
}

#[test]
fn full_zeros_like_arange_and_eye_are_made_on_the_device() {
    on_each_gpu("full", |dev| {
        for dtype in EVERY_DTYPE {
            let t = Tensor::full_on(3.0, &[3, 7], dtype, dev).unwrap();
            assert_eq!(t.device(), dev);
            compare(
                &format!("{dtype:?} full"),
                &t,
                &Tensor::full(3.0, &[3, 7], dtype),
                0.0,
            );
            let z = t.zeros_like().unwrap();
            assert_eq!(z.device(), dev);
            compare(
                &format!("{dtype:?} zeros_like"),
                &z,
                &Tensor::zeros(&[3, 7], dtype),
                0.0,
            );
            for n in [0, 1, 300, 70_000] {
                let a = Tensor::arange_on(n, dtype, dev).unwrap();
                assert_eq!(a.device(), dev);
                compare(
                    &format!("{dtype:?} arange {n}"),
                    &a,
                    &Tensor::arange(n, dtype),
                    0.0,
                );
            }
            for n in [1, 5, 33] {
                let eye = Tensor::eye_on(n, dtype, dev).unwrap();
                assert_eq!(eye.device(), dev);
                compare(
                    &format!("{dtype:?} eye {n}"),
                    &eye,
                    &Tensor::eye_on(n, dtype, Device::Cpu).unwrap(),
                    0.0,
                );
            }
        }
    });
}

#[test]
fn float_casts_round_like_the_cpu() {
    on_each_gpu("casts", |dev| {
        // Values that exercise rounding to bf16/f16, including ties and out-of-range for f16.
        let x = rand(&[257], DType::F32, -70_000.0, 70_000.0, 3);
        for (from, to) in [
            (DType::F32, DType::F64),
            (DType::F64, DType::F32),
            (DType::F32, DType::BF16),
            (DType::BF16, DType::F32),
            (DType::F32, DType::F16),
            (DType::F16, DType::F32),
        ] {
            let src = x.to_dtype(from).unwrap();
            let g = src.to_device(dev).unwrap().to_dtype(to).unwrap();
            assert_eq!(g.device(), dev);
            compare(
                &format!("{from:?} -> {to:?}"),
                &g,
                &src.to_dtype(to).unwrap(),
                0.0,
            );
        }
    });
}

#[test]
fn float_to_integer_casts_truncate_and_saturate_like_the_cpu() {
    on_each_gpu("integer casts", |dev| {
        let v = [
            -2.7,
            -0.5,
            0.0,
            0.5,
            2.7,
            1e12,
            -1e30,
            1e30,
            f64::NAN,
            4_294_967_296.0,
        ];
        for from in [DType::F32, DType::F64] {
            let src = Tensor::from_vec(v.to_vec(), &[v.len()])
                .unwrap()
                .to_dtype(from)
                .unwrap();
            for to in [DType::I64, DType::U32] {
                let g = src.to_device(dev).unwrap().to_dtype(to).unwrap();
                compare(
                    &format!("{from:?} -> {to:?}"),
                    &g,
                    &src.to_dtype(to).unwrap(),
                    0.0,
                );
            }
        }
    });
}

#[test]
fn integer_casts_match_the_cpu() {
    on_each_gpu("casts from integers", |dev| {
        // Past f32's 24-bit mantissa, past f64's 53 bits (2^60 + 2^36 + 1 rounds once to f32,
        // not twice), negative and too large for u32 (saturate), u32's top.
        let v: Vec<i64> = vec![
            0,
            1,
            -1,
            7,
            16_777_217,
            -16_777_219,
            1 << 40,
            -(1 << 40),
            4_294_967_295,
            i64::MAX,
            i64::MIN,
            (1 << 60) + (1 << 36) + 1,
        ];
        let ints = Tensor::from_vec(v.clone(), &[v.len()]).unwrap();
        let uints = Tensor::from_vec(
            vec![0u32, 1, 16_777_217, 4_294_967_295, 2_147_483_648],
            &[5],
        )
        .unwrap();
        for (src, tos) in [
            (&ints, &[DType::F32, DType::F64, DType::U32][..]),
            (&uints, &[DType::F32, DType::F64, DType::I64][..]),
        ] {
            for &to in tos {
                let g = src.to_device(dev).unwrap().to_dtype(to).unwrap();
                assert_eq!((g.device(), g.dtype()), (dev, to));
                let want = src.to_dtype(to).unwrap();
                let (a, b) = (g.to_device(Device::Cpu).unwrap(), want);
                let same = match to {
                    DType::I64 => a.to_vec::<i64>().unwrap() == b.to_vec::<i64>().unwrap(),
                    DType::U32 => a.to_vec::<u32>().unwrap() == b.to_vec::<u32>().unwrap(),
                    _ => a.to_vec_f64().unwrap() == b.to_vec_f64().unwrap(),
                };
                assert!(
                    same,
                    "{:?} -> {to:?}: GPU {:?} vs CPU {:?}",
                    src.dtype(),
                    a.to_vec_f64().unwrap(),
                    b.to_vec_f64().unwrap()
                );
            }
        }
    });
}

#[test]
fn gradients_flow_back_across_to_device() {
    on_each_gpu("to_device backward", |dev| {
        let x = rand(&[5], DType::F64, -1.0, 1.0, 9).requires_grad_();
        let y = x.to_device(dev).unwrap().mul_scalar(3.0).unwrap();
        y.backward_with(
            Some(&Tensor::ones(&[5], DType::F64).to_device(dev).unwrap()),
            false,
        )
        .unwrap();
        let g = x.grad().unwrap();
        assert_eq!(g.device(), Device::Cpu);
        compare("d(3x)/dx", &g, &Tensor::full(3.0, &[5], DType::F64), 0.0);
    });
}

#[test]
fn empty_tensors_move_and_compute() {
    on_each_gpu("empty tensors", |dev| {
        let e = Tensor::zeros(&[0, 3], DType::F32).to_device(dev).unwrap();
        assert_eq!((e.shape(), e.device()), (&[0usize, 3][..], dev));
        let y = e.exp().unwrap().add(&e).unwrap().sum(&[0], false).unwrap();
        compare(
            "sum over an empty axis",
            &y,
            &Tensor::zeros(&[3], DType::F32),
            0.0,
        );
        assert!(e.to_vec::<f32>().unwrap().is_empty());
    });
}

/// Uploads go through page-locked staging buffers that are reused once their copies have run
/// (`cuda::staging`). Many uploads are queued behind a long product, with nothing read back in
/// between, so on a GPU their copies run well after the host has moved on: a buffer handed out
/// again before its copy ran would show up as one tensor holding another's values. On the CUDA
/// emulator the test also counts the copies made from pageable memory: none for uploads up to
/// the staging limit, and the one upload above it (64 MiB) is copied straight from pageable
/// memory.
#[test]
fn uploads_are_staged_and_arrive_whole_while_the_gpu_is_busy() {
    on_each_gpu("staged uploads", |dev| {
        let counters = selfsup_tensor::cuda::emulator_counters;
        let a = rand(&[512, 512], DType::F32, -1.0, 1.0, 1)
            .to_device(dev)
            .unwrap();
        let busy = a.matmul(&a).unwrap().matmul(&a).unwrap();
        let before = counters();
        let mut sent = Vec::new();
        for round in 0..6u64 {
            for (i, n) in [1usize, 7, 16_384, 16_385, 300_000].into_iter().enumerate() {
                let dtype = EVERY_DTYPE[(round as usize + i) % EVERY_DTYPE.len()];
                let x = rand(&[n], DType::F64, -1e3, 1e3, 100 * round + i as u64)
                    .to_dtype(dtype)
                    .unwrap();
                let on = x.to_device(dev).unwrap();
                sent.push((x, on));
            }
        }
        if let (Some(b), Some(a)) = (before, counters()) {
            assert_eq!(
                a.pageable_writes - b.pageable_writes,
                0,
                "uploads up to the staging limit copy from page-locked memory"
            );
            assert_eq!(a.writes - b.writes, sent.len() as u64);
        }
        // Quarters, so that every partial sum of the check below is exact in f32.
        let big = Tensor::full(0.25, &[(64 << 20) / 4 + 4], DType::F32);
        let before = counters();
        let big_on = big.to_device(dev).unwrap();
        if let (Some(b), Some(a)) = (before, counters()) {
            assert_eq!(a.pageable_writes - b.pageable_writes, 1, "above the limit");
        }
        assert!(busy.to_vec_f64().unwrap().iter().all(|v| v.is_finite()));
        for (k, (x, on)) in sent.iter().enumerate() {
            compare(&format!("upload {k} ({:?})", x.dtype()), on, x, 0.0);
        }
        let sum = big_on.sum_all().unwrap().to_vec_f64().unwrap()[0];
        assert_eq!(sum, 0.25 * big.numel() as f64);
    });
}
