//! Compression codecs of Kafka record batches (attribute bits 0-2).
//!
//! Every decoder's output is gathered through bounded reads, so a small hostile
//! payload (a decompression bomb) cannot make the broker allocate more than the
//! caller's `limit` for the decompressed output.

use std::io::{self, Read, Write};

use crate::error::{RecordsError, corrupt};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{DEFAULT_MAX_WINDOW_SIZE, FrameDecoder, StreamingDecoder};

/// Compression codec of a record batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed (id 0).
    None,
    /// gzip (id 1).
    Gzip,
    /// Snappy (id 2): raw blocks or snappy-java's xerial framing.
    Snappy,
    /// LZ4 frame format (id 3).
    Lz4,
    /// Zstandard (id 4).
    Zstd,
}

impl Compression {
    /// Extracts the codec from batch attributes (bits 0-2); ids 5-7 are errors.
    pub fn from_attributes(attributes: i16) -> Result<Self, RecordsError> {
        match attributes & 0x07 {
            0 => Ok(Self::None),
            1 => Ok(Self::Gzip),
            2 => Ok(Self::Snappy),
            3 => Ok(Self::Lz4),
            4 => Ok(Self::Zstd),
            id => Err(RecordsError::UnknownCodec(id)),
        }
    }

    /// The codec id as stored in attribute bits 0-2.
    pub fn id(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }
}

/// Magic that starts snappy-java's (xerial) stream framing, used by the Java client.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// xerial header: magic, version i32, minimum compatible version i32.
const XERIAL_HEADER_LEN: usize = 16;
/// Input bytes per xerial chunk; snappy-java's default block size.
const XERIAL_CHUNK: usize = 32 * 1024;

/// The decompression bound every reader of stored batches uses (the log's
/// compaction and timestamp lookups, the broker's record rules, the client):
/// a records section may inflate to at most this many bytes, a limit
/// against decompression bombs well above any batch Kafka lets through.
pub const MAX_DECOMPRESSED: usize = 256 << 20;

/// Decompresses `data`, failing with [`RecordsError::TooLarge`] as soon as the
/// output would exceed `limit` bytes (the output buffer never grows past `limit`).
///
/// Snappy accepts both raw blocks (librdkafka) and xerial framing (Java client),
/// told apart by the xerial magic. Gzip accepts concatenated members; zstd accepts
/// concatenated and skippable frames. Decoder-internal buffers are bounded
/// separately: LZ4 buffers are bounded by the block size (at most 8 MiB, about
/// twice that for linked blocks), and zstd frames may declare windows of
/// up to 128 MiB (larger ones are rejected as corrupt, like Kafka does). ruzstd
/// reserves the declared window up front; those pages are only touched as output
/// is produced, so resident memory still tracks the (capped) output.
pub fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    match codec {
        Compression::None => {
            if data.len() > limit {
                return Err(RecordsError::TooLarge { limit });
            }
            out.extend_from_slice(data);
        }
        Compression::Gzip => read_capped(flate2::read::MultiGzDecoder::new(data), &mut out, limit)?,
        Compression::Snappy if data.starts_with(&XERIAL_MAGIC) => snappy_xerial(data, &mut out, limit)?,
        Compression::Snappy => snappy_raw(data, &mut out, limit)?,
        Compression::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(data), &mut out, limit)?,
        Compression::Zstd => zstd(data, &mut out, limit)?,
    }
    Ok(out)
}

/// Compresses `data` the way Kafka's Java producer does: gzip, xerial-framed
/// snappy (32 KiB chunks), an LZ4 frame with independent 64 KiB blocks and no
/// checksums or content size (what `KafkaLZ4BlockInputStream` expects), and a
/// single zstd frame at ruzstd's only implemented level, `Fastest` (~zstd level 1).
pub fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let failed = |e: &dyn std::fmt::Display| RecordsError::Invalid(format!("{codec:?}: {e}"));
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(data).map_err(|e| failed(&e))?;
            enc.finish().map_err(|e| failed(&e))
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2);
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
            let mut enc = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_CHUNK) {
                let block = enc.compress_vec(chunk).map_err(|e| failed(&e))?;
                let len = u32::try_from(block.len()).map_err(|e| failed(&e))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
            let info = FrameInfo::new().block_size(BlockSize::Max64KB).block_mode(BlockMode::Independent);
            let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
            enc.write_all(data).map_err(|e| failed(&e))?;
            enc.finish().map_err(|e| failed(&e))
        }
        Compression::Zstd => Ok(ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)),
    }
}

