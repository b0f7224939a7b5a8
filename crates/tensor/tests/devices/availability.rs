//! What a program sees about CUDA on any machine: a usable GPU, or a plain reason.

use selfsup_tensor::{DType, Device, Error, KernelsLoaded, Tensor};

use crate::on_each_gpu;

#[test]
fn a_missing_gpu_is_a_plain_error_not_a_panic() {
    let t = Tensor::ones(&[2, 2], DType::F32);
    match Device::Cuda(0).check() {
        Ok(()) => {
            let g = t.to_device(Device::Cuda(0)).unwrap();
            assert_eq!(g.device(), Device::Cuda(0));
            assert_eq!(Device::cuda_if_available(0), Device::Cuda(0));
        }
        Err(Error::DeviceUnavailable { device, reason }) => {
            assert_eq!(device, Device::Cuda(0));
            // The reason names what is missing and what to do about it.
            assert!(
                reason.contains("driver") || reason.contains("NVRTC") || reason.contains("device"),
                "{reason}"
            );
            let e = t.to_device(Device::Cuda(0)).unwrap_err();
            assert!(matches!(e, Error::DeviceUnavailable { .. }), "{e}");
            assert_eq!(Device::cuda_if_available(0), Device::Cpu);
            assert_eq!(Device::all_available(), vec![Device::Cpu]);
            eprintln!("no GPU here: {reason}");
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
    // An ordinal past the last device is refused with the range.
    let e = Device::Cuda(64).check().unwrap_err().to_string();
    assert!(e.contains("Cuda(64)"), "{e}");
}

#[test]
fn devices_parse_from_their_names() {
    assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
    assert_eq!(Device::parse("cuda").unwrap(), Device::Cuda(0));
    assert_eq!(Device::parse("cuda:1").unwrap(), Device::Cuda(1));
    let e = Device::parse("tpu").unwrap_err().to_string();
    assert!(e.contains("cpu, cuda or cuda:N"), "{e}");
}

/// `Device::load_kernels` compiles or loads every kernel file not loaded yet (on all cores at
/// once), then has nothing left to do; kernels loaded that way run.
#[test]
fn every_kernel_file_loads_at_once() {
    assert_eq!(
        Device::Cpu.load_kernels().unwrap(),
        KernelsLoaded::default()
    );
    on_each_gpu("every_kernel_file_loads_at_once", |d| {
        let first = d.load_kernels().unwrap();
        // Other tests of this process may have loaded some files before.
        assert!(
            first.files <= selfsup_tensor::cuda::KERNEL_FILES.len(),
            "{first:?}"
        );
        assert!(first.compiled <= first.files, "{first:?}");
        eprintln!("{d:?}: {first:?}");
        let again = d.load_kernels().unwrap();
        assert_eq!((again.files, again.compiled), (0, 0), "{again:?}");
        let x = Tensor::from_vec(vec![-1.0f32, 2.0, -3.0], &[3])
            .unwrap()
            .to_device(d)
            .unwrap();
        let y = x.relu().unwrap().to_vec::<f32>().unwrap();
        assert_eq!(y, vec![0.0, 2.0, 0.0]);
    });
}
