//! Short texts in a columnar batch (payment references, line names and
//! notes): each text is split into a *stem* and a trailing number of up to
//! 19 digits, the stems kept once each in a dictionary. `AUTH004211` is the
//! stem `AUTH` and the 6-digit number 4211; a name from a vocabulary costs
//! its stem's index; a random number costs its varint (3.3 bits a digit
//! and some slack) instead of a byte a digit, which lz4 cannot shrink.

use serde::{Deserialize, Serialize};

use crate::column::Col;
use crate::error::CodecError;
use crate::pos::{IdMap, MAX_TEXT_LEN};

/// The most digits a number part may have: every 19-digit number fits a
/// `u64`.
const MAX_DIGITS: usize = 19;
/// Bits of a head that hold the digit count (0 = no number).
const WIDTH_BITS: u32 = 5;

/// The texts of one column, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Texts {
    /// The distinct stems, in order of first appearance.
    stems: Vec<String>,
    /// Per text: its stem's index `<< 5 | ` its digit count.
    heads: Col<u32>,
    /// The number parts of the texts that have one.
    numbers: Col<u64>,
}

/// Splits `text` into (stem, digit count, number): the trailing ASCII
/// digits, at most [`MAX_DIGITS`] of them, are the number.
fn split(text: &str) -> (&str, usize, u64) {
    let bytes = text.as_bytes();
    let (mut digits, mut number, mut scale) = (0usize, 0u64, 1u64);
    for &b in bytes.iter().rev().take(MAX_DIGITS) {
        if !b.is_ascii_digit() {
            break;
        }
        // At most 19 digits: below 10^19 < 2^64, so nothing overflows
        // but the scale after the last digit, which is not used.
        number += u64::from(b - b'0') * scale;
        scale = scale.wrapping_mul(10);
        digits += 1;
    }
    // The digits are ASCII, so the split is on a char boundary.
    (&text[..text.len() - digits], digits, number)
}

/// Builds a [`Texts`] one text at a time.
#[derive(Default)]
pub(crate) struct TextsBuilder<'a> {
    texts: Texts,
    index: IdMap<&'a str, u32>,
}

impl<'a> TextsBuilder<'a> {
    /// Appends `text`.
    pub fn push(&mut self, text: &'a str) {
        let (stem, width, number) = split(text);
        let next = self.index.len() as u32;
        let texts = &mut self.texts;
        let ix = *self.index.entry(stem).or_insert_with(|| {
            texts.stems.push(stem.to_owned());
            next
        });
        texts.heads.push(ix << WIDTH_BITS | width as u32);
        if width > 0 {
            texts.numbers.push(number);
        }
    }

    /// The texts pushed.
    pub fn finish(self) -> Texts {
        self.texts
    }
}

impl Texts {
    /// The texts, checking that the columns agree: every stem index in
    /// range, every number as many digits as its head says, every stem and
    /// text at most [`MAX_TEXT_LEN`] bytes (so a text costing one byte of
    /// the frame decodes to at most that), no number or stem left over.
    pub fn into_strings(self) -> Result<Vec<String>, CodecError> {
        let malformed = |m: &str| CodecError::Malformed(format!("texts: {m}"));
        if self.stems.iter().any(|s| s.len() > MAX_TEXT_LEN) {
            return Err(malformed("stem too long"));
        }
        let mut used = vec![false; self.stems.len()];
        let mut numbers = self.numbers.iter();
        let mut out = Vec::with_capacity(self.heads.len());
        for &head in &self.heads {
            let width = (head & ((1 << WIDTH_BITS) - 1)) as usize;
            let ix = (head >> WIDTH_BITS) as usize;
            let stem = self
                .stems
                .get(ix)
                .ok_or_else(|| malformed("stem index out of range"))?;
            used[ix] = true;
            let text = match width {
                0 => stem.clone(),
                1..=MAX_DIGITS => {
                    let n = numbers.next().ok_or_else(|| malformed("missing number"))?;
                    let digits = format!("{n:0width$}");
                    if digits.len() != width {
                        return Err(malformed("number wider than its head"));
                    }
                    let mut t = String::with_capacity(stem.len() + width);
                    t.push_str(stem);
                    t.push_str(&digits);
                    t
                }
                _ => return Err(malformed("number too wide")),
            };
            if text.len() > MAX_TEXT_LEN {
                return Err(malformed("text too long"));
            }
            out.push(text);
        }
        if numbers.next().is_some() || used.iter().any(|u| !u) {
            return Err(malformed("unused numbers or stems"));
        }
        Ok(out)
    }

