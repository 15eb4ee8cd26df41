//! The CatalogImage API: its types, defaulting and validation, its selectable fields and
//! selectors, its errors (metav1.Status), its Table rendering, and the discovery and OpenAPI
//! documents that describe it. Values and rules only: nothing here knows HTTP serving or storage.

pub mod decode;
pub mod discovery;
pub mod fields;
pub mod openapi;
pub mod selector;
pub mod shape;
pub mod status;
pub mod table;
pub mod types;
pub mod validate;
pub mod verb;
