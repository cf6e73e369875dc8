//! `squall_runtime_check`: every module compiles, nothing imports Node's APIs, relative imports
//! exist and the handler's module exports the handler, all without running the code.

use std::path::Path;

use rquickjs::loader::{Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{Context, Ctx, Module, Runtime};

use crate::bundle::{module_files, resolve_relative, Bundle};
use crate::Error;

/// The globals the runtime provides, named in refusals and documented for users.
pub const GLOBALS: &str = "console, JSON, TextEncoder, TextDecoder, crypto.getRandomValues, \
crypto.randomUUID, setTimeout, clearTimeout, setInterval, clearInterval, queueMicrotask, \
atob, btoa, structuredClone, performance.now and squall (Retry, testing)";

/// Node's built-in modules, which QuickJS does not have.
const NODE_MODULES: &[&str] = &[
    "assert",
    "async_hooks",
    "buffer",
    "child_process",
    "cluster",
    "console",
    "constants",
    "crypto",
    "dgram",
    "diagnostics_channel",
    "dns",
    "domain",
    "events",
    "fs",
    "http",
    "http2",
    "https",
    "inspector",
    "module",
    "net",
    "os",
    "path",
    "perf_hooks",
    "process",
    "punycode",
    "querystring",
    "readline",
    "repl",
    "stream",
    "string_decoder",
    "sys",
    "timers",
    "tls",
    "trace_events",
    "tty",
    "url",
    "util",
    "v8",
    "vm",
    "wasi",
    "worker_threads",
    "zlib",
];

/// Validates the bundle at `dir` without running any of its code.
pub fn check(dir: &Path) -> Result<(), Error> {
    let bundle = Bundle::load(dir)?;
    let files = module_files(dir)?;
    let mut sources = Vec::with_capacity(files.len());
    for file in &files {
        let source = std::fs::read_to_string(dir.join(file))
            .map_err(|error| Error::Check(format!("{file}:1: cannot read: {error}")))?;
        sources.push(source);
    }
    compile_all(&files, &sources)?;
    for (file, source) in files.iter().zip(&sources) {
        check_imports(dir, file, &tokens(source))?;
    }
    let index = files
        .iter()
        .position(|file| *file == bundle.module)
        .ok_or_else(|| Error::Check(format!("{}:1: not found", bundle.module)))?;
    let mut seen = Vec::new();
    if !exports_name(&files, &sources, index, &bundle.export, &mut seen) {
        return Err(Error::Check(format!(
            "{}:1: the module does not export a function named {} (write `export async \
             function {}(event, context)`)",
            bundle.module, bundle.export, bundle.export
        )));
    }
    Ok(())
}

/// Compiles every module without evaluating or linking it; the first syntax error wins.
fn compile_all(files: &[String], sources: &[String]) -> Result<(), Error> {
    let engine = |error: rquickjs::Error| Error::Engine(error.to_string());
    let runtime = Runtime::new().map_err(engine)?;
    runtime.set_memory_limit(256 << 20);
    runtime.set_loader(Stubs, Stubs);
    let context = Context::full(&runtime).map_err(engine)?;
    context.with(|ctx| {
        for (file, source) in files.iter().zip(sources) {
            if let Err(error) = Module::declare(ctx.clone(), file.as_str(), source.as_str()) {
                let (message, line) = match error {
                    rquickjs::Error::Exception => describe_syntax_error(&ctx.catch(), file),
                    other => (other.to_string(), None),
                };
                return Err(Error::Check(format!(
                    "{file}:{}: {message}",
                    line.unwrap_or(1)
                )));
            }
        }
        Ok(())
    })
}

/// Compiling a module loads what it imports: every import gets an empty stand-in, since the
/// imports are checked separately and nothing is linked or run.
struct Stubs;

impl Resolver for Stubs {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        _base: &str,
        name: &str,
    ) -> rquickjs::Result<String> {
        Ok(format!("stub:{name}"))
    }
}

impl Loader for Stubs {
    fn load<'js>(&mut self, ctx: &Ctx<'js>, name: &str) -> rquickjs::Result<Module<'js, Declared>> {
        Module::declare(ctx.clone(), name, "")
    }
}

/// "SyntaxError: message" and the line QuickJS reported for `file`.
fn describe_syntax_error(thrown: &rquickjs::Value<'_>, file: &str) -> (String, Option<u32>) {
    let Some(object) = thrown.as_object() else {
        return ("SyntaxError: the module does not compile".to_owned(), None);
    };
    let text = |key: &str| -> Option<String> {
        object
            .get::<_, Option<rquickjs::Coerced<String>>>(key)
            .ok()
            .flatten()
            .map(|c| c.0)
    };
    let name = text("name").unwrap_or_else(|| "SyntaxError".to_owned());
    let message = text("message").unwrap_or_default();
    let line = object
        .get::<_, Option<u32>>("lineNumber")
        .ok()
        .flatten()
        .or_else(|| text("stack").and_then(|stack| line_in_stack(&stack, file)));
    (format!("{name}: {message}"), line)
}

