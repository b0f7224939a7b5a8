//! GPT and CPC: causal attention never sees the future (bit for bit), sampling is greedy at
//! temperature 0 and with top-k 1 and reproducible by seed, CPC's InfoNCE matches an f64 loop
//! and finite differences, and every new method trains for a few steps with a finite loss.

use proptest::prelude::*;
use selfsup_ssl::loss::cpc_info_nce;
use selfsup_ssl::methods::{Cpc, Gpt};
use selfsup_ssl::sample::sample;
use selfsup_ssl::{
    build, BackboneConfig, BackboneKind, MethodConfig, MethodName, OptimConfig, SslBatch, Trainer,
};
use selfsup_tensor::gradcheck::check_grad;
use selfsup_tensor::{DType, Generator, Tensor};

fn tiny_text(method: MethodName, vocab: usize, context: usize) -> MethodConfig {
    let mut cfg = MethodConfig::for_method(method);
    cfg.backbone = BackboneConfig {
        dim: 16,
        depth: 2,
        heads: 2,
        ..BackboneConfig::text(vocab, context)
    };
    cfg
}

fn gpt(seed: u64) -> Gpt {
    Gpt::new(
        &tiny_text(MethodName::Gpt, 11, 8),
        &mut Generator::new(seed),
    )
    .unwrap()
}

#[test]
fn causal_logits_never_see_the_future() {
    let m = gpt(0);
    let text = m.encoder.as_text().unwrap();
    let ids: Vec<i64> = vec![3, 1, 4, 1, 5, 9, 2, 6];
    let base = text
        .forward(&Tensor::from_vec(ids.clone(), &[1, 8]).unwrap())
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let v = 11;
    for t in 0..8 {
        let mut p = ids.clone();
        p[t] = (p[t] + 5) % 11;
        let got = text
            .forward(&Tensor::from_vec(p, &[1, 8]).unwrap())
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        for pos in 0..8 {
            let (a, b) = (&base[pos * v..(pos + 1) * v], &got[pos * v..(pos + 1) * v]);
            if pos < t {
                assert_eq!(a, b, "position {pos} saw token {t}");
            } else {
                assert_ne!(a, b, "position {pos} ignored token {t}");
            }
        }
    }
}

#[test]
fn gpt_loss_is_next_token_cross_entropy() {
    let m = gpt(1);
    let tokens = Tensor::from_vec(
        (0..18).map(|i| (i * 7 % 11) as i64).collect::<Vec<_>>(),
        &[2, 9],
    )
    .unwrap();
    let (loss, logits, _) = m.loss(&tokens).unwrap();
    assert_eq!(logits.shape(), &[2, 8, 11]);
    let lv = logits.to_vec_f64().unwrap();
    let tv = tokens.to_vec::<i64>().unwrap();
    let mut acc = 0.0;
    for b in 0..2 {
        for t in 0..8 {
            let row = &lv[(b * 8 + t) * 11..(b * 8 + t + 1) * 11];
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + row.iter().map(|x| (x - mx).exp()).sum::<f64>().ln();
            acc += lse - row[tv[b * 9 + t + 1] as usize];
        }
    }
    assert!((loss.item().unwrap() - acc / 16.0).abs() < 1e-4);
}

