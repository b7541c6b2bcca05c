//! What client commands send to a server that requires tokens (DESIGN's "Exposure"): `--token`
//! on the API, `--ingest-token` on OTLP exports; and whom they trust over `https://` (the
//! system's roots and `--tls-ca`, `crate::tls::Trust`).

use std::path::Path;

/// An HTTP client for a server's API, sending `Authorization: Bearer TOKEN` when given and
/// trusting `ca_file`'s certificate authorities besides the system's.
pub fn api_client(token: Option<&str>, ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let trust = crate::tls::Trust::new(ca_file)?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot carry"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(trust.client_builder().default_headers(headers).build()?)
}

/// `OTEL_EXPORTER_OTLP_HEADERS` with `Authorization=Bearer TOKEN` set (the variable's values are
/// percent-encoded, so the space is `%20`), replacing any authorization the user's own value
/// carried and keeping its other headers.
pub fn otlp_headers(existing: Option<&str>, token: &str) -> String {
    let mut encoded = String::new();
    for b in token.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let ours = format!("Authorization=Bearer%20{encoded}");
    let kept: Vec<&str> = existing
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|kv| {
            !kv.is_empty()
                && !kv
                    .split('=')
                    .next()
                    .is_some_and(|k| k.trim().eq_ignore_ascii_case("authorization"))
        })
        .collect();
    if kept.is_empty() {
        ours
    } else {
        format!("{},{ours}", kept.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ingest_token_joins_the_users_otlp_headers() {
        assert_eq!(
            otlp_headers(None, "s3 cret/1"),
            "Authorization=Bearer%20s3%20cret%2F1"
        );
        assert_eq!(
            otlp_headers(Some("x-team=qa, authorization=Bearer%20old"), "new"),
            "x-team=qa,Authorization=Bearer%20new"
        );
    }
}
