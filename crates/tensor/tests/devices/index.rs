//! Indexing, joining, optimiser steps and random draws on the GPU against the CPU.

use selfsup_tensor::ops::optim::AdamStep;
use selfsup_tensor::{DType, Device, Generator, Tensor};

use crate::{compare, on_each_gpu, rand};

#[test]
fn index_select_embedding_gather_and_their_gradients_match_the_cpu() {
    on_each_gpu("index", |dev| {
        let table = rand(&[11, 6], DType::F64, -1.0, 1.0, 1);
        let ids = Tensor::from_vec(vec![3i64, 0, 10, 3, 3, 7], &[2, 3]).unwrap();
        let gids = Tensor::from_vec(vec![1i64, 0, 4, 4, 2, 0, 3, 3, 1, 0, 0, 2], &[3, 4]).unwrap();
        let cols = Tensor::from_vec(vec![5u32, 0, 5, 2], &[4]).unwrap();
        let x = rand(&[3, 5], DType::F64, -1.0, 1.0, 2);
        type F = fn(&Tensor, &Tensor) -> Tensor;
        let cases: [(&str, &Tensor, &Tensor, F); 3] = [
            ("embedding", &table, &ids, |t, i| t.embedding(i).unwrap()),
            ("index_select axis 1 (u32 ids)", &table, &cols, |t, i| {
                t.index_select(1, i).unwrap()
            }),
            // Indices narrower than x on axis 1.
            ("gather", &x, &gids, |t, i| {
                t.gather(1, &i.narrow(1, 0, 3).unwrap().contiguous().unwrap())
                    .unwrap()
            }),
        ];
        for (name, t, i, f) in cases {
            let run = |d: Device| {
                let leaf = t.to_device(d).unwrap().requires_grad_();
                let y = f(&leaf, &i.to_device(d).unwrap());
                let w = rand(y.shape(), DType::F64, -1.0, 1.0, 5)
                    .to_device(d)
                    .unwrap();
                y.backward_with(Some(&w), false).unwrap();
                (y, leaf.grad().unwrap())
            };
            let ((y, g), (yc, gc)) = (run(dev), run(Device::Cpu));
            compare(&format!("{name} forward"), &y, &yc, 0.0);
            compare(&format!("{name} backward"), &g, &gc, 1e-12);
        }
    });
}

/// The embedding's and `index_select`'s backward (a scatter-add of rows) is deterministic on
/// the GPU and gives the CPU's gradient bit for bit: the ids are sorted on the device (stably)
/// and each row's gradient is summed in the CPU's order. Checked where it matters: ids that
/// repeat hundreds of times, more ids than one sorting tile holds (512), a vocabulary past
/// 8 bits (two sorting passes) and past 16 bits (three), a one-row table (one pass: the key
/// of an out-of-range id, the row count, needs a bit),
/// rows selected along an inner axis (outer > 1), and f32 and f64.
#[test]
fn row_scatter_adds_are_the_cpus_bit_for_bit() {
    on_each_gpu("index_add", |dev| {
        let mut g = Generator::new(9);
        // (rows, ids, width): Zipf-like ids, so a few rows take most of them.
        let cases: [(usize, usize, usize); 5] = [
            (96, 5_000, 3),
            (700, 4_500, 2),
            (70_000, 2_100, 1),
            (1, 300, 4),
            (300, 20, 5),
        ];
        for (dtype, (rows, n, width)) in [DType::F32, DType::F64]
            .into_iter()
            .flat_map(|d| cases.into_iter().map(move |c| (d, c)))
        {
            let u = Tensor::rand(&[n], 0.0, 1.0, DType::F64, &mut g)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            let ids: Vec<i64> = u
                .iter()
                .map(|v| ((rows as f64).powf(*v * v) as i64 - 1).clamp(0, rows as i64 - 1))
                .collect();
            let ids = Tensor::from_vec(ids, &[n]).unwrap();
            let table = Tensor::rand(&[rows, width], -1.0, 1.0, dtype, &mut g).unwrap();
            let seed = Tensor::rand(&[n, width], -1.0, 1.0, dtype, &mut g).unwrap();
            let run = |d: Device, axis1: bool| {
                let leaf = if axis1 {
                    table.t().unwrap().contiguous().unwrap()
                } else {
                    table.clone()
                }
                .to_device(d)
                .unwrap()
                .requires_grad_();
                let i = ids.to_device(d).unwrap();
                let y = if axis1 {
                    leaf.index_select(1, &i).unwrap().t().unwrap()
                } else {
                    leaf.embedding(&i).unwrap()
                };
                y.backward_with(Some(&seed.to_device(d).unwrap()), false)
                    .unwrap();
                leaf.grad().unwrap()
            };
            for axis1 in [false, true] {
                let name = format!(
                    "{dtype:?} {rows} rows, {n} ids, width {width}{}",
                    if axis1 { ", along axis 1" } else { "" }
                );
                compare(&name, &run(dev, axis1), &run(Device::Cpu, axis1), 0.0);
            }
        }
    });
}

