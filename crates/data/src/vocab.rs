//! Byte-level and character-level vocabularies, saved as a small text file next to a model.
//!
//! Ids: the special tokens first (`0..specials.len()`), then the 256 byte values (byte-level) or
//! the characters in the order given (char-level; [`Vocab::chars_from_text`] sorts them).
//!
//! File format (UTF-8, one item per line):
//! ```text
//! selfsup-vocab 1
//! kind char            (or: kind byte)
//! special [PAD]        (zero or more lines; the token text runs to the end of the line)
//! char 0A              (char-level only: one line per character, Unicode scalar value in hex)
//! ```

use std::collections::HashMap;
use std::path::Path;

use crate::error::{read_file, DataError, Result};
use crate::text::decode_utf8;

/// The token alphabet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// The 256 byte values.
    Byte,
    /// These characters, in id order.
    Char(Vec<char>),
}

/// A vocabulary: special tokens plus bytes or characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    /// Special tokens (e.g. `[PAD]`, `[MASK]`), ids `0..specials.len()`.
    pub specials: Vec<String>,
    /// The alphabet.
    pub kind: VocabKind,
    index: HashMap<char, i64>,
}

impl Vocab {
    /// A byte-level vocabulary with these special tokens.
    pub fn bytes(specials: Vec<String>) -> Self {
        Vocab {
            specials,
            kind: VocabKind::Byte,
            index: HashMap::new(),
        }
    }

    /// A character-level vocabulary over `chars` (in this id order; duplicates are an error).
    pub fn chars(specials: Vec<String>, chars: Vec<char>) -> Result<Self> {
        let base = specials.len() as i64;
        let mut index = HashMap::with_capacity(chars.len());
        for (i, &c) in chars.iter().enumerate() {
            if index.insert(c, base + i as i64).is_some() {
                return Err(DataError::invalid(
                    "vocabulary",
                    format!("character {c:?} listed twice"),
                ));
            }
        }
        Ok(Vocab {
            specials,
            kind: VocabKind::Char(chars),
            index,
        })
    }

