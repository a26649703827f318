//! Checks of an upstream folder's files against the hashes it carries or claims.
//!
//! Two sources of expected sha256s:
//!
//! - the folder's own `SHA256SUMS` file (the format of `sha256sum`: `<64 hex>  <relative path>` a
//!   line, `*` before the path tolerated, blank lines ignored, a line starting with `\` holding an
//!   escaped path), and
//! - the pinned release table [`crate::release::FILES`], when the folder's `config.json` is the
//!   release's (same sha256): the folder then claims to be that release, and every file read must be
//!   the release's.
//!
//! The rules, for every file the loader reads (`config.json` and the joblib files of the models it
//! loads): with `SHA256SUMS`, the file must be listed and match; with the release claim, it must
//! match the pinned hash. A file a manifest lists but that is missing is an error rather than a
//! skipped model. Files a manifest lists that the loader does not read are not checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{release, Error, Result};

/// The name of the checksum file in an upstream folder.
pub const SHA256SUMS: &str = "SHA256SUMS";

/// The short commit of the pinned release, as messages name it.
pub(crate) fn release_name() -> &'static str {
    release::COMMIT.get(..7).unwrap_or(release::COMMIT)
}

/// A parsed `SHA256SUMS`: relative path → (sha256, line number).
#[derive(Debug)]
pub(crate) struct Sha256Sums {
    path: PathBuf,
    entries: HashMap<String, ([u8; 32], usize)>,
}

impl Sha256Sums {
    /// Reads `<dir>/SHA256SUMS` if there is one.
    pub(crate) fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(SHA256SUMS);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, "cannot read the checksum file", e)),
        };
        Self::parse(&bytes, path).map(Some)
    }

    fn parse(bytes: &[u8], path: PathBuf) -> Result<Self> {
        let bad = |line: usize, message: String| Error::Sha256Sums {
            path: path.clone(),
            line,
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            bad(
                1 + count_lines(&bytes[..e.valid_up_to()]),
                "not UTF-8".into(),
            )
        })?;
        let mut entries: HashMap<String, ([u8; 32], usize)> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let (escaped, rest) = match raw.strip_prefix('\\') {
                Some(rest) => (true, rest),
                None => (false, raw),
            };
            let expected_format =
                "expected `<64 hex digits>  <relative path>` (sha256sum's format)";
            let (hex, name) = match (rest.get(..64), rest.get(64..)) {
                (Some(hex), Some(name)) => (hex, name),
                _ => return Err(bad(line, expected_format.into())),
            };
            let digest = parse_hex(hex).ok_or_else(|| {
                bad(
                    line,
                    format!(
                        "`{}` is not 64 hex digits; {expected_format}",
                        hex.escape_debug()
                    ),
                )
            })?;
            let name = name
                .strip_prefix("  ")
                .or_else(|| name.strip_prefix(" *"))
                .filter(|n| !n.is_empty())
                .ok_or_else(|| bad(line, expected_format.into()))?;
            let name = if escaped {
                unescape(name).ok_or_else(|| {
                    bad(
                        line,
                        "the escaped path has a `\\` not followed by `\\` or `n`".into(),
                    )
                })?
            } else {
                name.to_owned()
            };
            let name = normalise(&name);
            match entries.get(&name) {
                Some((other, first)) if *other != digest => {
                    return Err(bad(
                        line,
                        format!(
                            "`{name}` is listed again with another sha256 (first on line {first})"
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    entries.insert(name, (digest, line));
                }
            }
        }
        Ok(Self { path, entries })
    }
}

fn count_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// `./a/b` → `a/b`.
fn normalise(name: &str) -> String {
    let mut name = name;
    while let Some(rest) = name.strip_prefix("./") {
        name = rest;
    }
    name.to_owned()
}

/// sha256sum's escaping of paths holding `\` or a newline.
fn unescape(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let digit = |b: &u8| char::from(*b).to_digit(16);
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *slot = u8::try_from(digit(hi)? * 16 + digit(lo)?).ok()?;
    }
    Some(out)
}

pub(crate) fn to_hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an upstream folder's files were checked against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    /// How many files were checked against the folder's `SHA256SUMS` (0 when it has none).
    pub sha256sums: usize,
    /// Whether the folder's `config.json` is the one of release [`release::COMMIT`], so that every
    /// file read was checked against [`release::FILES`].
    pub release: bool,
}

