//! `GET /readyz`: whether the embedding backend answers. `/healthz` says the process is alive;
//! this says a request could be routed now: the embedding server (or the in-process model's
//! worker) embeds a one-word text within a short timeout.
//!
//! One check runs at a time and its result is reused for [`FRESH`], so a probe storm (the
//! endpoint needs no key) costs the embedding backend at most one small request per second.

use std::time::{Duration, Instant};

use r2_router::R2Router;
use tokio::sync::Mutex;

use crate::ApiError;

/// The text `GET /readyz` embeds.
pub const READY_PROBE: &str = "ready";

/// How long the embedding backend gets to embed [`READY_PROBE`].
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a check's result is reused.
const FRESH: Duration = Duration::from_secs(1);

/// The last check and its result.
#[derive(Default)]
pub(crate) struct Readiness {
    last: Mutex<Option<(Instant, Result<(), ApiError>)>>,
}

impl Readiness {
    /// `Ok` when the embedding backend answers, else the 503 to answer (with the reason).
    pub(crate) async fn check(&self, r2: &R2Router) -> Result<(), ApiError> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < FRESH {
                return result.clone();
            }
        }
        let result = probe(r2).await;
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

/// Embeds [`READY_PROBE`] with the router's embedder (not through the router, so that probes do
/// not count in the embedding metrics).
async fn probe(r2: &R2Router) -> Result<(), ApiError> {
    let texts = [READY_PROBE.to_owned()];
    let embedded = tokio::time::timeout(READY_TIMEOUT, async {
        let embedder = r2.embedder().await?;
        embedder.embed(&texts).await.map_err(r2_router::Error::from)
    })
    .await;
    match embedded {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let detail = e.to_string();
            let reason = ApiError::from(e);
            let reason = format!("the embedding backend failed: {}", reason.message());
            Err(ApiError::not_ready(&reason).with_detail(detail))
        }
        Err(_) => Err(ApiError::not_ready(&format!(
            "the embedding backend did not answer within {READY_TIMEOUT:?}"
        ))),
    }
}
