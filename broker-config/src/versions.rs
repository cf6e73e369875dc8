//! A function's numbered versions and aliases, and the pure decisions over them: which version a
//! deploy creates, which ones retention drops, and which version a qualifier picks.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One numbered version: the artifact it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionEntry {
    pub number: u32,
    /// Hex sha256 of the artifact.
    pub sha256: String,
    pub artifact_size: u64,
    pub deployed_at_ms: u64,
}

/// Where an alias sends invocations: `version`, except for the share of each `weights` entry
/// (version → fraction in 0..1), which goes to that version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasTarget {
    pub version: u32,
    pub weights: Vec<(u32, f64)>,
}

/// An alias: its target and the one before it (what a rollback returns to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    pub target: AliasTarget,
    pub previous: Option<AliasTarget>,
    pub updated_at_ms: u64,
}

/// The versions and aliases of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Versions {
    /// The newest version's number (`$LATEST`); numbers are never reused.
    pub latest: u32,
    /// Retained versions, oldest first.
    pub list: Vec<VersionEntry>,
    pub aliases: BTreeMap<String, Alias>,
}

/// The name that always means the newest version.
pub const LATEST: &str = "$LATEST";

/// Why a qualifier or an alias change is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VersionError {
    #[error("function has no version {0}")]
    NoSuchVersion(u32),
    #[error("function has no alias {0:?}")]
    NoSuchAlias(String),
    #[error("invalid qualifier {0:?}: a version number, $LATEST or an alias name")]
    BadQualifier(String),
    #[error("weight of version {0} must be between 0 and 1")]
    BadWeight(u32),
    #[error("the weights add up to more than 1")]
    WeightsOver,
    #[error("version {version} is the target of alias {alias:?}")]
    Aliased { version: u32, alias: String },
    #[error("version {0} is $LATEST")]
    Latest(u32),
    #[error("alias {0:?} has no previous target")]
    NoPrevious(String),
}

impl Versions {
    /// The history of a function deployed before versions existed: its artifact as version 1.
    pub fn first(sha256: &str, artifact_size: u64, deployed_at_ms: u64) -> Versions {
        Versions {
            latest: 1,
            list: vec![VersionEntry {
                number: 1,
                sha256: sha256.to_string(),
                artifact_size,
                deployed_at_ms,
            }],
            aliases: BTreeMap::new(),
        }
    }

    /// The entry of version `number`, if retained.
    pub fn get(&self, number: u32) -> Option<&VersionEntry> {
        self.list.iter().find(|v| v.number == number)
    }

    /// The newest version's entry.
    pub fn latest(&self) -> Option<&VersionEntry> {
        self.get(self.latest)
    }

    /// Records a deploy of `sha256`: new content becomes the next number; the same content as
    /// `$LATEST` creates none. Returns whether a version was created.
    pub fn deploy(&mut self, sha256: &str, artifact_size: u64, deployed_at_ms: u64) -> bool {
        if self.latest().is_some_and(|v| v.sha256 == sha256) {
            return false;
        }
        self.latest += 1;
        self.list.push(VersionEntry {
            number: self.latest,
            sha256: sha256.to_string(),
            artifact_size,
            deployed_at_ms,
        });
        true
    }

    /// The versions some alias routes to.
    fn aliased(&self, number: u32) -> Option<&str> {
        self.aliases.iter().find_map(|(name, alias)| {
            let t = &alias.target;
            (t.version == number || t.weights.iter().any(|(v, _)| *v == number))
                .then_some(name.as_str())
        })
    }

    /// Keeps the `keep` newest versions and those an alias routes to; drops the rest. Returns
    /// the dropped numbers.
    pub fn retain(&mut self, keep: usize) -> Vec<u32> {
        let newest = self.list.len().saturating_sub(keep.max(1));
        let dropped: Vec<u32> = self.list[..newest]
            .iter()
            .map(|v| v.number)
            .filter(|n| *n != self.latest && self.aliased(*n).is_none())
            .collect();
        self.list.retain(|v| !dropped.contains(&v.number));
        dropped
    }

