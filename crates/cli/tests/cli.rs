//! The `selfsup` program end to end on small generated data: the run directory contract, exact
//! resume, the NaN stop, eval / baseline / generate / bench, and one-line errors with exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use selfsup_data::idx::encode_idx_u8;

fn selfsup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_selfsup"))
        .args(args)
        .output()
        .expect("the selfsup binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a user error: exit code 2, one `error:` line, no panic, and `needle` in it.
fn assert_user_error(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {e}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {e}");
    assert!(lines[0].starts_with("error: "), "{e}");
    assert!(
        !e.contains("panicked") && !e.contains("RUST_BACKTRACE"),
        "{e}"
    );
    assert!(e.contains(needle), "expected {needle:?} in: {e}");
}

/// A Fashion-MNIST-shaped IDX dataset: 10 classes, each a bright square at its own place.
fn write_idx(dir: &Path, train: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, n) in [("train", train), ("t10k", test)] {
        let mut px = vec![0u8; n * 784];
        let mut labels = vec![0u8; n];
        for i in 0..n {
            let c = i % 10;
            labels[i] = c as u8;
            let (y0, x0) = (2 + (c / 5) * 12, 2 + (c % 5) * 5);
            for y in y0..y0 + 10 {
                for x in x0..x0 + 5 {
                    px[i * 784 + y * 28 + x] = 200 + ((i * 7 + y + x) % 50) as u8;
                }
            }
        }
        std::fs::write(
            dir.join(format!("{name}-images-idx3-ubyte")),
            encode_idx_u8(&[n, 28, 28], &px),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{name}-labels-idx1-ubyte")),
            encode_idx_u8(&[n], &labels),
        )
        .unwrap();
    }
}

fn tiny_config(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("tiny.toml");
    std::fs::write(
        &p,
        format!(
            "method = \"simclr\"\n[model.backbone]\nwidths = [4, 8, 16]\n[model]\nproj_hidden = 16\nproj_dim = 8\n[train]\nbatch_size = 16\nepochs = 1\nlog_every = 1\n[monitor]\nbank = 100\nqueries = 50\n{extra}"
        ),
    )
    .unwrap();
    p
}

