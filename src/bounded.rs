//! Reading a file that must be small: refused before it is read when it is
//! not a regular file (a link to `/dev/zero`, a pipe) or is larger than the
//! caller's limit, and bounded again while read (it may grow after the
//! check). The standard library alone, so the lowest layer (the tokenizer)
//! and [`crate::assets`] above it share one.

use std::io::{Error, ErrorKind, Read, Result};
use std::path::Path;

/// `path`'s bytes, at most `max` of them; `what` names the kind of file in
/// the error ("larger than 1024 KiB, which no config file is").
pub fn read(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    // Metadata before opening: opening a FIFO would block.
    let md = std::fs::metadata(path)?;
    if !md.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(md.len().min(max) as usize);
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("larger than {} KiB, which no {what} is", max >> 10),
        ));
    }
    Ok(bytes)
}

/// [`read`], as UTF-8 text.
pub fn read_text(path: &Path, max: u64, what: &str) -> Result<String> {
    String::from_utf8(read(path, max, what)?)
        .map_err(|_| Error::new(ErrorKind::InvalidData, "not UTF-8 text"))
}
