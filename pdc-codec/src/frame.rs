//! The frame: pdc's envelope for every stored record and wire message.
//!
//! Layout (format version 1), documented byte by byte in `docs/FORMAT.md`:
//!
//! ```text
//! offset  size  field
//! 0       4     magic  b"PdcF"
//! 4       1     format version (1)
//! 5       1     flags: bit 0 = payload is lz4 block-compressed,
//!               bit 1 = payload is a batch (varint count, then items),
//!               bit 2 = payload is deflate-compressed (RFC 1951, raw)
//! 6       1     record kind
//! 7       1     record schema version
//! 8       1-5   stored payload length (unsigned LEB128, u32)
//! ..      1-5   decoded payload length (LEB128), present only when compressed
//!               (bit 0 or bit 2; never both)
//! ..      n     payload
//! end-8   8     checksum: XXH3-64 (little endian) over everything before it
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{CodecError, RecordKind};

/// The four bytes every pdc frame starts with.
pub const MAGIC: [u8; 4] = *b"PdcF";
/// The frame format version this build writes.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of truncated SHA-256 at the end of every frame.
pub const CHECKSUM_LEN: usize = 8;
const FIXED_HEADER: usize = 8;
/// The smallest possible frame: fixed header, a one-byte length, checksum.
pub const MIN_FRAME_LEN: usize = FIXED_HEADER + 1 + CHECKSUM_LEN;

const FLAG_LZ4: u8 = 0b01;
const FLAG_BATCH: u8 = 0b10;
const FLAG_DEFLATE: u8 = 0b100;
const KNOWN_FLAGS: u8 = FLAG_LZ4 | FLAG_BATCH | FLAG_DEFLATE;

/// The most deflate expands: a 258-byte match costs at least two bits
/// of input, so about 1,032× (and a little for the block headers).
const MAX_DEFLATE_RATIO: usize = 1032;

/// The most an lz4 block expands: each 255 bytes of a match cost at
/// least one byte of input.
const MAX_LZ4_RATIO: usize = 255;

/// Size limits applied before any allocation while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Largest payload after decompression, in bytes.
    pub max_decoded_bytes: usize,
    /// Most items accepted in one batch frame.
    pub max_batch_items: usize,
}

impl Default for Limits {
    /// 16 MiB frames, 64 MiB decoded, 1,000,000 batch items.
    fn default() -> Self {
        Limits {
            max_frame_bytes: 16 << 20,
            max_decoded_bytes: 64 << 20,
            max_batch_items: 1_000_000,
        }
    }
}

/// When the encoder compresses a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Never compress.
    Never,
    /// Compress payloads of at least `min_bytes`, and keep the compressed
    /// form only when it is actually smaller.
    Adaptive {
        /// Payloads shorter than this are stored raw without trying.
        min_bytes: usize,
    },
    /// Entropy-coded: deflate (raw RFC 1951, pure Rust through
    /// `miniz_oxide`, so the browser build has it) for payloads of at least
    /// `min_bytes`, kept only when smaller. 9–13% smaller than lz4 on order
    /// batches (`BENCHMARKS.md`, "Sizes on other data") and slower to
    /// write: for metered or slow links. Every decoder reads both.
    Dense {
        /// Payloads shorter than this are stored raw without trying.
        min_bytes: usize,
        /// Deflate level, 1 (fastest) to 9 (smallest); 0 stores, above 9
        /// is taken as 9.
        level: u8,
    },
}

impl Default for Compression {
    /// Adaptive from 64 bytes: below that lz4 rarely saves anything.
    fn default() -> Self {
        Compression::Adaptive { min_bytes: 64 }
    }
}

/// A decoded frame: its header fields and its (decompressed) payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The record kind in the header.
    pub kind: RecordKind,
    /// The record schema version in the header.
    pub schema: u8,
    /// Whether the payload is a batch.
    pub batch: bool,
    /// Whether the payload was stored compressed.
    pub compressed: bool,
    /// The postcard payload, decompressed.
    pub payload: Vec<u8>,
}

