//! Store path computation for paths copied into the store (`"${./foo}"`, `--raw ./foo`).
//!
//! Invariant: the path equals what Nix's `copyPathToStore` would produce: the NAR serialisation
//! of the file system object, hashed with SHA-256, turned into a fixed-output "source" store
//! path named after the base name. Nothing is written; the store itself is another crate's job.

use sha2::{Digest, Sha256};
use std::path::Path;

const BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Nix's base-32 encoding.
pub fn nix_base32(bytes: &[u8]) -> String {
    let len = (bytes.len() * 8).div_ceil(5);
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let mut c = (bytes[i] as u16) >> j;
        if i + 1 < bytes.len() {
            c |= (bytes[i + 1] as u16) << (8 - j);
        }
        out.push(BASE32[(c & 0x1f) as usize] as char);
    }
    out
}

fn compress(hash: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    for (i, b) in hash.iter().enumerate() {
        out[i % size] ^= b;
    }
    out
}

fn nar_str(h: &mut Sha256, s: &[u8]) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s);
    let pad = (8 - s.len() % 8) % 8;
    h.update(&[0u8; 8][..pad]);
}

fn nar_node(h: &mut Sha256, p: &Path) -> std::io::Result<()> {
    let md = std::fs::symlink_metadata(p)?;
    nar_str(h, b"(");
    nar_str(h, b"type");
    if md.file_type().is_symlink() {
        nar_str(h, b"symlink");
        nar_str(h, b"target");
        let t = std::fs::read_link(p)?;
        nar_str(h, t.as_os_str().as_encoded_bytes());
    } else if md.is_dir() {
        nar_str(h, b"directory");
        let mut names: Vec<_> = std::fs::read_dir(p)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for n in names {
            nar_str(h, b"entry");
            nar_str(h, b"(");
            nar_str(h, b"name");
            nar_str(h, n.as_encoded_bytes());
            nar_str(h, b"node");
            nar_node(h, &p.join(&n))?;
            nar_str(h, b")");
        }
    } else {
        use std::os::unix::fs::PermissionsExt;
        nar_str(h, b"regular");
        if md.permissions().mode() & 0o100 != 0 {
            nar_str(h, b"executable");
            nar_str(h, b"");
        }
        nar_str(h, b"contents");
        let data = std::fs::read(p)?;
        nar_str(h, &data);
    }
    nar_str(h, b")");
    Ok(())
}

/// SHA-256 of the NAR serialisation of `p`.
pub fn nar_hash(p: &Path) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    nar_str(&mut h, b"nix-archive-1");
    nar_node(&mut h, p)?;
    Ok(h.finalize().into())
}

/// The store path of a source added by NAR hash (no references).
pub fn source_store_path(store_dir: &str, nar_sha256: &[u8; 32], name: &str) -> String {
    let hex: String = nar_sha256.iter().map(|b| format!("{b:02x}")).collect();
    let fingerprint = format!("source:sha256:{hex}:{store_dir}:{name}");
    let h: [u8; 32] = Sha256::digest(fingerprint.as_bytes()).into();
    format!("{}/{}-{}", store_dir, nix_base32(&compress(&h, 20)), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_known() {
        // sha256("") in Nix base32.
        let h: [u8; 32] = Sha256::digest(b"").into();
        assert_eq!(
            nix_base32(&h),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }
}
