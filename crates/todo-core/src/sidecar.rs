//! Who may call the routes that only the Dapr sidecar calls: `/dapr/subscribe`,
//! `/api/events/...`, `/outbox-relay` and `/reminder-sweep`. A forged delivery to the intake
//! could create tasks in any user's account, and the relay and the sweep are work on behalf
//! of every user, so these routes are closed unless the caller proves it is the sidecar.
//!
//! Safe by default:
//! - The caller must present the app token in `dapr-api-token` (the sidecar sends its
//!   `APP_API_TOKEN` on every call to the app, per Dapr's app API token docs). With no
//!   `app_api_token` configured, every call is refused, unless `allow_open_sidecar_routes` is
//!   `true`, a switch for local development only.
//! - A token shorter than 32 bytes or still holding the template's placeholder is a
//!   deployment mistake ([`crate::auth::unsafe_secret`]): the component refuses to serve.
//! - Defence in depth: the caller must also be on this host. The sidecar runs in the app's
//!   pod and calls it on localhost, so a call from any other address did not come from it.
//!   Topologies where the sidecar runs elsewhere (Dapr's shared mode) turn this off with
//!   `sidecar_loopback_only=false` and must then rely on the token and the network.

use crate::auth::{ConfigError, check_app_token, unsafe_secret};
use crate::error::ApiError;
use std::net::{IpAddr, SocketAddr};

/// Header the sidecar carries its `APP_API_TOKEN` in (Dapr's "Authenticate requests from Dapr
/// using token authentication"), and the app its `DAPR_API_TOKEN` in on calls to the sidecar.
pub const TOKEN_HEADER: &str = "dapr-api-token";

/// The settings, as the component reads them from its variables.
#[derive(Debug, Clone, Copy, Default)]
pub struct SidecarVars<'a> {
    pub app_api_token: &'a str,
    pub allow_open_sidecar_routes: &'a str,
    pub sidecar_loopback_only: &'a str,
}

/// The checks a sidecar route applies, built once from [`SidecarVars`].
pub struct SidecarPolicy {
    token: String,
    open: bool,
    loopback_only: bool,
}

impl std::fmt::Debug for SidecarPolicy {
    // The token stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarPolicy")
            .field("token_configured", &!self.token.is_empty())
            .field("open", &self.open)
            .field("loopback_only", &self.loopback_only)
            .finish()
    }
}

impl SidecarPolicy {
    /// Fails when the configured token is unsafe. Only the literal `true` opens the routes
    /// without a token, and only the literal `false` lets other hosts call: a typo keeps
    /// them closed.
    pub fn new(vars: &SidecarVars<'_>) -> Result<Self, ConfigError> {
        if !vars.app_api_token.is_empty()
            && let Some(reason) = unsafe_secret(vars.app_api_token)
        {
            return Err(ConfigError {
                variable: "app_api_token",
                reason,
            });
        }
        Ok(Self {
            token: vars.app_api_token.to_owned(),
            open: vars
                .allow_open_sidecar_routes
                .trim()
                .eq_ignore_ascii_case("true"),
            loopback_only: !vars
                .sidecar_loopback_only
                .trim()
                .eq_ignore_ascii_case("false"),
        })
    }

    /// True when no token is configured and the routes are not opened for development: every
    /// call is refused, which the component logs once.
    pub fn refuses_everything(&self) -> bool {
        self.token.is_empty() && !self.open
    }

    /// Checks one call: `token` is its `dapr-api-token` header, `client_addr` Spin's
    /// `spin-client-addr` (`ip:port`). 403 from another host, 401 without the right token.
    pub fn check(&self, token: Option<&str>, client_addr: Option<&str>) -> Result<(), ApiError> {
        if self.loopback_only && !client_addr.is_some_and(is_loopback) {
            return Err(ApiError::Forbidden {
                detail: "this route answers the Dapr sidecar on this host only".to_owned(),
            });
        }
        if self.token.is_empty() {
            if self.open {
                return Ok(());
            }
            return Err(ApiError::unauthorized(
                "no app token is configured, so this route refuses every call: set \
                 app_api_token (and the sidecar's APP_API_TOKEN)",
            ));
        }
        check_app_token(&self.token, token)
    }
}

