//! The classic pretext tasks: rotation by hand-written matrices, grid patches of a hand-built
//! image, the jigsaw permutation set against brute force, YCbCr against hand-computed colours,
//! gradient checks of the differentiable helpers, colorization learning on synthetic colour
//! images, and three trainer steps of every method with a tiny backbone.

use selfsup_ssl::methods::{sample_pairs, sample_puzzles, upsample_nearest};
use selfsup_ssl::pretext::accuracy;
use selfsup_ssl::pretext::color::{luma_chroma, rgb_to_ycbcr, ycbcr_to_rgb};
use selfsup_ssl::pretext::patches::{cut_patches, GridGeometry, PatchAt, NEIGHBOURS};
use selfsup_ssl::pretext::permutations::{
    apply, hamming, inverse, max_hamming_set, PERMUTATION_SEED,
};
use selfsup_ssl::pretext::rotate::{rot90, rotate_all};
use selfsup_ssl::{
    build, MethodConfig, MethodName, OptimConfig, ScheduleKind, SslBatch, SslError, Trainer,
};
use selfsup_tensor::gradcheck::check_grad;
use selfsup_tensor::rng::Philox;
use selfsup_tensor::{DType, Generator, Tensor};

/// An ssl result as a tensor result (for `check_grad` closures).
fn t<T>(r: selfsup_ssl::Result<T>) -> selfsup_tensor::Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(SslError::Tensor(e)) => Err(e),
        Err(e) => panic!("{e}"),
    }
}

fn vals(x: &Tensor) -> Vec<f64> {
    x.to_vec_f64().unwrap()
}

#[test]
fn rot90_of_a_known_matrix() {
    let x = Tensor::from_vec((1..=9).map(f64::from).collect::<Vec<_>>(), &[1, 1, 3, 3]).unwrap();
    // Counter-clockwise, like numpy.rot90.
    assert_eq!(
        vals(&rot90(&x, 1).unwrap()),
        vec![3.0, 6.0, 9.0, 2.0, 5.0, 8.0, 1.0, 4.0, 7.0]
    );
    assert_eq!(
        vals(&rot90(&x, 2).unwrap()),
        vec![9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    );
    assert_eq!(
        vals(&rot90(&x, 3).unwrap()),
        vec![7.0, 4.0, 1.0, 8.0, 5.0, 2.0, 9.0, 6.0, 3.0]
    );
    assert_eq!(vals(&rot90(&x, 0).unwrap()), vals(&x));
    let rect = Tensor::zeros(&[1, 1, 2, 3], DType::F32);
    assert!(rot90(&rect, 1).unwrap_err().to_string().contains("square"));
}

#[test]
fn four_quarter_turns_give_the_image_back() {
    let x = Tensor::randn(&[2, 3, 5, 5], 0.0, 1.0, DType::F32, &mut Generator::new(1)).unwrap();
    let mut y = x.clone();
    for k in 1..=4 {
        y = rot90(&y, 1).unwrap();
        assert_eq!(vals(&y), vals(&rot90(&x, k).unwrap()), "k = {k}");
        if k < 4 {
            assert_ne!(vals(&y), vals(&x));
        }
    }
    assert_eq!(vals(&y), vals(&x));
    let (all, labels) = rotate_all(&x).unwrap();
    assert_eq!(all.shape(), &[8, 3, 5, 5]);
    assert_eq!(labels, vec![0, 0, 1, 1, 2, 2, 3, 3]);
    assert_eq!(
        vals(&all.narrow(0, 4, 2).unwrap()),
        vals(&rot90(&x, 2).unwrap())
    );
}

#[test]
fn grad_rot90_and_colour_conversion() {
    let x = Tensor::randn(&[2, 3, 4, 4], 0.0, 1.0, DType::F64, &mut Generator::new(2)).unwrap();
    for k in 1..4 {
        let r = check_grad(|xs| t(rot90(&xs[0], k)), std::slice::from_ref(&x)).unwrap();
        assert!(r.max_error < 1e-6, "rot90 k={k}: {r:?}");
    }
    let r = check_grad(|xs| t(rgb_to_ycbcr(&xs[0])), std::slice::from_ref(&x)).unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
    let r = check_grad(|xs| t(ycbcr_to_rgb(&xs[0])), std::slice::from_ref(&x)).unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
    let f = Tensor::randn(&[2, 3, 2, 3], 0.0, 1.0, DType::F64, &mut Generator::new(3)).unwrap();
    let r = check_grad(|xs| t(upsample_nearest(&xs[0], 7, 8)), &[f]).unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
}

#[test]
fn upsample_nearest_repeats_cells_and_crops() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[1, 1, 2, 2]).unwrap();
    let up = upsample_nearest(&x, 3, 4).unwrap();
    assert_eq!(up.shape(), &[1, 1, 3, 4]);
    assert_eq!(
        vals(&up),
        vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    );
}

