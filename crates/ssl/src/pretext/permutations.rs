//! The fixed permutation set of jigsaw puzzles (Noroozi & Favaro 2016).
//!
//! The set is built greedily: the first permutation is drawn from a fixed seed; each next one
//! is, among all candidates not yet chosen, the one farthest in Hamming distance from the set
//! so far: largest minimum distance to the chosen ones, ties broken by the largest total
//! distance, then by candidate order. For up to 9 tiles the candidates are all `n!`
//! permutations (as in the paper); for more tiles, [`CANDIDATE_POOL`] permutations drawn from
//! the same seed. The result depends only on `(tiles, count, seed)`.

use selfsup_tensor::rng::Philox;

use crate::error::{config, Result};

/// The seed every method uses for its permutation set, so the set (and so the meaning of each
/// class index) is the same in every run.
pub const PERMUTATION_SEED: u64 = 0x_6a16_5a77;

/// Number of random candidates when `tiles > 9` (all `n!` are enumerated up to 9 tiles).
pub const CANDIDATE_POOL: usize = 100_000;

/// The largest set size accepted.
pub const MAX_PERMUTATIONS: usize = 10_000;

/// A fixed set of permutations of `0..tiles`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermutationSet {
    /// The permutations; `perms[p][k]` is the original tile shown in slot `k`.
    pub perms: Vec<Vec<usize>>,
    /// The smallest Hamming distance between two permutations of the set.
    pub min_hamming: usize,
}

/// Number of positions where `a` and `b` differ.
pub fn hamming(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

/// The inverse permutation: `inverse(p)[p[k]] = k`.
pub fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (k, &t) in perm.iter().enumerate() {
        if t < inv.len() {
            inv[t] = k;
        }
    }
    inv
}

/// `tiles` shuffled by `perm`: slot `k` of the result holds `tiles[perm[k]]`.
pub fn apply<T: Clone>(tiles: &[T], perm: &[usize]) -> Vec<T> {
    perm.iter().map(|&t| tiles[t].clone()).collect()
}

fn factorial(n: usize) -> Option<usize> {
    (1..=n).try_fold(1usize, |acc, k| acc.checked_mul(k))
}

/// Every permutation of `0..n` in lexicographic order.
fn all_permutations(n: usize) -> Vec<Vec<u8>> {
    let mut p: Vec<u8> = (0..n as u8).collect();
    let mut out = vec![p.clone()];
    loop {
        // Next lexicographic permutation.
        let Some(i) = (1..n).rev().find(|&i| p[i - 1] < p[i]) else {
            return out;
        };
        let j = (i..n).rev().find(|&j| p[j] > p[i - 1]).unwrap_or(i);
        p.swap(i - 1, j);
        p[i..].reverse();
        out.push(p.clone());
    }
}

/// The greedy maximal-Hamming-distance set of `count` permutations of `0..tiles` (see the
/// module docs), from `seed`.
pub fn max_hamming_set(tiles: usize, count: usize, seed: u64) -> Result<PermutationSet> {
    if !(2..=255).contains(&tiles) {
        return config(format!("jigsaw: {tiles} tiles; needs between 2 and 255"));
    }
    let total = factorial(tiles);
    let limit = total.unwrap_or(usize::MAX).min(MAX_PERMUTATIONS);
    if count < 2 || count > limit {
        return config(format!(
            "permutations = {count} must be between 2 and {limit} for {tiles} tiles"
        ));
    }
    let mut rng = Philox::new(seed, tiles as u64);
    let cands: Vec<Vec<u8>> = if tiles <= 9 {
        all_permutations(tiles)
    } else {
        let mut seen = std::collections::HashSet::new();
        let mut v = Vec::with_capacity(CANDIDATE_POOL);
        while v.len() < CANDIDATE_POOL.max(count) {
            let p: Vec<u8> = rng
                .permutation(tiles)
                .into_iter()
                .map(|t| t as u8)
                .collect();
            if seen.insert(p.clone()) {
                v.push(p);
            }
        }
        v
    };
    let dist = |a: &[u8], b: &[u8]| a.iter().zip(b).filter(|(x, y)| x != y).count();
    let mut min_d = vec![usize::MAX; cands.len()];
    let mut sum_d = vec![0usize; cands.len()];
    let mut chosen = Vec::with_capacity(count);
    let mut next = rng.below(cands.len() as u64) as usize;
    let mut min_hamming = usize::MAX;
    loop {
        chosen.push(next);
        if chosen.len() > 1 {
            min_hamming = min_hamming.min(min_d[next]);
        }
        if chosen.len() == count {
            break;
        }
        let c = &cands[next];
        for (k, cand) in cands.iter().enumerate() {
            let d = dist(c, cand);
            min_d[k] = min_d[k].min(d);
            sum_d[k] += d;
        }
        // min_d is 0 for every chosen permutation, so they are never picked again.
        next = (0..cands.len())
            .max_by(|&a, &b| {
                (min_d[a], sum_d[a])
                    .cmp(&(min_d[b], sum_d[b]))
                    .then(b.cmp(&a))
            })
            .unwrap_or(0);
    }
    Ok(PermutationSet {
        perms: chosen
            .iter()
            .map(|&i| cands[i].iter().map(|&t| t as usize).collect())
            .collect(),
        min_hamming,
    })
}