    /// The texts of `texts` (for tests that build columns by hand).
    #[cfg(test)]
    pub fn of(texts: &[&str]) -> Texts {
        let mut b = TextsBuilder::default();
        for t in texts {
            b.push(t);
        }
        b.finish()
    }

    /// Number of texts.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heads.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(texts: &[String]) -> Texts {
        let mut b = TextsBuilder::default();
        for t in texts {
            b.push(t);
        }
        b.finish()
    }

    #[test]
    fn stems_and_numbers_split_as_documented() {
        assert_eq!(split("AUTH004211"), ("AUTH", 6, 4211));
        assert_eq!(split("no onions"), ("no onions", 0, 0));
        assert_eq!(split("0000000000000000"), ("", 16, 0));
        // 25 digits: the last 19 are the number, the rest the stem.
        let long = "1234567890123456789012345";
        assert_eq!(split(long), ("123456", 19, 7_890_123_456_789_012_345));
        let t = build(&["AUTH1".into(), "AUTH22".into(), "x".into()]);
        assert_eq!(t.stems, ["AUTH", "x"]);
        assert_eq!(t.heads.0, [1, 2, 1 << WIDTH_BITS]);
        assert_eq!(t.numbers.0, [1, 22]);
    }

    #[test]
    fn columns_that_disagree_are_malformed() {
        let good = build(&["GC12".into(), "note".into()]);
        let cases: [fn(&mut Texts); 6] = [
            |t| t.heads.0[1] = 7 << WIDTH_BITS,            // stem out of range
            |t| t.numbers.0.clear(),                       // missing number
            |t| t.numbers.0[0] = 123,                      // wider than 2 digits
            |t| t.heads.0[0] = 20,                         // 20 digits
            |t| t.numbers.0.push(5),                       // a number left over
            |t| t.stems[1] = "n".repeat(MAX_TEXT_LEN + 1), // too long
        ];
        for (i, damage) in cases.iter().enumerate() {
            let mut t = good.clone();
            damage(&mut t);
            assert!(
                matches!(t.into_strings(), Err(CodecError::Malformed(_))),
                "case {i}"
            );
        }
        let mut unused = good.clone();
        unused.stems.push("spare".into());
        assert!(unused.into_strings().is_err());
        assert_eq!(
            good.into_strings().unwrap(),
            ["GC12".to_string(), "note".to_string()]
        );
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Z]{0,4}[0-9]{0,24}",
            "(no onions|gift wrap|deli [0-9]{1,3})",
            "[ -~]{0,30}",
            "\\PC{0,12}[0-9]{0,3}",
        ]
    }

    proptest! {
        /// The model is the identity: what goes in comes out, in order,
        /// through the wire form.
        #[test]
        fn texts_round_trip_through_postcard(texts in proptest::collection::vec(text(), 0..40)) {
            let texts: Vec<String> = texts
                .into_iter()
                .filter(|t| t.len() <= MAX_TEXT_LEN)
                .collect();
            let built = build(&texts);
            prop_assert_eq!(built.len(), texts.len());
            let wire = postcard::to_allocvec(&built).unwrap();
            let back: Texts = postcard::from_bytes(&wire).unwrap();
            prop_assert_eq!(back.into_strings().unwrap(), texts);
        }
    }
}
