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
            every enumerated value is snake_case. In a cluster of coordinators, \
            requests about a transaction owned by another node are forwarded to it \
            (header x-dtxn-forwarded-by)."
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
        api::retry,
        api::resolve,
        api::logged_decisions,
        api::health,
        api::ready,
        api::metrics,
        api::openapi,
        api::participant_openapi,
    ),
    components(schemas(
        wire::ErrorBody,
        wire::Vote,
        model::TxnState,
        model::TransactionStatus,
        model::OutcomeName,
        model::OutcomeQueryResponse,
        model::TransactionList,
        model::LoggedDecisionList,
        model::LoggedDecisionBody,
        model::DecisionScope,
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
        (name = "admin", description = "The decision log (`dtxn serve --log`): logged decisions (cluster-wide in a cluster), retry now, resolve a hazard"),
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

/// The participant side of the wire contract ([`crate::wire`]) as an
/// OpenAPI 3 document: what a participant service must serve
/// (`POST /prepare`, `/commit`, `/rollback` under its base URL) so that
/// this coordinator can call it. Generate a service stub in any language
/// from it.
pub(super) fn participant_document() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::{
        ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApiBuilder, PathsBuilder, Ref,
        Required, ResponseBuilder, ResponsesBuilder,
    };

    let json = |schema: &str| {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(schema)))
            .build()
    };
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", json("ErrorBody"))
            .build()
    };
    let request = || {
        RequestBodyBuilder::new()
            .description(Some(
                "The transaction, the attempt number, the payload registered with this \
                 participant and where to ask for the outcome.",
            ))
            .content("application/json", json("PhaseRequest"))
            .required(Some(Required::True))
            .build()
    };
    let prepare = OperationBuilder::new()
        .operation_id(Some("prepare"))
        .summary(Some("Phase 1: prepare and vote"))
        .description(Some(
            "Make the work durable enough to commit, then vote. An `aborted` vote or a \
             `409` promises the work is already undone (no rollback follows). Any other \
             status, a body that is not a vote, or no answer in time is a failed call: \
             the transaction aborts and `rollback` follows.",
        ))
        .request_body(Some(request()))
        .responses(
            ResponsesBuilder::new()
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("The vote")
                        .content("application/json", json("VoteResponse")),
                )
                .response("400", error("`unsupported_version` or a malformed request"))
                .response(
                    "409",
                    error("Refused: an `aborted` vote, with `error` as the reason"),
                )
                .build(),
        )
        .build();
    let phase2 = |id: &str, summary: &str, description: &str| {
        OperationBuilder::new()
            .operation_id(Some(id))
            .summary(Some(summary))
            .description(Some(description))
            .request_body(Some(request()))
            .responses(
                ResponsesBuilder::new()
                    .response(
                        "204",
                        ResponseBuilder::new()
                            .description("Done (any 2xx will do; the body is ignored)"),
                    )
                    .response("400", error("`unsupported_version`: a permanent failure"))
                    .response(
                        "422",
                        error("Permanent failure: not retried; a heuristic hazard"),
                    )
                    .response(
                        "503",
                        error("Transient failure: retried (so are 5xx, 408, 429 and no answer)"),
                    )
                    .build(),
            )
            .build()
    };
    let commit = phase2(
        "commit",
        "Phase 2 after a Commit decision",
        "Apply the prepared work. Idempotent: the coordinator repeats it until acknowledged.",
    );
    let rollback = phase2(
        "rollback",
        "Phase 2 after an Abort decision",
        "Undo the prepared work. Idempotent, and must answer 2xx for a transaction never \
         prepared (an empty rollback); a prepare arriving after it must then be refused.",
    );
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("dtxn participant service")
                .version(format!("wire contract {}", wire::WIRE_VERSION))
                .description(Some(
                    "What a participant service serves under the base URL it registers with \
                     a dtxn coordinator. Ignore request fields you do not know; refuse a \
                     `version` you do not know with 400 `unsupported_version`.",
                ))
                .build(),
        )
        .paths(
            PathsBuilder::new()
                .path("/prepare", PathItem::new(HttpMethod::Post, prepare))
                .path("/commit", PathItem::new(HttpMethod::Post, commit))
                .path("/rollback", PathItem::new(HttpMethod::Post, rollback)),
        )
        .components(Some(
            ComponentsBuilder::new()
                .schema_from::<wire::PhaseRequest>()
                .schema_from::<wire::VoteResponse>()
                .schema_from::<wire::Vote>()
                .schema_from::<wire::ErrorBody>()
                .build(),
        ))
        .build()
}

/// [`participant_document`] as JSON.
pub(super) fn participant_json() -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec_pretty(&participant_document())
}