/// Appends everything `reader` yields to `out`, keeping `out.len()` (and its
/// capacity) within `limit`. Unlike `read_to_end`, growth is clamped to `limit`.
fn read_capped(mut reader: impl Read, out: &mut Vec<u8>, limit: usize) -> Result<(), RecordsError> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e)),
        };
        let chunk = buf.get(..n).ok_or_else(|| corrupt("reader overran its buffer"))?;
        reserve_capped(out, n, limit)?;
        out.extend_from_slice(chunk);
    }
}

/// Makes room for `n` more bytes, doubling like `Vec` but never past `limit`.
fn reserve_capped(out: &mut Vec<u8>, n: usize, limit: usize) -> Result<(), RecordsError> {
    let room = limit.saturating_sub(out.len());
    if n > room {
        return Err(RecordsError::TooLarge { limit });
    }
    if out.capacity() - out.len() < n {
        out.reserve_exact(out.len().max(n).max(4096).min(room));
    }
    Ok(())
}

fn snappy_raw(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), RecordsError> {
    let len = snap::raw::decompress_len(block).map_err(corrupt)?;
    reserve_capped(out, len, limit)?;
    let start = out.len();
    out.resize(start + len, 0);
    let tail = out.get_mut(start..).ok_or_else(|| corrupt("snappy buffer"))?;
    let written = snap::raw::Decoder::new().decompress(block, tail).map_err(corrupt)?;
    out.truncate(start + written);
    Ok(())
}

fn snappy_xerial(data: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), RecordsError> {
    let mut rest = data.get(XERIAL_HEADER_LEN..).ok_or_else(|| corrupt("truncated xerial snappy header"))?;
    while !rest.is_empty() {
        let (len, body) =
            rest.split_first_chunk::<4>().ok_or_else(|| corrupt("truncated xerial snappy chunk length"))?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(corrupt)?;
        let (block, tail) = body.split_at_checked(len).ok_or_else(|| corrupt("truncated xerial snappy chunk"))?;
        snappy_raw(block, out, limit)?;
        rest = tail;
    }
    Ok(())
}