/// The checks that apply to one folder.
#[derive(Debug)]
pub(crate) struct Integrity {
    sums: Option<Sha256Sums>,
    release: bool,
    checked: usize,
}

impl Integrity {
    /// Reads the folder's `SHA256SUMS` (if any) and checks `config.json`'s bytes against it; the
    /// folder claims to be the release when `config.json` has the release's sha256.
    pub(crate) fn for_folder(dir: &Path, config_path: &Path, config: &[u8]) -> Result<Self> {
        let sums = Sha256Sums::read(dir)?;
        let digest: [u8; 32] = Sha256::digest(config).into();
        let release = release::FILES
            .first()
            .and_then(|(_, hex)| parse_hex(hex))
            .is_some_and(|pinned| pinned == digest);
        let mut me = Self {
            sums,
            release: false,
            checked: 0,
        };
        me.check_sums("config.json", config_path, &digest)?;
        me.release = release;
        Ok(me)
    }

    /// Whether any check applies (so file contents must be hashed).
    fn active(&self) -> bool {
        self.sums.is_some() || self.release
    }

    /// Whether a manifest lists `relative`, so the file must exist.
    pub(crate) fn listed_by(&self, relative: &str) -> Option<String> {
        if let Some(sums) = &self.sums {
            if let Some((_, line)) = sums.entries.get(relative) {
                return Some(format!("{} (line {line})", sums.path.display()));
            }
        }
        if self.release && release::FILES.iter().any(|(name, _)| *name == relative) {
            return Some(format!(
                "the R2-Router release {}, whose config.json this folder has,",
                release_name()
            ));
        }
        None
    }

    /// Checks the bytes of the file at `relative` (read from `path`).
    pub(crate) fn check(&mut self, relative: &str, path: &Path, bytes: &[u8]) -> Result<()> {
        if !self.active() {
            return Ok(());
        }
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        self.check_sums(relative, path, &digest)?;
        if self.release {
            let pinned = release::FILES
                .iter()
                .find(|(name, _)| *name == relative)
                .map(|(_, hex)| *hex);
            if pinned.and_then(parse_hex) != Some(digest) {
                return Err(Error::ReleaseMismatch {
                    path: path.to_path_buf(),
                    file: relative.to_owned(),
                    expected: pinned.map(str::to_owned),
                    actual: to_hex(&digest),
                });
            }
        }
        Ok(())
    }

    fn check_sums(&mut self, relative: &str, path: &Path, digest: &[u8; 32]) -> Result<()> {
        let Some(sums) = &self.sums else {
            return Ok(());
        };
        let Some((expected, line)) = sums.entries.get(relative) else {
            return Err(Error::NotInSha256Sums {
                path: path.to_path_buf(),
                sums: sums.path.clone(),
                file: relative.to_owned(),
            });
        };
        if expected != digest {
            return Err(Error::Sha256Mismatch {
                path: path.to_path_buf(),
                sums: sums.path.clone(),
                line: *line,
                expected: to_hex(expected),
                actual: to_hex(digest),
            });
        }
        self.checked += 1;
        Ok(())
    }

    /// What was checked.
    pub(crate) fn verified(&self) -> Verified {
        Verified {
            sha256sums: self.checked,
            release: self.release,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256sums_lines_are_parsed_as_sha256sum_writes_them() {
        let a = "ab".repeat(32);
        let b = "CD".repeat(32);
        let text =
            format!("{a}  config.json\n\n{b} *./checkpoints/x.joblib\r\n\\{a}  odd\\\\name\n");
        let sums = Sha256Sums::parse(text.as_bytes(), "SHA256SUMS".into()).unwrap();
        assert_eq!(sums.entries["config.json"], ([0xab; 32], 1));
        assert_eq!(sums.entries["checkpoints/x.joblib"], ([0xcd; 32], 3));
        assert_eq!(sums.entries["odd\\name"], ([0xab; 32], 4));
    }

    #[test]
    fn malformed_sha256sums_lines_name_the_line() {
        let a = "ab".repeat(32);
        for (text, line) in [
            (format!("{a}  ok\nnot a line\n"), 2),
            (format!("{}  short\n", &a[..60]), 1),
            (format!("{a} one-space\n"), 1),
            (format!("{a}  \n"), 1),
            (format!("{}zz  x\n", &a[..62]), 1),
            (format!("{a}  x\n{}  x\n", "00".repeat(32)), 2),
        ] {
            match Sha256Sums::parse(text.as_bytes(), "S".into()) {
                Err(Error::Sha256Sums { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
