//! A function's numbered versions and aliases: `/v1/functions/{name}/versions` and `/aliases`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One retained version of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Version {
    /// 1, 2, 3…: one per deploy of new content.
    pub version: u32,
    /// Hex SHA-256 of the artifact.
    pub sha256: String,
    pub artifact_size: u64,
    /// RFC 3339.
    pub deployed_at: String,
    /// Whether this is `$LATEST`, the newest.
    pub latest: bool,
    /// The aliases that route some or all of their calls here.
    pub aliases: Vec<String>,
}

/// `GET /v1/functions/{name}/versions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VersionList {
    pub function: String,
    /// `$LATEST`'s number.
    pub latest: u32,
    /// Oldest first.
    pub versions: Vec<Version>,
}

/// The body of `PUT /v1/functions/{name}/aliases/{alias}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasBody {
    /// The version that gets the calls the weights leave.
    pub version: u32,
    /// Version number (as a string key) → the fraction of calls it gets, e.g. `{"4": 0.1}`.
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
}

/// Where an alias routes: `version`, and each weighted version's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AliasTarget {
    pub version: u32,
    #[serde(default)]
    pub weights: BTreeMap<String, f64>,
}

/// An alias of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alias {
    pub function: String,
    pub name: String,
    pub version: u32,
    pub weights: BTreeMap<String, f64>,
    /// What `squall rollback` returns to; null when the alias never moved.
    pub previous: Option<AliasTarget>,
    /// RFC 3339.
    pub updated_at: String,
}

/// `GET /v1/functions/{name}/aliases`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AliasList {
    pub function: String,
    /// By name.
    pub aliases: Vec<Alias>,
}

/// Whether `name` may be an alias: 1 to 64 of `[A-Za-z0-9_-]`, not all digits (those are
/// version numbers), and not `$LATEST`.
pub fn valid_alias_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.bytes().all(|b| b.is_ascii_digit())
}