    /// Deletes version `number`: refused for `$LATEST` and for a version an alias routes to.
    pub fn delete(&mut self, number: u32) -> Result<VersionEntry, VersionError> {
        let Some(index) = self.list.iter().position(|v| v.number == number) else {
            return Err(VersionError::NoSuchVersion(number));
        };
        if number == self.latest {
            return Err(VersionError::Latest(number));
        }
        if let Some(alias) = self.aliased(number) {
            return Err(VersionError::Aliased {
                version: number,
                alias: alias.to_string(),
            });
        }
        Ok(self.list.remove(index))
    }

    /// Checks that `target` names retained versions and sensible weights.
    pub fn check_target(&self, target: &AliasTarget) -> Result<(), VersionError> {
        if self.get(target.version).is_none() {
            return Err(VersionError::NoSuchVersion(target.version));
        }
        let mut total = 0.0;
        for (version, weight) in &target.weights {
            if self.get(*version).is_none() {
                return Err(VersionError::NoSuchVersion(*version));
            }
            if !(0.0..=1.0).contains(weight) || !weight.is_finite() {
                return Err(VersionError::BadWeight(*version));
            }
            total += weight;
        }
        if total > 1.0 + 1e-9 {
            return Err(VersionError::WeightsOver);
        }
        Ok(())
    }

    /// Points alias `name` at `target`, keeping its former target as the one to roll back to.
    pub fn set_alias(
        &mut self,
        name: &str,
        target: AliasTarget,
        now_ms: u64,
    ) -> Result<&Alias, VersionError> {
        self.check_target(&target)?;
        let previous = self
            .aliases
            .get(name)
            .map(|a| a.target.clone())
            .filter(|p| *p != target)
            .or_else(|| self.aliases.get(name).and_then(|a| a.previous.clone()));
        self.aliases.insert(
            name.to_string(),
            Alias {
                target,
                previous,
                updated_at_ms: now_ms,
            },
        );
        Ok(&self.aliases[name])
    }

    /// Moves alias `name` back to its previous target (whose previous is then the current one).
    pub fn rollback(&mut self, name: &str, now_ms: u64) -> Result<&Alias, VersionError> {
        let alias = self
            .aliases
            .get(name)
            .ok_or_else(|| VersionError::NoSuchAlias(name.to_string()))?;
        let previous = alias
            .previous
            .clone()
            .ok_or_else(|| VersionError::NoPrevious(name.to_string()))?;
        self.check_target(&previous)?;
        let current = alias.target.clone();
        self.aliases.insert(
            name.to_string(),
            Alias {
                target: previous,
                previous: Some(current),
                updated_at_ms: now_ms,
            },
        );
        Ok(&self.aliases[name])
    }

    /// The version `qualifier` names (`None`: `$LATEST`), with `unit` in `[0, 1)` choosing
    /// among an alias's weighted targets.
    pub fn resolve(
        &self,
        qualifier: Option<&str>,
        unit: f64,
    ) -> Result<&VersionEntry, VersionError> {
        let number = match qualifier {
            None | Some(LATEST) | Some("") => self.latest,
            Some(text) if text.bytes().all(|b| b.is_ascii_digit()) => text
                .parse()
                .map_err(|_| VersionError::BadQualifier(text.to_string()))?,
            Some(name) => match self.aliases.get(name) {
                Some(alias) => pick(&alias.target, unit),
                None => return Err(VersionError::NoSuchAlias(name.to_string())),
            },
        };
        self.get(number).ok_or(VersionError::NoSuchVersion(number))
    }
}

/// The version a weighted target sends the call with draw `unit` (`[0, 1)`) to: each weighted
/// version takes its slice of the unit interval in order, the main version the rest.
pub fn pick(target: &AliasTarget, unit: f64) -> u32 {
    let mut edge = 0.0;
    for (version, weight) in &target.weights {
        edge += weight;
        if unit < edge {
            return *version;
        }
    }
    target.version
}

