//! Deployed functions and their secrets.

use crate::spec::FunctionSpec;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A deployed function, as `GET /v1/functions/{name}` and a deploy answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Function {
    pub name: String,
    /// `sha256:<hex>` of the artifact.
    pub version: String,
    /// Hex SHA-256 of the artifact.
    pub sha256: String,
    /// `$LATEST`'s number: 1, 2, 3… one per deploy of new content.
    #[serde(default)]
    pub version_number: u32,
    /// Alias names, each with the version it routes most calls to.
    #[serde(default)]
    pub aliases: std::collections::BTreeMap<String, u32>,
    /// Artifact size in bytes.
    pub artifact_size: u64,
    /// RFC 3339.
    pub deployed_at: String,
    pub config: FunctionSpec,
    /// Names of the function's secrets (never their values).
    pub secrets: Vec<String>,
    /// What a deploy answer wants the deployer to know, such as a web function that takes no
    /// key; absent elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The key (`whsec_<base64>`) of the Standard Webhooks signature (`webhook-signature`) of
    /// the function's destination and callback POSTs; during a rotation of the operator's
    /// secrets, the new one. Only a deploy's answer (admin scope) shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_secret: Option<String>,
}

/// `GET /v1/functions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FunctionList {
    /// By name.
    pub functions: Vec<Function>,
}

/// A function's secrets as the API shows them: names, with values redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Secrets {
    pub function: String,
    /// Name → `"[redacted]"`.
    pub secrets: std::collections::BTreeMap<String, String>,
}

/// Where a function's code comes from in a deploy: a multipart body with an `artifact` part
/// (the cdylib) and an optional `config` part (a JSON `FunctionSpec`).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct DeployForm {
    /// The compiled function library (ELF shared object exporting the Squall ABI).
    #[schema(value_type = String, format = Binary)]
    pub artifact: Vec<u8>,
    /// The function's settings; all defaults when absent.
    pub config: Option<FunctionSpec>,
}

/// The body of `PUT /v1/functions/{name}/secrets`: name → value.
pub type SecretValues = std::collections::BTreeMap<String, String>;
