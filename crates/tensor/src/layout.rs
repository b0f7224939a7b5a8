//! Shapes, strides and offsets: how a tensor's elements sit in its storage.
//!
//! Strides count elements (not bytes) and are never negative; a stride of 0 repeats an element
//! (broadcasting). Views (reshape of a contiguous tensor, permute, narrow, select, expand,
//! squeeze, unsqueeze) only build a new [`Layout`] over the same storage.

use crate::error::{shape_err, Error, Result};

/// Row-major strides of a contiguous tensor of this shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        strides[i] = s;
        s *= shape[i].max(1);
    }
    strides
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Resolves a possibly negative axis against a rank.
pub fn resolve_axis(op: &'static str, axis: isize, shape: &[usize]) -> Result<usize> {
    let rank = shape.len() as isize;
    let a = if axis < 0 { axis + rank } else { axis };
    if a < 0 || a >= rank {
        return Err(Error::Axis {
            op,
            axis,
            shape: shape.into(),
            rank: shape.len(),
        });
    }
    Ok(a as usize)
}

/// NumPy broadcasting of two shapes.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return shape_err(
                op,
                format!("shapes {a:?} and {b:?} cannot be broadcast together"),
            );
        };
    }
    Ok(out)
}

/// Where the elements of a tensor are: shape, strides and the offset of element 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// A contiguous row-major layout at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// A layout from its parts (the caller guarantees it stays inside the storage).
    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        Layout {
            shape,
            strides,
            offset,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Offset of element 0 in the storage.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Whether elements are dense and in row-major order (size-1 dims may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] == 1 {
                continue;
            }
            if self.strides[i] != expected {
                return false;
            }
            expected *= self.shape[i];
        }
        true
    }

    /// One past the largest storage index this layout touches (0 for an empty tensor).
    pub fn storage_extent(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// The layout with its axes reordered.
    pub fn permute(&self, perm: &[usize]) -> Result<Layout> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if perm.len() != r
            || perm
                .iter()
                .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
        {
            return shape_err(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the {r} axes of {:?}",
                    self.shape
                ),
            );
        }
        Ok(Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        })
    }

    /// Elements `start..start+len` along `axis`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Layout> {
        let d = self.shape[axis];
        if start.checked_add(len).is_none_or(|e| e > d) {
            return shape_err(
                "narrow",
                format!(
                    "range {start}..{} is outside axis {axis} of size {d} (shape {:?})",
                    start + len,
                    self.shape
                ),
            );
        }
        let mut shape = self.shape.clone();
        shape[axis] = len;
        let offset = if len == 0 {
            self.offset
        } else {
            self.offset + start * self.strides[axis]
        };
        Ok(Layout {
            shape,
            strides: self.strides.clone(),
            offset,
        })
    }

    /// The view with `axis` removed at index `i`.
    pub fn select(&self, axis: usize, i: usize) -> Result<Layout> {
        if i >= self.shape[axis] {
            return Err(Error::Index {
                op: "select",
                index: i as i64,
                size: self.shape[axis],
            });
        }
        let mut shape = self.shape.clone();
        let mut strides = self.strides.clone();
        shape.remove(axis);
        strides.remove(axis);
        Ok(Layout {
            shape,
            strides,
            offset: self.offset + i * self.strides[axis],
        })
    }

    /// Broadcast (with stride 0) to `shape`, NumPy rules.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Layout> {
        if shape.len() < self.rank() {
            return shape_err(
                "broadcast_to",
                format!(
                    "cannot broadcast {:?} to fewer dimensions {shape:?}",
                    self.shape
                ),
            );
        }
        let extra = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.rank() {
            let (d, t) = (self.shape[i], shape[extra + i]);
            if d == t {
                strides[extra + i] = self.strides[i];
            } else if d == 1 {
                strides[extra + i] = 0;
            } else {
                return shape_err(
                    "broadcast_to",
                    format!("cannot broadcast {:?} to {shape:?}", self.shape),
                );
            }
        }
        Ok(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// A view with a new shape over the same elements, if the strides allow it without a copy.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout {
                shape: shape.to_vec(),
                strides: contiguous_strides(shape),
                offset: self.offset,
            });
        }
        // General case: split/merge runs of dims that are contiguous among themselves.
        let old: Vec<(usize, usize)> = self
            .shape
            .iter()
            .copied()
            .zip(self.strides.iter().copied())
            .filter(|&(d, _)| d != 1)
            .collect();
        let mut strides = vec![0; shape.len()];
        let (mut oi, mut ni) = (0, 0);
        while ni < shape.len() || oi < old.len() {
            // Skip new size-1 dims.
            if ni < shape.len() && shape[ni] == 1 {
                strides[ni] = 0;
                ni += 1;
                continue;
            }
            if oi >= old.len() || ni >= shape.len() {
                return None;
            }
            // Take a chunk of old dims that merge into a chunk of new dims with equal product.
            let (mut op, mut np) = (old[oi].0, shape[ni]);
            let (o0, n0) = (oi, ni);
            while op != np {
                if op < np {
                    oi += 1;
                    if oi >= old.len() {
                        return None;
                    }
                    // Must be mergeable: stride[o-1] == stride[o] * size[o].
                    if old[oi - 1].1 != old[oi].1 * old[oi].0 {
                        return None;
                    }
                    op *= old[oi].0;
                } else {
                    ni += 1;
                    if ni >= shape.len() {
                        return None;
                    }
                    np *= shape[ni];
                }
            }
            let _ = o0;
            // Assign strides to new dims n0..=ni from the innermost stride of the old chunk.
            let mut s = old[oi].1;
            for k in (n0..=ni).rev() {
                strides[k] = s;
                s *= shape[k];
            }
            oi += 1;
            ni += 1;
        }
        Some(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }
}

