//! Where a secret may come from besides the config file: a file named by its `*_file` key
//! (`token_file = "/run/secrets/kassa-admin"`), or a systemd credential
//! (`LoadCredential=admin.token:...`, read from `$CREDENTIALS_DIRECTORY/admin.token`).
//!
//! Invariant: a secret's value is read here once, trimmed, and never printed; a blank file
//! or credential counts as not set, so an empty placeholder changes nothing.

use super::ConfigError;
use std::path::{Path, PathBuf};

/// Every secret key, as its section path and key.
pub const SECRET_KEYS: [(&[&str], &str); 8] = [
    (&["admin"], "token"),
    (&["gateway", "portone"], "imp_key"),
    (&["gateway", "portone"], "imp_secret"),
    (&["gateway", "toss"], "secret_key"),
    (&["gateway", "payple"], "cst_id"),
    (&["gateway", "payple"], "cust_key"),
    (&["gateway", "payple"], "refund_key"),
    (&["alerts"], "slack_webhook_url"),
];
/// Largest secret file read.
const SECRET_FILE_BYTES_MAX: u64 = 16 * 1024;

/// The name of a secret's systemd credential: its dotted key path, `gateway.toss.secret_key`.
pub fn credential_name(section: &[&str], key: &str) -> String {
    let mut name = section.join(".");
    name.push('.');
    name.push_str(key);
    name
}

fn read_secret(path: &Path) -> Result<Option<String>, ConfigError> {
    let read = || -> std::io::Result<String> {
        let file = std::fs::File::open(path)?;
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, SECRET_FILE_BYTES_MAX),
            &mut text,
        )?;
        Ok(text)
    };
    let text = read().map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = text.trim();
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

fn section_mut<'a>(table: &'a mut toml::Table, section: &[&str]) -> Option<&'a mut toml::Table> {
    let mut current = table;
    for name in section {
        current = current.get_mut(*name)?.as_table_mut()?;
    }
    Some(current)
}

fn set(
    table: &mut toml::Table,
    section: &[&str],
    key: &str,
    value: String,
) -> Result<(), ConfigError> {
    let path: Vec<String> = section
        .iter()
        .map(|name| (*name).to_owned())
        .chain(std::iter::once(key.to_owned()))
        .collect();
    super::env::insert(table, &path, toml::Value::String(value)).map_err(ConfigError::Invalid)
}

/// Replaces each secret named by a `*_file` key with that file's content, then each secret
/// with a credential in `$CREDENTIALS_DIRECTORY` (from `env`) with the credential.
pub(super) fn apply_secret_sources(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let credentials = env
        .iter()
        .find(|(name, _)| name == "CREDENTIALS_DIRECTORY")
        .map(|(_, dir)| PathBuf::from(dir))
        .filter(|dir| !dir.as_os_str().is_empty());
    for (section, key) in SECRET_KEYS {
        let file_key = format!("{key}_file");
        let named = section_mut(table, section).and_then(|found| found.remove(&file_key));
        if let Some(named) = named {
            let path = named.as_str().ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "{}.{file_key} must be the path of a file",
                    section.join(".")
                ))
            })?;
            if let Some(secret) = read_secret(Path::new(path))? {
                set(table, section, key, secret)?;
            }
        }
        if let Some(dir) = &credentials {
            let path = dir.join(credential_name(section, key));
            if path.is_file()
                && let Some(secret) = read_secret(&path)?
            {
                set(table, section, key, secret)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_comes_from_its_file_or_its_credential_and_a_blank_one_changes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "from-file\n").expect("write");
        let credentials = dir.path().join("credentials");
        std::fs::create_dir(&credentials).expect("mkdir");
        std::fs::write(
            credentials.join("gateway.toss.secret_key"),
            " test_sk_cred \n",
        )
        .expect("write");
        std::fs::write(credentials.join("gateway.payple.cust_key"), "\n").expect("write");
        let mut table: toml::Table = toml::from_str(&format!(
            "[admin]\ntoken_file = {:?}\n[gateway.payple]\ncust_key = \"kept\"\n",
            token_file.display().to_string()
        ))
        .expect("toml");
        let env = vec![(
            "CREDENTIALS_DIRECTORY".to_owned(),
            credentials.display().to_string(),
        )];
        apply_secret_sources(&mut table, &env).expect("sources");
        assert_eq!(table["admin"]["token"].as_str(), Some("from-file"));
        assert!(table["admin"].get("token_file").is_none());
        assert_eq!(
            table["gateway"]["toss"]["secret_key"].as_str(),
            Some("test_sk_cred")
        );
        assert_eq!(
            table["gateway"]["payple"]["cust_key"].as_str(),
            Some("kept")
        );
    }

    #[test]
    fn a_missing_secret_file_is_a_clear_error() {
        let mut table: toml::Table =
            toml::from_str("[admin]\ntoken_file = \"/nonexistent/kassa-token\"\n").expect("toml");
        let error = apply_secret_sources(&mut table, &[]).expect_err("missing file");
        assert!(
            error.to_string().contains("/nonexistent/kassa-token"),
            "{error}"
        );
    }
}
