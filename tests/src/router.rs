//! HTTP routing and the request headers Spin 4 adds before calling a component.
//!
//! Spin builds its router on the `routefinder` crate (spinframework/spin `crates/http/src/routes.rs`)
//! and so does this one, so specificity is ranked identically: segment by segment, exact beats
//! `:param` beats the trailing wildcard, and a longer route beats a shorter one. A manifest route
//! ending in `/...` becomes a routefinder wildcard; when two triggers use the same route the last
//! one wins. The headers follow `crates/trigger-http/src/headers.rs`.

use anyhow::{Result, anyhow};
use std::fmt;
use std::net::SocketAddr;

/// What a route maps to.
#[derive(Clone, Debug)]
struct RouteTarget {
    component: String,
    /// The route as written in the manifest.
    raw_route: String,
    /// The route with the (always `/`) base applied: what `spin-matched-route` reports.
    based_route: String,
    wildcard: bool,
}

/// A route as `spin up` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDisplay {
    /// The path, without a trailing `/...`.
    pub path: String,
    /// Whether the route ends in `/...`.
    pub wildcard: bool,
}

impl fmt::Display for RouteDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "{} (wildcard)", self.path)
        } else {
            f.write_str(&self.path)
        }
    }
}

/// The app's routes.
#[derive(Debug)]
pub struct Router {
    inner: routefinder::Router<RouteTarget>,
}

impl Router {
    /// Builds the router from `(component, route)` pairs in manifest order.
    pub fn build<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        // Spin keys duplicates by the raw route and keeps the last one.
        let mut unique: Vec<(&str, &str)> = Vec::new();
        for (component, route) in routes {
            match unique.iter_mut().find(|(_, r)| *r == route) {
                Some(slot) => slot.0 = component,
                None => unique.push((component, route)),
            }
        }
        let mut inner = routefinder::Router::new();
        for (component, raw_route) in unique {
            let based_route = with_base(raw_route);
            let (spec, wildcard) = match based_route.strip_suffix("/...") {
                Some(prefix) => (format!("{prefix}/*"), true),
                None => match based_route.strip_suffix("/*") {
                    Some(_) => (based_route.clone(), true),
                    None => (based_route.clone(), false),
                },
            };
            let target = RouteTarget {
                component: component.to_string(),
                raw_route: raw_route.to_string(),
                based_route: based_route.clone(),
                wildcard,
            };
            inner.add(spec.as_str(), target).map_err(|e| {
                anyhow!(
                    "Error parsing route {based_route} associated with component {component}: {e}"
                )
            })?;
        }
        Ok(Self { inner })
    }

    /// The best route for `path`, or `None` when nothing matches (Spin answers 404).
    pub fn route<'a>(&'a self, path: &'a str) -> Option<RouteMatch<'a>> {
        let found = self.inner.best_match(path)?;
        let target = found.handler();
        let captures = found.captures();
        let params = captures
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Spin has always passed trailing slashes through in the path info; routefinder drops
        // them from the wildcard capture, so they are put back here.
        let path_info = match captures.wildcard() {
            None => String::new(),
            Some(w) => match (w.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_string(),
                (false, false) => format!("/{w}"),
                (false, true) => format!("/{w}/"),
            },
        };
        Some(RouteMatch {
            target,
            params,
            path_info,
        })
    }

    /// The routes in routefinder's order, with their component, as `spin up` lists them.
    pub fn routes(&self) -> impl Iterator<Item = (RouteDisplay, &str)> {
        self.inner.iter().map(|(_, t)| {
            let path = if t.wildcard {
                t.based_route
                    .strip_suffix("/...")
                    .or_else(|| t.based_route.strip_suffix("/*"))
                    .unwrap_or(&t.based_route)
                    .to_string()
            } else {
                t.based_route.clone()
            };
            (
                RouteDisplay {
                    path,
                    wildcard: t.wildcard,
                },
                t.component.as_str(),
            )
        })
    }
}

/// Spin applies the base `/` and strips one trailing slash from the route.
fn with_base(raw: &str) -> String {
    let absolute = if raw.starts_with('/') {
        raw.to_string()
    } else {
        format!("/{raw}")
    };
    absolute
        .strip_suffix('/')
        .map(str::to_string)
        .unwrap_or(absolute)
}

/// A successful routing decision.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    target: &'a RouteTarget,
    params: Vec<(String, String)>,
    path_info: String,
}

