//! `selfsup`: pretrain an encoder with a self-supervised method, evaluate it with few labels,
//! compare against honest baselines, sample text, run the reference benchmarks.
//!
//! Every error prints as one line on stderr and exits with code 2 (bad input) or 1 (a run that
//! diverged); the program never shows a panic or a backtrace to the user.

#![warn(missing_docs)]
// `x % n == 0` instead of `is_multiple_of`, which needs Rust 1.87 (the workspace supports 1.85).
#![allow(clippy::manual_is_multiple_of)]

mod bench;
mod cli;
mod datasets;
mod error;
mod evaluate;
mod evaluate_text;
mod generate;
mod monitor;
mod pretrain;
mod quickstart;
mod report;
mod runconfig;
mod runlog;
mod textstats;

use std::path::PathBuf;

use clap::Parser;

use crate::cli::{parse_enum, parse_method, Cli, Command, PretrainArgs};
use crate::error::{input, CliError, Result};
use crate::runconfig::{load_run_config, RunConfig};

/// Training allocates the same large buffers every step: reuse them instead of mapping fresh
/// pages each time.
#[global_allocator]
static ALLOC: selfsup_tensor::alloc::CachingAllocator =
    selfsup_tensor::alloc::CachingAllocator::new();

fn main() {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("error: internal error ({msg}{at}); please report it with the command you ran");
    }));
    let cli = Cli::parse();
    let code = match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
        Err(_) => 101,
    };
    std::process::exit(code);
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Stack of each compute thread: commands run on a pool thread (see [`hot`]), and dropping a
/// long autograd graph recurses, so they get the room a main thread would have and more.
const STACK_BYTES: usize = 16 << 20;

/// Builds the global thread pool: `n` threads (0 or none: one per core).
fn set_threads(n: Option<usize>) -> Result<()> {
    let n = n.unwrap_or(0);
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .stack_size(STACK_BYTES)
        .build_global()
        .map_err(|e| CliError::Input(format!("--threads {n}: {e}")))
}

/// Runs a compute-bound command on the pool with the other workers spinning for work between
/// ops instead of sleeping (`selfsup_tensor::parallel::hot`): on a VM a sleeping vCPU can
/// take milliseconds to wake, which otherwise leaves every op's other half waiting.
fn hot<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    selfsup_tensor::parallel::hot(f)
}

fn run(cli: Cli) -> Result<()> {
    let cmd = command_line();
    match cli.command {
        Command::Pretrain(a) => {
            let (cfg, out, resume) = resolve_pretrain(&a)?;
            set_threads(Some(cfg.threads))?;
            let s = hot(|| pretrain::pretrain(cfg, &out, resume, a.stop_at, &cmd))?;
            let mut line = format!(
                "pretrained {} steps in {:.0} s, final loss {:.4}",
                s.steps, s.seconds, s.final_loss
            );
            if let Some(k) = s.knn {
                line.push_str(&format!(", monitor kNN {:.2}%", 100.0 * k));
            }
            if let Some(v) = s.val_loss {
                line.push_str(&format!(", validation loss {v:.4}"));
            }
            println!("{line}; wrote {}", out.display());
            Ok(())
        }
        Command::Eval(a) => {
            set_threads(a.threads)?;
            hot(|| evaluate::eval(&a, &cmd).map(|_| ()))
        }
        Command::Baseline(a) => {
            set_threads(a.threads)?;
            hot(|| evaluate::baseline(&a, &cmd).map(|_| ()))
        }
        Command::Generate(a) => {
            let text = generate::generate(&a)?;
            println!("{text}");
            Ok(())
        }
        Command::Quickstart(a) => {
            set_threads(a.threads)?;
            hot(|| quickstart::quickstart(&a, &cmd))
        }
        Command::Bench(a) => {
            set_threads(a.threads)?;
            hot(|| bench::bench(&a))
        }
    }
}

/// The resolved configuration, run directory and whether it resumes.
fn resolve_pretrain(a: &PretrainArgs) -> Result<(RunConfig, PathBuf, bool)> {
    if let Some(dir) = &a.resume {
        let mut cfg = load_run_config(dir)?;
        if let Some(t) = a.threads {
            cfg.threads = t;
        }
        return Ok((cfg, dir.clone(), true));
    }
    let Some(out) = a.out.clone() else {
        return input("pretrain needs --out DIR (the run directory to write) or --resume DIR");
    };
    let method = a.method.as_deref().map(parse_method).transpose()?;
    let mut cfg = match &a.config {
        Some(p) => RunConfig::load(p, method, a.dataset)?,
        None => RunConfig::from_toml("", std::path::Path::new("(flags)"), method, a.dataset)?,
    };
    if let Some(b) = &a.backbone {
        let kind = parse_enum("--backbone", b, &["small-cnn", "resnet18", "vit", "text"])?;
        let keep = cfg.model.backbone.clone();
        cfg.model.backbone = match kind {
            selfsup_ssl::BackboneKind::Vit => {
                selfsup_ssl::BackboneConfig::vit(keep.in_channels, keep.image_size, 4)
            }
            selfsup_ssl::BackboneKind::Text => {
                selfsup_ssl::BackboneConfig::text(keep.vocab, keep.context)
            }
            _ => selfsup_ssl::BackboneConfig {
                kind,
                ..selfsup_ssl::BackboneConfig::small_cnn(keep.in_channels, keep.image_size)
            },
        };
    }
    if let Some(d) = &a.data {
        if !d.exists() {
            return input(format!("--data {}: no such file or directory", d.display()));
        }
        cfg.data = d.display().to_string();
    }
    if let Some(v) = a.epochs {
        cfg.train.epochs = v;
    }
    if let Some(v) = a.batch_size {
        cfg.train.batch_size = v;
    }
    if let Some(o) = &a.optimizer {
        cfg.optim.optimizer = parse_enum("--optimizer", o, &["adam", "adamw", "sgd", "lars"])?;
    }
    if let Some(v) = a.lr {
        cfg.optim.lr = v;
    }
    if let Some(d) = &a.device {
        cfg.train.device = d.clone();
    }
    if let Some(p) = &a.precision {
        cfg.train.precision = p.clone();
    }
    if let Some(s) = &a.schedule {
        cfg.optim.schedule = parse_enum("--schedule", s, &["cosine", "constant"])?;
    }
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    if let Some(v) = a.threads {
        cfg.threads = v;
    }
    if let Some(v) = a.max_steps {
        cfg.train.max_steps = v;
    }
    if let Some(v) = a.subset {
        cfg.train.subset = v;
    }
    if let Some(v) = a.checkpoint_every {
        cfg.train.checkpoint_every = v;
    }
    if a.no_monitor {
        cfg.monitor.enabled = false;
    }
    cfg.validate()?;
    Ok((cfg, out, false))
}
