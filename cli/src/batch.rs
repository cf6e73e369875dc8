//! `squall invoke NAME --batch FILE`: every line of an NDJSON file becomes one invocation,
//! checked locally, then sent in chunks to the batch endpoint with a progress line on stderr.

use crate::api_client::{answer_of, error_of, ApiClient};
use anyhow::{bail, Context as _};
use reqwest::Method;
use squall_api::invocations::BatchAccepted;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

/// The most lines sent in one request by default.
pub const DEFAULT_CHUNK_LINES: usize = 1000;
/// The most bytes sent in one request (the dispatcher's default batch limit is 16 MiB).
pub const CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// A run of consecutive lines sent as one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The file's line number (1-based) of the chunk's first line.
    pub first_line: usize,
    /// How many lines it holds.
    pub lines: usize,
    /// The NDJSON body: the lines as in the file, each ending in `\n`.
    pub body: Vec<u8>,
}

/// Splits `input` into chunks of at most `max_lines` lines and about `max_bytes` bytes (a
/// single longer line gets a chunk of its own), after checking every line: each must be one
/// JSON value, none blank. A bad line is named by its number in the file; nothing is sent then.
pub fn chunks(input: &[u8], max_lines: usize, max_bytes: usize) -> anyhow::Result<Vec<Chunk>> {
    let content = input.strip_suffix(b"\n").unwrap_or(input);
    if content.iter().all(u8::is_ascii_whitespace) {
        bail!("the batch is empty: put one JSON input per line");
    }
    let mut chunks: Vec<Chunk> = Vec::new();
    for (index, raw) in content.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            bail!("line {number} is blank; every line must hold one JSON input");
        }
        if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            bail!(
                "line {number} is not valid JSON ({} at column {})",
                error_text(&error),
                error.column()
            );
        }
        let fits = chunks
            .last()
            .is_some_and(|c| c.lines < max_lines && c.body.len() + line.len() < max_bytes);
        if !fits {
            chunks.push(Chunk {
                first_line: number,
                lines: 0,
                body: Vec::new(),
            });
        }
        let chunk = chunks.last_mut().expect("a chunk was just pushed");
        chunk.lines += 1;
        chunk.body.extend_from_slice(line);
        chunk.body.push(b'\n');
    }
    Ok(chunks)
}

/// serde_json's message without its position (the caller names line and column).
fn error_text(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The idempotency key of chunk `index` under the user's `key`: rerunning the same command
/// sends the same keys, so every chunk maps to the invocations it made the first time.
pub fn chunk_key(key: &str, index: usize) -> String {
    format!("{key}-{index}")
}

/// Where the batch comes from, for messages.
fn source_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        path.display().to_string()
    }
}

fn read_batch(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut input = Vec::new();
        std::io::stdin()
            .read_to_end(&mut input)
            .context("cannot read the batch from standard input")?;
        return Ok(input);
    }
    std::fs::read(path).with_context(|| format!("cannot read batch file {}", path.display()))
}

/// A progress line on stderr, drawn only when stderr is a terminal.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    last_drawn: Option<Instant>,
    enabled: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            last_drawn: None,
            // A few lines go by too fast to be worth a bar.
            enabled: std::io::stderr().is_terminal() && total > DEFAULT_CHUNK_LINES,
        }
    }

    fn advance(&mut self, lines: usize) {
        self.done += lines;
        let due = self
            .last_drawn
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if self.enabled && (due || self.done == self.total) {
            self.draw();
        }
    }

    fn draw(&mut self) {
        const WIDTH: usize = 30;
        let filled = WIDTH * self.done / self.total.max(1);
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {}/{} invocations submitted ({:.0}/s)",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            self.done,
            self.total,
            rate
        );
        let _ = err.flush();
        self.last_drawn = Some(Instant::now());
    }

    /// Ends the line, so what follows starts on a fresh one.
    fn finish(&self) {
        if self.enabled && self.last_drawn.is_some() {
            eprintln!();
        }
    }
}

