//! `/metrics` (OpenMetrics text) and `/healthz`, served by [`super::run`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// Liveness: the control loop beats on every iteration (at least every Lease renewal period);
/// `/healthz` fails once the last beat is older than the allowed age, so a wedged loop gets the
/// pod restarted.
#[derive(Debug, Clone)]
pub struct Health {
    started: Instant,
    /// Milliseconds since `started` at the last beat.
    last_beat_ms: Arc<AtomicU64>,
    max_age: Duration,
}

impl Health {
    pub fn new(max_age: Duration) -> Health {
        Health {
            started: Instant::now(),
            last_beat_ms: Arc::new(AtomicU64::new(0)),
            max_age,
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn beat(&self) {
        self.last_beat_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
    }

    pub fn is_alive(&self) -> bool {
        let age = self
            .elapsed_ms()
            .saturating_sub(self.last_beat_ms.load(Ordering::Relaxed));
        u128::from(age) <= self.max_age.as_millis()
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The routes, for serving and for tests.
pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([(CONTENT_TYPE, OPENMETRICS)], metrics.render()).into_response() }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let alive = health.is_alive();
                async move {
                    if alive {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "control loop stalled\n")
                    }
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn get(router: Router, path: &str) -> (StatusCode, Option<String>, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let metrics = Metrics::new();
        metrics.reconciled();
        let health = Health::new(Duration::from_secs(60));
        let router = |metrics: Metrics| super::router(metrics, health.clone());
        let (status, content_type, body) = get(router(metrics.clone()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(OPENMETRICS));
        assert!(body.contains("egw_controller_reconciles_total 1"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
        let (status, _, body) = get(router(metrics.clone()), "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
        let (status, _, _) = get(router(metrics), "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn a_stalled_loop_is_not_alive() {
        let health = Health::new(Duration::ZERO);
        health.beat();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!health.is_alive());
        let health = Health::new(Duration::from_secs(3600));
        health.beat();
        assert!(health.is_alive());
    }
}
