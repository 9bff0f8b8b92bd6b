//! The sequence lock both directions of the region use.
//!
//! # Contract
//!
//! * One writer per lock (the controller for the weights, one worker for its
//!   stats block); any number of readers in any process. Readers never block the
//!   writer and never write.
//! * The payload is an array of `AtomicU64` words, so a reader racing the writer
//!   performs no data race (it may only see a mix of generations, which the
//!   sequence check rejects). That is also what lets loom model-check it.
//! * Writer: `seq` goes odd (Relaxed), Release fence, payload stores (Relaxed),
//!   `seq` goes even with Release. Reader: `seq` Acquire (odd = busy), payload loads
//!   (Relaxed), Acquire fence, `seq` again (Relaxed); equal values = a whole
//!   generation. The Release fence orders "seq odd" before every payload store;
//!   the reader's Acquire fence, synchronising with it whenever a payload load saw
//!   a store of the new generation, makes the second `seq` load see "odd" or later.
//! * Payload bytes are moved in native byte order, 8 at a time; a trailing partial
//!   word is zero-padded. Offsets and lengths outside the payload are clipped, never
//!   a panic.
//!
//! Writer and reader are step-wise (`begin`, `put`/`get`, `finish`/`validate`) so
//! the proof harnesses can interleave single steps of both sides.

use crate::sync::{fence, AtomicU64, Ordering};

/// Why a read did not return a whole generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The writer was in the middle of a publication (odd sequence).
    Busy,
    /// The sequence changed while reading: what was read may be torn.
    Torn,
    /// Nothing was ever published (sequence 0).
    Empty,
}

impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Busy => "writer busy",
            Self::Torn => "torn read",
            Self::Empty => "nothing published yet",
        })
    }
}

/// A publication in progress. Dropping it finishes the publication.
#[derive(Debug)]
pub struct Writer<'a> {
    seq: &'a AtomicU64,
    words: &'a [AtomicU64],
    next: u64,
}

impl<'a> Writer<'a> {
    /// Starts a publication: the sequence goes odd.
    #[inline]
    pub fn begin(seq: &'a AtomicU64, words: &'a [AtomicU64]) -> Self {
        // Single writer: nobody else stores `seq`. `& !1` recovers from a writer
        // that died mid-publication (odd sequence left behind).
        let s = seq.load(Ordering::Relaxed) & !1;
        seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd sequence before every payload store below.
        fence(Ordering::Release);
        Writer {
            seq,
            words,
            next: s.wrapping_add(2),
        }
    }

    /// Stores `src` at byte offset `offset` of the payload (`offset` is rounded
    /// down to a word). Returns `false` if anything was clipped.
    #[inline]
    pub fn put(&mut self, offset: usize, src: &[u8]) -> bool {
        let first = offset / 8;
        let cells = self.words.get(first..).unwrap_or(&[]);
        let mut chunks = src.chunks_exact(8);
        let mut stored = 0usize;
        for (cell, c) in cells.iter().zip(&mut chunks) {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            cell.store(u64::from_ne_bytes(w), Ordering::Relaxed);
            stored += 8;
        }
        let rem = chunks.remainder();
        if !rem.is_empty() {
            if let Some(cell) = cells.get(stored / 8) {
                let mut w = [0u8; 8];
                w[..rem.len()].copy_from_slice(rem);
                cell.store(u64::from_ne_bytes(w), Ordering::Relaxed);
                stored += rem.len();
            }
        }
        stored == src.len()
    }