#[test]
fn grid_geometry_by_hand() {
    // 28 / 3 = 9-pixel cells from 0, patches of 9 - 2 = 7 inset by 1.
    let g = GridGeometry::new(28, 3, 2, 1).unwrap();
    assert_eq!((g.cell, g.patch, g.origin), (9, 7, 0));
    assert_eq!(g.nominal(0, 0), (1, 1));
    assert_eq!(g.nominal(1, 1), (10, 10));
    assert_eq!(g.nominal(2, 0), (19, 1));
    // Gap 1: patches of 8 at 0, 9, 18 (inset 0).
    let g = GridGeometry::new(28, 3, 1, 1).unwrap();
    assert_eq!(g.patch, 8);
    assert_eq!(g.nominal(2, 1), (18, 9));
    // 29 pixels: one pixel of border, split (29 - 27) / 2 = 1 on the top/left.
    let g = GridGeometry::new(29, 3, 2, 0).unwrap();
    assert_eq!(g.nominal(0, 2), (2, 20));
    let e = GridGeometry::new(12, 3, 2, 1).unwrap_err().to_string();
    assert!(e.contains("at least 4 pixels"), "{e}");
}

/// A 2-channel image whose pixel (c, y, x) holds `1000 c + 100 y + x`.
fn coordinate_image(b: usize, side: usize) -> Tensor {
    let mut v = Vec::new();
    for i in 0..b {
        for c in 0..2 {
            for y in 0..side {
                for x in 0..side {
                    v.push((10000 * i + 1000 * c + 100 * y + x) as f32);
                }
            }
        }
    }
    Tensor::from_vec(v, &[b, 2, side, side]).unwrap()
}

#[test]
fn cut_patches_take_the_expected_pixels() {
    let img = coordinate_image(2, 28);
    let at = [
        PatchAt {
            image: 0,
            y: 10,
            x: 10,
        },
        PatchAt {
            image: 1,
            y: 19,
            x: 1,
        },
    ];
    let p = cut_patches(&img, &at, 7).unwrap();
    assert_eq!(p.shape(), &[2, 2, 7, 7]);
    assert_eq!(p.dtype(), DType::F32);
    let v = vals(&p);
    for (n, a) in at.iter().enumerate() {
        for c in 0..2 {
            for y in 0..7 {
                for x in 0..7 {
                    let want = 10000 * a.image + 1000 * c + 100 * (a.y + y) + a.x + x;
                    assert_eq!(v[((n * 2 + c) * 7 + y) * 7 + x], want as f64);
                }
            }
        }
    }
    let bad = [PatchAt {
        image: 0,
        y: 22,
        x: 0,
    }];
    assert!(cut_patches(&img, &bad, 7).is_err());
    assert!(cut_patches(
        &img,
        &[PatchAt {
            image: 2,
            y: 0,
            x: 0
        }],
        7
    )
    .is_err());
}

