//! Text data: reading UTF-8 files and folders, splitting into documents, fortune entries and
//! sentences, train/validation splits, next-sentence-prediction pairs, and the fortunes corpus
//! of shared/README.md.

use std::path::{Path, PathBuf};

use selfsup_tensor::rng::Philox;

use crate::error::{list_dir, read_file, DataError, Result};

/// Where the Debian package `fortunes` installs its files.
pub const DEBIAN_FORTUNES_DIR: &str = "/usr/share/games/fortunes";

/// Decodes UTF-8, naming the file, byte offset and line of the first invalid sequence.
pub fn decode_utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        DataError::NotUtf8 {
            path: path.to_path_buf(),
            offset,
            line,
        }
    })
}

/// Reads a UTF-8 text file.
pub fn read_text(path: &Path) -> Result<String> {
    decode_utf8(path, read_file(path)?)
}

/// Reads a file, or every regular file (not symlinks, not hidden) of a folder sorted by name,
/// skipping names ending in one of `skip_suffixes`. An empty folder is an error.
pub fn read_texts(path: &Path, skip_suffixes: &[&str]) -> Result<Vec<(PathBuf, String)>> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, "read", e))?;
    if meta.is_file() {
        return Ok(vec![(path.to_path_buf(), read_text(path)?)]);
    }
    let mut out = Vec::new();
    for p in list_dir(path)? {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_file = std::fs::symlink_metadata(&p)
            .map(|m| m.file_type().is_file())
            .unwrap_or(false);
        if !is_file || name.starts_with('.') || skip_suffixes.iter().any(|s| name.ends_with(s)) {
            continue;
        }
        let text = read_text(&p)?;
        out.push((p, text));
    }
    if out.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            details: "no text files; pass a folder that holds UTF-8 text files, or a file".into(),
        });
    }
    Ok(out)
}

/// Splits fortune-file text into entries: lines consisting of `%` separate entries; each entry
/// keeps its lines joined by `\n` without trailing newlines; empty entries are dropped.
pub fn split_fortune_entries(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    let mut flush = |cur: &mut Vec<&str>| {
        let e = cur.join("\n");
        let e = e.trim_end_matches('\n');
        if !e.is_empty() {
            out.push(e.to_string());
        }
        cur.clear();
    };
    for line in text.split('\n') {
        if line == "%" {
            flush(&mut cur);
        } else {
            cur.push(line);
        }
    }
    flush(&mut cur);
    out
}

/// Splits text into documents separated by one or more blank lines (whitespace-only lines).
pub fn split_documents(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(cur.join("\n"));
                cur.clear();
            }
        } else {
            cur.push(line);
        }
    }
    out
}

/// Splits a document into sentences: a sentence ends at `.`, `!` or `?` (plus any closing quotes
/// or brackets) followed by whitespace, or at the end. Sentences are trimmed; empty ones dropped.
pub fn split_sentences(doc: &str) -> Vec<String> {
    let chars: Vec<char> = doc.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        if matches!(chars[i], '.' | '!' | '?') {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j], '.' | '!' | '?' | '"' | '\'' | ')' | ']') {
                j += 1;
            }
            if j == chars.len() || chars[j].is_whitespace() {
                let s: String = chars[start..j].iter().collect();
                let s = s.trim();
                if !s.is_empty() {
                    out.push(s.to_string());
                }
                start = j;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    let s: String = chars[start..].iter().collect();
    let s = s.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

/// Whether item `i` belongs to the validation split when a fraction `val_fraction` is held out:
/// item `i` is held out when `floor((i + 1) f) > floor(i f)` (computed exactly in millionths), so
/// the held-out items are evenly spread and `0.1` holds out exactly items 9, 19, 29, ...
pub fn is_validation(i: usize, val_fraction: f64) -> bool {
    let f = (val_fraction.clamp(0.0, 1.0) * 1e6).round() as u128;
    let i = i as u128;
    ((i + 1) * f) / 1_000_000 > (i * f) / 1_000_000
}

/// Splits items into `(train, validation)` with [`is_validation`].
pub fn train_val_split<T: Clone>(items: &[T], val_fraction: f64) -> (Vec<T>, Vec<T>) {
    let (mut tr, mut va) = (Vec::new(), Vec::new());
    for (i, x) in items.iter().enumerate() {
        if is_validation(i, val_fraction) {
            va.push(x.clone());
        } else {
            tr.push(x.clone());
        }
    }
    (tr, va)
}

/// A next-sentence-prediction pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NspPair {
    /// Sentence A.
    pub first: String,
    /// Sentence B.
    pub second: String,
    /// Whether B follows A in its document (otherwise B is from another document).
    pub is_next: bool,
}

