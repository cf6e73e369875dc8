//! `squall keys` and `squall secrets`: API keys and function secrets.

use crate::api_client::ApiClient;
use crate::args::{KeysCommand, SecretsCommand};
use crate::commands::print_json;
use anyhow::{bail, Context as _};
use reqwest::Method;
use squall_api::functions::{SecretValues, Secrets};
use squall_api::operations::{CreatedKey, KeyList, NewKey};

/// Parses `NAME=VALUE` pairs; a value `@path` is read from that file (trailing newline dropped).
pub fn parse_pairs(pairs: &[String]) -> anyhow::Result<SecretValues> {
    let mut map = SecretValues::new();
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("{pair:?} is not NAME=VALUE");
        };
        let value = match value.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the value of {name} from {path}"))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            None => value.to_string(),
        };
        map.insert(name.to_string(), value);
    }
    Ok(map)
}

/// `squall keys create|ls|rm`.
pub async fn keys(client: &ApiClient, json: bool, command: &KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            scopes,
            sigv4,
            functions,
            rate_per_s,
            burst,
        } => {
            let body = NewKey {
                name: name.clone(),
                scopes: scopes.clone(),
                sigv4: *sigv4,
                functions: functions.clone(),
                rate_per_s: *rate_per_s,
                burst: *burst,
            };
            let answer = client
                .answer(client.request(Method::POST, &["v1", "keys"]).json(&body))
                .await?;
            if json {
                return answer.print();
            }
            let created: CreatedKey = answer.decode()?;
            println!("{}", created.key);
            eprintln!("key {name} created; it is shown only this once");
        }
        KeysCommand::Ls => {
            let answer = client
                .answer(client.request(Method::GET, &["v1", "keys"]))
                .await?;
            if json {
                return answer.print();
            }
            let list: KeyList = answer.decode()?;
            if list.keys.is_empty() {
                println!("no keys (besides the admin key from the dispatcher's environment)");
            }
            for key in &list.keys {
                let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
                let mut limits = Vec::new();
                if !key.limits.functions.is_empty() {
                    limits.push(format!("functions={}", key.limits.functions.join(",")));
                }
                if let Some(rate) = key.limits.rate_per_s {
                    limits.push(format!("rate={rate}/s"));
                }
                if let Some(burst) = key.limits.burst {
                    limits.push(format!("burst={burst}"));
                }
                println!(
                    "{:<24}  {:<20}  {}  {}",
                    key.name,
                    scopes.join(","),
                    key.created_at,
                    limits.join(" ")
                );
            }
        }
        KeysCommand::Rm { name } => {
            client
                .send(client.request(Method::DELETE, &["v1", "keys", name]))
                .await?;
            if json {
                return print_json(&serde_json::json!({ "revoked": name }));
            }
            println!("key {name} revoked");
        }
    }
    Ok(())
}

/// `squall secrets set|ls|rm`.
pub async fn secrets(
    client: &ApiClient,
    json: bool,
    command: &SecretsCommand,
) -> anyhow::Result<()> {
    let (function, answer) = match command {
        SecretsCommand::Set { function, pairs } => {
            let body = parse_pairs(pairs)?;
            let answer = client
                .answer(
                    client
                        .request(Method::PUT, &["v1", "functions", function, "secrets"])
                        .json(&body),
                )
                .await?;
            (function, answer)
        }
        SecretsCommand::Ls { function } => {
            let answer = client
                .answer(client.request(Method::GET, &["v1", "functions", function, "secrets"]))
                .await?;
            (function, answer)
        }
        SecretsCommand::Rm { function } => {
            client
                .send(client.request(Method::DELETE, &["v1", "functions", function, "secrets"]))
                .await?;
            if json {
                return print_json(&serde_json::json!({ "function": function, "secrets": {} }));
            }
            println!("secrets of {function} removed");
            return Ok(());
        }
    };
    if json {
        return answer.print();
    }
    let view: Secrets = answer.decode()?;
    if view.secrets.is_empty() {
        println!("{function} has no secrets");
    }
    for name in view.secrets.keys() {
        println!("{name}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_read_values_inline_or_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let map = parse_pairs(&["A=1=2".into(), format!("B=@{}", file.display())]).unwrap();
        assert_eq!(map["A"], "1=2");
        assert_eq!(map["B"], "from-file");
        assert!(parse_pairs(&["novalue".into()]).is_err());
    }
}