/// Encoder and decoder with its limits and compression policy.
///
/// Cheap to copy; hold one per process or per connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Codec {
    limits: Limits,
    compression: Compression,
}

impl Codec {
    /// A codec with default limits and adaptive compression.
    pub fn new() -> Self {
        Codec::default()
    }

    /// The same codec with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The same codec with another compression policy.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Encodes any serde value as one frame of the given kind and schema.
    pub fn encode_value<T: Serialize + ?Sized>(
        &self,
        kind: RecordKind,
        schema: u8,
        value: &T,
    ) -> Result<Vec<u8>, CodecError> {
        self.encode_value_sized(kind, schema, value, 0)
    }

    /// As [`Codec::encode_value`], with a guess of the payload size so that
    /// large values are written without regrowing the buffer.
    pub fn encode_value_sized<T: Serialize + ?Sized>(
        &self,
        kind: RecordKind,
        schema: u8,
        value: &T,
        size_hint: usize,
    ) -> Result<Vec<u8>, CodecError> {
        let buf = Vec::with_capacity(size_hint.min(self.limits.max_decoded_bytes));
        let payload =
            postcard::to_extend(value, buf).map_err(|e| CodecError::Encode(e.to_string()))?;
        self.seal(kind, schema, false, &payload)
    }

    /// Encodes many values as one batch frame, compressed as a whole.
    pub fn encode_batch_values<T: Serialize>(
        &self,
        kind: RecordKind,
        schema: u8,
        items: &[T],
    ) -> Result<Vec<u8>, CodecError> {
        if items.len() > self.limits.max_batch_items {
            return Err(CodecError::TooManyItems {
                count: items.len(),
                limit: self.limits.max_batch_items,
            });
        }
        // postcard encodes a slice as a varint count followed by the items,
        // which is exactly the batch payload layout.
        let payload =
            postcard::to_allocvec(items).map_err(|e| CodecError::Encode(e.to_string()))?;
        self.seal(kind, schema, true, &payload)
    }

    /// Decodes one frame of the given kind whose schema the caller handles.
    pub fn decode_value<T: DeserializeOwned>(
        &self,
        kind: RecordKind,
        bytes: &[u8],
    ) -> Result<(u8, T), CodecError> {
        let frame = self.open(bytes)?;
        frame.expect(kind, false)?;
        Ok((frame.schema, from_exact(&frame.payload)?))
    }