/// Builds next-sentence-prediction pairs from documents (each a list of sentences): for every
/// consecutive pair, with probability 0.5 the true next sentence, else a random sentence of a
/// different document. Needs at least two documents for negatives.
pub fn nsp_pairs(docs: &[Vec<String>], seed: u64) -> Result<Vec<NspPair>> {
    let nonempty: Vec<usize> = (0..docs.len()).filter(|&d| !docs[d].is_empty()).collect();
    if nonempty.len() < 2 {
        return Err(DataError::invalid(
            "NSP documents",
            "need at least two non-empty documents for negatives",
        ));
    }
    let mut rng = Philox::new(seed, 0);
    let mut out = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        for w in doc.windows(2) {
            let is_next = rng.bernoulli(0.5);
            let second = if is_next {
                w[1].clone()
            } else {
                let mut o = nonempty[rng.below(nonempty.len() as u64) as usize];
                while o == d {
                    o = nonempty[rng.below(nonempty.len() as u64) as usize];
                }
                docs[o][rng.below(docs[o].len() as u64) as usize].clone()
            };
            out.push(NspPair {
                first: w[0].clone(),
                second,
                is_next,
            });
        }
    }
    Ok(out)
}

/// The fortunes corpus of shared/README.md.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FortunesCorpus {
    /// All entries, files sorted by name, in file order.
    pub entries: Vec<String>,
    /// All entries joined by a blank line (2,561,397 characters for Debian's package).
    pub text: String,
    /// Entries with `index % 10 != 9`, joined by a blank line.
    pub train: String,
    /// Entries with `index % 10 == 9`, joined by a blank line (261,150 characters).
    pub validation: String,
}

/// The corpus holds out every `VALIDATION_EVERY`-th entry (over all files) for validation.
pub const VALIDATION_EVERY: usize = 10;

/// The fortune files of `dir` (every plain-text file, skipping `.dat` index files, `.u8` links
/// and other symlinks), sorted by name, each with its entries.
pub fn fortune_files(dir: &Path) -> Result<Vec<(String, Vec<String>)>> {
    Ok(read_texts(dir, &[".dat", ".u8"])?
        .into_iter()
        .map(|(p, t)| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, split_fortune_entries(&t))
        })
        .collect())
}

/// Loads the fortunes corpus from `dir` (e.g. [`DEBIAN_FORTUNES_DIR`]): the entries of
/// [`fortune_files`], every 10th entry held out for validation.
pub fn fortunes_corpus(dir: &Path) -> Result<FortunesCorpus> {
    let entries: Vec<String> = fortune_files(dir)?
        .into_iter()
        .flat_map(|(_, e)| e)
        .collect();
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if i % VALIDATION_EVERY == VALIDATION_EVERY - 1 {
            val.push(e.as_str());
        } else {
            train.push(e.as_str());
        }
    }
    Ok(FortunesCorpus {
        text: entries.join("\n\n"),
        train: train.join("\n\n"),
        validation: val.join("\n\n"),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortune_entries() {
        let t = "one\nline\n%\n\n%\n\ntwo\n\n%\nthree\n";
        assert_eq!(
            split_fortune_entries(t),
            vec!["one\nline", "\ntwo", "three"]
        );
    }

    #[test]
    fn documents_and_sentences() {
        assert_eq!(split_documents("a\nb\n\n  \nc\n"), vec!["a\nb", "c"]);
        assert_eq!(
            split_sentences("Hi there. \"Who?\" he said! e.g. 3.5 is ok...and end"),
            vec![
                "Hi there.",
                "\"Who?\"",
                "he said!",
                "e.g.",
                "3.5 is ok...and end"
            ]
        );
    }

    #[test]
    fn fraction_split_holds_out_every_tenth() {
        let v: Vec<usize> = (0..100).filter(|&i| is_validation(i, 0.1)).collect();
        assert_eq!(v, (0..10).map(|k| 10 * k + 9).collect::<Vec<_>>());
        let (tr, va) = train_val_split(&(0..1000).collect::<Vec<_>>(), 0.25);
        assert_eq!((tr.len(), va.len()), (750, 250));
    }

    #[test]
    fn nsp_pairs_are_half_positive() {
        let docs: Vec<Vec<String>> = (0..20)
            .map(|d| (0..30).map(|s| format!("d{d}s{s}")).collect())
            .collect();
        let pairs = nsp_pairs(&docs, 1).unwrap();
        assert_eq!(pairs.len(), 20 * 29);
        let pos = pairs.iter().filter(|p| p.is_next).count();
        assert!((pos as f64 / pairs.len() as f64 - 0.5).abs() < 0.07);
        for p in &pairs {
            let same_doc = p.first.split('s').next() == p.second.split('s').next();
            assert_eq!(same_doc, p.is_next, "{p:?}");
        }
    }
}
