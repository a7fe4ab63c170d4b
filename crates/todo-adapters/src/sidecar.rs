//! Admitting calls to the routes only the Dapr sidecar calls, by `todo_core::sidecar`'s rules.

use crate::headers::header;
use crate::settings::SidecarAdmission;
use spin_sdk::http::Request;
use std::sync::atomic::{AtomicBool, Ordering};
use todo_core::error::ApiError;
use todo_core::sidecar::{SidecarPolicy, TOKEN_HEADER};

/// Whether this instance already said that its routes refuse every call.
static SAID_CLOSED: AtomicBool = AtomicBool::new(false);

/// Lets `req` through if it comes from the sidecar: on this host, with the app token. A
/// deployment without a token refuses every call and says so once per instance; one with an
/// unsafe token answers 500 and names the variable in the log.
pub async fn admit(req: &Request) -> Result<(), ApiError> {
    let settings = SidecarAdmission::load().await?;
    let policy = SidecarPolicy::new(&settings.vars())
        .map_err(|error| ApiError::internal(error.to_string()))?;
    if policy.refuses_everything() && !SAID_CLOSED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "app_api_token is not set: the sidecar routes refuse every call; set it (and the \
             sidecar's APP_API_TOKEN), or allow_open_sidecar_routes=true for local development"
        );
    }
    policy.check(
        header(req.headers(), TOKEN_HEADER),
        header(req.headers(), "spin-client-addr"),
    )
}