/// `gather`'s backward (a scatter-add of elements) is deterministic on the GPU too and gives the
/// CPU's gradient bit for bit: the elements are sorted by id and then by column, and each run
/// is summed in the CPU's order. Ids repeated many times along the axis, more elements than a
/// sorting tile, an axis and a column count past 8 bits (two passes each), index tensors
/// narrower than the input on an inner axis, f32 and f64.
#[test]
fn gather_gradients_are_the_cpus_bit_for_bit() {
    on_each_gpu("scatter_add", |dev| {
        let mut g = Generator::new(12);
        // (outer, dim, inner of x, n, inner of the ids)
        let cases: [(usize, usize, usize, usize, usize); 5] = [
            (3, 5, 4, 700, 4),
            (2, 300, 7, 40, 5),
            (2, 3, 200, 50, 200),
            (1, 3, 300, 40, 300),
            (1, 1, 3, 9, 3),
        ];
        for (dtype, (outer, dim, inner, n, gi)) in [DType::F32, DType::F64]
            .into_iter()
            .flat_map(|d| cases.into_iter().map(move |c| (d, c)))
        {
            let ids: Vec<i64> = Tensor::rand(&[outer * n * gi], 0.0, 1.0, DType::F64, &mut g)
                .unwrap()
                .to_vec_f64()
                .unwrap()
                .iter()
                .map(|u| ((u * u * dim as f64) as i64).min(dim as i64 - 1))
                .collect();
            let ids = Tensor::from_vec(ids, &[outer, n, gi]).unwrap();
            let x = Tensor::rand(&[outer, dim, inner], -1.0, 1.0, dtype, &mut g).unwrap();
            let seed = Tensor::rand(&[outer, n, gi], -1.0, 1.0, dtype, &mut g).unwrap();
            let run = |d: Device| {
                let leaf = x.to_device(d).unwrap().requires_grad_();
                let y = leaf.gather(1, &ids.to_device(d).unwrap()).unwrap();
                y.backward_with(Some(&seed.to_device(d).unwrap()), false)
                    .unwrap();
                leaf.grad().unwrap()
            };
            compare(
                &format!("{dtype:?} gather [{outer}, {dim}, {inner}] by [{outer}, {n}, {gi}]"),
                &run(dev),
                &run(Device::Cpu),
                0.0,
            );
        }
    });
}

/// `index_select` and `embedding` on 16-bit tables (bf16 and f16 weights kept in half
/// precision) move the rows bit for bit.
#[test]
fn index_select_of_half_precision_tables_matches_the_cpu() {
    on_each_gpu("index 16-bit", |dev| {
        let table = rand(&[9, 5], DType::F32, -3.0, 3.0, 8);
        let ids = Tensor::from_vec(vec![8i64, 0, 3, 3], &[2, 2]).unwrap();
        let cols = Tensor::from_vec(vec![4u32, 1, 1], &[3]).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let t = table.to_dtype(dtype).unwrap();
            let td = t.to_device(dev).unwrap();
            let e = td.embedding(&ids.to_device(dev).unwrap()).unwrap();
            assert_eq!(e.dtype(), dtype);
            compare(
                &format!("{dtype:?} embedding"),
                &e,
                &t.embedding(&ids).unwrap(),
                0.0,
            );
            let c = td.index_select(1, &cols.to_device(dev).unwrap()).unwrap();
            compare(
                &format!("{dtype:?} index_select"),
                &c,
                &t.index_select(1, &cols).unwrap(),
                0.0,
            );
        }
    });
}

