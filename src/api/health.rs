//! `GET /healthz`: liveness only. It answers as long as the server runs and touches neither
//! the database nor Microsoft, so a slow dependency cannot make an orchestrator restart us.

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok\n"
}
