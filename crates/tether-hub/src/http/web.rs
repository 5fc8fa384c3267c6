//! The demo page (web/ in the repository), built into the binary.

/// The file served at `path`, with its content type.
pub(crate) fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", include_str!("../../../../web/index.html"))),
        "/app.js" => Some(("text/javascript; charset=utf-8", include_str!("../../../../web/app.js"))),
        "/style.css" => Some(("text/css; charset=utf-8", include_str!("../../../../web/style.css"))),
        _ => None,
    }
}
