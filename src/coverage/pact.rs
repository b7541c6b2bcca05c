//! Pact contract files (specification v2, v3 and v4, JSON): the consumer → provider edge, and
//! each HTTP interaction's request method and path as an interface of it.
//!
//! Owns reading a Pact file into a `Contract`. A Pact path is an example request
//! (`/users/42`), not a route; matching it to the route a span names (`/users/{id}`) is
//! `route`'s business. Message interactions (v3 `messages`, v4 `Asynchronous/Messages` and
//! `Synchronous/Messages`) are skipped: they name no queue, so they map to no hop tracecov
//! can see. Pacticipant names are taken as node ids (a manifest alias can translate them).

use std::path::Path;

use serde::Deserialize;

use super::error::{SourceError, line_of};
use super::route::Op;
use super::{Contract, ContractKind, Declared};

#[derive(Deserialize)]
struct RawPact {
    consumer: Pacticipant,
    provider: Pacticipant,
    #[serde(default)]
    interactions: Vec<RawInteraction>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Pacticipant {
    name: String,
}

#[derive(Deserialize)]
struct RawInteraction {
    /// v4 only: `Synchronous/HTTP`, `Asynchronous/Messages`, `Synchronous/Messages`.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    request: Option<RawRequest>,
}

#[derive(Deserialize)]
struct RawRequest {
    method: String,
    path: String,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default, rename = "pactSpecification")]
    current: Option<SpecVersion>,
    #[serde(default, rename = "pact-specification")]
    v2: Option<SpecVersion>,
    #[serde(default, rename = "pactSpecificationVersion")]
    v1: Option<String>,
}

#[derive(Deserialize)]
struct SpecVersion {
    version: String,
}

/// Reads a Pact file.
pub fn load_pact(path: &Path) -> Result<Contract, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|e| SourceError::read(path, &e))?;
    parse_pact(&text, path)
}

/// Parses a Pact file's text; `file` names it in errors.
pub fn parse_pact(text: &str, file: &Path) -> Result<Contract, SourceError> {
    let raw: RawPact = serde_json::from_str(text).map_err(|e| SourceError::json(file, &e))?;
    let version = raw
        .metadata
        .as_ref()
        .and_then(|m| {
            m.current
                .as_ref()
                .or(m.v2.as_ref())
                .map(|v| v.version.clone())
                .or_else(|| m.v1.clone())
        })
        .unwrap_or_else(|| "2.0.0".to_owned());
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    if !matches!(major, Some(1..=4)) {
        return Err(SourceError::new(
            file,
            format!("unsupported Pact specification version {version:?}: expected 1 to 4"),
        )
        .at(line_of(text, &version)));
    }
    let consumer = raw.consumer.name.trim().to_owned();
    let provider = raw.provider.name.trim().to_owned();
    for (what, name) in [("consumer", &consumer), ("provider", &provider)] {
        if name.is_empty() {
            return Err(
                SourceError::new(file, format!("the {what} has no name")).at(line_of(text, what))
            );
        }
    }
    let mut declared = vec![Declared {
        caller: Some(consumer.clone()),
        callee: provider.clone(),
        operation: None,
        critical: false,
    }];
    for (i, interaction) in raw.interactions.iter().enumerate() {
        let http = interaction
            .kind
            .as_deref()
            .is_none_or(|k| k.eq_ignore_ascii_case("Synchronous/HTTP"));
        if !http {
            continue;
        }
        let described = interaction
            .description
            .as_deref()
            .map(|d| format!(" ({d:?})"))
            .unwrap_or_default();
        let place = |needle: Option<&str>| {
            needle.and_then(|n| line_of(text, n)).or_else(|| {
                interaction
                    .description
                    .as_deref()
                    .and_then(|d| line_of(text, d))
            })
        };
        let Some(request) = &interaction.request else {
            return Err(SourceError::new(
                file,
                format!("interactions[{i}]{described}: an HTTP interaction needs a request"),
            )
            .at(place(None)));
        };
        let operation = format!("{} {}", request.method.trim(), request.path.trim());
        match Op::parse(&operation) {
            Ok(Op::Http { .. }) => {}
            _ => {
                return Err(SourceError::new(
                    file,
                    format!(
                        "interactions[{i}]{described}: request {operation:?} is not an HTTP \
                         method and a path starting with `/`"
                    ),
                )
                .at(place(Some(&request.path))));
            }
        }
        declared.push(Declared {
            caller: Some(consumer.clone()),
            callee: provider.clone(),
            operation: Some(operation),
            critical: false,
        });
    }
    Ok(Contract {
        file: file.to_owned(),
        kind: ContractKind::Pact { version },
        declared,
    })
}
