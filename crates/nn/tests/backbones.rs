//! Conv2d and the SmallCnn and ResNet backbones: counts, gradients through the layers, learning.

use selfsup_nn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use selfsup_nn::{Conv2d, Linear, Module, SmallCnn};
use selfsup_tensor::gradcheck::check_grad;
use selfsup_tensor::{DType, Generator, Tensor};

#[test]
fn small_cnn_matches_the_reference_counts() {
    let m = SmallCnn::new(1, DType::F32, &mut Generator::new(0)).unwrap();
    // conv 1*32*9 + bn 2*32, conv 32*64*9 + bn 2*64, conv 64*128*9 + bn 2*128.
    assert_eq!(m.num_params(), 288 + 64 + 18_432 + 128 + 73_728 + 256);
    assert_eq!(m.out_dim(), 128);
    // 2 * (32*9*28*28 + 64*288*14*14 + 128*576*7*7) multiply-adds per 28x28 image.
    assert_eq!(m.flops_per_sample(28, 28), 14_902_272);
    let names: Vec<String> = m.params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[0], "blocks.0.conv.weight");
    assert!(m
        .buffers()
        .iter()
        .any(|(n, _)| n == "blocks.2.bn.running_var"));
    let y = m
        .forward(&Tensor::zeros(&[3, 1, 28, 28], DType::F32))
        .unwrap();
    assert_eq!(y.shape(), &[3, 128]);
    let e = m
        .forward(&Tensor::zeros(&[3, 3, 28, 28], DType::F32))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[N, 1, H, W]") && e.contains("[3, 3, 28, 28]"),
        "{e}"
    );
}

#[test]
fn small_cnn_takes_any_number_of_blocks() {
    let mut g = Generator::new(0);
    let m = SmallCnn::with_widths(1, &[4, 8, 16, 32], DType::F32, &mut g).unwrap();
    assert_eq!(m.blocks.len(), 4);
    assert_eq!(m.out_dim(), 32);
    // 28 -> 28 -> 14 -> 7 -> 4 (3x3, pad 1, stride 2 rounds up).
    let x = Tensor::zeros(&[2, 1, 28, 28], DType::F32);
    assert_eq!(m.feature_map(&x).unwrap().shape(), &[2, 32, 4, 4]);
    assert_eq!(m.forward(&x).unwrap().shape(), &[2, 32]);
    // 2 * (4*9*784 + 8*36*196 + 16*72*49 + 32*144*16) multiply-adds.
    assert_eq!(
        m.flops_per_sample(28, 28),
        2 * (28_224 + 56_448 + 56_448 + 73_728)
    );
    let one = SmallCnn::with_widths(1, &[5], DType::F32, &mut g).unwrap();
    assert_eq!(one.forward(&x).unwrap().shape(), &[2, 5]);
    for bad in [&[][..], &[4, 0, 8][..]] {
        let e = SmallCnn::with_widths(1, bad, DType::F32, &mut g)
            .unwrap_err()
            .to_string();
        assert!(e.contains("widths") && e.contains("positive"), "{e}");
    }
}

#[test]
fn grad_through_conv_layer_and_small_cnn() {
    let mut g = Generator::new(1);
    let conv = Conv2d::new(2, 3, 3, 2, 1, true, DType::F64, &mut g).unwrap();
    let x = Tensor::randn(&[2, 2, 5, 5], 0.0, 1.0, DType::F64, &mut g).unwrap();
    let r = check_grad(|xs| Ok(conv.forward(&xs[0]).unwrap()), &[x]).unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
    // The whole encoder in train mode (BatchNorm with batch statistics), narrow widths.
    let net = SmallCnn::with_widths(1, &[2, 3, 4], DType::F64, &mut g).unwrap();
    let x = Tensor::randn(&[3, 1, 6, 6], 0.0, 1.0, DType::F64, &mut g).unwrap();
    let r = check_grad(|xs| Ok(net.forward(&xs[0]).unwrap()), &[x]).unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
    // Gradients reach every parameter.
    net.forward(&Tensor::randn(&[3, 1, 6, 6], 0.0, 1.0, DType::F64, &mut g).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, p) in net.params() {
        assert!(p.grad().is_some(), "{name} got no gradient");
    }
}

/// Horizontal vs vertical stripes at random phases, with noise: 8x8 single-channel images.
fn stripes(n: usize, g: &mut Generator) -> (Tensor, Tensor) {
    let mut p = g.fork();
    let (mut x, mut y) = (Vec::with_capacity(n * 64), Vec::with_capacity(n));
    for _ in 0..n {
        let vertical = p.bernoulli(0.5);
        let phase = p.below(2) as usize;
        for i in 0..8 {
            for j in 0..8 {
                let k = if vertical { j } else { i };
                x.push(
                    if (k + phase) % 2 == 0 { 1.0f32 } else { -1.0 } + 0.3 * p.normal_f64() as f32,
                );
            }
        }
        y.push(vertical as i64);
    }
    (
        Tensor::from_vec(x, &[n, 1, 8, 8]).unwrap(),
        Tensor::from_vec(y, &[n]).unwrap(),
    )
}