    /// Stores one payload word.
    #[inline]
    pub fn put_word(&mut self, index: usize, value: u64) -> bool {
        match self.words.get(index) {
            Some(c) => {
                c.store(value, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Ends the publication: the sequence goes even (Release). Returns it.
    #[inline]
    pub fn finish(self) -> u64 {
        let s = self.next;
        drop(self);
        s
    }
}

impl Drop for Writer<'_> {
    #[inline]
    fn drop(&mut self) {
        self.seq.store(self.next, Ordering::Release);
    }
}

/// A read in progress.
#[derive(Debug)]
pub struct Reader<'a> {
    seq: &'a AtomicU64,
    words: &'a [AtomicU64],
    start: u64,
}

impl<'a> Reader<'a> {
    /// Starts a read: fails at once if the writer is busy or nothing was published.
    #[inline]
    pub fn begin(seq: &'a AtomicU64, words: &'a [AtomicU64]) -> Result<Self, ReadError> {
        let start = seq.load(Ordering::Acquire);
        if start == 0 {
            return Err(ReadError::Empty);
        }
        if start & 1 == 1 {
            return Err(ReadError::Busy);
        }
        Ok(Reader { seq, words, start })
    }

    /// The sequence this read started at.
    pub fn sequence(&self) -> u64 {
        self.start
    }

    /// Copies payload bytes at `offset` (rounded down to a word) into `dst`.
    /// Returns `false` if anything was clipped (the rest of `dst` is untouched).
    /// Nothing read is trustworthy before [`validate`](Self::validate) succeeds.
    #[inline]
    pub fn get(&self, offset: usize, dst: &mut [u8]) -> bool {
        let first = offset / 8;
        let cells = self.words.get(first..).unwrap_or(&[]);
        let want = dst.len();
        let mut chunks = dst.chunks_exact_mut(8);
        let mut got = 0usize;
        for (cell, c) in cells.iter().zip(&mut chunks) {
            c.copy_from_slice(&cell.load(Ordering::Relaxed).to_ne_bytes());
            got += 8;
        }
        let rem = chunks.into_remainder();
        if !rem.is_empty() {
            if let Some(cell) = cells.get(got / 8) {
                let w = cell.load(Ordering::Relaxed).to_ne_bytes();
                let n = rem.len();
                rem.copy_from_slice(&w[..n]);
                got += n;
            }
        }
        got == want
    }

    /// Loads one payload word.
    #[inline]
    pub fn get_word(&self, index: usize) -> Option<u64> {
        self.words.get(index).map(|c| c.load(Ordering::Relaxed))
    }

    /// Ends the read: `Ok(sequence)` if everything read belongs to one generation.
    #[inline]
    pub fn validate(self) -> Result<u64, ReadError> {
        // Pairs with the writer's Release fence: if any load above saw a store of
        // a newer generation, the sequence load below sees that generation's odd
        // value or later.
        fence(Ordering::Acquire);
        if self.seq.load(Ordering::Relaxed) == self.start {
            Ok(self.start)
        } else {
            Err(ReadError::Torn)
        }
    }
}

/// Publishes `src` as the whole payload (from offset 0). Returns the new sequence.
#[inline]
pub fn write(seq: &AtomicU64, words: &[AtomicU64], src: &[u8]) -> u64 {
    let mut w = Writer::begin(seq, words);
    w.put(0, src);
    w.finish()
}

/// One read attempt of `dst.len()` payload bytes from offset 0.
#[inline]
pub fn try_read(seq: &AtomicU64, words: &[AtomicU64], dst: &mut [u8]) -> Result<u64, ReadError> {
    let r = Reader::begin(seq, words)?;
    r.get(0, dst);
    r.validate()
}

/// Up to `tries` read attempts; the last error if none returned a whole
/// generation. `dst` holds garbage after a failure: read into scratch space and
/// keep the last good value elsewhere.
#[inline]
pub fn read_bounded(
    seq: &AtomicU64,
    words: &[AtomicU64],
    dst: &mut [u8],
    tries: u32,
) -> Result<u64, ReadError> {
    let mut last = ReadError::Busy;
    for _ in 0..tries.max(1) {
        match try_read(seq, words, dst) {
            Ok(s) => return Ok(s),
            Err(ReadError::Empty) => return Err(ReadError::Empty),
            Err(e) => {
                last = e;
                core::hint::spin_loop();
            }
        }
    }
    Err(last)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn cells(n: usize) -> std::vec::Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn round_trip_with_partial_word_and_clipping() {
        let seq = AtomicU64::new(0);
        let words = cells(2);
        let mut out = [0u8; 11];
        assert_eq!(try_read(&seq, &words, &mut out), Err(ReadError::Empty));
        let src: [u8; 11] = core::array::from_fn(|i| i as u8 + 1);
        assert_eq!(write(&seq, &words, &src), 2);
        assert_eq!(try_read(&seq, &words, &mut out), Ok(2));
        assert_eq!(out, src);
        // Clipped writes and reads report it and do not panic.
        let mut w = Writer::begin(&seq, &words);
        assert!(!w.put(8, &[1u8; 16]));
        assert!(!w.put(800, &[1u8; 8]));
        assert!(!w.put_word(2, 0));
        assert_eq!(w.finish(), 4);
        let r = Reader::begin(&seq, &words).unwrap();
        assert!(!r.get(8, &mut [0u8; 16]));
        assert_eq!(r.get_word(9), None);
        assert_eq!(r.validate(), Ok(4));
    }

    #[test]
    fn reader_sees_busy_and_torn() {
        let seq = AtomicU64::new(0);
        let words = cells(1);
        write(&seq, &words, &[0u8; 8]);
        let r = Reader::begin(&seq, &words).unwrap();
        let w = Writer::begin(&seq, &words);
        assert_eq!(Reader::begin(&seq, &words).err(), Some(ReadError::Busy));
        assert_eq!(
            read_bounded(&seq, &words, &mut [0u8; 8], 3),
            Err(ReadError::Busy)
        );
        drop(w);
        assert_eq!(r.validate(), Err(ReadError::Torn));
    }

    #[test]
    fn writer_recovers_from_odd_sequence() {
        let seq = AtomicU64::new(7);
        let words = cells(1);
        assert_eq!(write(&seq, &words, &[1u8; 8]), 8);
    }
}