#[test]
fn ids_on_the_device_are_not_read_back_and_out_of_range_ones_give_nan_rows() {
    on_each_gpu("device ids", |dev| {
        let table = rand(&[5, 3], DType::F32, -1.0, 1.0, 4)
            .to_device(dev)
            .unwrap()
            .requires_grad_();
        let ids = Tensor::from_vec(vec![1i64, 5, -1, 4], &[4])
            .unwrap()
            .to_device(dev)
            .unwrap();
        let y = table.embedding(&ids).unwrap();
        let v = y.to_vec_f64().unwrap();
        assert!(v[..3].iter().all(|x| x.is_finite()), "row 0 is table row 1");
        assert!(v[3..9].iter().all(|x| x.is_nan()), "ids 5 and -1: NaN rows");
        assert!(v[9..].iter().all(|x| x.is_finite()));
        y.sum_all().unwrap().backward().unwrap();
        // Only the valid ids receive gradient; the others are skipped.
        let g = table.grad().unwrap().to_vec_f64().unwrap();
        let want = [0.0, 1.0, 0.0, 0.0, 1.0];
        for (r, w) in want.iter().enumerate() {
            assert!(g[3 * r..3 * r + 3].iter().all(|x| x == w), "row {r}: {g:?}");
        }
        // The same ids on the host are checked there: a clear error.
        let host = Tensor::from_vec(vec![1i64, 5], &[2]).unwrap();
        assert!(table.embedding(&host).is_err());

        // gather with ids on the device: not read back (a host check would make the
        // out-of-range ids an Index error, as below), NaN for an out-of-range id, which
        // receives no gradient. (The emulator's read counter is process-wide, and other tests
        // run beside this one, so it is not asserted here; ssl's device suite counts whole
        // steps under a lock.)
        let x = rand(&[2, 4], DType::F32, -1.0, 1.0, 6)
            .to_device(dev)
            .unwrap()
            .requires_grad_();
        let gids = Tensor::from_vec(vec![3i64, 0, 4, 1, 1, -2], &[2, 3])
            .unwrap()
            .to_device(dev)
            .unwrap();
        let y = x.gather(1, &gids).unwrap();
        y.sum_all().unwrap().backward().unwrap();
        let v = y.to_vec_f64().unwrap();
        let nan: Vec<bool> = v.iter().map(|x| x.is_nan()).collect();
        assert_eq!(nan, [false, false, true, false, false, true], "{v:?}");
        let g = x.grad().unwrap().to_vec_f64().unwrap();
        assert_eq!(g, [1.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.0]);
        // On the host the same ids are an Index error.
        let hx = x.detach().to_device(Device::Cpu).unwrap();
        assert!(hx.gather(1, &gids.to_device(Device::Cpu).unwrap()).is_err());
    });
}

#[test]
fn concat_stack_and_one_hot_work_on_the_gpu() {
    on_each_gpu("concat", |dev| {
        let a = rand(&[2, 3], DType::F32, -1.0, 1.0, 1);
        let b = rand(&[2, 5], DType::F32, -1.0, 1.0, 2);
        let (ga, gb) = (a.to_device(dev).unwrap(), b.to_device(dev).unwrap());
        compare(
            "concat",
            &Tensor::concat(&[&ga, &gb], 1).unwrap(),
            &Tensor::concat(&[&a, &b], 1).unwrap(),
            0.0,
        );
        let s = Tensor::stack(&[&ga, &ga.mul_scalar(2.0).unwrap()], 0).unwrap();
        compare(
            "stack",
            &s,
            &Tensor::stack(&[&a, &a.mul_scalar(2.0).unwrap()], 0).unwrap(),
            0.0,
        );
        let ids = Tensor::from_vec(vec![2i64, 0, 1], &[3]).unwrap();
        let oh = ids.to_device(dev).unwrap().one_hot(4, DType::F32).unwrap();
        assert_eq!(oh.device(), dev);
        compare("one_hot", &oh, &ids.one_hot(4, DType::F32).unwrap(), 0.0);
    });
}