#[test]
fn jitter_is_bounded_and_used() {
    let g = GridGeometry::new(28, 3, 2, 2).unwrap();
    let mut rng = Philox::new(7, 0);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        for (r, c) in [(0, 0), (1, 1), (2, 2)] {
            let (ny, nx) = g.nominal(r, c);
            let (y, x) = g.jittered(r, c, &mut rng);
            assert!(y + g.patch <= 28 && x + g.patch <= 28);
            let (dy, dx) = (y as i64 - ny as i64, x as i64 - nx as i64);
            assert!(dy.abs() <= 2 && dx.abs() <= 2, "{dy} {dx}");
            if r == 1 {
                seen.insert(dy);
            }
        }
    }
    // Every shift in [-2, 2] occurs in the interior cell (no clamping there).
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![-2, -1, 0, 1, 2]);
}

#[test]
fn relative_position_pairs_are_centre_and_labelled_neighbour() {
    let geo = GridGeometry::new(28, 3, 1, 0).unwrap();
    let (centres, others, labels) = sample_pairs(&geo, 64, &mut Generator::new(5));
    let mut counts = [0; 8];
    for ((c, o), &l) in centres.iter().zip(&others).zip(&labels) {
        assert_eq!((c.y, c.x), (9, 9));
        let (dr, dc) = NEIGHBOURS[l];
        assert_eq!(o.y as isize - c.y as isize, 9 * dr);
        assert_eq!(o.x as isize - c.x as isize, 9 * dc);
        assert_eq!(c.image, o.image);
        counts[l] += 1;
    }
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    // With jitter the pairs move, but by at most the jitter.
    let geo = GridGeometry::new(28, 3, 1, 1).unwrap();
    let (centres, _, _) = sample_pairs(&geo, 64, &mut Generator::new(5));
    assert!(centres
        .iter()
        .all(|c| c.y.abs_diff(9) <= 1 && c.x.abs_diff(9) <= 1));
    assert!(centres.iter().any(|c| (c.y, c.x) != (9, 9)));
}

#[test]
fn permutation_set_is_deterministic_distinct_and_far_apart() {
    let a = max_hamming_set(9, 100, PERMUTATION_SEED).unwrap();
    let b = max_hamming_set(9, 100, PERMUTATION_SEED).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.perms.len(), 100);
    let mut brute = usize::MAX;
    for (i, p) in a.perms.iter().enumerate() {
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..9).collect::<Vec<_>>());
        for q in &a.perms[..i] {
            assert_ne!(p, q);
            brute = brute.min(hamming(p, q));
        }
    }
    assert_eq!(a.min_hamming, brute);
    // Far apart: with 9! candidates the greedy set keeps at least 6 of 9 tiles moved.
    assert!(a.min_hamming >= 6, "{}", a.min_hamming);
    assert_ne!(max_hamming_set(9, 100, 1).unwrap().perms, a.perms);
    // By hand: the second pick is a derangement of the first; all 6 of 3 tiles are distance 2+.
    assert_eq!(max_hamming_set(4, 2, 0).unwrap().min_hamming, 4);
    let all = max_hamming_set(3, 6, 0).unwrap();
    assert_eq!(all.min_hamming, 2);
    assert!(max_hamming_set(3, 7, 0).is_err());
    assert!(max_hamming_set(9, 1, 0).is_err());
}

#[test]
fn permutation_then_inverse_restores_tiles() {
    let set = max_hamming_set(9, 20, PERMUTATION_SEED).unwrap();
    let tiles: Vec<char> = "abcdefghi".chars().collect();
    for p in &set.perms {
        let shuffled = apply(&tiles, p);
        assert_ne!(shuffled, tiles);
        assert_eq!(apply(&shuffled, &inverse(p)), tiles);
        assert_eq!(shuffled[0], tiles[p[0]]);
    }
    // Puzzles: slot k of image i is original tile perm[k] of image i (no jitter).
    let geo = GridGeometry::new(28, 3, 1, 0).unwrap();
    let (at, labels) = sample_puzzles(&geo, &set, 5, &mut Generator::new(9));
    assert_eq!(at.len(), 45);
    for (i, &p) in labels.iter().enumerate() {
        for k in 0..9 {
            let tile = set.perms[p][k];
            let a = at[k * 5 + i];
            assert_eq!(a.image, i);
            assert_eq!((a.y, a.x), geo.nominal(tile / 3, tile % 3));
        }
    }
}

