//! The environment overlay: every key is also `KASSA_<SECTION>__<KEY>`, typed as its default.

use super::raw::RawConfig;
use super::{ConfigError, ENV_PREFIX};
use std::collections::BTreeMap;

/// Applies `KASSA_A__B=value` (and the two Payple names of the settlement sync). A value is read
/// as the type the default has at that path: numbers, booleans and arrays as TOML, everything
/// else as a plain string, so a secret made of digits stays a string.
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(RawConfig::default())
        .map_err(|error| ConfigError::Invalid(format!("defaults cannot be read: {error}")))?;
    let mut settings: BTreeMap<Vec<String>, (&str, &str)> = BTreeMap::new();
    for (name, value) in env {
        let path: Vec<String> = match name.as_str() {
            "PAYPLE_SETTLEMENT_SYNC_ENABLED" => vec!["settlement_sync".into(), "enabled".into()],
            "PAYPLE_SETTLEMENT_SYNC_MAX_PAGES_PER_RUN" => {
                vec!["settlement_sync".into(), "max_pages_per_run".into()]
            }
            _ => match name.strip_prefix(ENV_PREFIX) {
                Some("CONFIG") | None => continue,
                Some(rest) => rest.split("__").map(str::to_ascii_lowercase).collect(),
            },
        };
        // Only names that start with a config key are settings; others (KASSA_CHROMIUM for the
        // tests, say) belong to someone else. A typo inside a known section is still an error.
        let known = path
            .first()
            .is_some_and(|first| defaults.contains_key(first) || first == "public_base_url");
        if !known {
            continue;
        }
        // KASSA_ names come after the Payple ones so that they win.
        let rank = usize::from(name.starts_with(ENV_PREFIX));
        let keep = settings
            .get(&path)
            .is_none_or(|(existing, _)| rank >= usize::from(existing.starts_with(ENV_PREFIX)));
        if keep {
            settings.insert(path, (name.as_str(), value.as_str()));
        }
    }
    for (path, (name, value)) in settings {
        let parsed = typed_env_value(lookup(&defaults, &path), value).map_err(|message| {
            ConfigError::Env {
                name: name.to_owned(),
                message,
            }
        })?;
        insert(table, &path, parsed).map_err(|message| ConfigError::Env {
            name: name.to_owned(),
            message,
        })?;
    }
    Ok(())
}

pub(super) fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut current = table;
    for key in parents {
        current = current.get(key)?.as_table()?;
    }
    current.get(last)
}

fn typed_env_value(default: Option<&toml::Value>, raw: &str) -> Result<toml::Value, String> {
    match default {
        Some(toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Array(_)) => {
            let wrapped: toml::Table = toml::from_str(&format!("value = {raw}")).map_err(|_| {
                format!(
                    "{raw:?} is not a {}",
                    default.map_or("value", toml::Value::type_str)
                )
            })?;
            wrapped
                .get("value")
                .cloned()
                .ok_or_else(|| "no value".to_owned())
        }
        _ => Ok(toml::Value::String(raw.to_owned())),
    }
}

pub(super) fn insert(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("{key} is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}