#[test]
fn fused_optimiser_steps_match_the_cpu() {
    on_each_gpu("optimiser steps", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F64 { 1e-14 } else { 1e-6 };
            let p0 = rand(&[1000], dtype, -1.0, 1.0, 1);
            let g = rand(&[1000], dtype, -1.0, 1.0, 2);
            let run = |d: Device| {
                let p = p0.copy().unwrap().to_device(d).unwrap();
                let gd = g.to_device(d).unwrap();
                let (m, v, b) = (
                    p.zeros_like().unwrap(),
                    p.zeros_like().unwrap(),
                    p.zeros_like().unwrap(),
                );
                for step in 1..=3 {
                    let h = AdamStep {
                        lr: 1e-2,
                        beta1: 0.9,
                        beta2: 0.99,
                        eps: 1e-8,
                        weight_decay: 0.1,
                        decoupled: step % 2 == 1,
                        step,
                    };
                    p.adam_step_(&gd, &m, &v, &h).unwrap();
                    p.sgd_step_(&gd, Some(&b), 0.1, 0.9, 0.1, 1e-4, step == 2, step == 1)
                        .unwrap();
                }
                p.sgd_step_(&gd, None, 0.05, 0.0, 0.0, 0.0, false, false)
                    .unwrap();
                (p, m, v, b)
            };
            let (a, c) = (run(dev), run(Device::Cpu));
            compare(&format!("{dtype:?} p"), &a.0, &c.0, tol);
            compare(&format!("{dtype:?} m"), &a.1, &c.1, tol);
            compare(&format!("{dtype:?} v"), &a.2, &c.2, tol);
            compare(&format!("{dtype:?} momentum"), &a.3, &c.3, tol);
        }
    });
}

/// Uniform vectors in [-1, 1) of the given lengths, vector `i` drawn from seed `seed + i`.
fn rand_vectors(sizes: &[usize], dtype: DType, seed: u64) -> Vec<Tensor> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| rand(&[n], dtype, -1.0, 1.0, seed + i as u64))
        .collect()
}

/// Fresh copies of `ts` on `d` (so in-place steps leave the originals as they were).
fn copies_on(ts: &[Tensor], d: Device) -> Vec<Tensor> {
    ts.iter()
        .map(|t| t.copy().unwrap().to_device(d).unwrap())
        .collect()
}

/// The multi-tensor steps (one launch for every parameter): several parameters of different
/// sizes, one longer than a table chunk (65,536 elements), each with its own hyper-parameters,
/// some SGD parameters with a momentum buffer and some without; the GPU matches the CPU's
/// per-parameter steps.
#[test]
fn multi_tensor_optimiser_steps_match_the_cpu() {
    use selfsup_tensor::ops::optim::{AdamItem, SgdItem, SgdStep};
    on_each_gpu("multi-tensor optimiser steps", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F64 { 1e-14 } else { 1e-6 };
            let sizes = [70_000usize, 3, 1000, 1];
            let p0 = rand_vectors(&sizes, dtype, 10);
            let g0 = rand_vectors(&sizes, dtype, 20);
            let run = |d: Device| {
                let ps = copies_on(&p0, d);
                let gs = copies_on(&g0, d);
                let ms: Vec<Tensor> = ps.iter().map(|p| p.zeros_like().unwrap()).collect();
                let vs: Vec<Tensor> = ps.iter().map(|p| p.zeros_like().unwrap()).collect();
                let bs: Vec<Tensor> = ps.iter().map(|p| p.zeros_like().unwrap()).collect();
                for step in 1..=3u64 {
                    let items: Vec<AdamItem> = (0..ps.len())
                        .map(|i| AdamItem {
                            param: &ps[i],
                            grad: &gs[i],
                            m: &ms[i],
                            v: &vs[i],
                            step: AdamStep {
                                lr: 1e-2 * (i + 1) as f64,
                                beta1: 0.9,
                                beta2: 0.99,
                                eps: 1e-8,
                                weight_decay: 0.1 * i as f64,
                                decoupled: (step + i as u64) % 2 == 1,
                                step: step + i as u64,
                            },
                        })
                        .collect();
                    Tensor::adam_steps_(&items).unwrap();
                    let items: Vec<SgdItem> = (0..ps.len())
                        .map(|i| SgdItem {
                            param: &ps[i],
                            grad: &gs[i],
                            momentum_buf: (i % 2 == 0).then_some(&bs[i]),
                            step: SgdStep {
                                lr: 0.1 / (i + 1) as f64,
                                momentum: 0.9,
                                dampening: 0.1,
                                weight_decay: 1e-4,
                                nesterov: i == 2,
                                first: step == 1,
                            },
                        })
                        .collect();
                    Tensor::sgd_steps_(&items).unwrap();
                }
                (ps, ms, vs, bs)
            };
            let (a, c) = (run(dev), run(Device::Cpu));
            for i in 0..sizes.len() {
                compare(&format!("{dtype:?} p{i}"), &a.0[i], &c.0[i], tol);
                compare(&format!("{dtype:?} m{i}"), &a.1[i], &c.1[i], tol);
                compare(&format!("{dtype:?} v{i}"), &a.2[i], &c.2[i], tol);
                compare(&format!("{dtype:?} momentum{i}"), &a.3[i], &c.3[i], tol);
            }
        }
    });
}