impl RouteMatch<'_> {
    /// The component that handles the request.
    pub fn component(&self) -> &str {
        &self.target.component
    }

    /// The route as written in the manifest.
    pub fn raw_route(&self) -> &str {
        &self.target.raw_route
    }

    /// The `:name` captures, in route order.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// What the trailing `/...` matched, with Spin's trailing-slash rule; empty for exact routes.
    pub fn path_info(&self) -> &str {
        &self.path_info
    }

    /// The `spin-*` headers for this match, in the order Spin adds them.
    ///
    /// `full_url` is `scheme://host` followed by the request's path and query.
    pub fn spin_headers(&self, full_url: &str, client_addr: SocketAddr) -> Vec<(String, String)> {
        let raw = &self.target.raw_route;
        let component_route = raw.strip_suffix("/...").unwrap_or(raw);
        let mut headers = vec![
            ("spin-path-info".to_string(), self.path_info.clone()),
            ("spin-full-url".to_string(), full_url.to_string()),
            (
                "spin-matched-route".to_string(),
                self.target.based_route.clone(),
            ),
            ("spin-base-path".to_string(), "/".to_string()),
            ("spin-raw-component-route".to_string(), raw.clone()),
            (
                "spin-component-route".to_string(),
                component_route.to_string(),
            ),
            ("spin-client-addr".to_string(), client_addr.to_string()),
        ];
        for (name, value) in &self.params {
            headers.push((
                format!("spin-path-match-{name}")
                    .replace('_', "-")
                    .to_ascii_lowercase(),
                value.clone(),
            ));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        Router::build(routes.iter().copied()).unwrap()
    }

    fn component<'a>(r: &'a Router, path: &'a str) -> Option<String> {
        r.route(path).map(|m| m.component().to_string())
    }

    #[test]
    fn exact_routes_beat_params_and_wildcards() {
        let r = router(&[
            ("wild", "/api/..."),
            ("param", "/api/:user_id/tasks"),
            ("exact", "/api/me/tasks"),
            ("deep", "/api/:user_id/tasks/..."),
        ]);
        assert_eq!(component(&r, "/api/me/tasks").as_deref(), Some("exact"));
        assert_eq!(component(&r, "/api/u1/tasks").as_deref(), Some("param"));
        assert_eq!(component(&r, "/api/u1/tasks/7").as_deref(), Some("deep"));
        assert_eq!(component(&r, "/api/u1/other").as_deref(), Some("wild"));
        assert_eq!(component(&r, "/api").as_deref(), Some("wild"));
        assert_eq!(component(&r, "/elsewhere"), None);
    }

    #[test]
    fn longer_wildcards_beat_shorter_ones_in_any_order() {
        for routes in [
            [("one", "/one/..."), ("two", "/one/two/...")],
            [("two", "/one/two/..."), ("one", "/one/...")],
        ] {
            let r = router(&routes);
            assert_eq!(component(&r, "/one/two/three").as_deref(), Some("two"));
            assert_eq!(component(&r, "/one/three").as_deref(), Some("one"));
        }
    }

    #[test]
    fn the_last_duplicate_route_wins() {
        let r = router(&[("first", "/foo"), ("second", "/foo")]);
        assert_eq!(component(&r, "/foo").as_deref(), Some("second"));
        assert_eq!(r.routes().count(), 1);
    }

    #[test]
    fn path_info_holds_what_the_wildcard_matched_with_trailing_slashes() {
        let r = router(&[("c", "/test/..."), ("e", "/exact")]);
        let info = |p: &str| r.route(p).map(|m| m.path_info().to_string());
        assert_eq!(info("/test").as_deref(), Some(""));
        assert_eq!(info("/test/").as_deref(), Some("/"));
        assert_eq!(info("/test/hello").as_deref(), Some("/hello"));
        assert_eq!(info("/test/hello/").as_deref(), Some("/hello/"));
        assert_eq!(info("/test/a/b").as_deref(), Some("/a/b"));
        assert_eq!(info("/exact").as_deref(), Some(""));

        let root = router(&[("all", "/...")]);
        assert_eq!(
            root.route("/1/2/3").map(|m| m.path_info().to_string()),
            Some("/1/2/3".to_string())
        );
    }

    #[test]
    fn spin_headers_match_spins_values() {
        let r = router(&[("tasks", "/api/:user_id/tasks/...")]);
        let m = r.route("/api/42/tasks/7/complete").unwrap();
        let client: SocketAddr = "127.0.0.1:8777".parse().unwrap();
        let headers = m.spin_headers("http://localhost:3000/api/42/tasks/7/complete?x=1", client);
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("spin-full-url"),
            Some("http://localhost:3000/api/42/tasks/7/complete?x=1")
        );
        assert_eq!(get("spin-path-info"), Some("/7/complete"));
        assert_eq!(get("spin-matched-route"), Some("/api/:user_id/tasks/..."));
        assert_eq!(
            get("spin-raw-component-route"),
            Some("/api/:user_id/tasks/...")
        );
        assert_eq!(get("spin-component-route"), Some("/api/:user_id/tasks"));
        assert_eq!(get("spin-base-path"), Some("/"));
        assert_eq!(get("spin-client-addr"), Some("127.0.0.1:8777"));
        assert_eq!(get("spin-path-match-user-id"), Some("42"));
    }

    #[test]
    fn routes_list_wildcards_like_spin_up() {
        let r = router(&[("c", "/whee/..."), ("d", "/exact")]);
        let listed: Vec<String> = r
            .routes()
            .map(|(route, c)| format!("{c}: {route}"))
            .collect();
        assert!(
            listed.contains(&"c: /whee (wildcard)".to_string()),
            "{listed:?}"
        );
        assert!(listed.contains(&"d: /exact".to_string()), "{listed:?}");
    }
}