/// `squall invoke NAME --batch FILE`: prints one invocation id per line, in line order (a JSON
/// array with `--json`).
pub async fn invoke_batch(
    client: &ApiClient,
    json: bool,
    name: &str,
    path: &Path,
    chunk_lines: usize,
    idempotency_key: Option<&str>,
) -> anyhow::Result<()> {
    if chunk_lines == 0 {
        bail!("--batch-size must be at least 1");
    }
    let input = read_batch(path)?;
    let source = source_name(path);
    let chunks = chunks(&input, chunk_lines, CHUNK_BYTES)
        .with_context(|| format!("{source} is not a batch; nothing was submitted"))?;
    let total = chunks.iter().map(|c| c.lines).sum();
    let mut progress = Progress::new(total);
    let mut ids: Vec<String> = Vec::with_capacity(total);
    let mut stdout = std::io::stdout().lock();
    for (index, chunk) in chunks.into_iter().enumerate() {
        let mut request = client
            .request(Method::POST, &["v1", "functions", name, "batch"])
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(chunk.body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", chunk_key(key, index));
        }
        let response = client.send_raw(request).await?;
        if !response.status().is_success() {
            progress.finish();
            let error = error_of(response).await;
            let submitted = if ids.is_empty() {
                "nothing was submitted".to_string()
            } else {
                format!(
                    "lines 1 to {} were submitted (their ids are printed above){}",
                    ids.len(),
                    if idempotency_key.is_some() {
                        "; rerun the same command to submit the rest without duplicates"
                    } else {
                        ""
                    }
                )
            };
            // The server counts lines within the chunk; the user counts them in the file.
            if let Some(line) = error.extra_u64("line") {
                let in_file = chunk.first_line + line as usize - 1;
                let message = &error.detail.message;
                let detail = message
                    .strip_prefix(&format!("line {line} "))
                    .unwrap_or(message);
                bail!(
                    "line {in_file} of {source} {detail} ({}); {submitted}",
                    error.detail.code
                );
            }
            if error.detail.code == "too_many_lines" {
                bail!("{error}; pass a smaller --batch-size; {submitted}");
            }
            bail!("{error}; {submitted}");
        }
        let BatchAccepted {
            invocation_ids: chunk_ids,
            ..
        } = answer_of(response).await?.decode()?;
        if chunk_ids.len() != chunk.lines {
            bail!(
                "the API answered {} ids for {} lines (from line {} of {source})",
                chunk_ids.len(),
                chunk.lines,
                chunk.first_line
            );
        }
        if !json {
            for id in &chunk_ids {
                writeln!(stdout, "{id}").context("cannot write to stdout")?;
            }
            stdout.flush().context("cannot write to stdout")?;
        }
        ids.extend(chunk_ids);
        progress.advance(chunk.lines);
    }
    progress.finish();
    if json {
        drop(stdout);
        return crate::commands::print_json(&serde_json::json!(ids));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_chunked_by_count_and_keep_their_file_numbers() {
        let chunks = chunks(b"1\n2\r\n3\n4\n5", 2, CHUNK_BYTES).unwrap();
        let summary: Vec<(usize, usize, &[u8])> = chunks
            .iter()
            .map(|c| (c.first_line, c.lines, c.body.as_slice()))
            .collect();
        assert_eq!(
            summary,
            [
                (1, 2, &b"1\n2\n"[..]),
                (3, 2, &b"3\n4\n"[..]),
                (5, 1, &b"5\n"[..])
            ]
        );
    }

    #[test]
    fn chunks_stay_under_the_byte_budget() {
        let input = "\"aaaaaaaa\"\n".repeat(10);
        let chunks = chunks(input.as_bytes(), 1000, 40).unwrap();
        assert!(chunks.iter().all(|c| c.body.len() <= 40), "{chunks:?}");
        assert_eq!(chunks.iter().map(|c| c.lines).sum::<usize>(), 10);
        assert_eq!(chunks[1].first_line, chunks[0].lines + 1);
    }

    #[test]
    fn a_bad_line_is_named_by_its_line_in_the_file() {
        let error = chunks(b"1\n2\n{oops\n4\n", 2, CHUNK_BYTES).unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 3 is not valid JSON (key must be a string at column 2)"
        );
        let error = chunks(b"1\n\n3\n", 2, CHUNK_BYTES).unwrap_err();
        assert!(error.to_string().starts_with("line 2 is blank"), "{error}");
        assert!(chunks(b"\n", 2, CHUNK_BYTES).is_err());
    }

    #[test]
    fn each_chunk_has_its_own_key() {
        assert_eq!(chunk_key("import-7", 0), "import-7-0");
        assert_eq!(chunk_key("import-7", 12), "import-7-12");
    }
}