/// Merges adjacent dims that are contiguous with each other in every one of `strides`, dropping
/// size-1 dims. Returns the merged shape and one merged stride list per operand (at least one
/// dim, so that callers can always loop over the last).
pub fn merge_dims(shape: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut ms: Vec<usize> = Vec::with_capacity(shape.len());
    let mut mst: Vec<Vec<usize>> = vec![Vec::with_capacity(shape.len()); strides.len()];
    for i in 0..shape.len() {
        if shape[i] == 1 {
            continue;
        }
        if !ms.is_empty() {
            let mergeable = strides
                .iter()
                .enumerate()
                .all(|(k, s)| *mst[k].last().unwrap_or(&0) == s[i] * shape[i]);
            if mergeable {
                let n = ms.len() - 1;
                ms[n] *= shape[i];
                for (k, s) in strides.iter().enumerate() {
                    mst[k][n] = s[i];
                }
                continue;
            }
        }
        ms.push(shape[i]);
        for (k, s) in strides.iter().enumerate() {
            mst[k].push(s[i]);
        }
    }
    if ms.is_empty() {
        ms.push(if shape.contains(&0) { 0 } else { 1 });
        for m in mst.iter_mut() {
            m.push(1);
        }
    }
    (ms, mst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        assert_eq!(
            broadcast_shapes("t", &[3, 1, 5], &[4, 1]).unwrap(),
            vec![3, 4, 5]
        );
        assert!(broadcast_shapes("t", &[3], &[4]).is_err());
        assert_eq!(broadcast_shapes("t", &[], &[2]).unwrap(), vec![2]);
    }

    #[test]
    fn reshape_views_of_permuted() {
        let l = Layout::contiguous(&[2, 3, 4]).permute(&[1, 0, 2]).unwrap(); // [3,2,4] strides [4,12,1]
        assert!(l.reshape(&[3, 8]).is_none());
        let r = l.reshape(&[3, 2, 2, 2]).unwrap();
        assert_eq!(r.strides(), &[4, 12, 2, 1]);
        let r = l.reshape(&[1, 3, 1, 2, 4]).unwrap();
        assert_eq!(r.strides()[1], 4);
    }

    #[test]
    fn merge_dims_merges_contiguous_runs() {
        let (s, st) = merge_dims(&[2, 3, 4], &[&[12, 4, 1], &[0, 0, 1]]);
        assert_eq!(s, vec![6, 4]);
        assert_eq!(st, vec![vec![4, 1], vec![0, 1]]);
        let (s, st) = merge_dims(&[2, 3, 4], &[&[12, 4, 1]]);
        assert_eq!((s, st), (vec![24], vec![vec![1]]));
    }
}
