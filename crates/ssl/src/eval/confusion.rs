//! The confusion matrix of a classifier's predictions.

use crate::error::{config, Result};

/// Counts of (true class, predicted class) pairs: `counts[t * classes + p]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    /// Number of classes.
    pub classes: usize,
    /// Row-major `classes x classes` counts; row = true class, column = predicted class.
    pub counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An all-zero matrix over `classes` classes.
    pub fn new(classes: usize) -> Self {
        ConfusionMatrix {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Counts the pairs `(truth[i], pred[i])`. Both must have the same length and every entry
    /// must be below `classes`.
    pub fn from_predictions(truth: &[usize], pred: &[usize], classes: usize) -> Result<Self> {
        if truth.len() != pred.len() {
            return config(format!(
                "confusion matrix: {} true labels but {} predictions",
                truth.len(),
                pred.len()
            ));
        }
        let mut m = ConfusionMatrix::new(classes);
        for (&t, &p) in truth.iter().zip(pred) {
            if t >= classes || p >= classes {
                return config(format!(
                    "confusion matrix: pair ({t}, {p}) is out of range for {classes} classes"
                ));
            }
            m.counts[t * classes + p] += 1;
        }
        Ok(m)
    }

    /// The count of true class `t` predicted as `p`.
    pub fn get(&self, t: usize, p: usize) -> u64 {
        self.counts[t * self.classes + p]
    }

    /// Total number of samples.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Fraction of samples on the diagonal (0 when empty).
    pub fn accuracy(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let diag: u64 = (0..self.classes).map(|c| self.get(c, c)).sum();
        diag as f64 / total as f64
    }

    /// For every class, the fraction of its samples predicted correctly (0 for a class with no
    /// samples).
    pub fn per_class_recall(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|t| {
                let row: u64 = (0..self.classes).map(|p| self.get(t, p)).sum();
                if row == 0 {
                    0.0
                } else {
                    self.get(t, t) as f64 / row as f64
                }
            })
            .collect()
    }

    /// A markdown table: one row per true class (with its recall), one column per predicted
    /// class. `names` labels the classes (falls back to indices when absent or too short).
    pub fn to_markdown(&self, names: Option<&[&str]>) -> String {
        let name = |c: usize| -> String {
            names
                .and_then(|n| n.get(c))
                .map_or_else(|| c.to_string(), |s| s.to_string())
        };
        let recall = self.per_class_recall();
        let mut s = String::from("| true \\ predicted |");
        for c in 0..self.classes {
            s.push_str(&format!(" {} |", name(c)));
        }
        s.push_str(" recall |\n|---|");
        for _ in 0..=self.classes {
            s.push_str("---:|");
        }
        s.push('\n');
        for (t, r) in recall.iter().enumerate() {
            s.push_str(&format!("| {} |", name(t)));
            for p in 0..self.classes {
                s.push_str(&format!(" {} |", self.get(t, p)));
            }
            s.push_str(&format!(" {:.1}% |\n", 100.0 * r));
        }
        s.push_str(&format!(
            "\naccuracy: {:.2}% of {}\n",
            100.0 * self.accuracy(),
            self.total()
        ));
        s
    }
}