fn train(make_opt: impl Fn(Vec<(String, Tensor)>) -> Box<dyn Optimizer>) -> f64 {
    let mut g = Generator::new(5);
    let (x, y) = stripes(128, &mut g);
    let net = SmallCnn::with_widths(1, &[8, 16, 16], DType::F32, &mut g).unwrap();
    let head = Linear::new(16, 2, true, DType::F32, &mut g).unwrap();
    let mut params = net.params();
    params.extend(
        head.params()
            .into_iter()
            .map(|(n, t)| (format!("head.{n}"), t)),
    );
    let mut opt = make_opt(params);
    for _ in 0..60 {
        opt.zero_grad();
        head.forward(&net.forward(&x).unwrap())
            .unwrap()
            .cross_entropy(&y)
            .unwrap()
            .backward()
            .unwrap();
        opt.step().unwrap();
    }
    let pred = head
        .forward(&net.forward(&x).unwrap())
        .unwrap()
        .argmax(-1, false)
        .unwrap()
        .to_vec::<i64>()
        .unwrap();
    let y = y.to_vec::<i64>().unwrap();
    pred.iter().zip(&y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64
}

#[test]
fn small_cnn_learns_stripes_with_sgd() {
    let acc = train(|p| {
        Box::new(Sgd::new(
            p,
            SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                ..Default::default()
            },
        ))
    });
    assert!(acc >= 0.98, "training accuracy {acc}");
}

#[test]
fn small_cnn_learns_stripes_with_adamw() {
    let acc = train(|p| {
        Box::new(Adam::adamw(
            p,
            AdamConfig {
                lr: 3e-3,
                ..AdamConfig::adamw()
            },
        ))
    });
    assert!(acc >= 0.98, "training accuracy {acc}");
}

#[test]
fn resnet18_matches_the_known_parameter_count_and_runs() {
    use selfsup_nn::ResNet;
    let mut g = Generator::new(2);
    let r = ResNet::resnet18(3, DType::F32, &mut g).unwrap();
    // ResNet-18 with a 3x3 stem and no fc, by hand: stem 3*64*9 + 128 = 1,856; stages
    // 147,968 + 525,568 + 2,099,712 + 8,393,728 (convs, BatchNorms, 1x1 projections).
    assert_eq!(r.num_params(), 11_168_832);
    assert_eq!(r.out_dim(), 512);
    let names: Vec<String> = r.params().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"layer2.0.downsample.0.weight".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"layer4.1.bn2.bias".to_string()));
    // About 0.56 G multiply-adds per 32x32 image, i.e. 1.1 GFLOP.
    let f = r.flops_per_sample(32, 32);
    assert!((1.05e9..1.15e9).contains(&(f as f64)), "{f}");
    // A narrow, shallow one runs forward and backward on a small batch.
    let small = ResNet::new(1, [1, 1, 1, 1], 4, DType::F32, &mut g).unwrap();
    let x = Tensor::randn(&[2, 1, 16, 16], 0.0, 1.0, DType::F32, &mut g).unwrap();
    let y = small.forward(&x).unwrap();
    assert_eq!(y.shape(), &[2, 32]);
    y.sum_all().unwrap().backward().unwrap();
    assert!(small.params().iter().all(|(_, p)| p.grad().is_some()));
}

#[test]
fn grad_through_resnet_block() {
    use selfsup_nn::ResNet;
    let mut g = Generator::new(3);
    let net = ResNet::new(1, [1, 1, 1, 1], 2, DType::F64, &mut g).unwrap();
    let x = Tensor::randn(&[3, 1, 8, 8], 0.0, 1.0, DType::F64, &mut g).unwrap();
    let r = check_grad(|xs| Ok(net.forward(&xs[0]).unwrap()), &[x]).unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
}

