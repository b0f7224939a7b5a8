//! Shared helpers for the integration tests: scratch folders and fixture writers.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// A scratch folder removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("selfsup-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes `n` images of `h x w` (pixel = (i + y + x) % 256) and labels `i % 10`.
pub fn write_idx_pair(dir: &Path, prefix: &str, n: usize, h: usize, w: usize, gz: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let px: Vec<u8> = (0..n)
        .flat_map(|i| (0..h * w).map(move |p| ((i + p / w + p % w) % 256) as u8))
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let img = selfsup_data::idx::encode_idx_u8(&[n, h, w], &px);
    let lab = selfsup_data::idx::encode_idx_u8(&[n], &labels);
    let ext = if gz { ".gz" } else { "" };
    let (img, lab) = if gz {
        (gzip(&img), gzip(&lab))
    } else {
        (img, lab)
    };
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lab).unwrap();
}
