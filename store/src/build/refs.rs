//! Reference scanning and hashing modulo a self-reference, over byte streams.
//!
//! A build output may refer to any path of the build's input closure or to the build's own
//! outputs; Nix records exactly those whose 32-character hash part occurs somewhere in the
//! output's NAR serialisation (`RefScanSink`). [`RefScanner`] reproduces that search over a
//! stream of chunks (a hash may straddle two chunks). [`ModuloHasher`] is Nix's
//! `HashModuloSink`: the content hash of a fixed-output path with every occurrence of its
//! own hash part replaced by zeros, followed by the positions of those occurrences.
//!
//! Invariant: results do not depend on how the stream is cut into chunks.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};

use crate::hash::{HashAlgo, Hasher};
use crate::nixbase32::ALPHABET;

const REF_LEN: usize = 32;

fn is_base32_table() -> [bool; 256] {
    let mut t = [false; 256];
    for &c in ALPHABET.iter() {
        t[c as usize] = true;
    }
    t
}

/// Finds which of a set of hash parts occur in a byte stream.
pub struct RefScanner<K: Clone + Ord> {
    wanted: HashMap<[u8; REF_LEN], K>,
    seen: BTreeSet<K>,
    tail: Vec<u8>,
    table: [bool; 256],
}

impl<K: Clone + Ord> RefScanner<K> {
    /// `candidates`: (32-character hash part, key reported when it is found).
    pub fn new(candidates: impl IntoIterator<Item = (String, K)>) -> Self {
        let mut wanted = HashMap::new();
        for (h, k) in candidates {
            if let Ok(arr) = <[u8; REF_LEN]>::try_from(h.as_bytes()) {
                wanted.insert(arr, k);
            }
        }
        RefScanner {
            wanted,
            seen: BTreeSet::new(),
            tail: Vec::with_capacity(2 * REF_LEN),
            table: is_base32_table(),
        }
    }

    fn search(&mut self, s: &[u8]) {
        let mut i = 0;
        while i + REF_LEN <= s.len() {
            let mut skip = None;
            for j in (0..REF_LEN).rev() {
                if !self.table[s[i + j] as usize] {
                    skip = Some(j + 1);
                    break;
                }
            }
            if let Some(n) = skip {
                i += n;
                continue;
            }
            let key: [u8; REF_LEN] = s[i..i + REF_LEN]
                .try_into()
                .expect("slice has REF_LEN bytes");
            if let Some(k) = self.wanted.remove(&key) {
                self.seen.insert(k);
            }
            i += 1;
        }
    }

    /// Feed the next chunk of the stream.
    pub fn feed(&mut self, data: &[u8]) {
        if self.wanted.is_empty() {
            return;
        }
        // A reference may span the previous chunk's tail and this chunk's head.
        let head = data.len().min(REF_LEN);
        let mut joint = std::mem::take(&mut self.tail);
        joint.extend_from_slice(&data[..head]);
        self.search(&joint);
        self.search(data);
        // Keep the last REF_LEN - 1 bytes of everything seen so far.
        joint.extend_from_slice(&data[head..]);
        let keep = joint.len().min(REF_LEN - 1);
        self.tail = joint[joint.len() - keep..].to_vec();
    }

    /// The keys whose hash part occurred.
    pub fn finish(self) -> BTreeSet<K> {
        self.seen
    }
}

impl<K: Clone + Ord> Write for RefScanner<K> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Nix's `HashModuloSink`: hashes the stream with each occurrence of `modulus` replaced by
/// NUL bytes, then `|<offset>` for every occurrence.
pub struct ModuloHasher {
    hasher: Hasher,
    modulus: Vec<u8>,
    pending: Vec<u8>,
    pos: u64,
    matches: Vec<u64>,
}

impl ModuloHasher {
    pub fn new(algo: HashAlgo, modulus: &str) -> Self {
        ModuloHasher {
            hasher: Hasher::new(algo),
            modulus: modulus.as_bytes().to_vec(),
            pending: Vec::new(),
            pos: 0,
            matches: Vec::new(),
        }
    }

    fn process(&mut self, final_: bool) {
        let m = self.modulus.len();
        let mut s = std::mem::take(&mut self.pending);
        if m > 0 {
            let mut i = 0;
            while i + m <= s.len() {
                if s[i..i + m] == self.modulus[..] {
                    self.matches.push(self.pos + i as u64);
                    s[i..i + m].fill(0);
                    i += m;
                } else {
                    i += 1;
                }
            }
        }
        // Everything except a possible partial match at the end can be hashed now.
        let keep = if final_ || m == 0 {
            0
        } else {
            (m - 1).min(s.len())
        };
        let done = s.len() - keep;
        self.hasher.update(&s[..done]);
        self.pos += done as u64;
        self.pending = s[done..].to_vec();
    }

    pub fn finish(mut self) -> crate::hash::Hash {
        self.process(true);
        for p in &self.matches {
            self.hasher.update(format!("|{p}").as_bytes());
        }
        self.hasher.finish()
    }
}

impl Write for ModuloHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= 64 * 1024 {
            self.process(false);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;

    const H1: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    const H2: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";

    #[test]
    fn finds_references_across_chunks() {
        let text = format!("xx/nix/store/{H1}-foo and {H2}!");
        for cut in 0..text.len() {
            let mut s = RefScanner::new([(H1.to_owned(), 1), (H2.to_owned(), 2)]);
            s.feed(&text.as_bytes()[..cut]);
            s.feed(&text.as_bytes()[cut..]);
            assert_eq!(s.finish(), BTreeSet::from([1, 2]), "cut at {cut}");
        }
        let mut s = RefScanner::new([(H1.to_owned(), 1)]);
        for b in text.as_bytes() {
            s.feed(std::slice::from_ref(b));
        }
        assert_eq!(s.finish(), BTreeSet::from([1]));
    }

    #[test]
    fn ignores_partial_and_absent_hashes() {
        let mut s = RefScanner::new([(H1.to_owned(), 1)]);
        s.feed(&H1.as_bytes()[..31]);
        s.feed(b"-");
        assert!(s.finish().is_empty());
    }

    #[test]
    fn modulo_hash_without_occurrence_is_plain_hash() {
        let mut m = ModuloHasher::new(HashAlgo::Sha256, H1);
        m.write_all(b"hello world").unwrap();
        assert_eq!(m.finish(), Hash::sha256(b"hello world"));
    }

    #[test]
    fn modulo_hash_zeroes_and_appends_positions() {
        let data = format!("ab{H1}cd{H1}");
        let mut expected = b"ab".to_vec();
        expected.extend([0u8; 32]);
        expected.extend(b"cd");
        expected.extend([0u8; 32]);
        expected.extend(b"|2|36");
        for cut in 0..data.len() {
            let mut m = ModuloHasher::new(HashAlgo::Sha256, H1);
            m.write_all(&data.as_bytes()[..cut]).unwrap();
            m.process(false);
            m.write_all(&data.as_bytes()[cut..]).unwrap();
            assert_eq!(m.finish(), Hash::sha256(&expected), "cut at {cut}");
        }
    }
}
