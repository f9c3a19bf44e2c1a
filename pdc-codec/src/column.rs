//! Column storage for the columnar batch encodings: a column of integers
//! is written as one byte string of LEB128 varints (signed values
//! zigzag-encoded first), so that serialising a column is one bulk copy
//! rather than one serializer call per element.
//!
//! On the wire a column is a postcard byte string: varint byte length, then
//! the varints back to back. The element count is implied; the batch
//! decoders check it against the other columns.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An integer type stored as a varint.
pub(crate) trait Varint: Copy {
    fn to_varint(self) -> u64;
    fn from_varint(v: u64) -> Option<Self>;
}

impl Varint for u64 {
    fn to_varint(self) -> u64 {
        self
    }
    fn from_varint(v: u64) -> Option<Self> {
        Some(v)
    }
}

impl Varint for u32 {
    fn to_varint(self) -> u64 {
        u64::from(self)
    }
    fn from_varint(v: u64) -> Option<Self> {
        u32::try_from(v).ok()
    }
}

impl Varint for u16 {
    fn to_varint(self) -> u64 {
        u64::from(self)
    }
    fn from_varint(v: u64) -> Option<Self> {
        u16::try_from(v).ok()
    }
}

impl Varint for u8 {
    fn to_varint(self) -> u64 {
        u64::from(self)
    }
    fn from_varint(v: u64) -> Option<Self> {
        u8::try_from(v).ok()
    }
}

impl Varint for i64 {
    fn to_varint(self) -> u64 {
        ((self << 1) ^ (self >> 63)) as u64
    }
    fn from_varint(v: u64) -> Option<Self> {
        Some(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
}

/// A column of integers (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Col<T>(pub Vec<T>);

impl<T> Default for Col<T> {
    fn default() -> Self {
        Col(Vec::new())
    }
}

impl<'a, T> IntoIterator for &'a Col<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T> Col<T> {
    pub fn with_capacity(n: usize) -> Self {
        Col(Vec::with_capacity(n))
    }
}

impl<T> Deref for Col<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T> DerefMut for Col<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}

impl<T: Varint> Serialize for Col<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::with_capacity(self.0.len() * 2);
        for &v in &self.0 {
            let mut v = v.to_varint();
            while v >= 0x80 {
                buf.push((v as u8) | 0x80);
                v >>= 7;
            }
            buf.push(v as u8);
        }
        s.serialize_bytes(&buf)
    }
}

struct ColVisitor<T>(PhantomData<T>);

impl<T: Varint> ColVisitor<T> {
    fn parse<E: serde::de::Error>(bytes: &[u8]) -> Result<Col<T>, E> {
        // Every element takes at least one byte: the input bounds the
        // allocation.
        let mut out = Vec::with_capacity(bytes.len());
        let mut v: u64 = 0;
        let mut shift = 0u32;
        for &b in bytes {
            if shift >= 64 || (shift == 63 && b > 1) {
                return Err(E::custom("column varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                out.push(T::from_varint(v).ok_or_else(|| E::custom("column value out of range"))?);
                v = 0;
                shift = 0;
            } else {
                shift += 7;
            }
        }
        if shift != 0 {
            return Err(E::custom("column ends inside a varint"));
        }
        Ok(Col(out))
    }
}

impl<'de, T: Varint> Visitor<'de> for ColVisitor<T> {
    type Value = Col<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string of varints")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Col<T>, E> {
        Self::parse(v)
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Col<T>, E> {
        Self::parse(&v)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Col<T>, A::Error> {
        // Self-describing formats (JSON) give bytes as a sequence of numbers.
        let mut bytes = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Self::parse::<A::Error>(&bytes)
    }
}

impl<'de, T: Varint> Deserialize<'de> for Col<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(ColVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn columns_round_trip(a in proptest::collection::vec(any::<i64>(), 0..100),
                              b in proptest::collection::vec(any::<u32>(), 0..100),
                              c in proptest::collection::vec(any::<u16>(), 0..100)) {
            let bytes = postcard::to_allocvec(&(Col(a.clone()), Col(b.clone()), Col(c.clone()))).unwrap();
            let back: (Col<i64>, Col<u32>, Col<u16>) = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!((back.0 .0, back.1 .0, back.2 .0), (a, b, c));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = postcard::from_bytes::<Col<u16>>(&bytes);
            let _ = postcard::from_bytes::<Col<i64>>(&bytes);
        }
    }

    #[test]
    fn overlong_and_truncated_varints_are_errors() {
        let mut over = vec![11u8];
        over.extend([0xff; 10]);
        over.push(0x01);
        assert!(postcard::from_bytes::<Col<u64>>(&over).is_err());
        assert!(postcard::from_bytes::<Col<u64>>(&[1, 0x80]).is_err());
        assert!(postcard::from_bytes::<Col<u16>>(&[3, 0xff, 0xff, 0x7f]).is_err());
    }
}
