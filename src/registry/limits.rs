//! Bounds on what one request can make the server build in memory: a 2 KB patch must not be
//! able to grow into gigabytes. The limits are kube-apiserver's:
//! - `k8s.io/apiserver/pkg/server/config.go`: `MaxRequestBodyBytes` and
//!   `JSONPatchMaxCopyBytes`, both 3 MiB;
//! - `k8s.io/apiserver/pkg/endpoints/handlers/patch.go`: at most 10,000 JSON patch operations
//!   (413 beyond), a failed JSON patch is 422;

use std::io;

use http::StatusCode;
use serde_json::Value;

use crate::api::status::ApiError;

/// The largest request body, and the largest object a write may store.
pub const MAX_OBJECT_BYTES: usize = 3 << 20;
/// The most operations one JSON patch may carry.
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;
/// The most bytes the `copy` operations of one JSON patch may add, in total.
const MAX_JSON_PATCH_COPY_BYTES: usize = 3 << 20;

fn too_large(message: String) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        message,
    )
}

/// The length of `value` serialised as JSON, counted without building it.
pub fn json_len(value: &Value) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).expect("a Value always serialises");
    counter.0
}

/// 413 when a patched or applied object would be larger than any request may store.
pub fn check_object_size(value: &Value) -> Result<(), ApiError> {
    let len = json_len(value);
    if len > MAX_OBJECT_BYTES {
        return Err(too_large(format!(
            "the object would be {len} bytes, more than the limit of {MAX_OBJECT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Applies a JSON patch (RFC 6902) to `document` within the limits: the operation count is
/// checked first, and each `copy` adds the size of what it copies to a running total that may
/// not pass the copy limit, so the document never grows past it.
pub fn apply_json_patch(document: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    if operations.0.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(too_large(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            operations.0.len()
        )));
    }
    let unprocessable =
        |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message);
    let mut copied = 0;
    for operation in &operations.0 {
        if let json_patch::PatchOperation::Copy(copy) = operation {
            // A missing source is left for the patch itself to report.
            if let Some(source) = document.pointer(copy.from.as_str()) {
                copied += json_len(source);
                if copied > MAX_JSON_PATCH_COPY_BYTES {
                    return Err(unprocessable(format!(
                        "the JSON patch could not be applied: the copy operations add {copied} bytes, more than the limit of {MAX_JSON_PATCH_COPY_BYTES}"
                    )));
                }
            }
        }
        // One operation at a time, so the copy total is checked against the document as each
        // copy finds it. The document is a scratch copy: a failure leaves nothing to undo.
        json_patch::patch(document, std::slice::from_ref(operation))
            .map_err(|e| unprocessable(format!("the JSON patch could not be applied: {e}")))?;
    }
    check_object_size(document)
}

/// Applies a JSON merge patch (RFC 7386): its result can be no larger than the object and the
/// patch together, which the size check then bounds.
pub fn apply_merge_patch(document: &mut Value, patch: &Value) -> Result<(), ApiError> {
    json_patch::merge(document, patch);
    check_object_size(document)
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;
    use serde_json::json;

    use super::*;

    /// `[{"op":"add","path":"/x","value":[1]}, copy /x to /x/- ×n]`: each copy doubles /x.
    fn doubling(n: usize) -> Value {
        let mut operations = vec![json!({"op": "add", "path": "/x", "value": [1]})];
        operations.extend((0..n).map(|_| json!({"op": "copy", "from": "/x", "path": "/x/-"})));
        Value::Array(operations)
    }

    #[test]
    fn copy_doubling_stops_at_the_copy_limit() {
        let mut document = json!({});
        let error = apply_json_patch(&mut document, &doubling(40)).unwrap_err();
        assert_eq!(error.code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(json_len(&document) <= 2 * MAX_JSON_PATCH_COPY_BYTES);
        let mut document = json!({});
        apply_json_patch(&mut document, &doubling(3)).unwrap();
        assert_eq!(
            document,
            json!({"x": [1, [1], [1, [1]], [1, [1], [1, [1]]]]})
        );
    }

    #[test]
    fn too_many_operations_are_refused_before_any_is_applied() {
        let operations: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|i| json!({"op": "add", "path": format!("/k{i}"), "value": i}))
            .collect();
        let mut document = json!({});
        let error = apply_json_patch(&mut document, &Value::Array(operations)).unwrap_err();
        assert_eq!(error.code, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(document, json!({}));
    }

    #[test]
    fn merged_objects_are_bounded() {
        let mut document = json!({"a": "x".repeat(MAX_OBJECT_BYTES / 2)});
        let patch = json!({"b": "y".repeat(MAX_OBJECT_BYTES / 2 + 10)});
        let error = apply_merge_patch(&mut document, &patch).unwrap_err();
        assert_eq!(error.code, StatusCode::PAYLOAD_TOO_LARGE);
    }

    fn operation() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let pointer = proptest::sample::select(vec![
            "",
            "/a",
            "/a/0",
            "/a/1",
            "/a/-",
            "/b",
            "/b/c",
            "/b/c/-",
            "/x~1y",
            "/a/99999999999",
            "/b/~0",
            "a",
            "/a/-1",
        ]);
        let value = proptest::sample::select(vec![
            json!(1),
            json!("s"),
            json!([1, 2]),
            json!({"c": []}),
            json!(null),
        ]);
        let op = proptest::sample::select(vec![
            "add", "remove", "replace", "move", "copy", "test", "bogus",
        ]);
        (op, pointer.clone(), pointer, value).prop_map(
            |(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}),
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Fuzzing: any sequence of operations, copies included, either applies within the
        /// object limit or is refused with a 4xx; never a panic.
        #[test]
        fn any_json_patch_applies_within_bounds_or_is_refused(
            operations in proptest::collection::vec(operation(), 0..40),
        ) {
            let mut document = json!({"a": [1, {"b": 2}], "b": {"c": [true]}});
            match apply_json_patch(&mut document, &Value::Array(operations)) {
                Ok(()) => proptest::prop_assert!(json_len(&document) <= MAX_OBJECT_BYTES),
                Err(error) => proptest::prop_assert!(error.code.is_client_error()),
            }
        }

        /// Fuzzing: any merge patch of small JSON applies within bounds.
        #[test]
        fn any_merge_patch_applies_within_bounds(
            patch in proptest::prop_oneof![
                proptest::strategy::Just(json!(null)),
                "[a-z]{0,5}".prop_map(|k| json!({k: {"c": null, "d": [1]}})),
                "[a-z]{0,5}".prop_map(|k| json!({"a": k, "b": null})),
            ],
        ) {
            let mut document = json!({"a": [1], "b": {"c": [true]}});
            proptest::prop_assert!(apply_merge_patch(&mut document, &patch).is_ok());
        }
    }
}