    /// The character-level vocabulary of `text`: its distinct characters, sorted.
    pub fn chars_from_text(specials: Vec<String>, text: &str) -> Self {
        let mut cs: Vec<char> = text
            .chars()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        cs.dedup();
        let base = specials.len() as i64;
        let index = cs
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, base + i as i64))
            .collect();
        Vocab {
            specials,
            kind: VocabKind::Char(cs),
            index,
        }
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.specials.len()
            + match &self.kind {
                VocabKind::Byte => 256,
                VocabKind::Char(c) => c.len(),
            }
    }

    /// Whether the vocabulary has no ids.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of a special token.
    pub fn special_id(&self, token: &str) -> Option<i64> {
        self.specials
            .iter()
            .position(|s| s == token)
            .map(|i| i as i64)
    }

    /// Encodes text; a character outside a char-level vocabulary is an error naming it.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let base = self.specials.len() as i64;
        match &self.kind {
            VocabKind::Byte => Ok(text.bytes().map(|b| base + b as i64).collect()),
            VocabKind::Char(_) => text
                .chars()
                .map(|c| {
                    self.index.get(&c).copied().ok_or_else(|| {
                        DataError::invalid(
                            "text",
                            format!("character {c:?} (U+{:04X}) is not in the vocabulary; build the vocabulary from text that contains it", c as u32),
                        )
                    })
                })
                .collect(),
        }
    }

    /// Encodes text, skipping every character a char-level vocabulary lacks (for scoring text
    /// that was not used to build the vocabulary). Returns the ids and how many characters were
    /// skipped.
    pub fn encode_lossy(&self, text: &str) -> (Vec<i64>, usize) {
        let base = self.specials.len() as i64;
        match &self.kind {
            VocabKind::Byte => (text.bytes().map(|b| base + b as i64).collect(), 0),
            VocabKind::Char(_) => {
                let mut skipped = 0;
                let ids = text
                    .chars()
                    .filter_map(|c| {
                        let id = self.index.get(&c).copied();
                        skipped += usize::from(id.is_none());
                        id
                    })
                    .collect();
                (ids, skipped)
            }
        }
    }

    /// Decodes ids; special tokens are written as their text, invalid ids and bytes as U+FFFD.
    pub fn decode(&self, ids: &[i64]) -> String {
        let base = self.specials.len() as i64;
        let mut out = String::new();
        let mut bytes = Vec::new();
        for &id in ids {
            if id >= 0 && id < base {
                out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut bytes)));
                out.push_str(&self.specials[id as usize]);
                continue;
            }
            let k = id - base;
            match &self.kind {
                VocabKind::Byte if (0..256).contains(&k) => bytes.push(k as u8),
                VocabKind::Char(cs) if k >= 0 && (k as usize) < cs.len() => {
                    out.push(cs[k as usize])
                }
                _ => {
                    out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut bytes)));
                    out.push('\u{FFFD}');
                }
            }
        }
        out.push_str(&String::from_utf8_lossy(&bytes));
        out
    }

    /// The vocabulary in the file format of the module docs.
    pub fn to_text(&self) -> String {
        let mut s = String::from("selfsup-vocab 1\n");
        s.push_str(match self.kind {
            VocabKind::Byte => "kind byte\n",
            VocabKind::Char(_) => "kind char\n",
        });
        for t in &self.specials {
            s.push_str(&format!("special {t}\n"));
        }
        if let VocabKind::Char(cs) = &self.kind {
            for c in cs {
                s.push_str(&format!("char {:X}\n", *c as u32));
            }
        }
        s
    }

    /// Parses the file format; `path` is used in error messages.
    pub fn from_text(path: &Path, text: &str) -> Result<Self> {
        let bad = |line: usize, what: String| {
            DataError::format(
                path,
                format!("line {line}: {what}; the vocabulary file is damaged: save it again"),
            )
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        match lines.next() {
            Some((_, "selfsup-vocab 1")) => {}
            other => {
                return Err(DataError::BadMagic {
                    path: path.to_path_buf(),
                    found: format!("{:?}", other.map(|(_, l)| l).unwrap_or("")),
                    expected: "\"selfsup-vocab 1\"".into(),
                    format: "a selfsup vocabulary file",
                })
            }
        }
        let byte = match lines.next() {
            Some((_, "kind byte")) => true,
            Some((_, "kind char")) => false,
            Some((n, l)) => {
                return Err(bad(
                    n,
                    format!("expected `kind byte` or `kind char`, found {l:?}"),
                ))
            }
            None => return Err(bad(2, "missing `kind` line".into())),
        };
        let (mut specials, mut chars) = (Vec::new(), Vec::new());
        for (n, l) in lines {
            if let Some(t) = l.strip_prefix("special ") {
                specials.push(t.to_string());
            } else if let Some(h) = l.strip_prefix("char ") {
                if byte {
                    return Err(bad(n, "`char` line in a byte-level vocabulary".into()));
                }
                let c = u32::from_str_radix(h.trim(), 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| {
                        bad(
                            n,
                            format!("{h:?} is not a hexadecimal Unicode scalar value"),
                        )
                    })?;
                chars.push(c);
            } else if !l.is_empty() {
                return Err(bad(n, format!("unknown line {l:?}")));
            }
        }
        if byte {
            Ok(Vocab::bytes(specials))
        } else {
            Vocab::chars(specials, chars).map_err(|e| DataError::format(path, e.to_string()))
        }
    }

    /// Writes the vocabulary file.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_text()).map_err(|e| DataError::io(path, "write", e))
    }

    /// Reads a vocabulary file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = decode_utf8(path, read_file(path)?)?;
        Vocab::from_text(path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_vocab_round_trips_text_and_file() {
        let v = Vocab::chars_from_text(vec!["[PAD]".into(), "[MASK]".into()], "hello\nwörld");
        assert_eq!(v.len(), 2 + 9);
        let ids = v.encode("lo\nw").unwrap();
        assert_eq!(v.decode(&ids), "lo\nw");
        assert_eq!(ids[2], 2); // '\n' sorts first
        assert_eq!(v.special_id("[MASK]"), Some(1));
        let back = Vocab::from_text(Path::new("v"), &v.to_text()).unwrap();
        assert_eq!(back, v);
        assert!(v.encode("z").unwrap_err().to_string().contains("'z'"));
    }

    #[test]
    fn lossy_encoding_skips_unknown_characters() {
        let v = Vocab::chars_from_text(vec!["[PAD]".into()], "abc");
        assert_eq!(v.encode_lossy("axbyc"), (v.encode("abc").unwrap(), 2));
        let b = Vocab::bytes(vec![]);
        assert_eq!(b.encode_lossy("é").1, 0);
    }

    #[test]
    fn byte_vocab_handles_any_utf8() {
        let v = Vocab::bytes(vec!["[PAD]".into()]);
        let ids = v.encode("é!").unwrap();
        assert_eq!(ids, vec![1 + 0xC3, 1 + 0xA9, 1 + b'!' as i64]);
        assert_eq!(v.decode(&ids), "é!");
        assert_eq!(v.decode(&[0]), "[PAD]");
        assert_eq!(Vocab::from_text(Path::new("v"), &v.to_text()).unwrap(), v);
    }

    #[test]
    fn damaged_file_is_rejected() {
        assert!(matches!(
            Vocab::from_text(Path::new("v"), "hello"),
            Err(DataError::BadMagic { .. })
        ));
        let e =
            Vocab::from_text(Path::new("v"), "selfsup-vocab 1\nkind char\nchar zz\n").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
    }
}
