//! Masked modelling: MAE, SimMIM and MLM losses count masked entries only (bit for bit), match
//! straightforward f64 loops and finite differences; MAE's encoder sees only the visible
//! patches; BERT masking keeps its 80/10/10 split.

use selfsup_data::mask::{mae_mask, IGNORE_INDEX};
use selfsup_ssl::loss::{masked_patch_mse, masked_pixel_loss, masked_token_ce, norm_pix_target};
use selfsup_ssl::methods::{patchify, Mae, Mlm, Simmim, MASK_ID, PAD_ID};
use selfsup_ssl::{BackboneConfig, BackboneKind, MethodConfig, MethodName};
use selfsup_tensor::gradcheck::check_grad;
use selfsup_tensor::rng::Philox;
use selfsup_tensor::{DType, Generator, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F64, &mut Generator::new(seed)).unwrap()
}

/// Replaces element `i` of a flat copy of `t` by `v`.
fn with(t: &Tensor, i: usize, v: f64) -> Tensor {
    let mut d = t.to_vec::<f64>().unwrap();
    d[i] = v;
    Tensor::from_vec(d, t.shape()).unwrap()
}

fn bits(t: &Tensor) -> u64 {
    t.item().unwrap().to_bits()
}

#[test]
fn masked_patch_mse_ignores_visible_patches_and_matches_a_loop() {
    let (b, n, p) = (2, 5, 3);
    let pred = randn(&[b, n, p], 1);
    let target = randn(&[b, n, p], 2);
    let mv = vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0];
    let mask = Tensor::from_vec(mv.clone(), &[b, n]).unwrap();
    let loss = masked_patch_mse(&pred, &target, &mask).unwrap();
    // Straightforward loop.
    let (pv, tv) = (
        pred.to_vec::<f64>().unwrap(),
        target.to_vec::<f64>().unwrap(),
    );
    let (mut acc, mut cnt) = (0.0, 0.0);
    for bn in 0..b * n {
        if mv[bn] == 1.0 {
            let e: f64 = (0..p)
                .map(|k| (pv[bn * p + k] - tv[bn * p + k]).powi(2))
                .sum();
            acc += e / p as f64;
            cnt += 1.0;
        }
    }
    assert!((loss.item().unwrap() - acc / cnt).abs() < 1e-12);
    // Visible patch (b 0, n 1) and (b 1, n 4): the loss keeps every bit.
    for &(bn, k) in &[(1usize, 0usize), (9, 2)] {
        let t2 = with(&target, bn * p + k, 1e3);
        assert_eq!(
            bits(&masked_patch_mse(&pred, &t2, &mask).unwrap()),
            bits(&loss)
        );
        let p2 = with(&pred, bn * p + k, -7.0);
        assert_eq!(
            bits(&masked_patch_mse(&p2, &target, &mask).unwrap()),
            bits(&loss)
        );
    }
    // A masked patch: it changes.
    let t2 = with(&target, 2 * p + 1, 3.0);
    assert_ne!(
        bits(&masked_patch_mse(&pred, &t2, &mask).unwrap()),
        bits(&loss)
    );
    // No masked patch: an error, not 0/0.
    assert!(masked_patch_mse(&pred, &target, &Tensor::zeros(&[b, n], DType::F64)).is_err());
    assert!(masked_patch_mse(&pred, &target, &Tensor::zeros(&[b, n + 1], DType::F64)).is_err());
}

#[test]
fn norm_pix_target_matches_hand_computation() {
    let x = randn(&[2, 3, 4], 5);
    let got = norm_pix_target(&x).unwrap().to_vec::<f64>().unwrap();
    let v = x.to_vec::<f64>().unwrap();
    for r in 0..6 {
        let row = &v[r * 4..r * 4 + 4];
        let mean = row.iter().sum::<f64>() / 4.0;
        let var = row.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 3.0;
        for k in 0..4 {
            let want = (row[k] - mean) / (var + 1e-6).sqrt();
            assert!((got[r * 4 + k] - want).abs() < 1e-12, "{r} {k}");
        }
    }
    // By hand: [1, 2, 3] has mean 2, unbiased variance 1.
    let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[1, 3]).unwrap();
    let n = norm_pix_target(&t).unwrap().to_vec::<f64>().unwrap();
    let s = (1.0f64 + 1e-6).sqrt();
    assert!((n[0] + 1.0 / s).abs() < 1e-12 && n[1].abs() < 1e-12 && (n[2] - 1.0 / s).abs() < 1e-12);
}

