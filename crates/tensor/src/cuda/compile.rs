//! The kernel sources (`kernels/*.cu`, built into the library) and their compilation with NVRTC
//! for the GPU's architecture, cached on disk so a second run starts without compiling.
//!
//! Cache: one CUBIN file per (source, architecture, NVRTC version, options) under
//! `$XDG_CACHE_HOME/selfsup/kernels` (else `~/.cache/selfsup/kernels`), named by a 64-bit FNV-1a
//! hash of all four; written to a temporary name and renamed, so a crash never leaves a torn
//! entry, and an unreadable entry is recompiled.

use std::path::{Path, PathBuf};

/// What every kernel file starts with: the `Dims` layout struct and index helpers.
const COMMON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../kernels/common.cuh"
));

macro_rules! kernel_files {
    ($($name:literal),* $(,)?) => {
        /// Every kernel file of this build: (name, CUDA C source without the common header).
        pub const KERNEL_FILES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../kernels/", $name, ".cu")))),*
        ];
    };
}
kernel_files!(
    "unary",
    "binary",
    "copy",
    "reduce",
    "softmax",
    "loss",
    "index",
    "optim",
    "conv",
    "conv_mma",
    "pool",
    "random",
    "layer_norm",
    "batch_norm",
    "attention",
    "attention_mma",
    "sort"
);

/// The complete source NVRTC compiles for kernel file `name` (common header included).
pub fn kernel_file(name: &str) -> Option<String> {
    KERNEL_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, src)| format!("{COMMON}\n// ---- {n}.cu\n{src}"))
}

/// Why NVRTC cannot be used, or `None` when it can.
pub fn nvrtc_problem() -> Option<String> {
    // SAFETY: only tries to dlopen the library under its usual names.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        None
    } else {
        Some(
            "NVRTC (libnvrtc.so.13 or .12, CUDA's run-time compiler) could not be loaded: \
             install the CUDA toolkit or `pip install nvidia-cuda-nvrtc`, and put the directory \
             holding libnvrtc on LD_LIBRARY_PATH"
                .into(),
        )
    }
}

/// NVRTC's version (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32), String> {
    if let Some(p) = nvrtc_problem() {
        return Err(p);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| format!("nvrtcVersion failed: {e:?}"))?;
    Ok((major, minor))
}

/// Options every kernel is compiled with (besides the architecture).
const OPTIONS: &[&str] = &["--std=c++17"];

/// 64-bit FNV-1a: stable across Rust versions and platforms (unlike `DefaultHasher`), which a
/// key of an on-disk cache needs.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separate the parts so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Where compiled kernels are cached, if a home or cache directory is known.
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("selfsup").join("kernels"))
}

/// Compiles `src` with NVRTC to a CUBIN (machine code) for `arch` (e.g. `"sm_90"`); the error
/// carries NVRTC's log. Machine code rather than PTX: it loads without the driver's PTX JIT, so
/// an NVRTC newer than the driver (another CUDA minor version) still works.
pub fn compile_cubin(src: &str, arch: &str) -> Result<Vec<u8>, String> {
    use cudarc::nvrtc::{result, sys};
    if let Some(p) = nvrtc_problem() {
        return Err(p);
    }
    let csrc =
        std::ffi::CString::new(src).map_err(|_| "kernel source holds a NUL byte".to_string())?;
    let prog =
        result::create_program(&csrc, None).map_err(|e| format!("nvrtcCreateProgram: {e:?}"))?;
    let opts: Vec<String> = OPTIONS
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--gpu-architecture={arch}")])
        .collect();
    // SAFETY: `prog` is a live program until destroyed at the end; buffers are sized by NVRTC.
    let out = unsafe {
        let compiled = result::compile_program(prog, &opts);
        let out = match compiled {
            Err(e) => {
                let log = result::get_program_log(prog)
                    .map(|l| {
                        let bytes: Vec<u8> = l
                            .iter()
                            .take_while(|&&c| c != 0)
                            .map(|&c| c as u8)
                            .collect();
                        String::from_utf8_lossy(&bytes).into_owned()
                    })
                    .unwrap_or_default();
                Err(format!(
                    "NVRTC could not compile a kernel file for {arch} ({e:?}):\n{log}"
                ))
            }
            Ok(()) => {
                let mut size = 0usize;
                match sys::nvrtcGetCUBINSize(prog, &mut size).result() {
                    Err(e) => Err(format!("nvrtcGetCUBINSize: {e:?}")),
                    Ok(()) => {
                        let mut buf = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut std::ffi::c_char)
                            .result()
                            .map(|()| buf)
                            .map_err(|e| format!("nvrtcGetCUBIN: {e:?}"))
                    }
                }
            }
        };
        let _ = result::destroy_program(prog);
        out
    };
    out
}

/// Whether `bytes` look like a CUBIN (an ELF image).
fn is_cubin(bytes: &[u8]) -> bool {
    bytes.len() > 64 && bytes.starts_with(b"\x7fELF")
}