fn zstd(mut input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), RecordsError> {
    let mut dec = FrameDecoder::new();
    // Same ceiling as libzstd's default windowLogMax (27), which the Java client's
    // zstd-jni applies: level 20-22 streams declare 128 MiB even for tiny inputs.
    dec.set_max_window_size(DEFAULT_MAX_WINDOW_SIZE);
    if input.is_empty() {
        return Err(corrupt("empty zstd input"));
    }
    while !input.is_empty() {
        let frame = match StreamingDecoder::new_with_decoder(&mut input, &mut dec) {
            Ok(frame) => frame,
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame { length, .. })) => {
                let skip = usize::try_from(length).map_err(corrupt)?;
                input = input.get(skip..).ok_or_else(|| corrupt("truncated zstd skippable frame"))?;
                continue;
            }
            Err(e) => return Err(corrupt(format!("zstd: {e}"))),
        };
        read_capped(frame, out, limit)?;
        if let (Some(stored), Some(computed)) = (dec.get_checksum_from_data(), dec.get_calculated_checksum())
            && stored != computed
        {
            return Err(corrupt("zstd content checksum mismatch"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    /// Deterministic xorshift bytes: incompressible test data without a rand dependency.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    fn samples() -> Vec<Vec<u8>> {
        let text: Vec<u8> = b"ferry carries kafka batches. ".iter().copied().cycle().take(200_000).collect();
        vec![Vec::new(), b"x".to_vec(), text, noise(70_000, 7), [noise(40_000, 1), vec![0; 90_000]].concat()]
    }

    #[test]
    fn attributes() {
        for c in ALL {
            assert_eq!(Compression::from_attributes(c.id() | 0x7ff8).unwrap(), c);
        }
        for id in 5..8 {
            assert_eq!(Compression::from_attributes(id | 0x10), Err(RecordsError::UnknownCodec(id)));
        }
    }

    #[test]
    fn round_trip_every_codec() {
        for c in ALL {
            for data in samples() {
                let packed = compress(c, &data).unwrap();
                let back = decompress(c, &packed, data.len()).unwrap();
                assert!(back == data, "{c:?} round trip of {} bytes", data.len());
            }
        }
    }

    #[test]
    fn snappy_raw_and_xerial_inputs() {
        let data = samples().swap_remove(4);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw, usize::MAX).unwrap(), data);

        let framed = compress(Compression::Snappy, &data).unwrap();
        assert_eq!(framed[..8], XERIAL_MAGIC);
        assert_eq!(framed[8..16], [0, 0, 0, 1, 0, 0, 0, 1]);
        // 130_000 bytes in 32 KiB chunks -> 4 chunks of length-prefixed raw blocks.
        let mut rest = &framed[16..];
        let mut chunks = 0;
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            rest = &rest[4 + len..];
            chunks += 1;
        }
        assert_eq!(chunks, data.len().div_ceil(XERIAL_CHUNK));
        assert_eq!(decompress(Compression::Snappy, &framed, usize::MAX).unwrap(), data);

        // A header-only xerial stream is an empty payload.
        assert_eq!(decompress(Compression::Snappy, &framed[..16], 10).unwrap(), b"");
    }

    #[test]
    fn concatenated_gzip_members_and_zstd_frames() {
        let (a, b) = (b"first member ".as_slice(), b"second member".as_slice());
        for c in [Compression::Gzip, Compression::Zstd] {
            let joined = [compress(c, a).unwrap(), compress(c, b).unwrap()].concat();
            assert_eq!(decompress(c, &joined, 100).unwrap(), [a, b].concat(), "{c:?}");
        }
        // A zstd skippable frame (magic 0x184D2A50, length 3) in between is ignored.
        let skippable = [0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9];
        let joined =
            [compress(Compression::Zstd, a).unwrap(), skippable.to_vec(), compress(Compression::Zstd, b).unwrap()]
                .concat();
        assert_eq!(decompress(Compression::Zstd, &joined, 100).unwrap(), [a, b].concat());
        // ruzstd does not check the content checksum itself; we do.
        let mut bad_sum = compress(Compression::Zstd, a).unwrap();
        *bad_sum.last_mut().unwrap() ^= 1;
        assert_eq!(
            decompress(Compression::Zstd, &bad_sum, 100),
            Err(RecordsError::Corrupt("zstd content checksum mismatch".into()))
        );
    }

    #[test]
    fn limit_is_enforced() {
        let data = vec![0u8; 100_000];
        for c in ALL {
            let packed = compress(c, &data).unwrap();
            assert_eq!(decompress(c, &packed, data.len()).unwrap().len(), data.len());
            for limit in [0, 1, 99_999] {
                assert_eq!(decompress(c, &packed, limit), Err(RecordsError::TooLarge { limit }), "{c:?}");
            }
        }
        // A raw snappy block claiming a 4 GiB output is refused before allocating.
        let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert_eq!(decompress(Compression::Snappy, &bomb, 1 << 20), Err(RecordsError::TooLarge { limit: 1 << 20 }));
    }

    #[test]
    fn garbage_and_truncation_never_panic() {
        let data = samples().swap_remove(4);
        for c in ALL {
            let packed = compress(c, &data).unwrap();
            let step = (packed.len() / 300).max(1);
            for cut in (0..packed.len()).step_by(step) {
                // Truncation may end on a frame/chunk boundary, but never yields wrong bytes.
                if let Ok(out) = decompress(c, &packed[..cut], 1 << 20) {
                    assert!(data.starts_with(&out), "{c:?} truncated at {cut}");
                }
            }
            let mut flipped = packed.clone();
            for (i, r) in noise(400, 99).chunks(2).enumerate() {
                let at = (usize::from(r[0]) << 8 | usize::from(r[1])) % flipped.len();
                flipped[at] ^= 1 << (i % 8);
                let _ = decompress(c, &flipped, 1 << 20);
            }
            for seed in 1..50 {
                let _ = decompress(c, &noise(seed as usize * 7, seed), 1 << 20);
                let mut prefixed = packed[..packed.len().min(24)].to_vec();
                prefixed.extend(noise(200, seed));
                let _ = decompress(c, &prefixed, 1 << 20);
            }
        }
    }
}