    /// Wraps a postcard payload in a frame, compressing it if the policy says
    /// so and it pays.
    pub fn seal(
        &self,
        kind: RecordKind,
        schema: u8,
        batch: bool,
        payload: &[u8],
    ) -> Result<Vec<u8>, CodecError> {
        if payload.len() > self.limits.max_decoded_bytes || payload.len() > u32::MAX as usize {
            return Err(CodecError::TooLarge {
                what: "payload",
                size: payload.len(),
                limit: self.limits.max_decoded_bytes,
            });
        }
        let compressed = match self.compression {
            Compression::Adaptive { min_bytes } if payload.len() >= min_bytes => {
                Some((lz4_flex::block::compress(payload), FLAG_LZ4))
            }
            Compression::Dense { min_bytes, level } if payload.len() >= min_bytes => Some((
                miniz_oxide::deflate::compress_to_vec(payload, level.min(9)),
                FLAG_DEFLATE,
            )),
            _ => None,
        }
        // The decoded-length varint is part of the cost of compressing.
        .filter(|(c, _)| c.len() + varint_len(payload.len() as u32) < payload.len());
        let mut flags = 0;
        if batch {
            flags |= FLAG_BATCH;
        }
        let body: &[u8] = match &compressed {
            Some((c, how)) => {
                flags |= how;
                c
            }
            None => payload,
        };
        let mut out = Vec::with_capacity(FIXED_HEADER + 10 + body.len() + CHECKSUM_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.push(flags);
        out.push(kind.0);
        out.push(schema);
        // Lengths fit in u32: checked above for the payload, and lz4's
        // worst case for a payload under 4 GiB is below 4 GiB + 0.4%, which
        // the max_decoded_bytes limit (far below) keeps us from reaching.
        put_varint(&mut out, body.len() as u32);
        if compressed.is_some() {
            put_varint(&mut out, payload.len() as u32);
        }
        out.extend_from_slice(body);
        let sum = checksum(&out);
        out.extend_from_slice(&sum);
        if out.len() > self.limits.max_frame_bytes {
            return Err(CodecError::TooLarge {
                what: "frame",
                size: out.len(),
                limit: self.limits.max_frame_bytes,
            });
        }
        Ok(out)
    }

    /// Checks and opens one frame that spans all of `bytes`.
    ///
    /// Checks, in order: size limit, magic, version, flags, length fields,
    /// exact length, checksum; only then decompresses, into a buffer of the
    /// claimed size, which was checked against the limit first.
    pub fn open(&self, bytes: &[u8]) -> Result<Frame, CodecError> {
        let (frame, used) = self.open_prefix(bytes)?;
        if used != bytes.len() {
            return Err(CodecError::TrailingBytes(bytes.len() - used));
        }
        Ok(frame)
    }

    /// Opens the frame at the start of `bytes` and returns it with the number
    /// of bytes it spans, for reading frames back to back from a stream.
    pub fn open_prefix(&self, bytes: &[u8]) -> Result<(Frame, usize), CodecError> {
        if bytes.len() < MIN_FRAME_LEN {
            if bytes.len() >= 4 && bytes[..4] != MAGIC {
                return Err(CodecError::BadMagic);
            }
            return Err(CodecError::Truncated {
                needed: MIN_FRAME_LEN,
                got: bytes.len(),
            });
        }
        if bytes[..4] != MAGIC {
            return Err(CodecError::BadMagic);
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(CodecError::UnsupportedVersion(bytes[4]));
        }
        let flags = bytes[5];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(CodecError::UnknownFlags(flags));
        }
        let kind = RecordKind(bytes[6]);
        let schema = bytes[7];
        let mut pos = FIXED_HEADER;
        let stored_len = get_varint(bytes, &mut pos)? as usize;
        let (lz4, deflate) = (flags & FLAG_LZ4 != 0, flags & FLAG_DEFLATE != 0);
        if lz4 && deflate {
            return Err(CodecError::UnknownFlags(flags));
        }
        let compressed = lz4 || deflate;
        let decoded_len = if compressed {
            get_varint(bytes, &mut pos)? as usize
        } else {
            stored_len
        };
        let total = pos
            .checked_add(stored_len)
            .and_then(|n| n.checked_add(CHECKSUM_LEN))
            .ok_or(CodecError::BadLength)?;
        if total > self.limits.max_frame_bytes {
            return Err(CodecError::TooLarge {
                what: "frame",
                size: total,
                limit: self.limits.max_frame_bytes,
            });
        }
        if decoded_len > self.limits.max_decoded_bytes {
            return Err(CodecError::TooLarge {
                what: "decoded payload",
                size: decoded_len,
                limit: self.limits.max_decoded_bytes,
            });
        }
        // lz4 cannot expand a block by more than about 255×: a header that
        // claims more is a lie, refused before the output is allocated.
        if lz4 && decoded_len > stored_len.saturating_mul(MAX_LZ4_RATIO).saturating_add(16) {
            return Err(CodecError::CorruptCompression(format!(
                "{decoded_len} decoded bytes claimed from {stored_len}: more than lz4 expands"
            )));
        }
        if deflate
            && decoded_len
                > stored_len
                    .saturating_mul(MAX_DEFLATE_RATIO)
                    .saturating_add(64)
        {
            return Err(CodecError::CorruptCompression(format!(
                "{decoded_len} decoded bytes claimed from {stored_len}: more than deflate expands"
            )));
        }
        if bytes.len() < total {
            return Err(CodecError::Truncated {
                needed: total,
                got: bytes.len(),
            });
        }
        let body_end = pos + stored_len;
        if checksum(&bytes[..body_end]) != bytes[body_end..total] {
            return Err(CodecError::ChecksumMismatch);
        }
        let body = &bytes[pos..body_end];
        let payload = if compressed {
            let out = if lz4 {
                lz4_flex::block::decompress(body, decoded_len)
                    .map_err(|e| CodecError::CorruptCompression(e.to_string()))?
            } else {
                // The limit is the claimed length (checked above), so a
                // stream that inflates further stops there.
                miniz_oxide::inflate::decompress_to_vec_with_limit(body, decoded_len)
                    .map_err(|e| CodecError::CorruptCompression(format!("deflate: {e}")))?
            };
            if out.len() != decoded_len {
                return Err(CodecError::CorruptCompression(format!(
                    "decompressed to {} bytes, header says {decoded_len}",
                    out.len()
                )));
            }
            out
        } else {
            body.to_vec()
        };
        Ok((
            Frame {
                kind,
                schema,
                batch: flags & FLAG_BATCH != 0,
                compressed,
                payload,
            },
            total,
        ))
    }
}

