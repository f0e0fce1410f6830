//! Reading a GGUF file we did not write.
//!
//! candle's reader bounds strings, arrays and counts by the file size, but it
//! divides by `general.alignment` unchecked (0 panics) and multiplies tensor
//! dimensions unchecked (a product past `usize` wraps in release builds and
//! sizes the wrong read). It keeps its value reader private, so this module
//! walks the header once itself, with every length checked against the bytes
//! left, and hands the file to candle only when nothing in it can panic.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::gguf_file;

use crate::error::{Error, Result};

/// Largest `general.alignment` accepted; llama.cpp writes 32.
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// Largest element count of one tensor (2^40: a 1T-element tensor).
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 40;
/// Deepest array nesting walked (llama.cpp writes depth 1).
const MAX_DEPTH: usize = 8;

/// candle's `Content::read`, after [`scan`] has refused what would panic it;
/// with the open file, for reading tensors.
pub fn read_content(path: &Path) -> Result<(gguf_file::Content, BufReader<File>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    scan(&mut reader, path)?;
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    let content = gguf_file::Content::read(&mut reader).map_err(|e| Error::Gguf {
        path: path.into(),
        msg: crate::error::candle_msg(&e),
    })?;
    Ok((content, reader))
}

/// Walks the header: magic, version, key/value pairs and tensor infos.
pub fn scan<R: Read + Seek>(reader: &mut R, path: &Path) -> Result<()> {
    let len = reader
        .seek(SeekFrom::End(0))
        .and_then(|n| reader.seek(SeekFrom::Start(0)).map(|_| n))
        .map_err(|e| Error::io(path, e))?;
    let mut s = Scan {
        r: reader,
        pos: 0,
        len,
        path,
        wide: true,
    };
    let magic = s.u32("magic")?;
    if magic != u32::from_le_bytes(*b"GGUF") {
        return Err(s.not_gguf(format!("magic {magic:#010x} is not GGUF's")));
    }
    match s.u32("version")? {
        1 => s.wide = false,
        2 | 3 => {}
        v => return Err(s.not_gguf(format!("version {v} is not 1, 2 or 3"))),
    }
    let tensors = s.length("tensor_count")?;
    let kvs = s.length("metadata_kv_count")?;
    for _ in 0..kvs {
        let key = s.string("metadata key")?;
        let ty = s.u32(&key)?;
        if key == "general.alignment" {
            let a = s.integer(ty, &key)?;
            if a == 0 || a > MAX_ALIGNMENT || !a.is_power_of_two() {
                return Err(s.bad(
                    &key,
                    format!("{a} is not a power of two from 1 to {MAX_ALIGNMENT}"),
                ));
            }
        } else {
            s.skip_value(ty, &key, 0)?;
        }
    }
    for _ in 0..tensors {
        let name = s.string("tensor name")?;
        let dims = s.u32(&name)?;
        if dims > 4 {
            return Err(s.tensor(&name, format!("{dims} dimensions (GGUF allows 4)")));
        }
        let mut elems: u64 = 1;
        for _ in 0..dims {
            let d = if s.wide {
                s.u64(&name)?
            } else {
                u64::from(s.u32(&name)?)
            };
            elems = elems
                .checked_mul(d)
                .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
                .ok_or_else(|| {
                    s.tensor(
                        &name,
                        format!("more than {MAX_TENSOR_ELEMENTS} elements (dimension {d})"),
                    )
                })?;
        }
        // ggml type and data offset: candle checks both against the file.
        s.skip(4 + 8, &name)?;
    }
    Ok(())
}

struct Scan<'a, R> {
    r: &'a mut R,
    pos: u64,
    len: u64,
    path: &'a Path,
    /// v2/v3 lengths are u64, v1's u32.
    wide: bool,
}

