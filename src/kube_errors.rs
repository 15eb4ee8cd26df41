//! Errors from the Kubernetes API servers we call (kube-apiserver, the import source), as one
//! line a person reads in a log, a condition or a terminal: kube::Error's own text carries a
//! debug dump of the whole Status.

/// `error` in one line: an API error's causes as `field: message` (or its message when it has
/// none); other errors with their causes.
pub fn one_line(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let causes: Vec<String> = status
                .details
                .iter()
                .flat_map(|details| &details.causes)
                .map(|cause| match cause.field.as_str() {
                    "" => cause.message.clone(),
                    field => format!("{field}: {}", cause.message),
                })
                .collect();
            if causes.is_empty() {
                status.message.clone()
            } else {
                causes.join("; ")
            }
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

/// Whether `error` is the API server's 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