#[test]
fn ycbcr_of_pure_colours_and_round_trip() {
    // Pixels: red, green, blue, grey 0.4.
    let rgb = Tensor::from_vec(
        vec![
            1.0f64, 0.0, 0.0, 0.4, // R plane
            0.0, 1.0, 0.0, 0.4, // G plane
            0.0, 0.0, 1.0, 0.4, // B plane
        ],
        &[1, 3, 1, 4],
    )
    .unwrap();
    let y = vals(&rgb_to_ycbcr(&rgb).unwrap());
    let want = [
        [0.299, 0.587, 0.114, 0.4],
        [-0.168736, -0.331264, 0.5, 0.0],
        [0.5, -0.418688, -0.081312, 0.0],
    ];
    for c in 0..3 {
        for p in 0..4 {
            assert!((y[c * 4 + p] - want[c][p]).abs() < 1e-12, "{c} {p}");
        }
    }
    let (luma, chroma) = luma_chroma(&rgb).unwrap();
    assert_eq!(luma.shape(), &[1, 1, 1, 4]);
    assert_eq!(chroma.shape(), &[1, 2, 1, 4]);
    let x = Tensor::rand(&[3, 3, 5, 5], 0.0, 1.0, DType::F64, &mut Generator::new(4)).unwrap();
    let back = vals(&ycbcr_to_rgb(&rgb_to_ycbcr(&x).unwrap()).unwrap());
    for (a, b) in back.iter().zip(vals(&x)) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    assert!(rgb_to_ycbcr(&Tensor::zeros(&[1, 1, 2, 2], DType::F32)).is_err());
}

#[test]
fn accuracy_counts_argmax_hits() {
    let logits = Tensor::from_vec(vec![0.1f32, 0.9, 0.8, 0.2, 0.3, 0.7], &[3, 2]).unwrap();
    assert!((accuracy(&logits, &[1, 0, 0]).unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert!(accuracy(&logits, &[1, 0]).is_err());
}

fn tiny(method: MethodName) -> MethodConfig {
    let mut cfg = MethodConfig::for_method(method);
    cfg.backbone.widths = vec![4, 8, 16];
    cfg.proj_hidden = 32;
    cfg
}

#[test]
fn every_pretext_method_trains_three_steps() {
    let cases = [
        (MethodName::Rotation, 1, "rotation_acc"),
        (MethodName::RelativePosition, 1, "position_acc"),
        (MethodName::Jigsaw, 1, "jigsaw_acc"),
        (MethodName::Colorization, 3, "chroma_mse_of_zero"),
    ];
    for (m, ch, metric) in cases {
        let mut g = Generator::new(0);
        let mut cfg = tiny(m);
        cfg.gap = 1;
        cfg.permutations = 24;
        cfg.backbone.in_channels = ch;
        let method = build(&cfg, &mut g).unwrap();
        assert_eq!(method.name(), m);
        let mut trainer = Trainer::new(method, &OptimConfig::default(), 3, 0).unwrap();
        for _ in 0..3 {
            let x = Tensor::rand(&[6, ch, 28, 28], 0.0, 1.0, DType::F32, &mut g).unwrap();
            let st = trainer.train_step(&SslBatch::from_views(vec![x])).unwrap();
            assert!(st.loss.is_finite(), "{m}: {}", st.loss);
            assert!(
                st.metrics.iter().any(|(k, v)| k == metric && v.is_finite()),
                "{m}"
            );
            let (e, _) = st.embeddings.as_ref().unwrap();
            assert_eq!(e.shape(), &[6, 16], "{m}");
        }
        // Nothing left with a gradient after the step.
        assert!(trainer
            .method
            .params()
            .iter()
            .all(|(_, p)| p.grad().is_none()));
    }
}

#[test]
fn pretext_config_errors_are_clear() {
    let mut cfg = MethodConfig::for_method(MethodName::Colorization);
    cfg.backbone.in_channels = 1;
    let e = build(&cfg, &mut Generator::new(0))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("colorization needs RGB images (in_channels 3)"),
        "{e}"
    );
    cfg.backbone.in_channels = 3;
    cfg.backbone.kind = selfsup_ssl::BackboneKind::Vit;
    assert!(cfg.validate().unwrap_err().to_string().contains("CNN"));

    let mut cfg = MethodConfig::for_method(MethodName::RelativePosition);
    cfg.grid = 4;
    assert!(cfg.validate().unwrap_err().to_string().contains("odd grid"));
    cfg.grid = 5;
    cfg.gap = 2;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("at least 4 pixels"), "{e}");
    cfg.grid = 3;
    assert!(cfg.validate().is_ok());

    let mut cfg = MethodConfig::for_method(MethodName::Jigsaw);
    cfg.grid = 2;
    cfg.permutations = 25;
    assert!(cfg
        .validate()
        .unwrap_err()
        .to_string()
        .contains("between 2 and 24"));
    cfg.permutations = 24;
    assert!(cfg.validate().is_ok());
}

