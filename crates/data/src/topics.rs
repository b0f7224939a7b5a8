//! A labelled text task for evaluating text encoders: which fortune file an entry comes from
//! ("fortune topics"). The test entries are exactly the entries the fortunes corpus holds out
//! for validation ([`crate::text::fortunes_corpus`]: every 10th entry over all files sorted by
//! name), so a model pretrained on the corpus's training text has never seen a test entry.

use std::path::Path;

use selfsup_tensor::rng::Philox;

use crate::error::{DataError, Result};
use crate::text::{fortune_files, VALIDATION_EVERY};

/// The default classes: eight files of Debian's `fortunes` package with 500 or more entries
/// each and distinct subjects.
pub const DEFAULT_TOPICS: [&str; 8] = [
    "computers",
    "definitions",
    "people",
    "politics",
    "science",
    "songs-poems",
    "work",
    "zippy",
];

/// A labelled text-classification set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextClassification {
    /// Class names (index = label).
    pub classes: Vec<String>,
    /// Training entries with their labels.
    pub train: Vec<(String, usize)>,
    /// Held-out test entries with their labels.
    pub test: Vec<(String, usize)>,
}

impl TextClassification {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// `per_class` training entries of every class, drawn without replacement with `seed`
    /// (a class with fewer entries keeps them all), in class order.
    pub fn labelled_subset(&self, per_class: usize, seed: u64) -> Vec<(String, usize)> {
        let mut rng = Philox::new(seed, 0x746f_7069_6373);
        let mut out = Vec::new();
        for c in 0..self.num_classes() {
            let mut idx: Vec<usize> = (0..self.train.len())
                .filter(|&i| self.train[i].1 == c)
                .collect();
            // Partial Fisher-Yates: the first `per_class` positions become the draw.
            let take = per_class.min(idx.len());
            for i in 0..take {
                let j = i + rng.below((idx.len() - i) as u64) as usize;
                idx.swap(i, j);
            }
            out.extend(idx[..take].iter().map(|&i| self.train[i].clone()));
        }
        out
    }
}

/// The fortune-topic task from the fortune files in `dir`: every entry of each file named in
/// `topics` is labelled with the file's position in `topics`; entries the corpus holds out for
/// validation form the test split. Errors name a missing topic file and list the ones present.
pub fn fortune_topics(dir: &Path, topics: &[&str]) -> Result<TextClassification> {
    if topics.len() < 2 {
        return Err(DataError::invalid(
            "fortune topics",
            format!(
                "{} classes given; a classification task needs at least two fortune files",
                topics.len()
            ),
        ));
    }
    let files = fortune_files(dir)?;
    let mut train = Vec::new();
    let mut test = Vec::new();
    let mut found = vec![false; topics.len()];
    let mut index = 0usize;
    for (name, entries) in &files {
        let label = topics.iter().position(|t| t == name);
        for e in entries {
            if let Some(c) = label {
                found[c] = true;
                if index % VALIDATION_EVERY == VALIDATION_EVERY - 1 {
                    test.push((e.clone(), c));
                } else {
                    train.push((e.clone(), c));
                }
            }
            index += 1;
        }
    }
    if let Some(c) = found.iter().position(|f| !f) {
        let present: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        return Err(DataError::invalid(
            "fortune topics",
            format!(
                "{}: no fortune file named {:?} with entries (files there: {})",
                dir.display(),
                topics[c],
                present.join(", ")
            ),
        ));
    }
    Ok(TextClassification {
        classes: topics.iter().map(|s| s.to_string()).collect(),
        train,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let mk = |name: &str, n: usize| {
            let body: String = (0..n).map(|i| format!("{name} entry {i}\n%\n")).collect();
            std::fs::write(dir.join(name), body).unwrap();
        };
        mk("alpha", 12);
        mk("beta", 9);
        mk("gamma", 5);
        std::fs::write(dir.join("alpha.dat"), b"\x00\x01").unwrap();
    }

    #[test]
    fn splits_follow_the_corpus_validation_entries() {
        let dir = std::env::temp_dir().join(format!("selfsup-topics-{}", std::process::id()));
        fixture(&dir);
        let t = fortune_topics(&dir, &["beta", "alpha"]).unwrap();
        // Global entry order: alpha 0-11, beta 12-20, gamma 21-25; every 10th is held out.
        let test: Vec<&str> = t.test.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(test, vec!["alpha entry 9", "beta entry 7"]);
        assert_eq!(t.test[0].1, 1);
        assert_eq!(t.train.len(), 12 + 9 - 2);
        let corpus = crate::text::fortunes_corpus(&dir).unwrap();
        for (s, _) in &t.test {
            assert!(corpus.validation.contains(s.as_str()) && !corpus.train.contains(s.as_str()));
        }
        let sub = t.labelled_subset(3, 7);
        assert_eq!(sub.len(), 6);
        assert_eq!(sub.iter().filter(|(_, c)| *c == 0).count(), 3);
        assert_eq!(sub, t.labelled_subset(3, 7));
        assert_ne!(sub, t.labelled_subset(3, 8));
        let err = fortune_topics(&dir, &["alpha", "delta"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"delta\"") && err.contains("gamma"), "{err}");
        assert!(fortune_topics(&dir, &["alpha"]).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
