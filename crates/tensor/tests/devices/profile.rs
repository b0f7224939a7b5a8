//! The GPU profile (`CudaBackend::profile_start` / `profile_stop`): every kernel launch and
//! cuBLAS call in between is charged to its name, the spans add up to the total, and nothing
//! is recorded once it has stopped. Other tests may launch on the same device meanwhile, so
//! only this test's distinctive GEMM shape is counted exactly.

use selfsup_tensor::cuda::profile::GpuProfile;
use selfsup_tensor::cuda::CudaBackend;
use selfsup_tensor::{DType, Device};

use crate::{on_each_gpu, rand};

#[test]
fn the_profile_charges_each_launch_and_gemm_by_name() {
    on_each_gpu("profile", |dev| {
        let Device::Cuda(i) = dev else { return };
        let be = CudaBackend::get(i).unwrap();
        let _one = crate::PROFILING.lock().unwrap_or_else(|p| p.into_inner());
        let a = rand(&[67, 29], DType::F32, -1.0, 1.0, 1)
            .to_device(dev)
            .unwrap();
        let b = rand(&[29, 13], DType::F32, -1.0, 1.0, 2)
            .to_device(dev)
            .unwrap();
        let run = || {
            let y = a.matmul(&b).unwrap();
            y.add(&y).unwrap().exp().unwrap()
        };
        // Compiled and loaded before the profile starts.
        run();
        be.profile_start();
        for _ in 0..3 {
            run();
        }
        let p = be.profile_stop().unwrap();
        let calls = |pred: &dyn Fn(&str) -> bool| -> usize {
            p.kernels
                .iter()
                .filter(|k| pred(&k.name))
                .map(|k| k.calls)
                .sum()
        };
        assert_eq!(calls(&|n| n == "cublas gemm F32 67x29x13"), 3, "{p:?}");
        assert!(calls(&|n| n.starts_with("binary/add_")) >= 3, "{p:?}");
        assert!(calls(&|n| n.starts_with("unary/exp_")) >= 3, "{p:?}");
        assert!(
            p.kernels.iter().all(|k| k.ms >= 0.0 && k.calls > 0),
            "{p:?}"
        );
        let sum: f64 = p.kernels.iter().map(|k| k.ms).sum();
        assert!(
            (sum - p.total_ms).abs() <= 1e-6 * p.total_ms.max(1.0),
            "{p:?}"
        );
        assert!(
            p.kernels.windows(2).all(|w| w[0].ms >= w[1].ms),
            "longest first: {p:?}"
        );
        // Stopped: work is no longer recorded and a second stop is empty.
        run();
        assert_eq!(be.profile_stop().unwrap(), GpuProfile::default());
    });
}