/// [`compile_cubin`] through the on-disk cache in `dir` (no caching when `dir` is `None`), and
/// whether NVRTC had to compile (`true`) or the cache held it.
pub(crate) fn cubin_cached_in(
    src: &str,
    arch: &str,
    dir: Option<&Path>,
) -> Result<(Vec<u8>, bool), String> {
    let (major, minor) = nvrtc_version()?;
    let version = format!("{major}.{minor}");
    let key = fnv1a(&[
        src.as_bytes(),
        arch.as_bytes(),
        version.as_bytes(),
        OPTIONS.join(" ").as_bytes(),
    ]);
    let path = dir.map(|d| d.join(format!("{key:016x}-{arch}.cubin")));
    if let Some(p) = &path {
        if let Ok(bin) = std::fs::read(p) {
            if is_cubin(&bin) {
                return Ok((bin, false));
            }
        }
    }
    let bin = compile_cubin(src, arch)?;
    if let (Some(p), Some(d)) = (&path, dir) {
        // A cache that cannot be written only costs a recompile next time.
        let tmp = d.join(format!("{key:016x}.{}.tmp", std::process::id()));
        if std::fs::create_dir_all(d).is_ok() && std::fs::write(&tmp, &bin).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
    Ok((bin, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs are reproducible on a GPU only if no kernel adds floating-point values in an order
    /// that varies between runs: no kernel uses an atomic operation outside comments, except
    /// sort.cu's count of digits (integers, exact in any order).
    #[test]
    fn no_kernel_adds_floats_atomically() {
        for (name, src) in KERNEL_FILES.iter().chain([&("common", COMMON)]) {
            for (i, line) in src.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if code.contains("atomic") {
                    assert!(
                        *name == "sort" && code.contains("atomicAdd(&counts["),
                        "{name}.cu line {}: an atomic operation: {line}",
                        i + 1
                    );
                }
            }
        }
    }

    /// The kernels the Rust side launches from each file, by the names it builds.
    fn expected_entries(file: &str) -> Vec<String> {
        let floats = ["f32", "f64"];
        match file {
            "unary" => crate::ops::unary::UNARY_NAMES
                .iter()
                .flat_map(|n| {
                    floats
                        .iter()
                        .flat_map(move |d| [format!("{n}_{d}"), format!("{n}_bw_{d}")])
                })
                .collect(),
            "binary" => crate::ops::binary::BINARY_NAMES
                .iter()
                .chain(&["where"])
                .flat_map(|n| floats.iter().map(move |d| format!("{n}_{d}")))
                .collect(),
            "copy" => [
                "copy_b16",
                "copy_b32",
                "copy_b64",
                "fill_b16",
                "fill_b32",
                "fill_b64",
                "arange_f32",
                "arange_f64",
                "arange_i64",
                "arange_u32",
                "cast_f32_bf16_colsum",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain(
                super::super::storage::CAST_KERNELS
                    .iter()
                    .map(|s| s.to_string()),
            )
            .collect(),
            "reduce" => [
                "reduce_sum",
                "reduce_max",
                "reduce_min",
                "argreduce_max",
                "argreduce_min",
            ]
            .iter()
            .flat_map(|k| floats.iter().map(move |d| format!("{k}_{d}")))
            .collect(),
            "batch_norm" => [
                "bn_stats",
                "bn_finish",
                "bn_affine",
                "bn_grad_sums",
                "bn_grad_finish",
                "bn_grad_input",
            ]
            .iter()
            .flat_map(|k| floats.iter().map(move |d| format!("{k}_{d}")))
            .collect(),
            "layer_norm" => ["layer_norm_fwd", "layer_norm_bw_dx", "layer_norm_bw_wb"]
                .iter()
                .flat_map(|k| floats.iter().map(move |d| format!("{k}_{d}")))
                .collect(),
            "softmax" => ["softmax", "log_softmax"]
                .iter()
                .flat_map(|k| floats.iter().map(move |d| format!("{k}_{d}")))
                .collect(),
            "loss" => ["cross_entropy_fwd", "cross_entropy_bw"]
                .iter()
                .flat_map(|k| floats.iter().map(move |d| format!("{k}_{d}")))
                .collect(),
            "index" => ["index_select_b16", "index_select_b32", "index_select_b64"]
                .iter()
                .map(|s| s.to_string())
                .chain(
                    ["index_add_sorted", "gather", "scatter_add_sorted"]
                        .iter()
                        .flat_map(|k| floats.iter().map(move |d| format!("{k}_{d}"))),
                )
                .chain(["index_keys", "scatter_keys", "column_keys"].map(String::from))
                .collect(),
            "sort" => ["radix_hist", "radix_scan", "radix_scatter"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "optim" => [
                "adam_step",
                "sgd_step",
                "adam_multi",
                "sgd_multi",
                "lars_norms",
                "lars_update",
            ]
            .iter()
            .flat_map(|k| floats.iter().map(move |d| format!("{k}_{d}")))
            .collect(),
            "conv" => ["im2col", "col2im"]
                .iter()
                .flat_map(|k| floats.iter().map(move |d| format!("{k}_{d}")))
                .chain(["im2col_bf16_f32".into(), "col2im_bf16_f32".into()])
                .collect(),
            "conv_mma" => ["conv_mma_fwd", "conv_mma_dgrad", "conv_mma_wgrad"]
                .iter()
                .flat_map(|k| [64, 128].map(|bm| format!("{k}_{bm}")))
                .chain(["conv_mma_pack_w".into(), "conv_mma_pack_wt".into()])
                .collect(),
            "pool" => [
                "max_pool_fwd",
                "max_pool_bw",
                "avg_pool_fwd",
                "avg_pool_bw",
                "avg_pool_global_bw",
            ]
            .iter()
            .flat_map(|k| floats.iter().map(move |d| format!("{k}_{d}")))
            .collect(),
            "random" => ["rand", "randn", "bernoulli"]
                .iter()
                .flat_map(|k| floats.iter().map(move |d| format!("{k}_{d}")))
                .collect(),
            "attention" => ["attention_fwd", "attention_bwd_dq", "attention_bwd_dkv"]
                .iter()
                .flat_map(|k| {
                    let f32s = crate::cuda::attention::HEAD_WIDTHS
                        .iter()
                        .map(move |w| format!("{k}_f32_{w}"));
                    let f64s = crate::cuda::attention::HEAD_WIDTHS_F64
                        .iter()
                        .map(move |w| format!("{k}_f64_{w}"));
                    f32s.chain(f64s)
                })
                .collect(),
            "attention_mma" => [
                "attention_mma_fwd",
                "attention_mma_bwd_dq",
                "attention_mma_bwd_dkv",
            ]
            .iter()
            .flat_map(|k| {
                crate::cuda::attention::MMA_HEAD_WIDTHS
                    .iter()
                    .map(move |w| format!("{k}_{w}"))
            })
            .collect(),
            other => panic!("list the kernels of {other}.cu here"),
        }
    }

    #[test]
    fn fnv1a_is_stable_and_separates_parts() {
        // Reference value of 64-bit FNV-1a over "a" then the part separator.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in [b'a', 0xff] {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(fnv1a(&[b"a"]), h);
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }

    #[test]
    fn every_kernel_file_has_a_header_comment_and_the_common_prelude() {
        for (name, src) in KERNEL_FILES {
            assert!(
                src.starts_with(&format!("// {name}.cu: ")),
                "{name}.cu must open with a header comment naming what it computes"
            );
            let full = kernel_file(name).unwrap();
            assert!(full.contains("struct Dims") && full.contains(src));
        }
        assert!(kernel_file("no_such_file").is_none());
    }

    /// Compiles every kernel file with NVRTC for Ampere and Hopper, through a fresh cache
    /// directory, on three threads at once, then again from the cache. Needs libnvrtc (not a
    /// GPU): CI installs it with pip; elsewhere the test says it skipped.
    #[test]
    fn every_kernel_file_compiles_with_nvrtc_and_is_cached() {
        if let Some(why) = nvrtc_problem() {
            eprintln!("skipped: {why}");
            return;
        }
        let dir = std::env::temp_dir().join(format!("selfsup-kernel-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Several threads at once, as `CudaBackend::load_all_kernels` uses NVRTC.
        let jobs: Vec<(&str, &str)> = KERNEL_FILES
            .iter()
            .flat_map(|&(name, _)| [(name, "sm_80"), (name, "sm_90")])
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..3)
                .map(|_| {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(name, arch)) = jobs.get(i) else {
                            break;
                        };
                        let src = kernel_file(name).unwrap();
                        let (bin, compiled) = cubin_cached_in(&src, arch, Some(&dir))
                            .unwrap_or_else(|e| panic!("{name}.cu for {arch}: {e}"));
                        assert!(compiled, "{name}.cu for {arch}: the fresh cache held it");
                        assert!(is_cubin(&bin), "{name}.cu: {arch} gives an ELF image");
                        // Every kernel the Rust side launches is a symbol of the image (its name
                        // sits NUL-terminated in the ELF string table).
                        for entry in expected_entries(name) {
                            let sym = format!("\0{entry}\0");
                            assert!(
                                bin.windows(sym.len()).any(|w| w == sym.as_bytes()),
                                "{name}.cu has no kernel {entry}, which the Rust side launches"
                            );
                        }
                        let (again, compiled) = cubin_cached_in(&src, arch, Some(&dir)).unwrap();
                        assert!(!compiled, "{name}.cu for {arch}: not read from the cache");
                        assert_eq!(bin, again);
                    })
                })
                .collect();
            for w in workers {
                if let Err(e) = w.join() {
                    std::panic::resume_unwind(e);
                }
            }
        });
        let cached = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(
            cached,
            2 * KERNEL_FILES.len(),
            "one cache entry per file and arch"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