impl Frame {
    /// Checks the frame holds `kind`, as a batch or a single record.
    pub fn expect(&self, kind: RecordKind, batch: bool) -> Result<(), CodecError> {
        if self.kind != kind {
            return Err(CodecError::WrongKind {
                expected: kind,
                found: self.kind,
            });
        }
        if self.batch != batch {
            return Err(CodecError::Malformed(if batch {
                "expected a batch frame, found a single record".into()
            } else {
                "expected a single record, found a batch frame".into()
            }));
        }
        Ok(())
    }

    /// Splits a batch payload into its item count and the items' bytes,
    /// checking the count against `max_items` and the bytes available.
    pub fn batch_items(&self, max_items: usize) -> Result<(usize, &[u8]), CodecError> {
        let mut pos = 0;
        let count = get_varint_u64(&self.payload, &mut pos)?;
        let count = usize::try_from(count).map_err(|_| CodecError::BadLength)?;
        if count > max_items {
            return Err(CodecError::TooManyItems {
                count,
                limit: max_items,
            });
        }
        Ok((count, &self.payload[pos..]))
    }
}

/// Decodes a postcard value that must span all of `bytes`.
pub(crate) fn from_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (v, rest) = postcard::take_from_bytes::<T>(bytes)?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} bytes left after the value",
            rest.len()
        )));
    }
    Ok(v)
}

/// Decodes `count` postcard items from `bytes`, which they must span exactly.
pub(crate) fn items_exact<T: DeserializeOwned>(
    count: usize,
    mut bytes: &[u8],
) -> Result<Vec<T>, CodecError> {
    // Every item takes at least one byte for all record types pdc frames,
    // so the byte count bounds the preallocation.
    let mut out = Vec::with_capacity(count.min(bytes.len()));
    for _ in 0..count {
        let (v, rest) = postcard::take_from_bytes::<T>(bytes)?;
        out.push(v);
        bytes = rest;
    }
    if !bytes.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} bytes left after the batch items",
            bytes.len()
        )));
    }
    Ok(out)
}

/// XXH3-64 of the frame. The checksum detects accidental damage (storage,
/// transit); it is not a MAC: an unkeyed hash, SHA-256 included, stops no
/// one who can rewrite the bytes, so the faster hash with the same 2^-64
/// miss rate for random damage is the right tool (it is 10x faster than
/// SHA-256 here and was 8-12% of a batch encode). Authenticity comes from
/// the transport (TLS) and terminal tokens.
fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    xxhash_rust::xxh3::xxh3_64(bytes).to_le_bytes()
}

