//! Reading files whose headers declare how much data follows, without
//! trusting the declaration: headers are read first, the declared size is
//! compared with the file's length (where the file has one) and with the
//! memory available, and only then is exactly that much read. A file that
//! lies about its size (`/dev/zero`, a sparse file, a small gzip stream whose
//! header claims terabytes) ends in one line instead of an allocation abort or
//! the kernel's OOM killer.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;
use secondo_tensor::memory::ensure_fits_within;

use crate::error::{DataError, Result};

/// Bytes each value takes once decoded: the loaders of datasets and of
/// weights widen every value to `f64`, so a load needs this much per value
/// beside the raw bytes.
pub(crate) const DECODED_BYTES: usize = std::mem::size_of::<f64>();

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// An opened file, read front to back in bounded pieces.
pub(crate) struct Input {
    path: PathBuf,
    reader: Box<dyn Read>,
    /// Bytes the reader yields in all, where known before reading: plain
    /// regular files. Unknown for pipes, devices and decompressed streams.
    len: Option<u64>,
    /// Bytes read so far.
    consumed: u64,
    gzip: bool,
}

impl Input {
    /// Opens a file to be read as it is.
    pub fn open(path: &Path) -> Result<Input> {
        let (reader, len) = open_buffered(path)?;
        Ok(Input::new(path, Box::new(reader), len, false))
    }

    /// Opens a file that may be gzip-compressed (detected by the gzip magic
    /// bytes, whatever the file name), decompressing it as it is read.
    pub fn open_maybe_gzip(path: &Path) -> Result<Input> {
        let (mut reader, len) = open_buffered(path)?;
        let peek = reader.fill_buf().map_err(|e| io_error(path, e))?;
        if peek.starts_with(&GZIP_MAGIC) {
            let decoder = MultiGzDecoder::new(reader);
            Ok(Input::new(path, Box::new(decoder), None, true))
        } else {
            Ok(Input::new(path, Box::new(reader), len, false))
        }
    }

    fn new(path: &Path, reader: Box<dyn Read>, len: Option<u64>, gzip: bool) -> Input {
        Input {
            path: path.to_path_buf(),
            reader,
            len,
            consumed: 0,
            gzip,
        }
    }

    /// A format error about this file.
    pub fn error(&self, reason: String) -> DataError {
        DataError::Format {
            path: self.path.clone(),
            reason,
        }
    }

    /// Bytes left to read, where the file's length is known.
    pub fn remaining(&self) -> Option<u64> {
        self.len.map(|len| len.saturating_sub(self.consumed))
    }

    /// Reads at most `limit` bytes (fewer only at the end of the input).
    /// Callers bound `limit` by a format's header sizes or have checked it
    /// against memory ([`Input::read_declared`]).
    pub fn read_up_to(&mut self, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let capacity = usize::try_from(limit).ok();
        if capacity.is_none_or(|c| out.try_reserve_exact(c).is_err()) {
            return Err(self.error(format!("cannot allocate {limit} bytes to read it")));
        }
        let read = (&mut self.reader).take(limit).read_to_end(&mut out);
        self.consumed += out.len() as u64;
        read.map_err(|e| self.read_error(e))?;
        Ok(out)
    }

    /// Reads the `declared` data bytes that follow a header, after checking
    /// them against the rest of the file (where its length is known) and the
    /// memory the load needs (`need` bytes at once, the raw bytes and their
    /// decoded values, against `available` as in
    /// [`ensure_fits_within`]); then checks that nothing follows them, reading
    /// at most one byte more. `described` says what the header declares, e.g.
    /// `shape [3, 28, 28] of unsigned byte`.
    pub fn read_declared(
        &mut self,
        declared: u64,
        need: u64,
        described: &str,
        available: Option<u64>,
    ) -> Result<Vec<u8>> {
        if let Some(remaining) = self.remaining() {
            self.check_length(declared, remaining, described)?;
        }
        let what = format!("{}: the values of {described}", self.path.display());
        ensure_fits_within(what, need, available)?;
        let data = self.read_up_to(declared)?;
        let found = data.len() as u64;
        if found < declared {
            return Err(self.truncated(declared, found, described));
        }
        if !self.read_up_to(1)?.is_empty() {
            return Err(self.error(format!(
                "unexpected bytes after the {declared} data bytes of {described}"
            )));
        }
        Ok(data)
    }

    /// Refuses a file whose length does not leave exactly `declared` bytes
    /// after the header.
    fn check_length(&self, declared: u64, remaining: u64, described: &str) -> Result<()> {
        if remaining < declared {
            return Err(self.truncated(declared, remaining, described));
        }
        if remaining > declared {
            return Err(self.error(format!(
                "{} unexpected bytes after the {declared} data bytes of {described}",
                remaining - declared
            )));
        }
        Ok(())
    }

    fn truncated(&self, declared: u64, found: u64, described: &str) -> DataError {
        self.error(format!(
            "truncated: {declared} data bytes declared for {described}, found {found}"
        ))
    }

    /// A read failure: corrupt data for gzip streams, an I/O error otherwise.
    fn read_error(&self, error: std::io::Error) -> DataError {
        if self.gzip {
            self.error(format!("corrupt or truncated gzip data: {error}"))
        } else {
            io_error(&self.path, error)
        }
    }
}

fn io_error(path: &Path, error: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Opens `path` buffered, with its length if it is a regular file.
fn open_buffered(path: &Path) -> Result<(BufReader<File>, Option<u64>)> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    let len = meta.is_file().then_some(meta.len());
    Ok((BufReader::new(file), len))
}
