//! Runtime selection of the widest vector instruction set (AVX-512, AVX2+FMA, or portable).
//!
//! Hot loops are written once as plain Rust over slices; [`dispatch`] runs them inside a
//! function compiled with the detected target features, so LLVM vectorises the same source for
//! each level. Detection happens once per process.

use std::sync::OnceLock;

/// The instruction-set level in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// AVX-512F (16 f32 lanes).
    Avx512,
    /// AVX2 with FMA (8 f32 lanes).
    Avx2,
    /// Whatever the compile target guarantees.
    Portable,
}

/// The level detected on this CPU.
pub fn level() -> Level {
    static L: OnceLock<Level> = OnceLock::new();
    *L.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                return Level::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Level::Avx2;
            }
        }
        Level::Portable
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` compiled for the best available instruction set (`f` should be a tight loop whose
/// callees inline).
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    match level() {
        // SAFETY: the features were detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { run_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { run_avx2(f) },
        _ => f(),
    }
}
