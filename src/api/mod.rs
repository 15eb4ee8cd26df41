//! The CatalogImage API: its types, defaulting and validation, its selectable fields, its
//! Table rendering, and the discovery and OpenAPI documents that describe it.

pub mod discovery;
pub mod fields;
pub mod openapi;
pub mod shape;
pub mod table;
pub mod types;
pub mod validate;
