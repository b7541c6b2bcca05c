//! OpenAPI 3.0 and 3.1 documents, YAML or JSON: each operation is an interface expected of the
//! service the document is attached to, from any caller.
//!
//! Owns reading a document into a `Contract`. Paths are relative to the server URL, so the path
//! of the document's first `servers` entry (variables at their defaults) is put in front, unless
//! the manifest gives a `base_path` (an empty one turns the prefix off). A path item may be a
//! local `$ref` into `components.pathItems` (3.1); other references are refused, since the
//! operations behind them cannot be known. Swagger 2.0 is refused with a message saying so.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::error::{SourceError, line_of};
use super::route::Op;
use super::{Contract, ContractKind, Declared};

#[derive(Deserialize)]
struct RawDoc {
    #[serde(default)]
    openapi: Option<String>,
    #[serde(default)]
    swagger: Option<IgnoredAny>,
    #[serde(default)]
    servers: Vec<RawServer>,
    #[serde(default)]
    paths: Option<BTreeMap<String, RawPathItem>>,
    #[serde(default)]
    components: Option<RawComponents>,
}

#[derive(Deserialize)]
struct RawServer {
    url: String,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
}

#[derive(Deserialize)]
struct RawVariable {
    #[serde(rename = "default")]
    value: String,
}

#[derive(Deserialize, Default)]
struct RawComponents {
    #[serde(default, rename = "pathItems")]
    path_items: BTreeMap<String, RawPathItem>,
}

#[derive(Deserialize, Default)]
struct RawPathItem {
    #[serde(default, rename = "$ref")]
    reference: Option<String>,
    #[serde(default)]
    get: Option<IgnoredAny>,
    #[serde(default)]
    put: Option<IgnoredAny>,
    #[serde(default)]
    post: Option<IgnoredAny>,
    #[serde(default)]
    delete: Option<IgnoredAny>,
    #[serde(default)]
    options: Option<IgnoredAny>,
    #[serde(default)]
    head: Option<IgnoredAny>,
    #[serde(default)]
    patch: Option<IgnoredAny>,
    #[serde(default)]
    trace: Option<IgnoredAny>,
}

impl RawPathItem {
    fn methods(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("GET", &self.get),
            ("PUT", &self.put),
            ("POST", &self.post),
            ("DELETE", &self.delete),
            ("OPTIONS", &self.options),
            ("HEAD", &self.head),
            ("PATCH", &self.patch),
            ("TRACE", &self.trace),
        ]
        .into_iter()
        .filter(|(_, op)| op.is_some())
        .map(|(m, _)| m)
    }
}

/// Reads an OpenAPI document describing `service`. `base_path` overrides the path prefix taken
/// from the document's servers.
pub fn load_openapi(
    path: &Path,
    service: &str,
    base_path: Option<&str>,
) -> Result<Contract, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|e| SourceError::read(path, &e))?;
    parse_openapi(&text, path, service, base_path)
}

/// Parses an OpenAPI document's text: JSON when the file ends in `.json` or the text starts
/// with `{`, YAML otherwise.
pub fn parse_openapi(
    text: &str,
    file: &Path,
    service: &str,
    base_path: Option<&str>,
) -> Result<Contract, SourceError> {
    let json = file.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    let doc: RawDoc = if json {
        serde_json::from_str(text).map_err(|e| SourceError::json(file, &e))?
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| SourceError::yaml(file, &e))?
    };
    let version = match (&doc.openapi, &doc.swagger) {
        (Some(v), _) if v.starts_with("3.") => v.clone(),
        (Some(v), _) => {
            return Err(SourceError::new(
                file,
                format!("unsupported OpenAPI version {v:?}: expected 3.0 or 3.1"),
            )
            .at(line_of(text, "openapi")));
        }
        (None, Some(_)) => {
            return Err(SourceError::new(
                file,
                "Swagger 2.0 is not supported: convert the document to OpenAPI 3",
            )
            .at(line_of(text, "swagger")));
        }
        (None, None) => {
            return Err(SourceError::new(
                file,
                "not an OpenAPI document: no `openapi` version field",
            ));
        }
    };
    let prefix = match base_path {
        Some(p) => p.trim_end_matches('/').to_owned(),
        None => doc.servers.first().map(server_path).unwrap_or_default(),
    };
    let components = doc.components.unwrap_or_default();
    let mut declared = Vec::new();
    for (route, item) in doc.paths.iter().flatten() {
        let at = || line_of(text, route);
        if !route.starts_with('/') {
            return Err(SourceError::new(
                file,
                format!("paths: {route:?} does not start with `/`"),
            )
            .at(at()));
        }
        let item = match &item.reference {
            None => item,
            Some(r) => r
                .strip_prefix("#/components/pathItems/")
                .and_then(|name| components.path_items.get(name))
                .ok_or_else(|| {
                    SourceError::new(
                        file,
                        format!(
                            "paths: {route:?}: cannot resolve $ref {r:?} (only local references \
                             into components.pathItems are followed)"
                        ),
                    )
                    .at(at())
                })?,
        };
        for method in item.methods() {
            let operation = format!("{method} {prefix}{route}");
            if let Err(e) = Op::parse(&operation) {
                return Err(SourceError::new(file, format!("paths: {e}")).at(at()));
            }
            declared.push(Declared {
                caller: None,
                callee: service.to_owned(),
                operation: Some(operation),
                critical: false,
            });
        }
    }
    Ok(Contract {
        file: file.to_owned(),
        kind: ContractKind::OpenApi { version },
        declared,
    })
}

/// The path part of a server URL, its variables at their defaults, without a trailing `/`.
fn server_path(server: &RawServer) -> String {
    let mut url = server.url.clone();
    for (name, var) in &server.variables {
        url = url.replace(&format!("{{{name}}}"), &var.value);
    }
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => url.as_str(),
    };
    path.trim_end_matches('/').to_owned()
}