fn varint_len(mut v: u32) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u32, CodecError> {
    let v = get_varint_u64(bytes, pos)?;
    u32::try_from(v).map_err(|_| CodecError::BadLength)
}

fn get_varint_u64(bytes: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos).ok_or(CodecError::BadLength)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CodecError::BadLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_len() {
        for v in [0u32, 1, 127, 128, 16_383, 16_384, u32::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            let mut pos = 0;
            assert_eq!(get_varint(&out, &mut pos), Ok(v));
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn small_payload_is_stored_raw_large_repetitive_compressed() {
        let codec = Codec::new();
        let small = codec.encode_value(RecordKind(9), 1, &1u8).unwrap();
        assert!(!codec.open(&small).unwrap().compressed);
        let big = vec![7u8; 4096];
        let f = codec.encode_value(RecordKind(9), 1, &big).unwrap();
        assert!(f.len() < 200, "4 KiB of one byte compresses: {}", f.len());
        let opened = codec.open(&f).unwrap();
        assert!(opened.compressed);
        assert_eq!(from_exact::<Vec<u8>>(&opened.payload).unwrap(), big);
    }

    #[test]
    fn incompressible_payload_stays_raw() {
        // A de Bruijn-like sequence: no repeats lz4 can use.
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let f = Codec::new().encode_value(RecordKind(9), 1, &data).unwrap();
        let opened = Codec::new().open(&f).unwrap();
        assert_eq!(from_exact::<Vec<u8>>(&opened.payload).unwrap(), data);
    }

    #[test]
    fn claimed_size_over_limit_is_rejected_before_allocation() {
        let codec = Codec::new();
        let f = codec
            .encode_value(RecordKind(1), 1, &vec![1u8; 10_000])
            .unwrap();
        let tight = codec.with_limits(Limits {
            max_decoded_bytes: 1000,
            ..Limits::default()
        });
        assert!(matches!(
            tight.open(&f),
            Err(CodecError::TooLarge {
                what: "decoded payload",
                ..
            })
        ));
        let small_frames = codec.with_limits(Limits {
            max_frame_bytes: 20,
            ..Limits::default()
        });
        assert!(matches!(
            small_frames.open(&f),
            Err(CodecError::TooLarge { what: "frame", .. })
        ));
    }

    /// A frame sealed by hand with the given flags, stored body and
    /// claimed decoded length.
    fn hand_frame(flags: u8, body: &[u8], decoded: u32) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC);
        f.extend_from_slice(&[FORMAT_VERSION, flags, 1, 1]);
        put_varint(&mut f, body.len() as u32);
        put_varint(&mut f, decoded);
        f.extend_from_slice(body);
        let sum = checksum(&f);
        f.extend_from_slice(&sum);
        f
    }

    #[test]
    fn dense_frames_deflate_and_every_codec_reads_them() {
        let dense = Codec::new().with_compression(Compression::Dense {
            min_bytes: 64,
            level: 6,
        });
        // Sixteen letters in no order: no repeats for lz4, four bits a
        // letter for deflate's Huffman codes.
        let text: Vec<u8> = (0..4000u32)
            .map(|i| b'a' + (i.wrapping_mul(2_654_435_761) >> 28) as u8)
            .collect();
        let f = dense.encode_value(RecordKind(9), 1, &text).unwrap();
        assert_eq!(f[5] & FLAG_DEFLATE, FLAG_DEFLATE);
        let lz4 = Codec::new().encode_value(RecordKind(9), 1, &text).unwrap();
        assert!(f.len() < lz4.len(), "{} vs {}", f.len(), lz4.len());
        // The default codec (lz4 writer) reads a deflate frame.
        let opened = Codec::new().open(&f).unwrap();
        assert!(opened.compressed);
        assert_eq!(from_exact::<Vec<u8>>(&opened.payload).unwrap(), text);
        // Small payloads stay raw.
        let small = dense.encode_value(RecordKind(9), 1, &1u8).unwrap();
        assert_eq!(small[5] & (FLAG_DEFLATE | FLAG_LZ4), 0);
    }

    #[test]
    fn bad_deflate_frames_are_clear_errors() {
        let body = miniz_oxide::deflate::compress_to_vec(&[5u8; 3000], 6);
        // Both compression flags: unknown.
        let both = hand_frame(FLAG_LZ4 | FLAG_DEFLATE, &body, 3000);
        assert!(matches!(
            Codec::new().open(&both),
            Err(CodecError::UnknownFlags(_))
        ));
        // A claim deflate cannot reach: refused before allocating.
        let huge = hand_frame(FLAG_DEFLATE, &body[..4], 50 << 20);
        assert!(matches!(
            Codec::new().open(&huge),
            Err(CodecError::CorruptCompression(m)) if m.contains("more than deflate expands")
        ));
        // The stream inflates to more, or less, than the header says.
        for claimed in [2999, 3001] {
            let f = hand_frame(FLAG_DEFLATE, &body, claimed);
            assert!(
                matches!(
                    Codec::new().open(&f),
                    Err(CodecError::CorruptCompression(_))
                ),
                "claimed {claimed}"
            );
        }
        // Garbage that is not deflate.
        let junk = hand_frame(FLAG_DEFLATE, &[0xff; 40], 100);
        assert!(matches!(
            Codec::new().open(&junk),
            Err(CodecError::CorruptCompression(_))
        ));
        assert_eq!(
            Codec::new()
                .open(&hand_frame(FLAG_DEFLATE, &body, 3000))
                .unwrap()
                .payload,
            vec![5u8; 3000]
        );
    }

    #[test]
    fn a_claimed_size_lz4_cannot_reach_is_refused_before_allocation() {
        // A hand-made frame: 8 stored bytes claiming 50 MB decoded.
        let mut f = Vec::new();
        f.extend_from_slice(&MAGIC);
        f.extend_from_slice(&[FORMAT_VERSION, FLAG_LZ4, 1, 1]);
        put_varint(&mut f, 8);
        put_varint(&mut f, 50 << 20);
        f.extend_from_slice(&[0xF0, 0, 0, 0, 0, 0, 0, 0]);
        let sum = checksum(&f);
        f.extend_from_slice(&sum);
        assert!(matches!(
            Codec::new().open(&f),
            Err(CodecError::CorruptCompression(m)) if m.contains("more than lz4 expands")
        ));
    }

    #[test]
    fn each_header_check_has_its_error() {
        let codec = Codec::new();
        let f = codec.encode_value(RecordKind(1), 1, &"hello").unwrap();
        let mut bad = f.clone();
        bad[0] = b'X';
        assert_eq!(codec.open(&bad), Err(CodecError::BadMagic));
        let mut bad = f.clone();
        bad[4] = 2;
        assert_eq!(codec.open(&bad), Err(CodecError::UnsupportedVersion(2)));
        let mut bad = f.clone();
        bad[5] = 0x80;
        assert_eq!(codec.open(&bad), Err(CodecError::UnknownFlags(0x80)));
        let mut bad = f.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(codec.open(&bad), Err(CodecError::ChecksumMismatch));
        let mut long = f.clone();
        long.push(0);
        assert_eq!(codec.open(&long), Err(CodecError::TrailingBytes(1)));
        assert!(matches!(
            codec.open(&f[..f.len() - 1]),
            Err(CodecError::Truncated { .. })
        ));
        assert_eq!(
            codec.decode_value::<String>(RecordKind(2), &f),
            Err(CodecError::WrongKind {
                expected: RecordKind(2),
                found: RecordKind(1)
            })
        );
    }
}
