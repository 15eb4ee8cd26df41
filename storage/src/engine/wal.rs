//! The write-ahead log that makes a batch durable before the B-tree has it on disk.
//!
//! A durable redb commit rewrites every page the batch touched, copy on write, and fsyncs
//! them: a group of creates, each writing about twenty index entries spread across the key
//! space, costs hundreds of scattered page writes. Appending the batch here and fsyncing one
//! file costs one sequential write. The B-tree then takes the batch without durability and
//! is made durable once per checkpoint, so that a page touched by many groups is written
//! once. What the log holds past the last checkpoint is applied again when the engine opens.
//!
//! One record per batch: `[payload length u32 LE][CRC-32 of the payload u32 LE][payload]`;
//! the payload is the batch's writes, each `[1 = put, 0 = delete][key length u32 LE][key]`
//! and, for a put, `[value length u32 LE][value]`. A record cut short by a crash fails its
//! length or checksum and ends the log there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use super::{Batch, EngineError};

pub(super) struct Wal {
    file: File,
    len: u64,
    /// Records appended since the log was last emptied.
    records: usize,
}

fn io(e: std::io::Error) -> EngineError {
    EngineError(e.into())
}

impl Wal {
    /// Opens (creating if needed) the log at `path`, with the batches it holds in order. A torn
    /// record at the end is cut off, so the next append follows the last whole one.
    pub fn open(path: &Path) -> Result<(Wal, Vec<Batch>), EngineError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut batches = Vec::new();
        let mut at = 0;
        while let Some((batch, next)) = record_at(&bytes, at) {
            batches.push(batch);
            at = next;
        }
        if at < bytes.len() {
            if !is_last_record(&bytes, at) {
                // Damage with whole records after it is not a crash mid-append: refusing to
                // open beats silently dropping the acknowledged writes that follow.
                return Err(EngineError::corrupt(format!(
                    "write-ahead log {} is damaged at byte {at}, before its end",
                    path.display()
                )));
            }
            tracing::warn!(
                kept = at,
                dropped = bytes.len() - at,
                "write-ahead log ends in a torn record; cut there"
            );
            file.set_len(at as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        Ok((
            Wal {
                file,
                len: at as u64,
                records: batches.len(),
            },
            batches,
        ))
    }

    /// Appends `batch` and returns once it is on disk.
    pub fn append(&mut self, batch: &Batch) -> Result<(), EngineError> {
        let mut payload = Vec::new();
        for (key, value) in batch.writes() {
            payload.push(value.is_some() as u8);
            put_bytes(&mut payload, key);
            if let Some(value) = value {
                put_bytes(&mut payload, value);
            }
        }
        let mut record = Vec::with_capacity(payload.len() + 8);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let written = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Leave no partial record behind a batch that is reported failed.
            let _ = self.file.set_len(self.len);
            return Err(io(e));
        }
        self.len += record.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Takes back the last append, whose batch the engine then failed to apply.
    pub fn take_back(&mut self, len: u64) -> Result<(), EngineError> {
        self.truncate(len)?;
        self.records -= 1;
        Ok(())
    }

    /// Empties the log, once everything in it is durable elsewhere.
    pub fn clear(&mut self) -> Result<(), EngineError> {
        self.truncate(0)?;
        self.records = 0;
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> Result<(), EngineError> {
        self.file.set_len(len).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.len = len;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn records(&self) -> usize {
        self.records
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Whether the record starting at `at` reaches the end of the log (or is cut short by it):
/// only the last append can have been torn by a crash.
fn is_last_record(bytes: &[u8], at: usize) -> bool {
    let len = Cursor(&bytes[at..]).u32();
    len.is_none_or(|len| at + 8 + len as usize >= bytes.len())
}

/// The whole record at `at` and where the next one starts; `None` at the end or at a torn
/// or damaged record.
fn record_at(bytes: &[u8], at: usize) -> Option<(Batch, usize)> {
    let mut header = Cursor(bytes.get(at..)?);
    let len = header.u32()? as usize;
    let crc = header.u32()?;
    let payload = header.take(len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let mut batch = Batch::default();
    let mut writes = Cursor(payload);
    while let Some(&[kind]) = writes.take(1) {
        let key = writes.bytes()?.to_vec();
        match kind {
            1 => batch.put(key, writes.bytes()?.to_vec()),
            _ => batch.delete(key),
        }
    }
    Some((batch, at + 8 + len))
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(i: u8) -> Batch {
        let mut batch = Batch::default();
        batch.put(vec![b'k', i], vec![i; 300]);
        batch.delete(vec![b'd', i]);
        batch
    }

    type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

    fn keys(batches: &[Batch]) -> Vec<Writes> {
        batches
            .iter()
            .map(|b| {
                b.writes()
                    .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_torn_record_ends_the_log_and_the_next_append_follows_the_last_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.wal");
        let (mut wal, found) = Wal::open(&path).unwrap();
        assert!(found.is_empty());
        for i in 0..3 {
            wal.append(&batch(i)).unwrap();
        }
        let whole = wal.len();
        drop(wal);
        // A crash in the middle of the third record.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(whole - 100).unwrap();
        let (mut wal, found) = Wal::open(&path).unwrap();
        assert_eq!(keys(&found), keys(&[batch(0), batch(1)]));
        wal.append(&batch(3)).unwrap();
        drop(wal);
        let (mut wal, found) = Wal::open(&path).unwrap();
        assert_eq!(keys(&found), keys(&[batch(0), batch(1), batch(3)]));
        wal.clear().unwrap();
        assert!(Wal::open(&path).unwrap().1.is_empty());
    }

    #[test]
    fn damage_ends_the_log_only_in_its_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.append(&batch(0)).unwrap();
        let first = wal.len() as usize;
        wal.append(&batch(1)).unwrap();
        drop(wal);
        let written = std::fs::read(&path).unwrap();
        let mut bytes = written.clone();
        bytes[first + 20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, found) = Wal::open(&path).unwrap();
        assert_eq!(keys(&found), keys(&[batch(0)]));
        // The same damage in the first record, with a whole record after it, is refused.
        let mut bytes = written;
        bytes[20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let error = Wal::open(&path)
            .err()
            .expect("damage before the end is refused");
        assert!(error.to_string().contains("damaged at byte 0"), "{error}");
    }
}