/// Whether `addr` (`ip:port`, `[v6]:port` or a bare address) is a loopback address.
fn is_loopback(addr: &str) -> bool {
    let ip = addr
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| addr.parse::<IpAddr>());
    match ip {
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";
    const HERE: Option<&str> = Some("127.0.0.1:50123");

    fn policy(token: &str, open: &str, loopback_only: &str) -> SidecarPolicy {
        SidecarPolicy::new(&SidecarVars {
            app_api_token: token,
            allow_open_sidecar_routes: open,
            sidecar_loopback_only: loopback_only,
        })
        .expect("a usable policy")
    }

    fn status(result: Result<(), ApiError>) -> u16 {
        result.map_or_else(|e| e.status(), |()| 200)
    }

    #[test]
    fn without_a_token_every_call_is_refused_unless_opened_for_development() {
        let closed = policy("", "", "");
        assert!(closed.refuses_everything());
        assert_eq!(status(closed.check(None, HERE)), 401);
        assert_eq!(status(closed.check(Some("anything"), HERE)), 401);
        for not_quite in ["yes", "1", "on", "ture"] {
            assert!(
                policy("", not_quite, "").refuses_everything(),
                "{not_quite}"
            );
        }
        let open = policy("", " TRUE ", "");
        assert!(!open.refuses_everything());
        assert_eq!(status(open.check(None, HERE)), 200);
        assert_eq!(
            status(open.check(None, Some("10.0.0.7:4000"))),
            403,
            "open still means from this host"
        );
    }

    #[test]
    fn a_configured_token_must_be_presented_exactly() {
        let policy = policy(TOKEN, "true", "");
        assert_eq!(status(policy.check(Some(TOKEN), HERE)), 200);
        for wrong in [
            None,
            Some(""),
            Some(&TOKEN[1..]),
            Some("0123456789ABCDEF0123456789ABCDEF"),
        ] {
            assert_eq!(status(policy.check(wrong, HERE)), 401, "{wrong:?}");
        }
    }

    #[test]
    fn only_loopback_callers_pass_unless_turned_off() {
        let policy_here = policy(TOKEN, "", "");
        for addr in [
            "127.0.0.1:1",
            "127.9.9.9:80",
            "[::1]:8080",
            "::1",
            "[::ffff:127.0.0.1]:9",
        ] {
            assert_eq!(
                status(policy_here.check(Some(TOKEN), Some(addr))),
                200,
                "{addr}"
            );
        }
        for addr in [
            "10.1.2.3:4000",
            "[2001:db8::1]:80",
            "0.0.0.0:1",
            "localhost:80",
            "",
        ] {
            assert_eq!(
                status(policy_here.check(Some(TOKEN), Some(addr))),
                403,
                "{addr}"
            );
        }
        assert_eq!(status(policy_here.check(Some(TOKEN), None)), 403);
        let shared = policy(TOKEN, "", "false");
        assert_eq!(
            status(shared.check(Some(TOKEN), Some("10.1.2.3:4000"))),
            200
        );
        assert_eq!(status(shared.check(None, Some("10.1.2.3:4000"))), 401);
    }

    #[test]
    fn weak_or_placeholder_tokens_stop_the_component() {
        for weak in ["short", "CHANGE-ME-CHANGE-ME-CHANGE-ME-CHANGE-ME"] {
            let error = SidecarPolicy::new(&SidecarVars {
                app_api_token: weak,
                ..SidecarVars::default()
            })
            .expect_err("refused");
            assert_eq!(error.variable, "app_api_token");
            assert!(!error.to_string().contains(weak), "the value is not logged");
        }
    }
}