#[test]
fn grad_masked_losses() {
    let mask = Tensor::from_vec(vec![1.0f64, 0.0, 1.0, 1.0, 0.0, 1.0], &[2, 3]).unwrap();
    let r = check_grad(
        |xs| masked_patch_mse(&xs[0], &xs[1], &mask),
        &[randn(&[2, 3, 4], 7), randn(&[2, 3, 4], 8)],
    )
    .unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
    // Through the normalised target too (gradient to pred only; the target is detached).
    let target = randn(&[2, 3, 4], 9);
    let r = check_grad(
        |xs| masked_patch_mse(&xs[0], &norm_pix_target(&target)?, &mask),
        &[randn(&[2, 3, 4], 10)],
    )
    .unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
    let pm = Tensor::from_vec(
        vec![1.0f64, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0],
        &[2, 1, 2, 2],
    )
    .unwrap();
    for l1 in [true, false] {
        let r = check_grad(
            |xs| masked_pixel_loss(&xs[0], &xs[1], &pm, l1),
            &[randn(&[2, 3, 2, 2], 11), randn(&[2, 3, 2, 2], 12)],
        )
        .unwrap();
        assert!(r.max_error < 1e-6, "l1 {l1}: {r:?}");
    }
    let targets =
        Tensor::from_vec(vec![2i64, IGNORE_INDEX, 0, 4, IGNORE_INDEX, 1], &[2, 3]).unwrap();
    let r = check_grad(
        |xs| masked_token_ce(&xs[0], &targets),
        &[randn(&[2, 3, 5], 13)],
    )
    .unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
}

#[test]
fn masked_pixel_loss_ignores_unmasked_pixels() {
    let pred = randn(&[2, 2, 4, 4], 20);
    let target = randn(&[2, 2, 4, 4], 21);
    let mut mv = vec![0.0f64; 2 * 16];
    for i in [0usize, 1, 4, 5, 18, 19, 22, 23, 30] {
        mv[i] = 1.0;
    }
    let mask = Tensor::from_vec(mv.clone(), &[2, 1, 4, 4]).unwrap();
    let loss = masked_pixel_loss(&pred, &target, &mask, true).unwrap();
    let (pv, tv) = (
        pred.to_vec::<f64>().unwrap(),
        target.to_vec::<f64>().unwrap(),
    );
    let (mut acc, mut cnt) = (0.0, 0.0);
    for b in 0..2 {
        for c in 0..2 {
            for p in 0..16 {
                if mv[b * 16 + p] == 1.0 {
                    let i = (b * 2 + c) * 16 + p;
                    acc += (pv[i] - tv[i]).abs();
                    cnt += 1.0;
                }
            }
        }
    }
    assert!((loss.item().unwrap() - acc / cnt).abs() < 1e-12);
    for b in 0..2 {
        for c in 0..2 {
            for p in 0..16 {
                let i = (b * 2 + c) * 16 + p;
                let changed =
                    masked_pixel_loss(&pred, &with(&target, i, 50.0), &mask, true).unwrap();
                if mv[b * 16 + p] == 1.0 {
                    assert_ne!(bits(&changed), bits(&loss), "masked pixel {i}");
                } else {
                    assert_eq!(bits(&changed), bits(&loss), "unmasked pixel {i}");
                }
            }
        }
    }
}

