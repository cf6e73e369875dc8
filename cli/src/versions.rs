//! `squall versions`, `squall alias …` and `squall rollback`: a function's numbered versions and
//! the aliases that route to them.

use crate::api_client::ApiClient;
use crate::args::AliasCommand;
use crate::commands::print_json;
use reqwest::Method;
use squall_api::versions::{Alias, AliasList, VersionList};
use std::collections::BTreeMap;

/// `squall versions NAME`.
pub async fn versions(client: &ApiClient, json: bool, name: &str) -> anyhow::Result<()> {
    let answer = client
        .answer(client.request(Method::GET, &["v1", "functions", name, "versions"]))
        .await?;
    if json {
        return answer.print();
    }
    let list: VersionList = answer.decode()?;
    println!(
        "{:<8} {:<14} {:<26} ALIASES",
        "VERSION", "SHA256", "DEPLOYED"
    );
    for v in &list.versions {
        let number = if v.latest {
            format!("{} *", v.version)
        } else {
            v.version.to_string()
        };
        println!(
            "{:<8} {:<14} {:<26} {}",
            number,
            &v.sha256[..v.sha256.len().min(12)],
            v.deployed_at,
            v.aliases.join(",")
        );
    }
    Ok(())
}

/// Parses `V=W` weights (`4=0.1`).
pub fn parse_weights(weights: &[String]) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut parsed = BTreeMap::new();
    for text in weights {
        let Some((version, weight)) = text.split_once('=') else {
            anyhow::bail!("--weight {text:?} must be VERSION=FRACTION, e.g. 4=0.1");
        };
        let version: u32 = version.parse().map_err(|_| {
            anyhow::anyhow!("--weight {text:?}: {version:?} is not a version number")
        })?;
        let weight: f64 = weight
            .parse()
            .map_err(|_| anyhow::anyhow!("--weight {text:?}: {weight:?} is not a number"))?;
        parsed.insert(version.to_string(), weight);
    }
    Ok(parsed)
}

fn describe(alias: &Alias) -> String {
    let mut text = format!("{}:{} -> {}", alias.function, alias.name, alias.version);
    for (version, weight) in &alias.weights {
        text.push_str(&format!(" ({version}: {:.0}%)", weight * 100.0));
    }
    text
}

async fn print_alias(answer: crate::api_client::Answer, json: bool) -> anyhow::Result<()> {
    if json {
        return answer.print();
    }
    println!("{}", describe(&answer.decode::<Alias>()?));
    Ok(())
}

/// `squall alias set|ls|rm`.
pub async fn alias(client: &ApiClient, json: bool, command: &AliasCommand) -> anyhow::Result<()> {
    match command {
        AliasCommand::Set {
            name,
            alias,
            version,
            weight,
        } => {
            let body = serde_json::json!({ "version": version, "weights": parse_weights(weight)? });
            let answer = client
                .answer(
                    client
                        .request(Method::PUT, &["v1", "functions", name, "aliases", alias])
                        .json(&body),
                )
                .await?;
            print_alias(answer, json).await
        }
        AliasCommand::Ls { name } => {
            let answer = client
                .answer(client.request(Method::GET, &["v1", "functions", name, "aliases"]))
                .await?;
            if json {
                return answer.print();
            }
            for alias in answer.decode::<AliasList>()?.aliases {
                println!("{}", describe(&alias));
            }
            Ok(())
        }
        AliasCommand::Rm { name, alias } => {
            client
                .send(client.request(Method::DELETE, &["v1", "functions", name, "aliases", alias]))
                .await?;
            if json {
                return print_json(&serde_json::json!({ "deleted": format!("{name}:{alias}") }));
            }
            println!("deleted {name}:{alias}");
            Ok(())
        }
    }
}

/// `squall rollback NAME ALIAS`: the alias returns to its previous target.
pub async fn rollback(
    client: &ApiClient,
    json: bool,
    name: &str,
    alias: &str,
) -> anyhow::Result<()> {
    let answer = client
        .answer(client.request(
            Method::POST,
            &["v1", "functions", name, "aliases", alias, "rollback"],
        ))
        .await?;
    print_alias(answer, json).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_version_equals_fraction() {
        let w = parse_weights(&["4=0.1".into(), "5=0.25".into()]).unwrap();
        assert_eq!(w["4"], 0.1);
        assert_eq!(w["5"], 0.25);
        assert!(parse_weights(&["4:0.1".into()]).is_err());
        assert!(parse_weights(&["x=0.1".into()]).is_err());
    }
}