#[test]
fn text_transformers_count_parameters_and_respect_causality() {
    use selfsup_nn::{TextConfig, TextTransformer};
    let mut g = Generator::new(6);
    let gpt = TextTransformer::new(&TextConfig::reference_gpt(), DType::F32, &mut g).unwrap();
    assert_eq!(gpt.num_params(), 834_304);
    let tied = TextTransformer::new(
        &TextConfig {
            tied: true,
            ..TextConfig::reference_gpt()
        },
        DType::F32,
        &mut g,
    )
    .unwrap();
    assert_eq!(tied.num_params(), 834_304 - 96 * 128);
    // Forward FLOPs per token: 4 blocks x (2 x 12 d^2 + 4 x 128 d) + 2 x d x vocab.
    assert_eq!(
        gpt.flops_per_token(),
        4 * (2 * 12 * 128 * 128 + 4 * 128 * 128) + 2 * 128 * 96
    );

    let small = TextConfig {
        vocab: 11,
        context: 6,
        layers: 2,
        heads: 2,
        dim: 8,
        mlp_ratio: 2,
        causal: true,
        tied: true,
        dropout: 0.0,
        activation: selfsup_nn::Activation::GeluTanh,
    };
    let m = TextTransformer::new(&small, DType::F64, &mut g).unwrap();
    let ids = Tensor::from_vec(vec![1i64, 2, 3, 4, 5, 6, 7, 8, 9, 10], &[2, 5]).unwrap();
    let a = m.forward(&ids).unwrap().to_vec::<f64>().unwrap();
    let ids2 = Tensor::from_vec(vec![1i64, 2, 3, 4, 0, 6, 7, 8, 9, 10], &[2, 5]).unwrap();
    let b = m.forward(&ids2).unwrap().to_vec::<f64>().unwrap();
    // Changing the last token of sequence 0 leaves its first 4 positions' logits bit-identical.
    assert_eq!(a[..4 * 11], b[..4 * 11]);
    assert_ne!(a[4 * 11..5 * 11], b[4 * 11..5 * 11]);
    let bert = TextTransformer::new(
        &TextConfig {
            causal: false,
            ..small
        },
        DType::F64,
        &mut g,
    )
    .unwrap();
    let c = bert.forward(&ids).unwrap().to_vec::<f64>().unwrap();
    let d = bert.forward(&ids2).unwrap().to_vec::<f64>().unwrap();
    assert_ne!(c[..11], d[..11], "a bidirectional encoder sees every token");
    // The tied head gets gradient through both uses of the embedding.
    let loss = m
        .forward(&ids)
        .unwrap()
        .reshape(&[10, 11])
        .unwrap()
        .cross_entropy(&ids.reshape(&[10]).unwrap())
        .unwrap();
    loss.backward().unwrap();
    assert!(m.tok.weight.grad().is_some());
    let e = m
        .forward(&Tensor::zeros(&[1, 7], DType::I64))
        .unwrap_err()
        .to_string();
    assert!(e.contains("T <= 6"), "{e}");
}

#[test]
fn vit_counts_runs_on_patch_subsets_and_backpropagates() {
    use selfsup_nn::{Vit, VitConfig};
    let mut g = Generator::new(8);
    // ViT-Tiny, 32x32 RGB, 4x4 patches, by hand: patch embed 3*192*16 + 192 = 9,408; class
    // token 192; positions 65*192 = 12,480; 12 blocks x 444,864 (LN 768, qkv 111,168, proj
    // 37,056, MLP 148,224 + 147,648); final LN 384.
    let tiny = Vit::new(&VitConfig::tiny(32, 3, 4), DType::F32, &mut g).unwrap();
    assert_eq!(tiny.num_params(), 9_408 + 192 + 12_480 + 12 * 444_864 + 384);
    // 64 patches x 2 x 3*192*16 for the embedding; 65 tokens per block.
    assert_eq!(
        tiny.flops_per_sample(),
        64 * 2 * 3 * 192 * 16 + 12 * (65 * 2 * 12 * 192 * 192 + 4 * 65 * 65 * 192)
    );

    let cfg = VitConfig {
        image: 8,
        channels: 1,
        patch: 4,
        dim: 8,
        depth: 1,
        heads: 2,
        mlp_ratio: 2,
        cls_token: true,
    };
    let vit = Vit::new(&cfg, DType::F64, &mut g).unwrap();
    let x = Tensor::randn(&[2, 1, 8, 8], 0.0, 1.0, DType::F64, &mut g).unwrap();
    assert_eq!(vit.forward(&x).unwrap().shape(), &[2, 8]);
    // Keep patches 0 and 3 of image 0, 1 and 2 of image 1: the encoder sees 1 + 2 tokens.
    let keep = Tensor::from_vec(vec![0i64, 3, 1, 2], &[2, 2]).unwrap();
    let t = vit.forward_tokens(&x, Some(&keep)).unwrap();
    assert_eq!(t.shape(), &[2, 3, 8]);
    // A pixel of a dropped patch (patch 1 of image 0: rows 0-3, cols 4-7) changes nothing.
    let mut v = x.to_vec::<f64>().unwrap();
    v[5] += 10.0;
    let t2 = vit
        .forward_tokens(&Tensor::from_vec(v, &[2, 1, 8, 8]).unwrap(), Some(&keep))
        .unwrap();
    assert_eq!(t.to_vec::<f64>().unwrap(), t2.to_vec::<f64>().unwrap());
    let r = check_grad(
        |xs| Ok(vit.forward_tokens(&xs[0], Some(&keep)).unwrap()),
        &[x],
    )
    .unwrap();
    assert!(r.max_error < 1e-6, "{r:?}");
}
