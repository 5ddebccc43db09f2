//! `--credentials FILE`: the users a proxy lets in, one `user:password` per line.
//!
//! Blank lines and lines starting with `#` are skipped; the password is everything after
//! the first colon (it may hold colons). The file is read once at start. Passwords are
//! compared in time that does not depend on where they differ.

use std::path::Path;

use super::socks::Credentials;
use crate::error::{Error, Result};

/// The users let in.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CredentialStore {
    /// (user, password) pairs, in file order.
    users: Vec<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CredentialStore({} users)", self.users.len())
    }
}

impl CredentialStore {
    /// Reads `path`.
    ///
    /// # Errors
    /// [`Error::Usage`] when the file cannot be read, has a line without a colon, or
    /// names nobody.
    pub fn load(path: &Path) -> Result<CredentialStore> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Usage(format!("cannot read --credentials {}: {e}", path.display()))
        })?;
        CredentialStore::parse(&text)
            .map_err(|e| Error::Usage(format!("--credentials {}: {e}", path.display())))
    }

    /// Parses the file's text.
    ///
    /// # Errors
    /// A message naming the first bad line, or saying the file names nobody.
    pub fn parse(text: &str) -> std::result::Result<CredentialStore, String> {
        let mut users = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let Some((user, password)) = line.split_once(':') else {
                return Err(format!(
                    "line {} has no colon; write one user:password per line",
                    number + 1
                ));
            };
            if user.is_empty() || user.len() > 255 || password.len() > 255 {
                return Err(format!(
                    "line {}: user names and passwords are 1 to 255 bytes (SOCKS5 carries no more)",
                    number + 1
                ));
            }
            users.push((user.as_bytes().to_vec(), password.as_bytes().to_vec()));
        }
        if users.is_empty() {
            return Err("the file names no user; write one user:password per line".into());
        }
        Ok(CredentialStore { users })
    }

    /// Whether `given` names a user with that password.
    pub fn accepts(&self, given: &Credentials) -> bool {
        let mut accepted = false;
        for (user, password) in &self.users {
            accepted |= equal_in_constant_time(user, &given.user)
                & equal_in_constant_time(password, &given.password);
        }
        accepted
    }
}

/// Byte-string equality whose time depends only on the lengths.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.as_bytes().to_vec(),
            password: password.as_bytes().to_vec(),
        }
    }

    #[test]
    fn users_and_passwords_are_checked() -> std::result::Result<(), String> {
        let store = CredentialStore::parse("# proxy users\nalice:s3cret\n\nbob:a:b\n")?;
        assert!(store.accepts(&given("alice", "s3cret")));
        assert!(store.accepts(&given("bob", "a:b")));
        assert!(!store.accepts(&given("alice", "s3cre")));
        assert!(!store.accepts(&given("mallory", "s3cret")));
        assert!(!format!("{store:?}").contains("s3cret"));
        Ok(())
    }

    #[test]
    fn bad_files_say_which_line() {
        assert!(CredentialStore::parse("alice\n").is_err_and(|e| e.contains("line 1")));
        assert!(CredentialStore::parse("# nobody\n").is_err_and(|e| e.contains("no user")));
    }
}
