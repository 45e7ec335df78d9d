//! The OpenAPI 3 document, derived from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api;
use super::model;
use crate::wire;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dtxn coordinator",
        description = "Two-phase commit across HTTP participant services. \
            Every error answer of the API is a JSON ErrorBody {code, error}; \
            every enumerated value is snake_case."
    ),
    paths(
        api::begin,
        api::list,
        api::get_state,
        api::report,
        api::outcome,
        api::register,
        api::prepare,
        api::commit,
        api::rollback,
        api::health,
        api::ready,
        api::metrics,
        api::openapi,
    ),
    components(schemas(
        wire::ErrorBody,
        wire::Vote,
        model::TxnState,
        model::TransactionStatus,
        model::OutcomeName,
        model::OutcomeQueryResponse,
        model::TransactionList,
        model::UnfinishedTransaction,
        model::RegisterRequest,
        model::RegisterResponse,
        model::RegistrationName,
        model::PrepareResponse,
        model::PrepareOutcomeName,
        model::AbortReasonBody,
        model::AbortKind,
        model::CallFailureBody,
        model::FailureKind,
        model::OutcomeResponse,
        model::DecisionName,
        model::HazardBody,
        model::ReportResponse,
        model::ParticipantReportBody,
        model::PrepareStatusBody,
        model::PrepareStatusKind,
        model::Phase2StatusBody,
        model::Phase2StatusKind,
        model::HealthResponse,
        model::HealthStatus,
        model::ReadyResponse,
        model::ReadyStatus,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "transactions", description = "Begin, register, prepare, commit, roll back, inspect"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub(super) struct ApiDoc;

/// Declares the `bearer` security scheme the document refers to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document as JSON.
pub(super) fn document() -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&ApiDoc::openapi())
}