#[test]
fn sampling_greedy_top1_and_seeds() {
    let m = gpt(2);
    let text = m.encoder.as_text().unwrap();
    let prompt = [3i64, 7, 1];
    let greedy = sample(text, &prompt, 12, 0.0, None, &mut Generator::new(0)).unwrap();
    assert_eq!(&greedy[..3], &prompt);
    assert_eq!(greedy.len(), 15);
    // Greedy by hand: argmax of the last position over the last `context` tokens.
    let mut seq = prompt.to_vec();
    for _ in 0..12 {
        let w = &seq[seq.len().saturating_sub(8)..];
        let l = text
            .forward(&Tensor::from_vec(w.to_vec(), &[1, w.len()]).unwrap())
            .unwrap()
            .to_vec_f64()
            .unwrap();
        let last = &l[(w.len() - 1) * 11..];
        let mut best = 0;
        for i in 1..11 {
            if last[i] > last[best] {
                best = i;
            }
        }
        seq.push(best as i64);
    }
    assert_eq!(greedy, seq);
    // top_k = 1 at any temperature is greedy.
    let top1 = sample(text, &prompt, 12, 1.5, Some(1), &mut Generator::new(9)).unwrap();
    assert_eq!(top1, greedy);
    // Same seed, same sample; different seeds differ (a hot temperature over 40 tokens).
    let a = sample(text, &prompt, 40, 3.0, None, &mut Generator::new(5)).unwrap();
    let b = sample(text, &prompt, 40, 3.0, None, &mut Generator::new(5)).unwrap();
    let c = sample(text, &prompt, 40, 3.0, None, &mut Generator::new(6)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // top_k = 2 only ever picks one of the two largest logits.
    let k2 = sample(text, &prompt, 1, 50.0, Some(2), &mut Generator::new(3)).unwrap();
    let l = text
        .forward(&Tensor::from_vec(prompt.to_vec(), &[1, 3]).unwrap())
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let last = &l[2 * 11..];
    let mut order: Vec<usize> = (0..11).collect();
    order.sort_by(|&x, &y| last[y].total_cmp(&last[x]));
    assert!(order[..2].contains(&(k2[3] as usize)));
    assert!(sample(text, &[], 3, 1.0, None, &mut Generator::new(0)).is_err());
    assert!(sample(text, &prompt, 3, -1.0, None, &mut Generator::new(0)).is_err());
    assert!(sample(text, &prompt, 3, 1.0, Some(0), &mut Generator::new(0)).is_err());
    assert!(sample(text, &[11], 3, 1.0, None, &mut Generator::new(0)).is_err());
}

/// CPC's InfoNCE as a plain loop in f64.
fn info_nce_loop(q: &[f64], k: &[f64], n: usize, d: usize, t: f64) -> f64 {
    let unit = |v: &[f64]| {
        let s = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter().map(|x| x / s).collect::<Vec<f64>>()
    };
    let qs: Vec<Vec<f64>> = (0..n).map(|i| unit(&q[i * d..(i + 1) * d])).collect();
    let ks: Vec<Vec<f64>> = (0..n).map(|i| unit(&k[i * d..(i + 1) * d])).collect();
    let mut total = 0.0;
    for i in 0..n {
        let s: Vec<f64> = (0..n)
            .map(|j| qs[i].iter().zip(&ks[j]).map(|(a, b)| a * b).sum::<f64>() / t)
            .collect();
        let denom: f64 = s.iter().map(|x| x.exp()).sum();
        total += -(s[i].exp() / denom).ln();
    }
    total / n as f64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]

    #[test]
    fn cpc_info_nce_matches_loop_and_finite_differences(n in 1usize..6, d in 1usize..5, seed in 0u64..1000, t in prop_oneof![Just(0.1), Just(0.5), Just(1.0)]) {
        let mut g = Generator::new(seed);
        let q = Tensor::randn(&[n, d], 0.0, 1.0, DType::F64, &mut g).unwrap();
        let k = Tensor::randn(&[n, d], 0.0, 1.0, DType::F64, &mut g).unwrap();
        let got = cpc_info_nce(&q, &k, t).unwrap().item().unwrap();
        let want = info_nce_loop(&q.to_vec::<f64>().unwrap(), &k.to_vec::<f64>().unwrap(), n, d, t);
        prop_assert!((got - want).abs() < 1e-9 * (1.0 + want.abs()), "{got} vs {want}");
        let r = check_grad(|xs| cpc_info_nce(&xs[0], &xs[1], t), &[q, k]).unwrap();
        prop_assert!(r.max_error < 1e-6, "{r:?}");
    }
}