/// The multi-tensor EMA update (running statistics, EMA targets): sizes across table chunks,
/// each tensor with its own factors, a strided source (read from a copy), f32 and f64; the
/// GPU matches the CPU over three updates, and the f32 tensors of one device cost one launch.
/// And the i64 counter beside them (`count_up_`).
#[test]
fn multi_tensor_ema_steps_match_the_cpu() {
    use selfsup_tensor::ops::ema::EmaItem;
    on_each_gpu("multi-tensor EMA steps", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F64 { 1e-14 } else { 1e-6 };
            let sizes = [70_000usize, 3, 1000, 1];
            let t0 = rand_vectors(&sizes, dtype, 30);
            let s0 = rand_vectors(&sizes, dtype, 40);
            let wide = rand(&[20, 50], dtype, -1.0, 1.0, 50);
            let run = |d: Device| {
                let ts = copies_on(&t0, d);
                let ss = copies_on(&s0, d);
                let strided_target = Tensor::zeros(&[50, 20], dtype).to_device(d).unwrap();
                let strided_source = wide.to_device(d).unwrap().t().unwrap();
                for step in 0..3 {
                    let mut items: Vec<EmaItem> = (0..ts.len())
                        .map(|i| EmaItem {
                            target: &ts[i],
                            source: &ss[i],
                            keep: 0.9 - 0.1 * i as f64,
                            scale: 0.1 * (i + step + 1) as f64,
                        })
                        .collect();
                    items.push(EmaItem {
                        target: &strided_target,
                        source: &strided_source,
                        keep: 0.5,
                        scale: 1.5,
                    });
                    Tensor::ema_steps_(&items).unwrap();
                }
                (ts, strided_target)
            };
            let (a, c) = (run(dev), run(Device::Cpu));
            for i in 0..sizes.len() {
                compare(&format!("{dtype:?} ema {i}"), &a.0[i], &c.0[i], tol);
            }
            compare(&format!("{dtype:?} ema strided source"), &a.1, &c.1, tol);
        }
        // The batch counter beside the running statistics: i64 counted up in place, all of
        // a tensor or a view into it at an offset.
        let counts = Tensor::from_vec(vec![0i64, 5, i64::MAX - 1, -3], &[4]).unwrap();
        let run = |d: Device| {
            let c = counts.copy().unwrap().to_device(d).unwrap();
            c.count_up_(1).unwrap();
            c.narrow(0, 2, 2).unwrap().count_up_(2).unwrap();
            c.to_vec::<i64>().unwrap()
        };
        assert_eq!(run(dev), run(Device::Cpu));
        assert_eq!(run(dev), vec![1, 6, i64::MIN + 1, 0]);
        if let Device::Cuda(i) = dev {
            let be = selfsup_tensor::cuda::CudaBackend::get(i).unwrap();
            let _one = crate::PROFILING.lock().unwrap_or_else(|p| p.into_inner());
            let ts = copies_on(&rand_vectors(&[5, 70_000, 7], DType::F32, 1), dev);
            let ss = copies_on(&rand_vectors(&[5, 70_000, 7], DType::F32, 2), dev);
            let items: Vec<EmaItem> = (0..3)
                .map(|k| EmaItem {
                    target: &ts[k],
                    source: &ss[k],
                    keep: 0.9,
                    scale: 0.1,
                })
                .collect();
            be.profile_start();
            Tensor::ema_steps_(&items).unwrap();
            let prof = be.profile_stop().unwrap();
            let calls = prof.calls("optim/ema_multi_f32");
            // (Only this test launches it; other tests' kernels may share the profile.)
            assert_eq!(calls, 1, "one launch for three tensors: {prof:?}");
        }
    });
}

