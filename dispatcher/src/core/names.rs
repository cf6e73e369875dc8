//! Names checked once at the edge: function, schedule, trigger and key names, and invocation
//! ids. The HTTP extractors that read them from a path live in `http::extract`.

use std::marker::PhantomData;

/// A name or id that breaks its rule.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NameError {
    /// The message says which kind of name and what the rule is.
    #[error("{0}")]
    Name(String),
    #[error("{0:?} is not an invocation id (a UUID)")]
    InvocationId(String),
}

/// What a validated name names, for its error message.
pub trait NameKind {
    const WHAT: &'static str;
}

macro_rules! name_kind {
    ($kind:ident, $what:literal) => {
        #[doc = concat!("The kind of a ", $what, ".")]
        pub struct $kind;
        impl NameKind for $kind {
            const WHAT: &'static str = $what;
        }
    };
}

name_kind!(OfFunction, "function name");
name_kind!(OfSchedule, "schedule name");
name_kind!(OfTrigger, "trigger name");
name_kind!(OfKey, "key name");

/// A `{name}` path segment checked against the name rule (1 to 64 of `[A-Za-z0-9_-]`).
pub struct Name<K> {
    name: String,
    kind: PhantomData<K>,
}

/// The `{name}` of a function route.
pub type FunctionName = Name<OfFunction>;

impl<K: NameKind> Name<K> {
    /// Checks `name` against the name rule.
    pub fn parse(name: String) -> Result<Self, NameError> {
        match squall_broker::validate_function_name(&name) {
            Ok(()) => Ok(Name {
                name,
                kind: PhantomData,
            }),
            Err(e) => Err(NameError::Name(
                e.to_string().replace("function name", K::WHAT),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn into_string(self) -> String {
        self.name
    }
}

impl<K> AsRef<str> for Name<K> {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl<K> std::ops::Deref for Name<K> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl<K> std::fmt::Display for Name<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// An `{id}` path segment that is an invocation id (a UUID).
pub struct InvocationId(String);

impl InvocationId {
    /// Checks that `id` is a UUID.
    pub fn parse(id: String) -> Result<Self, NameError> {
        match uuid::Uuid::parse_str(&id) {
            Ok(_) => Ok(InvocationId(id)),
            Err(_) => Err(NameError::InvocationId(id)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for InvocationId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for InvocationId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InvocationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