/// Synthetic colour images on which chroma is a function of the luma pattern: a dark grey
/// background (Y 0.2, no chroma), one bright square (Y 0.8) in red-ish chroma and one mid
/// square (Y 0.5) in blue-ish chroma, at random places and sizes.
fn colour_batch(b: usize, side: usize, rng: &mut Philox) -> Tensor {
    let plane = side * side;
    let mut ycc = vec![0.0f32; b * 3 * plane];
    for i in 0..b {
        let base = i * 3 * plane;
        for p in 0..plane {
            ycc[base + p] = 0.2;
        }
        for (luma, cb, cr) in [(0.8f32, -0.1f32, 0.25f32), (0.5, 0.25, -0.1)] {
            let s = 3 + rng.below(4) as usize;
            let y0 = rng.below((side - s) as u64) as usize;
            let x0 = rng.below((side - s) as u64) as usize;
            for y in y0..y0 + s {
                for x in x0..x0 + s {
                    let p = y * side + x;
                    ycc[base + p] = luma;
                    ycc[base + plane + p] = cb;
                    ycc[base + 2 * plane + p] = cr;
                }
            }
        }
    }
    let t = Tensor::from_vec(ycc, &[b, 3, side, side]).unwrap();
    ycbcr_to_rgb(&t).unwrap()
}

#[test]
fn colorization_learns_chroma_of_synthetic_images() {
    let mut g = Generator::new(0);
    let mut cfg = tiny(MethodName::Colorization);
    cfg.backbone.image_size = 16;
    let method = build(&cfg, &mut g).unwrap();
    let optim = OptimConfig {
        lr: 1e-2,
        schedule: ScheduleKind::Constant,
        warmup_steps: 0,
        ..OptimConfig::default()
    };
    let steps = 150;
    let mut trainer = Trainer::new(method, &optim, steps, 0).unwrap();
    let mut rng = Philox::new(11, 0);
    let mut losses = Vec::new();
    let mut mean_baseline = Vec::new();
    for _ in 0..steps {
        let x = colour_batch(16, 16, &mut rng);
        // The best constant prediction: the batch's mean chroma per channel.
        let (_, c) = luma_chroma(&x).unwrap();
        let mean = c.mean(&[0, 2, 3], true).unwrap();
        mean_baseline.push(
            c.sub(&mean)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .item()
                .unwrap(),
        );
        // Each step's loss is on a batch the model has not been trained on yet.
        losses.push(
            trainer
                .train_step(&SslBatch::from_views(vec![x]))
                .unwrap()
                .loss,
        );
    }
    let last: f64 = losses[steps as usize - 10..].iter().sum::<f64>() / 10.0;
    let base: f64 = mean_baseline.iter().sum::<f64>() / mean_baseline.len() as f64;
    eprintln!(
        "chroma mse: first {}, last 10 steps {last}, mean-chroma baseline {base}",
        losses[0]
    );
    assert!(
        last < 0.4 * base,
        "chroma loss {last} not clearly below the mean-chroma baseline {base} (first {})",
        losses[0]
    );
}
