//! Example function: greets a name, with the greeting word taken from the function's config.

use serde::{Deserialize, Serialize};
use squall_sdk::{export_function, Context, FnError};

/// `{"name": "Ada"}`; the whole input, or the name, may be left out.
#[derive(Debug, Default, Deserialize)]
pub struct Input {
    /// Who to greet; "world" when missing or empty.
    #[serde(default)]
    pub name: Option<String>,
}

/// `{"greeting": "Hello, Ada!"}`.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Output {
    /// The whole greeting, e.g. "Hello, Ada!".
    pub greeting: String,
}

/// Greets `input.name` (default "world") with the config value `greeting` (default "Hello").
pub fn hello(ctx: &Context, input: Option<Input>) -> Result<Output, FnError> {
    let input = input.unwrap_or_default();
    let name = input
        .name
        .as_deref()
        .filter(|name| !name.is_empty())
        .unwrap_or("world");
    let word = ctx
        .config()
        .get("greeting")
        .and_then(|greeting| greeting.as_str())
        .unwrap_or("Hello");
    ctx.info(&format!("hello: greeting {name}"));
    Ok(Output {
        greeting: format!("{word}, {name}!"),
    })
}

export_function!(hello);

#[cfg(test)]
mod tests {
    use super::*;

    fn greet(ctx: &Context, name: Option<&str>) -> String {
        let input = Input {
            name: name.map(str::to_owned),
        };
        hello(ctx, Some(input)).unwrap().greeting
    }

    #[test]
    fn greets_the_given_name() {
        assert_eq!(
            greet(&Context::new("hello", "1"), Some("Ada")),
            "Hello, Ada!"
        );
    }

    #[test]
    fn greets_the_world_without_a_name() {
        let ctx = Context::new("hello", "1");
        assert_eq!(hello(&ctx, None).unwrap().greeting, "Hello, world!");
        assert_eq!(greet(&ctx, None), "Hello, world!");
        assert_eq!(greet(&ctx, Some("")), "Hello, world!");
    }

    #[test]
    fn config_overrides_the_greeting_word() {
        let ctx = Context::new("hello", "1").with_config(br#"{"greeting": "Ahoy"}"#);
        assert_eq!(greet(&ctx, Some("Ada")), "Ahoy, Ada!");
    }

    #[test]
    fn output_is_the_documented_json() {
        let output = hello(&Context::new("hello", "1"), None).unwrap();
        assert_eq!(
            serde_json::to_string(&output).unwrap(),
            r#"{"greeting":"Hello, world!"}"#
        );
    }
}
