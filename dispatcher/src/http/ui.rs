//! The operator console at `/ui`: static files compiled into the binary (plain HTML, CSS and
//! JavaScript, no build step) that read the same HTTP API as every other client.
//!
//! Invariant: the console holds no server-side state and no privilege of its own; every
//! action it offers is an API call made with the key the operator signed in with.

use crate::http::error::ApiError;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use squall_api::ErrorCode;

/// The console's files: name, content type, bytes.
const FILES: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];

/// Only the console's own files; no inline script or style, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn file(name: &str) -> Option<Response> {
    let (_, content_type, body) = FILES.iter().find(|(n, _, _)| *n == name)?;
    Some(
        (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CACHE_CONTROL, "no-cache"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            *body,
        )
            .into_response(),
    )
}

/// The console (sign in with an API key; it keeps the key in the tab's session storage).
#[utoipa::path(get, path = "/ui", tag = "console", responses(
    (status = 200, description = "The console's page.", body = String, content_type = "text/html")))]
pub async fn index() -> Response {
    file("index.html").expect("the console's page is compiled in")
}

/// One of the console's files (`app.js`, `style.css`).
#[utoipa::path(get, path = "/ui/{file}", tag = "console",
    params(("file" = String, Path, description = "A file of the console.")),
    responses(
        (status = 200, description = "The file.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such file.", body = squall_api::ErrorBody)))]
pub async fn asset(Path(name): Path<String>) -> Response {
    file(&name).unwrap_or_else(|| {
        ApiError::not_found(
            ErrorCode::NotFound,
            format!("the console has no file {name:?}"),
        )
        .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_the_console_serves() {
        let page = FILES[0].2;
        for (name, _, _) in &FILES[1..] {
            assert!(page.contains(&format!("\"ui/{name}\"")), "{name}");
        }
        assert!(
            !page.contains("<script>"),
            "inline script would break the CSP"
        );
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "nothing fetched from elsewhere"
        );
    }
}