/// Splits `name:qualifier` into the name and the qualifier.
pub fn split_qualified(text: &str) -> (&str, Option<&str>) {
    match text.split_once(':') {
        Some((name, qualifier)) => (name, Some(qualifier)),
        None => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Versions {
        let mut v = Versions::first("a", 1, 1);
        assert!(v.deploy("b", 1, 2));
        assert!(v.deploy("c", 1, 3));
        v
    }

    #[test]
    fn new_content_gets_the_next_number_and_the_same_content_none() {
        let mut v = three();
        assert!(!v.deploy("c", 1, 4));
        assert_eq!(v.latest, 3);
        assert!(
            v.deploy("a", 1, 5),
            "older content deployed again is a new version"
        );
        assert_eq!(v.latest().unwrap().number, 4);
    }

    #[test]
    fn weighted_pick_splits_the_unit_interval() {
        let target = AliasTarget {
            version: 3,
            weights: vec![(4, 0.1), (5, 0.2)],
        };
        assert_eq!(pick(&target, 0.0), 4);
        assert_eq!(pick(&target, 0.099), 4);
        assert_eq!(pick(&target, 0.1), 5);
        assert_eq!(pick(&target, 0.29), 5);
        assert_eq!(pick(&target, 0.31), 3);
        assert_eq!(pick(&target, 0.999), 3);
        let steps = 10_000;
        let to_four = (0..steps)
            .filter(|i| pick(&target, f64::from(*i) / f64::from(steps)) == 4)
            .count();
        assert_eq!(to_four, 1000);
    }

    #[test]
    fn qualifiers_name_numbers_latest_and_aliases() {
        let mut v = three();
        v.set_alias(
            "live",
            AliasTarget {
                version: 2,
                weights: vec![],
            },
            1,
        )
        .unwrap();
        assert_eq!(v.resolve(None, 0.5).unwrap().number, 3);
        assert_eq!(v.resolve(Some("$LATEST"), 0.5).unwrap().number, 3);
        assert_eq!(v.resolve(Some("1"), 0.5).unwrap().sha256, "a");
        assert_eq!(v.resolve(Some("live"), 0.5).unwrap().number, 2);
        assert_eq!(
            v.resolve(Some("9"), 0.5),
            Err(VersionError::NoSuchVersion(9))
        );
        assert_eq!(
            v.resolve(Some("beta"), 0.5),
            Err(VersionError::NoSuchAlias("beta".into()))
        );
    }

    #[test]
    fn rollback_returns_to_the_previous_target_and_back() {
        let mut v = three();
        let at = |n| AliasTarget {
            version: n,
            weights: vec![],
        };
        v.set_alias("live", at(2), 1).unwrap();
        assert_eq!(
            v.rollback("live", 2),
            Err(VersionError::NoPrevious("live".into()))
        );
        v.set_alias("live", at(3), 3).unwrap();
        assert_eq!(v.rollback("live", 4).unwrap().target.version, 2);
        assert_eq!(v.rollback("live", 5).unwrap().target.version, 3);
        // Setting the same target again keeps the rollback target.
        v.set_alias("live", at(3), 6).unwrap();
        assert_eq!(v.aliases["live"].previous, Some(at(2)));
    }

    #[test]
    fn retention_and_deletion_spare_latest_and_aliased_versions() {
        let mut v = three();
        v.deploy("d", 1, 4);
        v.set_alias(
            "live",
            AliasTarget {
                version: 1,
                weights: vec![(2, 0.5)],
            },
            1,
        )
        .unwrap();
        assert_eq!(v.retain(1), vec![3]);
        assert_eq!(
            v.delete(1),
            Err(VersionError::Aliased {
                version: 1,
                alias: "live".into()
            })
        );
        assert_eq!(v.delete(4), Err(VersionError::Latest(4)));
        v.set_alias(
            "live",
            AliasTarget {
                version: 4,
                weights: vec![],
            },
            2,
        )
        .unwrap();
        assert_eq!(v.delete(1).unwrap().sha256, "a");
        assert_eq!(v.delete(1), Err(VersionError::NoSuchVersion(1)));
    }

    #[test]
    fn weights_are_checked() {
        let v = three();
        let bad = AliasTarget {
            version: 1,
            weights: vec![(2, 0.7), (3, 0.7)],
        };
        assert_eq!(v.check_target(&bad), Err(VersionError::WeightsOver));
        let bad = AliasTarget {
            version: 1,
            weights: vec![(2, -0.1)],
        };
        assert_eq!(v.check_target(&bad), Err(VersionError::BadWeight(2)));
        let bad = AliasTarget {
            version: 1,
            weights: vec![(7, 0.1)],
        };
        assert_eq!(v.check_target(&bad), Err(VersionError::NoSuchVersion(7)));
    }

    #[test]
    fn a_qualified_name_splits_at_the_colon() {
        assert_eq!(split_qualified("hello:live"), ("hello", Some("live")));
        assert_eq!(split_qualified("hello"), ("hello", None));
    }
}
