//! Backups sealed to age recipients before they leave the unit: a reader that yields the
//! age ciphertext of another reader as it is read (memory bounded by one of age's 64 KiB
//! chunks and one read), and the way back for a restore.

use anyhow::{anyhow, Context as _, Result};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::path::Path;
use std::rc::Rc;

/// Where the encryptor writes and the reader takes from.
#[derive(Clone, Default)]
struct Pending(Rc<RefCell<Vec<u8>>>);

impl Write for Pending {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The age encryption of `src` to the recipients, as a reader.
pub struct Sealing<R: Read> {
    src: R,
    enc: Option<age::stream::StreamWriter<Pending>>,
    out: Pending,
    /// how much of `out` was handed out
    at: usize,
    plain: Vec<u8>,
}

impl<R: Read> Sealing<R> {
    pub fn new(src: R, recipients: &[String]) -> Result<Sealing<R>> {
        let keys: Vec<Box<dyn age::Recipient + Send>> = recipients
            .iter()
            .map(|r| {
                crate::config::recipient(r).ok_or_else(|| anyhow!("{r:?} is not an age recipient"))
            })
            .collect::<Result<_>>()?;
        let enc =
            age::Encryptor::with_recipients(keys.iter().map(|k| k.as_ref() as &dyn age::Recipient))
                .map_err(|e| anyhow!("cannot encrypt to backup_age_recipients: {e}"))?;
        let out = Pending::default();
        let enc = enc.wrap_output(out.clone())?;
        Ok(Sealing {
            src,
            enc: Some(enc),
            out,
            at: 0,
            plain: vec![0; 64 << 10],
        })
    }
}

impl<R: Read> Read for Sealing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            {
                let mut out = self.out.0.borrow_mut();
                if self.at < out.len() {
                    let n = buf.len().min(out.len() - self.at);
                    buf[..n].copy_from_slice(&out[self.at..self.at + n]);
                    self.at += n;
                    if self.at == out.len() {
                        out.clear();
                        self.at = 0;
                    }
                    return Ok(n);
                }
            }
            let Some(enc) = self.enc.as_mut() else {
                return Ok(0);
            };
            let n = self.src.read(&mut self.plain)?;
            if n == 0 {
                // The last chunk and its tag; then nothing more.
                if let Some(enc) = self.enc.take() {
                    enc.finish()?;
                }
            } else {
                enc.write_all(&self.plain[..n])?;
            }
        }
    }
}

/// Decrypts the age file `src` into `dst` (a private file) with `identity`; returns the
/// plaintext's sha256, counted as it is written. An identity that does not fit, or
/// ciphertext that does not authenticate, is an error (dst is removed).
pub fn open(src: &Path, dst: &Path, identity: &str) -> Result<String> {
    let key = crate::config::identity(identity)
        .ok_or_else(|| anyhow!("the backup_age_identity secret's `identity` is not an age identity (AGE-SECRET-KEY-1…)"))?;
    let result = (|| -> Result<String> {
        let f = std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let dec = age::Decryptor::new(std::io::BufReader::new(f))
            .map_err(|e| anyhow!("the backup is not an age file: {e}"))?;
        let plain = dec
            .decrypt(std::iter::once(key.as_ref()))
            .map_err(|e| anyhow!("the backup cannot be decrypted with backup_age_identity: {e}"))?;
        let mut out = hostkit::fs::create_private(dst)
            .with_context(|| format!("creating {}", dst.display()))?;
        let mut plain = hostkit::fs::Sha256Reader::new(plain);
        std::io::copy(&mut plain, &mut out)
            .map_err(|e| anyhow!("the backup's ciphertext does not authenticate (damaged or not for this identity): {e}"))?;
        out.sync_all()?;
        Ok(plain.hex())
    })();
    if result.is_err() {
        // A part of a decryption is no archive: nothing refers to it.
        let _ = std::fs::remove_file(dst);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(deprecated)]
    fn what_is_sealed_opens_with_the_identity_only() {
        let id = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut sealed = vec![];
        Sealing::new(&plain[..], &[id.to_public().to_string()])
            .unwrap()
            .read_to_end(&mut sealed)
            .unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1"));
        assert!(!sealed
            .windows(64)
            .any(|w| plain.windows(64).next() == Some(w)));
        let d = tempfile::tempdir().unwrap();
        let (src, dst) = (d.path().join("x.age"), d.path().join("x"));
        std::fs::write(&src, &sealed).unwrap();
        use age::secrecy::ExposeSecret;
        let sha = open(&src, &dst, id.to_string().expose_secret()).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), plain);
        assert_eq!(sha, hostkit::fs::sha256_hex(&plain));
        assert!(open(&src, &dst, other.to_string().expose_secret()).is_err());
        assert!(!dst.exists(), "a failed decryption leaves nothing");
        let mut flipped = sealed.clone();
        let at = flipped.len() - 100;
        flipped[at] ^= 1;
        std::fs::write(&src, &flipped).unwrap();
        assert!(open(&src, &dst, id.to_string().expose_secret()).is_err());
    }
}
