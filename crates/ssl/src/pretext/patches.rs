//! Grid patches for relative-position prediction and jigsaw puzzles.
//!
//! The image is split into a `grid x grid` array of cells of side `cell = image / grid` (the
//! grid is centred; any remainder is left as an even border). Each cell holds one square patch
//! of side `patch = cell - gap`, nominally inset by `gap / 2` so neighbouring patches are
//! `gap` pixels apart (Doersch et al. leave gaps so the network cannot match edges). During
//! training each patch is shifted by a random jitter, uniform in `[-jitter, jitter]` on each
//! axis and clamped to the image, so the position cannot be read off exact pixel alignment.

use selfsup_tensor::rng::Philox;
use selfsup_tensor::Tensor;

use crate::error::{config, Result};

/// The smallest patch side accepted (the reference CNN pools globally, so any side works, but
/// patches under 4 pixels carry almost nothing to learn from).
pub const MIN_PATCH: usize = 4;

/// Where the patches of a `grid x grid` layout lie in a square image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridGeometry {
    /// Image side in pixels.
    pub image: usize,
    /// Cells per side.
    pub grid: usize,
    /// Cell side (`image / grid`).
    pub cell: usize,
    /// Patch side (`cell - gap`).
    pub patch: usize,
    /// Nominal gap between neighbouring patches.
    pub gap: usize,
    /// Maximum shift of a patch on each axis.
    pub jitter: usize,
    /// Offset of the grid's first cell (centring).
    pub origin: usize,
}

impl GridGeometry {
    /// The layout of `grid x grid` patches with gaps `gap` and jitter `jitter` on an image of
    /// side `image`; a configuration error when the patches would be smaller than
    /// [`MIN_PATCH`].
    pub fn new(image: usize, grid: usize, gap: usize, jitter: usize) -> Result<Self> {
        if grid == 0 {
            return config("grid must be at least 1");
        }
        let cell = image / grid;
        if cell < gap + MIN_PATCH {
            return config(format!(
                "grid = {grid} with gap = {gap} on {image}x{image} images leaves patches of {} pixels; \
                 patches must be at least {MIN_PATCH} pixels: lower grid or gap",
                cell as isize - gap as isize
            ));
        }
        Ok(GridGeometry {
            image,
            grid,
            cell,
            patch: cell - gap,
            gap,
            jitter,
            origin: (image - grid * cell) / 2,
        })
    }

    /// Top-left corner `(y, x)` of the un-jittered patch in cell `(row, col)`.
    pub fn nominal(&self, row: usize, col: usize) -> (usize, usize) {
        let at = |i: usize| self.origin + i * self.cell + self.gap / 2;
        (at(row), at(col))
    }

    /// Top-left corner of the patch in cell `(row, col)` shifted by a random jitter (uniform
    /// in `[-jitter, jitter]` per axis, clamped so the patch stays inside the image).
    pub fn jittered(&self, row: usize, col: usize, rng: &mut Philox) -> (usize, usize) {
        let (y, x) = self.nominal(row, col);
        let max = (self.image - self.patch) as i64;
        let j = self.jitter as i64;
        let mut shift = |v: usize| {
            let d = rng.below(2 * j as u64 + 1) as i64 - j;
            (v as i64 + d).clamp(0, max) as usize
        };
        let y = shift(y);
        (y, shift(x))
    }
}

/// One patch to cut: image index in the batch and top-left corner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchAt {
    /// Image index in the batch.
    pub image: usize,
    /// Top row.
    pub y: usize,
    /// Left column.
    pub x: usize,
}

/// Cuts `size x size` patches from `images` `[B, C, H, W]`, one per entry of `at`, into
/// `[at.len(), C, size, size]` (same dtype, no gradient: inputs are data).
pub fn cut_patches(images: &Tensor, at: &[PatchAt], size: usize) -> Result<Tensor> {
    let s = images.shape();
    if s.len() != 4 {
        return config(format!("patches: needs images [B, C, H, W], got {s:?}"));
    }
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    if let Some(p) = at
        .iter()
        .find(|p| p.image >= b || p.y + size > h || p.x + size > w)
    {
        return config(format!(
            "patches: a {size}x{size} patch at {p:?} does not fit images {s:?}"
        ));
    }
    // A gather of the patches' elements from the flat images, on the images' device (the
    // offsets are made here and sent there; nothing is read back).
    let mut ids = Vec::with_capacity(at.len() * c * size * size);
    for p in at {
        for ch in 0..c {
            let plane = (p.image * c + ch) * h * w;
            for y in 0..size {
                let row = plane + (p.y + y) * w + p.x;
                ids.extend((row..row + size).map(|i| i as i64));
            }
        }
    }
    let n = ids.len();
    let ids = Tensor::from_vec(ids, &[n])?.to_device(images.device())?;
    Ok(images
        .detach()
        .reshape(&[b * c * h * w])?
        .index_select(0, &ids)?
        .reshape(&[at.len(), c, size, size])?)
}

/// Offsets `(drow, dcol)` of the 8 neighbours of a cell, in raster order: the class labels of
/// relative-position prediction (0 = top-left ... 7 = bottom-right).
pub const NEIGHBOURS: [(isize, isize); 8] = [
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, -1),
    (0, 1),
    (1, -1),
    (1, 0),
    (1, 1),
];