#[test]
fn masked_token_ce_ignores_unmasked_positions_and_matches_a_loop() {
    let (b, t, v) = (2, 4, 6);
    let logits = randn(&[b, t, v], 30);
    let tg = vec![
        3i64,
        IGNORE_INDEX,
        IGNORE_INDEX,
        0,
        IGNORE_INDEX,
        5,
        2,
        IGNORE_INDEX,
    ];
    let targets = Tensor::from_vec(tg.clone(), &[b, t]).unwrap();
    let loss = masked_token_ce(&logits, &targets).unwrap();
    let lv = logits.to_vec::<f64>().unwrap();
    let (mut acc, mut cnt) = (0.0, 0.0);
    for (r, &y) in tg.iter().enumerate() {
        if y != IGNORE_INDEX {
            let row = &lv[r * v..(r + 1) * v];
            let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
            acc += lse - row[y as usize];
            cnt += 1.0;
        }
    }
    assert!((loss.item().unwrap() - acc / cnt).abs() < 1e-12);
    for (r, &y) in tg.iter().enumerate() {
        for c in 0..v {
            let changed = masked_token_ce(&with(&logits, r * v + c, 9.0), &targets).unwrap();
            if y == IGNORE_INDEX {
                assert_eq!(bits(&changed), bits(&loss), "position {r}");
            } else {
                assert_ne!(bits(&changed), bits(&loss), "position {r}");
            }
        }
    }
    // Changing the target at a selected position changes the loss.
    let mut tg2 = tg.clone();
    tg2[0] = 4;
    let l2 = masked_token_ce(&logits, &Tensor::from_vec(tg2, &[b, t]).unwrap()).unwrap();
    assert_ne!(bits(&l2), bits(&loss));
    let none = Tensor::full(IGNORE_INDEX as f64, &[b, t], DType::I64);
    assert!(masked_token_ce(&logits, &none).is_err());
}

fn tiny_vit_mae(norm_pix: bool) -> MethodConfig {
    let mut cfg = MethodConfig::for_method(MethodName::Mae);
    cfg.backbone = BackboneConfig {
        kind: BackboneKind::Vit,
        in_channels: 2,
        image_size: 8,
        patch: 2,
        dim: 8,
        depth: 1,
        heads: 2,
        ..BackboneConfig::default()
    };
    cfg.decoder_dim = 8;
    cfg.decoder_depth = 1;
    cfg.norm_pix_loss = norm_pix;
    cfg
}