fn metrics(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every tensor of two safetensors files is bit-identical (the header's metadata order may
/// differ).
fn assert_same_tensors(a: &Path, b: &Path) {
    let (da, db) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (ta, tb) = (
        safetensors::SafeTensors::deserialize(&da).unwrap(),
        safetensors::SafeTensors::deserialize(&db).unwrap(),
    );
    let mut names = ta.names();
    names.sort();
    let mut names_b = tb.names();
    names_b.sort();
    assert_eq!(names, names_b);
    assert!(!names.is_empty());
    for n in names {
        assert_eq!(
            ta.tensor(n).unwrap().data(),
            tb.tensor(n).unwrap().data(),
            "tensor {n} differs between the straight and the resumed run"
        );
    }
}

#[test]
fn pretrain_eval_resume_and_the_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fmnist");
    write_idx(&data, 160, 60);
    let cfg = tiny_config(tmp.path(), "");
    let (cfg_s, data_s) = (cfg.to_str().unwrap(), data.to_str().unwrap());

    // A straight run of one epoch (10 steps), checkpoints every 4.
    let a = tmp.path().join("a");
    let o = selfsup(&[
        "pretrain",
        "--config",
        cfg_s,
        "--data",
        data_s,
        "--checkpoint-every",
        "4",
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "config.toml",
        "log.jsonl",
        "metrics.json",
        "checkpoint.safetensors",
        "encoder.safetensors",
        "report.html",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    let m = metrics(&a);
    for k in [
        "command",
        "method",
        "backbone",
        "dataset",
        "seconds",
        "final_loss",
        "knn_accuracy",
        "linear_accuracy",
        "embedding_std",
        "effective_rank",
    ] {
        assert!(m.contains_key(k), "metrics.json lacks {k}: {m:?}");
    }
    assert_eq!(m["method"], "simclr");
    assert_eq!(m["steps"], 10);
    let log = std::fs::read_to_string(a.join("log.jsonl")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains("\"loss\"")).count(),
        10,
        "{log}"
    );
    assert!(log
        .lines()
        .any(|l| l.contains("\"event\":\"epoch\"") && l.contains("knn_accuracy")));
    let html = std::fs::read_to_string(a.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("t-SNE"));

    // The same run stopped at step 6 and resumed ends bit-identical.
    let b = tmp.path().join("b");
    let o = selfsup(&[
        "pretrain",
        "--config",
        cfg_s,
        "--data",
        data_s,
        "--checkpoint-every",
        "4",
        "--stop-at",
        "6",
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!b.join("encoder.safetensors").exists());
    let o = selfsup(&["pretrain", "--resume", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_tensors(
        &a.join("encoder.safetensors"),
        &b.join("encoder.safetensors"),
    );
    assert_same_tensors(
        &a.join("checkpoint.safetensors"),
        &b.join("checkpoint.safetensors"),
    );
    assert_eq!(metrics(&b)["steps"], 10);
    // Starting over into an existing run is refused.
    let o = selfsup(&[
        "pretrain",
        "--config",
        cfg_s,
        "--data",
        data_s,
        "--out",
        a.to_str().unwrap(),
    ]);
    assert_user_error(&o, "--resume");

    // Evaluation protocols with a label budget.
    for (protocol, key) in [
        ("knn", "knn_accuracy"),
        ("linear", "linear_accuracy"),
        ("finetune", "finetune_accuracy"),
    ] {
        let out = tmp.path().join(format!("eval-{protocol}"));
        let mut args = vec![
            "eval",
            "--checkpoint",
            a.to_str().unwrap(),
            "--protocol",
            protocol,
            "--labels-per-class",
            "5",
            "--out",
            out.to_str().unwrap(),
        ];
        if protocol == "finetune" {
            args.extend(["--epochs", "2"]);
        }
        let o = selfsup(&args);
        assert!(o.status.success(), "{protocol}: {}", stderr(&o));
        let m = metrics(&out);
        let acc = m[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{m:?}");
        assert_eq!(m["labels_per_class"], 5);
        assert!(out.join("report.html").is_file() && out.join("confusion.md").is_file());
        if protocol == "knn" {
            assert_eq!(
                (m["knn_k"].as_u64(), m["knn_tuned"].as_bool()),
                (Some(20), Some(false))
            );
        }
    }
    // kNN with k and T chosen on a validation split of the labelled images.
    let out = tmp.path().join("eval-knn-tuned");
    let o = selfsup(&[
        "eval",
        "--checkpoint",
        a.to_str().unwrap(),
        "--protocol",
        "knn",
        "--tune-knn",
        "--labels-per-class",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("chosen on a validation split"),
        "{}",
        stderr(&o)
    );
    let m = metrics(&out);
    assert_eq!(m["knn_tuned"], true);
    assert!(m["knn_temperature"].as_f64().unwrap() > 0.0, "{m:?}");

    // Baselines with the same budget.
    let out = tmp.path().join("base");
    let o = selfsup(&[
        "baseline",
        "--data",
        data_s,
        "--labels-per-class",
        "5",
        "--epochs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&out);
    assert!(
        m["pixels_accuracy"].as_f64().unwrap() > 0.5,
        "the squares are linearly separable: {m:?}"
    );
    assert!(m.contains_key("supervised_accuracy"));
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fmnist");
    write_idx(&data, 160, 20);
    let cfg = tiny_config(
        tmp.path(),
        "[optim]\nlr = 1e30\nwarmup_steps = 0\nschedule = \"constant\"\n",
    );
    let out = tmp.path().join("run");
    let o = selfsup(&[
        "pretrain",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--checkpoint-every",
        "1",
        "--no-monitor",
        "--out",
        out.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("stopped: ") && e.contains(" became ") && e.contains("last good checkpoint"),
        "{e}"
    );
    assert!(out.join("checkpoint.safetensors").is_file());
    assert!(!e.contains("panicked"));
}

#[test]
fn text_pretraining_and_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("corpus.txt");
    let para = "the cat sat on the mat and the dog sat on the log\n\n";
    std::fs::write(&text, para.repeat(60)).unwrap();
    let cfg = tmp.path().join("gpt.toml");
    std::fs::write(&cfg, "method = \"gpt\"\n[model.backbone]\ndim = 16\ndepth = 1\nheads = 2\ncontext = 16\n[train]\nbatch_size = 8\nmax_steps = 30\nepochs = 1\n[optim]\nlr = 0.01\nwarmup_steps = 2\n").unwrap();
    let out = tmp.path().join("gpt");
    let o = selfsup(&[
        "pretrain",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        text.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&out);
    let (val, uni, bi) = (
        m["val_loss"].as_f64().unwrap(),
        m["unigram_loss"].as_f64().unwrap(),
        m["bigram_loss"].as_f64().unwrap(),
    );
    assert!(bi < uni, "{m:?}");
    assert!(
        val < uni,
        "30 steps on a repetitive text beat the unigram model: {m:?}"
    );
    let o = selfsup(&[
        "generate",
        "--checkpoint",
        out.to_str().unwrap(),
        "--prompt",
        "the ",
        "--tokens",
        "20",
        "--temperature",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.starts_with("the ") && s.trim_end().chars().count() >= 20,
        "{s}"
    );
    let o = selfsup(&[
        "generate",
        "--checkpoint",
        out.to_str().unwrap(),
        "--prompt",
        "\u{263a}",
    ]);
    assert_user_error(&o, "--prompt");
    // eval's text task needs the fortunes collection; a run on another corpus is told so.
    let o = selfsup(&["eval", "--checkpoint", out.to_str().unwrap()]);
    assert_user_error(&o, "needs the fortunes directory");
}

#[test]
fn user_errors_are_one_line_with_exit_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    let o_s = out.to_str().unwrap();
    assert_user_error(
        &selfsup(&["pretrain", "--method", "simclrr", "--out", o_s]),
        "did you mean `simclr`",
    );
    assert_user_error(
        &selfsup(&["pretrain", "--data", "/nonexistent/x", "--out", o_s]),
        "/nonexistent/x",
    );
    assert_user_error(
        &selfsup(&[
            "pretrain",
            "--method",
            "mae",
            "--backbone",
            "small-cnn",
            "--out",
            o_s,
        ]),
        "vit",
    );
    assert_user_error(
        &selfsup(&[
            "pretrain",
            "--method",
            "gpt",
            "--dataset",
            "fashion-mnist",
            "--out",
            o_s,
        ]),
        "text",
    );
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[optim]\nlearning_rate = 0.1\n").unwrap();
    assert_user_error(
        &selfsup(&["pretrain", "--config", bad.to_str().unwrap(), "--out", o_s]),
        "unknown key `optim.learning_rate`",
    );
    std::fs::write(&bad, "[train]\nbatch_sise = 3\n").unwrap();
    assert_user_error(
        &selfsup(&["pretrain", "--config", bad.to_str().unwrap(), "--out", o_s]),
        "did you mean `train.batch_size`",
    );
    std::fs::write(&bad, "[train\n").unwrap();
    assert_user_error(
        &selfsup(&["pretrain", "--config", bad.to_str().unwrap(), "--out", o_s]),
        "not valid TOML",
    );
    std::fs::write(&bad, "[model.backbone]\nwidths = []\n").unwrap();
    assert_user_error(
        &selfsup(&["pretrain", "--config", bad.to_str().unwrap(), "--out", o_s]),
        "backbone.widths []",
    );
    assert_user_error(
        &selfsup(&["baseline", "--widths", "8,0", "--out", o_s]),
        "--widths [8, 0]",
    );
    assert_user_error(
        &selfsup(&["pretrain", "--config", "/nonexistent.toml", "--out", o_s]),
        "/nonexistent.toml",
    );
    assert_user_error(
        &selfsup(&["pretrain", "--optimizer", "adamm", "--out", o_s]),
        "did you mean `adam`",
    );
    assert_user_error(
        &selfsup(&["eval", "--checkpoint", "/nonexistent/run"]),
        "/nonexistent/run",
    );
    assert_user_error(
        &selfsup(&["eval", "--checkpoint", tmp.path().to_str().unwrap()]),
        "config.toml",
    );
    assert_user_error(
        &selfsup(&["generate", "--checkpoint", "/nonexistent/run"]),
        "/nonexistent/run",
    );
    assert_user_error(
        &selfsup(&["quickstart", "--data", "/nonexistent/fm", "--out", o_s]),
        "/nonexistent/fm",
    );
    // A corrupt checkpoint is named.
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("config.toml"), "method = \"simclr\"\n").unwrap();
    std::fs::write(run.join("encoder.safetensors"), b"not a checkpoint").unwrap();
    assert_user_error(
        &selfsup(&["eval", "--checkpoint", run.to_str().unwrap()]),
        "encoder.safetensors",
    );
}

#[test]
fn bench_prints_json_lines() {
    let o = selfsup(&["bench", "sgemm", "--sizes", "64,96", "--reps", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["n"], 96);
    assert!(lines[0]["gflops"].as_f64().unwrap() > 0.0);
    assert_eq!(lines[0]["precision"], "f32");
    // bf16 products on the CPU (rounded operands) report their precision.
    let o = selfsup(&[
        "bench",
        "sgemm",
        "--sizes",
        "64",
        "--reps",
        "1",
        "--precision",
        "bf16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"precision\":\"bf16\""));
}

#[test]
fn bench_flag_errors_are_one_line() {
    assert_user_error(
        &selfsup(&["bench", "sgemm", "--precision", "fp16"]),
        "use f32, tf32 or bf16",
    );
    assert_user_error(
        &selfsup(&["bench", "simclr-step", "--backbone", "vit"]),
        "simclr-step runs small-cnn or resnet18",
    );
    assert_user_error(
        &selfsup(&["bench", "simclr-step", "--backbone", "resnet"]),
        "did you mean `resnet18`",
    );
    assert_user_error(
        &selfsup(&["bench", "gpt-step", "--attention", "flash"]),
        "expected fused or composed",
    );
    assert_user_error(
        &selfsup(&["bench", "gpt-step", "--profile"]),
        "--profile times GPU kernels: run it with --device cuda",
    );
}

/// A fortunes-shaped folder: the eight topic files of `selfsup eval`'s text task (plus the
/// `fortunes` file that marks the folder), each entry built from its topic's own words.
fn write_fortunes(dir: &Path, per_file: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let topics = [
        ("computers", "kernel byte disk"),
        ("definitions", "noun verb word"),
        ("people", "said born wife"),
        ("politics", "vote law state"),
        ("science", "atom cell mass"),
        ("songs-poems", "sing rhyme love"),
        ("work", "boss job desk"),
        ("zippy", "yow pinhead pizza"),
        ("fortunes", "luck fate day"),
    ];
    for (name, words) in topics {
        let w: Vec<&str> = words.split(' ').collect();
        let body: String = (0..per_file)
            .map(|i| {
                let s: Vec<&str> = (0..4 + i % 5).map(|j| w[(i + j) % 3]).collect();
                format!("{}.\n%\n", s.join(" "))
            })
            .collect();
        std::fs::write(dir.join(name), body).unwrap();
    }
}

#[test]
fn text_eval_classifies_fortune_topics_against_baselines() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fortunes");
    write_fortunes(&data, 30);
    let cfg = tmp.path().join("mlm.toml");
    std::fs::write(&cfg, "method = \"mlm\"\ndataset = \"text\"\n[model.backbone]\ndim = 16\ndepth = 1\nheads = 2\ncontext = 32\n[train]\nbatch_size = 8\nmax_steps = 10\nepochs = 1\n[optim]\nlr = 0.01\nwarmup_steps = 2\n").unwrap();
    let run = tmp.path().join("mlm");
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let o = selfsup(&[
        "pretrain",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        d,
        "--out",
        r,
        "--no-monitor",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = tmp.path().join("lin");
    let o = selfsup(&[
        "eval",
        "--checkpoint",
        r,
        "--protocol",
        "linear",
        "--labels-per-class",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&out);
    assert_eq!(m["task"], "fortune-topics");
    assert_eq!(m["labelled_texts"], 80);
    // 9 files x 30 entries, every 10th over all files held out, 8 of the files are classes.
    assert_eq!(m["test_texts"], 24);
    for k in [
        "linear_accuracy",
        "random_encoder_accuracy",
        "ngram_accuracy",
    ] {
        let v = m[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k}: {m:?}");
    }
    assert!(m["ngram_accuracy"].as_f64().unwrap() > 0.9, "{m:?}");
    assert!(out.join("report.html").is_file() && out.join("confusion.md").is_file());

    let out = tmp.path().join("ft");
    let o = selfsup(&[
        "eval",
        "--checkpoint",
        r,
        "--protocol",
        "finetune",
        "--labels-per-class",
        "10",
        "--epochs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&out);
    for k in ["finetune_accuracy", "supervised_accuracy", "ngram_accuracy"] {
        assert!(m[k].as_f64().is_some(), "{k}: {m:?}");
    }
    // A folder that is not the fortunes collection is named, with the fix.
    std::fs::remove_file(data.join("fortunes")).unwrap();
    assert_user_error(
        &selfsup(&["eval", "--checkpoint", r, "--data", d]),
        "needs the fortunes directory",
    );
}

/// Every recipe in `configs/` parses (no unknown key, no impossible combination) and trains a
/// step on a small fixture of its dataset, so a shipped config cannot rot unnoticed.
#[test]
fn shipped_configs_start_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("fmnist");
    write_idx(&images, 160, 60);
    let text = tmp.path().join("fortunes");
    write_fortunes(&text, 80);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let cfg = entry.unwrap().path();
        if cfg.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let body = std::fs::read_to_string(&cfg).unwrap();
        let data = if body.contains("dataset = \"text\"") {
            &text
        } else {
            &images
        };
        let out = tmp.path().join(cfg.file_stem().unwrap());
        let o = selfsup(&[
            "pretrain",
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--max-steps",
            "1",
            "--batch-size",
            "8",
            "--no-monitor",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}: {}", cfg.display(), stderr(&o));
        assert!(out.join("metrics.json").exists(), "{}", cfg.display());
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected the shipped configs in {}",
        dir.display()
    );
}

/// `--device`: an unknown name and (on a machine without a usable GPU) `cuda` are one-line
/// errors that say why, before any data is read or any run directory is written.
#[test]
fn device_flag_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fm");
    write_idx(&data, 40, 20);
    let out = tmp.path().join("o");
    let o_s = out.to_str().unwrap();
    let d_s = data.to_str().unwrap();
    let base = [
        "pretrain",
        "--data",
        d_s,
        "--max-steps",
        "1",
        "--batch-size",
        "8",
        "--out",
        o_s,
    ];
    let with = |dev: &str| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(["--device", dev]);
        selfsup(&a.iter().map(|s| &**s).collect::<Vec<_>>())
    };
    assert_user_error(&with("tpu"), "use cpu, cuda or cuda:N");
    if selfsup_tensor::Device::Cuda(0).check().is_err() {
        let o = with("cuda");
        assert_user_error(&o, "--device cuda");
        assert!(stderr(&o).contains("not available"), "{}", stderr(&o));
        assert!(!out.join("checkpoint.safetensors").exists());
    } else {
        eprintln!("a GPU is present: the missing-GPU error is not exercised here");
    }
    // The CPU spelled out trains as the default does.
    let o = with("cpu");
    assert!(o.status.success(), "{}", stderr(&o));
    // A precision that does not exist is a one-line error; bf16 products train on the CPU.
    let prec = |p: &str| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(["--precision", p]);
        selfsup(&a.iter().map(|s| &**s).collect::<Vec<_>>())
    };
    assert_user_error(&prec("fp8"), "use f32, tf32 or bf16");
    std::fs::remove_dir_all(&out).unwrap();
    let o = prec("bf16");
    assert!(o.status.success(), "{}", stderr(&o));
}
