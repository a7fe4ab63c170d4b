//! The `Prefer` request header (RFC 7240), as far as the API honours it: `return=minimal` asks
//! a write to answer without the representation. The status and the `Location` and `ETag`
//! headers stay, so a client that wants the task can still `GET` it; the body goes, which also
//! lets the answer leave as one TCP segment (BENCHMARKS.md, "The 40 ms stall").

/// The request header a client states its preferences in.
pub const PREFER: &str = "prefer";
/// The response header that says which preferences were honoured.
pub const PREFERENCE_APPLIED: &str = "preference-applied";
/// Value of `Preference-Applied` when the body was left out.
pub const RETURN_MINIMAL: &str = "return=minimal";

/// Whether any of the request's `Prefer` header values asks for `return=minimal`. Preferences
/// are comma-separated, may carry `;` parameters, and are matched case-insensitively; an
/// unknown or malformed preference is ignored, as RFC 7240 section 2 says.
pub fn wants_minimal<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .filter_map(|preference| preference.split(';').next())
        .filter_map(|token| token.split_once('='))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("return")
                && value
                    .trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("minimal")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_minimal_is_found_among_other_preferences() {
        assert!(wants_minimal(["return=minimal"]));
        assert!(wants_minimal([
            "respond-async, RETURN = \"Minimal\"; foo=bar"
        ]));
        assert!(wants_minimal(["wait=10", "return=minimal"]));
    }

    #[test]
    fn anything_else_keeps_the_representation() {
        assert!(!wants_minimal([]));
        assert!(!wants_minimal(["return=representation"]));
        assert!(!wants_minimal(["return"]));
        assert!(!wants_minimal(["minimal"]));
        assert!(!wants_minimal(["handling=lenient; return=minimal"]));
        assert!(!wants_minimal(["returns=minimal"]));
    }
}
