//! General matrix multiplication `C ← α·A·B + β·C` on strided operands.
//!
//! A is `m × k`, B is `k × n`, C is `m × n`; element `(i, j)` of X is at `x + i·rsx + j·csx`
//! (strides in elements, any sign), so transposed operands are passed by swapping strides,
//! without a copy. The semantics are those of [`matrixmultiply::sgemm`].
//!
//! [`sgemm`] runs a packed, rayon-parallel Goto/BLIS driver with our own micro-kernel (AVX-512
//! 32 × 12 when the CPU has AVX-512F, else AVX2 + FMA 16 × 6; detected once at run time) when
//! the problem is large enough to amortise packing; otherwise (tiny problems, CPUs with
//! neither), and for f64 ([`dgemm`]), it delegates to `matrixmultiply`.
//!
//! Inside [`with_bf16_products`]`(true, ..)`, on a CPU with AVX-512 BF16, [`sgemm`] rounds its
//! operands to bf16 and multiplies them with `vdpbf16ps` (f32 accumulation; `bf16.rs`), for
//! every size: the CPU's products at `MatmulPrecision::Bf16`.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod bf16;
#[cfg(target_arch = "x86_64")]
mod driver;
#[cfg(target_arch = "x86_64")]
mod pack;
#[cfg(test)]
mod tests;

/// A bias added to the product as its tile is written: `rows[i]` to every element of row `i`,
/// `cols[j]` to every element of column `j` (null: none). Added once, with the first k block.
#[derive(Clone, Copy)]
pub(crate) struct Bias {
    /// Per-row bias (length m), or null.
    pub(crate) rows: *const f32,
    /// Per-column bias (length n), or null.
    pub(crate) cols: *const f32,
}

impl Bias {
    /// No bias.
    pub(crate) const NONE: Bias = Bias {
        rows: core::ptr::null(),
        cols: core::ptr::null(),
    };

    /// The bias transposed (rows become columns), for `Cᵀ = Bᵀ·Aᵀ`.
    fn transposed(self) -> Bias {
        Bias {
            rows: self.cols,
            cols: self.rows,
        }
    }

    /// This bias for the tile whose first element is `(i0, j0)`.
    ///
    /// # Safety
    /// `i0 ≤ m` and `j0 ≤ n` for the product the bias belongs to.
    unsafe fn at(self, i0: usize, j0: usize) -> Bias {
        Bias {
            rows: if self.rows.is_null() {
                self.rows
            } else {
                self.rows.add(i0)
            },
            cols: if self.cols.is_null() {
                self.cols
            } else {
                self.cols.add(j0)
            },
        }
    }

    /// `x` plus the bias of element `(i, j)` of the tile.
    ///
    /// # Safety
    /// A non-null side must be readable at `i` (rows) / `j` (columns).
    #[inline(always)]
    unsafe fn add(self, mut x: f32, i: usize, j: usize) -> f32 {
        if !self.rows.is_null() {
            x += *self.rows.add(i);
        }
        if !self.cols.is_null() {
            x += *self.cols.add(j);
        }
        x
    }
}

std::thread_local! {
    /// Whether [`sgemm`] on this thread multiplies in bf16 (see [`with_bf16_products`]).
    static BF16_PRODUCTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this CPU multiplies bf16 in hardware (AVX-512 BF16), so that
/// [`with_bf16_products`] changes how [`sgemm`] computes.
pub fn bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        bf16::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `f` with [`sgemm`] on this thread rounding its operands to bf16 (to nearest even;
/// denormals to zero) and multiplying them with bf16 instructions when `on` and
/// [`bf16_available`]; restores the previous setting after. The setting is per thread: code
/// that runs GEMMs on rayon tasks passes it on with [`take_bf16_products`]. Keep `f` to the
/// GEMMs and the code that calls them: a thread waiting on the rayon pool inside `f` may run
/// other jobs, which see the setting ([`sgemm`] clears it while it runs).
pub fn with_bf16_products<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let _scope = Bf16Scope::enter(on);
    f()
}

/// [`with_bf16_products`] as a guard: the setting holds until it is dropped.
pub struct Bf16Scope(bool);

impl Bf16Scope {
    /// Sets this thread's bf16 setting to `on` until the guard is dropped.
    pub fn enter(on: bool) -> Bf16Scope {
        Bf16Scope(BF16_PRODUCTS.with(|c| c.replace(on)))
    }
}

impl Drop for Bf16Scope {
    fn drop(&mut self) {
        BF16_PRODUCTS.with(|c| c.set(self.0));
    }
}

/// This thread's setting (as [`bf16_products`] reads it), cleared until the guard is dropped:
/// for code that runs GEMMs on rayon tasks, which take the value back with
/// [`Bf16Scope::enter`], while this thread, waiting on the pool, may run jobs from elsewhere
/// that must not see it.
pub fn take_bf16_products() -> (bool, Bf16Scope) {
    (bf16_products(), Bf16Scope::enter(false))
}

/// Whether [`sgemm`] multiplies in bf16 on this thread now (inside
/// [`with_bf16_products`]`(true, ..)` on a CPU with AVX-512 BF16).
pub fn bf16_products() -> bool {
    BF16_PRODUCTS.with(|c| c.get()) && bf16_available()
}

/// `m·n·k` below which the call goes to `matrixmultiply`. Measured on the target machine, the
/// packed path was already faster than `matrixmultiply` from `8³` up (at `2³` and `4³` both
/// take well under a microsecond), so only trivial products skip packing.
#[cfg(target_arch = "x86_64")]
const PACKED_MIN_VOLUME: usize = 8 * 8 * 8;

/// Whether the CPU supports AVX-512F (detected once).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// Whether the CPU supports AVX2 and FMA (detected once).
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Single-precision GEMM: `C ← α·A·B + β·C`.
///
/// `A` is `m × k`, `B` is `k × n`, `C` is `m × n`; element `(i, j)` of X is read at
/// `x.offset(i·rsx + j·csx)`. Strides may be arbitrary (including negative) for A and B; the
/// strides of C must not make distinct elements alias. When `beta == 0`, C is only written,
/// never read, so it may hold uninitialised values or NaN.
///
/// Uses all threads of the current rayon pool (it may be called from inside a rayon task); the
/// result is deterministic for a given problem and thread count.
///
/// # Safety
/// `a`, `b` must be valid for reads and `c` for reads and writes at every in-range index.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    sgemm_biased(
        m,
        k,
        n,
        alpha,
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        beta,
        c,
        rsc,
        csc,
        Bias::NONE,
    );
}