impl<R: Read + Seek> Scan<'_, R> {
    fn bad(&self, field: &str, msg: String) -> Error {
        Error::field(self.path, field, msg)
    }

    fn tensor(&self, name: &str, msg: String) -> Error {
        Error::tensor(self.path, name, msg)
    }

    /// Not GGUF at all: wrong magic or version.
    fn not_gguf(&self, msg: String) -> Error {
        Error::Gguf {
            path: self.path.into(),
            msg,
        }
    }

    fn truncated(&self, what: &str, n: u64) -> Error {
        self.not_gguf(format!(
            "{what}: needs {n} bytes at offset {}, the file has {}: truncated or corrupt",
            self.pos, self.len
        ))
    }

    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        if self.len - self.pos < N as u64 {
            return Err(self.truncated(what, N as u64));
        }
        self.r
            .read_exact(&mut b)
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.take(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.take(what).map(u64::from_le_bytes)
    }

    fn length(&mut self, what: &str) -> Result<u64> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        if self.len - self.pos < n {
            return Err(self.truncated(what, n));
        }
        // `n` fits: it is at most the file's length.
        self.r
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += n;
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.length(what)?;
        // Keys and tensor names are short; longer ones are refused before
        // anything is allocated for them.
        if n > 65_536 {
            return Err(self.bad(what, format!("a name of {n} bytes")));
        }
        if self.len - self.pos < n {
            return Err(self.truncated(what, n));
        }
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|e| Error::io(self.path, e))?;
        self.pos += n;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Fixed byte size of a scalar value type; None for string and array.
    fn scalar_size(ty: u32) -> Option<u64> {
        match ty {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        }
    }

    /// An integer value of any width (how `general.alignment` is written).
    fn integer(&mut self, ty: u32, key: &str) -> Result<u64> {
        let v = match ty {
            0 => i128::from(self.take::<1>(key)?[0]),
            1 => i128::from(i8::from_le_bytes(self.take(key)?)),
            2 => i128::from(u16::from_le_bytes(self.take(key)?)),
            3 => i128::from(i16::from_le_bytes(self.take(key)?)),
            4 => i128::from(self.u32(key)?),
            5 => i128::from(i32::from_le_bytes(self.take(key)?)),
            10 => i128::from(self.u64(key)?),
            11 => i128::from(i64::from_le_bytes(self.take(key)?)),
            _ => return Err(self.bad(key, format!("value type {ty} is not an integer"))),
        };
        u64::try_from(v).map_err(|_| self.bad(key, format!("{v} is negative")))
    }

    fn skip_value(&mut self, ty: u32, key: &str, depth: usize) -> Result<()> {
        if let Some(n) = Self::scalar_size(ty) {
            return self.skip(n, key);
        }
        match ty {
            8 => {
                let n = self.length(key)?;
                self.skip(n, key)
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(self.bad(key, format!("arrays nested deeper than {MAX_DEPTH}")));
                }
                let inner = self.u32(key)?;
                let count = self.length(key)?;
                match Self::scalar_size(inner) {
                    Some(size) => {
                        let bytes = count
                            .checked_mul(size)
                            .ok_or_else(|| self.truncated(key, u64::MAX))?;
                        self.skip(bytes, key)
                    }
                    None => {
                        // Each string or array element takes at least its
                        // length prefix: refuse counts the file cannot hold
                        // before looping over them.
                        let prefix = if self.wide { 8 } else { 4 };
                        if count > (self.len - self.pos) / prefix {
                            return Err(self.truncated(key, count.saturating_mul(prefix)));
                        }
                        for _ in 0..count {
                            self.skip_value(inner, key, depth + 1)?;
                        }
                        Ok(())
                    }
                }
            }
            _ => Err(self.bad(key, format!("unknown GGUF value type {ty}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn s(x: &str) -> Vec<u8> {
        let mut b = (x.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(x.as_bytes());
        b
    }

    fn kv_u32(k: &str, v: u32) -> Vec<u8> {
        let mut b = s(k);
        b.extend(4u32.to_le_bytes());
        b.extend(v.to_le_bytes());
        b
    }

    fn file(kvs: &[Vec<u8>], tensors: &[Vec<u8>]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        kvs.iter().chain(tensors).for_each(|x| b.extend(x));
        b.extend([0u8; 64]);
        b
    }

    fn tensor(name: &str, dims: &[u64]) -> Vec<u8> {
        let mut b = s(name);
        b.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.extend(0u32.to_le_bytes()); // f32
        b.extend(0u64.to_le_bytes());
        b
    }

    fn check(bytes: Vec<u8>) -> Result<()> {
        scan(&mut Cursor::new(bytes), Path::new("x.gguf"))
    }

    fn message(bytes: Vec<u8>) -> String {
        check(bytes).expect_err("refused").to_string()
    }

    #[test]
    fn a_file_candle_writes_passes_and_candle_reads_it() {
        let dev = candle_core::Device::Cpu;
        let t = candle_core::Tensor::zeros((4, 8), candle_core::DType::F32, &dev).unwrap();
        let q =
            candle_core::quantized::QTensor::quantize(&t, candle_core::quantized::GgmlDType::F32)
                .unwrap();
        let md = [
            (
                "general.architecture",
                gguf_file::Value::String("llama".into()),
            ),
            (
                "tokens",
                gguf_file::Value::Array(vec![gguf_file::Value::String("a".into()); 3]),
            ),
            ("general.alignment", gguf_file::Value::U32(64)),
        ];
        let mut buf = Cursor::new(Vec::new());
        let md: Vec<_> = md.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(&mut buf, &md, &[("w", &q)]).unwrap();
        check(buf.get_ref().clone()).unwrap();
        buf.set_position(0);
        assert_eq!(
            gguf_file::Content::read(&mut buf)
                .unwrap()
                .tensor_infos
                .len(),
            1
        );
    }

    /// candle divides by it: before this guard the process panicked.
    #[test]
    fn alignment_zero_or_odd_is_refused_by_name() {
        for a in [0, 3, 1 << 24] {
            let m = message(file(&[kv_u32("general.alignment", a)], &[]));
            assert!(
                m.contains("general.alignment") && m.contains("power of two"),
                "{m}"
            );
        }
        check(file(&[kv_u32("general.alignment", 32)], &[])).unwrap();
    }

    /// The product of dimensions wrapped in release builds.
    #[test]
    fn tensor_dimensions_whose_product_overflows_are_refused() {
        let m = message(file(&[], &[tensor("t", &[1 << 40, 1 << 40])]));
        assert!(m.contains("`t`") && m.contains("elements"), "{m}");
        let m = message(file(&[], &[tensor("t", &[2, 2, 2, 2, 2])]));
        assert!(m.contains("5 dimensions"), "{m}");
        check(file(&[], &[tensor("t", &[4, 8])])).unwrap();
    }

    #[test]
    fn lengths_past_the_end_are_truncation_not_allocation() {
        // A key claiming 2^62 bytes.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend((1u64 << 62).to_le_bytes());
        assert!(message(b).contains("metadata key"));
        // An array of 2^60 strings in a small file.
        let mut kv = s("k");
        kv.extend(9u32.to_le_bytes());
        kv.extend(8u32.to_le_bytes());
        kv.extend((1u64 << 60).to_le_bytes());
        assert!(message(file(&[kv], &[])).contains("truncated"));
        // An array of 2^62 u64s: the byte count overflows.
        let mut kv = s("k");
        kv.extend(9u32.to_le_bytes());
        kv.extend(10u32.to_le_bytes());
        kv.extend((1u64 << 62).to_le_bytes());
        assert!(message(file(&[kv], &[])).contains("truncated"));
        // Every prefix of a valid file is refused cleanly.
        let whole = file(&[kv_u32("general.alignment", 32)], &[tensor("t", &[4])]);
        for n in 0..whole.len() - 64 {
            assert!(check(whole[..n].to_vec()).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn nesting_and_unknown_types_are_refused() {
        let mut kv = s("deep");
        for _ in 0..20 {
            kv.extend(9u32.to_le_bytes());
            kv.extend(1u64.to_le_bytes());
        }
        kv.extend(4u32.to_le_bytes());
        let mut full = s("deep");
        full.extend(9u32.to_le_bytes());
        full.extend_from_slice(&kv[s("deep").len()..]);
        assert!(message(file(&[full], &[])).contains("nested"));
        let mut kv = s("k");
        kv.extend(99u32.to_le_bytes());
        assert!(message(file(&[kv], &[])).contains("unknown GGUF value type 99"));
        let m = message(b"GGUX\x03\0\0\0".to_vec());
        assert!(m.contains("magic"), "{m}");
    }
}
