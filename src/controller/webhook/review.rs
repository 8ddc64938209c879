//! An `admission.k8s.io/v1` AdmissionReview in, its answer out: always `allowed: true`, with
//! poolwarden's warnings when there are any. A body that is no AdmissionReview with a request
//! (there is then no uid to answer) is a bad request: the API server counts that as the
//! webhook failing, and with `failurePolicy: Ignore` lets the change through. Nothing here
//! panics on what it is sent.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

use super::judge::Request;

/// What a body that cannot be answered lacked.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    #[error("not an admission.k8s.io/v1 AdmissionReview: {0}")]
    NotAReview(#[from] serde_json::Error),
    #[error("an AdmissionReview without a request")]
    NoRequest,
}

/// The answer to `body`, the AdmissionReview the API server sent, with the warnings `judge`
/// gives for its request.
pub fn answer(
    body: &[u8],
    judge: impl FnOnce(&Request<'_>) -> Vec<String>,
) -> Result<Vec<u8>, BadReview> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| BadReview::NoRequest)?;
    let mut response = AdmissionResponse::from(&request);
    // A deletion has no object, and changes no scale.
    if let Some(object) = &request.object {
        let object = serde_json::to_value(object)?;
        let warnings = judge(&Request {
            group: &request.resource.group,
            resource: &request.resource.resource,
            sub_resource: request.sub_resource.as_deref(),
            namespace: request.namespace.as_deref().unwrap_or_default(),
            name: &request.name,
            object: &object,
        });
        if !warnings.is_empty() {
            response.warnings = Some(warnings);
        }
    }
    debug_assert!(response.allowed, "poolwarden's webhook never denies");
    Ok(serde_json::to_vec(&response.into_review())?)
}
