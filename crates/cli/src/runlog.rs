//! The files of a run directory besides checkpoints: `log.jsonl` (one JSON object per logged
//! step or epoch), `metrics.json`, and the progress display on the terminal.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use crate::error::{io, Result};

/// Appends JSON objects to `log.jsonl`.
pub struct RunLog {
    path: PathBuf,
    file: File,
}

impl RunLog {
    /// Opens `dir/log.jsonl`: truncated for a new run; for a resumed run, records after
    /// `keep_until_step` (written after the checkpoint the run resumes from) are dropped.
    pub fn open(dir: &Path, keep_until_step: Option<u64>) -> Result<Self> {
        let path = dir.join("log.jsonl");
        let kept: Vec<String> = match keep_until_step {
            Some(step) if path.is_file() => read_records(&path)?
                .into_iter()
                .filter(|r| {
                    r.get("step")
                        .and_then(Value::as_u64)
                        .is_none_or(|s| s <= step)
                })
                .map(|r| Value::Object(r).to_string())
                .collect(),
            _ => Vec::new(),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(io(&path, "creating"))?;
        for l in kept {
            writeln!(file, "{l}").map_err(io(&path, "writing"))?;
        }
        Ok(RunLog { path, file })
    }

    /// Appends one record.
    pub fn write(&mut self, record: Value) -> Result<()> {
        writeln!(self.file, "{record}").map_err(io(&self.path, "writing"))?;
        self.file.flush().map_err(io(&self.path, "writing"))
    }
}

/// Every record of a `log.jsonl` (lines that are not JSON objects are skipped).
pub fn read_records(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let f = File::open(path).map_err(io(path, "opening"))?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(io(path, "reading"))?;
        if let Ok(Value::Object(m)) = serde_json::from_str(&line) {
            out.push(m);
        }
    }
    Ok(out)
}

/// Writes `dir/metrics.json` atomically.
pub fn write_metrics(dir: &Path, metrics: &Map<String, Value>) -> Result<PathBuf> {
    let path = dir.join("metrics.json");
    let text = serde_json::to_string_pretty(metrics).unwrap_or_else(|_| "{}".into());
    selfsup_nn::checkpoint::atomic_write(&path, |f| f.write_all(text.as_bytes()))?;
    Ok(path)
}

/// Creates `dir` (and parents), with a clear error when it cannot.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_file() {
        return crate::error::input(format!(
            "--out {} is a file: pass a directory",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir).map_err(io(dir, "creating the directory"))
}

/// Progress of a training phase: a bar on a terminal, plain log lines otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    total: Cell<u64>,
    every: Cell<u64>,
    label: String,
    unit: Unit,
}

/// What a [`Progress`] counts.
#[derive(Clone, Copy, PartialEq)]
enum Unit {
    /// Optimiser steps, a plain line every `every` of them.
    Steps,
    /// Epochs, a plain line for about 20 of them, however many there turn out to be.
    Epochs,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Steps => "step",
            Unit::Epochs => "epoch",
        }
    }
}

impl Progress {
    /// A progress display for steps `done..total`, labelled `label`; plain lines every `every`
    /// steps when stderr is not a terminal.
    pub fn new(label: &str, done: u64, total: u64, every: u64) -> Self {
        let bar = if std::io::stderr().is_terminal() {
            let b = ProgressBar::new(total);
            b.set_position(done);
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(label.to_string());
            Some(b)
        } else {
            None
        };
        Progress {
            bar,
            started: Instant::now(),
            total: Cell::new(total),
            every: Cell::new(every.max(1)),
            label: label.to_string(),
            unit: Unit::Steps,
        }
    }

    /// A progress display counted in epochs of a run that may grow past `total` (see
    /// [`Progress::set_total`]); plain lines for about 20 of them.
    pub fn epochs(label: &str, total: u64) -> Self {
        let p = Progress {
            unit: Unit::Epochs,
            ..Progress::new(label, 0, total, 1)
        };
        p.set_total(total);
        p
    }

    /// Changes the number of steps the display counts to (for epochs, also how often it
    /// prints a plain line: about 20 in all).
    pub fn set_total(&self, total: u64) {
        if self.unit == Unit::Epochs {
            self.every.set((total / 20).max(1));
        }
        self.total.set(total);
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    /// Reports step `step` (1-based count of steps done) with a message.
    pub fn update(&self, step: u64, msg: &str) {
        match &self.bar {
            Some(b) => {
                b.set_position(step);
                b.set_message(msg.to_string());
            }
            None => {
                if step % self.every.get() == 0 || step == self.total.get() {
                    eprintln!(
                        "{} {} {step}/{} {msg} [{:.0} s]",
                        self.label,
                        self.unit.name(),
                        self.total.get(),
                        self.started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    /// Prints a line above the bar (or plainly).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// A JSON number, or null when not finite.
pub fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}
