//! Benchmark-only crate: the benchmarks live in `matmul.rs` (`cargo bench --bench matmul`).