#[test]
fn cpc_info_nce_by_hand() {
    // Two orthogonal pairs at t = 1: each row sees its positive at cos 1, the other at cos 0.
    let e = Tensor::from_vec(vec![1.0f64, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
    let want = (1.0 + (-1.0f64).exp()).ln();
    assert!((cpc_info_nce(&e, &e, 1.0).unwrap().item().unwrap() - want).abs() < 1e-12);
    assert!(cpc_info_nce(&e, &Tensor::ones(&[3, 2], DType::F64), 1.0).is_err());
    assert!(cpc_info_nce(&e, &e, 0.0).is_err());
}

fn tiny_cpc() -> MethodConfig {
    let mut cfg = MethodConfig::for_method(MethodName::Cpc);
    cfg.backbone.widths = vec![4, 8, 8];
    cfg.backbone.image_size = 12;
    cfg.grid = 3;
    cfg.cpc_steps = 2;
    cfg
}

#[test]
fn cpc_patches_tile_the_image_half_overlapping() {
    let cpc = Cpc::new(&tiny_cpc(), &mut Generator::new(0)).unwrap();
    let x = Tensor::randn(
        &[2, 1, 12, 12],
        0.0,
        1.0,
        DType::F32,
        &mut Generator::new(1),
    )
    .unwrap();
    let p = cpc.patches(&x).unwrap();
    // stride 12 / 4 = 3, side 6.
    assert_eq!(p.shape(), &[18, 1, 6, 6]);
    let (xv, pv) = (x.to_vec::<f32>().unwrap(), p.to_vec::<f32>().unwrap());
    for b in 0..2 {
        for i in 0..3 {
            for j in 0..3 {
                for y in 0..6 {
                    for xx in 0..6 {
                        let src = b * 144 + (i * 3 + y) * 12 + j * 3 + xx;
                        let dst = ((b * 9 + i * 3 + j) * 6 + y) * 6 + xx;
                        assert_eq!(xv[src], pv[dst]);
                    }
                }
            }
        }
    }
    let mut bad = tiny_cpc();
    bad.cpc_steps = 3;
    assert!(build(&bad, &mut Generator::new(0)).is_err());
    let mut vit = tiny_cpc();
    vit.backbone.kind = BackboneKind::Vit;
    assert!(build(&vit, &mut Generator::new(0)).is_err());
}

#[test]
fn every_new_method_takes_three_finite_steps() {
    let mut g = Generator::new(4);
    let mut mae = MethodConfig::for_method(MethodName::Mae);
    mae.backbone = BackboneConfig {
        kind: BackboneKind::Vit,
        image_size: 8,
        patch: 2,
        dim: 8,
        depth: 1,
        heads: 2,
        ..BackboneConfig::default()
    };
    mae.decoder_dim = 8;
    mae.decoder_depth = 1;
    let mut simmim = MethodConfig::for_method(MethodName::Simmim);
    simmim.backbone.widths = vec![4, 4, 8];
    simmim.backbone.image_size = 8;
    simmim.backbone.patch = 2;
    let images = [(mae, 8usize), (simmim, 8), (tiny_cpc(), 12)];
    for (cfg, size) in images {
        let method = build(&cfg, &mut g).unwrap();
        let mut tr = Trainer::new(method, &OptimConfig::default(), 3, 0).unwrap();
        for _ in 0..3 {
            let x = Tensor::randn(&[4, 1, size, size], 0.0, 1.0, DType::F32, &mut g).unwrap();
            let st = tr.train_step(&SslBatch::from_views(vec![x])).unwrap();
            assert!(st.loss.is_finite(), "{}: {}", cfg.method, st.loss);
            let (e, _) = st.embeddings.as_ref().unwrap();
            assert_eq!(e.shape()[0], 4);
        }
    }
    for method in [MethodName::Mlm, MethodName::Gpt] {
        let cfg = tiny_text(method, 13, 8);
        let mut tr =
            Trainer::new(build(&cfg, &mut g).unwrap(), &OptimConfig::default(), 3, 0).unwrap();
        for s in 0..3u64 {
            let ids: Vec<i64> = (0..4 * 9)
                .map(|i| 2 + ((i as u64 * 5 + s) % 11) as i64)
                .collect();
            let st = tr
                .train_step(&SslBatch::from_tokens(
                    Tensor::from_vec(ids, &[4, 9]).unwrap(),
                ))
                .unwrap();
            assert!(st.loss.is_finite(), "{method}: {}", st.loss);
            assert!(st.embeddings.is_some());
        }
    }
    // MLM with next-sentence prediction reads the pairs.
    let mut cfg = tiny_text(MethodName::Mlm, 13, 8);
    cfg.nsp = true;
    let mut tr = Trainer::new(build(&cfg, &mut g).unwrap(), &OptimConfig::default(), 3, 0).unwrap();
    let first = Tensor::from_vec(
        (0..4 * 9).map(|i| 2 + (i % 11) as i64).collect::<Vec<_>>(),
        &[4, 9],
    )
    .unwrap();
    let second = Tensor::from_vec(
        (0..4 * 8)
            .map(|i| 2 + (i * 3 % 11) as i64)
            .collect::<Vec<_>>(),
        &[4, 8],
    )
    .unwrap();
    let labels = Tensor::from_vec(vec![1i64, 0, 0, 1], &[4]).unwrap();
    let mut batch = SslBatch::from_tokens(first.clone());
    batch.pairs = Some((second, labels));
    let st = tr.train_step(&batch).unwrap();
    assert!(st.loss.is_finite());
    assert!(st.metrics.iter().any(|(k, _)| k == "nsp_acc"));
    assert!(tr.train_step(&SslBatch::from_tokens(first)).is_err());
}

#[test]
fn tied_text_models_start_near_uniform_predictions() {
    // With the token table at N(0, 0.02) the tied head's first logits are small, so the first
    // loss is close to ln(vocab) (an N(0, 1) table gives losses many times larger).
    let vocab = 50;
    let mut cfg = tiny_text(MethodName::Gpt, vocab, 16);
    cfg.backbone.dim = 64;
    let m = Gpt::new(&cfg, &mut Generator::new(3)).unwrap();
    let ids: Vec<i64> = (0..4 * 17).map(|i| (i * 7 % vocab) as i64).collect();
    let (loss, _, _) = m.loss(&Tensor::from_vec(ids, &[4, 17]).unwrap()).unwrap();
    let l = loss.item().unwrap();
    assert!((l - (vocab as f64).ln()).abs() < 0.3, "{l}");
}