/// The LARS step (two launches for all parameters: per-chunk norms, then the update): sizes
/// across table chunks (65,536 elements), a zero parameter (trust factor 1), parameters left
/// out of the adaptation, each with its own hyper-parameters; one parameter alone too. The
/// GPU matches the CPU over three steps.
#[test]
fn lars_steps_match_the_cpu() {
    use selfsup_tensor::ops::optim::{LarsItem, LarsStep};
    on_each_gpu("lars steps", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F64 { 1e-13 } else { 2e-6 };
            let sizes = [140_000usize, 70_000, 5, 1000, 1];
            let mut p0 = rand_vectors(&sizes, dtype, 30);
            p0[2] = p0[2].zeros_like().unwrap();
            let g0 = rand_vectors(&sizes, dtype, 40);
            let run = |d: Device| {
                let ps = copies_on(&p0, d);
                let gs = copies_on(&g0, d);
                let bs: Vec<Tensor> = ps.iter().map(|p| p.zeros_like().unwrap()).collect();
                for step in 1..=3u64 {
                    let items: Vec<LarsItem> = (0..ps.len())
                        .map(|i| LarsItem {
                            param: &ps[i],
                            grad: &gs[i],
                            momentum_buf: &bs[i],
                            step: LarsStep {
                                lr: 0.3 / (i + 1) as f64,
                                momentum: 0.9,
                                weight_decay: 1e-3 * step as f64,
                                eta: 1e-3 * (i + 1) as f64,
                                adapt: i % 2 == 0 || i == 1,
                            },
                        })
                        .collect();
                    Tensor::lars_steps_(&items).unwrap();
                    // The last parameter alone as well (a launch of one slot).
                    Tensor::lars_steps_(&items[4..]).unwrap();
                }
                (ps, bs)
            };
            let (a, c) = (run(dev), run(Device::Cpu));
            for i in 0..sizes.len() {
                compare(&format!("{dtype:?} lars p{i}"), &a.0[i], &c.0[i], tol);
                compare(
                    &format!("{dtype:?} lars momentum{i}"),
                    &a.1[i],
                    &c.1[i],
                    tol,
                );
            }
        }
    });
}

#[test]
fn random_draws_and_dropout_reproduce_the_cpu() {
    on_each_gpu("random", |dev| {
        for dtype in [DType::F32, DType::F64] {
            let (mut gc, mut gg) = (Generator::new(5), Generator::new(5));
            let u = Tensor::rand_on(&[1001], -2.0, 3.0, dtype, dev, &mut gg).unwrap();
            compare(
                "uniform",
                &u,
                &Tensor::rand(&[1001], -2.0, 3.0, dtype, &mut gc).unwrap(),
                0.0,
            );
            let b = Tensor::bernoulli_on(&[999], 0.3, dtype, dev, &mut gg).unwrap();
            compare(
                "bernoulli",
                &b,
                &Tensor::bernoulli(&[999], 0.3, dtype, &mut gc).unwrap(),
                0.0,
            );
            let n = Tensor::randn_on(&[777], 1.0, 2.0, dtype, dev, &mut gg).unwrap();
            compare(
                "normal",
                &n,
                &Tensor::randn(&[777], 1.0, 2.0, dtype, &mut gc).unwrap(),
                1e-6,
            );
            let x = rand(&[64, 33], dtype, -1.0, 1.0, 9);
            let d = x
                .to_device(dev)
                .unwrap()
                .dropout(0.25, true, &mut gg)
                .unwrap();
            compare("dropout", &d, &x.dropout(0.25, true, &mut gc).unwrap(), 0.0);
            assert_eq!(gg.state(), gc.state(), "both generators advanced alike");
        }
    });
}