#[test]
fn patchify_matches_index_arithmetic() {
    let x = randn(&[2, 3, 4, 6], 40);
    let p = patchify(&x, 2).unwrap();
    assert_eq!(p.shape(), &[2, 6, 12]);
    let (xv, pv) = (x.to_vec::<f64>().unwrap(), p.to_vec::<f64>().unwrap());
    for b in 0..2 {
        for gy in 0..2 {
            for gx in 0..3 {
                for dy in 0..2 {
                    for dx in 0..2 {
                        for c in 0..3 {
                            let src = ((b * 3 + c) * 4 + gy * 2 + dy) * 6 + gx * 2 + dx;
                            let dst = (b * 6 + gy * 3 + gx) * 12 + (dy * 2 + dx) * 3 + c;
                            assert_eq!(xv[src], pv[dst]);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn mae_encoder_sees_only_visible_patches() {
    let cfg = tiny_vit_mae(true);
    let mut g = Generator::new(0);
    let mae = Mae::new(&cfg, &mut g).unwrap();
    let x = Tensor::randn(&[3, 2, 8, 8], 0.0, 1.0, DType::F32, &mut g).unwrap();
    let m = mae_mask(3, 16, 0.75, 7, 0).unwrap();
    let out = mae.forward_with_mask(&x, &m).unwrap();
    assert_eq!(m.keep, 4);
    assert_eq!(out.latent.shape(), &[3, 4, 8]);
    assert_eq!(out.pred.shape(), &[3, 16, 8]);
    // Targets are the normalised patches.
    let want = norm_pix_target(&patchify(&x, 2).unwrap()).unwrap();
    assert_eq!(
        out.target.to_vec::<f32>().unwrap(),
        want.to_vec::<f32>().unwrap()
    );
    let latent = out.latent.to_vec::<f32>().unwrap();
    let masked = (0..16).find(|&p| m.mask[p] == 1.0).unwrap();
    let visible = (0..16).find(|&p| m.mask[p] == 0.0).unwrap();
    let pixel = |patch: usize| (patch / 4) * 2 * 8 + (patch % 4) * 2; // channel 0, top-left
    let bump = |i: usize| {
        let mut d = x.to_vec::<f32>().unwrap();
        d[i] += 5.0;
        Tensor::from_vec(d, x.shape()).unwrap()
    };
    // A masked patch of image 0 changes: the encoder output keeps every bit.
    let o2 = mae.forward_with_mask(&bump(pixel(masked)), &m).unwrap();
    assert_eq!(o2.latent.to_vec::<f32>().unwrap(), latent);
    // ... but the loss (its target) changes.
    assert_ne!(o2.loss.item().unwrap(), out.loss.item().unwrap());
    // A visible patch changes: the encoder output changes.
    let o3 = mae.forward_with_mask(&bump(pixel(visible)), &m).unwrap();
    assert_ne!(o3.latent.to_vec::<f32>().unwrap(), latent);
    // Without norm_pix the targets are raw pixels.
    let raw = Mae::new(&tiny_vit_mae(false), &mut g).unwrap();
    let o4 = raw.forward_with_mask(&x, &m).unwrap();
    assert_eq!(
        o4.target.to_vec::<f32>().unwrap(),
        patchify(&x, 2).unwrap().to_vec::<f32>().unwrap()
    );
}

#[test]
fn simmim_masks_inputs_with_the_mask_value_and_scores_masked_pixels() {
    let mut cfg = MethodConfig::for_method(MethodName::Simmim);
    cfg.backbone.widths = vec![4, 4, 8];
    cfg.backbone.image_size = 8;
    cfg.backbone.patch = 2;
    let mut g = Generator::new(1);
    let s = Simmim::new(&cfg, &mut g).unwrap();
    let x = Tensor::randn(&[2, 1, 8, 8], 0.5, 1.0, DType::F32, &mut g).unwrap();
    let mask = s.draw_mask(2, &mut g).unwrap();
    let mv = mask.to_vec::<f32>().unwrap();
    // ceil(0.6 * 16) = 10 squares of 2x2 pixels per image, whole squares.
    for b in 0..2 {
        let img = &mv[b * 64..(b + 1) * 64];
        assert_eq!(img.iter().filter(|&&v| v == 1.0).count(), 40);
        for y in 0..8 {
            for xx in 0..8 {
                assert_eq!(img[y * 8 + xx], img[(y / 2 * 2) * 8 + xx / 2 * 2]);
            }
        }
    }
    let out = s.forward_with_mask(&x, &mask).unwrap();
    assert_eq!(out.pred.shape(), x.shape());
    let (iv, xv) = (
        out.input.to_vec::<f32>().unwrap(),
        x.to_vec::<f32>().unwrap(),
    );
    for i in 0..128 {
        if mv[i] == 1.0 {
            assert_eq!(
                iv[i], 0.0,
                "masked pixels take the (zero-initialised) mask value"
            );
        } else {
            assert_eq!(iv[i], xv[i]);
        }
    }
    // The loss is the L1 over masked pixels of this prediction.
    let want = masked_pixel_loss(&out.pred, &x, &mask, true).unwrap();
    assert_eq!(
        bits(&out.loss.to_dtype(DType::F64).unwrap()),
        bits(&want.to_dtype(DType::F64).unwrap())
    );
}

fn tiny_mlm(vocab: usize) -> Mlm {
    let mut cfg = MethodConfig::for_method(MethodName::Mlm);
    cfg.backbone = BackboneConfig {
        vocab,
        context: 8,
        dim: 8,
        depth: 1,
        heads: 2,
        ..BackboneConfig::text(vocab, 8)
    };
    Mlm::new(&cfg, &mut Generator::new(2)).unwrap()
}

#[test]
#[allow(clippy::needless_range_loop)]
fn mlm_masking_is_80_10_10_and_skips_padding() {
    let vocab = 40;
    let mlm = tiny_mlm(vocab);
    let n = 200_000;
    let ids: Vec<i64> = (0..n)
        .map(|i| {
            if i % 20 == 0 {
                PAD_ID
            } else {
                2 + (i * 13 % 38) as i64
            }
        })
        .collect();
    let m = mlm.mask_tokens(&ids, &mut Philox::new(3, 0));
    let (mut sel, mut masked, mut random, mut same) = (0usize, 0usize, 0usize, 0usize);
    for i in 0..n {
        if ids[i] == PAD_ID {
            assert_eq!((m.inputs[i], m.targets[i]), (PAD_ID, IGNORE_INDEX));
            continue;
        }
        if m.targets[i] == IGNORE_INDEX {
            assert_eq!(m.inputs[i], ids[i]);
            continue;
        }
        sel += 1;
        assert_eq!(m.targets[i], ids[i]);
        if m.inputs[i] == MASK_ID {
            masked += 1;
        } else if m.inputs[i] == ids[i] {
            same += 1;
        } else {
            random += 1;
            assert!(m.inputs[i] >= 2 && m.inputs[i] < vocab as i64);
        }
    }
    let eligible = (n - n / 20) as f64;
    let s = sel as f64;
    assert!((s / eligible - 0.15).abs() < 0.005, "{sel}");
    assert!((masked as f64 / s - 0.8).abs() < 0.01, "{masked}");
    // A random replacement hits the original token 1 time in 38, counting as unchanged.
    let p_hit = 0.1 / 38.0;
    assert!((random as f64 / s - (0.1 - p_hit)).abs() < 0.01, "{random}");
    assert!((same as f64 / s - (0.1 + p_hit)).abs() < 0.01, "{same}");
    // A tiny draw that selected nothing still gets one masked position.
    let mut forced = 0;
    for seed in 0..200 {
        let m = mlm.mask_tokens(&[5, 6], &mut Philox::new(seed, 1));
        let k = m.targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
        assert!(k >= 1);
        forced += usize::from(k == 1);
    }
    assert!(forced > 100);
}

#[test]
fn mlm_loss_and_accuracy_count_selected_positions_only() {
    let mlm = tiny_mlm(12);
    let inputs = Tensor::from_vec(vec![2i64, MASK_ID, 4, 5, 6, 7, MASK_ID, 9], &[1, 8]).unwrap();
    let targets = Tensor::from_vec(
        vec![
            IGNORE_INDEX,
            3,
            IGNORE_INDEX,
            IGNORE_INDEX,
            IGNORE_INDEX,
            IGNORE_INDEX,
            8,
            IGNORE_INDEX,
        ],
        &[1, 8],
    )
    .unwrap();
    let out = mlm.forward_masked(&inputs, &targets).unwrap();
    let want = masked_token_ce(&out.logits, &targets).unwrap();
    assert_eq!(out.mlm_loss.item().unwrap(), want.item().unwrap());
    let am = out
        .logits
        .argmax(-1, false)
        .unwrap()
        .to_vec::<i64>()
        .unwrap();
    let acc = (usize::from(am[1] == 3) + usize::from(am[6] == 8)) as f64 / 2.0;
    assert_eq!(out.accuracy.item().unwrap(), acc);
}

#[test]
fn nsp_batches_pad_and_cut_segments() {
    use selfsup_ssl::feed::nsp_batch;
    let pairs = vec![
        (vec![2i64, 3, 4, 5, 6, 7], vec![8i64, 9], true),
        (vec![2i64], vec![3i64, 4, 5, 6, 7, 8, 9], false),
    ];
    let b = nsp_batch(&pairs, 4, 0, 16, 1).unwrap();
    let tokens = b.tokens.as_ref().unwrap();
    let (second, labels) = b.pairs.as_ref().unwrap();
    assert_eq!(tokens.shape(), &[16, 5]);
    assert_eq!(second.shape(), &[16, 4]);
    let (t, s, l) = (
        tokens.to_vec::<i64>().unwrap(),
        second.to_vec::<i64>().unwrap(),
        labels.to_vec::<i64>().unwrap(),
    );
    let mut seen = [false; 2];
    for r in 0..16 {
        let (ft, st) = (&t[r * 5..r * 5 + 5], &s[r * 4..r * 4 + 4]);
        if l[r] == 1 {
            assert_eq!(
                (ft, st),
                (&[2i64, 3, 4, 5, 6][..], &[8i64, 9, PAD_ID, PAD_ID][..])
            );
            seen[0] = true;
        } else {
            assert_eq!(
                (ft, st),
                (
                    &[2i64, PAD_ID, PAD_ID, PAD_ID, PAD_ID][..],
                    &[3i64, 4, 5, 6][..]
                )
            );
            seen[1] = true;
        }
    }
    assert!(seen[0] && seen[1]);
    assert!(nsp_batch(&[], 4, 0, 2, 0).is_err());
}
