//! sidelb-fuzz: property-based fuzzing of the parsers sidelb owns.
//!
//! cargo-fuzz needs a nightly compiler; these targets use `proptest` on
//! stable instead. Each target (a module of `tests/fuzz/`) has
//!
//! - a **seed corpus** in `fuzz/corpus/<target>/`: one interesting input per
//!   file (valid inputs, smuggling attempts, edge cases, inputs that once
//!   broke something), replayed as they are by a test of their own, and used
//!   as seeds that the fuzz strategies mutate ([`mutated`]);
//! - properties over generated inputs: never a panic, and what each parser
//!   promises (round trips of well-formed input, refusals that name the
//!   problem, invariants of what is accepted);
//! - proptest's **regression files** in `fuzz/proptest-regressions/`: a
//!   failing case is written there and replayed first on every later run.
//!
//! `make test` runs every target briefly (the case counts in the tests, a few
//! seconds in all); `make fuzz` runs them with `PROPTEST_CASES=100000`
//! (or whatever `PROPTEST_CASES` says), in release mode.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use std::path::{Path, PathBuf};

/// The configuration of a target: `ci_cases` cases unless `PROPTEST_CASES`
/// says otherwise, failures persisted in `proptest-regressions/<target>.txt`.
pub fn config(target: &str, ci_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci_cases);
    let file: &'static str =
        Box::leak(format!("proptest-regressions/{target}.txt").into_boxed_str());
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..Config::default()
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Every input of `target`'s seed corpus, with its file name, sorted.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_string_lossy().into_owned();
            (path.is_file() && !name.starts_with('.'))
                .then(|| std::fs::read(&path).map(|bytes| (name, bytes)).ok())
                .flatten()
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    files
}

/// One change to an input.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Flip bit `bit % 8` of the byte at `at % len`.
    Flip { at: usize, bit: u8 },
    /// Insert `byte` at `at % (len + 1)`.
    Insert { at: usize, byte: u8 },
    /// Remove the byte at `at % len`.
    Remove { at: usize },
    /// Cut the input to `at % (len + 1)` bytes.
    Truncate { at: usize },
    /// Repeat the `len % 16 + 1` bytes at `at % len` `times` times.
    Repeat { at: usize, len: usize, times: u8 },
    /// Insert one of the bytes that parsers trip over.
    Special { at: usize, which: u8 },
}

const SPECIAL: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\0",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"=",
    b"\"",
    b"%",
    b".",
    b"\xff",
    b"\xc3\xa9",
    b"-",
    b"0",
    b"9",
    b"f",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\r\n\r\n",
];

impl Mutation {
    pub fn apply(&self, input: &mut Vec<u8>) {
        let len = input.len();
        match *self {
            Mutation::Flip { at, bit } if len > 0 => input[at % len] ^= 1 << (bit % 8),
            Mutation::Insert { at, byte } => input.insert(at % (len + 1), byte),
            Mutation::Remove { at } if len > 0 => {
                input.remove(at % len);
            }
            Mutation::Truncate { at } => input.truncate(at % (len + 1)),
            Mutation::Repeat { at, len: n, times } if len > 0 => {
                let start = at % len;
                let end = (start + n % 16 + 1).min(len);
                let piece = input[start..end].to_vec();
                for _ in 0..times % 8 {
                    input.splice(end..end, piece.iter().copied());
                }
            }
            Mutation::Special { at, which } => {
                let bytes = SPECIAL[which as usize % SPECIAL.len()];
                let at = at % (len + 1);
                input.splice(at..at, bytes.iter().copied());
            }
            _ => {}
        }
    }
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<usize>(), any::<u8>())
            .prop_map(|(at, len, times)| Mutation::Repeat { at, len, times }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, which)| Mutation::Special { at, which }),
    ]
}

/// A corpus input of `target` with up to `max` mutations applied: the
/// fuzzer's way of exploring near inputs that are known to be interesting.
pub fn mutated(target: &str, max: usize) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, bytes)| bytes).collect();
    (
        proptest::sample::select(seeds),
        proptest::collection::vec(mutation(), 0..=max),
    )
        .prop_map(|(mut input, mutations)| {
            for m in &mutations {
                m.apply(&mut input);
            }
            input
        })
}

/// Mutated corpus inputs as text (lossily, for parsers of `&str`).
pub fn mutated_text(target: &str, max: usize) -> impl Strategy<Value = String> {
    mutated(target, max).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_in_bounds() {
        for m in [
            Mutation::Flip { at: 99, bit: 9 },
            Mutation::Insert { at: 99, byte: 1 },
            Mutation::Remove { at: 99 },
            Mutation::Truncate { at: 99 },
            Mutation::Repeat {
                at: 99,
                len: 99,
                times: 99,
            },
            Mutation::Special { at: 99, which: 99 },
        ] {
            let mut empty = Vec::new();
            m.apply(&mut empty);
            let mut some = b"abc".to_vec();
            m.apply(&mut some);
        }
        let mut cut = b"abcdef".to_vec();
        Mutation::Truncate { at: 3 }.apply(&mut cut);
        assert_eq!(cut, b"abc");
    }
}