/// The line of the first `file:LINE` in a stack.
fn line_in_stack(stack: &str, file: &str) -> Option<u32> {
    let at = stack.find(&format!("{file}:"))? + file.len() + 1;
    let digits: String = stack[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A token of JavaScript source, enough to find imports, `require(` and exports.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Punct(char),
}

/// Splits `source` into words, string literals and punctuation with their lines, skipping
/// comments, template literal text and regular expression literals.
fn tokens(source: &str) -> Vec<(Token, u32)> {
    let chars: Vec<char> = source.chars().collect();
    let mut out: Vec<(Token, u32)> = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
        } else if c == '"' || c == '\'' || c == '`' {
            let start_line = line;
            let mut text = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                match chars[i] {
                    '\\' => {
                        if let Some(&escaped) = chars.get(i + 1) {
                            if escaped == '\n' {
                                line += 1;
                            }
                            text.push(escaped);
                        }
                        i += 2;
                        continue;
                    }
                    '\n' => line += 1,
                    _ => {}
                }
                text.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push((Token::Str(text), start_line));
        } else if c == '/' && regex_allowed(out.last().map(|(t, _)| t)) {
            let mut in_class = false;
            i += 1;
            while i < chars.len() && chars[i] != '\n' {
                match chars[i] {
                    '\\' => i += 1,
                    '[' => in_class = true,
                    ']' => in_class = false,
                    '/' if !in_class => break,
                    _ => {}
                }
                i += 1;
            }
            i += 1;
            out.push((Token::Str(String::new()), line));
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut word = String::new();
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                word.push(chars[i]);
                i += 1;
            }
            out.push((Token::Word(word), line));
        } else {
            out.push((Token::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// Whether a `/` after `previous` starts a regular expression rather than a division.
fn regex_allowed(previous: Option<&Token>) -> bool {
    match previous {
        None => true,
        Some(Token::Punct(c)) => !matches!(c, ')' | ']' | '}'),
        Some(Token::Word(word)) => matches!(
            word.as_str(),
            "return"
                | "typeof"
                | "case"
                | "do"
                | "else"
                | "in"
                | "of"
                | "new"
                | "delete"
                | "void"
                | "throw"
                | "instanceof"
                | "yield"
                | "await"
        ),
        Some(Token::Str(_)) => false,
    }
}

/// Module specifiers with their lines: `import ... from "x"`, `export ... from "x"`,
/// `import "x"` and `import("x")`.
fn specifiers(tokens: &[(Token, u32)]) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    for (i, (token, line)) in tokens.iter().enumerate() {
        let previous_is_dot = i > 0 && tokens[i - 1].0 == Token::Punct('.');
        let next = tokens.get(i + 1).map(|(t, _)| t);
        let after = tokens.get(i + 2).map(|(t, _)| t);
        match (token, next, after) {
            (Token::Word(w), Some(Token::Str(s)), _)
                if (w == "from" || w == "import") && !previous_is_dot =>
            {
                found.push((s.clone(), *line));
            }
            (Token::Word(w), Some(Token::Punct('(')), Some(Token::Str(s)))
                if w == "import" && !previous_is_dot =>
            {
                found.push((s.clone(), *line));
            }
            _ => {}
        }
    }
    found
}

/// Refuses Node's modules, `require(`, bare package names and relative imports of missing
/// files.
fn check_imports(dir: &Path, file: &str, tokens: &[(Token, u32)]) -> Result<(), Error> {
    for (i, (token, line)) in tokens.iter().enumerate() {
        let previous_is_dot = i > 0 && tokens[i - 1].0 == Token::Punct('.');
        if *token == Token::Word("require".to_owned())
            && !previous_is_dot
            && tokens.get(i + 1).map(|(t, _)| t) == Some(&Token::Punct('('))
        {
            return Err(Error::Check(format!(
                "{file}:{line}: require() is Node's module system, which is not available: \
                 use ES module imports (`import {{ x }} from './lib.mjs'`); Node's APIs are \
                 not available either, the globals are {GLOBALS}"
            )));
        }
    }
    for (specifier, line) in specifiers(tokens) {
        if specifier == "squall" {
            continue;
        }
        if specifier.starts_with("./") || specifier.starts_with("../") {
            match resolve_relative(file, &specifier) {
                Some(target) if dir.join(&target).is_file() => continue,
                Some(_) => {
                    return Err(Error::Check(format!(
                        "{file}:{line}: imports '{specifier}', which is not in the bundle"
                    )))
                }
                None => {
                    return Err(Error::Check(format!(
                        "{file}:{line}: imports '{specifier}', which is outside the bundle"
                    )))
                }
            }
        }
        let base = specifier.split('/').next().unwrap_or_default();
        if specifier.starts_with("node:") || NODE_MODULES.contains(&base) {
            return Err(Error::Check(format!(
                "{file}:{line}: imports '{specifier}': Node's APIs are not available in the \
                 JavaScript runtime (QuickJS); the globals are {GLOBALS}"
            )));
        }
        return Err(Error::Check(format!(
            "{file}:{line}: imports '{specifier}': only the bundle's own files, imported \
             relatively ('./lib.mjs'), and 'squall' can be imported; copy a package's ES \
             module files into the bundle"
        )));
    }
    Ok(())
}

/// The names a module exports, in source order, and the modules it re-exports everything
/// from (`export * from "./x.mjs"`, resolved).
fn exports(file: &str, tokens: &[(Token, u32)]) -> (Vec<String>, Vec<String>) {
    let word = |i: usize| match tokens.get(i) {
        Some((Token::Word(w), _)) => Some(w.as_str()),
        _ => None,
    };
    let punct = |i: usize, c: char| matches!(tokens.get(i), Some((Token::Punct(p), _)) if *p == c);
    let mut names = Vec::new();
    let mut star = Vec::new();
    for i in 0..tokens.len() {
        if word(i) != Some("export") || (i > 0 && punct(i - 1, '.')) {
            continue;
        }
        let mut j = i + 1;
        if word(j) == Some("default") {
            names.push("default".to_owned());
            continue;
        }
        if word(j) == Some("async") {
            j += 1;
        }
        match word(j) {
            Some("function") => {
                j += 1;
                if punct(j, '*') {
                    j += 1;
                }
                if let Some(name) = word(j) {
                    names.push(name.to_owned());
                }
            }
            Some("class") | Some("const") | Some("let") | Some("var") => {
                if let Some(name) = word(j + 1) {
                    names.push(name.to_owned());
                }
            }
            _ if punct(j, '{') => {
                let mut k = j + 1;
                while k < tokens.len() && !punct(k, '}') {
                    let name = if word(k + 1) == Some("as") {
                        k += 2;
                        word(k)
                    } else {
                        word(k)
                    };
                    if let Some(name) = name {
                        names.push(name.to_owned());
                    }
                    k += 1;
                    while k < tokens.len() && !punct(k, ',') && !punct(k, '}') {
                        k += 1;
                    }
                    if punct(k, ',') {
                        k += 1;
                    }
                }
            }
            _ if punct(j, '*') => {
                if word(j + 1) == Some("from") {
                    if let Some((Token::Str(s), _)) = tokens.get(j + 2) {
                        if let Some(target) = resolve_relative(file, s) {
                            star.push(target);
                        }
                    }
                } else if word(j + 1) == Some("as") {
                    if let Some(name) = word(j + 2) {
                        names.push(name.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    (names, star)
}

/// Whether the module at `index` exports `name`, directly or through `export *`.
fn exports_name(
    files: &[String],
    sources: &[String],
    index: usize,
    name: &str,
    seen: &mut Vec<usize>,
) -> bool {
    if seen.contains(&index) {
        return false;
    }
    seen.push(index);
    let (names, star) = exports(&files[index], &tokens(&sources[index]));
    if names.iter().any(|n| n == name) {
        return true;
    }
    star.iter().any(|target| {
        files
            .iter()
            .position(|file| file == target)
            .is_some_and(|next| exports_name(files, sources, next, name, seen))
    })
}

/// The names of the functions a test module exports whose names start with `test`, in
/// source order.
pub fn test_names(file: &str, source: &str) -> Vec<String> {
    let (names, _) = exports(file, &tokens(source));
    names
        .into_iter()
        .filter(|name| name.starts_with("test"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_are_found_in_every_form() {
        let source = r#"
            // export function commented() {}
            export async function handler(event, context) {}
            export function* gen() {}
            export const a = 1, b = 2;
            export class K {}
            const x = 1, y = 2;
            export { x, y as why };
            export * from "./more.mjs";
            const s = "export function fake() {}";
        "#;
        let (names, star) = exports("app.mjs", &tokens(source));
        assert_eq!(names, ["handler", "gen", "a", "K", "x", "why"]);
        assert_eq!(star, ["more.mjs"]);
    }

    #[test]
    fn imports_are_found_outside_comments_and_strings() {
        let source = "import a from './a.mjs';\n// import b from 'fs'\nimport 'c';\nconst d = await import(\"./d.mjs\");\nconst re = /from 'x'/;\nexport { e } from '../e.mjs';\n";
        let found = specifiers(&tokens(source));
        assert_eq!(
            found,
            [
                ("./a.mjs".to_owned(), 1),
                ("c".to_owned(), 3),
                ("./d.mjs".to_owned(), 4),
                ("../e.mjs".to_owned(), 6)
            ]
        );
    }

    #[test]
    fn a_stack_names_the_line_of_its_file() {
        assert_eq!(line_in_stack("    at app.mjs:3:7\n", "app.mjs"), Some(3));
        assert_eq!(line_in_stack("    at other.mjs:3\n", "app.mjs"), None);
    }
}
