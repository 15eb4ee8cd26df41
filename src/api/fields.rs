//! The selectable fields of a CatalogImage and its labels, as the (name, value) pairs the store
//! indexes. Field selectors and label selectors are answered from these pairs alone, for lists
//! and for every watch event, without decoding the stored JSON.

use super::types::CatalogImage;

/// The fields a field selector may name, in the order an index is preferred when a selector
/// has several equalities (the most selective first).
pub const SELECTABLE_FIELDS: [&str; 14] = [
    "metadata.name",
    "spec.digest",
    "status.sourceImageBuild",
    "spec.registryUrl",
    "spec.tags",
    "spec.builderImage",
    "spec.metadata.distro",
    "spec.metadata.targets",
    "spec.metadata.exportFormat",
    "spec.metadata.architecture",
    "spec.metadata.buildMode",
    "spec.metadata.bootc",
    "status.phase",
    "metadata.namespace",
];

/// Fields indexed only where they are set, which saves an index entry per object for fields
/// most objects leave unset; an equality with "" on them cannot be answered from the index.
const INDEXED_WHEN_SET: [&str; 4] = [
    "spec.tags",
    "spec.metadata.targets",
    "spec.builderImage",
    "status.sourceImageBuild",
];

/// Whether the index holds every object with `value` in `field`.
pub fn index_answers(field: &str, value: &str) -> bool {
    !value.is_empty() || !INDEXED_WHEN_SET.contains(&field)
}

/// Label pairs are indexed under this prefix followed by the label key.
pub const LABEL_PREFIX: &str = "label:";

/// The OCI name of an architecture, so that AIB and OCI spellings compare equal.
pub fn normalise_architecture(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Normalises the value of a field in a selector the way the field is indexed.
pub fn normalise_selector_value<'a>(field: &str, value: &'a str) -> &'a str {
    match field {
        "spec.metadata.architecture" => normalise_architecture(value),
        _ => value,
    }
}

/// Every (field or label, value) pair of an object. Single-valued fields are present even when
/// unset (empty), as field selectors on an unset field compare against "", except those
/// `INDEXED_WHEN_SET`.
pub fn index_values(image: &CatalogImage) -> Vec<(String, String)> {
    let meta = &image.metadata;
    let spec = &image.spec;
    let md = spec.metadata.as_ref();
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    let mut pairs = vec![
        ("metadata.name".to_string(), text(meta.name.as_deref())),
        (
            "metadata.namespace".to_string(),
            text(meta.namespace.as_deref()),
        ),
        ("spec.registryUrl".to_string(), spec.registry_url.clone()),
        ("spec.digest".to_string(), text(spec.digest.as_deref())),
        (
            "spec.metadata.distro".to_string(),
            text(md.and_then(|m| m.distro.as_deref())),
        ),
        (
            "spec.metadata.exportFormat".to_string(),
            text(md.and_then(|m| m.export_format.as_deref())),
        ),
        (
            "spec.metadata.architecture".to_string(),
            text(
                md.and_then(|m| m.architecture.as_deref())
                    .map(normalise_architecture),
            ),
        ),
        (
            "spec.metadata.buildMode".to_string(),
            text(md.and_then(|m| m.build_mode).map(|b| b.as_str())),
        ),
        (
            "spec.metadata.bootc".to_string(),
            md.and_then(|m| m.bootc)
                .map_or(String::new(), |b| b.to_string()),
        ),
        (
            "status.phase".to_string(),
            text(
                image
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .map(|p| p.as_str()),
            ),
        ),
    ];
    pairs.extend(
        spec.tags
            .iter()
            .map(|t| ("spec.tags".to_string(), t.clone())),
    );
    if let Some(md) = md {
        pairs.extend(
            md.targets
                .iter()
                .map(|t| ("spec.metadata.targets".to_string(), t.name.clone())),
        );
    }
    if let Some(builder) = &spec.builder_image {
        pairs.push(("spec.builderImage".to_string(), builder.clone()));
    }
    let source = image
        .status
        .as_ref()
        .and_then(|s| s.source_image_build.as_ref());
    if let Some(source) = source {
        pairs.push(("status.sourceImageBuild".to_string(), source.clone()));
    }
    for (key, value) in meta.labels.iter().flatten() {
        pairs.push((format!("{LABEL_PREFIX}{key}"), value.clone()));
    }
    pairs
}
