//! The console plugin's files (`console-plugin/dist`), served on a listener of their own for
//! the OpenShift console, which loads `plugin-manifest.json` and the scripts it names through
//! its backend. The files are read once at start and only those are served: no path reaches
//! the file system. Every answer says `nosniff`, so each file carries its real type; names
//! with a content hash are cached for a year, the others (the manifest, the entry script, the
//! translations) are revalidated each time, so a new version is picked up at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::response::{Body, full};
use super::{ConnectionLimits, Handler, Peer};

/// Why the plugin's files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    #[error("reading the console plugin's files in {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no plugin-manifest.json: build the plugin (console-plugin/, npm run build)")]
    NoManifest(PathBuf),
}

pub struct Assets {
    files: HashMap<String, Asset>,
    limits: ConnectionLimits,
}

struct Asset {
    bytes: Bytes,
    content_type: &'static str,
    cache_control: &'static str,
}

impl Assets {
    /// Reads every file under `dir`.
    pub fn load(dir: &Path, limits: ConnectionLimits) -> Result<Assets, AssetsError> {
        let mut files = HashMap::new();
        read_tree(dir, dir, &mut files)?;
        if !files.contains_key("plugin-manifest.json") {
            return Err(AssetsError::NoManifest(dir.to_path_buf()));
        }
        tracing::info!(files = files.len(), dir = %dir.display(), "console plugin loaded");
        Ok(Assets { files, limits })
    }

    fn answer(&self, method: &Method, path: &str) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut response = full(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "");
            let allow = HeaderValue::from_static("GET, HEAD");
            response.headers_mut().insert(header::ALLOW, allow);
            return nosniff(response);
        }
        let Some(asset) = self.files.get(path.trim_start_matches('/')) else {
            return nosniff(full(StatusCode::NOT_FOUND, "text/plain", "not found\n"));
        };
        let body = match *method {
            Method::HEAD => Bytes::new(),
            _ => asset.bytes.clone(),
        };
        let mut response = full(StatusCode::OK, asset.content_type, body);
        let headers = response.headers_mut();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(asset.cache_control),
        );
        headers.insert(header::CONTENT_LENGTH, asset.bytes.len().into());
        nosniff(response)
    }
}

impl Handler for Assets {
    fn connection_limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        _peer: Peer,
    ) -> (Response<Body>, Incoming) {
        let (parts, body) = request.into_parts();
        (self.answer(&parts.method, parts.uri.path()), body)
    }
}

fn nosniff(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Reads the files under `dir` into `files`, by their path relative to `root`.
fn read_tree(
    root: &Path,
    dir: &Path,
    files: &mut HashMap<String, Asset>,
) -> Result<(), AssetsError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AssetsError::Read { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(read(dir))? {
        let path = entry.map_err(read(dir))?.path();
        if path.is_dir() {
            read_tree(root, &path, files)?;
            continue;
        }
        let bytes = std::fs::read(&path).map_err(read(&path))?;
        let name = path
            .strip_prefix(root)
            .expect("under the root")
            .to_string_lossy()
            .into_owned();
        let asset = Asset {
            bytes: bytes.into(),
            content_type: content_type(&name),
            cache_control: if is_content_hashed(&name) {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            },
        };
        files.insert(name, asset);
    }
    Ok(())
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("js") => "application/javascript; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Whether a file's name carries a hash of its content (webpack's `[contenthash]`, 16 hex
/// digits or more), so that a changed file gets a new name and the old one can be cached.
fn is_content_hashed(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.split(['-', '.'])
        .any(|part| part.len() >= 16 && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_are_cached_and_the_others_revalidated() {
        assert!(is_content_hashed(
            "exposed-CatalogImageList-chunk-0d1c2b3a4f5e6d7c8b9a.min.js"
        ));
        assert!(!is_content_hashed("plugin-entry.js"));
        assert!(!is_content_hashed("plugin-manifest.json"));
        assert!(!is_content_hashed(
            "locales/en/plugin__catalog-console-plugin.json"
        ));
        assert_eq!(
            content_type("plugin-entry.js"),
            "application/javascript; charset=utf-8"
        );
        assert_eq!(content_type("a/b.json"), "application/json");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }
}