/// `C ← A·B + bias`, with `bias[j]` added to every element of column `j` (length `n`); C is
/// only written. Same conventions as [`sgemm`]. The packed path adds the bias as each tile is
/// stored (C is never pre-filled and read back); the fallback fills C with the bias first.
///
/// # Safety
/// As for [`sgemm`]; `bias` must be readable for `n` floats.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_col_bias(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    bias: *const f32,
) {
    let bias = Bias {
        rows: core::ptr::null(),
        cols: bias,
    };
    sgemm_biased(
        m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc, bias,
    );
}

/// [`sgemm`] plus a bias (added with β·C, so the bias must come with `beta == 0` for the
/// fallback's pre-fill to be right).
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_biased(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    bias: Bias,
) {
    #[cfg(target_arch = "x86_64")]
    if k > 0 && bf16_products() {
        // Cleared while it runs: a job from elsewhere that this thread picks up while it waits
        // on the rayon pool must not multiply in bf16.
        let _off = Bf16Scope::enter(false);
        return bf16::gemm(
            m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc, bias,
        );
    }
    #[cfg(target_arch = "x86_64")]
    if m.saturating_mul(n).saturating_mul(k) >= PACKED_MIN_VOLUME {
        if has_avx512() {
            return packed_sgemm::<driver::Avx512>(
                m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc, bias,
            );
        }
        if has_avx2_fma() {
            return packed_sgemm::<driver::Avx2>(
                m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc, bias,
            );
        }
    }
    if bias.rows.is_null() && bias.cols.is_null() {
        matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
        return;
    }
    // Fallback: C starts as the bias and the product accumulates onto it.
    for i in 0..m {
        for j in 0..n {
            *c.offset(i as isize * rsc + j as isize * csc) = bias.add(0.0, i, j);
        }
    }
    matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, 1.0, c, rsc, csc);
}

/// Double-precision GEMM: `C ← α·A·B + β·C`, same conventions as [`sgemm`].
///
/// Delegates to [`matrixmultiply::dgemm`].
///
/// # Safety
/// As for [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn dgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f64,
    a: *const f64,
    rsa: isize,
    csa: isize,
    b: *const f64,
    rsb: isize,
    csb: isize,
    beta: f64,
    c: *mut f64,
    rsc: isize,
    csc: isize,
) {
    matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
}

/// The packed path of [`sgemm`] with micro-kernel `K`, for any size.
///
/// Orients the problem so that C's smaller stride runs along the kernel's vector dimension:
/// when C is closer to row-major it computes `Cᵀ ← α·Bᵀ·Aᵀ + β·Cᵀ` instead (strides swapped).
///
/// # Safety
/// As for [`sgemm`], and the CPU must support `K`'s instructions.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn packed_sgemm<K: driver::MicroKernel>(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
    bias: Bias,
) {
    if m == 0 || n == 0 || k == 0 {
        // Nothing to multiply: C ← β·C (+ bias).
        matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
        for i in 0..m {
            for j in 0..n {
                let p = c.offset(i as isize * rsc + j as isize * csc);
                *p = bias.add(*p, i, j);
            }
        }
    } else if csc.unsigned_abs() < rsc.unsigned_abs() {
        let bias = bias.transposed();
        driver::gemm::<K>(
            n, k, m, alpha, b, csb, rsb, a, csa, rsa, beta, c, csc, rsc, bias,
        );
    } else {
        driver::gemm::<K>(
            m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc, bias,
        );
    }
}
