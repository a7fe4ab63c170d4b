//! Reading request headers.

use http::HeaderMap;

/// The value of header `name` as text; `None` when it is absent or not visible ASCII.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
